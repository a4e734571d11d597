/*
 * lease_service.c -- the Lease service on the net loops.
 *
 * Contract
 *   Threads:  every net loop; a lease_loop is touched only by its loop.
 *   Consumes: gRPC messages for etcdserverpb.Lease (dispatched here by
 *             kv_service.c); the answers come back as MSG_REPLIES (a
 *             keepalive answer is a stream message: reply.stream = 1).
 *   Produces: MSG_PROPOSE (LeaseGrant, LeaseRevoke) into s->raft_mb, as the
 *             KV writes do; MSG_LEASE_RENEW (every keepalive read in one loop
 *             turn, in one message) and MSG_LEASE_QUERY into s->apply_mb.
 *   Renewals: never touch the log (etcd: "renewals don't go through raft").
 *   Full:     messages apply's mailbox has no room for wait in the loop's
 *             outbox and are retried at the end of every turn and on every
 *             tick, in order, so a busy apply thread does not stall the loop
 *             (apply also posts to the loop). Past OUTBOX_MAX messages the
 *             loop waits for room instead, as a KV write does on raft's
 *             mailbox: it stops reading its sockets, and the clients feel
 *             the back-pressure.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/lease.h"
#include "actors/maint.h"
#include "msg/errors.h"

#define RENEW_BATCH_MAX 4096
#define OUTBOX_MAX 256

struct lease_loop {
  server *s;
  net_loop *loop;
  msg_lease_renew *renew;  /* this turn's keepalives (NULL: none yet) */
  void **outbox;           /* messages apply_mb had no room for, FIFO */
  size_t n_out, cap_out;
};

/* etcd's idutil.Generator: 2 bytes of member id, then 5 bytes of the start
 * time in ms and a 1-byte counter, incremented as one 48-bit number. */
static uint64_t id_prefix;
static _Atomic uint64_t id_suffix;

void lease_service_init(server *s) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
  id_prefix = (uint64_t)(uint16_t)s->member_id << 48;
  atomic_store(&id_suffix, (ms & ((1ull << 40) - 1)) << 8);
}

static int64_t next_lease_id(void) {
  for (;;) {
    uint64_t suffix = atomic_fetch_add(&id_suffix, 1) + 1;
    uint64_t id = (id_prefix | (suffix & ((1ull << 48) - 1))) & ((1ull << 63) - 1); /* positive only */
    if (id) return (int64_t)id;
  }
}

lease_loop *lease_loop_new(server *s, net_loop *loop) {
  lease_loop *ll = calloc(1, sizeof(*ll));
  if (!ll) return NULL;
  ll->s = s;
  ll->loop = loop;
  return ll;
}

void lease_loop_free(lease_loop *ll) {
  if (!ll) return;
  for (size_t i = 0; i < ll->n_out; i++) free(ll->outbox[i]);
  free(ll->outbox);
  free(ll->renew);
  free(ll);
}

static void reply_err(lease_loop *ll, net_call call, int err) {
  net_reply_error(ll->loop, call, cetcd_err_code(err), cetcd_err_msg(err));
}

/* Queues msg for apply behind anything already waiting. */
static int to_apply(lease_loop *ll, void *msg) {
  if (ll->n_out == 0 && mailbox_try_push(&ll->s->apply_mb, msg)) return 0;
  if (ll->n_out >= OUTBOX_MAX) {
    for (size_t i = 0; i < ll->n_out; i++) mailbox_push(&ll->s->apply_mb, ll->outbox[i]);
    ll->n_out = 0;
    mailbox_push(&ll->s->apply_mb, msg);
    return 0;
  }
  if (ll->n_out == ll->cap_out) {
    size_t cap = ll->cap_out ? ll->cap_out * 2 : 16;
    void **v = realloc(ll->outbox, cap * sizeof(*v));
    if (!v) return -CETCD_E_NOMEM;
    ll->outbox = v;
    ll->cap_out = cap;
  }
  ll->outbox[ll->n_out++] = msg;
  return 0;
}

static void propose(lease_loop *ll, net_call call, unsigned field, const uint8_t *msg, size_t len) {
  msg_propose *p = server_proposal_new(ll->s, call, field, msg, len);
  if (!p) {
    reply_err(ll, call, -CETCD_E_NOMEM);
  } else if (p->len > ll->s->opt.max_request_bytes) { /* etcd checks every proposal */
    free(p);
    reply_err(ll, call, -CETCD_E_REQUEST_TOO_LARGE);
  } else {
    mailbox_push(&ll->s->raft_mb, p);
  }
}

static void on_grant(lease_loop *ll, net_call call, const uint8_t *msg, size_t len) {
  Etcdserverpb__LeaseGrantRequest *r = etcdserverpb__lease_grant_request__unpack(NULL, len, msg);
  if (!r) {
    reply_err(ll, call, -CETCD_E_MALFORMED);
    return;
  }
  /* etcd's quotaLeaseServer: a grant costs leaseOverhead bytes; a refusal
   * raises the NOSPACE alarm (actors/maint.h) */
  if (!quota_available(ll->s, QUOTA_LEASE_OVERHEAD)) {
    etcdserverpb__lease_grant_request__free_unpacked(r, NULL);
    if (quota_refuse(ll->s, call) < 0) reply_err(ll, call, -CETCD_E_NO_SPACE);
    return;
  }
  if (r->id == 0) r->id = next_lease_id();
  uint8_t buf[32]; /* two int64 varints */
  size_t n = etcdserverpb__lease_grant_request__pack(r, buf);
  etcdserverpb__lease_grant_request__free_unpacked(r, NULL);
  propose(ll, call, PROPOSAL_FIELD_LEASE_GRANT, buf, n);
}

/* A valid LeaseRevokeRequest goes into the log byte for byte. */
static void on_revoke(lease_loop *ll, net_call call, const uint8_t *msg, size_t len) {
  Etcdserverpb__LeaseRevokeRequest *r = etcdserverpb__lease_revoke_request__unpack(NULL, len, msg);
  if (!r) {
    reply_err(ll, call, -CETCD_E_MALFORMED);
    return;
  }
  etcdserverpb__lease_revoke_request__free_unpacked(r, NULL);
  propose(ll, call, PROPOSAL_FIELD_LEASE_REVOKE, msg, len);
}

static int add_renewal(lease_loop *ll, net_call call, int64_t id, int finish) {
  if (!ll->renew) {
    ll->renew = malloc(sizeof(*ll->renew) + RENEW_BATCH_MAX * sizeof(lease_renewal));
    if (!ll->renew) return -CETCD_E_NOMEM;
    ll->renew->hdr.kind = MSG_LEASE_RENEW;
    ll->renew->n = 0;
  }
  ll->renew->r[ll->renew->n++] = (lease_renewal){call, id, finish};
  if (ll->renew->n == RENEW_BATCH_MAX) lease_loop_flush(ll);
  return 0;
}

static void on_keepalive(lease_loop *ll, net_call call, const uint8_t *msg, size_t len) {
  Etcdserverpb__LeaseKeepAliveRequest *r = etcdserverpb__lease_keep_alive_request__unpack(NULL, len, msg);
  if (!r) {
    reply_err(ll, call, -CETCD_E_MALFORMED);
    return;
  }
  int64_t id = r->id;
  etcdserverpb__lease_keep_alive_request__free_unpacked(r, NULL);
  if (add_renewal(ll, call, id, 0) < 0) reply_err(ll, call, -CETCD_E_NOMEM);
}

static void on_query(lease_loop *ll, net_call call, int method, const uint8_t *msg, size_t len) {
  msg_lease_query *q = calloc(1, sizeof(*q));
  if (!q) {
    reply_err(ll, call, -CETCD_E_NOMEM);
    return;
  }
  *q = (msg_lease_query){.hdr = {MSG_LEASE_QUERY}, .call = call, .list = method == M_LEASE_LEASES};
  if (method == M_LEASE_TTL) {
    Etcdserverpb__LeaseTimeToLiveRequest *r = etcdserverpb__lease_time_to_live_request__unpack(NULL, len, msg);
    if (!r) {
      free(q);
      reply_err(ll, call, -CETCD_E_MALFORMED);
      return;
    }
    q->id = r->id;
    q->keys = r->keys;
    etcdserverpb__lease_time_to_live_request__free_unpacked(r, NULL);
  }
  if (to_apply(ll, q) < 0) {
    free(q);
    reply_err(ll, call, -CETCD_E_NOMEM);
  }
}

void lease_on_message(lease_loop *ll, net_call call, int method, const uint8_t *msg, size_t len) {
  switch (method) {
  case M_LEASE_GRANT:
    on_grant(ll, call, msg, len);
    break;
  case M_LEASE_REVOKE:
    on_revoke(ll, call, msg, len);
    break;
  case M_LEASE_KEEPALIVE:
    on_keepalive(ll, call, msg, len);
    break;
  case M_LEASE_TTL:
  case M_LEASE_LEASES:
    on_query(ll, call, method, msg, len);
    break;
  default:
    reply_err(ll, call, -CETCD_E_INTERNAL);
  }
}

void lease_on_stream_end(lease_loop *ll, net_call call, int method, net_end_reason why) {
  /* etcd's leaseKeepAlive answers every keepalive it read, then returns nil
   * on io.EOF: status OK. The finish travels behind this stream's
   * keepalives still on their way through apply, so it comes after their
   * answers. Answers to a dead stream are dropped by the transport. */
  if (method != M_LEASE_KEEPALIVE || why != NET_END_HALF_CLOSE) return;
  if (add_renewal(ll, call, 0, 1) < 0) net_stream_finish(ll->loop, call, 0, NULL);
}

void lease_loop_flush(lease_loop *ll) {
  if (ll->renew && ll->renew->n > 0) {
    msg_lease_renew *m = ll->renew;
    ll->renew = NULL;
    if (to_apply(ll, m) < 0) {
      for (size_t i = 0; i < m->n; i++) reply_err(ll, m->r[i].call, -CETCD_E_NOMEM);
      free(m);
    }
  }
  size_t k = 0;
  while (k < ll->n_out && mailbox_try_push(&ll->s->apply_mb, ll->outbox[k])) k++;
  if (k == 0) return;
  memmove(ll->outbox, ll->outbox + k, (ll->n_out - k) * sizeof(*ll->outbox));
  ll->n_out -= k;
}
