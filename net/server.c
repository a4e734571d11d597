/*
 * server.c -- the net actor's event loops: sockets, connections, HTTP/1.1,
 * the mailbox, and the turn-batched flush.
 *
 * DESIGN
 *   N loop threads, each with its own epoll set, its own listening socket per
 *   address (SO_REUSEPORT: the kernel spreads accepted connections across
 *   loops, no acceptor thread and no fd hand-off), its own connection slots
 *   and its own mailbox (msg/mailbox.h) for net_post(). A loop never touches
 *   another loop's state.
 *
 *   One turn: epoll_wait; accept on listeners; read each readable connection
 *   (up to NET_READS_PER_TURN chunks of NET_READ_CHUNK bytes, then it waits for
 *   the next turn so one busy client cannot starve the others), feeding
 *   nghttp2 or the HTTP/1.1 parser, which call the app; drain the mailbox
 *   (on_post); on_turn_end; then for every connection marked dirty during the
 *   turn, serialize nghttp2's output into the connection's buffer and write it
 *   with one write(). Closing is deferred to that flush too, so a connection
 *   never disappears under a callback that is still using it.
 *
 *   Backpressure: while a connection's serialized output that the socket
 *   has not taken reaches max_conn_out_bytes, or while an HTTP/1.1 request
 *   waits for its reply, EPOLLIN is off for it: the client is not read until
 *   it reads. Bytes queued on streams behind HTTP/2 flow control do not
 *   count (reading must go on for the client's WINDOW_UPDATEs to arrive);
 *   the app watches those with net_stream_pending_bytes().
 *
 *   The loop sleeps in epoll_wait only after announcing it to its mailbox
 *   (mailbox_prepare_sleep), so a post never goes unnoticed and a busy loop
 *   pays no eventfd write per post.
 */
#define _GNU_SOURCE
#include "net/server.h"

#include <errno.h>
#include <sched.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/http1.h"
#include "net/net_internal.h"
#include "net/tls.h"

static const char H2_PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
enum { H2_PREFACE_LEN = 24 };

/* epoll user data: kind in the high 32 bits, index in the low. */
enum { EV_MAILBOX = 1, EV_LISTEN = 2, EV_CONN = 3 };
#define EV_DATA(kind, idx) (((uint64_t)(kind) << 32) | (uint32_t)(idx))

/* ---- buffers ------------------------------------------------------------- */

int net_buf_reserve(net_buf *b, size_t extra) {
  if (b->off > 0 && b->off == b->len) b->off = b->len = 0;
  if (b->len + extra <= b->cap) return 0;
  if (b->off > 0 && b->off >= b->cap / 2) { /* compact before growing */
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
    if (b->len + extra <= b->cap) return 0;
  }
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra) cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

int net_buf_append(net_buf *b, const void *data, size_t n) {
  if (net_buf_reserve(b, n) != 0) return -1;
  memcpy(b->p + b->len, data, n);
  b->len += n;
  return 0;
}

void net_buf_consume(net_buf *b, size_t n) {
  b->off += n;
  if (b->off >= b->len) b->off = b->len = 0;
}

void net_buf_free(net_buf *b) {
  free(b->p);
  memset(b, 0, sizeof(*b));
}

/* ---- listen addresses ---------------------------------------------------- */

static int split_host_port(const char *addr, char *host, size_t host_len, char *port,
                           size_t port_len) {
  const char *colon;
  if (addr[0] == '[') {
    const char *rb = strchr(addr, ']');
    if (!rb || rb[1] != ':') return -1;
    if ((size_t)(rb - addr - 1) >= host_len) return -1;
    memcpy(host, addr + 1, (size_t)(rb - addr - 1));
    host[rb - addr - 1] = '\0';
    colon = rb + 1;
  } else {
    colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= host_len) return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
  }
  if (strlen(colon + 1) == 0 || strlen(colon + 1) >= port_len) return -1;
  strcpy(port, colon + 1);
  return 0;
}

/* Go's wording ("listen tcp 127.0.0.1:2379: bind: address already in use"),
 * which etcd prints when it cannot listen. */
static void listen_error(char *err, size_t err_len, const char *addr, const char *op, int e) {
  char msg[128];
  snprintf(msg, sizeof(msg), "%s", strerror(e));
  if (msg[0] >= 'A' && msg[0] <= 'Z') msg[0] = (char)(msg[0] - 'A' + 'a');
  snprintf(err, err_len, "listen tcp %s: %s: %s", addr, op, msg);
}

/* Binds one socket; *port is the wanted port (0 = any) and receives the
 * bound one so every loop shares it. The probe (reuseport false, no listen)
 * runs first: with SO_REUSEPORT alone, a port another process holds the
 * same way would be shared silently instead of failing as etcd's does. */
static int listen_one(const char *addr, uint16_t *port, bool reuseport, char *err, size_t err_len) {
  char host[256], ports[16];
  if (split_host_port(addr, host, sizeof(host), ports, sizeof(ports)) != 0) {
    snprintf(err, err_len, "net: bad listen address %s", addr);
    return -1;
  }
  if (*port) snprintf(ports, sizeof(ports), "%u", (unsigned)*port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(host[0] ? host : NULL, ports, &hints, &res);
  if (rc != 0) {
    snprintf(err, err_len, "listen tcp %s: %s", addr, gai_strerror(rc));
    return -1;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  const char *op = "socket";
  if (fd >= 0) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    op = "bind";
  }
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
      (reuseport && (op = "listen", listen(fd, 1024) != 0))) {
    listen_error(err, err_len, addr, op, errno);
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return -1;
  }
  freeaddrinfo(res);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET) *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) *port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  return fd;
}

/* ---- connections --------------------------------------------------------- */

static ssize_t plain_read(net_conn *c, void *buf, size_t len) { return read(c->fd, buf, len); }
static ssize_t plain_write(net_conn *c, const void *buf, size_t len) {
  return send(c->fd, buf, len, MSG_NOSIGNAL);
}
static const net_io_ops net_io_plain = {plain_read, plain_write};

/* The loop this thread runs, if any: net_post to one's own loop must not wait. */
static __thread net_loop *tl_loop;

static void conn_set_events(net_conn *c) {
  net_server *s = c->loop->srv;
  /* Only output the socket refused counts: bytes queued on streams wait for
   * the client's WINDOW_UPDATEs, which arrive only if we keep reading. */
  bool pause = c->h1_busy || c->close_after_write ||
               net_buf_pending(&c->wbuf) >= s->cfg.max_conn_out_bytes;
  bool out = net_buf_pending(&c->wbuf) > 0 || c->more_out;
  if (!pause && net_tls_pending(c) > 0) { /* epoll cannot see these bytes */
    c->reread = true;
    net_conn_mark_dirty(c);
  }
  if (pause == c->reading_paused && out == c->want_out) return;
  /* EPOLLRDHUP even while paused: a client that hangs up on a pending
   * HTTP/1.1 request is noticed (on_http_cancel). */
  struct epoll_event ev = {.events = (pause ? 0u : (uint32_t)EPOLLIN) | (out ? (uint32_t)EPOLLOUT : 0u) |
                                     (uint32_t)EPOLLRDHUP,
                           .data.u64 = EV_DATA(EV_CONN, c->slot)};
  epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev);
  c->reading_paused = pause;
  c->want_out = out;
}

void net_conn_mark_dirty(net_conn *c) {
  if (c->dirty) return;
  c->dirty = true;
  c->next_dirty = c->loop->dirty;
  c->loop->dirty = c;
}

void net_conn_close(net_conn *c) {
  c->closing = true;
  net_conn_mark_dirty(c);
}

net_conn *net_conn_lookup(net_loop *loop, net_call call) {
  if (call.loop != loop->index || call.conn_slot >= loop->n_slots) return NULL;
  net_conn *c = &loop->conns[call.conn_slot];
  if (c->proto == CONN_FREE || c->gen != call.conn_gen || c->closing) return NULL;
  return c;
}

static void conn_uncount(net_conn *c);

static void conn_teardown(net_conn *c) {
  net_loop *loop = c->loop;
  c->closing = true; /* replies from teardown callbacks are dropped */
  if (c->proto == CONN_H2) net_h2_conn_free(c);
  if (c->proto == CONN_HTTP1 && c->h1_busy && loop->srv->h.on_http_cancel) {
    net_call call = {loop->index, c->slot, c->gen, 0};
    loop->srv->h.on_http_cancel(loop->srv->h.app, loop, call);
  }
  c->h1_busy = c->h1_streaming = false;
  net_tls_conn_free(c);
  c->reread = false;
  epoll_ctl(loop->epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  /* Keep small buffers for the slot's next tenant; drop big ones. */
  if (c->wbuf.cap > 256 * 1024) net_buf_free(&c->wbuf);
  if (c->rbuf.cap > 64 * 1024) net_buf_free(&c->rbuf);
  c->wbuf.len = c->wbuf.off = 0;
  c->rbuf.len = c->rbuf.off = 0;
  conn_uncount(c);
  c->proto = CONN_FREE;
  c->gen++;
  loop->free_slots[loop->n_free++] = c->slot;
}

/* Out of fds: stop watching the listeners for NET_ACCEPT_PAUSE_MS rather
 * than spin on a socket that stays readable (the backlog waits in the
 * kernel meanwhile). */
static void loop_pause_accept(net_loop *loop) {
  if (loop->accept_paused) return;
  for (size_t i = 0; i < loop->srv->cfg.n_listen; i++) {
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, loop->lfds[i], NULL);
  }
  loop->accept_paused = true;
}

static void loop_resume_accept(net_loop *loop) {
  for (size_t i = 0; i < loop->srv->cfg.n_listen; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV_DATA(EV_LISTEN, i)};
    epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->lfds[i], &ev);
  }
  loop->accept_paused = false;
}

static void loop_accept(net_loop *loop, int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        loop_pause_accept(loop); /* level-triggered: would spin otherwise */
      }
      return;
    }
    if (loop->n_free == 0) { /* the connection limit */
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    net_conn *c = &loop->conns[loop->free_slots[--loop->n_free]];
    c->fd = fd;
    c->io = &net_io_plain;
    c->ssl = NULL;
    c->reread = false;
    c->proto = CONN_DETECT;
    c->h1_head = c->h1_continue_sent = false;
    c->h2 = NULL;
    c->streams = NULL;
    c->stream_out_bytes = 0;
    c->dirty = c->want_out = c->more_out = c->reading_paused = false;
    c->close_after_write = c->closing = c->h1_busy = false;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = EV_DATA(EV_CONN, c->slot)};
    if ((loop->srv->tls_ctx && net_tls_conn_init(c, loop->srv->tls_ctx) != 0) ||
        epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      net_tls_conn_free(c);
      close(fd);
      c->fd = -1;
      c->proto = CONN_FREE;
      loop->free_slots[loop->n_free++] = c->slot;
    }
  }
}

/* ---- HTTP/1.1 ------------------------------------------------------------ */

static void h1_error(net_conn *c, int status) {
  char head[256];
  const char *reason = http1_reason(status);
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Connection: close\r\nContent-Length: %zu\r\n\r\n%s\n",
                   status, reason, strlen(reason) + 1, reason);
  net_buf_append(&c->wbuf, head, (size_t)n);
  c->close_after_write = true;
  net_conn_mark_dirty(c);
}

static void h1_process(net_conn *c) {
  net_server *s = c->loop->srv;
  http1_req *req = c->loop->h1req;
  while (!c->h1_busy && !c->close_after_write && !c->closing && net_buf_pending(&c->rbuf) > 0) {
    http1_status st = http1_parse(c->rbuf.p + c->rbuf.off, net_buf_pending(&c->rbuf),
                                  s->cfg.max_http1_body_bytes, req);
    if (st == HTTP1_NEED_MORE) {
      /* Like Go's net/http: curl waits for this before sending a body. */
      if (req->expect_continue && !c->h1_continue_sent) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        net_buf_append(&c->wbuf, cont, sizeof(cont) - 1);
        c->h1_continue_sent = true;
        net_conn_mark_dirty(c);
      }
      break;
    }
    if (st != HTTP1_OK) {
      h1_error(c, -(int)st);
      break;
    }
    net_http_req r = {
        .call = {c->loop->index, c->slot, c->gen, 0},
        .method = req->method, .target = req->target,
        .headers = req->headers, .n_headers = req->n_headers,
        .body = req->body, .body_len = req->body_len, .keep_alive = req->keep_alive};
    c->h1_busy = true;
    c->h1_keep_alive = req->keep_alive;
    c->h1_head = strcmp(req->method, "HEAD") == 0;
    c->h1_continue_sent = false;
    if (s->h.on_http) {
      s->h.on_http(s->h.app, c->loop, &r);
    } else {
      net_http_reply(c->loop, r.call, 404, "text/plain; charset=utf-8", NULL, "404 page not found\n", 19);
    }
    net_buf_consume(&c->rbuf, req->consumed);
  }
}

/* The HTTP/1.1 connection whose request `call` is, if it awaits an answer. */
static net_conn *h1_conn(net_loop *loop, net_call call) {
  net_conn *c = net_conn_lookup(loop, call);
  if (!c || c->proto != CONN_HTTP1 || call.stream_id != 0 || !c->h1_busy) return NULL;
  return c;
}

static int h1_head(net_conn *c, int status, const char *content_type, const char *extra_headers,
                   const char *framing, size_t body_room) {
  char head[512];
  int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s", status,
                   http1_reason(status), content_type ? content_type : "text/plain", framing,
                   c->h1_keep_alive ? "" : "Connection: close\r\n");
  if (n < 0 || (size_t)n >= sizeof(head)) return -1;
  size_t extra = extra_headers ? strlen(extra_headers) : 0;
  if (net_buf_reserve(&c->wbuf, (size_t)n + extra + 2 + body_room) != 0) return -1;
  net_buf_append(&c->wbuf, head, (size_t)n);
  if (extra) net_buf_append(&c->wbuf, extra_headers, extra);
  net_buf_append(&c->wbuf, "\r\n", 2);
  net_conn_mark_dirty(c);
  return 0;
}

/* The answer is complete: the next request may be parsed. */
static void h1_done(net_conn *c) {
  c->h1_busy = false;
  c->h1_streaming = false;
  if (!c->h1_keep_alive) c->close_after_write = true;
  net_conn_mark_dirty(c);
}

void net_http_reply(net_loop *loop, net_call call, int status, const char *content_type,
                    const char *extra_headers, const void *body, size_t len) {
  if (call.stream_id != 0) {
    net_h2_http_reply(loop, call, status, content_type, extra_headers, body, len);
    return;
  }
  net_conn *c = h1_conn(loop, call);
  if (!c || c->h1_streaming) return;
  char cl[48];
  snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", len);
  if (h1_head(c, status, content_type, extra_headers, cl, len) != 0) {
    net_conn_close(c);
    return;
  }
  if (len && !c->h1_head) net_buf_append(&c->wbuf, body, len);
  h1_done(c);
}

int net_http_stream_start(net_loop *loop, net_call call, int status, const char *content_type,
                          const char *extra_headers) {
  if (call.stream_id != 0) return net_h2_http_stream_start(loop, call, status, content_type, extra_headers);
  net_conn *c = h1_conn(loop, call);
  if (!c || c->h1_streaming) return -1;
  if (h1_head(c, status, content_type, extra_headers, "Transfer-Encoding: chunked\r\n", 0) != 0) {
    net_conn_close(c);
    return -1;
  }
  c->h1_streaming = true;
  return 0;
}

int net_http_stream_send(net_loop *loop, net_call call, const void *data, size_t len) {
  if (call.stream_id != 0) return net_h2_http_stream_send(loop, call, data, len);
  net_conn *c = h1_conn(loop, call);
  if (!c || !c->h1_streaming) return -1;
  if (len == 0 || c->h1_head) return 0; /* an empty chunk would end the body */
  char size[24];
  int n = snprintf(size, sizeof(size), "%zx\r\n", len);
  if (net_buf_reserve(&c->wbuf, (size_t)n + len + 2) != 0) {
    net_conn_close(c);
    return -1;
  }
  net_buf_append(&c->wbuf, size, (size_t)n);
  net_buf_append(&c->wbuf, data, len);
  net_buf_append(&c->wbuf, "\r\n", 2);
  net_conn_mark_dirty(c);
  return 0;
}

void net_http_stream_end(net_loop *loop, net_call call) {
  if (call.stream_id != 0) {
    net_h2_http_stream_end(loop, call);
    return;
  }
  net_conn *c = h1_conn(loop, call);
  if (!c || !c->h1_streaming) return;
  if (!c->h1_head) net_buf_append(&c->wbuf, "0\r\n\r\n", 5);
  h1_done(c);
}

size_t net_http_pending_bytes(net_loop *loop, net_call call) {
  if (call.stream_id != 0) return net_h2_http_pending(loop, call);
  net_conn *c = h1_conn(loop, call);
  return c ? net_buf_pending(&c->wbuf) : 0;
}

/* ---- input --------------------------------------------------------------- */

/* First bytes: the HTTP/2 client preface means h2c, anything else HTTP/1.1. */
static int conn_detect(net_conn *c, const uint8_t *data, size_t len) {
  if (net_buf_append(&c->rbuf, data, len) != 0) return -1;
  size_t have = net_buf_pending(&c->rbuf);
  size_t cmp = have < H2_PREFACE_LEN ? have : H2_PREFACE_LEN;
  if (memcmp(c->rbuf.p + c->rbuf.off, H2_PREFACE, cmp) == 0) {
    if (have < H2_PREFACE_LEN) return 0;
    c->proto = CONN_H2;
    if (net_h2_conn_init(c) != 0) return -1;
    int rc = net_h2_recv(c, c->rbuf.p + c->rbuf.off, have);
    c->rbuf.len = c->rbuf.off = 0;
    return rc;
  }
  c->proto = CONN_HTTP1;
  h1_process(c);
  return 0;
}

static int conn_input(net_conn *c, const uint8_t *data, size_t len) {
  net_server *s = c->loop->srv;
  switch (c->proto) {
  case CONN_DETECT:
    return conn_detect(c, data, len);
  case CONN_H2:
    return net_h2_recv(c, data, len);
  case CONN_HTTP1:
    if (net_buf_pending(&c->rbuf) + len > HTTP1_MAX_HEAD_BYTES + s->cfg.max_http1_body_bytes) {
      h1_error(c, 413);
      return 0;
    }
    if (net_buf_append(&c->rbuf, data, len) != 0) return -1;
    h1_process(c);
    return 0;
  default:
    return -1;
  }
}

static void conn_readable(net_conn *c) {
  net_loop *loop = c->loop;
  for (int i = 0; i < NET_READS_PER_TURN && !c->closing && !c->close_after_write; i++) {
    ssize_t n = c->io->read(c, loop->rdbuf, NET_READ_CHUNK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      net_conn_close(c);
      return;
    }
    if (n < 0) return;
    net_conn_mark_dirty(c);
    if (conn_input(c, loop->rdbuf, (size_t)n) != 0) {
      net_conn_close(c);
      return;
    }
    if ((size_t)n < NET_READ_CHUNK) return;
  }
}

/* ---- output -------------------------------------------------------------- */

/* Counted bytes (net_stream_send_counted) in wbuf mix with others, and the
 * socket takes wbuf in order: no more of them than wbuf holds can be left.
 * An upper bound, exact once wbuf is empty. */
static void conn_uncount(net_conn *c) {
  size_t left = net_buf_pending(&c->wbuf);
  if (c->counted_wbuf <= left) return;
  net_count_out(c->loop->srv, -(int64_t)(c->counted_wbuf - left));
  c->counted_wbuf = left;
}

/* Writes what is buffered; returns -1 on a dead socket. */
static int conn_write(net_conn *c) {
  int rc = 0;
  while (net_buf_pending(&c->wbuf) > 0) {
    ssize_t n = c->io->write(c, c->wbuf.p + c->wbuf.off, net_buf_pending(&c->wbuf));
    if (n < 0) {
      if (errno == EINTR) continue;
      rc = errno == EAGAIN ? 0 : -1;
      break;
    }
    net_buf_consume(&c->wbuf, (size_t)n);
  }
  conn_uncount(c);
  return rc;
}

static void conn_flush(net_conn *c) {
  if (!c->closing && c->proto == CONN_HTTP1 && !c->h1_busy && !c->close_after_write) {
    h1_process(c); /* requests that arrived while the previous one was answered */
  }
  /* A few rounds: nghttp2's output is capped per round by max_conn_out_bytes. */
  int round = 0;
  bool produced = false;
  for (; round < 8 && !c->closing; round++) {
    if (c->proto == CONN_H2 && net_h2_send(c) != 0) c->close_after_write = true;
    produced = net_buf_pending(&c->wbuf) > 0;
    if (conn_write(c) != 0) {
      c->closing = true;
      break;
    }
    if (net_buf_pending(&c->wbuf) > 0 || c->proto != CONN_H2 ||
        !nghttp2_session_want_write(c->h2) || c->close_after_write) {
      break;
    }
  }
  /* The rounds ran out while the socket took everything and nghttp2 has
   * more: EPOLLOUT (at once, the socket is writable) brings the next turn,
   * after the loop's other work. Nothing else might ever mark c dirty. */
  c->more_out = round == 8 && produced;
  if (!c->closing && c->close_after_write && net_buf_pending(&c->wbuf) == 0) c->closing = true;
  if (c->closing) {
    conn_teardown(c);
    return;
  }
  conn_set_events(c);
}

static void loop_flush(net_loop *loop) {
  while (loop->dirty) {
    net_conn *list = loop->dirty;
    loop->dirty = NULL;
    while (list) {
      net_conn *c = list;
      list = c->next_dirty;
      c->dirty = false;
      if (c->proto == CONN_FREE) continue;
      if (c->reread && !c->closing && !c->reading_paused) {
        c->reread = false;
        conn_readable(c);
      }
      conn_flush(c);
    }
    /* Teardown callbacks and h1 resumption may have dirtied more; the loop
     * repeats so nothing waits for the next epoll wake-up. */
  }
}

/* ---- the loop ------------------------------------------------------------ */

static void loop_drain_mailbox(net_loop *loop, unsigned max) {
  net_server *s = loop->srv;
  void *m;
  for (unsigned i = 0; i < max && (m = mailbox_pop(&loop->mb)) != NULL; i++) {
    if (s->h.on_post) {
      s->h.on_post(s->h.app, loop, m);
    } else {
      free(m);
    }
  }
}

static void loop_handle(net_loop *loop, const struct epoll_event *ev) {
  uint32_t kind = (uint32_t)(ev->data.u64 >> 32), idx = (uint32_t)ev->data.u64;
  if (kind == EV_MAILBOX) {
    uint64_t v;
    ssize_t n = read(mailbox_fd(&loop->mb), &v, sizeof(v));
    (void)n;
  } else if (kind == EV_LISTEN) {
    loop_accept(loop, loop->lfds[idx]);
  } else if (kind == EV_CONN && idx < loop->n_slots) {
    net_conn *c = &loop->conns[idx];
    if (c->proto == CONN_FREE || c->closing) return;
    if (ev->events & EPOLLOUT) net_conn_mark_dirty(c);
    if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) conn_readable(c);
  }
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* epoll timeout when idle: forever, or until the next tick / accept retry. */
static int loop_idle_timeout(net_loop *loop) {
  int timeout = loop->accept_paused ? NET_ACCEPT_PAUSE_MS : -1;
  if (loop->srv->cfg.tick_ms && loop->srv->h.on_tick) {
    uint64_t now = now_ns();
    uint64_t left = loop->next_tick_ns > now ? loop->next_tick_ns - now : 0;
    int ms = (int)((left + 999999) / 1000000);
    if (timeout < 0 || ms < timeout) timeout = ms;
  }
  return timeout;
}

static void loop_tick(net_loop *loop) {
  net_server *s = loop->srv;
  if (!s->cfg.tick_ms || !s->h.on_tick) return;
  uint64_t now = now_ns();
  if (now < loop->next_tick_ns) return;
  loop->next_tick_ns = now + (uint64_t)s->cfg.tick_ms * 1000000u;
  s->h.on_tick(s->h.app, loop);
}

static void *loop_main(void *arg) {
  net_loop *loop = arg;
  net_server *s = loop->srv;
  struct epoll_event evs[NET_EPOLL_EVENTS];
  tl_loop = loop;
  char name[16];
  snprintf(name, sizeof(name), "net%u", loop->index);
  prctl(PR_SET_NAME, name); /* for top -H, perf sched */
  loop->next_tick_ns = now_ns() + (uint64_t)s->cfg.tick_ms * 1000000u;
  if (s->h.on_loop_start) s->h.on_loop_start(s->h.app, loop, loop->index);
  while (!__atomic_load_n(&s->loops_exit, __ATOMIC_ACQUIRE)) {
    bool slept = false;
    int timeout = 0;
    if (!loop->dirty && mailbox_prepare_sleep(&loop->mb)) {
      slept = true;
      timeout = loop_idle_timeout(loop);
    }
    int n = epoll_wait(loop->epfd, evs, NET_EPOLL_EVENTS, timeout);
    if (slept) mailbox_wake_done(&loop->mb, false); /* loop_handle clears the fd on EV_MAILBOX */
    if (loop->accept_paused && (n == 0 || loop->n_free > 0)) loop_resume_accept(loop);
    for (int i = 0; i < n; i++) loop_handle(loop, &evs[i]);
    loop_drain_mailbox(loop, 65536);
    loop_tick(loop);
    if (s->h.on_turn_end) s->h.on_turn_end(s->h.app, loop);
    loop_flush(loop);
  }
  for (uint32_t i = 0; i < loop->n_slots; i++) {
    net_conn *c = &loop->conns[i];
    if (c->proto == CONN_FREE) continue;
    if (c->proto == CONN_H2 && c->h2) { /* GOAWAY(NO_ERROR): clients retry elsewhere */
      nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
      net_h2_send(c);
      conn_write(c);
    }
    conn_teardown(c);
  }
  loop_drain_mailbox(loop, UINT32_MAX); /* replies to dead calls are dropped */
  loop->dirty = NULL;
  if (s->h.on_loop_stop) s->h.on_loop_stop(s->h.app, loop);
  return NULL;
}

/* ---- start / stop -------------------------------------------------------- */

static uint32_t hash_path(const char *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 16777619u;
  return h;
}

const net_method_ent *net_method_find(const net_server *s, const char *path, size_t len) {
  uint32_t h = hash_path(path, len);
  for (uint32_t i = h & s->method_mask;; i = (i + 1) & s->method_mask) {
    int32_t k = s->method_table[i];
    if (k < 0) return NULL;
    const net_method_ent *m = &s->methods[k];
    if (m->hash == h && m->path_len == len && memcmp(m->path, path, len) == 0) return m;
  }
}

static int build_methods(net_server *s) {
  uint32_t size = 16;
  while (size < s->cfg.n_methods * 2 + 2) size *= 2;
  s->methods = calloc(s->cfg.n_methods + 1, sizeof(*s->methods));
  s->method_table = malloc(size * sizeof(int32_t));
  if (!s->methods || !s->method_table) return -1;
  for (uint32_t i = 0; i < size; i++) s->method_table[i] = -1;
  s->method_mask = size - 1;
  for (size_t k = 0; k < s->cfg.n_methods; k++) {
    net_method_ent *m = &s->methods[k];
    m->path = s->cfg.methods[k].path;
    m->path_len = strlen(m->path);
    m->hash = hash_path(m->path, m->path_len);
    m->kind = s->cfg.methods[k].kind;
    m->id = s->cfg.methods[k].id;
    uint32_t i = m->hash & s->method_mask;
    while (s->method_table[i] >= 0) i = (i + 1) & s->method_mask;
    s->method_table[i] = (int32_t)k;
  }
  s->n_methods = (uint32_t)s->cfg.n_methods;
  return 0;
}

static int loop_init(net_server *s, net_loop *loop, uint32_t index, char *err, size_t err_len) {
  loop->srv = s;
  loop->index = index;
  loop->epfd = epoll_create1(EPOLL_CLOEXEC);
  loop->lfds = malloc(s->cfg.n_listen * sizeof(int));
  loop->n_slots = s->conns_per_loop;
  loop->conns = calloc(loop->n_slots, sizeof(net_conn));
  loop->free_slots = malloc(loop->n_slots * sizeof(uint32_t));
  loop->rdbuf = malloc(NET_READ_CHUNK);
  loop->h1req = malloc(sizeof(http1_req));
  if (loop->epfd < 0 || !loop->lfds || !loop->conns || !loop->free_slots || !loop->rdbuf ||
      !loop->h1req ||
      mailbox_init(&loop->mb, s->cfg.mailbox_slots) != 0 || net_h2_loop_init(loop) != 0) {
    snprintf(err, err_len, "net: loop init: out of memory");
    return -1;
  }
  for (size_t i = 0; i < s->cfg.n_listen; i++) loop->lfds[i] = -1;
  for (uint32_t i = 0; i < loop->n_slots; i++) {
    loop->conns[i].loop = loop;
    loop->conns[i].slot = i;
    loop->conns[i].fd = -1;
    loop->free_slots[i] = loop->n_slots - 1 - i;
  }
  loop->n_free = loop->n_slots;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV_DATA(EV_MAILBOX, 0)};
  epoll_ctl(loop->epfd, EPOLL_CTL_ADD, mailbox_fd(&loop->mb), &ev);
  for (size_t i = 0; i < s->cfg.n_listen; i++) {
    loop->lfds[i] = listen_one(s->cfg.listen[i], &s->ports[i], true, err, err_len);
    if (loop->lfds[i] < 0) return -1;
    struct epoll_event lev = {.events = EPOLLIN, .data.u64 = EV_DATA(EV_LISTEN, i)};
    epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->lfds[i], &lev);
  }
  return 0;
}

static void loop_free(net_server *s, net_loop *loop) {
  if (loop->lfds) {
    for (size_t i = 0; i < s->cfg.n_listen; i++) {
      if (loop->lfds[i] >= 0) close(loop->lfds[i]);
    }
  }
  if (loop->epfd > 0) close(loop->epfd);
  if (loop->conns) {
    for (uint32_t i = 0; i < loop->n_slots; i++) {
      net_buf_free(&loop->conns[i].wbuf);
      net_buf_free(&loop->conns[i].rbuf);
    }
  }
  if (loop->mb.slots) {
    /* Empty after a run (see net_server_stop); only a loop that never ran
     * could hold anything, and its app state was never set up. */
    void *m;
    while ((m = mailbox_pop(&loop->mb)) != NULL) free(m);
    mailbox_destroy(&loop->mb);
  }
  net_h2_loop_free(loop);
  free(loop->lfds);
  free(loop->conns);
  free(loop->free_slots);
  free(loop->rdbuf);
  free(loop->h1req);
}

static void apply_defaults(net_config *c) {
  if (c->loops == 0) c->loops = 1;
  if (c->max_recv_msg_bytes == 0) c->max_recv_msg_bytes = 4 * 1024 * 1024;
  if (c->max_concurrent_streams == 0) c->max_concurrent_streams = 1000;
  if (c->max_conns == 0) c->max_conns = 10000;
  if (c->max_conn_out_bytes == 0) c->max_conn_out_bytes = 1024 * 1024;
  if (c->max_http1_body_bytes == 0) c->max_http1_body_bytes = c->max_recv_msg_bytes;
  if (c->mailbox_slots == 0) c->mailbox_slots = 65536;
}

static void server_free(net_server *s) {
  if (s->loops) {
    for (uint32_t i = 0; i < s->n_loops; i++) loop_free(s, &s->loops[i]);
  }
  free(s->loops);
  free(s->ports);
  free(s->methods);
  free(s->method_table);
  if (s->tls_ctx) net_tls_ctx_free(s->tls_ctx);
  free(s);
}

int net_server_start(const net_config *cfg, const net_handlers *h, net_server **out, char *err,
                     size_t err_len) {
  *out = NULL;
  if (cfg->n_listen == 0) {
    snprintf(err, err_len, "net: no listen address");
    return -1;
  }
  net_server *s = calloc(1, sizeof(*s));
  if (!s) return -1;
  s->cfg = *cfg;
  s->h = *h;
  apply_defaults(&s->cfg);
  s->n_loops = s->cfg.loops;
  s->conns_per_loop = (uint32_t)((s->cfg.max_conns + s->n_loops - 1) / s->n_loops);
  s->loops = calloc(s->n_loops, sizeof(net_loop));
  s->ports = calloc(s->cfg.n_listen, sizeof(uint16_t));
  if (!s->loops || !s->ports || build_methods(s) != 0) {
    snprintf(err, err_len, "net: out of memory");
    server_free(s);
    return -1;
  }
  if (cfg->tls && (s->tls_ctx = net_tls_ctx_new(cfg->tls, err, err_len)) == NULL) {
    server_free(s);
    return -1;
  }
  for (uint32_t i = 0; i < s->n_loops; i++) s->loops[i].epfd = -1;
  for (size_t i = 0; i < s->cfg.n_listen; i++) {
    int probe = listen_one(s->cfg.listen[i], &s->ports[i], false, err, err_len);
    if (probe < 0) {
      server_free(s);
      return -1;
    }
    close(probe);
  }
  for (uint32_t i = 0; i < s->n_loops; i++) {
    if (loop_init(s, &s->loops[i], i, err, err_len) != 0) {
      server_free(s);
      return -1;
    }
  }
  for (uint32_t i = 0; i < s->n_loops; i++) {
    if (pthread_create(&s->loops[i].thread, NULL, loop_main, &s->loops[i]) != 0) {
      snprintf(err, err_len, "net: pthread_create failed");
      s->n_loops = i;
      net_server_stop(s);
      return -1;
    }
  }
  *out = s;
  return 0;
}

void net_server_halt(net_server *s) {
  if (!s || __atomic_load_n(&s->halted, __ATOMIC_SEQ_CST)) return;
  /* First refuse new posts and let the ones under way land (a producer
   * blocked on a full mailbox backs out), then stop the loops: each drains
   * its mailbox through on_post before on_loop_stop, so nothing posted is
   * left behind and on_post never runs after on_loop_stop. */
  __atomic_store_n(&s->stopping, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&s->posting, __ATOMIC_SEQ_CST) > 0) sched_yield();
  __atomic_store_n(&s->loops_exit, 1, __ATOMIC_SEQ_CST);
  for (uint32_t i = 0; i < s->n_loops; i++) {
    uint64_t one = 1;
    ssize_t n = write(mailbox_fd(&s->loops[i].mb), &one, sizeof(one));
    (void)n;
  }
  for (uint32_t i = 0; i < s->n_loops; i++) pthread_join(s->loops[i].thread, NULL);
  __atomic_store_n(&s->halted, 1, __ATOMIC_SEQ_CST);
}

void net_server_stop(net_server *s) {
  if (!s) return;
  net_server_halt(s);
  s->n_loops = s->cfg.loops; /* free every loop, even ones never started */
  server_free(s);
}

/* `posting` counts producers inside net_post, so net_server_stop can wait
 * for them before freeing the mailboxes; a producer that arrives after
 * `stopping` is set backs out without touching them. */
int net_post(net_server *s, uint32_t loop_index, void *msg) {
  if (loop_index >= s->cfg.loops) return -1;
  net_loop *loop = &s->loops[loop_index];
  int rc = 0;
  __atomic_fetch_add(&s->posting, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&s->stopping, __ATOMIC_SEQ_CST)) {
    rc = -1;
  } else if (tl_loop == loop) {
    rc = mailbox_try_push(&loop->mb, msg) ? 0 : -1; /* waiting would deadlock */
  } else {
    for (unsigned spins = 0; !mailbox_try_push(&loop->mb, msg); spins++) {
      if (__atomic_load_n(&s->stopping, __ATOMIC_SEQ_CST)) {
        rc = -1;
        break;
      }
      if (spins < 64) {
        sched_yield();
      } else {
        struct timespec ts = {0, 50 * 1000};
        nanosleep(&ts, NULL);
      }
    }
  }
  __atomic_fetch_sub(&s->posting, 1, __ATOMIC_SEQ_CST);
  return rc;
}

uint32_t net_loop_count(const net_server *s) { return s->n_loops; }

uint16_t net_server_port(const net_server *s, size_t listen_index) {
  return listen_index < s->cfg.n_listen ? s->ports[listen_index] : 0;
}

uint32_t net_loop_index(const net_loop *loop) { return loop->index; }

net_server *net_loop_server(const net_loop *loop) { return loop->srv; }
