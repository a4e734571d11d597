/*
 * mvcc_history.c -- bounded chunks of the change history (see mvcc_history.h).
 *
 * Built on mvcc_changes(), which walks LevelDB's revision-ordered records
 * under one rcu_read_lock and re-checks the compact revision at the end (a
 * compaction that overtook the walk may have removed records it needed).
 * This file adds what a watcher needs on top: the key range filter, the
 * chunk bound that ends on a revision boundary, and prev_kv.
 */
#include <string.h>

#include "msg/errors.h"
#include "store/mvcc_history.h"

#define HIST_DEFAULT_EVENTS 1024

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  size_t n = al < bl ? al : bl;
  int c = n ? memcmp(a, b, n) : 0;
  if (c) return c;
  return al < bl ? -1 : al > bl;
}

bool mvcc_history_in_range(const uint8_t *key, size_t key_len, const uint8_t *start, size_t start_len,
                           const uint8_t *end, size_t end_len) {
  if (end_len == 0) return key_cmp(key, key_len, start, start_len) == 0;
  if (key_cmp(key, key_len, start, start_len) < 0) return false;
  if (end_len == 1 && end[0] == 0) return true; /* from key */
  return key_cmp(key, key_len, end, end_len) < 0;
}

typedef struct hist_walk {
  mvcc *m;
  const mvcc_hist_query *q;
  mvcc_hist_fn fn;
  void *arg;
  size_t seen, max;
  size_t bytes, max_bytes;
  int64_t last_rev;  /* revision of the last record examined */
  int64_t stop_rev;  /* first revision left for the next chunk (0: none) */
  arena ar;
} hist_walk;

static bool hist_one(void *arg, int type, const Mvccpb__KeyValue *kv) {
  hist_walk *w = arg;
  bool full = w->seen >= w->max || (w->max_bytes && w->bytes >= w->max_bytes);
  if (full && kv->mod_revision != w->last_rev) {
    w->stop_rev = kv->mod_revision;
    return false;
  }
  w->seen++;
  w->bytes += kv->key.len + kv->value.len;
  w->last_rev = kv->mod_revision;
  const mvcc_hist_query *q = w->q;
  if (!mvcc_history_in_range(kv->key.data, kv->key.len, q->key, q->key_len, q->range_end, q->range_end_len))
    return true;
  Mvccpb__KeyValue *prev = NULL;
  if (q->prev_kv) {
    arena_reset(&w->ar);
    if (mvcc_history_kv_at(w->m, kv->key.data, kv->key.len, kv->mod_revision - 1, &w->ar, &prev)) prev = NULL;
  }
  w->fn(w->arg, type, kv, prev);
  return true;
}

int mvcc_history_read(mvcc *m, const mvcc_hist_query *q, mvcc_hist_fn fn, void *arg, int64_t *next_rev) {
  int64_t cur = mvcc_current_rev(m);
  int64_t to = q->to_rev <= 0 || q->to_rev > cur ? cur : q->to_rev;
  hist_walk w = {.m = m, .q = q, .fn = fn, .arg = arg, .max = q->max_events ? q->max_events : HIST_DEFAULT_EVENTS,
                .max_bytes = q->max_bytes};
  arena_init(&w.ar, 4096);
  int64_t from = q->from_rev > 0 ? q->from_rev : 1;
  int rc = 0;
  if (from <= to) rc = mvcc_changes(m, from, to, hist_one, &w);
  else if (from < mvcc_compact_rev(m)) rc = -CETCD_E_COMPACTED;
  arena_free(&w.ar);
  *next_rev = w.stop_rev ? w.stop_rev : (to >= from ? to + 1 : from);
  return rc;
}

int mvcc_history_kv_at(mvcc *m, const uint8_t *key, size_t key_len, int64_t rev, arena *a,
                       Mvccpb__KeyValue **out) {
  *out = NULL;
  if (rev <= 0) return 0;
  Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
  Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
  Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  resp.header = &hdr;
  req.key.data = (uint8_t *)key;
  req.key.len = key_len;
  req.revision = rev;
  int rc = mvcc_range(m, &req, &resp, a);
  if (rc == -CETCD_E_COMPACTED) return 0;
  if (rc) return rc;
  if (resp.n_kvs) *out = resp.kvs[0];
  return 0;
}
