/*
 * test_mvcc.c -- the MVCC store's semantics, request by request.
 *
 * Expected values marked "etcd:" were produced by real etcd 3.4.23 (etcdctl
 * -w json and the JSON gateway) running the same sequence of requests on a
 * fresh data dir; the others follow from etcd's source (etcdserver/apply.go,
 * mvcc/kvstore_txn.go, mvcc/key_index.go, v3rpc/key.go).
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>
#include <urcu.h>

#include <leveldb/c.h>

#include "msg/errors.h"
#include "store/mvcc.h"

static mvcc *M;
static char dir[64];
static arena A;
static uint64_t next_ci = 1;

/* ===== helpers ============================================================= */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static void store_open(void) {
  char err[256] = "";
  int rc = mvcc_open(dir, NULL, &M, err, sizeof(err));
  if (rc) fprintf(stderr, "open: %s\n", err);
  CU_ASSERT_FATAL(rc == 0);
}

static void fresh(void) {
  strcpy(dir, "/tmp/cetcd-test-mvcc-XXXXXX");
  CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
  store_open();
  arena_init(&A, 0);
  next_ci = 1;
}

static void done(void) {
  mvcc_close(M);
  M = NULL;
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  arena_free(&A);
}

static ProtobufCBinaryData B(const char *s) {
  return (ProtobufCBinaryData){s ? strlen(s) : 0, (uint8_t *)s};
}
/* "\0" as a range_end */
static ProtobufCBinaryData NUL = {1, (uint8_t *)""};

static bool beq(ProtobufCBinaryData b, const char *s) {
  return b.len == strlen(s) && memcmp(b.data, s, b.len) == 0;
}

static Etcdserverpb__ResponseHeader H;

/* One put in its own batch; returns the header revision or a negative error. */
static int64_t put_ex(const char *k, const char *v, int64_t lease, bool prev, bool ign_v, bool ign_l,
                      Mvccpb__KeyValue **prev_out) {
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  req.key = B(k), req.value = B(v), req.lease = lease, req.prev_kv = prev;
  req.ignore_value = ign_v, req.ignore_lease = ign_l;
  Etcdserverpb__PutResponse resp = ETCDSERVERPB__PUT_RESPONSE__INIT;
  etcdserverpb__response_header__init(&H);
  resp.header = &H;
  mvcc_batch_begin(M);
  int rc = mvcc_put(M, &req, &resp, &A);
  CU_ASSERT(mvcc_batch_commit(M, next_ci++) == 0);
  if (prev_out) *prev_out = resp.prev_kv;
  return rc ? rc : H.revision;
}

static int64_t put(const char *k, const char *v) { return put_ex(k, v, 0, false, false, false, NULL); }

static int64_t del_ex(const char *k, ProtobufCBinaryData end, bool prev, Etcdserverpb__DeleteRangeResponse *resp) {
  Etcdserverpb__DeleteRangeRequest req = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
  req.key = B(k), req.range_end = end, req.prev_kv = prev;
  etcdserverpb__delete_range_response__init(resp);
  etcdserverpb__response_header__init(&H);
  resp->header = &H;
  mvcc_batch_begin(M);
  int rc = mvcc_delete_range(M, &req, resp, &A);
  CU_ASSERT(mvcc_batch_commit(M, next_ci++) == 0);
  return rc ? rc : H.revision;
}

static int64_t del(const char *k) {
  Etcdserverpb__DeleteRangeResponse r;
  return del_ex(k, B(NULL), false, &r);
}

static Etcdserverpb__RangeRequest RQ(const char *k, ProtobufCBinaryData end) {
  Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
  r.key = B(k), r.range_end = end;
  return r;
}

static Etcdserverpb__RangeResponse RR;
static int rng(const Etcdserverpb__RangeRequest *req) {
  etcdserverpb__range_response__init(&RR);
  etcdserverpb__response_header__init(&H);
  RR.header = &H;
  return mvcc_range(M, req, &RR, &A);
}

/* Keys of RR joined by ',' */
static const char *keys(void) {
  static char buf[512];
  buf[0] = 0;
  for (size_t i = 0; i < RR.n_kvs; i++) {
    if (i) strcat(buf, ",");
    strncat(buf, (char *)RR.kvs[i]->key.data, RR.kvs[i]->key.len);
  }
  return buf;
}

static Mvccpb__KeyValue *get_at(const char *k, int64_t rev) {
  Etcdserverpb__RangeRequest q = RQ(k, B(NULL));
  q.revision = rev;
  if (rng(&q) || RR.n_kvs != 1) return NULL;
  return RR.kvs[0];
}

static int64_t compact(int64_t rev) {
  Etcdserverpb__CompactionRequest req = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
  req.revision = rev;
  Etcdserverpb__CompactionResponse resp = ETCDSERVERPB__COMPACTION_RESPONSE__INIT;
  etcdserverpb__response_header__init(&H);
  resp.header = &H;
  mvcc_batch_begin(M);
  int rc = mvcc_compact(M, &req, &resp, &A);
  CU_ASSERT(mvcc_batch_commit(M, next_ci++) == 0);
  return rc ? rc : H.revision;
}

/* The scenario also run on etcd: ends at revision 8 with
 * a=4 (c2 m5 v2), b=2 (c3 m3 v1), c=9 (c8 m8 v1), d=0 (c6 m6 v1). */
static void scenario(void) {
  CU_ASSERT(put("a", "1") == 2);
  CU_ASSERT(put("b", "2") == 3);
  CU_ASSERT(put("c", "3") == 4);
  CU_ASSERT(put("a", "4") == 5);
  CU_ASSERT(put("d", "0") == 6);
  CU_ASSERT(del("c") == 7);
  CU_ASSERT(put("c", "9") == 8);
}

/* ===== basic revisions ===================================================== */

static void test_put_revisions(void) {
  fresh();
  CU_ASSERT(mvcc_current_rev(M) == 1);
  CU_ASSERT(mvcc_compact_rev(M) == -1);
  scenario();
  Mvccpb__KeyValue *kv = get_at("a", 0);
  CU_ASSERT_FATAL(kv != NULL);
  CU_ASSERT(beq(kv->value, "4") && kv->create_revision == 2 && kv->mod_revision == 5 && kv->version == 2);
  kv = get_at("c", 0);
  CU_ASSERT_FATAL(kv != NULL);
  CU_ASSERT(kv->create_revision == 8 && kv->mod_revision == 8 && kv->version == 1);
  CU_ASSERT(H.revision == 8);
  /* past revisions */
  kv = get_at("a", 4);
  CU_ASSERT_FATAL(kv != NULL);
  CU_ASSERT(beq(kv->value, "1") && kv->mod_revision == 2 && kv->version == 1);
  CU_ASSERT(get_at("c", 7) == NULL);
  CU_ASSERT(RR.count == 0 && H.revision == 8);
  kv = get_at("c", 6);
  CU_ASSERT(kv && beq(kv->value, "3"));
  CU_ASSERT(get_at("a", 1) == NULL);
  /* a big value (not cached on the key) reads back from LevelDB */
  static char big[5000];
  memset(big, 'v', sizeof(big) - 1);
  CU_ASSERT(put("big", big) == 9);
  kv = get_at("big", 0);
  CU_ASSERT(kv && kv->value.len == sizeof(big) - 1 && kv->version == 1 && kv->mod_revision == 9);
  CU_ASSERT(del("big") == 10);
  CU_ASSERT(get_at("big", 0) == NULL && get_at("big", 9) != NULL);
  CU_ASSERT(put("big", "small") == 11);
  kv = get_at("big", 0);
  CU_ASSERT(kv && beq(kv->value, "small") && kv->create_revision == 11);
  /* a delete of nothing takes no revision */
  CU_ASSERT(del("nothing") == 11);
  CU_ASSERT(mvcc_current_rev(M) == 11);
  done();
}

/* ===== range options ======================================================= */

static void test_range_limit_count(void) {
  fresh();
  scenario();
  Etcdserverpb__RangeRequest q = RQ("a", NUL);
  q.limit = 2; /* etcd: a,b more count 4 */
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b");
  CU_ASSERT(RR.more && RR.count == 4 && H.revision == 8);
  q.limit = 4; /* etcd: all four, no more */
  CU_ASSERT(rng(&q) == 0 && RR.n_kvs == 4 && !RR.more);
  q.limit = -1;
  CU_ASSERT(rng(&q) == 0 && RR.n_kvs == 4 && !RR.more);
  q = RQ("a", NUL);
  q.count_only = 1, q.limit = 1; /* etcd: count 4, no kvs, no more */
  CU_ASSERT(rng(&q) == 0 && RR.n_kvs == 0 && RR.count == 4 && !RR.more);
  q = RQ("a", NUL);
  q.keys_only = 1;
  CU_ASSERT(rng(&q) == 0 && RR.n_kvs == 4);
  CU_ASSERT(RR.kvs[0]->value.len == 0 && RR.kvs[0]->mod_revision == 5 && RR.kvs[0]->version == 2);
  /* range_end rules */
  q = RQ("\0", NUL); /* etcd: everything */
  q.key.len = 1;
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b,c,d");
  q = RQ("b", B("d")); /* etcd: b,c */
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "b,c");
  q = RQ("d", B("b")); /* etcd: nothing */
  CU_ASSERT(rng(&q) == 0 && RR.count == 0);
  q = RQ("bb", NUL);
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "c,d");
  /* revisions */
  q = RQ("a", NUL);
  q.revision = 4; /* etcd: a(1,m2),b,c(3) count 3, header 8 */
  CU_ASSERT(rng(&q) == 0 && RR.count == 3 && H.revision == 8);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b,c");
  q.revision = 9; /* etcd: future revision */
  CU_ASSERT(rng(&q) == -CETCD_E_FUTURE_REV);
  q.revision = -3; /* etcd: current */
  CU_ASSERT(rng(&q) == 0 && RR.count == 4);
  q.revision = 1; /* etcd: empty */
  CU_ASSERT(rng(&q) == 0 && RR.count == 0);
  done();
}

static void test_range_sort(void) {
  fresh();
  scenario();
  struct {
    int order, target;
    int64_t limit;
    const char *want;
    bool more;
  } cases[] = {
      /* all etcd: */
      {ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION, 0, "a,b,c,d", false},
      {ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION, 0, "b,c,d,a", false},
      {ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD, 0, "b,a,d,c", false},
      {ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE, 0, "c,d,b,a", false},
      {ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE, 0, "d,b,a,c", false},
      {ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY, 0, "d,c,b,a", false},
      {ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY, 0, "a,b,c,d", false},
      /* NONE + VERSION: limit+1 fetched first, then sorted ascending */
      {ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION, 2, "b,c", true},
      {ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD, 2, "c,d", true},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    Etcdserverpb__RangeRequest q = RQ("a", NUL);
    q.sort_order = cases[i].order, q.sort_target = cases[i].target, q.limit = cases[i].limit;
    CU_ASSERT(rng(&q) == 0);
    CU_ASSERT_STRING_EQUAL(keys(), cases[i].want);
    CU_ASSERT(RR.more == cases[i].more && RR.count == 4);
  }
  done();
}

/* More than 12 results with ties: etcd's sort.Sort is not stable and the
 * order of ties is Go's pdqsort's. Expected orders: etcd (etcdctl get k
 * --prefix --sort-by=... --order=... --keys-only after the same puts). */
static void test_range_sort_go_order(void) {
  fresh();
  char k[16], v[16];
  for (int i = 0; i < 40; i++) {
    int j = i * 17 % 40;
    snprintf(k, sizeof(k), "k%02d", j), snprintf(v, sizeof(v), "%d", j * 7 % 5);
    put(k, v);
  }
  for (int i = 0; i < 40; i += 3) snprintf(k, sizeof(k), "k%02d", i), snprintf(v, sizeof(v), "%d", i % 4), put(k, v);
  for (int i = 0; i < 40; i += 9) snprintf(k, sizeof(k), "k%02d", i), put(k, "x");
  enum { ASC = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND, DESC = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND };
  struct {
    int order, target;
    const char *want;
  } cases[] = {
      {ASC, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION,
       "k20,k34,k02,k38,k04,k05,k37,k07,k08,k35,k10,k11,k19,k13,k14,k32,k16,k31,k29,k01,k17,k28,k22,k23,k26,k25,k33,k15,k21,k06,k30,k24,k39,k03,k12,k09,k36,k18,k00,k27"},
      {DESC, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION,
       "k27,k18,k36,k00,k09,k03,k06,k30,k24,k33,k15,k21,k12,k39,k10,k07,k16,k17,k13,k19,k20,k11,k22,k23,k08,k25,k26,k14,k28,k29,k05,k31,k32,k04,k34,k35,k02,k37,k38,k01"},
      {ASC, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE,
       "k20,k10,k35,k25,k24,k05,k12,k28,k21,k38,k33,k23,k08,k13,k30,k01,k16,k26,k06,k31,k11,k04,k19,k39,k34,k03,k14,k29,k15,k32,k07,k22,k02,k37,k17,k27,k00,k18,k36,k09"},
      {DESC, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE,
       "k36,k18,k27,k09,k00,k22,k32,k07,k02,k17,k37,k19,k29,k04,k14,k15,k34,k39,k03,k16,k06,k01,k31,k30,k26,k11,k38,k08,k28,k33,k23,k13,k21,k10,k25,k35,k24,k20,k12,k05"},
      {DESC, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD,
       "k36,k27,k18,k09,k00,k39,k33,k30,k24,k21,k15,k12,k06,k03,k23,k29,k35,k01,k07,k13,k19,k02,k25,k08,k31,k14,k37,k20,k26,k32,k38,k04,k10,k16,k22,k05,k28,k11,k34,k17"},
      {ASC, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE,
       "k00,k17,k34,k11,k28,k05,k22,k39,k16,k33,k10,k27,k04,k21,k38,k15,k32,k09,k26,k03,k20,k37,k14,k31,k08,k25,k02,k19,k36,k13,k30,k07,k24,k01,k18,k35,k12,k29,k06,k23"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    Etcdserverpb__RangeRequest q = RQ("k", B("l"));
    q.sort_order = cases[i].order, q.sort_target = cases[i].target, q.keys_only = 1;
    CU_ASSERT(rng(&q) == 0 && RR.n_kvs == 40);
    CU_ASSERT_STRING_EQUAL(keys(), cases[i].want);
  }
  done();
}

static void test_range_filters(void) {
  fresh();
  scenario();
  Etcdserverpb__RangeRequest q = RQ("a", NUL);
  q.min_mod_revision = 5; /* etcd: a,c,d count 4 */
  CU_ASSERT(rng(&q) == 0 && RR.count == 4 && !RR.more);
  CU_ASSERT_STRING_EQUAL(keys(), "a,c,d");
  q.limit = 1; /* etcd: a, more, count 4 */
  CU_ASSERT(rng(&q) == 0 && RR.count == 4 && RR.more);
  CU_ASSERT_STRING_EQUAL(keys(), "a");
  q = RQ("a", NUL);
  q.max_create_revision = 3; /* etcd: a,b */
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b");
  q = RQ("a", NUL);
  q.max_mod_revision = 5, q.min_create_revision = 3; /* etcd: b */
  CU_ASSERT(rng(&q) == 0 && RR.count == 4);
  CU_ASSERT_STRING_EQUAL(keys(), "b");
  q = RQ("a", NUL);
  q.max_mod_revision = 3, q.limit = 1; /* etcd: b, more false (filter before truncation) */
  CU_ASSERT(rng(&q) == 0 && !RR.more);
  CU_ASSERT_STRING_EQUAL(keys(), "b");
  done();
}

/* ===== put / delete options ================================================= */

static bool lease_ok(void *arg, int64_t id) { (void)arg; return id == 7 || id == 8; }
static int attached[16], detached[16];
static void lease_attach(void *arg, int64_t id, const uint8_t *k, size_t n) { (void)arg, (void)k, (void)n; attached[id]++; }
static void lease_detach(void *arg, int64_t id, const uint8_t *k, size_t n) { (void)arg, (void)k, (void)n; detached[id]++; }

static int nleased;
static void on_leased(void *arg, int64_t lease, const uint8_t *k, size_t n) {
  (void)arg;
  if (lease == 8 && n == 1 && k[0] == 'l') nleased++;
  else nleased += 100;
}

static void test_put_options(void) {
  fresh();
  Mvccpb__KeyValue *pkv = (void *)1;
  CU_ASSERT(put_ex("k", "v1", 0, true, false, false, &pkv) == 2);
  CU_ASSERT(pkv == NULL);
  CU_ASSERT(put_ex("k", "v2", 0, true, false, false, &pkv) == 3);
  CU_ASSERT(pkv && beq(pkv->value, "v1") && pkv->mod_revision == 2);
  /* ignore_value keeps the value, a new revision */
  CU_ASSERT(put_ex("k", "", 0, false, true, false, NULL) == 4);
  Mvccpb__KeyValue *kv = get_at("k", 0);
  CU_ASSERT(kv && beq(kv->value, "v2") && kv->version == 3);
  CU_ASSERT(put_ex("missing", "", 0, false, true, false, NULL) == -CETCD_E_KEY_NOT_FOUND);
  CU_ASSERT(put_ex("missing", "x", 0, false, false, true, NULL) == -CETCD_E_KEY_NOT_FOUND);
  CU_ASSERT(mvcc_current_rev(M) == 4); /* failures took no revision */
  /* leases */
  CU_ASSERT(put_ex("l", "x", 7, false, false, false, NULL) == -CETCD_E_LEASE_NOT_FOUND);
  mvcc_lease_hooks hooks = {NULL, lease_ok, lease_attach, lease_detach};
  mvcc_set_lease_hooks(M, &hooks);
  memset(attached, 0, sizeof(attached));
  memset(detached, 0, sizeof(detached));
  CU_ASSERT(put_ex("l", "x", 9, false, false, false, NULL) == -CETCD_E_LEASE_NOT_FOUND);
  CU_ASSERT(put_ex("l", "x", 7, false, false, false, NULL) == 5);
  CU_ASSERT(attached[7] == 1);
  CU_ASSERT(put_ex("l", "y", 0, false, false, true, NULL) == 6); /* ignore_lease keeps 7 */
  kv = get_at("l", 0);
  CU_ASSERT(kv && kv->lease == 7 && beq(kv->value, "y"));
  CU_ASSERT(detached[7] == 1 && attached[7] == 2);
  CU_ASSERT(put_ex("l", "z", 8, false, false, false, NULL) == 7);
  CU_ASSERT(detached[7] == 2 && attached[8] == 1);
  nleased = 0;
  mvcc_for_each_leased_key(M, on_leased, NULL);
  CU_ASSERT(nleased == 1);
  CU_ASSERT(del("l") == 8);
  CU_ASSERT(detached[8] == 1);
  done();
}

static void test_delete_range(void) {
  fresh();
  scenario();
  Etcdserverpb__DeleteRangeResponse r;
  CU_ASSERT(del_ex("b", B("d"), true, &r) == 9);
  CU_ASSERT(r.deleted == 2 && r.n_prev_kvs == 2);
  CU_ASSERT(beq(r.prev_kvs[0]->key, "b") && beq(r.prev_kvs[1]->value, "9"));
  CU_ASSERT(del_ex("a", NUL, false, &r) == 10);
  CU_ASSERT(r.deleted == 2 && r.n_prev_kvs == 0);
  Etcdserverpb__RangeRequest q = RQ("\0", NUL);
  q.key.len = 1;
  CU_ASSERT(rng(&q) == 0 && RR.count == 0 && H.revision == 10);
  q.revision = 8;
  CU_ASSERT(rng(&q) == 0 && RR.count == 4);
  /* re-create after delete: version 1, new create revision */
  CU_ASSERT(put("a", "new") == 11);
  Mvccpb__KeyValue *kv = get_at("a", 0);
  CU_ASSERT(kv && kv->create_revision == 11 && kv->version == 1);
  done();
}

/* ===== txn ================================================================= */

static Etcdserverpb__Compare *CMP(int target, int result, const char *k, ProtobufCBinaryData end, int64_t n,
                                  const char *v) {
  Etcdserverpb__Compare *c = arena_alloc(&A, sizeof(*c));
  etcdserverpb__compare__init(c);
  c->target = target, c->result = result, c->key = B(k), c->range_end = end;
  switch (target) {
  case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION: c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION, c->version = n; break;
  case ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE: c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION, c->create_revision = n; break;
  case ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD: c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION, c->mod_revision = n; break;
  case ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE: c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE, c->lease = n; break;
  default: c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE, c->value = B(v); break;
  }
  return c;
}

static Etcdserverpb__RequestOp *OP_PUT(const char *k, const char *v, bool prev) {
  Etcdserverpb__RequestOp *o = arena_alloc(&A, sizeof(*o));
  etcdserverpb__request_op__init(o);
  Etcdserverpb__PutRequest *p = arena_alloc(&A, sizeof(*p));
  etcdserverpb__put_request__init(p);
  p->key = B(k), p->value = B(v), p->prev_kv = prev;
  o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT, o->request_put = p;
  return o;
}

static Etcdserverpb__RequestOp *OP_RANGE(const char *k, ProtobufCBinaryData end, int64_t rev) {
  Etcdserverpb__RequestOp *o = arena_alloc(&A, sizeof(*o));
  etcdserverpb__request_op__init(o);
  Etcdserverpb__RangeRequest *p = arena_alloc(&A, sizeof(*p));
  *p = RQ(k, end);
  p->revision = rev;
  o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE, o->request_range = p;
  return o;
}

static Etcdserverpb__RequestOp *OP_DEL(const char *k, ProtobufCBinaryData end, bool prev) {
  Etcdserverpb__RequestOp *o = arena_alloc(&A, sizeof(*o));
  etcdserverpb__request_op__init(o);
  Etcdserverpb__DeleteRangeRequest *p = arena_alloc(&A, sizeof(*p));
  etcdserverpb__delete_range_request__init(p);
  p->key = B(k), p->range_end = end, p->prev_kv = prev;
  o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE, o->request_delete_range = p;
  return o;
}

static Etcdserverpb__TxnRequest *TXN(size_t nc, Etcdserverpb__Compare **c, size_t ns,
                                     Etcdserverpb__RequestOp **s, size_t nf, Etcdserverpb__RequestOp **f) {
  Etcdserverpb__TxnRequest *t = arena_alloc(&A, sizeof(*t));
  etcdserverpb__txn_request__init(t);
  t->n_compare = nc, t->compare = c, t->n_success = ns, t->success = s, t->n_failure = nf, t->failure = f;
  return t;
}

static Etcdserverpb__RequestOp *OP_TXN(Etcdserverpb__TxnRequest *t) {
  Etcdserverpb__RequestOp *o = arena_alloc(&A, sizeof(*o));
  etcdserverpb__request_op__init(o);
  o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN, o->request_txn = t;
  return o;
}

static Etcdserverpb__TxnResponse TR;
static int txn(Etcdserverpb__TxnRequest *t) {
  etcdserverpb__txn_response__init(&TR);
  etcdserverpb__response_header__init(&H);
  TR.header = &H;
  mvcc_batch_begin(M);
  int rc = mvcc_txn(M, t, &TR, &A);
  CU_ASSERT(mvcc_batch_commit(M, next_ci++) == 0);
  return rc;
}

/* Evaluates one compare in a txn with no ops. */
static int cmp1(Etcdserverpb__Compare *c) {
  Etcdserverpb__Compare **cs = arena_alloc(&A, sizeof(*cs));
  cs[0] = c;
  if (txn(TXN(1, cs, 0, NULL, 0, NULL))) return -1;
  return TR.succeeded;
}

static void test_txn_compares(void) {
  fresh();
  scenario();
  enum { EQ = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, NE = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL,
         LT = ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS, GT = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER };
  enum { VER = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION, CRE = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE,
         MOD = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD, VAL = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE,
         LEA = ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE };
  ProtobufCBinaryData none = B(NULL);
  /* a: value 4, create 2, mod 5, version 2 */
  CU_ASSERT(cmp1(CMP(VER, EQ, "a", none, 2, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(VER, NE, "a", none, 2, NULL)) == 0);
  CU_ASSERT(cmp1(CMP(VER, GT, "a", none, 1, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(VER, LT, "a", none, 2, NULL)) == 0);
  CU_ASSERT(cmp1(CMP(CRE, EQ, "a", none, 2, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(CRE, LT, "a", none, 3, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(MOD, EQ, "a", none, 5, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(MOD, GT, "a", none, 5, NULL)) == 0);
  CU_ASSERT(cmp1(CMP(VAL, EQ, "a", none, 0, "4")) == 1);
  CU_ASSERT(cmp1(CMP(VAL, LT, "a", none, 0, "5")) == 1);
  CU_ASSERT(cmp1(CMP(VAL, GT, "a", none, 0, "4")) == 0);
  CU_ASSERT(cmp1(CMP(VAL, NE, "a", none, 0, "x")) == 1);
  CU_ASSERT(cmp1(CMP(LEA, EQ, "a", none, 0, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(LEA, GT, "a", none, 0, NULL)) == 0);
  /* missing key (etcd): VALUE always fails, others compare zero */
  CU_ASSERT(cmp1(CMP(VAL, NE, "zz", none, 0, "x")) == 0);
  CU_ASSERT(cmp1(CMP(VER, EQ, "zz", none, 0, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(LEA, EQ, "zz", none, 0, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(MOD, LT, "zz", none, 1, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(CRE, EQ, "zz", none, 0, NULL)) == 1);
  /* ranged (etcd): every key must satisfy */
  CU_ASSERT(cmp1(CMP(CRE, GT, "a", NUL, 1, NULL)) == 1);
  CU_ASSERT(cmp1(CMP(CRE, GT, "a", NUL, 2, NULL)) == 0);
  CU_ASSERT(cmp1(CMP(VAL, LT, "a", B("c"), 0, "5")) == 1);
  CU_ASSERT(cmp1(CMP(VAL, LT, "a", NUL, 0, "5")) == 0); /* c = 9 */
  CU_ASSERT(cmp1(CMP(VER, EQ, "x", B("z"), 0, NULL)) == 1); /* empty range: zero KV */
  /* target/union mismatch compares against zero (etcd: a MOD compare carrying a version) */
  Etcdserverpb__Compare *c = CMP(VER, EQ, "a", none, 5, NULL);
  c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
  CU_ASSERT(cmp1(c) == 0);
  /* read-only txns take no revision */
  CU_ASSERT(H.revision == 8 && mvcc_current_rev(M) == 8);
  done();
}

static void test_txn_ops_headers(void) {
  fresh();
  scenario();
  /* etcd: failure branch [range a keys_only, put n prev_kv, range n, delete m]:
   * headers 8, 9, 9 (sees n), 9; top 9; no prev_kv for a new key */
  Etcdserverpb__RequestOp **f = arena_alloc(&A, 4 * sizeof(*f));
  f[0] = OP_RANGE("a", B(NULL), 0);
  f[1] = OP_PUT("n", "1", true);
  f[2] = OP_RANGE("n", B(NULL), 0);
  f[3] = OP_DEL("m", B(NULL), true);
  Etcdserverpb__Compare **c = arena_alloc(&A, sizeof(*c));
  c[0] = CMP(ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION, ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, "a", B(NULL), 0, NULL);
  CU_ASSERT_FATAL(txn(TXN(1, c, 0, NULL, 4, f)) == 0);
  CU_ASSERT(!TR.succeeded && TR.n_responses == 4 && H.revision == 9);
  CU_ASSERT(TR.responses[0]->response_range->header->revision == 8);
  CU_ASSERT(TR.responses[1]->response_put->header->revision == 9);
  CU_ASSERT(TR.responses[1]->response_put->prev_kv == NULL);
  CU_ASSERT(TR.responses[2]->response_range->header->revision == 9);
  CU_ASSERT(TR.responses[2]->response_range->n_kvs == 1);
  CU_ASSERT(TR.responses[3]->response_delete_range->header->revision == 9);
  CU_ASSERT(TR.responses[3]->response_delete_range->deleted == 0);
  /* etcd: [delete m (nothing), put n prev_kv] -> headers 9, 10; top 10 */
  Etcdserverpb__RequestOp **s = arena_alloc(&A, 2 * sizeof(*s));
  s[0] = OP_DEL("m", B(NULL), true);
  s[1] = OP_PUT("n", "2", true);
  CU_ASSERT_FATAL(txn(TXN(0, NULL, 2, s, 0, NULL)) == 0);
  CU_ASSERT(TR.succeeded && H.revision == 10);
  CU_ASSERT(TR.responses[0]->response_delete_range->header->revision == 9);
  CU_ASSERT(TR.responses[1]->response_put->header->revision == 10);
  Mvccpb__KeyValue *p = TR.responses[1]->response_put->prev_kv;
  CU_ASSERT(p && beq(p->value, "1") && p->mod_revision == 9);
  /* all writes of one txn share one revision with sub revisions: put x, put y */
  s = arena_alloc(&A, 3 * sizeof(*s));
  s[0] = OP_PUT("x", "1", false);
  s[1] = OP_PUT("y", "2", false);
  s[2] = OP_DEL("a", B(NULL), false);
  CU_ASSERT(txn(TXN(0, NULL, 3, s, 0, NULL)) == 0 && H.revision == 11);
  CU_ASSERT(get_at("x", 0)->mod_revision == 11);
  CU_ASSERT(get_at("y", 0)->mod_revision == 11);
  CU_ASSERT(get_at("a", 0) == NULL);
  CU_ASSERT(get_at("a", 10) != NULL);
  /* etcd: put foo + delete [a, "\0") passes the duplicate check and deletes foo too */
  s = arena_alloc(&A, 2 * sizeof(*s));
  s[0] = OP_PUT("foo", "1", false);
  s[1] = OP_DEL("a", NUL, false);
  Etcdserverpb__TxnRequest *t = TXN(0, NULL, 2, s, 0, NULL);
  CU_ASSERT(kv_validate_txn(t, 128) == 0);
  CU_ASSERT(txn(t) == 0 && H.revision == 12);
  CU_ASSERT(TR.responses[1]->response_delete_range->deleted == 7); /* b c d n x y + foo */
  CU_ASSERT(get_at("foo", 0) == NULL && get_at("foo", 11) == NULL);
  done();
}

static void test_txn_nested(void) {
  fresh();
  CU_ASSERT(put("a", "1") == 2);
  /* etcd: [put x, range x, delete zz, txn{x == "1"}{range x, put y}] -> the
   * nested compare sees the state before the txn (x missing): it fails, its
   * response has an empty header and no responses. */
  Etcdserverpb__Compare **nc = arena_alloc(&A, sizeof(*nc));
  nc[0] = CMP(ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE, ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, "x", B(NULL), 0, "1");
  Etcdserverpb__RequestOp **ns = arena_alloc(&A, 2 * sizeof(*ns));
  ns[0] = OP_RANGE("x", B(NULL), 0);
  ns[1] = OP_PUT("y", "2", false);
  Etcdserverpb__RequestOp **s = arena_alloc(&A, 4 * sizeof(*s));
  s[0] = OP_PUT("x", "1", false);
  s[1] = OP_RANGE("x", B(NULL), 0);
  s[2] = OP_DEL("zz", B(NULL), false);
  s[3] = OP_TXN(TXN(1, nc, 2, ns, 0, NULL));
  Etcdserverpb__Compare **c = arena_alloc(&A, sizeof(*c));
  c[0] = CMP(ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION, ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER, "a", B(NULL), 0, NULL);
  CU_ASSERT_FATAL(txn(TXN(1, c, 4, s, 0, NULL)) == 0);
  CU_ASSERT(TR.succeeded && H.revision == 3 && TR.n_responses == 4);
  CU_ASSERT(TR.responses[0]->response_put->header->revision == 3);
  CU_ASSERT(TR.responses[1]->response_range->header->revision == 3);
  CU_ASSERT(TR.responses[1]->response_range->n_kvs == 1);
  CU_ASSERT(TR.responses[2]->response_delete_range->header->revision == 3);
  Etcdserverpb__TxnResponse *n = TR.responses[3]->response_txn;
  CU_ASSERT_FATAL(n != NULL);
  CU_ASSERT(!n->succeeded && n->n_responses == 0 && n->header && n->header->revision == 0);
  /* now x == 1: the same txn (minus the put) runs the nested success branch */
  s[0] = OP_RANGE("a", B(NULL), 0);
  CU_ASSERT_FATAL(txn(TXN(1, c, 4, s, 0, NULL)) == 0);
  n = TR.responses[3]->response_txn;
  CU_ASSERT(n->succeeded && n->n_responses == 2 && H.revision == 4);
  CU_ASSERT(n->responses[1]->response_put->header->revision == 4);
  CU_ASSERT(get_at("y", 0) && get_at("y", 0)->mod_revision == 4);
  done();
}

static void test_txn_checks(void) {
  fresh();
  CU_ASSERT(put("a", "1") == 2);
  /* etcd: put n; put m ignore_value -> key not found (checked before the txn) */
  Etcdserverpb__RequestOp **s = arena_alloc(&A, 2 * sizeof(*s));
  s[0] = OP_PUT("n", "1", false);
  s[1] = OP_PUT("n", "", false);
  s[1]->request_put->ignore_value = 1;
  CU_ASSERT(txn(TXN(0, NULL, 2, s, 0, NULL)) == -CETCD_E_KEY_NOT_FOUND);
  CU_ASSERT(mvcc_current_rev(M) == 2 && get_at("n", 0) == NULL);
  /* etcd: a range at a future revision fails, even after a put in the txn */
  s[1] = OP_RANGE("a", B(NULL), 3);
  CU_ASSERT(txn(TXN(0, NULL, 2, s, 0, NULL)) == -CETCD_E_FUTURE_REV);
  s[0]->request_put->lease = 5;
  s[1] = OP_RANGE("a", B(NULL), 0);
  CU_ASSERT(txn(TXN(0, NULL, 2, s, 0, NULL)) == -CETCD_E_LEASE_NOT_FOUND);
  CU_ASSERT(mvcc_current_rev(M) == 2);
  CU_ASSERT(put("a", "2") == 3);
  CU_ASSERT(compact(3) == 3);
  s[0] = OP_RANGE("a", B(NULL), 2);
  CU_ASSERT(txn(TXN(0, NULL, 1, s, 0, NULL)) == -CETCD_E_COMPACTED);
  done();
}

/* ===== validation ========================================================= */

static void test_validate(void) {
  arena_init(&A, 0);
  Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
  CU_ASSERT(kv_validate_put(&p) == -CETCD_E_EMPTY_KEY);
  p.key = B("k"), p.ignore_value = 1, p.value = B("v");
  CU_ASSERT(kv_validate_put(&p) == -CETCD_E_VALUE_PROVIDED);
  p.value = B(NULL), p.ignore_lease = 1, p.lease = 3;
  CU_ASSERT(kv_validate_put(&p) == -CETCD_E_LEASE_PROVIDED);
  p.lease = 0;
  CU_ASSERT(kv_validate_put(&p) == 0);
  Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
  CU_ASSERT(kv_validate_range(&r) == -CETCD_E_EMPTY_KEY);
  Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
  CU_ASSERT(kv_validate_delete_range(&d) == -CETCD_E_EMPTY_KEY);

  /* too many ops: any of compare/success/failure */
  Etcdserverpb__RequestOp **s = arena_alloc(&A, 4 * sizeof(*s));
  for (int i = 0; i < 3; i++) s[i] = OP_RANGE("k", B(NULL), 0);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 3, s, 0, NULL), 2) == -CETCD_E_TOO_MANY_OPS);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 0, NULL, 3, s), 3) == 0);
  Etcdserverpb__Compare **c = arena_alloc(&A, 3 * sizeof(*c));
  for (int i = 0; i < 3; i++) c[i] = CMP(0, 0, "k", B(NULL), 0, NULL);
  CU_ASSERT(kv_validate_txn(TXN(3, c, 0, NULL, 0, NULL), 2) == -CETCD_E_TOO_MANY_OPS);
  c[1]->key = B(NULL);
  CU_ASSERT(kv_validate_txn(TXN(3, c, 0, NULL, 0, NULL), 3) == -CETCD_E_EMPTY_KEY);
  /* a nested txn gets max - parent's count */
  Etcdserverpb__RequestOp **inner = arena_alloc(&A, sizeof(*inner));
  inner[0] = OP_RANGE("k", B(NULL), 0);
  s[0] = OP_TXN(TXN(0, NULL, 1, inner, 0, NULL));
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 2) == -CETCD_E_TOO_MANY_OPS);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 3) == 0);
  /* an op with nothing set */
  Etcdserverpb__RequestOp empty = ETCDSERVERPB__REQUEST_OP__INIT;
  s[0] = &empty;
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 1, s, 0, NULL), 3) == -CETCD_E_KEY_NOT_FOUND);

  /* duplicates */
  s[0] = OP_PUT("a", "1", false);
  s[1] = OP_PUT("a", "2", false);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == -CETCD_E_DUPLICATE_KEY);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 1, s, 1, s + 1), 128) == 0); /* different branches */
  s[1] = OP_DEL("a", B(NULL), false);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == -CETCD_E_DUPLICATE_KEY);
  s[1] = OP_DEL("0", B("b"), false); /* etcd: put a + delete [0,b) -> duplicate */
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == -CETCD_E_DUPLICATE_KEY);
  s[1] = OP_DEL("0", B("a"), false);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == 0);
  s[1] = OP_DEL("0", NUL, false); /* etcd: allowed */
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == 0);
  s[1] = OP_DEL("b", B(NULL), false);
  s[2] = OP_DEL("b", B("c"), false); /* deletes may overlap */
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 3, s, 0, NULL), 128) == 0);
  /* nested: then/else may both put a key, but not the parent too */
  Etcdserverpb__RequestOp **th = arena_alloc(&A, sizeof(*th)), **el = arena_alloc(&A, sizeof(*el));
  th[0] = OP_PUT("x", "1", false);
  el[0] = OP_PUT("x", "2", false);
  s[0] = OP_TXN(TXN(0, NULL, 1, th, 1, el));
  s[1] = OP_PUT("y", "1", false);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == 0);
  s[1] = OP_PUT("x", "1", false);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == -CETCD_E_DUPLICATE_KEY);
  s[1] = OP_DEL("w", B("y"), false); /* a parent delete covering a nested put */
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == -CETCD_E_DUPLICATE_KEY);
  el[0] = OP_DEL("x", B(NULL), false); /* nested delete vs parent put */
  s[1] = OP_PUT("q", "1", false);
  th[0] = OP_PUT("r", "1", false);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == 0);
  s[1] = OP_PUT("x", "1", false);
  CU_ASSERT(kv_validate_txn(TXN(0, NULL, 2, s, 0, NULL), 128) == -CETCD_E_DUPLICATE_KEY);
  arena_free(&A);
}

/* ===== compaction ========================================================== */

static void test_compaction(void) {
  fresh();
  scenario(); /* a: 2,5  b: 3  c: 4, del 7, 8  d: 6 */
  CU_ASSERT(compact(9) == -CETCD_E_FUTURE_REV);
  CU_ASSERT(compact(0) == 8); /* etcd: compact 0 succeeds on a fresh store */
  CU_ASSERT(compact(0) == -CETCD_E_COMPACTED);
  CU_ASSERT(compact(5) == 8);
  CU_ASSERT(mvcc_compact_rev(M) == 5);
  CU_ASSERT(compact(5) == -CETCD_E_COMPACTED);
  CU_ASSERT(compact(4) == -CETCD_E_COMPACTED);
  /* etcd: reading at the compact revision works, below it fails */
  Mvccpb__KeyValue *kv = get_at("a", 5);
  CU_ASSERT(kv && beq(kv->value, "4"));
  CU_ASSERT(get_at("a", 4) == NULL);
  Etcdserverpb__RangeRequest q = RQ("a", B(NULL));
  q.revision = 4;
  CU_ASSERT(rng(&q) == -CETCD_E_COMPACTED);
  q = RQ("c", NUL);
  q.revision = 5; /* etcd: c(3, mod 4) still visible at 5 */
  CU_ASSERT(rng(&q) == 0 && RR.n_kvs == 1 && beq(RR.kvs[0]->value, "3"));
  /* compacting past c's tombstone drops c's old generation */
  CU_ASSERT(compact(7) == 8);
  q.revision = 7;
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "d");
  kv = get_at("c", 0);
  CU_ASSERT(kv && kv->create_revision == 8 && kv->version == 1);
  /* a key deleted at or before the compact revision disappears entirely */
  CU_ASSERT(del("d") == 9);
  CU_ASSERT(compact(9) == 9);
  q = RQ("a", NUL);
  q.revision = 9;
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b,c");
  /* the version continues across compaction */
  CU_ASSERT(put("a", "5") == 10);
  CU_ASSERT(get_at("a", 0)->version == 3);
  done();
}

/* Counts revision records in LevelDB by reopening the store: the index
 * rebuilt from what survived must answer like before. */
static void test_reopen(void) {
  fresh();
  scenario();
  CU_ASSERT(compact(5) == 8);
  CU_ASSERT(del("d") == 9);
  uint64_t ci = mvcc_consistent_index(M);
  CU_ASSERT(ci == next_ci - 1);
  mvcc_close(M);
  store_open();
  CU_ASSERT(mvcc_consistent_index(M) == ci);
  CU_ASSERT(mvcc_current_rev(M) == 9);
  CU_ASSERT(mvcc_compact_rev(M) == 5);
  Etcdserverpb__RangeRequest q = RQ("a", NUL);
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b,c");
  CU_ASSERT(RR.kvs[0]->version == 2 && RR.kvs[0]->create_revision == 2);
  q.revision = 6;
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b,c,d");
  q.revision = 5;
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b,c");
  CU_ASSERT(RR.kvs[2]->mod_revision == 4);
  q.revision = 4;
  CU_ASSERT(rng(&q) == -CETCD_E_COMPACTED);
  CU_ASSERT(compact(5) == -CETCD_E_COMPACTED);
  /* a compaction at the current revision that removes the newest record
   * (the tombstone of d) must not move the revision back */
  CU_ASSERT(compact(9) == 9);
  mvcc_close(M);
  store_open();
  CU_ASSERT(mvcc_current_rev(M) == 9 && mvcc_compact_rev(M) == 9);
  CU_ASSERT(put("e", "1") == 10);
  done();
}

/* LevelDB records in the store's dir with this first byte. */
static int count_records(char prefix) {
  char *err = NULL;
  leveldb_options_t *o = leveldb_options_create();
  leveldb_t *db = leveldb_open(o, dir, &err);
  CU_ASSERT_FATAL(err == NULL);
  leveldb_readoptions_t *ro = leveldb_readoptions_create();
  leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
  int n = 0;
  for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it)) {
    size_t len;
    const char *k = leveldb_iter_key(it, &len);
    n += len && k[0] == prefix;
  }
  leveldb_iter_destroy(it);
  leveldb_readoptions_destroy(ro);
  leveldb_close(db);
  leveldb_options_destroy(o);
  return n;
}

/* A crash between recording a compaction and removing the records: the
 * next open finishes it. */
static void test_interrupted_compaction(void) {
  fresh();
  scenario(); /* 7 records: a2 b3 c4 a5 d6 c7(tomb) c8 */
  CU_ASSERT(compact(5) == 8); /* drops a2 */
  mvcc_close(M);
  CU_ASSERT(count_records('k') == 6);
  /* pretend a compaction at 7 was scheduled and the process died */
  char *err = NULL;
  leveldb_options_t *o = leveldb_options_create();
  leveldb_t *db = leveldb_open(o, dir, &err);
  CU_ASSERT_FATAL(err == NULL);
  leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
  uint8_t v[8] = {0, 0, 0, 0, 0, 0, 0, 7};
  leveldb_put(db, wo, "msc", 3, (const char *)v, 8, &err);
  CU_ASSERT(err == NULL);
  leveldb_writeoptions_destroy(wo);
  leveldb_close(db);
  leveldb_options_destroy(o);
  store_open();
  CU_ASSERT(mvcc_compact_rev(M) == 7 && mvcc_current_rev(M) == 8);
  Etcdserverpb__RangeRequest q = RQ("a", NUL);
  q.revision = 6;
  CU_ASSERT(rng(&q) == -CETCD_E_COMPACTED);
  q.revision = 7;
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b,d");
  mvcc_close(M);
  CU_ASSERT(count_records('k') == 4); /* c4 and the tombstone c7 are gone */
  store_open();
  CU_ASSERT(mvcc_compact_rev(M) == 7);
  done();
}

static bool meta_collect(void *arg, const void *k, size_t kl, const void *v, size_t vl) {
  char *log = arg;
  strncat(log, k, kl);
  strcat(log, "=");
  strncat(log, v, vl);
  strcat(log, ";");
  return true;
}

static void test_meta_records(void) {
  fresh();
  mvcc_batch_begin(M);
  CU_ASSERT(mvcc_meta_put(M, "lease/1", 7, "ttl=5", 5) == 0);
  CU_ASSERT(mvcc_meta_put(M, "lease/2", 7, "ttl=9", 5) == 0);
  CU_ASSERT(mvcc_meta_put(M, "member/1", 8, "n1", 2) == 0);
  void *v = NULL;
  size_t vl = 0;
  CU_ASSERT(mvcc_meta_get(M, "lease/1", 7, &v, &vl) == 1); /* not committed yet */
  CU_ASSERT(mvcc_batch_commit(M, 3) == 0);
  CU_ASSERT(mvcc_meta_get(M, "lease/1", 7, &v, &vl) == 0 && vl == 5 && memcmp(v, "ttl=5", 5) == 0);
  free(v);
  mvcc_batch_begin(M);
  CU_ASSERT(mvcc_meta_delete(M, "lease/1", 7) == 0);
  CU_ASSERT(mvcc_batch_commit(M, 4) == 0);
  mvcc_close(M);
  store_open();
  char log[256] = "";
  CU_ASSERT(mvcc_meta_scan(M, "lease/", 6, meta_collect, log) == 0);
  CU_ASSERT_STRING_EQUAL(log, "lease/2=ttl=9;");
  CU_ASSERT(mvcc_current_rev(M) == 1 && mvcc_consistent_index(M) == 4);
  done();
}

typedef struct pairs {
  char **k, **v;
  size_t *kl, *vl, n;
} pairs;

static bool save_pair(void *arg, const void *k, size_t kl, const void *v, size_t vl) {
  pairs *p = arg;
  p->k = realloc(p->k, (p->n + 1) * sizeof(char *));
  p->v = realloc(p->v, (p->n + 1) * sizeof(char *));
  p->kl = realloc(p->kl, (p->n + 1) * sizeof(size_t));
  p->vl = realloc(p->vl, (p->n + 1) * sizeof(size_t));
  p->k[p->n] = malloc(kl + 1), memcpy(p->k[p->n], k, kl), p->kl[p->n] = kl;
  p->v[p->n] = malloc(vl + 1), memcpy(p->v[p->n], v, vl), p->vl[p->n] = vl;
  p->n++;
  return true;
}

static void test_snapshot_restore(void) {
  /* source: the scenario, a compaction, a delete, a module record */
  fresh();
  scenario();
  CU_ASSERT(compact(5) == 8);
  CU_ASSERT(del("d") == 9);
  mvcc_batch_begin(M);
  CU_ASSERT(mvcc_meta_put(M, "lease/1", 7, "ttl", 3) == 0);
  CU_ASSERT(mvcc_batch_commit(M, 42) == 0);
  pairs p = {0};
  uint64_t ci = 0;
  CU_ASSERT(mvcc_snapshot_save(M, save_pair, &p, &ci) == 0);
  CU_ASSERT(ci == 42 && p.n > 8);
  done();
  /* target: other data, replaced by the copy */
  fresh();
  put("zzz", "1");
  put("a", "other");
  CU_ASSERT(mvcc_restore_begin(M) == 0);
  Etcdserverpb__RangeRequest q = RQ("a", NUL);
  CU_ASSERT(rng(&q) == -CETCD_E_STOPPED);
  for (size_t i = 0; i < p.n; i++) CU_ASSERT(mvcc_restore_add(M, p.k[i], p.kl[i], p.v[i], p.vl[i]) == 0);
  CU_ASSERT(mvcc_restore_end(M) == 0);
  CU_ASSERT(mvcc_consistent_index(M) == 42 && mvcc_current_rev(M) == 9 && mvcc_compact_rev(M) == 5);
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b,c");
  CU_ASSERT(RR.kvs[0]->version == 2 && beq(RR.kvs[0]->value, "4"));
  q.revision = 6;
  CU_ASSERT(rng(&q) == 0);
  CU_ASSERT_STRING_EQUAL(keys(), "a,b,c,d");
  q.revision = 4;
  CU_ASSERT(rng(&q) == -CETCD_E_COMPACTED);
  void *v = NULL;
  size_t vl = 0;
  CU_ASSERT(mvcc_meta_get(M, "lease/1", 7, &v, &vl) == 0 && vl == 3);
  free(v);
  CU_ASSERT(put("e", "1") == 10);
  /* survives a reopen */
  mvcc_close(M);
  store_open();
  CU_ASSERT(mvcc_current_rev(M) == 10 && mvcc_consistent_index(M) == next_ci - 1);
  /* an interrupted restore leaves a store that refuses to open */
  CU_ASSERT(mvcc_restore_begin(M) == 0);
  CU_ASSERT(mvcc_restore_add(M, p.k[0], p.kl[0], p.v[0], p.vl[0]) == 0);
  mvcc_close(M);
  char err[256] = "";
  mvcc *m2 = NULL;
  CU_ASSERT(mvcc_open(dir, NULL, &m2, err, sizeof(err)) < 0);
  CU_ASSERT(strstr(err, "restore") != NULL);
  CU_ASSERT(m2 == NULL);
  /* done() closes M: give it an empty store in the same dir */
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  CU_ASSERT(mkdir(dir, 0700) == 0);
  store_open();
  done();
  for (size_t i = 0; i < p.n; i++) free(p.k[i]), free(p.v[i]);
  free(p.k), free(p.v), free(p.kl), free(p.vl);
}

static void test_batch_one_write(void) {
  fresh();
  uint64_t w0 = mvcc_leveldb_writes(M);
  mvcc_batch_begin(M);
  char k[32], v[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(k, sizeof(k), "key%04d", i % 500);
    snprintf(v, sizeof(v), "v%d", i);
    Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
    req.key = B(k), req.value = B(v), req.prev_kv = 1;
    Etcdserverpb__PutResponse resp = ETCDSERVERPB__PUT_RESPONSE__INIT;
    resp.header = &H;
    CU_ASSERT(mvcc_put(M, &req, &resp, &A) == 0);
    CU_ASSERT(H.revision == 2 + i);
    if (i >= 500) { /* the batch reads its own uncommitted writes */
      CU_ASSERT(resp.prev_kv && resp.prev_kv->mod_revision == 2 + i - 500);
    }
    arena_reset(&A);
  }
  /* readers see nothing of the open batch */
  CU_ASSERT(get_at("key0000", 0) == NULL && H.revision == 1);
  Etcdserverpb__RangeRequest q = RQ("key", NUL);
  etcdserverpb__range_response__init(&RR);
  RR.header = &H;
  CU_ASSERT(mvcc_range_in_batch(M, &q, &RR, &A) == 0 && RR.count == 500 && H.revision == 1001);
  CU_ASSERT(mvcc_batch_commit(M, 77) == 0);
  CU_ASSERT(mvcc_leveldb_writes(M) == w0 + 1);
  CU_ASSERT(mvcc_consistent_index(M) == 77);
  Mvccpb__KeyValue *kv = get_at("key0007", 0);
  CU_ASSERT(kv && kv->version == 2 && kv->mod_revision == 509 && beq(kv->value, "v507"));
  CU_ASSERT(mvcc_sync(M) == 0);
  CU_ASSERT(mvcc_db_size_bytes(M) > 0);
  done();
}

/* ===== events ============================================================== */

static int nev;
static char evlog[512];
static void on_event(void *arg, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *prev) {
  (void)arg;
  char buf[96];
  snprintf(buf, sizeof(buf), "%s %.*s@%lld%s%.*s;", type == MVCCPB__EVENT__EVENT_TYPE__PUT ? "P" : "D",
           (int)kv->key.len, (char *)kv->key.data, (long long)kv->mod_revision, prev ? " prev=" : "",
           prev ? (int)prev->value.len : 0, prev ? (char *)prev->value.data : "");
  strcat(evlog, buf);
  nev++;
}

static void test_events(void) {
  fresh();
  evlog[0] = 0;
  mvcc_set_event_fn(M, on_event, NULL);
  put("a", "1");
  put("a", "2");
  del("a");
  CU_ASSERT_STRING_EQUAL(evlog, "P a@2;P a@3 prev=1;D a@4 prev=2;");
  /* several changes of one key in one batch: prev comes from the batch */
  evlog[0] = 0;
  mvcc_batch_begin(M);
  for (int i = 0; i < 3; i++) {
    Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
    req.key = B("b"), req.value = B(i == 0 ? "x" : i == 1 ? "y" : "z");
    Etcdserverpb__PutResponse resp = ETCDSERVERPB__PUT_RESPONSE__INIT;
    resp.header = &H;
    CU_ASSERT(mvcc_put(M, &req, &resp, &A) == 0);
  }
  CU_ASSERT(mvcc_batch_commit(M, next_ci++) == 0);
  CU_ASSERT_STRING_EQUAL(evlog, "P b@5;P b@6 prev=x;P b@7 prev=y;");
  evlog[0] = 0;
  Etcdserverpb__DeleteRangeResponse r;
  CU_ASSERT(del_ex("a", NUL, false, &r) == 8);
  CU_ASSERT_STRING_EQUAL(evlog, "D b@8 prev=z;");
  done();
}

/* ===== history ============================================================= */

static bool on_change(void *arg, int type, const Mvccpb__KeyValue *kv) {
  char *log = arg, buf[64];
  snprintf(buf, sizeof(buf), "%s%s %.*s@%lld/v%lld", log[0] ? "," : "", type == MVCCPB__EVENT__EVENT_TYPE__PUT ? "P" : "D",
           (int)kv->key.len, (char *)kv->key.data, (long long)kv->mod_revision, (long long)kv->version);
  strcat(log, buf);
  return strlen(log) < 200;
}

static void test_changes(void) {
  fresh();
  scenario();
  char log[512] = "";
  CU_ASSERT(mvcc_changes(M, 3, 7, on_change, log) == 0);
  CU_ASSERT_STRING_EQUAL(log, "P b@3/v1,P c@4/v1,P a@5/v2,P d@6/v1,D c@7/v0");
  log[0] = 0;
  CU_ASSERT(mvcc_changes(M, 7, 0, on_change, log) == 0);
  CU_ASSERT_STRING_EQUAL(log, "D c@7/v0,P c@8/v1");
  /* one txn: one revision, changes in sub-revision order */
  Etcdserverpb__RequestOp **s = arena_alloc(&A, 2 * sizeof(*s));
  s[0] = OP_PUT("z", "1", false);
  s[1] = OP_DEL("a", B(NULL), false);
  CU_ASSERT(txn(TXN(0, NULL, 2, s, 0, NULL)) == 0 && H.revision == 9);
  log[0] = 0;
  CU_ASSERT(mvcc_changes(M, 9, 9, on_change, log) == 0);
  CU_ASSERT_STRING_EQUAL(log, "P z@9/v1,D a@9/v0");
  CU_ASSERT(compact(5) == 9);
  log[0] = 0;
  CU_ASSERT(mvcc_changes(M, 4, 0, on_change, log) == -CETCD_E_COMPACTED);
  CU_ASSERT(mvcc_changes(M, 5, 6, on_change, log) == 0);
  CU_ASSERT_STRING_EQUAL(log, "P a@5/v2,P d@6/v1");
  done();
}

/* ===== readers in threads ================================================== */

static atomic_bool rd_stop;
static atomic_long rd_reads, rd_bad, rd_compacted;

/* Every value is its own mod revision in decimal; every key exists from
 * revision 101 on. */
static void *range_reader(void *arg) {
  (void)arg;
  rcu_register_thread();
  arena a;
  arena_init(&a, 0);
  unsigned seed = 99;
  while (!atomic_load(&rd_stop)) {
    Etcdserverpb__RangeRequest q = RQ("r", B("s"));
    int64_t cur = mvcc_current_rev(M);
    if (rand_r(&seed) % 2 && cur > 150) q.revision = cur - (int64_t)(rand_r(&seed) % 50);
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.header = &h;
    int rc = mvcc_range(M, &q, &r, &a);
    if (rc == -CETCD_E_COMPACTED && q.revision) {
      atomic_fetch_add(&rd_compacted, 1);
    } else if (rc) {
      fprintf(stderr, "reader: rc %d at %lld\n", rc, (long long)q.revision);
      atomic_fetch_add(&rd_bad, 1);
    } else {
      int64_t at = q.revision ? q.revision : h.revision;
      if (at > 101 && r.count != 100) {
        fprintf(stderr, "reader: count %lld at %lld\n", (long long)r.count, (long long)at);
        atomic_fetch_add(&rd_bad, 1);
      }
      for (size_t i = 0; i < r.n_kvs; i++) {
        char want[32];
        snprintf(want, sizeof(want), "%lld", (long long)r.kvs[i]->mod_revision);
        if (!beq(r.kvs[i]->value, want) || r.kvs[i]->mod_revision > at) {
          fprintf(stderr, "reader: kv mod %lld value %.*s at %lld\n", (long long)r.kvs[i]->mod_revision,
                  (int)r.kvs[i]->value.len, (char *)r.kvs[i]->value.data, (long long)at);
          atomic_fetch_add(&rd_bad, 1);
        }
      }
    }
    arena_reset(&a);
    atomic_fetch_add(&rd_reads, 1);
  }
  arena_free(&a);
  rcu_unregister_thread();
  return NULL;
}

static void test_concurrent_readers(void) {
  fresh();
  atomic_store(&rd_stop, false);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, range_reader, NULL);
  unsigned seed = 5;
  int64_t rev = 1;
  char k[16], v[32];
  for (int b = 0; b < 400; b++) {
    mvcc_batch_begin(M);
    for (int j = 0; j < 50; j++) {
      int i = rev < 101 ? (int)rev - 1 : (int)(rand_r(&seed) % 100);
      snprintf(k, sizeof(k), "r%03d", i);
      snprintf(v, sizeof(v), "%lld", (long long)rev + 1);
      Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
      req.key = B(k), req.value = B(v);
      Etcdserverpb__PutResponse resp = ETCDSERVERPB__PUT_RESPONSE__INIT;
      resp.header = &H;
      CU_ASSERT(mvcc_put(M, &req, &resp, &A) == 0);
      rev = H.revision;
      arena_reset(&A);
    }
    if (b % 20 == 19) {
      Etcdserverpb__CompactionRequest creq = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
      creq.revision = rev - 30;
      Etcdserverpb__CompactionResponse cresp = ETCDSERVERPB__COMPACTION_RESPONSE__INIT;
      cresp.header = &H;
      CU_ASSERT(mvcc_compact(M, &creq, &cresp, &A) == 0);
    }
    CU_ASSERT(mvcc_batch_commit(M, next_ci++) == 0);
    usleep(200);
  }
  atomic_store(&rd_stop, true);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  CU_ASSERT(atomic_load(&rd_bad) == 0);
  CU_ASSERT(atomic_load(&rd_reads) > 100);
  printf("(%ld reads, %ld compacted) ", atomic_load(&rd_reads), atomic_load(&rd_compacted));
  done();
}

int main(void) {
  rcu_register_thread();
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("mvcc", NULL, NULL);
  CU_add_test(s, "put revisions", test_put_revisions);
  CU_add_test(s, "range limit/count/range_end/revision", test_range_limit_count);
  CU_add_test(s, "range sort", test_range_sort);
  CU_add_test(s, "range sort: Go's order of ties", test_range_sort_go_order);
  CU_add_test(s, "range filters", test_range_filters);
  CU_add_test(s, "put options and leases", test_put_options);
  CU_add_test(s, "delete range", test_delete_range);
  CU_add_test(s, "txn compares", test_txn_compares);
  CU_add_test(s, "txn ops and headers", test_txn_ops_headers);
  CU_add_test(s, "txn nested", test_txn_nested);
  CU_add_test(s, "txn checks", test_txn_checks);
  CU_add_test(s, "validation", test_validate);
  CU_add_test(s, "compaction", test_compaction);
  CU_add_test(s, "reopen", test_reopen);
  CU_add_test(s, "interrupted compaction", test_interrupted_compaction);
  CU_add_test(s, "batch = one write", test_batch_one_write);
  CU_add_test(s, "other modules' records", test_meta_records);
  CU_add_test(s, "snapshot save/restore", test_snapshot_restore);
  CU_add_test(s, "events", test_events);
  CU_add_test(s, "history (mvcc_changes)", test_changes);
  CU_add_test(s, "readers in threads", test_concurrent_readers);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned fails = CU_get_number_of_failures();
  CU_cleanup_registry();
  rcu_unregister_thread();
  return fails ? 1 : 0;
}
