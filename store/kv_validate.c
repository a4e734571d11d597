/*
 * kv_validate.c -- the checks etcd's gRPC layer makes before proposing a
 * request (etcdserver/api/v3rpc/key.go), in etcd's order, with etcd's errors.
 *
 * Txn: checkTxnRequest (op count = max of compares, success, failure; a
 * nested txn is held to max_txn_ops minus its parent's count; an empty
 * compare key is EMPTY_KEY; an op with no request is KEY_NOT_FOUND), then
 * checkIntervals on success and on failure: within one branch a key may not
 * be put twice, nor put and covered by a delete, across nesting levels --
 * except that the two branches of one nested txn may put the same key. A
 * delete interval is [key, range_end) (a point when range_end is empty);
 * note that etcd's interval for range_end "\0" contains no key at all, so
 * "put k; delete from-key" is allowed, as etcd allows it.
 */
#include <stdlib.h>
#include <string.h>

#include "store/mvcc_internal.h"

int kv_validate_range(const Etcdserverpb__RangeRequest *req) {
  return req->key.len == 0 ? -CETCD_E_EMPTY_KEY : 0;
}

int kv_validate_put(const Etcdserverpb__PutRequest *req) {
  if (req->key.len == 0) return -CETCD_E_EMPTY_KEY;
  if (req->ignore_value && req->value.len != 0) return -CETCD_E_VALUE_PROVIDED;
  if (req->ignore_lease && req->lease != 0) return -CETCD_E_LEASE_PROVIDED;
  return 0;
}

int kv_validate_delete_range(const Etcdserverpb__DeleteRangeRequest *req) {
  return req->key.len == 0 ? -CETCD_E_EMPTY_KEY : 0;
}

static int check_txn(const Etcdserverpb__TxnRequest *req, long max_ops);

static int check_op(const Etcdserverpb__RequestOp *op, long max_ops) {
  switch (op->request_case) {
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
    return op->request_range ? kv_validate_range(op->request_range) : -CETCD_E_EMPTY_KEY;
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
    return op->request_put ? kv_validate_put(op->request_put) : -CETCD_E_EMPTY_KEY;
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
    return op->request_delete_range ? kv_validate_delete_range(op->request_delete_range)
                                    : -CETCD_E_EMPTY_KEY;
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
    return op->request_txn ? check_txn(op->request_txn, max_ops) : 0;
  default: return -CETCD_E_KEY_NOT_FOUND;
  }
}

static int check_txn(const Etcdserverpb__TxnRequest *req, long max_ops) {
  size_t opc = req->n_compare;
  if (opc < req->n_success) opc = req->n_success;
  if (opc < req->n_failure) opc = req->n_failure;
  if ((long)opc > max_ops) return -CETCD_E_TOO_MANY_OPS;
  for (size_t i = 0; i < req->n_compare; i++)
    if (req->compare[i]->key.len == 0) return -CETCD_E_EMPTY_KEY;
  for (size_t i = 0; i < req->n_success; i++) {
    int rc = check_op(req->success[i], max_ops - (long)opc);
    if (rc) return rc;
  }
  for (size_t i = 0; i < req->n_failure; i++) {
    int rc = check_op(req->failure[i], max_ops - (long)opc);
    if (rc) return rc;
  }
  return 0;
}

/* --- checkIntervals ------------------------------------------------------- */

typedef struct ivl {
  ProtobufCBinaryData b, e; /* e.len == 0: the point b */
} ivl;

typedef struct sets {
  const ProtobufCBinaryData **puts;
  size_t nputs, capputs;
  ivl *dels;
  size_t ndels, capdels;
  int oom;
} sets;

static int bcmp_(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b) {
  size_t n = a->len < b->len ? a->len : b->len;
  int c = n ? memcmp(a->data, b->data, n) : 0;
  if (c) return c;
  return a->len < b->len ? -1 : a->len > b->len;
}

static bool has_put(const sets *s, const ProtobufCBinaryData *k) {
  for (size_t i = 0; i < s->nputs; i++)
    if (bcmp_(s->puts[i], k) == 0) return true;
  return false;
}

static bool dels_cover(const sets *s, const ProtobufCBinaryData *k) {
  for (size_t i = 0; i < s->ndels; i++) {
    const ivl *v = &s->dels[i];
    if (v->e.len == 0 ? bcmp_(&v->b, k) == 0 : bcmp_(&v->b, k) <= 0 && bcmp_(k, &v->e) < 0) return true;
  }
  return false;
}

static void add_put(sets *s, const ProtobufCBinaryData *k) {
  if (s->nputs == s->capputs) {
    size_t cap = s->capputs ? s->capputs * 2 : 16;
    const ProtobufCBinaryData **np = realloc(s->puts, cap * sizeof(*np));
    if (!np) {
      s->oom = 1;
      return;
    }
    s->puts = np, s->capputs = cap;
  }
  s->puts[s->nputs++] = k;
}

static void add_del(sets *s, ivl v) {
  if (s->ndels == s->capdels) {
    size_t cap = s->capdels ? s->capdels * 2 : 16;
    ivl *np = realloc(s->dels, cap * sizeof(*np));
    if (!np) {
      s->oom = 1;
      return;
    }
    s->dels = np, s->capdels = cap;
  }
  s->dels[s->ndels++] = v;
}

static void sets_free(sets *s) {
  free(s->puts);
  free(s->dels);
}

static int check_intervals(Etcdserverpb__RequestOp **reqs, size_t n, sets *s);

/* Merges a nested txn's branch sets into s (etcd's loop over RequestTxn). */
static int merge_nested(const Etcdserverpb__TxnRequest *t, sets *s) {
  sets th = {0}, el = {0};
  int rc = check_intervals(t->success, t->n_success, &th);
  if (!rc) rc = check_intervals(t->failure, t->n_failure, &el);
  for (size_t i = 0; !rc && i < th.nputs; i++) {
    if (has_put(s, th.puts[i]) || dels_cover(s, th.puts[i])) rc = -CETCD_E_DUPLICATE_KEY;
    else add_put(s, th.puts[i]);
  }
  for (size_t i = 0; !rc && i < el.nputs; i++) {
    if (has_put(s, el.puts[i]) && !has_put(&th, el.puts[i])) rc = -CETCD_E_DUPLICATE_KEY;
    else if (dels_cover(s, el.puts[i])) rc = -CETCD_E_DUPLICATE_KEY;
    else add_put(s, el.puts[i]);
  }
  for (size_t i = 0; !rc && i < th.ndels; i++) add_del(s, th.dels[i]);
  for (size_t i = 0; !rc && i < el.ndels; i++) add_del(s, el.dels[i]);
  sets_free(&th);
  sets_free(&el);
  return rc;
}

static int check_intervals(Etcdserverpb__RequestOp **reqs, size_t n, sets *s) {
  for (size_t i = 0; i < n; i++) {
    const Etcdserverpb__RequestOp *op = reqs[i];
    if (op->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE || !op->request_delete_range)
      continue;
    const Etcdserverpb__DeleteRangeRequest *d = op->request_delete_range;
    add_del(s, (ivl){d->key, d->range_end});
  }
  for (size_t i = 0; i < n; i++) {
    const Etcdserverpb__RequestOp *op = reqs[i];
    if (op->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN || !op->request_txn) continue;
    int rc = merge_nested(op->request_txn, s);
    if (rc) return rc;
  }
  for (size_t i = 0; i < n; i++) {
    const Etcdserverpb__RequestOp *op = reqs[i];
    if (op->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT || !op->request_put) continue;
    const ProtobufCBinaryData *k = &op->request_put->key;
    if (has_put(s, k) || dels_cover(s, k)) return -CETCD_E_DUPLICATE_KEY;
    add_put(s, k);
  }
  return s->oom ? -CETCD_E_NOMEM : 0;
}

int kv_validate_txn(const Etcdserverpb__TxnRequest *req, int max_txn_ops) {
  int rc = check_txn(req, max_txn_ops);
  if (rc) return rc;
  sets s = {0};
  rc = check_intervals(req->success, req->n_success, &s);
  sets_free(&s);
  if (rc) return rc;
  memset(&s, 0, sizeof(s));
  rc = check_intervals(req->failure, req->n_failure, &s);
  sets_free(&s);
  return rc;
}
