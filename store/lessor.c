/*
 * lessor.c -- the lease table (open addressing, linear probing, backward-
 * shift deletion: no tombstones) and the expiry min-heap. See lessor.h.
 *
 * Memory per lease, measured by design rather than by malloc: the lease
 * struct (48 bytes) + one hash slot and one heap slot (8 bytes each, at a
 * load factor between 1/4 and 1/2: 16-32 bytes) + the copies of its keys.
 */
#include "store/lessor.h"

#include <stdlib.h>
#include <string.h>

#include "msg/errors.h"

struct lessor {
  lease **slots;   /* hash table, power-of-two capacity, NULL = empty */
  size_t cap;      /* slots */
  size_t n;        /* leases */
  lease **heap;    /* min-heap by expiry_ms */
  size_t heap_cap;
  int64_t min_ttl;
  bool primary;
};

static uint64_t mix(int64_t id) {
  uint64_t z = (uint64_t)id + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

lessor *lessor_new(int64_t min_ttl) {
  lessor *l = calloc(1, sizeof(*l));
  if (!l) return NULL;
  l->cap = 64;
  l->slots = calloc(l->cap, sizeof(*l->slots));
  if (!l->slots) {
    free(l);
    return NULL;
  }
  l->min_ttl = min_ttl;
  return l;
}

static void lease_free(lease *ls) {
  for (uint32_t i = 0; i < ls->n_keys; i++) free(ls->keys[i].key);
  free(ls->keys);
  free(ls->kidx);
  free(ls);
}

void lessor_free(lessor *l) {
  if (!l) return;
  for (size_t i = 0; i < l->n; i++) lease_free(l->heap[i]);
  free(l->heap);
  free(l->slots);
  free(l);
}

size_t lessor_count(const lessor *l) { return l->n; }
bool lessor_is_primary(const lessor *l) { return l->primary; }

/* --- hash table ------------------------------------------------------------ */

static size_t find_slot(const lessor *l, int64_t id) {
  size_t mask = l->cap - 1;
  size_t i = (size_t)mix(id) & mask;
  while (l->slots[i] && l->slots[i]->id != id) i = (i + 1) & mask;
  return i;
}

lease *lessor_lookup(lessor *l, int64_t id) { return l->slots[find_slot(l, id)]; }

static int grow_table(lessor *l) {
  size_t old_cap = l->cap;
  lease **old = l->slots;
  lease **s = calloc(old_cap * 2, sizeof(*s));
  if (!s) return -CETCD_E_NOMEM;
  l->slots = s;
  l->cap = old_cap * 2;
  for (size_t i = 0; i < old_cap; i++)
    if (old[i]) l->slots[find_slot(l, old[i]->id)] = old[i];
  free(old);
  return 0;
}

/* Backward-shift deletion (Knuth 6.4 algorithm R): later entries of the
 * probe run move into the hole when their home slot allows it. */
static void table_delete(lessor *l, size_t i) {
  size_t mask = l->cap - 1;
  l->slots[i] = NULL;
  for (size_t j = (i + 1) & mask; l->slots[j]; j = (j + 1) & mask) {
    size_t home = (size_t)mix(l->slots[j]->id) & mask;
    /* j's entry may fill hole i unless its home lies cyclically in (i, j]. */
    bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    l->slots[i] = l->slots[j];
    l->slots[j] = NULL;
    i = j;
  }
}

/* --- heap ---------------------------------------------------------------- */

static void heap_set(lessor *l, size_t at, lease *ls) {
  l->heap[at] = ls;
  ls->heap_at = (uint32_t)at;
}

static void sift_up(lessor *l, size_t at) {
  lease *ls = l->heap[at];
  while (at > 0) {
    size_t up = (at - 1) / 2;
    if (l->heap[up]->expiry_ms <= ls->expiry_ms) break;
    heap_set(l, at, l->heap[up]);
    at = up;
  }
  heap_set(l, at, ls);
}

static void sift_down(lessor *l, size_t at) {
  lease *ls = l->heap[at];
  for (;;) {
    size_t c = 2 * at + 1;
    if (c >= l->n) break;
    if (c + 1 < l->n && l->heap[c + 1]->expiry_ms < l->heap[c]->expiry_ms) c++;
    if (l->heap[c]->expiry_ms >= ls->expiry_ms) break;
    heap_set(l, at, l->heap[c]);
    at = c;
  }
  heap_set(l, at, ls);
}

static void set_expiry(lessor *l, lease *ls, uint64_t expiry_ms) {
  uint64_t old = ls->expiry_ms;
  ls->expiry_ms = expiry_ms;
  if (expiry_ms < old) sift_up(l, ls->heap_at);
  else if (expiry_ms > old) sift_down(l, ls->heap_at);
}

static int by_expiry(const void *a, const void *b);

static uint64_t expiry_after(uint64_t now_ms, uint64_t extend_ms, int64_t ttl) {
  return now_ms + extend_ms + (uint64_t)ttl * 1000u;
}

/* --- grant / remove ------------------------------------------------------------ */

int lessor_grant(lessor *l, int64_t id, int64_t ttl, uint64_t now_ms, lease **out) {
  if (id == 0) return -CETCD_E_LEASE_NOT_FOUND;
  if (ttl > LESSOR_MAX_TTL) return -CETCD_E_LEASE_TTL_TOO_LARGE;
  if (lessor_lookup(l, id)) return -CETCD_E_LEASE_EXIST;
  if ((l->n + 1) * 2 > l->cap && grow_table(l) < 0) return -CETCD_E_NOMEM;
  if (l->n == l->heap_cap) {
    size_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
    lease **h = realloc(l->heap, cap * sizeof(*h));
    if (!h) return -CETCD_E_NOMEM;
    l->heap = h;
    l->heap_cap = cap;
  }
  lease *ls = calloc(1, sizeof(*ls));
  if (!ls) return -CETCD_E_NOMEM;
  ls->id = id;
  ls->ttl = ttl < l->min_ttl ? l->min_ttl : ttl;
  ls->expiry_ms = l->primary ? expiry_after(now_ms, 0, ls->ttl) : LESSOR_FOREVER;
  l->slots[find_slot(l, id)] = ls;
  heap_set(l, l->n++, ls);
  sift_up(l, ls->heap_at);
  if (out) *out = ls;
  return 0;
}

int lessor_remove(lessor *l, int64_t id) {
  size_t i = find_slot(l, id);
  lease *ls = l->slots[i];
  if (!ls) return -CETCD_E_LEASE_NOT_FOUND;
  table_delete(l, i);
  size_t at = ls->heap_at;
  lease *last = l->heap[--l->n];
  if (at < l->n) {
    heap_set(l, at, last);
    sift_up(l, at);
    sift_down(l, last->heap_at);
  }
  lease_free(ls);
  return 0;
}

/* --- time --------------------------------------------------------------- */

int64_t lessor_renew(lessor *l, int64_t id, uint64_t now_ms) {
  if (!l->primary) return -1;
  lease *ls = lessor_lookup(l, id);
  /* An expired lease is being revoked: etcd waits for the revoke and then
   * answers "not found" (TTL 0); answering at once is what the client sees. */
  if (!ls || ls->expiry_ms <= now_ms) return 0;
  set_expiry(l, ls, expiry_after(now_ms, 0, ls->ttl));
  return ls->ttl;
}

int64_t lessor_remaining_s(lessor *l, int64_t id, uint64_t now_ms) {
  lease *ls = lessor_lookup(l, id);
  if (!ls) return -1;
  if (ls->expiry_ms == LESSOR_FOREVER) return INT64_MAX / 1000000000; /* Go: MaxInt64 ns */
  if (ls->expiry_ms <= now_ms) return 0;
  return (int64_t)((ls->expiry_ms - now_ms) / 1000u);
}

/* etcd's Promote: when many leases would expire together, push the later
 * ones of each 1 s window out so that no more than 3/4 of the revoke rate
 * falls due per second (pile-ups after a restart would otherwise eat the
 * whole revoke budget). Same arithmetic as lessor.go, in ms. */
static void spread_expiries(lessor *l, uint64_t now_ms) {
  lease **v = malloc(l->n * sizeof(*v));
  if (!v) return; /* the revoke rate limit still holds */
  memcpy(v, l->heap, l->n * sizeof(*v));
  qsort(v, l->n, sizeof(*v), by_expiry);
  const double target = (3.0 * LESSOR_REVOKE_RATE) / 4.0;
  double base = (double)(v[0]->expiry_ms - now_ms), next = base + 1000.0;
  size_t expires = 0;
  for (size_t i = 0; i < l->n; i++) {
    double remaining = (double)(v[i]->expiry_ms - now_ms);
    if (remaining > next) {
      base = remaining, next = base + 1000.0, expires = 1;
      continue;
    }
    if (++expires <= (size_t)target) continue;
    double delay = 1000.0 * ((double)expires / target) - (remaining - base);
    next = base + delay;
    if (delay > 0) v[i]->expiry_ms += (uint64_t)delay;
  }
  free(v);
}

void lessor_promote(lessor *l, uint64_t now_ms, uint64_t extend_ms) {
  l->primary = true;
  for (size_t i = 0; i < l->n; i++) l->heap[i]->expiry_ms = expiry_after(now_ms, extend_ms, l->heap[i]->ttl);
  if (l->n >= LESSOR_REVOKE_RATE) spread_expiries(l, now_ms);
  /* Floyd's bottom-up heapify: O(n) for the whole table. */
  for (size_t i = l->n / 2; i-- > 0;) sift_down(l, i);
}

void lessor_demote(lessor *l) {
  l->primary = false;
  for (size_t i = 0; i < l->n; i++) l->heap[i]->expiry_ms = LESSOR_FOREVER;
}

size_t lessor_pop_expired(lessor *l, uint64_t now_ms, int64_t *out, size_t limit) {
  size_t k = 0;
  if (!l->primary) return 0;
  while (k < limit && l->n > 0 && l->heap[0]->expiry_ms <= now_ms) {
    lease *ls = l->heap[0];
    out[k++] = ls->id;
    set_expiry(l, ls, now_ms + LESSOR_RETRY_MS);
  }
  return k;
}

uint64_t lessor_next_expiry(const lessor *l) { return l->n ? l->heap[0]->expiry_ms : LESSOR_FOREVER; }

/* --- keys ----------------------------------------------------------------
 * A lease's keys are an unordered array; detach swaps the last key into the
 * hole. Past LESSOR_KIDX_MIN keys a per-lease hash index (linear probing,
 * backward-shift deletion) finds a key's position, so attaching and
 * detaching stay O(1) however many keys share the lease. */

static uint64_t key_hash(const uint8_t *k, size_t len) {
  uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
  for (size_t i = 0; i < len; i++) h = (h ^ k[i]) * 0x100000001b3ull;
  return h;
}

/* The slot holding key, or the empty slot where it would go. */
static uint32_t kidx_find(const lease *ls, const uint8_t *key, size_t len) {
  uint32_t mask = ls->kidx_cap - 1;
  uint32_t i = (uint32_t)key_hash(key, len) & mask;
  for (; ls->kidx[i]; i = (i + 1) & mask) {
    const lease_key *k = &ls->keys[ls->kidx[i] - 1];
    if (k->len == len && memcmp(k->key, key, len) == 0) break;
  }
  return i;
}

static int kidx_rebuild(lease *ls, uint32_t cap) {
  uint32_t *v = calloc(cap, sizeof(*v));
  if (!v) return -CETCD_E_NOMEM;
  free(ls->kidx);
  ls->kidx = v;
  ls->kidx_cap = cap;
  for (uint32_t p = 0; p < ls->n_keys; p++) ls->kidx[kidx_find(ls, ls->keys[p].key, ls->keys[p].len)] = p + 1;
  return 0;
}

static void kidx_delete(lease *ls, uint32_t i) {
  uint32_t mask = ls->kidx_cap - 1;
  ls->kidx[i] = 0;
  for (uint32_t j = (i + 1) & mask; ls->kidx[j]; j = (j + 1) & mask) {
    const lease_key *k = &ls->keys[ls->kidx[j] - 1];
    uint32_t home = (uint32_t)key_hash(k->key, k->len) & mask;
    bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    ls->kidx[i] = ls->kidx[j];
    ls->kidx[j] = 0;
    i = j;
  }
}

int lessor_attach(lessor *l, int64_t id, const uint8_t *key, size_t len) {
  lease *ls = lessor_lookup(l, id);
  if (!ls) return -CETCD_E_LEASE_NOT_FOUND;
  if (ls->n_keys == ls->cap_keys) {
    uint32_t cap = ls->cap_keys ? ls->cap_keys * 2 : 1;
    lease_key *v = realloc(ls->keys, cap * sizeof(*v));
    if (!v) return -CETCD_E_NOMEM;
    ls->keys = v;
    ls->cap_keys = cap;
  }
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy) return -CETCD_E_NOMEM;
  memcpy(copy, key, len);
  ls->keys[ls->n_keys++] = (lease_key){(uint32_t)len, copy};
  if (ls->kidx && ls->n_keys * 2 <= ls->kidx_cap) {
    ls->kidx[kidx_find(ls, copy, len)] = ls->n_keys;
  } else if (ls->n_keys > LESSOR_KIDX_MIN) {
    uint32_t cap = 64;
    while (cap < ls->n_keys * 4) cap *= 2;
    if (kidx_rebuild(ls, cap) < 0) { /* keep working without the index */
      free(ls->kidx);
      ls->kidx = NULL;
      ls->kidx_cap = 0;
    }
  }
  return 0;
}

static uint32_t key_pos(const lease *ls, const uint8_t *key, size_t len) {
  if (ls->kidx) {
    uint32_t p = ls->kidx[kidx_find(ls, key, len)];
    return p ? p - 1 : UINT32_MAX;
  }
  for (uint32_t i = 0; i < ls->n_keys; i++)
    if (ls->keys[i].len == len && memcmp(ls->keys[i].key, key, len) == 0) return i;
  return UINT32_MAX;
}

void lessor_detach(lessor *l, int64_t id, const uint8_t *key, size_t len) {
  lease *ls = lessor_lookup(l, id);
  if (!ls) return;
  uint32_t p = key_pos(ls, key, len);
  if (p == UINT32_MAX) return;
  uint32_t last = ls->n_keys - 1;
  if (ls->kidx) {
    kidx_delete(ls, kidx_find(ls, key, len));
    if (p != last) ls->kidx[kidx_find(ls, ls->keys[last].key, ls->keys[last].len)] = p + 1;
  }
  free(ls->keys[p].key);
  ls->keys[p] = ls->keys[last];
  ls->n_keys--;
}

/* --- listing ------------------------------------------------------------- */

static int by_expiry(const void *a, const void *b) {
  const lease *x = *(lease *const *)a, *y = *(lease *const *)b;
  return x->expiry_ms < y->expiry_ms ? -1 : x->expiry_ms > y->expiry_ms;
}

int64_t *lessor_list(lessor *l, size_t *n) {
  *n = l->n;
  lease **tmp = malloc((l->n ? l->n : 1) * sizeof(*tmp));
  int64_t *ids = malloc((l->n ? l->n : 1) * sizeof(*ids));
  if (!tmp || !ids) {
    free(tmp), free(ids);
    return NULL;
  }
  memcpy(tmp, l->heap, l->n * sizeof(*tmp));
  qsort(tmp, l->n, sizeof(*tmp), by_expiry);
  for (size_t i = 0; i < l->n; i++) ids[i] = tmp[i]->id;
  free(tmp);
  return ids;
}

bool lessor_check(const lessor *l) {
  size_t in_table = 0;
  for (size_t i = 0; i < l->cap; i++) in_table += l->slots[i] != NULL;
  if (in_table != l->n) return false;
  for (size_t i = 0; i < l->n; i++) {
    if (l->heap[i]->heap_at != i) return false;
    if (i > 0 && l->heap[(i - 1) / 2]->expiry_ms > l->heap[i]->expiry_ms) return false;
  }
  return true;
}
