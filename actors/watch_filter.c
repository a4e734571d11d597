/*
 * watch_filter.c -- the watched-key filter (see watch_filter.h).
 *
 * Single keys: a set of 64-bit hashes (FNV-1a), open addressing at most
 * half full, so a miss probes about two slots. Only the hash is kept: a
 * collision is a false yes, which is allowed. Ranges and from-key watches:
 * their union as disjoint intervals sorted by start; a key is tested with
 * one binary search. 10,000 watchers of distinct keys make a 256 KiB table;
 * 100,000 watchers of one key, one slot.
 */
#include "actors/watch_filter.h"

#include <stdlib.h>
#include <string.h>

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  size_t n = al < bl ? al : bl;
  int c = n ? memcmp(a, b, n) : 0;
  if (c) return c;
  return al < bl ? -1 : al > bl;
}

static uint64_t filter_hash(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
  h ^= h >> 33; /* FNV's low bits are weak for short keys: mix before masking */
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h ? h : 1; /* 0 marks an empty slot */
}

static void slots_add(watch_filter *f, uint64_t h) {
  for (size_t i = h & f->mask;; i = (i + 1) & f->mask) {
    if (f->slots[i] == h) return;
    if (!f->slots[i]) {
      f->slots[i] = h;
      f->nkeys++;
      return;
    }
  }
}

static int src_start_cmp(const void *a, const void *b) {
  const watch_filter_src *x = *(const watch_filter_src *const *)a, *y = *(const watch_filter_src *const *)b;
  return key_cmp(x->key, x->key_len, y->key, y->key_len);
}

/* Merges the sorted ranges in place into disjoint ones; returns how many. */
static size_t ranges_merge(const watch_filter_src **r, size_t n, watch_filter_src *out) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    watch_filter_src *cur = m ? &out[m - 1] : NULL;
    if (cur && (cur->from_key || key_cmp(r[i]->key, r[i]->key_len, cur->end, cur->end_len) <= 0)) {
      if (cur->from_key) continue;
      if (r[i]->from_key) cur->from_key = true, cur->end = NULL, cur->end_len = 0;
      else if (key_cmp(r[i]->end, r[i]->end_len, cur->end, cur->end_len) > 0)
        cur->end = r[i]->end, cur->end_len = r[i]->end_len;
      continue;
    }
    out[m++] = *r[i];
  }
  return m;
}

static int ranges_copy(watch_filter *f, const watch_filter_src *m, size_t n) {
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) bytes += m[i].key_len + m[i].end_len;
  f->rg = calloc(n ? n : 1, sizeof(*f->rg));
  f->bytes = malloc(bytes ? bytes : 1);
  if (!f->rg || !f->bytes) return -1;
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    watch_filter_range *g = &f->rg[i];
    g->start_off = (uint32_t)off, g->start_len = (uint32_t)m[i].key_len;
    if (m[i].key_len) memcpy(f->bytes + off, m[i].key, m[i].key_len);
    off += m[i].key_len;
    g->open = m[i].from_key;
    g->end_off = (uint32_t)off, g->end_len = (uint32_t)m[i].end_len;
    if (m[i].end_len) memcpy(f->bytes + off, m[i].end, m[i].end_len);
    off += m[i].end_len;
  }
  f->nrg = n;
  return 0;
}

watch_filter *watch_filter_build(uint64_t gen, const watch_filter_src *src, size_t n) {
  watch_filter *f = calloc(1, sizeof(*f));
  const watch_filter_src **r = calloc(n ? n : 1, sizeof(*r));
  watch_filter_src *merged = NULL;
  if (!f || !r) goto fail;
  f->gen = gen;
  size_t nk = 0, nr = 0;
  for (size_t i = 0; i < n; i++) {
    if (src[i].end || src[i].from_key) r[nr++] = &src[i];
    else nk++;
  }
  size_t cap = 8;
  while (cap < 2 * nk) cap *= 2;
  f->slots = calloc(cap, sizeof(*f->slots));
  if (!f->slots) goto fail;
  f->mask = cap - 1;
  for (size_t i = 0; i < n; i++)
    if (!src[i].end && !src[i].from_key) slots_add(f, filter_hash(src[i].key, src[i].key_len));
  qsort(r, nr, sizeof(*r), src_start_cmp);
  merged = calloc(nr ? nr : 1, sizeof(*merged));
  if (!merged || ranges_copy(f, merged, ranges_merge(r, nr, merged))) goto fail;
  free(merged);
  free(r);
  return f;
fail:
  free(merged);
  free(r);
  watch_filter_free(f);
  return NULL;
}

void watch_filter_free(watch_filter *f) {
  if (!f) return;
  free(f->slots), free(f->rg), free(f->bytes);
  free(f);
}

static bool ranges_match(const watch_filter *f, const uint8_t *key, size_t len) {
  size_t lo = 0, hi = f->nrg; /* find the last range that starts at or before key */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const watch_filter_range *g = &f->rg[mid];
    if (key_cmp(f->bytes + g->start_off, g->start_len, key, len) <= 0) lo = mid + 1;
    else hi = mid;
  }
  if (!lo) return false;
  const watch_filter_range *g = &f->rg[lo - 1];
  return g->open || key_cmp(key, len, f->bytes + g->end_off, g->end_len) < 0;
}

bool watch_filter_match(const watch_filter *f, const uint8_t *key, size_t len) {
  if (!f) return false;
  if (f->nkeys) {
    uint64_t h = filter_hash(key, len);
    for (size_t i = h & f->mask; f->slots[i]; i = (i + 1) & f->mask)
      if (f->slots[i] == h) return true;
  }
  return f->nrg && ranges_match(f, key, len);
}
