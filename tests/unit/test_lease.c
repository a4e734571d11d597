/*
 * test_lease.c -- the lessor (store/lessor.h: lease table + expiry heap, on
 * an injected clock) and the apply side of leases (actors/lease_apply.c on a
 * real MVCC store): grant/revoke semantics, revoke deleting every key in one
 * revision through the store's event path, persistence across a reopen, and
 * the leader's expiry turning into a revoke proposal on raft's mailbox.
 *
 * Expected values follow etcd 3.4's lease/lessor.go (MaxLeaseTTL, min TTL,
 * "lease already exists", renew of an unknown lease) and
 * etcdserver/api/v3rpc/lease.go (TimeToLive of an unknown lease: TTL -1).
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <urcu.h>

#include "actors/lease.h"
#include "internal.pb-c.h"
#include "msg/errors.h"
#include "store/lessor.h"

/* ===== the lessor alone ===================================================== */

static void test_grant_rules(void) {
  lessor *l = lessor_new(2);
  CU_ASSERT_FATAL(l != NULL);
  lease *ls = NULL;
  CU_ASSERT_EQUAL(lessor_grant(l, 0, 10, 0, NULL), -CETCD_E_LEASE_NOT_FOUND);
  CU_ASSERT_EQUAL(lessor_grant(l, 1, LESSOR_MAX_TTL + 1, 0, NULL), -CETCD_E_LEASE_TTL_TOO_LARGE);
  CU_ASSERT_EQUAL(lessor_grant(l, 1, LESSOR_MAX_TTL, 0, NULL), 0);
  CU_ASSERT_EQUAL(lessor_grant(l, 1, 5, 0, NULL), -CETCD_E_LEASE_EXIST);
  CU_ASSERT_EQUAL(lessor_grant(l, 2, 1, 0, &ls), 0);
  CU_ASSERT_EQUAL(ls->ttl, 2); /* min TTL */
  CU_ASSERT_EQUAL(lessor_grant(l, -7, -3, 0, &ls), 0);
  CU_ASSERT_EQUAL(ls->ttl, 2);
  /* not primary: no clock, renew refused, nothing expires */
  CU_ASSERT_EQUAL(ls->expiry_ms, LESSOR_FOREVER);
  CU_ASSERT_EQUAL(lessor_renew(l, 2, 1000), -1);
  int64_t out[8];
  CU_ASSERT_EQUAL(lessor_pop_expired(l, UINT64_MAX - 1, out, 8), 0);
  CU_ASSERT_EQUAL(lessor_remove(l, 99), -CETCD_E_LEASE_NOT_FOUND);
  CU_ASSERT_EQUAL(lessor_remove(l, 1), 0);
  CU_ASSERT_PTR_NULL(lessor_lookup(l, 1));
  CU_ASSERT_EQUAL(lessor_count(l), 2);
  CU_ASSERT(lessor_check(l));
  lessor_free(l);
}

static void test_promote_renew_expire(void) {
  lessor *l = lessor_new(1);
  CU_ASSERT_EQUAL(lessor_grant(l, 10, 5, 0, NULL), 0);
  CU_ASSERT_EQUAL(lessor_grant(l, 11, 3, 0, NULL), 0);
  lessor_promote(l, 1000, 1000); /* fresh full TTL + the election timeout */
  CU_ASSERT_EQUAL(lessor_lookup(l, 10)->expiry_ms, 1000 + 1000 + 5000);
  CU_ASSERT_EQUAL(lessor_next_expiry(l), 1000 + 1000 + 3000);
  CU_ASSERT_EQUAL(lessor_remaining_s(l, 11, 1500), 3); /* 3.5 s truncated */
  CU_ASSERT_EQUAL(lessor_remaining_s(l, 12, 1500), -1);
  /* primary grants start the clock at once */
  CU_ASSERT_EQUAL(lessor_grant(l, 12, 4, 2000, NULL), 0);
  CU_ASSERT_EQUAL(lessor_lookup(l, 12)->expiry_ms, 6000);
  CU_ASSERT_EQUAL(lessor_renew(l, 12, 3000), 4);
  CU_ASSERT_EQUAL(lessor_lookup(l, 12)->expiry_ms, 7000);
  CU_ASSERT_EQUAL(lessor_renew(l, 99, 3000), 0); /* unknown: TTL 0, as etcd */
  int64_t out[8];
  CU_ASSERT_EQUAL(lessor_pop_expired(l, 4999, out, 8), 0);
  CU_ASSERT_EQUAL(lessor_pop_expired(l, 5000, out, 8), 1);
  CU_ASSERT_EQUAL(out[0], 11);
  /* popped leases come back after the retry interval, and an expired lease
   * cannot be renewed (etcd waits for the revoke, then says not found) */
  CU_ASSERT_EQUAL(lessor_lookup(l, 11)->expiry_ms, 5000 + LESSOR_RETRY_MS);
  CU_ASSERT_EQUAL(lessor_renew(l, 10, 7001), 0);
  CU_ASSERT_EQUAL(lessor_pop_expired(l, 7001, out, 8), 2); /* 10 (7000) and 12 (7000) */
  CU_ASSERT(lessor_check(l));
  lessor_demote(l);
  CU_ASSERT_EQUAL(lessor_pop_expired(l, UINT64_MAX - 1, out, 8), 0);
  CU_ASSERT_EQUAL(lessor_renew(l, 10, 8000), -1);
  lessor_free(l);
}

/* etcd's Promote spreads a pile-up: 3000 leases of one TTL fall due at no
 * more than 3/4 of the revoke rate per second, and none earlier than its TTL. */
static void test_promote_spreads_pileup(void) {
  lessor *l = lessor_new(1);
  for (int64_t i = 1; i <= 3000; i++) lessor_grant(l, i, 10, 0, NULL);
  lessor_promote(l, 1000, 0);
  CU_ASSERT(lessor_check(l));
  int per_s[64] = {0}, early = 0;
  for (int64_t i = 1; i <= 3000; i++) {
    uint64_t e = lessor_lookup(l, i)->expiry_ms;
    if (e < 11000) early++;
    if (e - 11000 < 64000) per_s[(e - 11000) / 1000]++;
  }
  CU_ASSERT_EQUAL(early, 0);
  int worst = 0, total = 0;
  for (int s = 0; s < 64; s++) total += per_s[s], worst = per_s[s] > worst ? per_s[s] : worst;
  CU_ASSERT_EQUAL(total, 3000);
  CU_ASSERT(worst <= 3 * LESSOR_REVOKE_RATE / 4 + 1);
  lessor_free(l);
}

static uint64_t rng_state = 0x12345678;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return rng_state;
}

/* A model (plain arrays) against the lessor: random grants, renewals,
 * removals and expiry pops; after each step the heap invariant holds, and
 * pops return exactly the model's expired leases, earliest first. */
static void test_heap_against_model(void) {
  enum { N = 4000 };
  static uint64_t exp_of[N + 1];
  static int64_t ttl_of[N + 1];
  lessor *l = lessor_new(1);
  lessor_promote(l, 0, 0);
  uint64_t now = 0;
  int errors = 0;
  for (int step = 0; step < 60000; step++) {
    int64_t id = (int64_t)(rnd() % N) + 1;
    unsigned op = (unsigned)(rnd() % 10);
    if (op < 4) {
      int64_t ttl = (int64_t)(rnd() % 30) + 1;
      int rc = lessor_grant(l, id, ttl, now, NULL);
      if ((rc == 0) != (exp_of[id] == 0)) errors++;
      if (rc == 0) ttl_of[id] = ttl, exp_of[id] = now + (uint64_t)ttl * 1000;
    } else if (op < 7) {
      int64_t got = lessor_renew(l, id, now);
      int64_t want = exp_of[id] && exp_of[id] > now ? ttl_of[id] : 0;
      if (got != want) errors++;
      if (want) exp_of[id] = now + (uint64_t)ttl_of[id] * 1000;
    } else if (op < 8) {
      int rc = lessor_remove(l, id);
      if ((rc == 0) != (exp_of[id] != 0)) errors++;
      exp_of[id] = 0;
    } else {
      now += rnd() % 700;
      int64_t out[64];
      size_t n = lessor_pop_expired(l, now, out, 64);
      uint64_t last = 0;
      for (size_t i = 0; i < n; i++) {
        uint64_t e = exp_of[out[i]];
        if (e == 0 || e > now || e < last) errors++;
        last = e;
        lessor_remove(l, out[i]); /* as the applied revoke would */
        exp_of[out[i]] = 0;
      }
      if (n < 64) /* nothing expired may be left behind */
        for (int k = 1; k <= N; k++)
          if (exp_of[k] && exp_of[k] <= now) errors++;
    }
    if (step % 1000 == 0 && !lessor_check(l)) errors++;
  }
  CU_ASSERT_EQUAL(errors, 0);
  CU_ASSERT(lessor_check(l));
  lessor_free(l);
}

static void test_table_growth_and_deletes(void) {
  lessor *l = lessor_new(1);
  enum { N = 50000 };
  for (int64_t i = 1; i <= N; i++) CU_ASSERT_EQUAL_FATAL(lessor_grant(l, i * 7919, 10, 0, NULL), 0);
  for (int64_t i = 1; i <= N; i += 2) CU_ASSERT_EQUAL(lessor_remove(l, i * 7919), 0);
  int bad = 0;
  for (int64_t i = 1; i <= N; i++) bad += (lessor_lookup(l, i * 7919) != NULL) != (i % 2 == 0);
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(lessor_count(l), N / 2);
  CU_ASSERT(lessor_check(l));
  size_t n = 0;
  int64_t *ids = lessor_list(l, &n);
  CU_ASSERT_EQUAL(n, N / 2);
  free(ids);
  lessor_free(l);
}

static void test_keys_and_list_order(void) {
  lessor *l = lessor_new(1);
  lessor_promote(l, 0, 0);
  lessor_grant(l, 1, 30, 0, NULL);
  lessor_grant(l, 2, 10, 0, NULL);
  lessor_grant(l, 3, 20, 0, NULL);
  size_t n = 0;
  int64_t *ids = lessor_list(l, &n);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT(ids[0] == 2 && ids[1] == 3 && ids[2] == 1); /* etcd: by expiry */
  free(ids);
  CU_ASSERT_EQUAL(lessor_attach(l, 1, (const uint8_t *)"a", 1), 0);
  CU_ASSERT_EQUAL(lessor_attach(l, 1, (const uint8_t *)"bb", 2), 0);
  CU_ASSERT_EQUAL(lessor_attach(l, 9, (const uint8_t *)"c", 1), -CETCD_E_LEASE_NOT_FOUND);
  lessor_detach(l, 1, (const uint8_t *)"a", 1);
  lease *ls = lessor_lookup(l, 1);
  CU_ASSERT_EQUAL(ls->n_keys, 1);
  CU_ASSERT(ls->keys[0].len == 2 && memcmp(ls->keys[0].key, "bb", 2) == 0);
  lessor_free(l);
}

/* Many keys on one lease (past the per-lease index threshold), attached and
 * detached at random against a model: the lease holds exactly the model's
 * keys, and detaching an absent key changes nothing. */
static void test_many_keys_against_model(void) {
  enum { K = 3000 };
  static bool in[K];
  memset(in, 0, sizeof(in));
  lessor *l = lessor_new(1);
  lessor_grant(l, 5, 10, 0, NULL);
  int errors = 0;
  for (int step = 0; step < 40000; step++) {
    unsigned k = (unsigned)(rnd() % K);
    char key[16];
    int n = snprintf(key, sizeof(key), "key-%u", k);
    if (rnd() % 3 && !in[k]) {
      if (lessor_attach(l, 5, (const uint8_t *)key, (size_t)n) != 0) errors++;
      in[k] = true;
    } else {
      lessor_detach(l, 5, (const uint8_t *)key, (size_t)n);
      in[k] = false;
    }
  }
  lease *ls = lessor_lookup(l, 5);
  size_t want = 0;
  for (int k = 0; k < K; k++) want += in[k];
  CU_ASSERT_EQUAL(ls->n_keys, want);
  CU_ASSERT(ls->kidx != NULL);
  static bool seen[K];
  memset(seen, 0, sizeof(seen));
  for (uint32_t i = 0; i < ls->n_keys; i++) {
    char buf[16] = "";
    memcpy(buf, ls->keys[i].key, ls->keys[i].len < 15 ? ls->keys[i].len : 15);
    unsigned k = (unsigned)atoi(buf + 4); /* keys are not NUL-terminated */
    if (k >= K || !in[k] || seen[k]) errors++;
    else seen[k] = true;
  }
  CU_ASSERT_EQUAL(errors, 0);
  lessor_free(l);
}

/* ===== the apply side on a real store ========================================= */

static server S;
static char dir[64];
static arena A;
static uint64_t ci = 1;
static int n_deletes;
static int64_t delete_rev[8];
static int64_t delete_rev_min = INT64_MAX, delete_rev_max;

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static void on_event(void *arg, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *prev) {
  (void)arg, (void)prev;
  if (type != MVCCPB__EVENT__EVENT_TYPE__DELETE) return;
  if (n_deletes < 8) delete_rev[n_deletes] = kv->mod_revision;
  n_deletes++;
  if (kv->mod_revision < delete_rev_min) delete_rev_min = kv->mod_revision;
  if (kv->mod_revision > delete_rev_max) delete_rev_max = kv->mod_revision;
}

static void store_open(void) {
  char err[256] = "";
  CU_ASSERT_FATAL(mvcc_open(dir, NULL, &S.store, err, sizeof(err)) == 0);
  mvcc_set_event_fn(S.store, on_event, NULL);
}

static void server_fresh(void) {
  memset(&S, 0, sizeof(S));
  S.member_id = 0x1111;
  S.cluster_id = 0x2222;
  S.opt.heartbeat_ms = 1; /* min TTL = ceil(15 * 1 ms) = 1 s */
  S.opt.election_ms = 10;
  atomic_store(&S.term, 2);
  strcpy(dir, "/tmp/cetcd-test-lease-XXXXXX");
  CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
  store_open();
  CU_ASSERT_FATAL(mailbox_init(&S.raft_mb, 64) == 0);
  arena_init(&A, 0);
}

static void server_done(void) {
  mvcc_close(S.store);
  void *m;
  while ((m = mailbox_pop(&S.raft_mb))) free(m);
  mailbox_destroy(&S.raft_mb);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  arena_free(&A);
}

static int grant(lease_state *ls, int64_t id, int64_t ttl) {
  Etcdserverpb__LeaseGrantRequest r = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
  r.id = id, r.ttl = ttl;
  size_t len;
  int err = 0;
  free(lease_apply_grant(ls, &r, &len, &err));
  return err;
}

static int revoke_lease(lease_state *ls, int64_t id) {
  Etcdserverpb__LeaseRevokeRequest r = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
  r.id = id;
  size_t len;
  int err = 0;
  free(lease_apply_revoke(ls, &r, &A, &len, &err));
  return err;
}

static int put(const char *k, int64_t lease_id) {
  Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
  r.key = (ProtobufCBinaryData){strlen(k), (uint8_t *)k};
  r.value = (ProtobufCBinaryData){1, (uint8_t *)"v"};
  r.lease = lease_id;
  Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  Etcdserverpb__PutResponse resp = ETCDSERVERPB__PUT_RESPONSE__INIT;
  resp.header = &h;
  return mvcc_put(S.store, &r, &resp, &A);
}

static Etcdserverpb__LeaseTimeToLiveResponse *ttl_of(lease_state *ls, int64_t id) {
  msg_lease_query q = {.hdr = {MSG_LEASE_QUERY}, .id = id, .keys = 1};
  size_t len;
  int err;
  uint8_t *buf = lease_query(ls, &q, &len, &err);
  CU_ASSERT_FATAL(buf != NULL);
  Etcdserverpb__LeaseTimeToLiveResponse *r = etcdserverpb__lease_time_to_live_response__unpack(NULL, len, buf);
  free(buf);
  return r;
}

static void test_revoke_one_revision(void) {
  server_fresh();
  lease_state *ls = lease_state_open(&S);
  CU_ASSERT_FATAL(ls != NULL);
  mvcc_batch_begin(S.store);
  CU_ASSERT_EQUAL(grant(ls, 7, 100), 0);
  CU_ASSERT_EQUAL(grant(ls, 7, 100), -CETCD_E_LEASE_EXIST);
  CU_ASSERT_EQUAL(grant(ls, 8, 100), 0);
  CU_ASSERT_EQUAL(put("c", 7), 0);
  CU_ASSERT_EQUAL(put("a", 7), 0);
  CU_ASSERT_EQUAL(put("b", 7), 0);
  CU_ASSERT_EQUAL(put("z", 8), 0);
  CU_ASSERT_EQUAL(put("x", 99), -CETCD_E_LEASE_NOT_FOUND);
  CU_ASSERT_EQUAL(mvcc_batch_commit(S.store, ci++), 0);
  CU_ASSERT_EQUAL(mvcc_current_rev(S.store), 5);

  Etcdserverpb__LeaseTimeToLiveResponse *t = ttl_of(ls, 7);
  CU_ASSERT_EQUAL(t->n_keys, 3);
  CU_ASSERT_EQUAL(t->grantedttl, 100);
  CU_ASSERT(t->n_keys == 3 && memcmp(t->keys[0].data, "a", 1) == 0 && memcmp(t->keys[2].data, "c", 1) == 0);
  etcdserverpb__lease_time_to_live_response__free_unpacked(t, NULL);

  n_deletes = 0;
  mvcc_batch_begin(S.store);
  CU_ASSERT_EQUAL(revoke_lease(ls, 7), 0);
  CU_ASSERT_EQUAL(revoke_lease(ls, 7), -CETCD_E_LEASE_NOT_FOUND);
  CU_ASSERT_EQUAL(mvcc_batch_commit(S.store, ci++), 0);
  /* three keys, one revision, three delete events carrying it */
  CU_ASSERT_EQUAL(mvcc_current_rev(S.store), 6);
  CU_ASSERT_EQUAL(n_deletes, 3);
  CU_ASSERT(delete_rev[0] == 6 && delete_rev[1] == 6 && delete_rev[2] == 6);
  t = ttl_of(ls, 7);
  CU_ASSERT_EQUAL(t->ttl, -1);
  etcdserverpb__lease_time_to_live_response__free_unpacked(t, NULL);

  /* a lease without keys takes no revision */
  mvcc_batch_begin(S.store);
  CU_ASSERT_EQUAL(grant(ls, 9, 100), 0);
  CU_ASSERT_EQUAL(revoke_lease(ls, 9), 0);
  CU_ASSERT_EQUAL(mvcc_batch_commit(S.store, ci++), 0);
  CU_ASSERT_EQUAL(mvcc_current_rev(S.store), 6);

  /* persisted: a reopened store has lease 8 with its key, not 7 or 9 */
  lease_state_close(ls);
  mvcc_close(S.store);
  store_open();
  ls = lease_state_open(&S);
  t = ttl_of(ls, 8);
  CU_ASSERT_EQUAL(t->grantedttl, 100);
  CU_ASSERT(t->n_keys == 1 && t->keys[0].len == 1 && t->keys[0].data[0] == 'z');
  etcdserverpb__lease_time_to_live_response__free_unpacked(t, NULL);
  t = ttl_of(ls, 7);
  CU_ASSERT_EQUAL(t->ttl, -1);
  etcdserverpb__lease_time_to_live_response__free_unpacked(t, NULL);
  lease_state_close(ls);
  server_done();
}

/* A lease shared by many keys (its key index in use), half of them
 * re-put without the lease: the revoke deletes exactly the other half, in
 * one revision. */
static void test_revoke_many_keys(void) {
  server_fresh();
  lease_state *ls = lease_state_open(&S);
  mvcc_batch_begin(S.store);
  CU_ASSERT_EQUAL(grant(ls, 3, 100), 0);
  char k[16];
  for (int i = 0; i < 200; i++) {
    snprintf(k, sizeof(k), "m%03d", i);
    CU_ASSERT_EQUAL(put(k, 3), 0);
  }
  CU_ASSERT_EQUAL(mvcc_batch_commit(S.store, ci++), 0);
  mvcc_batch_begin(S.store);
  for (int i = 0; i < 200; i += 2) {
    snprintf(k, sizeof(k), "m%03d", i);
    CU_ASSERT_EQUAL(put(k, 0), 0);
  }
  CU_ASSERT_EQUAL(mvcc_batch_commit(S.store, ci++), 0);
  int64_t rev = mvcc_current_rev(S.store);
  n_deletes = 0, delete_rev_min = INT64_MAX, delete_rev_max = 0;
  mvcc_batch_begin(S.store);
  CU_ASSERT_EQUAL(revoke_lease(ls, 3), 0);
  CU_ASSERT_EQUAL(mvcc_batch_commit(S.store, ci++), 0);
  CU_ASSERT_EQUAL(n_deletes, 100);
  CU_ASSERT(delete_rev_min == rev + 1 && delete_rev_max == rev + 1);
  CU_ASSERT_EQUAL(mvcc_current_rev(S.store), rev + 1);
  lease_state_close(ls);
  server_done();
}

static void test_expiry_proposes_revoke(void) {
  server_fresh();
  lease_state *ls = lease_state_open(&S);
  mvcc_batch_begin(S.store);
  CU_ASSERT_EQUAL(grant(ls, 42, 1), 0);
  CU_ASSERT_EQUAL(mvcc_batch_commit(S.store, ci++), 0);
  /* not the leader: nothing is proposed, however long we wait */
  CU_ASSERT(lease_tick(ls) > 0);
  CU_ASSERT_PTR_NULL(mailbox_pop(&S.raft_mb));
  atomic_store(&S.leader, S.member_id);
  lease_on_leader_entry(ls);
  size_t len;
  uint8_t *b = lease_renew(ls, 42, &len);
  Etcdserverpb__LeaseKeepAliveResponse *k = etcdserverpb__lease_keep_alive_response__unpack(NULL, len, b);
  CU_ASSERT(k && k->id == 42 && k->ttl == 1 && k->header && k->header->member_id == 0x1111);
  etcdserverpb__lease_keep_alive_response__free_unpacked(k, NULL);
  free(b);
  int wait = lease_tick(ls);
  CU_ASSERT(wait > 900 || wait == 500); /* sleeps until the expiry (or the 500 ms cap) */
  CU_ASSERT_PTR_NULL(mailbox_pop(&S.raft_mb));
  struct timespec ts = {1, 100 * 1000 * 1000};
  nanosleep(&ts, NULL);
  lease_tick(ls);
  msg_propose *p = mailbox_pop(&S.raft_mb);
  CU_ASSERT_FATAL(p != NULL);
  Cetcdpb__InternalRequest *r = cetcdpb__internal_request__unpack(NULL, p->len, p->data);
  CU_ASSERT_FATAL(r != NULL);
  CU_ASSERT_EQUAL(r->request_case, CETCDPB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE);
  CU_ASSERT_EQUAL(r->lease_revoke->id, 42);
  CU_ASSERT_EQUAL(r->proposer, 0x1111);
  cetcdpb__internal_request__free_unpacked(r, NULL);
  free(p);
  /* the revoke is in flight: not proposed again before the retry interval */
  lease_tick(ls);
  CU_ASSERT_PTR_NULL(mailbox_pop(&S.raft_mb));
  lease_state_close(ls);
  server_done();
}

int main(void) {
  rcu_register_thread();
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("lease", NULL, NULL);
  CU_add_test(s, "grant rules", test_grant_rules);
  CU_add_test(s, "promote, renew, expire", test_promote_renew_expire);
  CU_add_test(s, "promote spreads a pile-up", test_promote_spreads_pileup);
  CU_add_test(s, "expiry heap against a model", test_heap_against_model);
  CU_add_test(s, "table growth and deletes", test_table_growth_and_deletes);
  CU_add_test(s, "keys and list order", test_keys_and_list_order);
  CU_add_test(s, "many keys per lease against a model", test_many_keys_against_model);
  CU_add_test(s, "revoke: all keys in one revision, persisted", test_revoke_one_revision);
  CU_add_test(s, "revoke: a lease shared by many keys", test_revoke_many_keys);
  CU_add_test(s, "expiry proposes a revoke (leader only)", test_expiry_proposes_revoke);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned fails = CU_get_number_of_failures();
  CU_cleanup_registry();
  rcu_unregister_thread();
  return fails ? 1 : 0;
}
