/*
 * h2.c -- gRPC calls over nghttp2 server sessions.
 *
 * A request stream becomes a call when its HEADERS end: the :path is looked
 * up in the method table and unknown or refused calls are answered at once
 * the way grpc-go (etcd's server) answers them, Trailers-Only. DATA is fed
 * to the stream's grpc_frame_dec; each whole message goes to on_message.
 *
 * Responses: the app's messages are framed into the stream's `out` buffer
 * and handed to nghttp2 by a data provider that reads from it (DEFERRED when
 * empty, resumed when the app adds more). The final status goes out as
 * trailers after the last DATA, or Trailers-Only when nothing was sent. Like
 * grpc-go, once our END_STREAM is sent on a stream the client has not closed,
 * an RST_STREAM(NO_ERROR) follows so the client stops sending.
 *
 * A request that is not gRPC (not POST + application/grpc) is plain HTTP
 * for on_http when the app has one: its headers and body are collected and
 * handed over at END_STREAM, and the net_http_* answers become HEADERS +
 * DATA with END_STREAM (no trailers).
 *
 * nghttp2 only serializes here; server.c pulls its output with
 * nghttp2_session_mem_send at the end of the turn (one write per connection).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/http1.h"
#include "net/net_internal.h"

enum {
  GRPC_OK = 0,
  GRPC_UNKNOWN = 2,
  GRPC_RESOURCE_EXHAUSTED = 8,
  GRPC_UNIMPLEMENTED = 12,
  GRPC_INTERNAL = 13,
  FREE_STREAMS_MAX = 1024,      /* recycled stream structs kept per loop */
  KEEP_BUF_BYTES = 64 * 1024    /* a recycled stream keeps buffers up to this */
};

#define MAKE_NV(n, v, vlen)                                                          \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE }

/* ---- stream structs ------------------------------------------------------ */

static net_stream *stream_new(net_conn *c, int32_t id) {
  net_loop *loop = c->loop;
  net_stream *s = loop->free_streams;
  if (s) {
    loop->free_streams = s->next_free;
    loop->n_free_streams--;
  } else {
    s = calloc(1, sizeof(*s));
    if (!s) return NULL;
  }
  grpc_frame_dec keep_dec = s->dec;
  net_buf keep_out = s->out, keep_meta = s->meta, keep_hdrs = s->hdrs, keep_body = s->body;
  memset(s, 0, sizeof(*s));
  s->meta = keep_meta;
  s->meta.len = s->meta.off = 0;
  s->hdrs = keep_hdrs;
  s->hdrs.len = s->hdrs.off = 0;
  s->body = keep_body;
  s->body.len = s->body.off = 0;
  s->dec = keep_dec;
  grpc_frame_dec_reset(&s->dec);
  s->dec.max_msg_bytes = loop->srv->cfg.max_recv_msg_bytes;
  s->out = keep_out;
  s->out.len = s->out.off = 0;
  s->conn = c;
  s->id = id;
  s->next = c->streams; /* the connection's list of live streams */
  if (c->streams) c->streams->prev = s;
  c->streams = s;
  return s;
}

static void stream_free_bufs(net_stream *s) {
  grpc_frame_dec_free(&s->dec);
  net_buf_free(&s->out);
  net_buf_free(&s->meta);
  net_buf_free(&s->hdrs);
  net_buf_free(&s->body);
}

static void stream_recycle(net_loop *loop, net_stream *s) {
  free(s->status_msg);
  s->status_msg = NULL;
  if (loop->n_free_streams >= FREE_STREAMS_MAX) {
    stream_free_bufs(s);
    free(s);
    return;
  }
  if (s->dec.cap > KEEP_BUF_BYTES) grpc_frame_dec_free(&s->dec);
  if (s->out.cap > KEEP_BUF_BYTES) net_buf_free(&s->out);
  if (s->meta.cap > KEEP_BUF_BYTES) net_buf_free(&s->meta);
  if (s->hdrs.cap > KEEP_BUF_BYTES) net_buf_free(&s->hdrs);
  if (s->body.cap > KEEP_BUF_BYTES) net_buf_free(&s->body);
  s->next_free = loop->free_streams;
  loop->free_streams = s;
  loop->n_free_streams++;
}

static net_call stream_call(const net_stream *s) {
  net_call call = {s->conn->loop->index, s->conn->slot, s->conn->gen, s->id};
  return call;
}

/* ---- sending ------------------------------------------------------------- */

static void submit_trailers_only(net_stream *s, int code, const char *enc_msg) {
  char cs[12];
  int cl = snprintf(cs, sizeof(cs), "%d", code);
  nghttp2_nv nva[4] = {MAKE_NV(":status", "200", 3),
                       MAKE_NV("content-type", "application/grpc", 16),
                       MAKE_NV("grpc-status", cs, (size_t)cl),
                       MAKE_NV("grpc-message", enc_msg ? enc_msg : "", enc_msg ? strlen(enc_msg) : 0)};
  nghttp2_submit_response(s->conn->h2, s->id, nva, enc_msg && enc_msg[0] ? 4 : 3, NULL);
  s->trailers_sent = true;
}

static void submit_trailers(net_stream *s) {
  char cs[12];
  int cl = snprintf(cs, sizeof(cs), "%d", s->status);
  const char *m = s->status_msg;
  nghttp2_nv nva[2] = {MAKE_NV("grpc-status", cs, (size_t)cl),
                       MAKE_NV("grpc-message", m ? m : "", m ? strlen(m) : 0)};
  nghttp2_submit_trailer(s->conn->h2, s->id, nva, m && m[0] ? 2 : 1);
  s->trailers_sent = true;
}

/* Zero-copy DATA: the provider only says how much; send_data_cb then
 * appends the frame header and the bytes straight from the stream's buffer
 * to the connection's output (one copy fewer than nghttp2's own framing). */
static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data) {
  (void)session, (void)stream_id, (void)buf, (void)user_data;
  net_stream *s = source->ptr;
  size_t avail = net_buf_pending(&s->out);
  size_t n = avail < length ? avail : length;
  if (n == avail && s->finished && s->http) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF; /* plain HTTP: END_STREAM, no trailers */
  } else if (n == avail && s->finished) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    submit_trailers(s);
  } else if (n == 0) {
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  if (n) *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  return (ssize_t)n;
}

static int send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data) {
  (void)session;
  net_conn *c = user_data;
  net_stream *s = source->ptr;
  size_t pad = frame->data.padlen;
  if (length > net_buf_pending(&s->out) || net_buf_reserve(&c->wbuf, 9 + pad + length) != 0) {
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  net_buf_append(&c->wbuf, framehd, 9);
  if (pad > 0) {
    uint8_t pl = (uint8_t)(pad - 1);
    net_buf_append(&c->wbuf, &pl, 1);
  }
  net_buf_append(&c->wbuf, s->out.p + s->out.off, length);
  net_buf_consume(&s->out, length);
  c->stream_out_bytes -= length;
  size_t counted = s->counted < length ? s->counted : length;
  s->counted -= counted, c->counted_wbuf += counted;
  /* A burst (a watch stream's backlog) grew it: give the memory back once
   * it drains rather than hold it for the stream's life. */
  if (!net_buf_pending(&s->out) && s->out.cap > KEEP_BUF_BYTES) net_buf_free(&s->out);
  if (pad > 1) {
    memset(c->wbuf.p + c->wbuf.len, 0, pad - 1);
    c->wbuf.len += pad - 1;
  }
  /* One mem_send call serializes every DATA frame the windows allow: with
   * a client's 16 MiB windows a connection's 100 watch streams moved their
   * whole backlog into wbuf (hundreds of MB at once, and its capacity stayed).
   * PAUSE ends the call here; net_h2_send stops at the cap and the rest
   * waits on its stream, where the app sees it (net_stream_pending_bytes). */
  if (net_buf_pending(&c->wbuf) >= c->loop->srv->cfg.max_conn_out_bytes) return NGHTTP2_ERR_PAUSE;
  return 0;
}

/* Starts the response (HEADERS + data provider) or wakes its provider. */
static void stream_kick(net_stream *s) {
  net_conn *c = s->conn;
  if (!s->resp_started) {
    nghttp2_nv nva[2] = {MAKE_NV(":status", "200", 3),
                         MAKE_NV("content-type", "application/grpc", 16)};
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read_cb};
    nghttp2_submit_response(c->h2, s->id, nva, 2, &prd);
    s->resp_started = true;
  } else if (s->deferred) {
    s->deferred = false;
    nghttp2_session_resume_data(c->h2, s->id);
  }
  net_conn_mark_dirty(c);
}

static int stream_append_msg(net_stream *s, const uint8_t *msg, size_t len) {
  uint8_t pfx[5];
  if (len > UINT32_MAX || net_buf_reserve(&s->out, 5 + len) != 0) return -1;
  grpc_frame_put_prefix(pfx, (uint32_t)len);
  net_buf_append(&s->out, pfx, 5);
  if (len) net_buf_append(&s->out, msg, len);
  s->conn->stream_out_bytes += 5 + len;
  return 0;
}

/* Sets the final status. Trailers-Only if no response started. */
static void stream_set_status(net_stream *s, int code, const char *message) {
  s->finished = true;
  s->status = code;
  free(s->status_msg);
  s->status_msg = NULL;
  if (message && message[0]) {
    size_t cap = strlen(message) * 3 + 1;
    s->status_msg = malloc(cap);
    if (s->status_msg) grpc_percent_encode(message, s->status_msg, cap);
  }
  if (!s->resp_started) {
    submit_trailers_only(s, code, s->status_msg);
    net_conn_mark_dirty(s->conn);
  } else {
    stream_kick(s);
  }
}

/* The transport ends a call on its own: tell the app, if it knows the call. */
static void stream_fail(net_stream *s, int code, const char *message) {
  net_server *srv = s->conn->loop->srv;
  stream_set_status(s, code, message);
  if (!s->delivered || s->app_gone) return; /* the app never saw this call */
  s->app_gone = true;
  net_call call = stream_call(s);
  if (s->m->kind == NET_UNARY) {
    if (srv->h.on_call_cancel) srv->h.on_call_cancel(srv->h.app, s->conn->loop, call, s->m->id);
  } else if (srv->h.on_stream_end) {
    srv->h.on_stream_end(srv->h.app, s->conn->loop, call, s->m->id, NET_END_GONE);
  }
}

/* ---- public reply API ---------------------------------------------------- */

static net_stream *call_stream(net_loop *loop, net_call call) {
  net_conn *c = net_conn_lookup(loop, call);
  if (!c || c->proto != CONN_H2 || call.stream_id <= 0) return NULL;
  net_stream *s = nghttp2_session_get_stream_user_data(c->h2, call.stream_id);
  if (!s || s->finished || !s->dispatched || s->http) return NULL;
  return s;
}

bool net_call_alive(net_loop *loop, net_call call) {
  if (call.stream_id == 0) {
    net_conn *c = net_conn_lookup(loop, call);
    return c && c->proto == CONN_HTTP1 && c->h1_busy;
  }
  return call_stream(loop, call) != NULL || net_h2_http_alive(loop, call);
}

const char *net_call_metadata(net_loop *loop, net_call call, const char *name, size_t *len) {
  net_stream *s = call_stream(loop, call);
  if (!s) return NULL;
  const net_config *cfg = &loop->srv->cfg;
  for (size_t i = 0; i < cfg->n_capture && i < NET_MAX_CAPTURE; i++) {
    if (strcmp(cfg->capture_headers[i], name) != 0) continue;
    if (!s->meta_off[i]) return NULL;
    if (len) *len = s->meta_len[i];
    return (const char *)s->meta.p + s->meta_off[i] - 1;
  }
  return NULL;
}

void net_reply(net_loop *loop, net_call call, const uint8_t *msg, size_t len) {
  net_stream *s = call_stream(loop, call);
  if (!s) return;
  s->app_gone = true;
  if (stream_append_msg(s, msg, len) != 0) {
    stream_set_status(s, GRPC_RESOURCE_EXHAUSTED, "grpc: out of memory");
    return;
  }
  s->finished = true;
  s->status = GRPC_OK;
  stream_kick(s);
}

void net_reply_error(net_loop *loop, net_call call, int grpc_code, const char *message) {
  net_stream *s = call_stream(loop, call);
  if (!s) return;
  s->app_gone = true;
  stream_set_status(s, grpc_code, message);
}

int net_stream_send(net_loop *loop, net_call call, const uint8_t *msg, size_t len) {
  net_stream *s = call_stream(loop, call);
  if (!s) return -1;
  if (stream_append_msg(s, msg, len) != 0) return -1;
  stream_kick(s);
  return 0;
}

int net_stream_send_counted(net_loop *loop, net_call call, const uint8_t *msg, size_t len) {
  net_stream *s = call_stream(loop, call);
  if (!s) return -1;
  if (stream_append_msg(s, msg, len) != 0) return -1;
  s->counted += 5 + len;
  net_count_out(loop->srv, (int64_t)(5 + len));
  stream_kick(s);
  return 0;
}

void net_stream_finish(net_loop *loop, net_call call, int grpc_code, const char *message) {
  net_reply_error(loop, call, grpc_code, message);
}

size_t net_stream_pending_bytes(net_loop *loop, net_call call) {
  net_stream *s = call_stream(loop, call);
  return s ? net_buf_pending(&s->out) : 0;
}

/* ---- plain HTTP over HTTP/2 (the gateway, curl --http2) ----------------- */

/* Request body: bounded by max_http1_body_bytes, 413 beyond. */
static void http_data(net_stream *s, const uint8_t *data, size_t len) {
  const net_server *srv = s->conn->loop->srv;
  if (net_buf_pending(&s->body) + len > srv->cfg.max_http1_body_bytes ||
      net_buf_append(&s->body, data, len) != 0) {
    s->delivered = true; /* answered here; the app never sees it */
    s->app_gone = true;
    static const char msg[] = "Payload Too Large\n";
    net_h2_http_reply(s->conn->loop, stream_call(s), 413, "text/plain; charset=utf-8", NULL, msg,
                      sizeof(msg) - 1);
  }
}

static void http_deliver(net_stream *s) {
  net_server *srv = s->conn->loop->srv;
  net_loop *loop = s->conn->loop;
  net_http_header hv[HTTP1_MAX_HEADERS];
  size_t n = 0;
  for (size_t off = 0; off < s->hdrs.len && n < HTTP1_MAX_HEADERS; n++) {
    const char *name = (const char *)s->hdrs.p + off;
    size_t nl = strlen(name);
    const char *value = name + nl + 1;
    size_t vl = strlen(value);
    hv[n] = (net_http_header){name, nl, value, vl};
    off += nl + vl + 2;
  }
  net_http_req r = {.call = stream_call(s), .method = s->method, .target = s->path,
                    .headers = hv, .n_headers = n, .body = s->body.p ? s->body.p : (const uint8_t *)"",
                    .body_len = net_buf_pending(&s->body), .keep_alive = true};
  s->delivered = true;
  srv->h.on_http(srv->h.app, loop, &r);
}

static net_stream *http_stream(net_loop *loop, net_call call) {
  net_conn *c = net_conn_lookup(loop, call);
  if (!c || c->proto != CONN_H2 || call.stream_id <= 0) return NULL;
  net_stream *s = nghttp2_session_get_stream_user_data(c->h2, call.stream_id);
  if (!s || !s->http || s->finished || !s->delivered) return NULL;
  return s;
}

/* HEADERS for an HTTP answer: extra_headers' "Name: value\r\n" lines get
 * lower-cased names, as HTTP/2 requires. */
static void http_submit_head(net_stream *s, int status, const char *content_type,
                             const char *extra_headers, const char *content_length) {
  enum { MAX_NV = 20 };
  nghttp2_nv nva[MAX_NV];
  char st[8], names[MAX_NV][64];
  size_t n = 0;
  snprintf(st, sizeof(st), "%d", status);
  nva[n++] = (nghttp2_nv)MAKE_NV(":status", st, strlen(st));
  const char *ct = content_type ? content_type : "text/plain";
  nva[n++] = (nghttp2_nv)MAKE_NV("content-type", ct, strlen(ct));
  if (content_length) nva[n++] = (nghttp2_nv)MAKE_NV("content-length", content_length, strlen(content_length));
  for (const char *p = extra_headers; p && *p && n < MAX_NV;) {
    const char *eol = strstr(p, "\r\n");
    const char *colon = strchr(p, ':');
    if (!eol || !colon || colon > eol || (size_t)(colon - p) >= sizeof(names[0])) break;
    size_t nl = (size_t)(colon - p);
    for (size_t i = 0; i < nl; i++) names[n][i] = (char)tolower((unsigned char)p[i]);
    const char *v = colon + 1;
    while (v < eol && *v == ' ') v++;
    nva[n] = (nghttp2_nv){(uint8_t *)names[n], (uint8_t *)v, nl, (size_t)(eol - v), NGHTTP2_NV_FLAG_NONE};
    n++;
    p = eol + 2;
  }
  nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read_cb};
  nghttp2_submit_response(s->conn->h2, s->id, nva, n, &prd);
  s->resp_started = true;
  net_conn_mark_dirty(s->conn);
}

void net_h2_http_reply(net_loop *loop, net_call call, int status, const char *content_type,
                       const char *extra_headers, const void *body, size_t len) {
  net_stream *s = http_stream(loop, call);
  if (!s || s->resp_started) return;
  bool head = strcmp(s->method, "HEAD") == 0;
  if (len && !head && net_buf_append(&s->out, body, len) != 0) {
    nghttp2_submit_rst_stream(s->conn->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    s->finished = true;
    return;
  }
  if (!head) s->conn->stream_out_bytes += len;
  char cl[24];
  snprintf(cl, sizeof(cl), "%zu", len);
  s->finished = true;
  s->app_gone = true;
  http_submit_head(s, status, content_type, extra_headers, cl);
}

int net_h2_http_stream_start(net_loop *loop, net_call call, int status, const char *content_type,
                             const char *extra_headers) {
  net_stream *s = http_stream(loop, call);
  if (!s || s->resp_started) return -1;
  http_submit_head(s, status, content_type, extra_headers, NULL);
  return 0;
}

int net_h2_http_stream_send(net_loop *loop, net_call call, const void *data, size_t len) {
  net_stream *s = http_stream(loop, call);
  if (!s || !s->resp_started) return -1;
  if (len == 0 || strcmp(s->method, "HEAD") == 0) return 0;
  if (net_buf_append(&s->out, data, len) != 0) return -1;
  s->conn->stream_out_bytes += len;
  stream_kick(s);
  return 0;
}

void net_h2_http_stream_end(net_loop *loop, net_call call) {
  net_stream *s = http_stream(loop, call);
  if (!s || !s->resp_started) return;
  s->finished = true;
  s->app_gone = true;
  stream_kick(s);
}

size_t net_h2_http_pending(net_loop *loop, net_call call) {
  net_stream *s = http_stream(loop, call);
  return s ? net_buf_pending(&s->out) : 0;
}

bool net_h2_http_alive(net_loop *loop, net_call call) { return http_stream(loop, call) != NULL; }

/* ---- receiving ----------------------------------------------------------- */

/* Go's %q for the bytes of a string, as grpc-go's messages use it. */
static void go_quote(const char *in, size_t n, char *out, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  out[o++] = '"';
  for (size_t i = 0; i < n && o + 6 < cap; i++) {
    unsigned char ch = (unsigned char)in[i];
    if (ch == '"' || ch == '\\') {
      out[o++] = '\\';
      out[o++] = (char)ch;
    } else if (ch == '\n' || ch == '\t' || ch == '\r') {
      out[o++] = '\\';
      out[o++] = ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
    } else if (ch < 0x20 || ch == 0x7f) {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[ch >> 4];
      out[o++] = hex[ch & 15];
    } else {
      out[o++] = (char)ch;
    }
  }
  out[o++] = '"';
  out[o] = '\0';
}

static bool service_listed(const net_server *srv, const char *svc, size_t n) {
  for (size_t i = 0; i < srv->cfg.n_unimplemented; i++) {
    const char *u = srv->cfg.unimplemented_services[i];
    if (strlen(u) == n && memcmp(u, svc, n) == 0) return true;
  }
  return false;
}

static bool service_known(const net_server *srv, const char *svc, size_t n) {
  for (uint32_t i = 0; i < srv->n_methods; i++) {
    const net_method_ent *m = &srv->methods[i];
    if (m->path_len > n + 1 && m->path[0] == '/' && memcmp(m->path + 1, svc, n) == 0 &&
        m->path[n + 1] == '/') {
      return true;
    }
  }
  return false;
}

/* The error for a path with no method, worded as grpc-go's handleStream. */
static void reject_path(net_stream *s) {
  const net_server *srv = s->conn->loop->srv;
  char msg[NET_PATH_MAX * 4 + 128];
  const char *sm = s->path;
  if (*sm == '/') sm++;
  const char *slash = strrchr(sm, '/');
  if (!slash) {
    char q[NET_PATH_MAX * 4 + 8];
    go_quote(s->path, s->path_len, q, sizeof(q));
    snprintf(msg, sizeof(msg), "malformed method name: %s", q);
    stream_set_status(s, GRPC_RESOURCE_EXHAUSTED, msg);
    return;
  }
  size_t svc_len = (size_t)(slash - sm);
  if (service_listed(srv, sm, svc_len)) {
    snprintf(msg, sizeof(msg), "method %s not implemented", slash + 1);
  } else if (service_known(srv, sm, svc_len)) {
    snprintf(msg, sizeof(msg), "unknown method %s for service %.*s", slash + 1, (int)svc_len, sm);
  } else {
    snprintf(msg, sizeof(msg), "unknown service %.*s", (int)svc_len, sm);
  }
  stream_set_status(s, GRPC_UNIMPLEMENTED, msg);
}

/* Request headers complete: route the call. */
static void stream_dispatch(net_stream *s) {
  const net_server *srv = s->conn->loop->srv;
  if ((!s->post || !s->grpc_ct) && srv->h.on_http) {
    s->http = true; /* plain HTTP (the JSON gateway): body, then on_http */
    return;
  }
  if (!s->post || !s->grpc_ct) {
    /* grpc-go's transport refuses these with RST_STREAM(PROTOCOL_ERROR). */
    s->finished = true;
    nghttp2_submit_rst_stream(s->conn->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
    net_conn_mark_dirty(s->conn);
    return;
  }
  s->m = net_method_find(srv, s->path, s->path_len);
  if (!s->m) {
    reject_path(s);
    return;
  }
  if (s->encoding[0] && strcmp(s->encoding, "identity") != 0) {
    char msg[160];
    snprintf(msg, sizeof(msg), "grpc: Decompressor is not installed for grpc-encoding \"%s\"", s->encoding);
    stream_set_status(s, GRPC_UNIMPLEMENTED, msg);
    return;
  }
  s->dispatched = true;
}

static void stream_decode_error(net_stream *s, grpc_dec_status st) {
  char msg[128];
  switch (st) {
  case GRPC_DEC_ERR_TOO_LARGE:
    snprintf(msg, sizeof(msg), "grpc: received message larger than max (%u vs. %zu)",
             s->dec.err_len, s->dec.max_msg_bytes);
    stream_fail(s, GRPC_RESOURCE_EXHAUSTED, msg);
    break;
  case GRPC_DEC_ERR_COMPRESSED:
    stream_fail(s, GRPC_INTERNAL, "grpc: compressed flag set with identity or empty encoding");
    break;
  case GRPC_DEC_ERR_FORMAT:
    snprintf(msg, sizeof(msg), "grpc: received unexpected payload format %u", s->dec.err_len);
    stream_fail(s, GRPC_INTERNAL, msg);
    break;
  default:
    stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "grpc: out of memory");
    break;
  }
}

static void stream_data(net_stream *s, const uint8_t *data, size_t len) {
  net_server *srv = s->conn->loop->srv;
  bool single = s->m->kind == NET_UNARY || s->m->kind == NET_SERVER_STREAM;
  while (len > 0 && !s->finished && !(single && s->delivered)) {
    size_t used;
    const uint8_t *msg;
    size_t mlen;
    grpc_dec_status st = grpc_frame_dec_feed(&s->dec, data, len, &used, &msg, &mlen);
    data += used;
    len -= used;
    if (st == GRPC_DEC_NEED_MORE) return;
    if (st != GRPC_DEC_MSG) {
      stream_decode_error(s, st);
      return;
    }
    s->delivered = true;
    if (srv->h.on_message) {
      srv->h.on_message(srv->h.app, s->conn->loop, stream_call(s), s->m->id, msg, mlen);
    }
  }
}

/* END_STREAM from the client. */
static void stream_remote_close(net_stream *s) {
  net_server *srv = s->conn->loop->srv;
  s->remote_closed = true;
  if (s->http) {
    if (!s->finished && !s->delivered) http_deliver(s);
    return;
  }
  if (!s->dispatched || s->finished) return;
  bool partial = grpc_frame_dec_partial(&s->dec) != 0;
  switch (s->m->kind) {
  case NET_UNARY: /* grpc-go: status.Convert(io.EOF / io.ErrUnexpectedEOF) */
    if (!s->delivered) stream_fail(s, GRPC_UNKNOWN, partial ? "unexpected EOF" : "EOF");
    break;
  case NET_SERVER_STREAM: /* RecvMsg's io.EOF returned by the handler; toRPCErr */
    if (!s->delivered) {
      stream_fail(s, partial ? GRPC_INTERNAL : GRPC_UNKNOWN, partial ? "unexpected EOF" : "EOF");
    }
    break;
  default:
    if (partial) {
      stream_fail(s, GRPC_INTERNAL, "unexpected EOF");
    } else if (!s->delivered) {
      /* Closed before any message: the app never saw the call. etcd's
       * stream handlers (Watch, LeaseKeepAlive) return nil on io.EOF. */
      stream_set_status(s, GRPC_OK, NULL);
    } else if (srv->h.on_stream_end && !s->app_gone) {
      srv->h.on_stream_end(srv->h.app, s->conn->loop, stream_call(s), s->m->id, NET_END_HALF_CLOSE);
    }
    break;
  }
}

/* ---- nghttp2 callbacks --------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  net_conn *c = ud;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  net_stream *s = stream_new(c, frame->hd.stream_id);
  if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
  return 0;
}

static bool name_is(const uint8_t *name, size_t len, const char *lit) {
  return len == strlen(lit) && memcmp(name, lit, len) == 0;
}

/* Keeps the first value of a configured metadata header. */
static void capture_header(net_stream *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                           size_t valuelen) {
  const net_config *cfg = &s->conn->loop->srv->cfg;
  for (size_t i = 0; i < cfg->n_capture && i < NET_MAX_CAPTURE; i++) {
    if (s->meta_off[i] || !name_is(name, namelen, cfg->capture_headers[i])) continue;
    if (net_buf_reserve(&s->meta, valuelen + 1) != 0) return;
    s->meta_off[i] = (uint32_t)s->meta.len + 1;
    s->meta_len[i] = (uint32_t)valuelen;
    net_buf_append(&s->meta, value, valuelen);
    net_buf_append(&s->meta, "", 1);
    return;
  }
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud) {
  (void)flags, (void)ud;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  net_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!s) return 0;
  s->hdr_bytes += namelen + valuelen + 32; /* RFC 7541 section 4.1 entry size */
  if (s->hdr_bytes > NET_H2_MAX_HEADER_LIST) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (name_is(name, namelen, ":path")) {
    size_t n = valuelen < NET_PATH_MAX - 1 ? valuelen : NET_PATH_MAX - 1;
    memcpy(s->path, value, n);
    s->path[n] = '\0';
    s->path_len = n;
  } else if (name_is(name, namelen, ":method")) {
    s->post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    size_t n = valuelen < sizeof(s->method) - 1 ? valuelen : sizeof(s->method) - 1;
    memcpy(s->method, value, n);
    s->method[n] = '\0';
  } else if (name_is(name, namelen, "content-type")) {
    /* grpc-go: "application/grpc" optionally followed by '+' or ';' */
    s->grpc_ct = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                 (valuelen == 16 || value[16] == '+' || value[16] == ';');
  } else if (name_is(name, namelen, "grpc-encoding")) {
    size_t n = valuelen < sizeof(s->encoding) - 1 ? valuelen : sizeof(s->encoding) - 1;
    memcpy(s->encoding, value, n);
    s->encoding[n] = '\0';
  } else {
    capture_header(s, name, namelen, value, valuelen);
  }
  /* Kept for a plain HTTP request; gRPC clients send content-type first,
   * so gRPC calls skip the copy. */
  if (name[0] != ':' && !s->grpc_ct && net_buf_reserve(&s->hdrs, namelen + valuelen + 2) == 0) {
    net_buf_append(&s->hdrs, name, namelen);
    net_buf_append(&s->hdrs, "", 1);
    net_buf_append(&s->hdrs, value, valuelen);
    net_buf_append(&s->hdrs, "", 1);
  }
  return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  (void)ud;
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  net_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!s) return 0;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    stream_dispatch(s);
  }
  if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) stream_remote_close(s);
  return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud) {
  (void)flags, (void)ud;
  net_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
  if (s && s->http && !s->finished && !s->delivered) {
    http_data(s, data, len);
  } else if (s && s->dispatched && !s->finished) {
    stream_data(s, data, len);
  }
  return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  (void)ud;
  if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
      !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    return 0;
  }
  net_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (s && !s->remote_closed) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *ud) {
  (void)error_code;
  net_conn *c = ud;
  net_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
  if (!s) return 0;
  nghttp2_session_set_stream_user_data(session, stream_id, NULL);
  if (s->prev) s->prev->next = s->next; else c->streams = s->next;
  if (s->next) s->next->prev = s->prev;
  c->stream_out_bytes -= net_buf_pending(&s->out);
  net_count_out(c->loop->srv, -(int64_t)s->counted);
  s->counted = 0;
  if (s->delivered && !s->app_gone) {
    s->finished = true; /* replies from the callback are dropped */
    s->app_gone = true;
    net_server *srv = c->loop->srv;
    net_call call = stream_call(s);
    if (s->http) {
      if (srv->h.on_http_cancel) srv->h.on_http_cancel(srv->h.app, c->loop, call);
    } else if (s->m->kind == NET_UNARY) {
      if (srv->h.on_call_cancel) srv->h.on_call_cancel(srv->h.app, c->loop, call, s->m->id);
    } else if (srv->h.on_stream_end) {
      srv->h.on_stream_end(srv->h.app, c->loop, call, s->m->id, NET_END_GONE);
    }
  }
  stream_recycle(c->loop, s);
  return 0;
}

/* ---- sessions ------------------------------------------------------------ */

int net_h2_loop_init(net_loop *loop) {
  if (nghttp2_session_callbacks_new(&loop->h2cbs) != 0) return -1;
  nghttp2_session_callbacks *cb = loop->h2cbs;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_session_callbacks_set_send_data_callback(cb, send_data_cb);
  if (nghttp2_option_new(&loop->h2opt) != 0) return -1;
  /* Our SETTINGS limit is enforced from the first stream, before the ACK. */
  nghttp2_option_set_max_settings(loop->h2opt, 64);
  return 0;
}

void net_h2_loop_free(net_loop *loop) {
  if (loop->h2cbs) nghttp2_session_callbacks_del(loop->h2cbs);
  if (loop->h2opt) nghttp2_option_del(loop->h2opt);
  loop->h2cbs = NULL;
  loop->h2opt = NULL;
  while (loop->free_streams) {
    net_stream *s = loop->free_streams;
    loop->free_streams = s->next_free;
    stream_free_bufs(s);
    free(s);
  }
  loop->n_free_streams = 0;
}

int net_h2_conn_init(net_conn *c) {
  net_server *srv = c->loop->srv;
  if (nghttp2_session_server_new2(&c->h2, c->loop->h2cbs, c, c->loop->h2opt) != 0) return -1;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->cfg.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, NET_H2_STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, NET_H2_MAX_HEADER_LIST},
  };
  if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
      nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, NET_H2_CONN_WINDOW) != 0) {
    return -1;
  }
  return 0;
}

int net_h2_recv(net_conn *c, const uint8_t *data, size_t len) {
  ssize_t rv = nghttp2_session_mem_recv(c->h2, data, len);
  if (rv < 0) {
    /* Bad preface or an unrecoverable error: nghttp2 has queued a GOAWAY
     * where it could; send what is queued, then close. */
    nghttp2_session_terminate_session(c->h2, NGHTTP2_PROTOCOL_ERROR);
    c->close_after_write = true;
  }
  net_conn_mark_dirty(c);
  return 0;
}

int net_h2_send(net_conn *c) {
  size_t cap = c->loop->srv->cfg.max_conn_out_bytes;
  while (net_buf_pending(&c->wbuf) < cap) {
    const uint8_t *p;
    ssize_t n = nghttp2_session_mem_send(c->h2, &p);
    if (n < 0) return -1;
    if (n == 0) break;
    if (net_buf_append(&c->wbuf, p, (size_t)n) != 0) return -1;
  }
  if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) return -1;
  return 0;
}

void net_h2_conn_free(net_conn *c) {
  if (!c->h2) return;
  /* nghttp2_session_del does not call on_stream_close; do it ourselves so
   * the app hears about every live call. */
  nghttp2_session *h2 = c->h2;
  while (c->streams) on_stream_close(h2, c->streams->id, NGHTTP2_CANCEL, c);
  nghttp2_session_del(h2);
  c->h2 = NULL;
  c->stream_out_bytes = 0;
}
