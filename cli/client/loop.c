/*
 * loop.c -- the client's event loop: epoll, non-blocking sockets, one
 * nghttp2 client session per connection.
 *
 * A turn (cc_loop_run_once) is: wait for I/O; read each readable socket (at
 * most CC_READS_PER_TURN reads, so one busy connection cannot starve the
 * others) and feed nghttp2; deliver completions and stream messages (call.c)
 * so that callbacks may submit new calls; then flush every dirty connection:
 * gather nghttp2's pending frames (up to CC_WBUF_MAX) into the connection's
 * buffer and send(2) once. A partial write leaves the rest in the buffer
 * and arms EPOLLOUT; a connection that still has frames to send after its
 * write stays dirty and the next turn polls instead of sleeping.
 *
 * nghttp2's callbacks only record what happened on the call (headers, data,
 * close) and queue the call on loop->ready; no user code runs inside them.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/client/client_int.h"

/* HTTP/2 receive windows. Big enough that flow control never paces a bench:
 * a stream may receive 16 MiB and a connection 1 GiB before the server has
 * to wait for a WINDOW_UPDATE (nghttp2 sends those automatically). */
#define CC_STREAM_WINDOW (16 << 20)
#define CC_CONN_WINDOW (1 << 30)

cc_loop *cc_loop_new(void) {
  cc_loop *loop = calloc(1, sizeof *loop);
  if (!loop) return NULL;
  loop->rbuf = malloc(CC_RBUF_BYTES);
  loop->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (!loop->rbuf || loop->epfd < 0) {
    if (loop->epfd >= 0) close(loop->epfd);
    free(loop->rbuf);
    free(loop);
    return NULL;
  }
  return loop;
}

static void call_free_list(cc_call *c) {
  while (c) {
    cc_call *next = c->next;
    cc_buf_free(&c->out);
    cc_buf_free(&c->in);
    free(c);
    c = next;
  }
}

void cc_loop_free(cc_loop *loop) {
  if (!loop) return;
  cc_conn *conn = loop->conns;
  while (conn) {
    cc_conn *next = conn->all_next;
    if (conn->h2) nghttp2_session_del(conn->h2);
    cc_tls_free(conn);
    if (conn->fd >= 0) close(conn->fd);
    call_free_list(conn->calls);
    cc_buf_free(&conn->wbuf);
    free(conn);
    conn = next;
  }
  /* Calls waiting on the ready list are on their connection's list too. */
  call_free_list(loop->free_calls);
  close(loop->epfd);
  free(loop->rbuf);
  free(loop);
}

size_t cc_loop_inflight(const cc_loop *loop) { return loop->inflight; }

int cc_conn_ok(const cc_conn *conn) { return cc_conn_state(conn) != CC_CONN_FAILED; }

int cc_conn_state(const cc_conn *conn) {
  if (conn->failed || !nghttp2_session_check_request_allowed(conn->h2)) return CC_CONN_FAILED;
  return conn->connecting ? CC_CONN_CONNECTING : CC_CONN_READY;
}

void cc_conn_mark_dirty(cc_conn *conn) {
  if (conn->dirty || conn->failed) return;
  conn->dirty = 1;
  conn->dirty_next = conn->loop->dirty;
  conn->loop->dirty = conn;
}

static void conn_set_events(cc_conn *conn, uint32_t events) {
  if (conn->events == events || conn->fd < 0) return;
  struct epoll_event ev = {.events = events, .data.ptr = conn};
  if (epoll_ctl(conn->loop->epfd, EPOLL_CTL_MOD, conn->fd, &ev) == 0) conn->events = events;
}

/* Fails every call of the connection with `status` and closes it for good. */
void cc_conn_fail(cc_conn *conn, int status, const char *msg) {
  if (conn->failed) return;
  conn->failed = 1;
  conn->fail_status = status;
  snprintf(conn->fail_msg, sizeof conn->fail_msg, "%s", msg);
  for (cc_call *c = conn->calls; c; c = c->next) cc_call_fail(c, status, msg);
  cc_tls_free(conn);
  if (conn->fd >= 0) {
    epoll_ctl(conn->loop->epfd, EPOLL_CTL_DEL, conn->fd, NULL);
    close(conn->fd);
    conn->fd = -1;
  }
  if (conn->h2) {
    nghttp2_session_del(conn->h2);
    conn->h2 = NULL;
  }
}

void cc_conn_close(cc_conn *conn) { cc_conn_fail(conn, CC_STATUS_CANCELLED, "connection closed"); }

/* ---- nghttp2 callbacks: record, never call user code ----------------------- */

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
  (void)flags;
  (void)ud;
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  cc_call *c = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
  if (!c) return 0;
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    c->http_status = atoi((const char *)value);
  } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    int v = 0;
    for (size_t i = 0; i < valuelen && value[i] >= '0' && value[i] <= '9'; i++)
      v = v * 10 + (value[i] - '0');
    c->grpc_status = v;
  } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    cc_grpc_percent_decode(value, valuelen, c->msg, sizeof c->msg);
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud) {
  (void)flags;
  (void)ud;
  cc_call *c = nghttp2_session_get_stream_user_data(s, stream_id);
  if (!c) return 0;
  if (c->in.len + len > CC_GRPC_MSG_MAX + CC_GRPC_PREFIX_BYTES) {
    c->local_status = CC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(c->msg, sizeof c->msg, "received message larger than max (%u)", CC_GRPC_MSG_MAX);
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
    return 0;
  }
  if (cc_buf_append(&c->in, data, len) != 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
  if (c->is_stream) cc_call_ready(c);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud) {
  (void)ud;
  cc_call *c = nghttp2_session_get_stream_user_data(s, stream_id);
  if (!c) return 0;
  c->closed = 1;
  c->rst_code = error_code;
  cc_call_ready(c);
  return 0;
}

static int session_new(cc_conn *conn) {
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0) return -1;
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  int rv = nghttp2_session_client_new(&conn->h2, cbs, conn);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) return -1;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, CC_STREAM_WINDOW},
  };
  if (nghttp2_submit_settings(conn->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0) return -1;
  if (nghttp2_session_set_local_window_size(conn->h2, NGHTTP2_FLAG_NONE, 0, CC_CONN_WINDOW) != 0)
    return -1;
  return 0;
}

/* ---- connecting ------------------------------------------------------------- */

enum { SCHEME_NONE, SCHEME_HTTP, SCHEME_HTTPS };

/* Splits "http[s]://host:port[/]" or "host:port" (IPv6 as "[addr]:port").
 * Returns the scheme, or -1. */
static int parse_endpoint(const char *ep, char *host, size_t host_len, char *port,
                          size_t port_len, char *err, size_t err_len) {
  int scheme = SCHEME_NONE;
  if (strncmp(ep, "https://", 8) == 0) {
    scheme = SCHEME_HTTPS;
    ep += 8;
  } else if (strncmp(ep, "http://", 7) == 0) {
    scheme = SCHEME_HTTP;
    ep += 7;
  }
  const char *colon;
  const char *h = ep;
  size_t hl;
  if (*ep == '[') {
    const char *close_br = strchr(ep, ']');
    if (!close_br || close_br[1] != ':') goto bad;
    h = ep + 1;
    hl = (size_t)(close_br - h);
    colon = close_br + 1;
  } else {
    colon = strrchr(ep, ':');
    if (!colon) goto bad;
    hl = (size_t)(colon - ep);
  }
  size_t pl = strcspn(colon + 1, "/");
  if (hl == 0 || hl >= host_len || pl == 0 || pl >= port_len) goto bad;
  memcpy(host, h, hl);
  host[hl] = '\0';
  memcpy(port, colon + 1, pl);
  port[pl] = '\0';
  return scheme;
bad:
  snprintf(err, err_len, "%s: endpoint must be http[s]://host:port or host:port", ep);
  return -1;
}

static int socket_connect(const char *host, const char *port, char *err, size_t err_len) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int rv = getaddrinfo(host, port, &hints, &res);
  if (rv != 0) {
    snprintf(err, err_len, "%s:%s: %s", host, port, gai_strerror(rv));
    return -1;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, err_len, "socket: %s", strerror(errno));
    freeaddrinfo(res);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) {
    snprintf(err, err_len, "connect %s:%s: %s", host, port, strerror(errno));
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

cc_conn *cc_conn_open(cc_loop *loop, const char *endpoint, char *err, size_t err_len) {
  return cc_conn_open_tls(loop, endpoint, NULL, err, err_len);
}

cc_conn *cc_conn_open_tls(cc_loop *loop, const char *endpoint, const cc_tls_opts *tls,
                          char *err, size_t err_len) {
  static const cc_tls_opts tls_default = {0};
  char host[256], port[16], scratch[8];
  if (!err) {
    err = scratch;
    err_len = sizeof scratch;
  }
  int scheme = parse_endpoint(endpoint, host, sizeof host, port, sizeof port, err, err_len);
  if (scheme < 0) return NULL;
  int use_tls = scheme == SCHEME_HTTPS || (scheme == SCHEME_NONE && tls);
  int fd = socket_connect(host, port, err, err_len);
  if (fd < 0) return NULL;
  cc_conn *conn = calloc(1, sizeof *conn);
  if (!conn || session_new(conn) != 0) {
    snprintf(err, err_len, "out of memory");
    goto fail;
  }
  conn->loop = loop;
  conn->fd = fd;
  if (use_tls && cc_tls_setup(conn, tls ? tls : &tls_default, host, err, err_len) != 0)
    goto fail;
  conn->connecting = 1;
  snprintf(conn->authority, sizeof conn->authority, "%s:%s", host, port);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = conn};
  if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    snprintf(err, err_len, "epoll_ctl: %s", strerror(errno));
    goto fail;
  }
  conn->events = ev.events;
  conn->all_next = loop->conns;
  loop->conns = conn;
  cc_conn_mark_dirty(conn); /* the preface and SETTINGS */
  return conn;
fail:
  if (conn && conn->h2) nghttp2_session_del(conn->h2);
  if (conn) cc_tls_free(conn);
  free(conn);
  close(fd);
  return NULL;
}

/* ---- I/O ------------------------------------------------------------------------ */

/* Fails the connection after a read or write error (errno). */
static void conn_fail_errno(cc_conn *conn) {
  char msg[sizeof conn->tls_err + 32];
  if (errno == EPROTO && conn->ssl && conn->tls_err[0])
    snprintf(msg, sizeof msg, "connection error: %s", conn->tls_err);
  else
    snprintf(msg, sizeof msg, "connection error: %s", strerror(errno));
  cc_conn_fail(conn, CC_STATUS_UNAVAILABLE, msg);
}

/* Drives the TLS handshake; the connection is up when it completes. */
static void conn_tls_step(cc_conn *conn) {
  char msg[300];
  uint32_t events = 0;
  int rv = cc_tls_handshake(conn, &events, msg, sizeof msg);
  if (rv < 0) {
    cc_conn_fail(conn, CC_STATUS_UNAVAILABLE, msg);
  } else if (rv == 0) {
    conn_set_events(conn, events);
  } else {
    conn->handshaking = 0;
    conn->connecting = 0;
    conn_set_events(conn, EPOLLIN);
    cc_conn_mark_dirty(conn);
  }
}

static void conn_finish_connect(cc_conn *conn) {
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
  if (soerr != 0) {
    char msg[128];
    snprintf(msg, sizeof msg, "connection error: %s", strerror(soerr));
    cc_conn_fail(conn, CC_STATUS_UNAVAILABLE, msg);
    return;
  }
  if (conn->ssl) {
    conn->handshaking = 1;
    conn_tls_step(conn);
    return;
  }
  conn->connecting = 0;
  conn_set_events(conn, EPOLLIN);
  cc_conn_mark_dirty(conn);
}

static void conn_read(cc_conn *conn) {
  cc_loop *loop = conn->loop;
  for (int i = 0; !conn->failed; i++) {
    /* Bytes OpenSSL already holds get no epoll wakeup: read them now. */
    if (i >= CC_READS_PER_TURN && !(conn->ssl && cc_tls_has_pending(conn))) break;
    ssize_t n = conn->ssl ? cc_tls_read(conn, loop->rbuf, CC_RBUF_BYTES)
                          : read(conn->fd, loop->rbuf, CC_RBUF_BYTES);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      conn_fail_errno(conn);
      return;
    }
    if (n == 0) {
      cc_conn_fail(conn, CC_STATUS_UNAVAILABLE, "connection closed by the server");
      return;
    }
    ssize_t rv = nghttp2_session_mem_recv(conn->h2, loop->rbuf, (size_t)n);
    if (rv < 0) {
      char msg[128];
      snprintf(msg, sizeof msg, "http2: %s", nghttp2_strerror((int)rv));
      cc_conn_fail(conn, CC_STATUS_UNAVAILABLE, msg);
      return;
    }
    /* A short read drained the socket; with TLS, SSL_read returns one
     * record at a time, so only EAGAIN says the socket is empty. */
    if ((size_t)n < CC_RBUF_BYTES && !conn->ssl) break;
  }
  if (nghttp2_session_want_write(conn->h2)) cc_conn_mark_dirty(conn);
}

/* Gathers frames from nghttp2 and writes once. Returns 1 if the connection
 * still has frames to send (stay dirty), else 0. */
static int conn_flush(cc_conn *conn) {
  cc_buf *w = &conn->wbuf;
  if (conn->wbuf_off > 0) {
    memmove(w->p, w->p + conn->wbuf_off, w->len - conn->wbuf_off);
    w->len -= conn->wbuf_off;
    conn->wbuf_off = 0;
  }
  while (w->len < CC_WBUF_MAX) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(conn->h2, &data);
    if (n < 0) {
      cc_conn_fail(conn, CC_STATUS_UNAVAILABLE, nghttp2_strerror((int)n));
      return 0;
    }
    if (n == 0) break;
    if (cc_buf_append(w, data, (size_t)n) != 0) {
      cc_conn_fail(conn, CC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return 0;
    }
  }
  if (w->len == 0) return 0;
  /* send(MSG_NOSIGNAL): a peer that went away must give EPIPE, not kill
   * the process with SIGPIPE. */
  ssize_t n = conn->ssl ? cc_tls_write(conn, w->p, w->len)
                        : send(conn->fd, w->p, w->len, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      conn_fail_errno(conn);
      return 0;
    }
    n = 0;
  }
  conn->wbuf_off = (size_t)n;
  if (conn->wbuf_off == w->len) {
    w->len = conn->wbuf_off = 0;
    conn_set_events(conn, EPOLLIN);
    return nghttp2_session_want_write(conn->h2) ? 1 : 0;
  }
  conn_set_events(conn, EPOLLIN | EPOLLOUT); /* the kernel buffer is full */
  return 0;
}

static void loop_flush_dirty(cc_loop *loop) {
  cc_conn *list = loop->dirty;
  loop->dirty = NULL;
  while (list) {
    cc_conn *conn = list;
    list = conn->dirty_next;
    conn->dirty = 0;
    if (conn->failed) continue;
    if (conn->connecting) {
      cc_conn_mark_dirty(conn); /* write once connected */
      continue;
    }
    if (conn_flush(conn)) cc_conn_mark_dirty(conn);
  }
}

/* True when every dirty connection is only waiting for its connect. */
static int loop_has_work(const cc_loop *loop) {
  if (loop->ready) return 1;
  for (const cc_conn *c = loop->dirty; c; c = c->dirty_next)
    if (!c->connecting && !c->failed) return 1;
  return 0;
}

int cc_loop_run_once(cc_loop *loop, int timeout_ms) {
  struct epoll_event evs[256];
  int n = epoll_wait(loop->epfd, evs, 256, loop_has_work(loop) ? 0 : timeout_ms);
  if (n < 0 && errno != EINTR) return -1;
  for (int i = 0; i < n; i++) {
    cc_conn *conn = evs[i].data.ptr;
    uint32_t e = evs[i].events;
    if (conn->failed) continue;
    if (conn->connecting) {
      if (conn->handshaking) conn_tls_step(conn);
      else if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) conn_finish_connect(conn);
      continue;
    }
    if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) conn_read(conn);
    if ((e & EPOLLOUT) && !conn->failed) cc_conn_mark_dirty(conn);
  }
  int delivered = cc_loop_deliver(loop);
  loop_flush_dirty(loop);
  return delivered;
}
