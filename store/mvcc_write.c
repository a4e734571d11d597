/*
 * mvcc_write.c -- Put, DeleteRange and Txn, as etcd 3.4 applies them
 * (etcdserver/apply.go on mvcc/kvstore_txn.go).
 *
 * Revisions. A request opens with wr_begin(); its changes take sub revisions
 * 0, 1, ... of main = working revision + 1; wr_end() keeps the revision only
 * if something changed. Header revisions inside a txn follow etcd's
 * storeTxnWrite: Put -> the txn's revision; Range -> the txn's revision once
 * it changed something, else the one before; DeleteRange -> the txn's
 * revision if it or an earlier op changed something. A nested txn's response
 * carries an empty header (etcd's newTxnResp never fills it); the top-level
 * header gets the final revision.
 *
 * Txn order (applierV3backend.Txn): all compares along the chosen path are
 * evaluated first, against the state before the txn (so a nested compare
 * does not see the outer txn's writes); then, for a txn that writes, the Put
 * checks (ignore_value/ignore_lease need the key, a lease must exist) and the
 * Range revision checks run on that same state; then the ops run in order.
 */
#include <stdlib.h>
#include <string.h>

#include "store/mvcc_internal.h"

static Etcdserverpb__ResponseHeader *new_header(arena *a) {
  Etcdserverpb__ResponseHeader *h = arena_alloc(a, sizeof(*h));
  if (h) etcdserverpb__response_header__init(h);
  return h;
}

/* Does the event consumer want the event of this key (mvcc_set_event_want)? */
static bool event_wanted(mvcc *m, const uint8_t *key, size_t len) {
  return m->ev && (!m->ev_want || m->ev_want(m->ev_arg, key, len));
}

/* The previous KeyValue for an event, read before the change replaces the
 * key's cached value (so it comes from the cache, not LevelDB). */
static Mvccpb__KeyValue *event_prev(mvcc *m, bool wanted, const idx_key *k, const idx_rev *prev) {
  Mvccpb__KeyValue *pkv = NULL;
  if (wanted && prev && read_kv(m, k, prev, true, &m->tmp, &pkv)) pkv = NULL;
  return pkv;
}

static void emit(mvcc *m, bool wanted, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *pkv) {
  if (!wanted) return;
  m->ev(m->ev_arg, type, kv, pkv);
  arena_reset(&m->tmp);
}

static void lease_detach(mvcc *m, const idx_rev *prev, const uint8_t *key, size_t len) {
  if (prev && prev->lease && m->has_hooks && m->hooks.detach)
    m->hooks.detach(m->hooks.arg, prev->lease, key, len);
}

/* etcd storeTxnWrite.put */
static int do_put(mvcc *m, idx_key *k, const ProtobufCBinaryData *key, const ProtobufCBinaryData *value,
                  int64_t lease) {
  int64_t rev = m->req_main;
  const idx_rev *prev = k ? idx_key_at(k, rev) : NULL;
  Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
  kv.key = *key;
  kv.value = *value;
  kv.create_revision = prev ? prev->create : rev;
  kv.mod_revision = rev;
  kv.version = prev ? prev->version + 1 : 1;
  kv.lease = lease;
  int64_t sub;
  int rc = wr_record(m, &kv, false, &sub);
  if (rc) return rc;
  bool wanted = event_wanted(m, key->data, key->len);
  Mvccpb__KeyValue *pkv = event_prev(m, wanted, k, prev);
  idx_rev ch = {.main = rev, .sub = (uint32_t)sub, .create = kv.create_revision,
                .version = kv.version, .lease = lease};
  idx_key *nk = k;
  if (nk)
    idx_prepend(m->index, nk, &ch);
  else
    nk = idx_append(m->index, key->data, key->len, &ch);
  idx_set_val(m->index, nk, val_new(rev, sub, value->data, value->len));
  lease_detach(m, prev, key->data, key->len);
  if (lease && m->has_hooks && m->hooks.attach) m->hooks.attach(m->hooks.arg, lease, key->data, key->len);
  emit(m, wanted, MVCCPB__EVENT__EVENT_TYPE__PUT, &kv, pkv);
  return 0;
}

/* etcd storeTxnWrite.delete: a tombstone record holds only the key; the
 * event's kv carries the key and the deleting revision. */
static int do_delete(mvcc *m, const idx_key *k, const idx_rev *prev) {
  Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
  kv.key = (ProtobufCBinaryData){k->len, (uint8_t *)k->key};
  int64_t sub;
  int rc = wr_record(m, &kv, true, &sub);
  if (rc) return rc;
  bool wanted = event_wanted(m, k->key, k->len);
  Mvccpb__KeyValue *pkv = event_prev(m, wanted, k, prev);
  idx_rev ch = {.main = m->req_main, .sub = (uint32_t)sub, .tomb = 1};
  idx_prepend(m->index, (idx_key *)k, &ch);
  idx_set_val(m->index, (idx_key *)k, NULL);
  lease_detach(m, prev, k->key, k->len);
  kv.mod_revision = m->req_main;
  emit(m, wanted, MVCCPB__EVENT__EVENT_TYPE__DELETE, &kv, pkv);
  return 0;
}

static bool lease_exists(mvcc *m, int64_t lease) {
  return m->has_hooks && m->hooks.exists && m->hooks.exists(m->hooks.arg, lease);
}

/* applierV3backend.Put with a write txn open. */
static int put_op(mvcc *m, const Etcdserverpb__PutRequest *req, Etcdserverpb__PutResponse *resp,
                  arena *a) {
  idx_key *k = idx_find(idx_writer_node(m->index), req->key.data, req->key.len);
  const idx_rev *prev = k ? idx_key_at(k, wr_read_rev(m)) : NULL;
  if ((req->ignore_value || req->ignore_lease) && !prev) return -CETCD_E_KEY_NOT_FOUND;
  Mvccpb__KeyValue *pkv = NULL;
  if (prev && (req->prev_kv || req->ignore_value)) {
    int rc = read_kv(m, k, prev, true, a, &pkv);
    if (rc) return rc == -CETCD_E_COMPACTED ? -CETCD_E_INTERNAL : rc;
  }
  ProtobufCBinaryData value = req->ignore_value ? pkv->value : req->value;
  int64_t lease = req->ignore_lease ? prev->lease : req->lease;
  if (req->prev_kv) resp->prev_kv = pkv;
  int rc = do_put(m, k, &req->key, &value, lease);
  if (rc) return rc;
  if (resp->header) resp->header->revision = m->req_main;
  return 0;
}

/* applierV3backend.DeleteRange with a write txn open. */
static int delete_op(mvcc *m, const Etcdserverpb__DeleteRangeRequest *req,
                     Etcdserverpb__DeleteRangeResponse *resp, arena *a) {
  kv_refs refs = {0};
  collect_refs(idx_writer_node(m->index), &req->key, &req->range_end, wr_read_rev(m), &refs);
  int rc = refs.oom ? -CETCD_E_NOMEM : 0;
  if (!rc && req->prev_kv && refs.n) {
    resp->prev_kvs = arena_alloc(a, refs.n * sizeof(*resp->prev_kvs));
    if (!resp->prev_kvs) rc = -CETCD_E_NOMEM;
    for (size_t i = 0; !rc && i < refs.n; i++) rc = read_kv(m, refs.p[i].k, refs.p[i].r, true, a, &resp->prev_kvs[i]);
    if (!rc) resp->n_prev_kvs = refs.n;
  }
  for (size_t i = 0; !rc && i < refs.n; i++) rc = do_delete(m, refs.p[i].k, refs.p[i].r);
  if (!rc) {
    resp->deleted = (int64_t)refs.n;
    if (resp->header) resp->header->revision = wr_read_rev(m);
  }
  free(refs.p);
  return rc == -CETCD_E_COMPACTED ? -CETCD_E_INTERNAL : rc;
}

int mvcc_put(mvcc *m, const Etcdserverpb__PutRequest *req, Etcdserverpb__PutResponse *resp, arena *a) {
  if (req->lease && !lease_exists(m, req->lease)) return -CETCD_E_LEASE_NOT_FOUND;
  wr_begin(m);
  int rc = put_op(m, req, resp, a);
  wr_end(m);
  return rc;
}

int mvcc_delete_range(mvcc *m, const Etcdserverpb__DeleteRangeRequest *req,
                      Etcdserverpb__DeleteRangeResponse *resp, arena *a) {
  wr_begin(m);
  int rc = delete_op(m, req, resp, a);
  wr_end(m);
  return rc;
}

/* --- txn ------------------------------------------------------------------ */

/* The chosen branch of every txn along the path, in preorder (etcd's txnPath). */
typedef struct txn_path {
  bool *p;
  size_t n, cap;
  int oom;
} txn_path;

static void path_push(txn_path *tp, bool v) {
  if (tp->n == tp->cap) {
    size_t cap = tp->cap ? tp->cap * 2 : 16;
    bool *np = realloc(tp->p, cap);
    if (!np) {
      tp->oom = 1;
      return;
    }
    tp->p = np, tp->cap = cap;
  }
  tp->p[tp->n++] = v;
}

static int cmp_i64(int64_t a, int64_t b) { return a < b ? -1 : a > b; }

static int cmp_bytes(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b) {
  size_t n = a->len < b->len ? a->len : b->len;
  int c = n ? memcmp(a->data, b->data, n) : 0;
  if (c) return c;
  return a->len < b->len ? -1 : a->len > b->len;
}

/* etcd compareKV. r == NULL: the key is missing (all fields zero). The
 * compare's value is used only when its union case matches its target. */
static bool compare_one(mvcc *m, const Etcdserverpb__Compare *c, const idx_key *k,
                        const idx_rev *r, arena *a, int *err) {
  int res = 0;
  switch (c->target) {
  case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE: {
    ProtobufCBinaryData want = {0, NULL};
    if (c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE) want = c->value;
    Mvccpb__KeyValue *kv = NULL;
    *err = read_kv(m, k, r, true, a, &kv);
    if (*err) return false;
    res = cmp_bytes(&kv->value, &want);
    break;
  }
  case ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE:
    res = cmp_i64(r ? r->create : 0,
                  c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION ? c->create_revision : 0);
    break;
  case ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD:
    res = cmp_i64(r ? r->main : 0,
                  c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION ? c->mod_revision : 0);
    break;
  case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION:
    res = cmp_i64(r ? r->version : 0,
                  c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION ? c->version : 0);
    break;
  case ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE:
    res = cmp_i64(r ? r->lease : 0,
                  c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE ? c->lease : 0);
    break;
  default: break;
  }
  switch (c->result) {
  case ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL: return res == 0;
  case ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL: return res != 0;
  case ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER: return res > 0;
  case ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS: return res < 0;
  default: return true;
  }
}

/* etcd applyCompare: every key in range must satisfy it; no key at all is
 * a zero KeyValue, except that a VALUE compare then fails. */
static bool compare_range(mvcc *m, const Etcdserverpb__Compare *c, arena *a, int *err) {
  kv_refs refs = {0};
  collect_refs(idx_writer_node(m->index), &c->key, &c->range_end, m->wrev, &refs);
  bool ok = true;
  if (refs.oom) {
    *err = -CETCD_E_NOMEM;
    ok = false;
  } else if (refs.n == 0) {
    ok = c->target != ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE &&
         compare_one(m, c, NULL, NULL, a, err);
  }
  for (size_t i = 0; ok && i < refs.n; i++) ok = compare_one(m, c, refs.p[i].k, refs.p[i].r, a, err);
  free(refs.p);
  return ok;
}

static int compute_path(mvcc *m, const Etcdserverpb__TxnRequest *t, txn_path *tp, arena *a) {
  int err = 0;
  bool ok = true;
  for (size_t i = 0; ok && i < t->n_compare; i++) ok = compare_range(m, t->compare[i], a, &err);
  if (err) return err == -CETCD_E_COMPACTED ? -CETCD_E_INTERNAL : err;
  path_push(tp, ok);
  size_t n = ok ? t->n_success : t->n_failure;
  Etcdserverpb__RequestOp **ops = ok ? t->success : t->failure;
  for (size_t i = 0; i < n; i++) {
    if (ops[i]->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN || !ops[i]->request_txn)
      continue;
    int rc = compute_path(m, ops[i]->request_txn, tp, a);
    if (rc) return rc;
  }
  return tp->oom ? -CETCD_E_NOMEM : 0;
}

static bool txn_writes(const Etcdserverpb__TxnRequest *t) {
  for (size_t i = 0; i < t->n_success; i++)
    if (t->success[i]->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE) return true;
  for (size_t i = 0; i < t->n_failure; i++)
    if (t->failure[i]->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE) return true;
  return false;
}

/* etcd checkRequestPut / checkRequestRange, on the pre-txn state. */
static int check_op(mvcc *m, const Etcdserverpb__RequestOp *op, bool puts) {
  if (puts && op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT && op->request_put) {
    const Etcdserverpb__PutRequest *p = op->request_put;
    if (p->ignore_value || p->ignore_lease) {
      const idx_key *k = idx_find(idx_writer_node(m->index), p->key.data, p->key.len);
      if (!k || !idx_key_at(k, m->wrev)) return -CETCD_E_KEY_NOT_FOUND;
    }
    if (p->lease && !lease_exists(m, p->lease)) return -CETCD_E_LEASE_NOT_FOUND;
  }
  if (!puts && op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE && op->request_range) {
    int64_t r = op->request_range->revision;
    if (r == 0) return 0;
    if (r > m->wrev) return -CETCD_E_FUTURE_REV;
    if (r < m->wcompact) return -CETCD_E_COMPACTED;
  }
  return 0;
}

static int check_reqs(mvcc *m, const Etcdserverpb__TxnRequest *t, const txn_path *tp, size_t *pos,
                      bool puts) {
  bool ok = tp->p[(*pos)++];
  size_t n = ok ? t->n_success : t->n_failure;
  Etcdserverpb__RequestOp **ops = ok ? t->success : t->failure;
  for (size_t i = 0; i < n; i++) {
    int rc;
    if (ops[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN && ops[i]->request_txn)
      rc = check_reqs(m, ops[i]->request_txn, tp, pos, puts);
    else
      rc = check_op(m, ops[i], puts);
    if (rc) return rc;
  }
  return 0;
}

static int apply_txn(mvcc *m, const Etcdserverpb__TxnRequest *t, const txn_path *tp, size_t *pos,
                     Etcdserverpb__TxnResponse *resp, arena *a);

static int apply_op(mvcc *m, const Etcdserverpb__RequestOp *op, const txn_path *tp, size_t *pos,
                    Etcdserverpb__ResponseOp *ro, arena *a) {
  Etcdserverpb__ResponseHeader *h = new_header(a);
  if (!h) return -CETCD_E_NOMEM;
  switch (op->request_case) {
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE: {
    Etcdserverpb__RangeResponse *r = arena_alloc(a, sizeof(*r));
    if (!r) return -CETCD_E_NOMEM;
    etcdserverpb__range_response__init(r);
    r->header = h;
    ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
    ro->response_range = r;
    range_view v = {idx_writer_node(m->index), wr_read_rev(m), m->wcompact, true};
    return range_run(m, &v, op->request_range, r, a);
  }
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT: {
    Etcdserverpb__PutResponse *r = arena_alloc(a, sizeof(*r));
    if (!r) return -CETCD_E_NOMEM;
    etcdserverpb__put_response__init(r);
    r->header = h;
    ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
    ro->response_put = r;
    return put_op(m, op->request_put, r, a);
  }
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE: {
    Etcdserverpb__DeleteRangeResponse *r = arena_alloc(a, sizeof(*r));
    if (!r) return -CETCD_E_NOMEM;
    etcdserverpb__delete_range_response__init(r);
    r->header = h;
    ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
    ro->response_delete_range = r;
    return delete_op(m, op->request_delete_range, r, a);
  }
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN: {
    Etcdserverpb__TxnResponse *r = arena_alloc(a, sizeof(*r));
    if (!r) return -CETCD_E_NOMEM;
    etcdserverpb__txn_response__init(r);
    r->header = h; /* etcd leaves a nested txn's header empty */
    ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
    ro->response_txn = r;
    return apply_txn(m, op->request_txn, tp, pos, r, a);
  }
  default: return 0; /* an empty op: an empty response */
  }
}

static int apply_txn(mvcc *m, const Etcdserverpb__TxnRequest *t, const txn_path *tp, size_t *pos,
                     Etcdserverpb__TxnResponse *resp, arena *a) {
  bool ok = tp->p[(*pos)++];
  size_t n = ok ? t->n_success : t->n_failure;
  Etcdserverpb__RequestOp **ops = ok ? t->success : t->failure;
  resp->succeeded = ok;
  resp->n_responses = 0;
  resp->responses = n ? arena_alloc(a, n * sizeof(*resp->responses)) : NULL;
  if (n && !resp->responses) return -CETCD_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    Etcdserverpb__ResponseOp *ro = arena_alloc(a, sizeof(*ro));
    if (!ro) return -CETCD_E_NOMEM;
    etcdserverpb__response_op__init(ro);
    resp->responses[i] = ro;
    resp->n_responses = i + 1;
    int rc = apply_op(m, ops[i], tp, pos, ro, a);
    if (rc) return rc;
  }
  return 0;
}

int mvcc_txn(mvcc *m, const Etcdserverpb__TxnRequest *req, Etcdserverpb__TxnResponse *resp, arena *a) {
  txn_path tp = {0};
  size_t pos = 0;
  int rc = compute_path(m, req, &tp, a);
  if (!rc && txn_writes(req)) rc = check_reqs(m, req, &tp, &pos, true);
  pos = 0;
  if (!rc) rc = check_reqs(m, req, &tp, &pos, false);
  if (rc) goto out;
  wr_begin(m);
  pos = 0;
  rc = apply_txn(m, req, &tp, &pos, resp, a);
  /* After the checks above an op cannot fail short of an internal error;
   * etcd panics there. The request's records stay in the batch either way. */
  int64_t rev = wr_end(m);
  if (!rc && resp->header) resp->header->revision = rev;
out:
  free(tp.p);
  return rc;
}
