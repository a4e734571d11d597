/*
 * kv_service.c -- the KV service on the net loops (the net actor's half of
 * the request path).
 *
 * Contract
 *   Threads:  every net loop; all state here is per loop (kv_loop), touched
 *             only by that loop's thread.
 *   Consumes: gRPC messages for the etcdserverpb.KV methods (and routes the
 *             Watch, Lease and Maintenance ones to their files); MSG_REPLIES
 *             and MSG_READ_INDEX posted back to this loop; /health, /version.
 *   Quota:    a put or txn the space quota refuses raises the NOSPACE alarm
 *             and is answered once it is applied (actors/maint.h).
 *   Produces: MSG_PROPOSE (one per write) and MSG_READ_INDEX (one per loop
 *             turn that saw linearizable reads) into s->raft_mb.
 *   Reads:    serializable Range requests are answered right here from the
 *             RCU index + LevelDB (never leave the loop). Linearizable ones
 *             wait in the turn's batch; the batch goes to raft for a read
 *             index, then to apply, which posts it back once applied >= read
 *             index; then each read runs exactly like a serializable one.
 *   Checks:   etcd's gRPC-layer checks (empty key, ignore_value/lease with a
 *             value/lease, --max-txn-ops, duplicate keys) before proposing;
 *             --max-request-bytes on the proposal, as etcdserver does.
 *   Full:     a full raft mailbox makes the push wait, which stops this loop
 *             from reading its sockets: back-pressure reaches the clients.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "actors/lease.h"
#include "actors/maint.h"
#include "actors/server.h"
#include "actors/version.h"
#include "actors/watch.h"
#include "internal.pb-c.h"
#include "msg/errors.h"

enum kv_method { M_RANGE, M_PUT, M_DELETE_RANGE, M_TXN, M_COMPACT, M_WATCH /* watch_service.c */ };

/* InternalRequest field numbers of the request oneof (msg/proto/internal.proto). */
static const uint8_t proposal_field[] = {
    [M_RANGE] = 10, [M_PUT] = 11, [M_DELETE_RANGE] = 12, [M_TXN] = 13, [M_COMPACT] = 14};

static const net_method kv_methods[] = {
    {"/etcdserverpb.KV/Range", NET_UNARY, M_RANGE},
    {"/etcdserverpb.KV/Put", NET_UNARY, M_PUT},
    {"/etcdserverpb.KV/DeleteRange", NET_UNARY, M_DELETE_RANGE},
    {"/etcdserverpb.KV/Txn", NET_UNARY, M_TXN},
    {"/etcdserverpb.KV/Compact", NET_UNARY, M_COMPACT},
    {"/etcdserverpb.Watch/Watch", NET_BIDI_STREAM, M_WATCH},
    {"/etcdserverpb.Lease/LeaseGrant", NET_UNARY, M_LEASE_GRANT},
    {"/etcdserverpb.Lease/LeaseRevoke", NET_UNARY, M_LEASE_REVOKE},
    {"/etcdserverpb.Lease/LeaseKeepAlive", NET_BIDI_STREAM, M_LEASE_KEEPALIVE},
    {"/etcdserverpb.Lease/LeaseTimeToLive", NET_UNARY, M_LEASE_TTL},
    {"/etcdserverpb.Lease/LeaseLeases", NET_UNARY, M_LEASE_LEASES},
    {"/etcdserverpb.Maintenance/Status", NET_UNARY, M_MAINT_STATUS},
    {"/etcdserverpb.Maintenance/Alarm", NET_UNARY, M_MAINT_ALARM},
    /* registered so that they answer grpc-go's "method <M> not implemented"
     * while an unknown Maintenance method gets "unknown method" (etcd
     * registers the whole service) */
    {"/etcdserverpb.Maintenance/Defragment", NET_UNARY, M_MAINT_DEFRAGMENT},
    {"/etcdserverpb.Maintenance/Hash", NET_UNARY, M_MAINT_HASH},
    {"/etcdserverpb.Maintenance/HashKV", NET_UNARY, M_MAINT_HASHKV},
    {"/etcdserverpb.Maintenance/Snapshot", NET_SERVER_STREAM, M_MAINT_SNAPSHOT},
    {"/etcdserverpb.Maintenance/MoveLeader", NET_UNARY, M_MAINT_MOVE_LEADER},
};

/* Services whose issues have not landed yet: UNIMPLEMENTED, cleanly. */
static const char *const unimplemented_services[] = {
    "etcdserverpb.Cluster", "etcdserverpb.Auth", "v3electionpb.Election", "v3lockpb.Lock",
};

typedef struct pending_read {
  net_call call;
  uint8_t *req; /* a copy of the encoded RangeRequest */
  size_t len;
} pending_read;

typedef struct read_batch {
  uint64_t id;
  pending_read *v;
  size_t n;
  struct read_batch *next;
} read_batch;

struct kv_loop {
  server *s;
  net_loop *loop;
  uint32_t index;
  arena ar;
  uint8_t *out;         /* reusable buffer for packed responses */
  size_t out_cap;
  pending_read *cur;    /* linearizable reads of this turn */
  size_t n_cur, cap_cur;
  read_batch *inflight, *inflight_tail;
  uint64_t next_batch;
  lease_loop *lease;    /* the Lease service's state on this loop */
};

static void reply_err(net_loop *loop, net_call call, int err) {
  net_reply_error(loop, call, cetcd_err_code(err), cetcd_err_msg(err));
}

static void reply_msg(kv_loop *kl, net_call call, const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  if (len > kl->out_cap) {
    size_t cap = len > 4096 ? len : 4096;
    uint8_t *b = realloc(kl->out, cap);
    if (!b) {
      reply_err(kl->loop, call, -CETCD_E_NOMEM);
      return;
    }
    kl->out = b;
    kl->out_cap = cap;
  }
  protobuf_c_message_pack(m, kl->out);
  net_reply(kl->loop, call, kl->out, len);
}

static void fill_header(server *s, Etcdserverpb__ResponseHeader *h) {
  h->cluster_id = s->cluster_id;
  h->member_id = s->member_id;
  h->raft_term = atomic_load(&s->term);
}

/* A Range served from this thread: the serializable path, and the last step
 * of the linearizable one. */
static void serve_range(kv_loop *kl, net_call call, const Etcdserverpb__RangeRequest *req) {
  Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
  fill_header(kl->s, &hdr);
  resp.header = &hdr;
  int err = mvcc_range(kl->s->store, req, &resp, &kl->ar);
  if (err) reply_err(kl->loop, call, err);
  else reply_msg(kl, call, &resp.base);
}

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Builds the log entry for a write: an InternalRequest whose request field
 * is the client's message, byte for byte (a submessage field and a bytes
 * field look the same on the wire, so nothing is re-encoded). */
msg_propose *server_proposal_new(server *s, net_call call, unsigned field, const uint8_t *msg, size_t len) {
  uint8_t head[64];
  size_t h = 0;
  head[h++] = 0x08, h += put_varint(head + h, s->member_id);
  head[h++] = 0x10, h += put_varint(head + h, s->boot_nonce);
  head[h++] = 0x18, h += put_varint(head + h, (uint64_t)call.loop << 32 | call.conn_slot);
  head[h++] = 0x20, h += put_varint(head + h, (uint64_t)call.conn_gen << 32 | (uint32_t)call.stream_id);
  h += put_varint(head + h, field << 3 | 2); /* fields >= 16 take a 2-byte tag */
  h += put_varint(head + h, len);
  msg_propose *p = malloc(sizeof(*p) + h + len);
  if (!p) return NULL;
  p->hdr.kind = MSG_PROPOSE;
  p->call = call;
  p->len = (uint32_t)(h + len);
  memcpy(p->data, head, h);
  memcpy(p->data + h, msg, len);
  return p;
}

static void propose(kv_loop *kl, net_call call, int method, const uint8_t *msg, size_t len) {
  server *s = kl->s;
  /* the InternalRequest head is at most 5 varints and 2 tags: < 64 bytes */
  msg_propose *p = server_proposal_new(s, call, proposal_field[method], msg, len);
  if (!p) {
    reply_err(kl->loop, call, -CETCD_E_NOMEM);
    return;
  }
  if (p->len > s->opt.max_request_bytes) {
    free(p);
    reply_err(kl->loop, call, -CETCD_E_REQUEST_TOO_LARGE);
    return;
  }
  mailbox_push(&s->raft_mb, p);
}

static void queue_read(kv_loop *kl, net_call call, const uint8_t *msg, size_t len) {
  if (kl->n_cur == kl->cap_cur) {
    size_t cap = kl->cap_cur ? kl->cap_cur * 2 : 64;
    pending_read *v = realloc(kl->cur, cap * sizeof(*v));
    if (!v) {
      reply_err(kl->loop, call, -CETCD_E_NOMEM);
      return;
    }
    kl->cur = v;
    kl->cap_cur = cap;
  }
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy) {
    reply_err(kl->loop, call, -CETCD_E_NOMEM);
    return;
  }
  memcpy(copy, msg, len);
  kl->cur[kl->n_cur++] = (pending_read){call, copy, len};
}

/* etcd's space quota (etcdserver/quota.go, actors/maint.h): a write is
 * refused when the store plus its estimated cost would reach
 * --quota-backend-bytes; the refusal raises the NOSPACE alarm (on_message).
 * Deletes and reads are never refused here. */
static int check_quota(kv_loop *kl, int64_t cost) {
  return quota_available(kl->s, cost) ? 0 : -CETCD_E_NO_SPACE;
}

/* Decodes and checks one request; returns 0 or a negative cetcd_err. */
static int check_request(kv_loop *kl, int method, const uint8_t *msg, size_t len, void **out) {
  ProtobufCAllocator *al = &kl->ar.pb;
  switch (method) {
  case M_RANGE: {
    Etcdserverpb__RangeRequest *r = etcdserverpb__range_request__unpack(al, len, msg);
    *out = r;
    return r ? kv_validate_range(r) : -CETCD_E_MALFORMED;
  }
  case M_PUT: {
    Etcdserverpb__PutRequest *r = etcdserverpb__put_request__unpack(al, len, msg);
    if (!r) return -CETCD_E_MALFORMED;
    int err = kv_validate_put(r);
    return err ? err : check_quota(kl, quota_cost_put(r));
  }
  case M_DELETE_RANGE: {
    Etcdserverpb__DeleteRangeRequest *r = etcdserverpb__delete_range_request__unpack(al, len, msg);
    return r ? kv_validate_delete_range(r) : -CETCD_E_MALFORMED;
  }
  case M_TXN: {
    Etcdserverpb__TxnRequest *r = etcdserverpb__txn_request__unpack(al, len, msg);
    if (!r) return -CETCD_E_MALFORMED;
    int err = kv_validate_txn(r, (int)kl->s->opt.max_txn_ops);
    if (err) return err;
    return check_quota(kl, quota_cost_txn(r));
  }
  case M_COMPACT: {
    Etcdserverpb__CompactionRequest *r = etcdserverpb__compaction_request__unpack(al, len, msg);
    return r ? 0 : -CETCD_E_MALFORMED;
  }
  default:
    return -CETCD_E_INTERNAL;
  }
}

static void on_message(void *app, net_loop *loop, net_call call, int method, const uint8_t *msg, size_t len) {
  server *s = app;
  if (method == M_WATCH) {
    watch_service_on_message(s, loop, call, msg, len);
    return;
  }
  kv_loop *kl = s->loops[net_loop_index(loop)];
  if (method >= M_LEASE_GRANT && method <= M_LEASE_LAST_) {
    lease_on_message(kl->lease, call, method, msg, len);
    return;
  }
  if (method >= M_MAINT_STATUS && method <= M_MAINT_LAST_) {
    maint_on_message(s, loop, call, method, msg, len);
    return;
  }
  arena_reset(&kl->ar);
  void *decoded = NULL;
  int err = check_request(kl, method, msg, len, &decoded);
  if (err == -CETCD_E_NO_SPACE && quota_refuse(s, call) == 0) return; /* answered once the alarm is up */
  if (err) {
    reply_err(loop, call, err);
    return;
  }
  if (method != M_RANGE) {
    propose(kl, call, method, msg, len);
    return;
  }
  const Etcdserverpb__RangeRequest *r = decoded;
  if (r->serializable) serve_range(kl, call, r);
  else queue_read(kl, call, msg, len);
}

static void on_turn_end(void *app, net_loop *loop) {
  server *s = app;
  kv_loop *kl = s->loops[net_loop_index(loop)];
  lease_loop_flush(kl->lease);
  if (kl->n_cur == 0) return;
  read_batch *b = malloc(sizeof(*b));
  msg_read_index *m = malloc(sizeof(*m));
  if (!b || !m) {
    free(b), free(m);
    return; /* retried at the end of the next turn */
  }
  *b = (read_batch){.id = kl->next_batch++, .v = kl->cur, .n = kl->n_cur};
  kl->cur = NULL;
  kl->n_cur = kl->cap_cur = 0;
  if (kl->inflight_tail) kl->inflight_tail->next = b;
  else kl->inflight = b;
  kl->inflight_tail = b;
  *m = (msg_read_index){.hdr = {MSG_READ_INDEX}, .loop = kl->index, .batch = b->id};
  mailbox_push(&s->raft_mb, m);
}

static read_batch *take_batch(kv_loop *kl, uint64_t id) {
  read_batch **pp = &kl->inflight, *prev = NULL;
  for (read_batch *b = kl->inflight; b; prev = b, pp = &b->next, b = b->next) {
    if (b->id != id) continue;
    *pp = b->next;
    if (kl->inflight_tail == b) kl->inflight_tail = prev;
    return b;
  }
  return NULL;
}

static void run_reads(kv_loop *kl, msg_read_index *m) {
  read_batch *b = take_batch(kl, m->batch);
  if (!b) return;
  for (size_t i = 0; i < b->n; i++) {
    pending_read *p = &b->v[i];
    if (m->err) {
      reply_err(kl->loop, p->call, m->err);
    } else {
      arena_reset(&kl->ar);
      Etcdserverpb__RangeRequest *r = etcdserverpb__range_request__unpack(&kl->ar.pb, p->len, p->req);
      if (r) serve_range(kl, p->call, r);
      else reply_err(kl->loop, p->call, -CETCD_E_MALFORMED);
    }
    free(p->req);
  }
  free(b->v);
  free(b);
}

static void deliver_replies(kv_loop *kl, msg_replies *m) {
  for (size_t i = 0; i < m->n; i++) {
    reply *r = &m->r[i];
    if (r->err) reply_err(kl->loop, r->call, r->err);
    else if (r->stream == 1) net_stream_send(kl->loop, r->call, r->buf, r->len);
    else if (r->stream == 2) net_stream_finish(kl->loop, r->call, 0, NULL);
    else net_reply(kl->loop, r->call, r->buf, r->len);
    free(r->buf);
  }
}

static void on_post(void *app, net_loop *loop, void *msg) {
  server *s = app;
  kv_loop *kl = s->loops[net_loop_index(loop)];
  msg_hdr *h = msg;
  if (h->kind == MSG_WATCH_OUT) {
    watch_service_on_post(s, loop, msg); /* frees it */
    return;
  }
  if (h->kind == MSG_REPLIES) deliver_replies(kl, msg);
  else if (h->kind == MSG_READ_INDEX) run_reads(kl, msg);
  free(msg);
}

void server_post_replies(server *s, uint32_t loop, msg_replies *m) {
  if (!s->net || net_post(s->net, loop, m) < 0) {
    for (size_t i = 0; i < m->n; i++) free(m->r[i].buf);
    free(m);
  }
}

static void on_stream_end(void *app, net_loop *loop, net_call call, int method, net_end_reason why) {
  if (method == M_WATCH) watch_service_on_stream_end(app, loop, call, why);
  server *s = app;
  if (method >= M_LEASE_GRANT && method <= M_LEASE_LAST_)
    lease_on_stream_end(s->loops[net_loop_index(loop)]->lease, call, method, why);
}

/* "/health" or "/health?query": the query, else NULL. */
static const char *health_query(const char *target) {
  if (strncmp(target, "/health", 7) != 0) return NULL;
  if (target[7] == '\0') return "";
  return target[7] == '?' ? target + 8 : NULL;
}

static void on_http(void *app, net_loop *loop, const net_http_req *req) {
  server *s = app;
  char body[256];
  const char *hq = health_query(req->target);
  if (hq && !maint_healthy(s, hq)) {
    /* etcd answers with http.Error: 503, text/plain, a newline */
    static const char bad[] = "{\"health\":\"false\"}\n";
    net_http_reply(loop, req->call, 503, "text/plain; charset=utf-8", "X-Content-Type-Options: nosniff\r\n", bad,
                   sizeof(bad) - 1);
    return;
  }
  if (strcmp(req->target, "/version") == 0) {
    int n = snprintf(body, sizeof(body), "{\"etcdserver\":\"%s\",\"etcdcluster\":\"%s\"}",
                     CETCD_ETCD_COMPAT_VERSION, CETCD_API_VERSION ".0");
    net_http_reply(loop, req->call, 200, "application/json", NULL, body, (size_t)n);
  } else if (hq) {
    static const char ok[] = "{\"health\":\"true\"}";
    net_http_reply(loop, req->call, 200, "application/json", NULL, ok, sizeof(ok) - 1);
  } else {
    static const char nf[] = "404 page not found\n";
    net_http_reply(loop, req->call, 404, "text/plain; charset=utf-8", NULL, nf, sizeof(nf) - 1);
  }
}

static void on_loop_start(void *app, net_loop *loop, uint32_t index) {
  server *s = app;
  rcu_register_thread();
  kv_loop *kl = calloc(1, sizeof(*kl));
  if (!kl) abort(); /* at start-up: nothing to save */
  kl->s = s;
  kl->loop = loop;
  kl->index = index;
  arena_init(&kl->ar, 64 * 1024);
  kl->lease = lease_loop_new(s, loop);
  if (!kl->lease) abort();
  s->loops[index] = kl;
}

static void on_loop_stop(void *app, net_loop *loop) {
  server *s = app;
  uint32_t index = net_loop_index(loop);
  kv_loop *kl = s->loops[index];
  while (kl->inflight) {
    read_batch *b = kl->inflight;
    kl->inflight = b->next;
    for (size_t i = 0; i < b->n; i++) free(b->v[i].req);
    free(b->v);
    free(b);
  }
  for (size_t i = 0; i < kl->n_cur; i++) free(kl->cur[i].req);
  free(kl->cur);
  free(kl->out);
  lease_loop_free(kl->lease);
  arena_free(&kl->ar);
  free(kl);
  s->loops[index] = NULL;
  rcu_unregister_thread();
}

static void on_tick(void *app, net_loop *loop) {
  server *s = app;
  lease_loop_flush(s->loops[net_loop_index(loop)]->lease);
}

void kv_service_config(server *s, net_config *cfg, net_handlers *h) {
  cfg->methods = kv_methods;
  cfg->n_methods = sizeof(kv_methods) / sizeof(kv_methods[0]);
  cfg->unimplemented_services = unimplemented_services;
  cfg->n_unimplemented = sizeof(unimplemented_services) / sizeof(unimplemented_services[0]);
  /* grpc-go in etcd accepts max-request-bytes plus this much framing slack. */
  cfg->max_recv_msg_bytes = s->opt.max_request_bytes + 512 * 1024;
  cfg->counted_out_bytes = &s->watch_unsent; /* watch streams' output (watch.h, the budget) */
  memset(h, 0, sizeof(*h));
  h->app = s;
  h->on_loop_start = on_loop_start;
  h->on_loop_stop = on_loop_stop;
  h->on_message = on_message;
  h->on_turn_end = on_turn_end;
  h->on_post = on_post;
  h->on_stream_end = on_stream_end;
  h->on_http = on_http;
  h->on_tick = on_tick;
  /* keepalives apply had no room for are retried at least this often */
  if (cfg->tick_ms == 0) cfg->tick_ms = 20;
  lease_service_init(s);
}
