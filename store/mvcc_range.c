/*
 * mvcc_range.c -- Range, as etcd 3.4's applierV3backend.Range does it.
 *
 * Order of work (etcdserver/apply.go, mvcc/kvstore_txn.go rangeKeys):
 *  1. revision checks: > current -> future; <= 0 -> current; < compact ->
 *     compacted (reading AT the compact revision is allowed);
 *  2. every key in range existing at that revision is counted (count is taken
 *     before the min/max filters and the limit);
 *  3. count_only stops here;
 *  4. values are fetched: all of them when sorting or filtering, otherwise
 *     limit+1 (the extra one sets `more`);
 *  5. min/max mod/create filters prune; then the sort (sort_order NONE with a
 *     target other than KEY sorts ASCEND; note that in that case the limit was
 *     already applied in step 4, as in etcd); then truncation to limit sets
 *     `more`; keys_only drops values last (a VALUE sort still used them).
 *
 * The sort is Go's own sort.Sort algorithm (mvcc_sort.c), so ties come out
 * in etcd's order.
 */
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "store/mvcc_internal.h"

static bool refs_push(kv_refs *refs, const idx_key *k, const idx_rev *r) {
  if (refs->n == refs->cap) {
    size_t cap = refs->cap ? refs->cap * 2 : 16;
    kv_ref *np = realloc(refs->p, cap * sizeof(*np));
    if (!np) {
      refs->oom = 1;
      return false;
    }
    refs->p = np;
    refs->cap = cap;
  }
  refs->p[refs->n++] = (kv_ref){k, r};
  return true;
}

typedef struct collect_ctx {
  kv_refs *refs;
  int64_t at_rev;
} collect_ctx;

static bool collect_one(void *arg, const idx_key *k) {
  collect_ctx *c = arg;
  const idx_rev *r = idx_key_at(k, c->at_rev);
  return !r || refs_push(c->refs, k, r);
}

void collect_refs(const idx_node *root, const ProtobufCBinaryData *key,
                  const ProtobufCBinaryData *range_end, int64_t at_rev, kv_refs *refs) {
  if (range_end->len == 0) {
    const idx_key *k = idx_find(root, key->data, key->len);
    const idx_rev *r = k ? idx_key_at(k, at_rev) : NULL;
    if (r) refs_push(refs, k, r);
    return;
  }
  collect_ctx c = {refs, at_rev};
  bool to_end = range_end->len == 1 && range_end->data[0] == 0; /* "\0": every key >= key */
  idx_range(root, key->data, key->len, to_end ? NULL : range_end->data, to_end ? 0 : range_end->len,
            collect_one, &c);
}

/* --- filters and sort ------------------------------------------------------- */

static size_t prune(Mvccpb__KeyValue **kvs, size_t n, const Etcdserverpb__RangeRequest *req) {
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    const Mvccpb__KeyValue *kv = kvs[i];
    if (req->max_mod_revision && kv->mod_revision > req->max_mod_revision) continue;
    if (req->min_mod_revision && kv->mod_revision < req->min_mod_revision) continue;
    if (req->max_create_revision && kv->create_revision > req->max_create_revision) continue;
    if (req->min_create_revision && kv->create_revision < req->min_create_revision) continue;
    kvs[j++] = kvs[i];
  }
  return j;
}

static int sort_dir(const Etcdserverpb__RangeRequest *req) {
  int order = req->sort_order;
  if (req->sort_target != ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY &&
      order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE)
    order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
  if (order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND) return 1;
  if (order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND) return -1;
  return 0;
}

/* --- the request ---------------------------------------------------------- */

static int fetch(mvcc *m, const range_view *v, const Etcdserverpb__RangeRequest *req,
                 const kv_refs *refs, Etcdserverpb__RangeResponse *resp, arena *a) {
  bool fetch_all = req->sort_order != ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE ||
                   req->min_mod_revision || req->max_mod_revision || req->min_create_revision ||
                   req->max_create_revision;
  size_t n = refs->n;
  if (!fetch_all && req->limit > 0 && (uint64_t)req->limit + 1 < n) n = (size_t)req->limit + 1;
  Mvccpb__KeyValue **kvs = arena_alloc(a, n * sizeof(*kvs));
  if (!kvs) return -CETCD_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    int rc = read_kv(m, refs->p[i].k, refs->p[i].r, v->writer, a, &kvs[i]);
    if (rc) return rc;
  }
  n = prune(kvs, n, req);
  int dir = sort_dir(req);
  if (dir) mvcc_sort_kvs(kvs, n, req->sort_target, dir < 0);
  if (req->limit > 0 && n > (uint64_t)req->limit) {
    n = (size_t)req->limit;
    resp->more = 1;
  }
  if (req->keys_only) {
    for (size_t i = 0; i < n; i++) kvs[i]->value = (ProtobufCBinaryData){0, NULL};
  }
  resp->n_kvs = n;
  resp->kvs = kvs;
  return 0;
}

int range_run(mvcc *m, const range_view *v, const Etcdserverpb__RangeRequest *req,
              Etcdserverpb__RangeResponse *resp, arena *a) {
  int64_t at = req->revision;
  if (at > v->rev) return -CETCD_E_FUTURE_REV;
  if (at <= 0) at = v->rev;
  if (at < v->compact_rev) return -CETCD_E_COMPACTED;
  kv_refs refs = {0};
  collect_refs(v->root, &req->key, &req->range_end, at, &refs);
  int rc = refs.oom ? -CETCD_E_NOMEM : 0;
  resp->count = (int64_t)refs.n;
  resp->more = 0;
  resp->n_kvs = 0;
  resp->kvs = NULL;
  if (!rc && !req->count_only && refs.n) rc = fetch(m, v, req, &refs, resp, a);
  free(refs.p);
  if (!v->writer) {
    /* A compaction that overtook this read may have cut what it walked. */
    if (at < idx_compact_rev(m->index))
      rc = -CETCD_E_COMPACTED;
    else if (rc == -CETCD_E_COMPACTED)
      rc = -CETCD_E_INTERNAL;
  } else if (rc == -CETCD_E_COMPACTED) {
    rc = -CETCD_E_INTERNAL;
  }
  if (!rc && resp->header) resp->header->revision = v->rev;
  return rc;
}
