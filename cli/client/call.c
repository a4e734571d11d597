/*
 * call.c -- unary calls and bidirectional streams on top of loop.c.
 *
 * A call is an HTTP/2 stream: HEADERS (POST path, content-type
 * application/grpc, te: trailers), DATA carrying length-prefixed messages
 * taken from the call's `out` buffer by nghttp2's data provider, and on the
 * way back HEADERS, DATA and trailers (grpc-status, grpc-message).
 *
 * Life of a call: taken from the loop's pool (cc_call_get), submitted, put on
 * loop->ready by nghttp2's callbacks when data arrives (streams) or when the
 * stream closes, delivered by cc_loop_deliver outside nghttp2, and returned to
 * the pool with its buffers kept for the next call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/client/client_int.h"

/* ---- pool -------------------------------------------------------------------- */

cc_call *cc_call_get(cc_loop *loop, cc_conn *conn) {
  cc_call *c = loop->free_calls;
  if (c) {
    loop->free_calls = c->next;
  } else {
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
  }
  cc_buf out = c->out, in = c->in;
  memset(c, 0, sizeof *c);
  c->out = out;
  c->in = in;
  c->out.len = c->in.len = 0;
  c->loop = loop;
  c->conn = conn;
  c->grpc_status = -1;
  c->local_status = -1;
  c->next = conn->calls;
  if (conn->calls) conn->calls->prev = c;
  conn->calls = c;
  loop->inflight++;
  return c;
}

static void call_put(cc_call *c) {
  cc_conn *conn = c->conn;
  if (c->prev) c->prev->next = c->next;
  else conn->calls = c->next;
  if (c->next) c->next->prev = c->prev;
  c->loop->inflight--;
  /* Do not let one huge response pin memory in the pool forever. */
  if (c->in.cap > (1u << 20)) cc_buf_free(&c->in);
  if (c->out.cap > (1u << 20)) cc_buf_free(&c->out);
  c->prev = NULL;
  c->next = c->loop->free_calls;
  c->loop->free_calls = c;
}

void cc_call_ready(cc_call *c) {
  if (c->on_ready) return;
  c->on_ready = 1;
  c->ready_next = NULL;
  cc_loop *loop = c->loop;
  if (loop->ready_tail) loop->ready_tail->ready_next = c;
  else loop->ready = c;
  loop->ready_tail = c;
}

void cc_call_fail(cc_call *c, int status, const char *msg) {
  if (c->closed) return;
  c->closed = 1;
  c->local_status = status;
  snprintf(c->msg, sizeof c->msg, "%s", msg);
  cc_call_ready(c);
}

/* ---- sending ------------------------------------------------------------------- */

static ssize_t data_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud) {
  (void)s;
  (void)stream_id;
  (void)ud;
  cc_call *c = src->ptr;
  size_t avail = c->out.len - c->out_off;
  if (avail == 0 && !c->send_eof) {
    c->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = avail < length ? avail : length;
  memcpy(buf, c->out.p + c->out_off, n);
  c->out_off += n;
  if (c->out_off == c->out.len) {
    c->out.len = c->out_off = 0;
    if (c->send_eof) *flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

#define NV(n, v) \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME }

int cc_call_submit(cc_call *c, const char *path) {
  cc_conn *conn = c->conn;
  if (conn->failed) {
    cc_call_fail(c, conn->fail_status, conn->fail_msg);
    return 0;
  }
  /* After the server's GOAWAY (or when stream ids run out) nghttp2 would
   * refuse the stream only when sending; say why now. */
  if (!nghttp2_session_check_request_allowed(conn->h2)) {
    cc_call_fail(c, CC_STATUS_UNAVAILABLE, "the server is closing this connection (GOAWAY)");
    return 0;
  }
  nghttp2_nv nva[] = {
      NV(":method", "POST"),         NV(":scheme", "http"),
      NV(":path", path),             NV(":authority", conn->authority),
      NV("content-type", "application/grpc"), NV("te", "trailers"),
      NV("user-agent", "cetcd-client/0.1"),
  };
  nghttp2_data_provider prd = {.source.ptr = c, .read_callback = data_read};
  int32_t id = nghttp2_submit_request(conn->h2, NULL, nva, sizeof nva / sizeof nva[0], &prd, c);
  if (id < 0) {
    cc_call_fail(c, CC_STATUS_UNAVAILABLE, nghttp2_strerror(id));
    return 0;
  }
  c->stream_id = id;
  cc_conn_mark_dirty(conn);
  return 0;
}

/* Appends one framed message to the call's output buffer. */
static int call_queue_msg(cc_call *c, const ProtobufCMessage *msg, const void *raw, size_t len) {
  if (msg) len = protobuf_c_message_get_packed_size(msg);
  if (len > CC_GRPC_MSG_MAX) return -1;
  if (cc_buf_reserve(&c->out, CC_GRPC_PREFIX_BYTES + len) != 0) return -1;
  uint8_t *dst = c->out.p + c->out.len;
  cc_grpc_put_prefix(dst, (uint32_t)len);
  if (msg) protobuf_c_message_pack(msg, dst + CC_GRPC_PREFIX_BYTES);
  else if (len) memcpy(dst + CC_GRPC_PREFIX_BYTES, raw, len);
  c->out.len += CC_GRPC_PREFIX_BYTES + len;
  return 0;
}

static cc_call *unary_start(cc_conn *conn, const char *path, const ProtobufCMessage *req,
                            const void *raw, size_t len, cc_unary_cb cb, void *ud) {
  cc_call *c = cc_call_get(conn->loop, conn);
  if (!c) return NULL;
  if (call_queue_msg(c, req, raw, len) != 0) {
    call_put(c);
    return NULL;
  }
  c->unary_cb = cb;
  c->ud = ud;
  c->send_eof = 1;
  cc_call_submit(c, path);
  return c;
}

int cc_unary(cc_conn *conn, const char *path, const ProtobufCMessage *req, cc_unary_cb cb,
             void *ud) {
  return unary_start(conn, path, req, NULL, 0, cb, ud) ? 0 : -1;
}

int cc_unary_raw(cc_conn *conn, const char *path, const void *req, size_t len, cc_unary_cb cb,
                 void *ud) {
  return unary_start(conn, path, NULL, req, len, cb, ud) ? 0 : -1;
}

/* ---- streams ------------------------------------------------------------------------ */

cc_stream *cc_stream_open(cc_conn *conn, const char *path, cc_stream_msg_cb on_msg,
                          cc_stream_close_cb on_close, void *ud) {
  cc_call *c = cc_call_get(conn->loop, conn);
  if (!c) return NULL;
  c->is_stream = 1;
  c->msg_cb = on_msg;
  c->close_cb = on_close;
  c->ud = ud;
  cc_call_submit(c, path);
  return c;
}

static void stream_kick(cc_call *c) {
  if (c->deferred && c->conn->h2 && c->stream_id > 0) {
    c->deferred = 0;
    nghttp2_session_resume_data(c->conn->h2, c->stream_id);
  }
  cc_conn_mark_dirty(c->conn);
}

static int stream_send(cc_stream *st, const ProtobufCMessage *msg, const void *raw, size_t len) {
  if (st->closed || st->send_eof) return -1;
  if (call_queue_msg(st, msg, raw, len) != 0) return -1;
  stream_kick(st);
  return 0;
}

int cc_stream_send(cc_stream *st, const ProtobufCMessage *msg) {
  return stream_send(st, msg, NULL, 0);
}

int cc_stream_send_raw(cc_stream *st, const void *msg, size_t len) {
  return stream_send(st, NULL, msg, len);
}

int cc_stream_close_send(cc_stream *st) {
  if (st->closed || st->send_eof) return -1;
  st->send_eof = 1;
  stream_kick(st);
  return 0;
}

void cc_stream_cancel(cc_stream *st) {
  if (st->closed || st->cancelled) return;
  st->cancelled = 1;
  if (st->conn->h2 && st->stream_id > 0) {
    nghttp2_submit_rst_stream(st->conn->h2, NGHTTP2_FLAG_NONE, st->stream_id, NGHTTP2_CANCEL);
    cc_conn_mark_dirty(st->conn);
  } else {
    cc_call_fail(st, CC_STATUS_CANCELLED, "canceled by the client");
  }
}

/* ---- delivery ----------------------------------------------------------------------- */

/* The final status of a closed call, from trailers or from how it ended. */
static int call_status(cc_call *c) {
  if (c->local_status >= 0) return c->local_status;
  if (c->cancelled) {
    snprintf(c->msg, sizeof c->msg, "canceled by the client");
    return CC_STATUS_CANCELLED;
  }
  if (c->grpc_status >= 0) return c->grpc_status;
  if (c->rst_code != 0) {
    snprintf(c->msg, sizeof c->msg, "stream reset by the server: %s",
             nghttp2_http2_strerror(c->rst_code));
    return c->rst_code == NGHTTP2_REFUSED_STREAM ? CC_STATUS_UNAVAILABLE : CC_STATUS_INTERNAL;
  }
  if (c->http_status != 0 && c->http_status != 200) {
    snprintf(c->msg, sizeof c->msg, "unexpected HTTP status %d", c->http_status);
    /* grpc's mapping of HTTP statuses (doc/http-grpc-status-mapping.md) */
    switch (c->http_status) {
    case 400: return CC_STATUS_INTERNAL;
    case 401: return 16;
    case 403: return 7;
    case 404: return CC_STATUS_UNIMPLEMENTED;
    case 429: case 502: case 503: case 504: return CC_STATUS_UNAVAILABLE;
    default: return CC_STATUS_UNKNOWN;
    }
  }
  snprintf(c->msg, sizeof c->msg, "server closed the stream without sending trailers");
  return CC_STATUS_INTERNAL;
}

/* Delivers the complete messages a stream has received. Returns the count. */
static int stream_deliver_msgs(cc_call *c) {
  int n = 0;
  size_t off = 0;
  for (;;) {
    const uint8_t *m;
    size_t mlen, used;
    int rv = cc_grpc_next_msg(c->in.p + off, c->in.len - off, &m, &mlen, &used);
    if (rv == 0) break;
    if (rv < 0) {
      cc_stream_cancel(c);
      c->local_status = CC_STATUS_INTERNAL;
      snprintf(c->msg, sizeof c->msg, "malformed or compressed gRPC message");
      break;
    }
    off += used;
    n++;
    if (c->msg_cb && !c->cancelled) c->msg_cb(c->ud, m, mlen);
  }
  if (off > 0) {
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
  }
  return n;
}

static void unary_complete(cc_call *c) {
  cc_reply r = {.status = call_status(c), .message = c->msg};
  if (r.status == CC_STATUS_OK) {
    size_t used;
    int rv = cc_grpc_next_msg(c->in.p, c->in.len, &r.data, &r.len, &used);
    if (rv != 1) {
      r.status = CC_STATUS_INTERNAL;
      r.data = NULL;
      r.len = 0;
      snprintf(c->msg, sizeof c->msg, "%s",
               rv == 0 ? "no response message" : "malformed or compressed gRPC message");
    }
  }
  if (c->unary_cb) c->unary_cb(c->ud, &r);
}

int cc_loop_deliver(cc_loop *loop) {
  /* Only the calls ready now: a callback that starts a call which fails at
   * once must not make this loop spin. */
  cc_call *list = loop->ready;
  loop->ready = loop->ready_tail = NULL;
  int n = 0;
  while (list) {
    cc_call *c = list;
    list = c->ready_next;
    c->on_ready = 0;
    if (c->is_stream) n += stream_deliver_msgs(c);
    if (!c->closed) continue;
    if (c->is_stream) {
      cc_reply r = {.status = call_status(c), .message = c->msg};
      if (c->close_cb) c->close_cb(c->ud, &r);
    } else {
      unary_complete(c);
    }
    n++;
    /* The stream is gone from nghttp2 (closed or session deleted). */
    call_put(c);
  }
  return n;
}

/* ---- blocking convenience ------------------------------------------------------------ */

typedef struct sync_result {
  int done;
  int status;
  ProtobufCMessage *resp;
  const ProtobufCMessageDescriptor *desc;
  char *msg_buf;
  size_t msg_buf_len;
} sync_result;

static void sync_cb(void *ud, const cc_reply *r) {
  sync_result *s = ud;
  s->done = 1;
  s->status = r->status;
  if (s->msg_buf && s->msg_buf_len) snprintf(s->msg_buf, s->msg_buf_len, "%s", r->message);
  if (r->status != CC_STATUS_OK || !s->desc) return;
  s->resp = protobuf_c_message_unpack(s->desc, NULL, r->len, r->data);
  if (!s->resp) {
    s->status = CC_STATUS_INTERNAL;
    if (s->msg_buf && s->msg_buf_len)
      snprintf(s->msg_buf, s->msg_buf_len, "cannot decode the response message");
  }
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cc_unary_sync(cc_conn *conn, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out,
                  int timeout_ms, char *msg_buf, size_t msg_buf_len) {
  sync_result s = {.desc = resp_desc, .msg_buf = msg_buf, .msg_buf_len = msg_buf_len};
  if (resp_out) *resp_out = NULL;
  if (msg_buf && msg_buf_len) msg_buf[0] = '\0';
  cc_call *c = unary_start(conn, path, req, NULL, 0, sync_cb, &s);
  if (!c) {
    if (msg_buf && msg_buf_len) snprintf(msg_buf, msg_buf_len, "out of memory");
    return CC_STATUS_RESOURCE_EXHAUSTED;
  }
  int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
  while (!s.done) {
    int wait = 100;
    if (deadline) {
      int64_t left = deadline - now_ms();
      if (left <= 0) {
        /* Abandon the call: it is reset and recycled without a callback. */
        c->unary_cb = NULL;
        c->cancelled = 1;
        if (conn->h2 && c->stream_id > 0 && !c->closed) {
          nghttp2_submit_rst_stream(conn->h2, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL);
          cc_conn_mark_dirty(conn);
        }
        if (msg_buf && msg_buf_len) snprintf(msg_buf, msg_buf_len, "context deadline exceeded");
        return CC_STATUS_DEADLINE_EXCEEDED;
      }
      if (left < wait) wait = (int)left;
    }
    if (cc_loop_run_once(conn->loop, wait) < 0) break;
  }
  if (!s.done) return CC_STATUS_INTERNAL;
  if (resp_out) *resp_out = s.resp;
  else if (s.resp) protobuf_c_message_free_unpacked(s.resp, NULL);
  return s.status;
}

const char *cc_status_name(int status) {
  static const char *names[] = {
      "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
      "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
      "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
  };
  if (status < 0 || status >= (int)(sizeof names / sizeof names[0])) return "Unknown";
  return names[status];
}
