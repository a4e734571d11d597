/*
 * test_bench_pbscan.c -- cetcd-bench's in-place protobuf reading
 * (bench/cetcd-bench/pbscan.c) against what protobuf-c encodes, and its
 * latency histogram (bench/cetcd-bench/hist.c). Both are pure and are
 * compiled into this test directly.
 */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "bench/cetcd-bench/hist.c"
#include "bench/cetcd-bench/pbscan.c"
#include "rpc.pb-c.h"

/* A WatchResponse with two events whose values start with 7 and 8. */
static uint8_t *pack_watch_resp(size_t *len) {
  static uint8_t key[] = "k1", v1[16] = {7}, v2[4] = {8};
  Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  h.cluster_id = 1;
  h.member_id = 2;
  h.revision = 42;
  h.raft_term = 3;
  Mvccpb__KeyValue kv1 = MVCCPB__KEY_VALUE__INIT, kv2 = MVCCPB__KEY_VALUE__INIT;
  kv1.key.data = kv2.key.data = key;
  kv1.key.len = kv2.key.len = 2;
  kv1.mod_revision = 41;
  kv2.mod_revision = 42;
  kv1.value.data = v1;
  kv1.value.len = sizeof v1;
  kv2.value.data = v2;
  kv2.value.len = sizeof v2;
  kv1.version = 5;
  Mvccpb__Event e1 = MVCCPB__EVENT__INIT, e2 = MVCCPB__EVENT__INIT;
  e1.kv = &kv1;
  e2.kv = &kv2;
  e2.type = MVCCPB__EVENT__EVENT_TYPE__DELETE;
  Mvccpb__Event *evs[2] = {&e1, &e2};
  Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
  r.header = &h;
  r.watch_id = 300; /* two varint bytes */
  r.n_events = 2;
  r.events = evs;
  *len = protobuf_c_message_get_packed_size(&r.base);
  uint8_t *buf = malloc(*len);
  protobuf_c_message_pack(&r.base, buf);
  return buf;
}

typedef struct seen {
  pb_watch_event ev[4];
  int n;
} seen;

static void collect(void *ud, const pb_watch_event *ev) {
  seen *s = ud;
  if (s->n < 4) s->ev[s->n++] = *ev;
}

static void test_watch_response(void) {
  size_t len;
  uint8_t *buf = pack_watch_resp(&len);
  pb_watch_resp r;
  CU_ASSERT_EQUAL(pb_watch_resp_scan(buf, len, &r), 0);
  CU_ASSERT_EQUAL(r.watch_id, 300);
  CU_ASSERT_EQUAL(r.header_revision, 42);
  CU_ASSERT_EQUAL(r.n_events, 2);
  CU_ASSERT_FALSE(r.created);
  seen s = {0};
  CU_ASSERT_EQUAL(pb_watch_events(buf, len, collect, &s), 2);
  CU_ASSERT_EQUAL(s.n, 2);
  CU_ASSERT_EQUAL(s.ev[0].type, 0);
  CU_ASSERT_EQUAL(s.ev[0].mod_revision, 41);
  CU_ASSERT_EQUAL(s.ev[0].value_seq, 7);
  CU_ASSERT_EQUAL(s.ev[0].value_len, 16);
  CU_ASSERT_EQUAL(s.ev[0].key_len, 2);
  CU_ASSERT_EQUAL(memcmp(s.ev[0].key, "k1", 2), 0);
  CU_ASSERT_EQUAL(s.ev[1].type, 1);
  CU_ASSERT_EQUAL(s.ev[1].mod_revision, 42);
  CU_ASSERT_EQUAL(s.ev[1].value_seq, 0); /* shorter than 8 bytes */
  /* Every truncation is refused or reads as a shorter valid message; none
   * reads past the cut (run under ASan to see). */
  for (size_t cut = 0; cut < len; cut++) {
    uint8_t *t = malloc(cut ? cut : 1);
    memcpy(t, buf, cut);
    int rc = pb_watch_resp_scan(t, cut, &r);
    CU_ASSERT(rc == 0 || rc == -1);
    s.n = 0;
    CU_ASSERT(pb_watch_events(t, cut, collect, &s) <= 2);
    free(t);
  }
  free(buf);
}

static void test_created_and_canceled(void) {
  Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
  r.created = 1;
  r.canceled = 1;
  r.watch_id = 0;
  r.cancel_reason = "etcdserver: mvcc: required revision has been compacted";
  r.compact_revision = 9;
  uint8_t buf[256];
  size_t len = protobuf_c_message_pack(&r.base, buf);
  pb_watch_resp w;
  CU_ASSERT_EQUAL(pb_watch_resp_scan(buf, len, &w), 0);
  CU_ASSERT_TRUE(w.created);
  CU_ASSERT_TRUE(w.canceled);
  CU_ASSERT_EQUAL(w.compact_revision, 9);
  CU_ASSERT_EQUAL(w.cancel_reason_len, strlen(r.cancel_reason));
  CU_ASSERT_EQUAL(memcmp(w.cancel_reason, r.cancel_reason, w.cancel_reason_len), 0);
  CU_ASSERT_EQUAL(w.n_events, 0);
}

static void test_status_and_junk(void) {
  /* StatusResponse{header{member_id: 0x1234}, version "3.4", leader: 0x1234}
   * plus an unknown fixed64 field (12) that must be skipped */
  uint8_t st[] = {0x0a, 0x03, 0x10, 0xb4, 0x24, 0x12, 0x03, '3', '.', '4', 0x20, 0xb4, 0x24,
                  0x61, 1, 2, 3, 4, 5, 6, 7, 8};
  uint64_t member = 0, leader = 0;
  CU_ASSERT_EQUAL(pb_status_scan(st, sizeof st, &member, &leader), 0);
  CU_ASSERT_EQUAL(member, 0x1234);
  CU_ASSERT_EQUAL(leader, 0x1234);
  uint8_t group[] = {0x0b}; /* wire type 3: a group, not used by etcd */
  CU_ASSERT_EQUAL(pb_status_scan(group, sizeof group, &member, &leader), -1);
  uint8_t overlong[] = {0x0a, 0x7f, 0x00}; /* length past the end */
  pb_watch_resp w;
  CU_ASSERT_EQUAL(pb_watch_resp_scan(overlong, sizeof overlong, &w), -1);
  uint8_t field0[] = {0x00, 0x01}; /* field number 0 */
  CU_ASSERT_EQUAL(pb_watch_resp_scan(field0, sizeof field0, &w), -1);
}

static void test_hist(void) {
  bench_hist *h = bench_hist_new();
  CU_ASSERT_EQUAL(bench_hist_count(h), 0);
  CU_ASSERT_EQUAL(bench_hist_at_rank(h, 0), 0);
  /* 1 ms .. 10 s, 10,000 samples, evenly spread */
  for (int i = 1; i <= 10000; i++) bench_hist_add(h, 0.001 * i);
  CU_ASSERT_EQUAL(bench_hist_count(h), 10000);
  CU_ASSERT_DOUBLE_EQUAL(bench_hist_min(h), 0.001, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(bench_hist_max(h), 10.0, 1e-9);
  CU_ASSERT_DOUBLE_EQUAL(bench_hist_mean(h), 5.0005, 1e-9);
  for (long r = 0; r < 10000; r += 997) {
    double want = 0.001 * (double)(r + 1), got = bench_hist_at_rank(h, r);
    CU_ASSERT(got >= want * 0.99 && got <= want * 1.01);
  }
  CU_ASSERT_EQUAL(bench_hist_count_le(h, 100.0), 10000);
  long half = bench_hist_count_le(h, 5.0);
  CU_ASSERT(half >= 4950 && half <= 5050);
  bench_hist_add(h, -1); /* clamped to 0, never a negative bucket */
  CU_ASSERT_EQUAL(bench_hist_min(h), 0);
  bench_hist_add(h, 1e6); /* beyond the top bucket: kept exactly as max */
  CU_ASSERT_DOUBLE_EQUAL(bench_hist_max(h), 1e6, 1e-3);
  bench_hist_free(h);
}

int main(void) {
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("bench_pbscan", NULL, NULL);
  CU_add_test(s, "watch response", test_watch_response);
  CU_add_test(s, "created and canceled", test_created_and_canceled);
  CU_add_test(s, "status and junk", test_status_and_junk);
  CU_add_test(s, "histogram", test_hist);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
