/*
 * test_alarm.c -- the alarm store and the quota's cost rules (actors/alarm.c):
 * etcd's AlarmMember text, Cost, the Alarm actions' responses, the
 * applierV3Capped / applierV3Corrupt gates, the published RCU view, and
 * persistence across a reopen of the store.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actors/maint.h"
#include "msg/errors.h"

static server S;
static char dir[64];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
  (void)st, (void)flag, (void)f;
  return remove(p);
}

static void server_fresh(void) {
  memset(&S, 0, sizeof(S));
  S.member_id = 0x1111;
  S.cluster_id = 0x2222;
  S.boot_nonce = 7;
  strcpy(dir, "/tmp/cetcd-test-alarm-XXXXXX");
  CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
  char err[256] = "";
  CU_ASSERT_FATAL(mvcc_open(dir, NULL, &S.store, err, sizeof(err)) == 0);
}

static void server_done(void) {
  mvcc_close(S.store);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_text(void) {
  char b[64];
  alarm_member m = {.member_id = 2671298631917673680ull, .type = ETCDSERVERPB__ALARM_TYPE__NOSPACE};
  alarm_member_text(&m, b, sizeof(b));
  CU_ASSERT_STRING_EQUAL(b, "memberID:2671298631917673680 alarm:NOSPACE ");
  m = (alarm_member){.member_id = 5, .type = ETCDSERVERPB__ALARM_TYPE__CORRUPT};
  alarm_member_text(&m, b, sizeof(b));
  CU_ASSERT_STRING_EQUAL(b, "memberID:5 alarm:CORRUPT ");
  m = (alarm_member){.member_id = 0, .type = ETCDSERVERPB__ALARM_TYPE__NOSPACE};
  alarm_member_text(&m, b, sizeof(b));
  CU_ASSERT_STRING_EQUAL(b, "alarm:NOSPACE ");
  m = (alarm_member){.member_id = 9, .type = 0};
  alarm_member_text(&m, b, sizeof(b));
  CU_ASSERT_STRING_EQUAL(b, "memberID:9 ");
  m = (alarm_member){.member_id = 9, .type = 7};
  alarm_member_text(&m, b, sizeof(b));
  CU_ASSERT_STRING_EQUAL(b, "memberID:9 alarm:7 ");
}

static void test_cost(void) {
  Etcdserverpb__PutRequest p1 = ETCDSERVERPB__PUT_REQUEST__INIT, p2 = ETCDSERVERPB__PUT_REQUEST__INIT;
  p1.key.len = 3, p1.value.len = 10;
  p2.key.len = 1, p2.value.len = 100;
  CU_ASSERT_EQUAL(quota_cost_put(&p1), 256 + 13);
  Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
  Etcdserverpb__RequestOp o1 = ETCDSERVERPB__REQUEST_OP__INIT, o2 = ETCDSERVERPB__REQUEST_OP__INIT,
                          o3 = ETCDSERVERPB__REQUEST_OP__INIT;
  o1.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT, o1.request_put = &p1;
  o2.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT, o2.request_put = &p2;
  o3.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE, o3.request_range = &rr;
  Etcdserverpb__RequestOp *succ[] = {&o1, &o3}, *fail[] = {&o2};
  Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
  t.success = succ, t.n_success = 2, t.failure = fail, t.n_failure = 1;
  CU_ASSERT_EQUAL(quota_cost_txn(&t), 256 + 101); /* the costlier branch */
  t.n_failure = 0;
  t.success = &succ[1], t.n_success = 1;
  CU_ASSERT_EQUAL(quota_cost_txn(&t), 0);
  S.opt.quota_bytes = 0; /* no quota: everything fits */
  CU_ASSERT_TRUE(quota_available(&S, 1 << 30));
}

/* One AlarmRequest applied in its own batch; returns the decoded response
 * (free with etcdserverpb__alarm_response__free_unpacked) or NULL with *err. */
static Etcdserverpb__AlarmResponse *apply(alarm_state *as, int action, uint64_t member, int type, int *err) {
  Etcdserverpb__AlarmRequest r = ETCDSERVERPB__ALARM_REQUEST__INIT;
  r.action = (Etcdserverpb__AlarmRequest__AlarmAction)action;
  r.memberid = member;
  r.alarm = (Etcdserverpb__AlarmType)type;
  size_t len = 0;
  mvcc_batch_begin(S.store);
  uint8_t *buf = alarm_apply(as, &r, &len, err);
  CU_ASSERT_EQUAL(mvcc_batch_commit(S.store, mvcc_consistent_index(S.store) + 1), 0);
  alarm_publish(as);
  if (!buf) return NULL;
  Etcdserverpb__AlarmResponse *resp = etcdserverpb__alarm_response__unpack(NULL, len, buf);
  free(buf);
  CU_ASSERT_PTR_NOT_NULL(resp);
  if (resp) CU_ASSERT_PTR_NULL(resp->header); /* etcd's apply sets none */
  return resp;
}

static size_t count(alarm_state *as, int action, uint64_t member, int type) {
  int err = 0;
  Etcdserverpb__AlarmResponse *r = apply(as, action, member, type, &err);
  CU_ASSERT_EQUAL(err, 0);
  size_t n = r ? r->n_alarms : 0;
  etcdserverpb__alarm_response__free_unpacked(r, NULL);
  return n;
}

static int gate(alarm_state *as, Cetcdpb__InternalRequest__RequestCase which, Etcdserverpb__TxnRequest *txn) {
  Cetcdpb__InternalRequest req = CETCDPB__INTERNAL_REQUEST__INIT;
  req.request_case = which;
  req.txn = txn;
  return alarm_gate(as, &req);
}

static size_t view_size(void) {
  rcu_read_lock();
  alarm_view *v = rcu_dereference(S.alarms);
  size_t n = v ? v->n : (size_t)-1;
  rcu_read_unlock();
  return n;
}

enum { GET = 0, ACT = 1, DEACT = 2, NOSPACE = 1, CORRUPT = 2 };

static void test_actions_and_gates(void) {
  server_fresh();
  alarm_state *as = alarm_state_open(&S);
  CU_ASSERT_FATAL(as != NULL);
  CU_ASSERT_EQUAL(view_size(), 0);
  CU_ASSERT_EQUAL(count(as, GET, 0, 0), 0);
  CU_ASSERT_EQUAL(count(as, DEACT, 0x1111, NOSPACE), 0); /* nothing to disarm: empty */
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_PUT, NULL), 0);

  CU_ASSERT_EQUAL(count(as, ACT, 0x1111, NOSPACE), 1);
  CU_ASSERT_EQUAL(count(as, ACT, 0x1111, NOSPACE), 1); /* again: the existing one */
  CU_ASSERT_EQUAL(count(as, ACT, 42, NOSPACE), 1);
  CU_ASSERT_EQUAL(view_size(), 2);
  CU_ASSERT_EQUAL(count(as, GET, 0, 0), 2);
  CU_ASSERT_EQUAL(count(as, GET, 0, CORRUPT), 0);
  CU_ASSERT_EQUAL(count(as, GET, 0, NOSPACE), 2);
  CU_ASSERT_TRUE(alarm_nospace_any(as));

  /* applierV3Capped */
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_PUT, NULL), -CETCD_E_NO_SPACE);
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT, NULL), -CETCD_E_NO_SPACE);
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE, NULL), 0);
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_COMPACTION, NULL), 0);
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE, NULL), 0);
  Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
  Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
  Etcdserverpb__DeleteRangeRequest dr = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
  Etcdserverpb__RequestOp op_put = ETCDSERVERPB__REQUEST_OP__INIT, op_get = ETCDSERVERPB__REQUEST_OP__INIT,
                          op_del = ETCDSERVERPB__REQUEST_OP__INIT;
  op_put.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT, op_put.request_put = &p;
  op_get.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE, op_get.request_range = &rr;
  op_del.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE, op_del.request_delete_range = &dr;
  Etcdserverpb__RequestOp *with_put[] = {&op_get, &op_put}, *reads[] = {&op_get}, *dels[] = {&op_del};
  Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
  t.failure = with_put, t.n_failure = 2; /* a put in either branch counts */
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_TXN, &t), -CETCD_E_NO_SPACE);
  t.failure = dels, t.n_failure = 1;
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_TXN, &t), 0);

  /* applierV3Corrupt comes first and refuses every write, not read-only txns */
  CU_ASSERT_EQUAL(count(as, ACT, 0x1111, CORRUPT), 1);
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_PUT, NULL), -CETCD_E_CORRUPT);
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE, NULL), -CETCD_E_CORRUPT);
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_TXN, &t), -CETCD_E_CORRUPT);
  t.success = reads, t.n_success = 1, t.failure = reads, t.n_failure = 1;
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_TXN, &t), 0);

  /* disarm: one entry each, then the gates open */
  CU_ASSERT_EQUAL(count(as, DEACT, 0x1111, CORRUPT), 1);
  CU_ASSERT_EQUAL(count(as, DEACT, 42, NOSPACE), 1);
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_PUT, NULL), -CETCD_E_NO_SPACE);
  CU_ASSERT_EQUAL(view_size(), 1);
  alarm_state_close(as);
  CU_ASSERT_PTR_NULL(S.alarms);

  /* reopen: what was not disarmed is back */
  mvcc_close(S.store);
  char err[256];
  CU_ASSERT_FATAL(mvcc_open(dir, NULL, &S.store, err, sizeof(err)) == 0);
  as = alarm_state_open(&S);
  CU_ASSERT_FATAL(as != NULL);
  CU_ASSERT_EQUAL(view_size(), 1);
  rcu_read_lock();
  alarm_view *v = rcu_dereference(S.alarms);
  CU_ASSERT(v && v->v[0].member_id == 0x1111 && v->v[0].type == NOSPACE);
  rcu_read_unlock();
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT, NULL), -CETCD_E_NO_SPACE);
  CU_ASSERT_EQUAL(count(as, DEACT, 0x1111, NOSPACE), 1);
  CU_ASSERT_EQUAL(gate(as, CETCDPB__INTERNAL_REQUEST__REQUEST_PUT, NULL), 0);
  CU_ASSERT_EQUAL(count(as, 9, 1, NOSPACE), 0); /* unknown action: nothing */
  alarm_state_close(as);
  server_done();
}

static void test_nospace_proposal(void) {
  memset(&S, 0, sizeof(S));
  S.member_id = 0xabc, S.boot_nonce = 99;
  net_call call = {.loop = 1, .conn_slot = 2, .conn_gen = 3, .stream_id = 5};
  msg_propose *p = alarm_nospace_proposal(&S, call);
  CU_ASSERT_FATAL(p != NULL);
  Cetcdpb__InternalRequest *r = cetcdpb__internal_request__unpack(NULL, p->len, p->data);
  CU_ASSERT_FATAL(r != NULL);
  CU_ASSERT_EQUAL(r->proposer, 0xabc);
  CU_ASSERT_EQUAL(r->boot, 99);
  CU_ASSERT_EQUAL(r->reply_token, (uint64_t)1 << 32 | 2);
  CU_ASSERT_EQUAL(r->reply_stream, (uint64_t)3 << 32 | 5);
  CU_ASSERT_TRUE(r->reply_nospace);
  CU_ASSERT_EQUAL(r->request_case, CETCDPB__INTERNAL_REQUEST__REQUEST_ALARM);
  CU_ASSERT(r->alarm && r->alarm->action == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE &&
            r->alarm->memberid == 0xabc && r->alarm->alarm == ETCDSERVERPB__ALARM_TYPE__NOSPACE);
  cetcdpb__internal_request__free_unpacked(r, NULL);
  free(p);
}

int main(void) {
  rcu_register_thread();
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("alarm", NULL, NULL);
  CU_add_test(s, "AlarmMember text as etcd prints it", test_text);
  CU_add_test(s, "quota costs", test_cost);
  CU_add_test(s, "actions, gates, view, persistence", test_actions_and_gates);
  CU_add_test(s, "the NOSPACE proposal", test_nospace_proposal);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned fails = CU_get_number_of_failures();
  CU_cleanup_registry();
  rcu_unregister_thread();
  return fails ? 1 : 0;
}
