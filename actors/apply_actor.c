/*
 * apply_actor.c -- the thread that applies committed entries to the store.
 *
 * Contract
 *   Thread:   one, "apply". The only writer of the MVCC store.
 *   Drains:   s->apply_mb: MSG_APPLY (committed entries, in log order) and
 *             MSG_READ_INDEX (a net loop's read batch with its read index).
 *   Produces: MSG_REPLIES to each net loop that proposed something in the
 *             batch (one message per loop per batch); the read batches back
 *             to their loops once applied >= read index; MSG_STORE_SYNCED to
 *             raft every --snapshot-count entries (after a synced LevelDB
 *             write), so the WAL before it can be released.
 *   Batching: everything waiting, up to APPLY_BATCH_MAX entries, is applied
 *             between one mvcc_batch_begin and ONE mvcc_batch_commit (one
 *             LevelDB write). Replies leave only after that commit, so a
 *             client never sees a write that a concurrent reader cannot.
 *   Replies:  only for entries this member proposed in this incarnation
 *             (proposer == member id, boot == boot nonce); replayed or
 *             foreign entries are applied silently.
 *   Leases:   owns the lease state (lease_apply.c): applies LeaseGrant /
 *             LeaseRevoke entries; drains MSG_LEASE_RENEW / MSG_LEASE_QUERY
 *             from the loops (answered with the batch's replies); between
 *             batches, on the leader, proposes revokes of expired leases and
 *             sleeps no longer than the next expiry.
 *   Alarms:   owns the alarm store (alarm.c, see actors/maint.h): applies
 *             Alarm entries, refuses what an active NOSPACE / CORRUPT alarm
 *             refuses in etcd, answers a write applied past the quota with
 *             NO_SPACE and raises the alarm (a proposal pushed with
 *             mailbox_try_push, which carries the client's answer), and
 *             publishes the alarm view after each commit that changed it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <urcu.h>

#include "actors/lease.h"
#include "actors/log.h"
#include "actors/maint.h"
#include "actors/server.h"
#include "actors/watch.h"
#include "internal.pb-c.h"
#include "msg/errors.h"

#define APPLY_BATCH_MAX 8192

typedef struct reply_list {
  reply *v;
  size_t n, cap;
} reply_list;

typedef struct apply_actor {
  server *s;
  arena ar;
  reply_list *loops;        /* per net loop, replies of the current batch */
  uint32_t n_loops;
  msg_read_index **reads;   /* read batches waiting for applied >= read_index */
  size_t n_reads, cap_reads;
  uint64_t applied, applied_term;
  uint64_t last_synced;
  lease_state *lease;
  alarm_state *alarm;
} apply_actor;

static void add_reply(apply_actor *a, net_call call, int err, uint8_t *buf, size_t len) {
  if (call.loop >= a->n_loops) {
    free(buf);
    return;
  }
  reply_list *l = &a->loops[call.loop];
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 256;
    reply *v = realloc(l->v, cap * sizeof(*v));
    if (!v) {
      free(buf);
      return; /* the client times out; memory is what failed */
    }
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (reply){.call = call, .err = err, .buf = buf, .len = len};
}

static void flush_replies(apply_actor *a) {
  for (uint32_t i = 0; i < a->n_loops; i++) {
    reply_list *l = &a->loops[i];
    if (l->n == 0) continue;
    msg_replies *m = malloc(sizeof(*m) + l->n * sizeof(reply));
    if (!m) {
      for (size_t k = 0; k < l->n; k++) free(l->v[k].buf);
      l->n = 0;
      continue;
    }
    m->hdr.kind = MSG_REPLIES;
    m->n = l->n;
    memcpy(m->r, l->v, l->n * sizeof(reply));
    l->n = 0;
    server_post_replies(a->s, i, m);
  }
}

static uint8_t *pack(const ProtobufCMessage *msg, size_t *len) {
  *len = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (buf) protobuf_c_message_pack(msg, buf);
  return buf;
}

static void fill_header(apply_actor *a, Etcdserverpb__ResponseHeader *h) {
  h->cluster_id = a->s->cluster_id;
  h->member_id = a->s->member_id;
  h->raft_term = atomic_load(&a->s->term);
}

/* Runs one client request against the store; returns the packed response
 * (or NULL with *err set). */
static uint8_t *execute(apply_actor *a, const Cetcdpb__InternalRequest *req, size_t *len, int *err) {
  Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  fill_header(a, &hdr);
  mvcc *m = a->s->store;
  switch (req->request_case) {
  case CETCDPB__INTERNAL_REQUEST__REQUEST_PUT: {
    Etcdserverpb__PutResponse r = ETCDSERVERPB__PUT_RESPONSE__INIT;
    r.header = &hdr;
    *err = mvcc_put(m, req->put, &r, &a->ar);
    return *err ? NULL : pack(&r.base, len);
  }
  case CETCDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE: {
    Etcdserverpb__DeleteRangeResponse r = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
    r.header = &hdr;
    *err = mvcc_delete_range(m, req->delete_range, &r, &a->ar);
    return *err ? NULL : pack(&r.base, len);
  }
  case CETCDPB__INTERNAL_REQUEST__REQUEST_TXN: {
    Etcdserverpb__TxnResponse r = ETCDSERVERPB__TXN_RESPONSE__INIT;
    r.header = &hdr;
    *err = mvcc_txn(m, req->txn, &r, &a->ar);
    return *err ? NULL : pack(&r.base, len);
  }
  case CETCDPB__INTERNAL_REQUEST__REQUEST_COMPACTION: {
    Etcdserverpb__CompactionResponse r = ETCDSERVERPB__COMPACTION_RESPONSE__INIT;
    r.header = &hdr;
    *err = mvcc_compact(m, req->compaction, &r, &a->ar);
    return *err ? NULL : pack(&r.base, len);
  }
  case CETCDPB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT:
    return lease_apply_grant(a->lease, req->lease_grant, len, err);
  case CETCDPB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE:
    return lease_apply_revoke(a->lease, req->lease_revoke, &a->ar, len, err);
  case CETCDPB__INTERNAL_REQUEST__REQUEST_RANGE: {
    Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.header = &hdr;
    *err = mvcc_range_in_batch(m, req->range, &r, &a->ar);
    return *err ? NULL : pack(&r.base, len);
  }
  case CETCDPB__INTERNAL_REQUEST__REQUEST_ALARM:
    return alarm_apply(a->alarm, req->alarm, len, err);
  default:
    *err = -CETCD_E_INTERNAL;
    return NULL;
  }
}

/* What a request costs against --quota-backend-bytes (etcd's Cost). */
static int64_t request_cost(const Cetcdpb__InternalRequest *req) {
  switch (req->request_case) {
  case CETCDPB__INTERNAL_REQUEST__REQUEST_PUT:
    return quota_cost_put(req->put);
  case CETCDPB__INTERNAL_REQUEST__REQUEST_TXN:
    return quota_cost_txn(req->txn);
  case CETCDPB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT:
    return QUOTA_LEASE_OVERHEAD;
  default:
    return 0;
  }
}

/* etcd's applyEntryNormal: a request answered NO_SPACE while no NOSPACE
 * alarm is active raises one for this member, and the client's answer
 * waits until it is applied (the proposal carries the call). Returns true
 * if the answer went with the proposal. apply never waits on raft's
 * mailbox: if it is full, the client is answered now and the next refused
 * write raises the alarm. */
static bool raise_nospace(apply_actor *a, net_call call, bool mine) {
  if (alarm_nospace_any(a->alarm)) return false;
  net_call none = {.loop = UINT32_MAX};
  msg_propose *p = alarm_nospace_proposal(a->s, mine ? call : none);
  if (!p) return false;
  if (!mailbox_try_push(&a->s->raft_mb, p)) {
    free(p);
    return false;
  }
  return mine;
}

/* Runs a request through the alarm gates and the apply-time quota check
 * (etcd's quotaApplierV3: a write that no longer fits is still applied,
 * but answered NO_SPACE). */
static uint8_t *execute_checked(apply_actor *a, const Cetcdpb__InternalRequest *req, size_t *len, int *err) {
  *err = alarm_gate(a->alarm, req);
  if (*err) return NULL;
  bool fits = quota_available(a->s, request_cost(req));
  uint8_t *buf = execute(a, req, len, err);
  if (*err == 0 && !fits) {
    free(buf);
    *err = -CETCD_E_NO_SPACE;
    return NULL;
  }
  if (*err == 0 && req->reply_nospace) { /* the alarm a refused write raised */
    free(buf);
    *err = -CETCD_E_NO_SPACE;
    return NULL;
  }
  return buf;
}

static void apply_normal(apply_actor *a, const apply_entry *e) {
  if (e->len == 0) { /* a new leader's empty entry */
    lease_on_leader_entry(a->lease);
    return;
  }
  arena_reset(&a->ar);
  Cetcdpb__InternalRequest *req = cetcdpb__internal_request__unpack(&a->ar.pb, e->len, e->data);
  if (!req) {
    /* Deterministic on every member: an undecodable entry is skipped by all. */
    log_printf(LOG_LEVEL_ERROR, "apply", "cannot decode entry %llu; skipped", (unsigned long long)e->index);
    return;
  }
  size_t len = 0;
  int err = 0;
  uint8_t *buf = execute_checked(a, req, &len, &err);
  bool mine = req->proposer == a->s->member_id && req->boot == a->s->boot_nonce;
  net_call call = {.loop = (uint32_t)(req->reply_token >> 32),
                   .conn_slot = (uint32_t)req->reply_token,
                   .conn_gen = (uint32_t)(req->reply_stream >> 32),
                   .stream_id = (int32_t)(uint32_t)req->reply_stream};
  if (err == -CETCD_E_NO_SPACE && !req->reply_nospace && raise_nospace(a, call, mine)) return;
  if (!mine) {
    free(buf);
    return;
  }
  if (!buf && !err) err = -CETCD_E_NOMEM;
  add_reply(a, call, err, buf, len);
}

static void apply_entries(apply_actor *a, const msg_apply *m) {
  for (size_t i = 0; i < m->n; i++) {
    const apply_entry *e = &m->ents[i];
    if (e->index <= a->applied) continue; /* already in the store */
    if (e->type == RAFT_ENTRY_NORMAL) apply_normal(a, e);
    a->applied = e->index;
    a->applied_term = e->term;
  }
}

static void release_reads(apply_actor *a) {
  size_t keep = 0;
  for (size_t i = 0; i < a->n_reads; i++) {
    msg_read_index *r = a->reads[i];
    if (r->read_index <= a->applied) {
      if (net_post(a->s->net, r->loop, r) < 0) free(r);
    } else {
      a->reads[keep++] = r;
    }
  }
  a->n_reads = keep;
}

static void hold_read(apply_actor *a, msg_read_index *r) {
  if (a->n_reads == a->cap_reads) {
    size_t cap = a->cap_reads ? a->cap_reads * 2 : 64;
    msg_read_index **v = realloc(a->reads, cap * sizeof(*v));
    if (!v) {
      r->err = -CETCD_E_NOMEM;
      if (net_post(a->s->net, r->loop, r) < 0) free(r);
      return;
    }
    a->reads = v;
    a->cap_reads = cap;
  }
  a->reads[a->n_reads++] = r;
}

static void maybe_sync_store(apply_actor *a) {
  uint64_t every = a->s->opt.snapshot_count ? a->s->opt.snapshot_count : 100000;
  if (a->applied < a->last_synced + every) return;
  if (mvcc_sync(a->s->store) < 0) {
    server_fatal(a->s, "apply: store sync failed", -EIO);
    return;
  }
  a->last_synced = a->applied;
  msg_store_synced *m = malloc(sizeof(*m));
  if (!m) return;
  *m = (msg_store_synced){.hdr = {MSG_STORE_SYNCED}, .index = a->applied, .term = a->applied_term};
  mailbox_push(&a->s->raft_ctl_mb, m);
}

static void lease_renewals(apply_actor *a, msg_lease_renew *m) {
  for (size_t i = 0; i < m->n; i++) {
    size_t len = 0;
    uint8_t *buf = NULL;
    if (!m->r[i].finish) {
      buf = lease_renew(a->lease, m->r[i].id, &len);
      if (!buf) continue; /* out of memory: this keepalive goes unanswered */
    }
    net_call call = m->r[i].call;
    if (call.loop >= a->n_loops) {
      free(buf);
      continue;
    }
    reply_list *l = &a->loops[call.loop];
    size_t before = l->n;
    add_reply(a, call, 0, buf, len);
    if (l->n > before) l->v[l->n - 1].stream = m->r[i].finish ? 2 : 1;
  }
}

static void lease_message(apply_actor *a, msg_hdr *m) {
  if (m->kind == MSG_LEASE_RENEW) {
    lease_renewals(a, (msg_lease_renew *)m);
  } else {
    msg_lease_query *q = (msg_lease_query *)m;
    size_t len = 0;
    int err = 0;
    uint8_t *buf = lease_query(a->lease, q, &len, &err);
    add_reply(a, q->call, err, buf, len);
  }
  free(m);
}

/* One batch: everything waiting, up to APPLY_BATCH_MAX entries. Returns
 * false when told to stop. */
static bool apply_batch(apply_actor *a) {
  server *s = a->s;
  msg_hdr *m;
  size_t n_ents = 0;
  bool stop = false, began = false;
  uint64_t before = a->applied;
  while (n_ents < APPLY_BATCH_MAX && (m = mailbox_pop(&s->apply_mb))) {
    if (m->kind == MSG_STOP) {
      free(m);
      stop = true;
      break;
    }
    if (m->kind == MSG_READ_INDEX) {
      hold_read(a, (msg_read_index *)m);
      continue;
    }
    if (m->kind == MSG_LEASE_RENEW || m->kind == MSG_LEASE_QUERY) {
      n_ents += m->kind == MSG_LEASE_RENEW ? ((msg_lease_renew *)m)->n / 16 + 1 : 1;
      lease_message(a, m);
      continue;
    }
    if (!began) mvcc_batch_begin(s->store), watch_apply_begin(s), began = true; /* watch: collect events */
    apply_entries(a, (msg_apply *)m);
    n_ents += ((msg_apply *)m)->n;
    free(m);
  }
  if (began) {
    if (mvcc_batch_commit(s->store, a->applied) < 0) {
      server_fatal(s, "apply: store write failed", -EIO);
      return false;
    }
    if (a->applied != before) atomic_store(&s->applied_index, a->applied);
    alarm_publish(a->alarm); /* before the replies: a client told NO_SPACE sees the alarm */
    watch_apply_commit(s); /* watch: the batch's events, before any reply leaves */
    flush_replies(a);
    watch_apply_notify(s);
    maybe_sync_store(a);
  }
  flush_replies(a); /* keepalive and lease query answers of a batch without entries */
  release_reads(a);
  /* Held reads need no polling: the entries they wait for arrive through
   * this mailbox and wake us. mailbox_wait returns at once if messages are
   * already waiting (e.g. the batch was cut at APPLY_BATCH_MAX). */
  int wait = lease_tick(a->lease);
  if (!began && !stop) mailbox_wait(&s->apply_mb, wait);
  return !stop;
}

static void *apply_actor_main(void *arg) {
  apply_actor *a = arg;
  prctl(PR_SET_NAME, "apply");
  rcu_register_thread();
  a->lease = lease_state_open(a->s);
  if (!a->lease) server_fatal(a->s, "apply: cannot load leases", -ENOMEM);
  a->alarm = alarm_state_open(a->s);
  if (!a->alarm) server_fatal(a->s, "apply: cannot load alarms", -ENOMEM);
  while (a->lease && a->alarm && !atomic_load(&a->s->stopping) && apply_batch(a)) {
  }
  alarm_state_close(a->alarm);
  lease_state_close(a->lease);
  for (size_t i = 0; i < a->n_reads; i++) free(a->reads[i]);
  free(a->reads);
  for (uint32_t i = 0; i < a->n_loops; i++) free(a->loops[i].v);
  free(a->loops);
  arena_free(&a->ar);
  rcu_unregister_thread();
  free(a);
  return NULL;
}

int apply_actor_start(server *s) {
  apply_actor *a = calloc(1, sizeof(*a));
  if (!a) return -ENOMEM;
  a->s = s;
  a->n_loops = s->opt.net_loops ? s->opt.net_loops : 1;
  a->loops = calloc(a->n_loops, sizeof(*a->loops));
  if (!a->loops) {
    free(a);
    return -ENOMEM;
  }
  arena_init(&a->ar, 64 * 1024);
  a->applied = mvcc_consistent_index(s->store);
  a->last_synced = a->applied;
  atomic_store(&s->applied_index, a->applied);
  return -pthread_create(&s->apply_th, NULL, apply_actor_main, a);
}
