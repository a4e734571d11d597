/*
 * lease_apply.c -- the lease state machine, run by the apply thread.
 *
 * Contract
 *   Thread:   the apply thread only (it calls every function here).
 *   Owns:     the lessor (store/lessor.h): leases, their keys, the expiry heap.
 *   Consumes: committed LeaseGrant / LeaseRevoke entries; the loops'
 *             MSG_LEASE_RENEW and MSG_LEASE_QUERY (the apply actor hands
 *             them here between its batches and posts the answers with its
 *             other replies, after the batch's LevelDB write).
 *   Produces: on the leader, MSG_PROPOSE (LeaseRevoke of an expired lease)
 *             into s->raft_mb with mailbox_try_push: raft waits on apply's
 *             mailbox, so apply must never wait on raft's. A revoke that
 *             does not fit is proposed again LESSOR_RETRY_MS later, as is
 *             one that was lost.
 *   Persists: "lease/" + big-endian id -> granted TTL (8 bytes, LE) through
 *             mvcc_meta_put/delete, so it commits in the batch's one LevelDB
 *             write with the consistent index. On open, every lease is
 *             loaded (forever, not primary) and keys re-attached from the
 *             index; the leader's first entry promotes: fresh full TTL plus
 *             the election timeout (etcd 3.4's Promote).
 *   Rate:     at most LESSOR_REVOKE_RATE/2 revokes per 500 ms window.
 *
 * Why the apply thread and not a lease thread of its own: a Put's lease
 * check and attachment (mvcc_lease_hooks) are synchronous calls from the
 * MVCC writer, which is this thread, and revoke must see exactly the keys
 * the store has at that point of the log. A separate owner would need the
 * key sets mirrored across threads. A renewal is one heap sift (~0.1 us),
 * and each loop turn's renewals arrive in one message, so the apply thread
 * pays one mailbox pop per turn, not per keepalive.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/lease.h"
#include "actors/log.h"
#include "msg/errors.h"
#include "store/lessor.h"

#define REVOKE_WINDOW_MS 500
#define REVOKE_PER_WINDOW (LESSOR_REVOKE_RATE / 2)
#define META_PREFIX "lease/"
#define META_PREFIX_LEN 6

struct lease_state {
  server *s;
  lessor *l;
  uint64_t window_start_ms; /* revoke rate limit window */
  size_t window_revokes;
  int64_t expired[REVOKE_PER_WINDOW];
};

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* etcd: minTTL = ceil(((3 * electionTicks) / 2) * heartbeat) in seconds. */
static int64_t min_ttl_s(const server *s) {
  uint64_t hb = s->opt.heartbeat_ms ? s->opt.heartbeat_ms : 100;
  uint64_t el = s->opt.election_ms ? s->opt.election_ms : 1000;
  uint64_t ms = (3 * (el / hb)) / 2 * hb;
  return (int64_t)((ms + 999) / 1000);
}

static void meta_key(uint8_t out[META_PREFIX_LEN + 8], int64_t id) {
  memcpy(out, META_PREFIX, META_PREFIX_LEN);
  for (int i = 0; i < 8; i++) out[META_PREFIX_LEN + i] = (uint8_t)((uint64_t)id >> (56 - 8 * i));
}

/* --- mvcc hooks ------------------------------------------------------------ */

static bool hook_exists(void *arg, int64_t id) { return lessor_lookup(((lease_state *)arg)->l, id) != NULL; }

static void hook_attach(void *arg, int64_t id, const uint8_t *key, size_t len) {
  if (lessor_attach(((lease_state *)arg)->l, id, key, len) < 0)
    log_printf(LOG_LEVEL_ERROR, "lease", "cannot attach a key to lease %llx", (unsigned long long)id);
}

static void hook_detach(void *arg, int64_t id, const uint8_t *key, size_t len) {
  lessor_detach(((lease_state *)arg)->l, id, key, len);
}

/* --- open ------------------------------------------------------------------ */

static bool load_one(void *arg, const void *key, size_t key_len, const void *val, size_t val_len) {
  lease_state *ls = arg;
  if (key_len != META_PREFIX_LEN + 8 || val_len != 8) return true;
  const uint8_t *k = (const uint8_t *)key + META_PREFIX_LEN;
  uint64_t id = 0;
  for (int i = 0; i < 8; i++) id = id << 8 | k[i];
  int64_t ttl = (int64_t)get_u64le(val);
  if (lessor_grant(ls->l, (int64_t)id, ttl, 0, NULL) < 0)
    log_printf(LOG_LEVEL_ERROR, "lease", "cannot load lease %llx", (unsigned long long)id);
  return true;
}

static void attach_loaded(void *arg, int64_t id, const uint8_t *key, size_t key_len) {
  hook_attach(arg, id, key, key_len);
}

lease_state *lease_state_open(server *s) {
  lease_state *ls = calloc(1, sizeof(*ls));
  if (!ls) return NULL;
  ls->s = s;
  ls->l = lessor_new(min_ttl_s(s));
  if (!ls->l) {
    free(ls);
    return NULL;
  }
  mvcc_meta_scan(s->store, META_PREFIX, META_PREFIX_LEN, load_one, ls);
  mvcc_for_each_leased_key(s->store, attach_loaded, ls);
  mvcc_lease_hooks h = {.arg = ls, .exists = hook_exists, .attach = hook_attach, .detach = hook_detach};
  mvcc_set_lease_hooks(s->store, &h);
  if (lessor_count(ls->l))
    log_printf(LOG_LEVEL_INFO, "lease", "recovered %zu leases", lessor_count(ls->l));
  return ls;
}

void lease_state_close(lease_state *ls) {
  if (!ls) return;
  mvcc_set_lease_hooks(ls->s->store, NULL);
  lessor_free(ls->l);
  free(ls);
}

/* --- responses --------------------------------------------------------------- */

static void fill_header(lease_state *ls, Etcdserverpb__ResponseHeader *h) {
  h->cluster_id = ls->s->cluster_id;
  h->member_id = ls->s->member_id;
  h->raft_term = atomic_load(&ls->s->term);
  h->revision = mvcc_batch_rev(ls->s->store);
}

static uint8_t *pack(const ProtobufCMessage *msg, size_t *len) {
  *len = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (buf) protobuf_c_message_pack(msg, buf);
  return buf;
}

/* --- grant / revoke (committed entries) -------------------------------------- */

uint8_t *lease_apply_grant(lease_state *ls, const Etcdserverpb__LeaseGrantRequest *req, size_t *len, int *err) {
  lease *l = NULL;
  *err = lessor_grant(ls->l, req->id, req->ttl, mono_ms(), &l);
  if (*err) return NULL;
  uint8_t k[META_PREFIX_LEN + 8], v[8];
  meta_key(k, l->id);
  put_u64le(v, (uint64_t)l->ttl);
  *err = mvcc_meta_put(ls->s->store, k, sizeof(k), v, sizeof(v));
  if (*err) return NULL;
  Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  Etcdserverpb__LeaseGrantResponse r = ETCDSERVERPB__LEASE_GRANT_RESPONSE__INIT;
  fill_header(ls, &hdr);
  r.header = &hdr;
  r.id = l->id;
  r.ttl = l->ttl;
  return pack(&r.base, len);
}

static int key_cmp(const void *a, const void *b) {
  const lease_key *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->key, y->key, n);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Deletes every key of the lease in ONE revision: a txn of deletes, so the
 * delete events go through the store's normal event path. Keys are sorted
 * so every member deletes in the same order (etcd sorts them too). */
static int delete_keys(lease_state *ls, lease *l, arena *a) {
  size_t n = l->n_keys;
  if (n == 0) return 0;
  /* a sorted copy: the lessor's array is in its own order (and indexed) */
  lease_key *sorted = arena_memdup(a, l->keys, n * sizeof(*sorted));
  if (!sorted) return -CETCD_E_NOMEM;
  qsort(sorted, n, sizeof(*sorted), key_cmp);
  Etcdserverpb__RequestOp *ops = arena_alloc(a, n * sizeof(*ops));
  Etcdserverpb__DeleteRangeRequest *dels = arena_alloc(a, n * sizeof(*dels));
  Etcdserverpb__RequestOp **opp = arena_alloc(a, n * sizeof(*opp));
  uint8_t **keys = arena_alloc(a, n * sizeof(*keys));
  if (!ops || !dels || !opp || !keys) return -CETCD_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    /* copies: the detach hook frees the lessor's key while the txn runs */
    keys[i] = arena_alloc(a, sorted[i].len ? sorted[i].len : 1);
    if (!keys[i]) return -CETCD_E_NOMEM;
    memcpy(keys[i], sorted[i].key, sorted[i].len);
    etcdserverpb__delete_range_request__init(&dels[i]);
    dels[i].key = (ProtobufCBinaryData){sorted[i].len, keys[i]};
    etcdserverpb__request_op__init(&ops[i]);
    ops[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    ops[i].request_delete_range = &dels[i];
    opp[i] = &ops[i];
  }
  Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
  txn.n_success = n;
  txn.success = opp;
  Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  Etcdserverpb__TxnResponse resp = ETCDSERVERPB__TXN_RESPONSE__INIT;
  resp.header = &hdr;
  return mvcc_txn(ls->s->store, &txn, &resp, a);
}

uint8_t *lease_apply_revoke(lease_state *ls, const Etcdserverpb__LeaseRevokeRequest *req, arena *a,
                            size_t *len, int *err) {
  lease *l = lessor_lookup(ls->l, req->id);
  *err = l ? delete_keys(ls, l, a) : -CETCD_E_LEASE_NOT_FOUND;
  if (*err) return NULL;
  lessor_remove(ls->l, req->id);
  uint8_t k[META_PREFIX_LEN + 8];
  meta_key(k, req->id);
  *err = mvcc_meta_delete(ls->s->store, k, sizeof(k));
  if (*err) return NULL;
  Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  Etcdserverpb__LeaseRevokeResponse r = ETCDSERVERPB__LEASE_REVOKE_RESPONSE__INIT;
  fill_header(ls, &hdr);
  r.header = &hdr;
  return pack(&r.base, len);
}

void lease_on_leader_entry(lease_state *ls) {
  server *s = ls->s;
  if (atomic_load(&s->leader) != s->member_id) return;
  lessor_promote(ls->l, mono_ms(), s->opt.election_ms ? s->opt.election_ms : 1000);
}

/* --- renewals and queries from the loops ------------------------------------- */

uint8_t *lease_renew(lease_state *ls, int64_t id, size_t *len) {
  Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  Etcdserverpb__LeaseKeepAliveResponse r = ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
  fill_header(ls, &hdr); /* before the renewal, as etcd does */
  int64_t ttl = lessor_renew(ls->l, id, mono_ms());
  r.header = &hdr;
  r.id = id;
  r.ttl = ttl < 0 ? 0 : ttl; /* not primary: a single member always is */
  return pack(&r.base, len);
}

static uint8_t *time_to_live(lease_state *ls, const msg_lease_query *q, size_t *len) {
  Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  Etcdserverpb__LeaseTimeToLiveResponse r = ETCDSERVERPB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
  fill_header(ls, &hdr);
  r.header = &hdr;
  r.id = q->id;
  lease *l = lessor_lookup(ls->l, q->id);
  if (!l) {
    r.ttl = -1; /* etcd's LeaseServer turns "not found" into TTL -1 */
    return pack(&r.base, len);
  }
  r.ttl = lessor_remaining_s(ls->l, q->id, mono_ms());
  r.grantedttl = l->ttl;
  ProtobufCBinaryData *keys = NULL;
  if (q->keys && l->n_keys) {
    lease_key *sorted = malloc(l->n_keys * sizeof(*sorted));
    keys = malloc(l->n_keys * sizeof(*keys));
    if (!keys || !sorted) {
      free(keys), free(sorted);
      return NULL;
    }
    memcpy(sorted, l->keys, l->n_keys * sizeof(*sorted));
    qsort(sorted, l->n_keys, sizeof(*sorted), key_cmp); /* etcd: map order; sorted is one of those */
    for (uint32_t i = 0; i < l->n_keys; i++) keys[i] = (ProtobufCBinaryData){sorted[i].len, sorted[i].key};
    free(sorted);
    r.n_keys = l->n_keys;
    r.keys = keys;
  }
  uint8_t *buf = pack(&r.base, len);
  free(keys);
  return buf;
}

static uint8_t *leases(lease_state *ls, size_t *len) {
  size_t n = 0;
  int64_t *ids = lessor_list(ls->l, &n);
  Etcdserverpb__LeaseStatus *st = malloc((n ? n : 1) * sizeof(*st));
  Etcdserverpb__LeaseStatus **stp = malloc((n ? n : 1) * sizeof(*stp));
  uint8_t *buf = NULL;
  if (ids && st && stp) {
    for (size_t i = 0; i < n; i++) {
      etcdserverpb__lease_status__init(&st[i]);
      st[i].id = ids[i];
      stp[i] = &st[i];
    }
    Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__LeaseLeasesResponse r = ETCDSERVERPB__LEASE_LEASES_RESPONSE__INIT;
    fill_header(ls, &hdr);
    r.header = &hdr;
    r.n_leases = n;
    r.leases = stp;
    buf = pack(&r.base, len);
  }
  free(ids), free(st), free(stp);
  return buf;
}

uint8_t *lease_query(lease_state *ls, const msg_lease_query *q, size_t *len, int *err) {
  uint8_t *buf = q->list ? leases(ls, len) : time_to_live(ls, q, len);
  *err = buf ? 0 : -CETCD_E_NOMEM;
  return buf;
}

/* --- expiry ------------------------------------------------------------------ */

static void propose_revoke(lease_state *ls, int64_t id) {
  Etcdserverpb__LeaseRevokeRequest r = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
  r.id = id;
  uint8_t buf[16];
  size_t n = etcdserverpb__lease_revoke_request__pack(&r, buf);
  /* No client waits: a loop index no loop has, so the reply is dropped. */
  net_call none = {.loop = UINT32_MAX};
  msg_propose *p = server_proposal_new(ls->s, none, PROPOSAL_FIELD_LEASE_REVOKE, buf, n);
  if (p && !mailbox_try_push(&ls->s->raft_mb, p)) free(p); /* retried in LESSOR_RETRY_MS */
}

int lease_tick(lease_state *ls) {
  server *s = ls->s;
  bool leader = atomic_load(&s->leader) == s->member_id;
  if (!leader && lessor_is_primary(ls->l)) lessor_demote(ls->l);
  if (!lessor_is_primary(ls->l)) return lessor_count(ls->l) ? REVOKE_WINDOW_MS : -1;
  uint64_t now = mono_ms();
  if (now >= ls->window_start_ms + REVOKE_WINDOW_MS) {
    ls->window_start_ms = now;
    ls->window_revokes = 0;
  }
  size_t room = REVOKE_PER_WINDOW - ls->window_revokes;
  size_t n = lessor_pop_expired(ls->l, now, ls->expired, room);
  for (size_t i = 0; i < n; i++) propose_revoke(ls, ls->expired[i]);
  ls->window_revokes += n;
  uint64_t next = lessor_next_expiry(ls->l);
  if (ls->window_revokes == REVOKE_PER_WINDOW) next = ls->window_start_ms + REVOKE_WINDOW_MS;
  if (next == LESSOR_FOREVER) return REVOKE_WINDOW_MS; /* notice a demotion */
  uint64_t wait = next > now ? next - now : 0;
  return (int)(wait < REVOKE_WINDOW_MS ? wait : REVOKE_WINDOW_MS);
}
