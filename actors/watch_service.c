/*
 * watch_service.c -- the Watch service's net-loop half.
 *
 * Contract
 *   Threads:  every net loop; nothing here keeps state between callbacks
 *             (the watch actor owns the registry).
 *   Consumes: WatchRequest messages of /etcdserverpb.Watch/Watch (bidi);
 *             the stream's end; MSG_WATCH_OUT posted by the watch actor.
 *   Produces: MSG_WATCH_REQ into s->watch_mb (create, cancel, progress, gone).
 *   Sends:    each record of a MSG_WATCH_OUT as one gRPC message on its
 *             stream, then tells the actor how much it took and what the
 *             socket still holds (watch_feedback), which is how a slow
 *             stream is noticed.
 *   Full:     a full watch mailbox makes the loop wait (the actor drains it
 *             without blocking on anything), unless the actor is stopping.
 *   Half-close: etcd's recvLoop returns on io.EOF but the stream keeps
 *             sending until the client goes away; so does this one.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/server.h"
#include "actors/watch.h"
#include "msg/errors.h"
#include "rpc.pb-c.h"

static void push_req(server *s, msg_watch_req *m) {
  for (int spins = 0;; spins++) {
    if (atomic_load(&s->watch_stopped) || !s->watch) {
      free(m);
      return;
    }
    if (mailbox_try_push(&s->watch_mb, m)) return;
    if (spins < 16) {
      sched_yield();
    } else {
      struct timespec t = {0, 200 * 1000};
      nanosleep(&t, NULL);
    }
  }
}

static msg_watch_req *new_req(net_call call, int op, size_t data_len) {
  msg_watch_req *m = calloc(1, sizeof(*m) + data_len);
  if (!m) return NULL;
  m->hdr.kind = MSG_WATCH_REQ;
  m->call = call;
  m->op = op;
  return m;
}

static msg_watch_req *create_req(net_call call, const Etcdserverpb__WatchCreateRequest *c) {
  msg_watch_req *m = new_req(call, WATCH_OP_CREATE, c->key.len + c->range_end.len);
  if (!m) return NULL;
  m->watch_id = c->watch_id;
  m->start_revision = c->start_revision;
  m->progress_notify = c->progress_notify != 0;
  m->prev_kv = c->prev_kv != 0;
  m->fragment = c->fragment != 0;
  for (size_t i = 0; i < c->n_filters; i++) {
    if (c->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT) m->noput = 1;
    if (c->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE) m->nodelete = 1;
  }
  m->key_len = (uint32_t)c->key.len;
  m->end_len = (uint32_t)c->range_end.len;
  if (c->key.len) memcpy(m->data, c->key.data, c->key.len);
  if (c->range_end.len) memcpy(m->data + c->key.len, c->range_end.data, c->range_end.len);
  return m;
}

void watch_service_on_message(server *s, net_loop *loop, net_call call, const uint8_t *msg, size_t len) {
  Etcdserverpb__WatchRequest *r = etcdserverpb__watch_request__unpack(NULL, len, msg);
  if (!r) {
    /* grpc-go fails the stream when a request does not unmarshal */
    net_stream_finish(loop, call, GRPC_INTERNAL, "grpc: failed to unmarshal the received message");
    push_req(s, new_req(call, WATCH_OP_GONE, 0));
    return;
  }
  msg_watch_req *m = NULL;
  switch (r->request_union_case) {
  case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST:
    m = create_req(call, r->create_request);
    break;
  case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST:
    m = new_req(call, WATCH_OP_CANCEL, 0);
    if (m) m->watch_id = r->cancel_request->watch_id;
    break;
  case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST:
    m = new_req(call, WATCH_OP_PROGRESS, 0);
    break;
  default:
    break; /* etcd ignores an empty request */
  }
  etcdserverpb__watch_request__free_unpacked(r, NULL);
  if (m) push_req(s, m);
}

void watch_service_on_stream_end(server *s, net_loop *loop, net_call call, net_end_reason why) {
  (void)loop;
  if (why != NET_END_GONE) return;
  msg_watch_req *m = new_req(call, WATCH_OP_GONE, 0);
  if (m) push_req(s, m);
}

void watch_service_on_post(server *s, net_loop *loop, msg_watch_out *m) {
  (void)s;
  size_t off = 0;
  bool alive = true;
  while (alive && off + 4 <= m->len) {
    uint32_t l;
    memcpy(&l, m->buf + off, 4);
    off += 4;
    if (net_stream_send_counted(loop, m->call, m->buf + off, l) < 0) alive = false;
    off += l;
  }
  /* a dead stream counts as taken: its watchers go with its GONE */
  atomic_store(&m->fb->pending, alive ? net_stream_pending_bytes(loop, m->call) : 0);
  atomic_fetch_add(&m->fb->delivered, m->len);
  if (m->len == 0) atomic_fetch_add(&m->fb->probes_done, 1);
  if (m->loop_handled) atomic_fetch_add(m->loop_handled, 1);
  /* the stream counts what it holds now (net_stream_send_counted) */
  if (m->unsent) atomic_fetch_sub(m->unsent, (int64_t)m->len);
  watch_out_free(m);
}
