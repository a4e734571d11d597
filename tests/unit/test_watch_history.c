/*
 * test_watch_history.c -- store/mvcc_history.c: chunks of a key range's
 * change history, prev_kv, chunk bounds on revision boundaries, and the
 * compacted start revision.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "msg/errors.h"
#include "store/mvcc_history.h"

static mvcc *M;
static char dir[64];
static arena A;
static uint64_t ci = 1;
static char logbuf[4096];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static void fresh(void) {
  strcpy(dir, "/tmp/cetcd-test-whist-XXXXXX");
  CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
  char err[256] = "";
  CU_ASSERT_FATAL(mvcc_open(dir, NULL, &M, err, sizeof(err)) == 0);
  arena_init(&A, 0);
  ci = 1;
}

static void done(void) {
  mvcc_close(M);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  arena_free(&A);
}

static ProtobufCBinaryData B(const char *s) { return (ProtobufCBinaryData){strlen(s), (uint8_t *)s}; }

static void put(const char *k, const char *v) {
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  Etcdserverpb__PutResponse resp = ETCDSERVERPB__PUT_RESPONSE__INIT;
  Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  req.key = B(k), req.value = B(v);
  resp.header = &h;
  mvcc_batch_begin(M);
  CU_ASSERT(mvcc_put(M, &req, &resp, &A) == 0);
  CU_ASSERT(mvcc_batch_commit(M, ci++) == 0);
}

/* Deletes [k, end) (end "" = just k) in one revision. */
static void del(const char *k, const char *end) {
  Etcdserverpb__DeleteRangeRequest req = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
  Etcdserverpb__DeleteRangeResponse resp = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
  Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  req.key = B(k), req.range_end = B(end);
  resp.header = &h;
  mvcc_batch_begin(M);
  CU_ASSERT(mvcc_delete_range(M, &req, &resp, &A) == 0);
  CU_ASSERT(mvcc_batch_commit(M, ci++) == 0);
}

static void compact(int64_t rev) {
  Etcdserverpb__CompactionRequest req = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
  Etcdserverpb__CompactionResponse resp = ETCDSERVERPB__COMPACTION_RESPONSE__INIT;
  Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  req.revision = rev;
  resp.header = &h;
  mvcc_batch_begin(M);
  CU_ASSERT(mvcc_compact(M, &req, &resp, &A) == 0);
  CU_ASSERT(mvcc_batch_commit(M, ci++) == 0);
}

static void on_ev(void *arg, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *prev) {
  (void)arg;
  char b[128];
  snprintf(b, sizeof(b), "%s%s %.*s@%lld", logbuf[0] ? "," : "", type == MVCCPB__EVENT__EVENT_TYPE__PUT ? "P" : "D",
           (int)kv->key.len, (char *)kv->key.data, (long long)kv->mod_revision);
  strcat(logbuf, b);
  if (prev) {
    snprintf(b, sizeof(b), "(%.*s)", (int)prev->value.len, (char *)prev->value.data);
    strcat(logbuf, b);
  }
}

static int rd(const char *k, const char *end, int64_t from, int64_t to, size_t max, bool prev, int64_t *next) {
  mvcc_hist_query q = {.key = (const uint8_t *)k, .key_len = strlen(k), .range_end = (const uint8_t *)end,
                       .range_end_len = end ? (end[0] ? strlen(end) : 1) : 0, .from_rev = from,
                       .to_rev = to, .max_events = max, .prev_kv = prev};
  logbuf[0] = 0;
  return mvcc_history_read(M, &q, on_ev, NULL, next);
}

/* rev 2 a=1, 3 b=1, 4 a=2, 5 c=1, 6 del a, 7 a=3, 8 del [b, d) */
static void scenario(void) {
  put("a", "1");
  put("b", "1");
  put("a", "2");
  put("c", "1");
  del("a", "");
  put("a", "3");
  del("b", "d");
}

static void test_key_and_ranges(void) {
  fresh();
  scenario();
  int64_t next;
  CU_ASSERT(rd("a", NULL, 1, 0, 0, false, &next) == 0);
  CU_ASSERT_STRING_EQUAL(logbuf, "P a@2,P a@4,D a@6,P a@7");
  CU_ASSERT(next == 9);
  CU_ASSERT(rd("b", "d", 3, 0, 0, false, &next) == 0);
  CU_ASSERT_STRING_EQUAL(logbuf, "P b@3,P c@5,D b@8,D c@8");
  CU_ASSERT(rd("b", "", 5, 7, 0, false, &next) == 0); /* from key b: b.. */
  CU_ASSERT_STRING_EQUAL(logbuf, "P c@5");
  CU_ASSERT(next == 8);
  CU_ASSERT(rd("", "", 7, 0, 0, false, &next) == 0); /* every key */
  CU_ASSERT_STRING_EQUAL(logbuf, "P a@7,D b@8,D c@8");
  CU_ASSERT(rd("a", NULL, 9, 0, 0, false, &next) == 0); /* future: nothing yet */
  CU_ASSERT_STRING_EQUAL(logbuf, "");
  CU_ASSERT(next == 9);
  done();
}

static void test_prev_kv(void) {
  fresh();
  scenario();
  int64_t next;
  CU_ASSERT(rd("a", "b", 1, 0, 0, true, &next) == 0);
  CU_ASSERT_STRING_EQUAL(logbuf, "P a@2,P a@4(1),D a@6(2),P a@7");
  CU_ASSERT(rd("b", "d", 8, 0, 0, true, &next) == 0);
  CU_ASSERT_STRING_EQUAL(logbuf, "D b@8(1),D c@8(1)");
  done();
}

/* Chunks end on revision boundaries and, put together, are the whole. */
static void test_chunks(void) {
  fresh();
  scenario();
  int64_t next = 2;
  char all[512] = "";
  int rounds = 0;
  while (next <= 8) {
    CU_ASSERT_FATAL(rd("", "", next, 8, 1, false, &next) == 0);
    if (logbuf[0]) strcat(all, all[0] ? "," : ""), strcat(all, logbuf);
    rounds++;
  }
  CU_ASSERT_STRING_EQUAL(all, "P a@2,P b@3,P a@4,P c@5,D a@6,P a@7,D b@8,D c@8");
  CU_ASSERT(rounds == 7); /* rev 8's two deletes come in one chunk */
  CU_ASSERT(next == 9);
  done();
}

static void test_compacted(void) {
  fresh();
  scenario();
  compact(5);
  int64_t next;
  CU_ASSERT(rd("a", NULL, 4, 0, 0, false, &next) == -CETCD_E_COMPACTED);
  CU_ASSERT_STRING_EQUAL(logbuf, "");
  CU_ASSERT(rd("a", NULL, 5, 0, 0, true, &next) == 0);
  CU_ASSERT_STRING_EQUAL(logbuf, "D a@6(2),P a@7"); /* a=2 (rev 4) survives compaction at 5 */
  CU_ASSERT(rd("a", NULL, 30, 0, 0, false, &next) == 0);
  done();
}

static void test_in_range(void) {
  const uint8_t *a = (const uint8_t *)"a", *b = (const uint8_t *)"b", *ab = (const uint8_t *)"ab";
  CU_ASSERT(mvcc_history_in_range(a, 1, a, 1, NULL, 0));
  CU_ASSERT(!mvcc_history_in_range(ab, 2, a, 1, NULL, 0));
  CU_ASSERT(mvcc_history_in_range(ab, 2, a, 1, b, 1));
  CU_ASSERT(!mvcc_history_in_range(b, 1, a, 1, b, 1));
  CU_ASSERT(mvcc_history_in_range(b, 1, a, 1, (const uint8_t *)"", 1));
  CU_ASSERT(!mvcc_history_in_range(a, 1, b, 1, (const uint8_t *)"", 1));
}

int main(void) {
  rcu_register_thread();
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("watch_history", NULL, NULL);
  CU_add_test(s, "key, range, from-key", test_key_and_ranges);
  CU_add_test(s, "prev_kv", test_prev_kv);
  CU_add_test(s, "bounded chunks", test_chunks);
  CU_add_test(s, "compacted start", test_compacted);
  CU_add_test(s, "range rules", test_in_range);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned fails = CU_get_number_of_failures();
  CU_cleanup_registry();
  rcu_unregister_thread();
  return fails ? 1 : 0;
}
