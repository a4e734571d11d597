/*
 * test_net.c -- the net transport: the gRPC frame decoder, the HTTP/1.1
 * parser, and an in-process server driven by an nghttp2 CLIENT session
 * written here (so the server is checked against a second HTTP/2 stack).
 *
 * The toy app: "/etcdserverpb.KV/Range" (unary) answers a fixed payload
 * followed by the request's bytes; "/etcdserverpb.KV/Put" (unary) hands the
 * request to a worker thread which posts the reply back with net_post;
 * "/etcdserverpb.Watch/Watch" (bidi) echoes every message and finishes OK on
 * half-close; "etcdserverpb.Lease" is an unimplemented service; on_http
 * answers "hello <target>".
 *
 * `test_net --serve` runs the toy server on a free loopback port and prints
 * "PORT <n>" (for tests/integration/test_net_grpc.py, which drives it with
 * python grpc); it exits when stdin closes.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "msg/mailbox.h"
#include "net/grpc_frame.h"
#include "net/http1.h"
#include "net/server.h"

/* ===== frame decoder ====================================================== */

static size_t frame(uint8_t *out, uint8_t flag, const char *body, uint32_t len) {
  grpc_frame_put_prefix(out, len);
  out[0] = flag;
  memcpy(out + 5, body, len);
  return 5 + len;
}

static void test_dec_split_every_byte(void) {
  uint8_t wire[64];
  size_t n = frame(wire, 0, "hello world", 11);
  grpc_frame_dec d;
  grpc_frame_dec_init(&d, 1024);
  int got = 0;
  for (size_t i = 0; i < n; i++) {
    size_t used;
    const uint8_t *m;
    size_t ml;
    grpc_dec_status st = grpc_frame_dec_feed(&d, wire + i, 1, &used, &m, &ml);
    CU_ASSERT_EQUAL(used, 1);
    if (i + 1 < n) {
      CU_ASSERT_EQUAL(st, GRPC_DEC_NEED_MORE);
      CU_ASSERT_TRUE(grpc_frame_dec_partial(&d));
    } else {
      CU_ASSERT_EQUAL_FATAL(st, GRPC_DEC_MSG);
      CU_ASSERT_EQUAL(ml, 11);
      CU_ASSERT_EQUAL(memcmp(m, "hello world", 11), 0);
      got++;
    }
  }
  CU_ASSERT_EQUAL(got, 1);
  CU_ASSERT_FALSE(grpc_frame_dec_partial(&d));
  grpc_frame_dec_free(&d);
}

static void test_dec_many_in_one_chunk(void) {
  uint8_t wire[256];
  size_t n = 0;
  n += frame(wire + n, 0, "a", 1);
  n += frame(wire + n, 0, "", 0);
  n += frame(wire + n, 0, "ccc", 3);
  n += frame(wire + n, 0, "dddd", 4); /* split: first 7 of its 9 bytes here */
  grpc_frame_dec d;
  grpc_frame_dec_init(&d, 1024);
  const char *want[] = {"a", "", "ccc", "dddd"};
  size_t off = 0, k = 0, first_len = n - 2;
  const uint8_t *m;
  size_t ml, used;
  while (off < first_len) {
    grpc_dec_status st = grpc_frame_dec_feed(&d, wire + off, first_len - off, &used, &m, &ml);
    off += used;
    if (st == GRPC_DEC_NEED_MORE) break;
    CU_ASSERT_EQUAL_FATAL(st, GRPC_DEC_MSG);
    CU_ASSERT_EQUAL(ml, strlen(want[k]));
    CU_ASSERT_EQUAL(memcmp(m, want[k], ml), 0);
    /* Messages wholly inside the chunk are not copied. */
    CU_ASSERT_TRUE(ml == 0 || (m >= wire && m < wire + n));
    k++;
  }
  CU_ASSERT_EQUAL(k, 3);
  CU_ASSERT_EQUAL(off, first_len);
  CU_ASSERT_EQUAL(grpc_frame_dec_feed(&d, wire + off, n - off, &used, &m, &ml), GRPC_DEC_MSG);
  CU_ASSERT_EQUAL(ml, 4);
  CU_ASSERT_EQUAL(memcmp(m, "dddd", 4), 0);
  CU_ASSERT_EQUAL(d.n_msgs, 4);
  grpc_frame_dec_free(&d);
}

static void test_dec_errors(void) {
  uint8_t wire[64];
  const uint8_t *m;
  size_t ml, used;
  grpc_frame_dec d;
  grpc_frame_dec_init(&d, 10);
  frame(wire, 0, "0123456789", 10); /* exactly at the limit: fine */
  CU_ASSERT_EQUAL(grpc_frame_dec_feed(&d, wire, 15, &used, &m, &ml), GRPC_DEC_MSG);
  frame(wire, 0, "0123456789X", 11);
  CU_ASSERT_EQUAL(grpc_frame_dec_feed(&d, wire, 16, &used, &m, &ml), GRPC_DEC_ERR_TOO_LARGE);
  CU_ASSERT_EQUAL(d.err_len, 11);
  CU_ASSERT_EQUAL(used, 5); /* stops at the prefix */
  /* sticky */
  CU_ASSERT_EQUAL(grpc_frame_dec_feed(&d, wire, 1, &used, &m, &ml), GRPC_DEC_ERR_TOO_LARGE);
  grpc_frame_dec_reset(&d);
  frame(wire, 1, "ab", 2);
  CU_ASSERT_EQUAL(grpc_frame_dec_feed(&d, wire, 7, &used, &m, &ml), GRPC_DEC_ERR_COMPRESSED);
  grpc_frame_dec_reset(&d);
  frame(wire, 7, "ab", 2);
  CU_ASSERT_EQUAL(grpc_frame_dec_feed(&d, wire, 7, &used, &m, &ml), GRPC_DEC_ERR_FORMAT);
  CU_ASSERT_EQUAL(d.err_len, 7);
  /* grpc-go checks the length before the flag */
  grpc_frame_dec_reset(&d);
  frame(wire, 1, "0123456789X", 11);
  CU_ASSERT_EQUAL(grpc_frame_dec_feed(&d, wire, 16, &used, &m, &ml), GRPC_DEC_ERR_TOO_LARGE);
  grpc_frame_dec_free(&d);
}

static void test_dec_big_split(void) {
  size_t len = 100000;
  uint8_t *wire = malloc(len + 5);
  grpc_frame_put_prefix(wire, (uint32_t)len);
  for (size_t i = 0; i < len; i++) wire[5 + i] = (uint8_t)(i * 7);
  grpc_frame_dec d;
  grpc_frame_dec_init(&d, len);
  size_t off = 0, used, ml = 0;
  const uint8_t *m = NULL;
  grpc_dec_status st = GRPC_DEC_NEED_MORE;
  while (off < len + 5) {
    size_t chunk = len + 5 - off < 16384 ? len + 5 - off : 16384;
    st = grpc_frame_dec_feed(&d, wire + off, chunk, &used, &m, &ml);
    CU_ASSERT_EQUAL(used, chunk);
    off += used;
  }
  CU_ASSERT_EQUAL_FATAL(st, GRPC_DEC_MSG);
  CU_ASSERT_EQUAL(ml, len);
  CU_ASSERT_EQUAL(memcmp(m, wire + 5, len), 0);
  CU_ASSERT_TRUE(d.cap <= len);
  grpc_frame_dec_free(&d);
  free(wire);
}

static void test_percent_encode(void) {
  char out[64];
  grpc_percent_encode("a b%c\n\xc3\xa9", out, sizeof(out));
  CU_ASSERT_STRING_EQUAL(out, "a b%25c%0A%C3%A9");
  grpc_percent_encode("abcdef", out, 4);
  CU_ASSERT_STRING_EQUAL(out, "abc");
}

/* ===== HTTP/1.1 parser ==================================================== */

static void test_http1_parse(void) {
  http1_req r;
  const char *a = "GET /health?x=1 HTTP/1.1\r\nHost: x\r\nUser-Agent:  curl \r\n\r\nGET";
  CU_ASSERT_EQUAL_FATAL(http1_parse((const unsigned char *)a, strlen(a), 100, &r), HTTP1_OK);
  CU_ASSERT_STRING_EQUAL(r.method, "GET");
  CU_ASSERT_STRING_EQUAL(r.target, "/health?x=1");
  CU_ASSERT_EQUAL(r.n_headers, 2);
  CU_ASSERT_EQUAL(r.headers[1].value_len, 4);
  CU_ASSERT_EQUAL(memcmp(r.headers[1].value, "curl", 4), 0);
  CU_ASSERT_TRUE(r.keep_alive);
  CU_ASSERT_EQUAL(r.consumed, strlen(a) - 3);
  const char *b = "POST /v3/kv/put HTTP/1.0\r\nContent-Length: 5\r\n\r\nabc";
  CU_ASSERT_EQUAL(http1_parse((const unsigned char *)b, strlen(b), 100, &r), HTTP1_NEED_MORE);
  const char *c = "POST /v3/kv/put HTTP/1.0\r\nContent-Length: 5\r\n\r\nabcde";
  CU_ASSERT_EQUAL_FATAL(http1_parse((const unsigned char *)c, strlen(c), 100, &r), HTTP1_OK);
  CU_ASSERT_EQUAL(r.body_len, 5);
  CU_ASSERT_FALSE(r.keep_alive);
  CU_ASSERT_EQUAL(http1_parse((const unsigned char *)c, strlen(c), 4, &r), HTTP1_ERR_TOO_LARGE);
  const char *d = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  CU_ASSERT_EQUAL(http1_parse((const unsigned char *)d, strlen(d), 100, &r), HTTP1_ERR_LENGTH);
  const char *e = "\x01\x02garbage\r\n\r\n";
  CU_ASSERT_EQUAL(http1_parse((const unsigned char *)e, strlen(e), 100, &r), HTTP1_ERR_BAD);
  const char *f = "GET / HTTP/2.0\r\n\r\n";
  CU_ASSERT_EQUAL(http1_parse((const unsigned char *)f, strlen(f), 100, &r), HTTP1_ERR_VERSION);
  const char *g = "GET / HTTP/1.1\r\nConnection: close\r\nBad Header: x\r\n\r\n";
  CU_ASSERT_EQUAL(http1_parse((const unsigned char *)g, strlen(g), 100, &r), HTTP1_ERR_BAD);
  const char *h = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
  CU_ASSERT_EQUAL(http1_parse((const unsigned char *)h, strlen(h), 100, &r), HTTP1_OK);
  CU_ASSERT_FALSE(r.keep_alive);
}

/* ===== the toy app ======================================================== */

/* Checks inside server callbacks: CUnit asserts only while CUnit runs (not
 * in --serve mode). */
static int g_cunit;
#define TOY_CHECK(x)         \
  do {                       \
    if (g_cunit) CU_ASSERT(x); \
  } while (0)

enum { M_RANGE = 1, M_PUT = 2, M_WATCH = 3, M_SNAP = 4 };
static const net_method toy_methods[] = {
    {"/etcdserverpb.KV/Range", NET_UNARY, M_RANGE},
    {"/etcdserverpb.KV/Put", NET_UNARY, M_PUT},
    {"/etcdserverpb.Watch/Watch", NET_BIDI_STREAM, M_WATCH},
    {"/etcdserverpb.Maintenance/Snapshot", NET_SERVER_STREAM, M_SNAP},
};
enum { SNAP_CHUNK = 65536 };

/* Byte i of snapshot chunk k. */
static uint8_t snap_byte(size_t k, size_t i) { return (uint8_t)(k * 31 + i * 7 + (i >> 9)); }
static const char *const toy_unimpl[] = {"etcdserverpb.Lease"};
static const uint8_t RANGE_REPLY[] = {0x0a, 0x02, 0x10, 0x07}; /* header{revision: 7} */

typedef struct work {
  net_call call;
  size_t len;
  uint8_t data[];
} work;

/* net_config.counted_out_bytes: the snapshot and watch toys count their output */
static _Atomic int64_t COUNTED;

typedef struct toy {
  net_server *srv;
  mailbox worker_mb; /* Put requests, for the worker thread */
  pthread_t worker;
  int worker_stop;
  int loops_started;
  int turns;
  int ticks;
  net_call held;   /* an HTTP/1.1 request answered later (owned by held.loop) */
  int held_ticks;  /* chunks still to send from on_tick; -1 = never answer */
  int held_set;
  uint32_t held_loop; /* held.loop, readable from any loop */
  int http_cancels;
  int watch_msgs;  /* Watch messages received */
  int stream_ends_half, stream_ends_gone, cancels;
} toy;

static void toy_loop_start(void *app, net_loop *loop, uint32_t idx) {
  (void)loop, (void)idx;
  __atomic_fetch_add(&((toy *)app)->loops_started, 1, __ATOMIC_SEQ_CST);
}

static void toy_message(void *app, net_loop *loop, net_call call, int mid, const uint8_t *msg,
                        size_t len) {
  toy *t = app;
  if (mid == M_RANGE) {
    uint8_t buf[4096];
    size_t tl = 0;
    const char *tok = net_call_metadata(loop, call, "token", &tl);
    if (tok && strcmp(tok, "bad") == 0) {
      net_reply_error(loop, call, 3, "etcdserver: invalid auth token");
      return;
    }
    TOY_CHECK(net_call_metadata(loop, call, "user-agent", NULL) == NULL); /* not captured */
    memcpy(buf, RANGE_REPLY, sizeof(RANGE_REPLY));
    size_t n = len < sizeof(buf) - 4 ? len : sizeof(buf) - 4;
    memcpy(buf + 4, msg, n);
    net_reply(loop, call, buf, 4 + n);
  } else if (mid == M_PUT) {
    work *w = malloc(sizeof(work) + len);
    w->call = call;
    w->len = len;
    memcpy(w->data, msg, len);
    mailbox_push(&t->worker_mb, w);
  } else if (mid == M_SNAP) {
    /* request: one byte, the number of 64 KiB chunks; all queued at once so
     * the client's flow-control windows pace the stream */
    static uint8_t chunk[SNAP_CHUNK];
    size_t count = len ? msg[0] : 0;
    for (size_t k = 0; k < count; k++) {
      for (size_t i = 0; i < SNAP_CHUNK; i++) chunk[i] = snap_byte(k, i);
      int rc = net_stream_send_counted(loop, call, chunk, SNAP_CHUNK);
      TOY_CHECK(rc == 0);
    }
    TOY_CHECK(net_stream_pending_bytes(loop, call) == count * (SNAP_CHUNK + 5));
    net_stream_finish(loop, call, 0, NULL);
  } else if (mid == M_WATCH) {
    if (len == 4 && memcmp(msg, "FAIL", 4) == 0) {
      net_stream_finish(loop, call, 9, "etcdserver: failed precondition");
      return;
    }
    __atomic_fetch_add(&t->watch_msgs, 1, __ATOMIC_SEQ_CST);
    int rc = net_stream_send_counted(loop, call, msg, len);
    TOY_CHECK(rc == 0);
  }
}

static void toy_stream_end(void *app, net_loop *loop, net_call call, int mid, net_end_reason why) {
  toy *t = app;
  TOY_CHECK(mid == M_WATCH);
  if (why == NET_END_HALF_CLOSE) {
    __atomic_fetch_add(&t->stream_ends_half, 1, __ATOMIC_SEQ_CST);
    net_stream_send(loop, call, (const uint8_t *)"bye", 3);
    net_stream_finish(loop, call, 0, NULL);
  } else {
    __atomic_fetch_add(&t->stream_ends_gone, 1, __ATOMIC_SEQ_CST);
  }
}

static void toy_cancel(void *app, net_loop *loop, net_call call, int mid) {
  (void)loop, (void)call, (void)mid;
  __atomic_fetch_add(&((toy *)app)->cancels, 1, __ATOMIC_SEQ_CST);
}

static void toy_tick(void *app, net_loop *loop) {
  toy *t = app;
  __atomic_fetch_add(&t->ticks, 1, __ATOMIC_SEQ_CST);
  /* only the owning loop touches `held`; others look at atomics alone */
  if (!__atomic_load_n(&t->held_set, __ATOMIC_SEQ_CST) ||
      __atomic_load_n(&t->held_loop, __ATOMIC_SEQ_CST) != net_loop_index(loop)) {
    return;
  }
  if (t->held_ticks > 0) {
    char chunk[16];
    int n = snprintf(chunk, sizeof(chunk), "tick%d\n", t->held_ticks);
    int rc = net_http_stream_send(loop, t->held, chunk, (size_t)n);
    TOY_CHECK(rc == 0);
    if (--t->held_ticks == 0) {
      net_http_stream_end(loop, t->held);
      __atomic_store_n(&t->held_set, 0, __ATOMIC_SEQ_CST);
    }
  }
}

static void toy_http_cancel(void *app, net_loop *loop, net_call call) {
  toy *t = app;
  (void)loop;
  TOY_CHECK(call.stream_id == 0);
  if (__atomic_load_n(&t->held_set, __ATOMIC_SEQ_CST) &&
      __atomic_load_n(&t->held_loop, __ATOMIC_SEQ_CST) == call.loop &&
      memcmp(&call, &t->held, sizeof(call)) == 0) {
    __atomic_store_n(&t->held_set, 0, __ATOMIC_SEQ_CST);
  }
  __atomic_fetch_add(&t->http_cancels, 1, __ATOMIC_SEQ_CST);
}

static void toy_turn_end(void *app, net_loop *loop) {
  (void)loop;
  __atomic_fetch_add(&((toy *)app)->turns, 1, __ATOMIC_RELAXED);
}

/* The worker's reply, back on the call's loop. */
static void toy_post(void *app, net_loop *loop, void *msg) {
  (void)app;
  work *w = msg;
  TOY_CHECK(net_loop_index(loop) == w->call.loop);
  uint8_t buf[1024];
  size_t n = w->len < sizeof(buf) - 3 ? w->len : sizeof(buf) - 3;
  memcpy(buf, "PUT", 3);
  memcpy(buf + 3, w->data, n);
  net_reply(loop, w->call, buf, 3 + n);
  free(w);
}

static void toy_http(void *app, net_loop *loop, const net_http_req *req) {
  toy *t = app;
  if (strcmp(req->target, "/stream") == 0) {
    net_http_stream_start(loop, req->call, 200, "application/json", NULL);
    net_http_stream_send(loop, req->call, "{\"a\":1}\n", 8);
    net_http_stream_send(loop, req->call, "", 0);
    net_http_stream_send(loop, req->call, "{\"b\":22}\n", 9);
    net_http_stream_end(loop, req->call);
    return;
  }
  if (strcmp(req->target, "/tickstream") == 0 || strcmp(req->target, "/hang") == 0) {
    /* answered from on_tick (or never): the call outlives this callback */
    if (req->target[1] == 't') net_http_stream_start(loop, req->call, 200, "text/plain", NULL);
    t->held = req->call;
    t->held_ticks = req->target[1] == 't' ? 3 : -1;
    __atomic_store_n(&t->held_loop, req->call.loop, __ATOMIC_SEQ_CST);
    __atomic_store_n(&t->held_set, 1, __ATOMIC_SEQ_CST);
    return;
  }
  char body[2200];
  int n = snprintf(body, sizeof(body), "hello %s %s %zu", req->method, req->target, req->body_len);
  net_http_reply(loop, req->call, 200, "text/plain", "X-Test: 1\r\n", body, (size_t)n);
}

static void *toy_worker(void *arg) {
  toy *t = arg;
  while (!__atomic_load_n(&t->worker_stop, __ATOMIC_ACQUIRE)) {
    work *w = mailbox_pop(&t->worker_mb);
    if (!w) {
      mailbox_wait(&t->worker_mb, 20);
      continue;
    }
    if (net_post(t->srv, w->call.loop, w) != 0) free(w);
  }
  return NULL;
}

static toy T;

static void toy_fill(net_config *cfg, net_handlers *h, uint32_t loops, size_t max_msg,
                     uint32_t max_streams) {
  static const char *const listen[] = {"127.0.0.1:0"};
  static const char *const capture[] = {"token", "hasleader"};
  *cfg = (net_config){.listen = listen, .n_listen = 1, .loops = loops,
                      .capture_headers = capture, .n_capture = 2, .tick_ms = 20,
                      .max_conn_out_bytes = 256 * 1024, .counted_out_bytes = &COUNTED,
                      .max_recv_msg_bytes = max_msg, .max_concurrent_streams = max_streams,
                      .methods = toy_methods, .n_methods = 4,
                      .unimplemented_services = toy_unimpl, .n_unimplemented = 1};
  *h = (net_handlers){.app = &T, .on_loop_start = toy_loop_start, .on_message = toy_message,
                      .on_stream_end = toy_stream_end, .on_call_cancel = toy_cancel,
                      .on_turn_end = toy_turn_end, .on_tick = toy_tick, .on_post = toy_post,
                      .on_http = toy_http, .on_http_cancel = toy_http_cancel};
}

static int toy_start(uint32_t loops, size_t max_msg, uint32_t max_streams, uint16_t *port) {
  memset(&T, 0, sizeof(T));
  net_config cfg;
  net_handlers h;
  toy_fill(&cfg, &h, loops, max_msg, max_streams);
  char err[256];
  if (mailbox_init(&T.worker_mb, 1024) != 0) return -1;
  if (net_server_start(&cfg, &h, &T.srv, err, sizeof(err)) != 0) {
    fprintf(stderr, "start: %s\n", err);
    return -1;
  }
  pthread_create(&T.worker, NULL, toy_worker, &T);
  *port = net_server_port(T.srv, 0);
  return 0;
}

static void toy_stop(void) {
  __atomic_store_n(&T.worker_stop, 1, __ATOMIC_RELEASE);
  pthread_join(T.worker, NULL);
  net_server_stop(T.srv);
  void *m;
  while ((m = mailbox_pop(&T.worker_mb)) != NULL) free(m);
  mailbox_destroy(&T.worker_mb);
}

/* ===== a blocking nghttp2 client ========================================== */

enum { MAX_CALLS = 1100 };

typedef struct tcall {
  int32_t id;
  int http_status;
  int grpc_status; /* -1 until seen */
  char grpc_message[512];
  uint8_t *data;
  size_t data_len;
  int closed;
  uint32_t rst_code;
} tcall;

typedef struct tsrc { /* one submitted body */
  uint8_t *p;
  size_t len, off;
} tsrc;

typedef struct tcli {
  int fd;
  nghttp2_session *h2;
  tcall calls[MAX_CALLS];
  int n_calls;
  int eof;
  tsrc *srcs[2 * MAX_CALLS]; /* request bodies, freed by cli_close */
  int n_srcs;
  int goaways;
  uint32_t goaway_code;
  SSL_CTX *sctx; /* TLS client, or NULL */
  SSL *ssl;
} tcli;

static int connect_port(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

static tcall *cli_find(tcli *c, int32_t id) {
  for (int i = 0; i < c->n_calls; i++) {
    if (c->calls[i].id == id) return &c->calls[i];
  }
  return NULL;
}

static int c_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                       const uint8_t *value, size_t vl, uint8_t flags, void *ud) {
  (void)s, (void)flags;
  tcall *k = cli_find(ud, f->hd.stream_id);
  if (!k) return 0;
  if (nl == 7 && memcmp(name, ":status", 7) == 0) k->http_status = atoi((const char *)value);
  if (nl == 11 && memcmp(name, "grpc-status", 11) == 0) k->grpc_status = atoi((const char *)value);
  if (nl == 12 && memcmp(name, "grpc-message", 12) == 0) {
    size_t n = vl < sizeof(k->grpc_message) - 1 ? vl : sizeof(k->grpc_message) - 1;
    memcpy(k->grpc_message, value, n);
    k->grpc_message[n] = '\0';
  }
  return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *d, size_t len,
                     void *ud) {
  (void)s, (void)flags;
  tcall *k = cli_find(ud, id);
  if (!k) return 0;
  k->data = realloc(k->data, k->data_len + len);
  memcpy(k->data + k->data_len, d, len);
  k->data_len += len;
  return 0;
}

static int c_on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud) {
  (void)s;
  tcall *k = cli_find(ud, id);
  if (k) {
    k->closed = 1;
    k->rst_code = code;
  }
  return 0;
}

static int c_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)s;
  tcli *c = ud;
  if (f->hd.type == NGHTTP2_GOAWAY) {
    c->goaways++;
    c->goaway_code = f->goaway.error_code;
  }
  return 0;
}

static ssize_t c_read_src(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                          uint32_t *flags, nghttp2_data_source *src, void *ud) {
  (void)s, (void)id, (void)ud;
  tsrc *t = src->ptr;
  size_t n = t->len - t->off < length ? t->len - t->off : length;
  memcpy(buf, t->p + t->off, n);
  t->off += n;
  if (t->off == t->len) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (t->p[t->len] == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* marker byte */
  }
  return (ssize_t)n;
}

/* A blocking TLS client connection verifying the server against ca_file,
 * offering one ALPN protocol ("\x02h2" or "\x08http/1.1"). */
static SSL *tls_connect(int fd, const char *ca_file, const char *alpn, SSL_CTX **ctx_out) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(ctx, ca_file, NULL);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set1_host(ssl, "localhost");
  SSL_set_alpn_protos(ssl, (const unsigned char *)alpn, (unsigned)strlen(alpn));
  *ctx_out = ctx;
  if (SSL_connect(ssl) != 1) {
    ERR_print_errors_fp(stderr);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    *ctx_out = NULL;
    return NULL;
  }
  return ssl;
}

static ssize_t cio_write(tcli *c, const void *p, size_t n) {
  if (c->ssl) return SSL_write(c->ssl, p, (int)n);
  return write(c->fd, p, n);
}

static ssize_t cio_read(tcli *c, void *p, size_t n) {
  if (c->ssl) return SSL_read(c->ssl, p, (int)n);
  return read(c->fd, p, n);
}

static int cli_open_common(tcli *c) {
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_close);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_on_frame);
  nghttp2_session_client_new(&c->h2, cb, c);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1);
  return 0;
}

static int cli_open(tcli *c, uint16_t port) {
  memset(c, 0, sizeof(*c));
  c->fd = connect_port(port);
  if (c->fd < 0) return -1;
  return cli_open_common(c);
}

static int cli_open_tls(tcli *c, uint16_t port, const char *ca_file) {
  memset(c, 0, sizeof(*c));
  c->fd = connect_port(port);
  if (c->fd < 0) return -1;
  c->ssl = tls_connect(c->fd, ca_file, "\x02h2", &c->sctx);
  if (!c->ssl) {
    close(c->fd);
    return -1;
  }
  const unsigned char *proto;
  unsigned plen;
  SSL_get0_alpn_selected(c->ssl, &proto, &plen);
  if (plen != 2 || memcmp(proto, "h2", 2) != 0) return -1;
  return cli_open_common(c);
}

static void cli_close(tcli *c) {
  for (int i = 0; i < c->n_srcs; i++) {
    free(c->srcs[i]->p);
    free(c->srcs[i]);
  }
  for (int i = 0; i < c->n_calls; i++) free(c->calls[i].data);
  nghttp2_session_del(c->h2);
  if (c->ssl) SSL_free(c->ssl);
  if (c->sctx) SSL_CTX_free(c->sctx);
  close(c->fd);
}

/* Sends what nghttp2 has; reads for up to wait_ms; returns -1 on EOF. */
static int cli_pump(tcli *c, int wait_ms) {
  const uint8_t *p;
  ssize_t n;
  while ((n = nghttp2_session_mem_send(c->h2, &p)) > 0) {
    size_t off = 0;
    while (off < (size_t)n) {
      ssize_t w = cio_write(c, p + off, (size_t)n - off);
      if (w <= 0) return -1;
      off += (size_t)w;
    }
  }
  struct pollfd pf = {.fd = c->fd, .events = POLLIN};
  if (!(c->ssl && SSL_pending(c->ssl) > 0) && poll(&pf, 1, wait_ms) <= 0) return 0;
  uint8_t buf[65536];
  ssize_t r = cio_read(c, buf, sizeof(buf));
  if (r <= 0) {
    c->eof = 1;
    return -1;
  }
  if (nghttp2_session_mem_recv(c->h2, buf, (size_t)r) < 0) return -1;
  return 0;
}

/* Starts a call; `body` (may be NULL) is sent as-is; end = half-close after it. */
static int32_t cli_start(tcli *c, const char *path, const uint8_t *body, size_t len, int end,
                         const char *extra_name, const char *extra_value) {
  nghttp2_nv nva[7] = {
      {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
      {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
      {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
      {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
      {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
      {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0},
      {(uint8_t *)extra_name, (uint8_t *)extra_value, extra_name ? strlen(extra_name) : 0,
       extra_value ? strlen(extra_value) : 0, 0}};
  nghttp2_data_provider prd, *pp = NULL;
  if (body || end) {
    tsrc *t = calloc(1, sizeof(*t));
    CU_ASSERT_FATAL(c->n_srcs < 2 * MAX_CALLS);
    c->srcs[c->n_srcs++] = t;
    t->p = malloc(len + 1);
    if (len) memcpy(t->p, body, len);
    t->p[len] = (uint8_t)(end ? 1 : 0);
    t->len = len;
    prd.source.ptr = t;
    prd.read_callback = c_read_src;
    pp = &prd;
  }
  int32_t id = nghttp2_submit_request(c->h2, NULL, nva, extra_name ? 7 : 6, pp, NULL);
  CU_ASSERT_FATAL(id > 0 && c->n_calls < MAX_CALLS);
  tcall *k = &c->calls[c->n_calls++];
  memset(k, 0, sizeof(*k));
  k->id = id;
  k->grpc_status = -1;
  return id;
}

static void cli_send(tcli *c, int32_t id, const uint8_t *body, size_t len, int end) {
  tsrc *t = calloc(1, sizeof(*t));
  CU_ASSERT_FATAL(c->n_srcs < 2 * MAX_CALLS);
  c->srcs[c->n_srcs++] = t;
  t->p = malloc(len + 1);
  memcpy(t->p, body, len);
  t->p[len] = (uint8_t)(end ? 1 : 0);
  t->len = len;
  nghttp2_data_provider prd = {.source.ptr = t, .read_callback = c_read_src};
  CU_ASSERT_EQUAL(nghttp2_submit_data(c->h2, end ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE, id, &prd), 0);
}

static tcall *cli_wait(tcli *c, int32_t id) {
  tcall *k = cli_find(c, id);
  for (int i = 0; i < 500 && !k->closed; i++) {
    if (cli_pump(c, 10) < 0) break;
  }
  return k;
}

static int all_closed(tcli *c) {
  for (int i = 0; i < c->n_calls; i++) {
    if (!c->calls[i].closed) return 0;
  }
  return 1;
}

static size_t msg(uint8_t *out, const char *s) { return frame(out, 0, s, (uint32_t)strlen(s)); }

/* ===== server tests ======================================================= */

static uint16_t PORT;

static void test_unary_ok(void) {
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  uint8_t req[64];
  size_t n = msg(req, "key-1");
  int32_t id = cli_start(&c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  tcall *k = cli_wait(&c, id);
  CU_ASSERT_TRUE(k->closed);
  CU_ASSERT_EQUAL(k->rst_code, 0);
  CU_ASSERT_EQUAL(k->http_status, 200);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  CU_ASSERT_EQUAL_FATAL(k->data_len, 5 + 4 + 5);
  CU_ASSERT_EQUAL(k->data[0], 0);
  CU_ASSERT_EQUAL(k->data[4], 9);
  CU_ASSERT_EQUAL(memcmp(k->data + 5, RANGE_REPLY, 4), 0);
  CU_ASSERT_EQUAL(memcmp(k->data + 9, "key-1", 5), 0);
  cli_close(&c);
}

static tcall *call_once(tcli *c, const char *path, const uint8_t *body, size_t len, int end,
                        const char *xn, const char *xv) {
  int32_t id = cli_start(c, path, body, len, end, xn, xv);
  return cli_wait(c, id);
}

static void test_unimplemented(void) {
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  uint8_t req[64];
  size_t n = msg(req, "x");
  tcall *k = call_once(&c, "/etcdserverpb.KV/Nope", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->http_status, 200);
  CU_ASSERT_EQUAL(k->grpc_status, 12);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "unknown method Nope for service etcdserverpb.KV");
  CU_ASSERT_EQUAL(k->data_len, 0);
  k = call_once(&c, "/foo.Bar/Baz", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 12);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "unknown service foo.Bar");
  k = call_once(&c, "/etcdserverpb.Lease/LeaseGrant", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 12);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "method LeaseGrant not implemented");
  k = call_once(&c, "/nomethod", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 8);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "malformed method name: \"/nomethod\"");
  k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, "token", "bad");
  CU_ASSERT_EQUAL(k->grpc_status, 3);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "etcdserver: invalid auth token");
  k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, "token", "good");
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, "grpc-encoding", "gzip");
  CU_ASSERT_EQUAL(k->grpc_status, 12);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "grpc: Decompressor is not installed for grpc-encoding \"gzip\"");
  /* the connection is still good */
  k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  cli_close(&c);
}

static void test_bad_messages(void) {
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  size_t big = 5000; /* server limit is 4096 */
  uint8_t *req = calloc(1, big + 5);
  grpc_frame_put_prefix(req, (uint32_t)big);
  tcall *k = call_once(&c, "/etcdserverpb.KV/Range", req, big + 5, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 8);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "grpc: received message larger than max (5000 vs. 4096)");
  /* compressed flag without grpc-encoding */
  req[0] = 1;
  grpc_frame_put_prefix(req, 3);
  req[0] = 1;
  k = call_once(&c, "/etcdserverpb.KV/Range", req, 8, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 13);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "grpc: compressed flag set with identity or empty encoding");
  /* unary half-closed with no message / a partial one: grpc-go's io.EOF status */
  k = call_once(&c, "/etcdserverpb.KV/Range", NULL, 0, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 2);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "EOF");
  grpc_frame_put_prefix(req, 10);
  k = call_once(&c, "/etcdserverpb.KV/Range", req, 7, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 2);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "unexpected EOF");
  /* two messages on a unary call: answered after the first (grpc-go) */
  size_t n = msg(req, "one");
  n += msg(req + n, "two");
  k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  CU_ASSERT_EQUAL_FATAL(k->data_len, 5 + 4 + 3);
  CU_ASSERT_EQUAL(memcmp(k->data + 9, "one", 3), 0);
  /* still serving */
  n = msg(req, "ok");
  k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  free(req);
  cli_close(&c);
}

/* The response ends while the client still sends: grpc-go resets the rest. */
static void test_early_reply_resets(void) {
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  uint8_t req[64];
  size_t n = msg(req, "r");
  int32_t id = cli_start(&c, "/etcdserverpb.KV/Range", req, n, 0, NULL, NULL);
  tcall *k = cli_wait(&c, id);
  CU_ASSERT_TRUE(k->closed);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  CU_ASSERT_EQUAL(k->rst_code, NGHTTP2_NO_ERROR);
  cli_close(&c);
}

static void test_garbage_connection(void) {
  int fd = connect_port(PORT);
  CU_ASSERT_FATAL(fd >= 0);
  /* A valid preface followed by garbage frames: GOAWAY and close. */
  const char pre[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\x00\x00\x00\x00\x07garbagegarbage";
  CU_ASSERT_EQUAL(write(fd, pre, sizeof(pre) - 1), (ssize_t)sizeof(pre) - 1);
  int closed = 0;
  uint8_t buf[4096];
  for (int i = 0; i < 200; i++) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 10) <= 0) continue;
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r <= 0) {
      closed = 1;
      break;
    }
  }
  CU_ASSERT_TRUE(closed);
  close(fd);
  /* Random bytes (HTTP/1 by the preface test, then malformed): 400, close. */
  fd = connect_port(PORT);
  CU_ASSERT_EQUAL(write(fd, "\x16\x03\x01\x02\x00\r\n\r\n", 9), 9);
  size_t got = 0;
  closed = 0;
  for (int i = 0; i < 200; i++) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 10) <= 0) continue;
    ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
    if (r <= 0) {
      closed = 1;
      break;
    }
    got += (size_t)r;
  }
  buf[got] = 0;
  CU_ASSERT_TRUE(closed);
  CU_ASSERT_TRUE(strncmp((char *)buf, "HTTP/1.1 400 ", 13) == 0);
  close(fd);
  /* the server still serves */
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  uint8_t req[64];
  size_t n = msg(req, "still");
  tcall *k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  cli_close(&c);
}

static void test_many_streams(void) {
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  enum { N = 1000 };
  uint8_t req[64];
  for (int i = 0; i < N; i++) {
    char key[32];
    snprintf(key, sizeof(key), "k%04d", i);
    size_t n = msg(req, key);
    /* alternate: direct reply on the loop, and reply posted from the worker */
    cli_start(&c, i % 2 ? "/etcdserverpb.KV/Put" : "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  }
  for (int i = 0; i < 1000 && !all_closed(&c); i++) cli_pump(&c, 10);
  CU_ASSERT_TRUE(all_closed(&c));
  int ok = 0;
  for (int i = 0; i < N; i++) {
    tcall *k = &c.calls[i];
    char key[32];
    snprintf(key, sizeof(key), "k%04d", i);
    if (k->grpc_status != 0 || k->data_len < 10) continue;
    if (i % 2) {
      ok += k->data_len == 5 + 3 + 5 && memcmp(k->data + 5, "PUT", 3) == 0 &&
            memcmp(k->data + 8, key, 5) == 0;
    } else {
      ok += k->data_len == 5 + 4 + 5 && memcmp(k->data + 9, key, 5) == 0;
    }
  }
  CU_ASSERT_EQUAL(ok, N);
  cli_close(&c);
}

static void test_bidi_stream(void) {
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  int half0 = __atomic_load_n(&T.stream_ends_half, __ATOMIC_SEQ_CST);
  uint8_t req[64];
  /* first message in one DATA frame, the second split across two */
  size_t n = msg(req, "w1");
  int32_t id = cli_start(&c, "/etcdserverpb.Watch/Watch", req, n, 0, NULL, NULL);
  for (int i = 0; i < 20; i++) cli_pump(&c, 5);
  tcall *k = cli_find(&c, id);
  CU_ASSERT_FALSE(k->closed);
  CU_ASSERT_EQUAL(k->data_len, 7);
  n = msg(req, "second");
  cli_send(&c, id, req, 4, 0);
  for (int i = 0; i < 5; i++) cli_pump(&c, 5);
  cli_send(&c, id, req + 4, n - 4, 1);
  k = cli_wait(&c, id);
  CU_ASSERT_TRUE(k->closed);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  CU_ASSERT_EQUAL_FATAL(k->data_len, 7 + 11 + 8);
  CU_ASSERT_EQUAL(memcmp(k->data + 5, "w1", 2), 0);
  CU_ASSERT_EQUAL(memcmp(k->data + 12, "second", 6), 0);
  CU_ASSERT_EQUAL(memcmp(k->data + 23, "bye", 3), 0);
  CU_ASSERT_EQUAL(__atomic_load_n(&T.stream_ends_half, __ATOMIC_SEQ_CST), half0 + 1);
  /* half-closed before any message: finished OK by the transport, and the
   * app (which never saw the call) hears nothing */
  id = cli_start(&c, "/etcdserverpb.Watch/Watch", NULL, 0, 1, NULL, NULL);
  k = cli_wait(&c, id);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  CU_ASSERT_EQUAL(k->data_len, 0);
  CU_ASSERT_EQUAL(__atomic_load_n(&T.stream_ends_half, __ATOMIC_SEQ_CST), half0 + 1);
  /* app-side error after data: trailers carry it */
  n = msg(req, "w2");
  n += msg(req + n, "FAIL");
  id = cli_start(&c, "/etcdserverpb.Watch/Watch", req, n, 0, NULL, NULL);
  k = cli_wait(&c, id);
  CU_ASSERT_EQUAL(k->grpc_status, 9);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "etcdserver: failed precondition");
  CU_ASSERT_EQUAL(k->data_len, 7);
  /* client reset: the app hears NET_END_GONE */
  int gone0 = __atomic_load_n(&T.stream_ends_gone, __ATOMIC_SEQ_CST);
  n = msg(req, "w3");
  id = cli_start(&c, "/etcdserverpb.Watch/Watch", req, n, 0, NULL, NULL);
  for (int i = 0; i < 10; i++) cli_pump(&c, 5);
  nghttp2_submit_rst_stream(c.h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  for (int i = 0; i < 100 && __atomic_load_n(&T.stream_ends_gone, __ATOMIC_SEQ_CST) == gone0; i++) {
    cli_pump(&c, 5);
  }
  CU_ASSERT_EQUAL(__atomic_load_n(&T.stream_ends_gone, __ATOMIC_SEQ_CST), gone0 + 1);
  /* connection drop with an open stream: NET_END_GONE too */
  id = cli_start(&c, "/etcdserverpb.Watch/Watch", req, n, 0, NULL, NULL);
  for (int i = 0; i < 10; i++) cli_pump(&c, 5);
  cli_close(&c);
  for (int i = 0; i < 200 && __atomic_load_n(&T.stream_ends_gone, __ATOMIC_SEQ_CST) == gone0 + 1; i++) {
    usleep(5000);
  }
  CU_ASSERT_EQUAL(__atomic_load_n(&T.stream_ends_gone, __ATOMIC_SEQ_CST), gone0 + 2);
  /* written, reset or dropped: none of it still counts */
  for (int i = 0; i < 200 && atomic_load(&COUNTED) != 0; i++) usleep(5000);
  CU_ASSERT_EQUAL(atomic_load(&COUNTED), 0);
}

static size_t read_all(int fd, char *buf, size_t cap, int *eof);

static size_t http_roundtrip(int fd, const char *req, char *out, size_t cap, int want_responses) {
  size_t got = 0;
  CU_ASSERT_EQUAL(write(fd, req, strlen(req)), (ssize_t)strlen(req));
  for (int i = 0; i < 200; i++) {
    int seen = 0;
    for (char *p = out; (p = strstr(p, "HTTP/1.1 ")) != NULL && (size_t)(p - out) < got; p++) seen++;
    if (seen >= want_responses && got > 0 && strstr(out, "hello") != NULL) {
      /* wait for the last body */
      const char *last = out;
      for (char *p = out; (p = strstr(p, "hello")) != NULL; p++) last = p;
      if (strstr(last, "\r\n") == NULL && (size_t)(last - out) + 10 < got) break;
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 10) <= 0) continue;
    ssize_t r = read(fd, out + got, cap - 1 - got);
    if (r <= 0) break;
    got += (size_t)r;
    out[got] = 0;
  }
  return got;
}

static void test_http1(void) {
  int fd = connect_port(PORT);
  CU_ASSERT_FATAL(fd >= 0);
  char out[8192] = {0};
  /* two pipelined requests on one keep-alive connection */
  http_roundtrip(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\nPOST /v3/kv/range HTTP/1.1\r\n"
                     "Content-Length: 2\r\n\r\n{}", out, sizeof(out), 2);
  const char *want1 = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n"
                      "X-Test: 1\r\n\r\nhello GET /health 0";
  CU_ASSERT_TRUE(strstr(out, want1) == out);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "hello POST /v3/kv/range 2"));
  close(fd);

  /* Expect: 100-continue, as curl sends for bodies over 1 KiB */
  fd = connect_port(PORT);
  const char *head = "PUT /v3/kv/put HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
  CU_ASSERT_EQUAL(write(fd, head, strlen(head)), (ssize_t)strlen(head));
  int eof;
  read_all(fd, out, sizeof(out), &eof);
  CU_ASSERT_STRING_EQUAL(out, "HTTP/1.1 100 Continue\r\n\r\n");
  CU_ASSERT_EQUAL(write(fd, "abcde", 5), 5);
  read_all(fd, out, sizeof(out), &eof);
  CU_ASSERT_TRUE(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "hello PUT /v3/kv/put 5"));
  /* HEAD: the headers of the GET answer, no body */
  const char *hd = "HEAD /h HTTP/1.1\r\n\r\n";
  CU_ASSERT_EQUAL(write(fd, hd, strlen(hd)), (ssize_t)strlen(hd));
  read_all(fd, out, sizeof(out), &eof);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "Content-Length: 15\r\n"));
  CU_ASSERT_TRUE(strlen(out) > 4 && strcmp(out + strlen(out) - 4, "\r\n\r\n") == 0);
  /* a chunked answer made at once, and one made over three ticks */
  const char *st = "GET /stream HTTP/1.1\r\n\r\n";
  CU_ASSERT_EQUAL(write(fd, st, strlen(st)), (ssize_t)strlen(st));
  read_all(fd, out, sizeof(out), &eof);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "Transfer-Encoding: chunked\r\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\n\r\n8\r\n{\"a\":1}\n\r\n9\r\n{\"b\":22}\n\r\n0\r\n\r\n"));
  CU_ASSERT_PTR_NULL(strstr(out, "Content-Length"));
  st = "GET /tickstream HTTP/1.1\r\n\r\n";
  CU_ASSERT_EQUAL(write(fd, st, strlen(st)), (ssize_t)strlen(st));
  size_t got = 0;
  out[0] = 0;
  for (int i = 0; i < 100 && !strstr(out, "0\r\n\r\n"); i++) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 20) <= 0) continue;
    ssize_t r = read(fd, out + got, sizeof(out) - 1 - got);
    if (r <= 0) break;
    got += (size_t)r;
    out[got] = 0;
  }
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\n\r\n6\r\ntick3\n\r\n6\r\ntick2\n\r\n6\r\ntick1\n\r\n0\r\n\r\n"));
  /* chunked bodies are refused with 411 and the connection closes */
  const char *ch = "POST /v3/kv/put HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n";
  CU_ASSERT_EQUAL(write(fd, ch, strlen(ch)), (ssize_t)strlen(ch));
  read_all(fd, out, sizeof(out), &eof);
  CU_ASSERT_TRUE(strncmp(out, "HTTP/1.1 411 Length Required\r\n", 30) == 0);
  CU_ASSERT_TRUE(eof);
  close(fd);
}

static void test_http1_cancel(void) {
  int c0 = __atomic_load_n(&T.http_cancels, __ATOMIC_SEQ_CST);
  int fd = connect_port(PORT);
  const char *h = "GET /hang HTTP/1.1\r\n\r\n";
  CU_ASSERT_EQUAL(write(fd, h, strlen(h)), (ssize_t)strlen(h));
  for (int i = 0; i < 100 && !__atomic_load_n(&T.held_set, __ATOMIC_SEQ_CST); i++) usleep(5000);
  CU_ASSERT_TRUE(__atomic_load_n(&T.held_set, __ATOMIC_SEQ_CST));
  close(fd); /* reading is paused while the request is pending: RDHUP tells */
  for (int i = 0; i < 100 && __atomic_load_n(&T.http_cancels, __ATOMIC_SEQ_CST) == c0; i++) usleep(5000);
  CU_ASSERT_EQUAL(__atomic_load_n(&T.http_cancels, __ATOMIC_SEQ_CST), c0 + 1);
  CU_ASSERT_FALSE(__atomic_load_n(&T.held_set, __ATOMIC_SEQ_CST));
}

static void test_two_loops(void) {
  /* Several connections spread over the loops by SO_REUSEPORT, all served. */
  tcli *c = calloc(6, sizeof(tcli)); /* tcli is big: not on the stack */
  uint8_t req[64];
  size_t n = msg(req, "multi");
  for (int i = 0; i < 6; i++) CU_ASSERT_FATAL(cli_open(&c[i], PORT) == 0);
  for (int i = 0; i < 6; i++) {
    tcall *k = call_once(&c[i], "/etcdserverpb.KV/Put", req, n, 1, NULL, NULL);
    CU_ASSERT_EQUAL(k->grpc_status, 0);
    CU_ASSERT_EQUAL(k->data_len, 5 + 3 + 5);
  }
  for (int i = 0; i < 6; i++) cli_close(&c[i]);
  free(c);
  CU_ASSERT_EQUAL(net_loop_count(T.srv), 2);
  CU_ASSERT_EQUAL(__atomic_load_n(&T.loops_started, __ATOMIC_SEQ_CST), 2);
  CU_ASSERT_TRUE(__atomic_load_n(&T.turns, __ATOMIC_RELAXED) > 0);
}

static void test_ticks(void) {
  /* 2 loops x every 20 ms: an idle server ticks about 20 times in 200 ms
   * (never more; fewer on a loaded machine) */
  int t0 = __atomic_load_n(&T.ticks, __ATOMIC_SEQ_CST);
  usleep(200000);
  int d = __atomic_load_n(&T.ticks, __ATOMIC_SEQ_CST) - t0;
  CU_ASSERT_TRUE(d >= 8 && d <= 24);
  if (d < 8 || d > 24) fprintf(stderr, "ticks in 200 ms over 2 loops: %d\n", d);
}

static void test_max_streams_setting(void) {
  /* The server announces max_concurrent_streams = 1200 in its SETTINGS. */
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  for (int i = 0; i < 20; i++) cli_pump(&c, 5);
  CU_ASSERT_EQUAL(nghttp2_session_get_remote_settings(c.h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 1200);
  CU_ASSERT_EQUAL(nghttp2_session_get_remote_settings(c.h2, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE),
                  4 * 1024 * 1024);
  cli_close(&c);
}


/* A second, bare server: no methods, no handlers, tight limits. */
static net_server *bare_start(size_t max_conns, uint16_t *port) {
  static const char *const listen[] = {"127.0.0.1:0"};
  net_config cfg = {.listen = listen, .n_listen = 1, .loops = 1, .max_conns = max_conns};
  net_handlers h = {0};
  char err[256];
  net_server *s = NULL;
  if (net_server_start(&cfg, &h, &s, err, sizeof(err)) != 0) return NULL;
  *port = net_server_port(s, 0);
  return s;
}

/* Reads until EOF or ~1 s; returns bytes read, *eof set on EOF. */
static size_t read_all(int fd, char *buf, size_t cap, int *eof) {
  size_t got = 0;
  *eof = 0;
  for (int i = 0; i < 100; i++) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 10) <= 0) {
      if (got) break;
      continue;
    }
    ssize_t r = read(fd, buf + got, cap - 1 - got);
    if (r <= 0) {
      *eof = 1;
      break;
    }
    got += (size_t)r;
  }
  buf[got] = 0;
  return got;
}

static void test_conn_limit(void) {
  uint16_t port = 0;
  net_server *s = bare_start(2, &port);
  CU_ASSERT_FATAL(s != NULL);
  int fds[3];
  char buf[1024];
  int eof;
  for (int i = 0; i < 2; i++) {
    fds[i] = connect_port(port);
    const char *req = "GET /x HTTP/1.1\r\n\r\n";
    CU_ASSERT_EQUAL(write(fds[i], req, strlen(req)), (ssize_t)strlen(req));
    read_all(fds[i], buf, sizeof(buf), &eof);
    CU_ASSERT_TRUE(strncmp(buf, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    CU_ASSERT_FALSE(eof);
  }
  /* the third is over the limit: accepted and closed at once */
  fds[2] = connect_port(port);
  CU_ASSERT_EQUAL(read_all(fds[2], buf, sizeof(buf), &eof), 0);
  CU_ASSERT_TRUE(eof);
  close(fds[2]);
  /* a slot freed is a slot reused */
  close(fds[0]);
  usleep(50000);
  fds[0] = connect_port(port);
  const char *req = "GET /y HTTP/1.1\r\nConnection: close\r\n\r\n";
  CU_ASSERT_EQUAL(write(fds[0], req, strlen(req)), (ssize_t)strlen(req));
  read_all(fds[0], buf, sizeof(buf), &eof);
  CU_ASSERT_TRUE(strncmp(buf, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "Connection: close\r\n"));
  CU_ASSERT_TRUE(eof);
  close(fds[0]);
  close(fds[1]);
  net_server_stop(s);
}

static void test_header_limit(void) {
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  char *big = malloc(70000);
  memset(big, 'v', 69999);
  big[69999] = 0;
  uint8_t req[64];
  size_t n = msg(req, "h");
  tcall *k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, "x-big", big);
  CU_ASSERT_TRUE(k->closed);
  CU_ASSERT_NOT_EQUAL(k->rst_code, 0);
  CU_ASSERT_EQUAL(k->grpc_status, -1);
  /* the connection survives a stream error */
  k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  free(big);
  cli_close(&c);
}

/* A request of our choosing (no te, any method / content-type). */
static int32_t cli_plain(tcli *c, const char *method, const char *path, const char *ct,
                         const char *body) {
  nghttp2_nv nva[5] = {
      {(uint8_t *)":method", (uint8_t *)method, 7, strlen(method), 0},
      {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
      {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
      {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
      {(uint8_t *)"content-type", (uint8_t *)ct, 12, strlen(ct), 0}};
  nghttp2_data_provider prd, *pp = NULL;
  if (body) {
    tsrc *t = calloc(1, sizeof(*t));
    c->srcs[c->n_srcs++] = t;
    t->len = strlen(body);
    t->p = malloc(t->len + 1);
    memcpy(t->p, body, t->len);
    t->p[t->len] = 1;
    prd.source.ptr = t;
    prd.read_callback = c_read_src;
    pp = &prd;
  }
  int32_t id = nghttp2_submit_request(c->h2, NULL, nva, 5, pp, NULL);
  tcall *k = &c->calls[c->n_calls++];
  memset(k, 0, sizeof(*k));
  k->id = id;
  k->grpc_status = -1;
  return id;
}

/* Plain HTTP over HTTP/2 goes to on_http (curl --http2, Go clients over
 * TLS); without on_http it is refused as grpc-go's transport does. */
static void test_http_over_h2(void) {
  tcli *c = calloc(1, sizeof(*c));
  CU_ASSERT_FATAL(cli_open(c, PORT) == 0);
  tcall *k = cli_wait(c, cli_plain(c, "POST", "/v3/kv/range", "application/json", "{\"key\":\"YQ==\"}"));
  CU_ASSERT_EQUAL(k->http_status, 200);
  CU_ASSERT_EQUAL(k->grpc_status, -1);
  CU_ASSERT_EQUAL(k->rst_code, 0);
  CU_ASSERT_EQUAL_FATAL(k->data_len, 26);
  CU_ASSERT_EQUAL(memcmp(k->data, "hello POST /v3/kv/range 14", 26), 0);
  k = cli_wait(c, cli_plain(c, "GET", "/stream", "text/plain", NULL));
  CU_ASSERT_EQUAL(k->http_status, 200);
  CU_ASSERT_EQUAL_FATAL(k->data_len, 17);
  CU_ASSERT_EQUAL(memcmp(k->data, "{\"a\":1}\n{\"b\":22}\n", 17), 0);
  /* gRPC still works on the same connection */
  uint8_t req[16];
  size_t n = msg(req, "h");
  k = call_once(c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  cli_close(c);

  uint16_t port = 0;
  net_server *s = bare_start(4, &port);
  CU_ASSERT_FATAL(s != NULL);
  CU_ASSERT_FATAL(cli_open(c, port) == 0);
  k = cli_wait(c, cli_plain(c, "POST", "/etcdserverpb.KV/Range", "application/json", NULL));
  CU_ASSERT_TRUE(k->closed);
  CU_ASSERT_EQUAL(k->rst_code, NGHTTP2_PROTOCOL_ERROR);
  cli_close(c);
  free(c);
  net_server_stop(s);
}


static void test_port_in_use(void) {
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)PORT);
  const char *const listen[] = {addr};
  net_config cfg = {.listen = listen, .n_listen = 1, .loops = 2};
  net_handlers h = {0};
  char err[256] = "";
  net_server *s = NULL;
  CU_ASSERT_EQUAL(net_server_start(&cfg, &h, &s, err, sizeof(err)), -1);
  CU_ASSERT_PTR_NULL(s);
  char want[128];
  snprintf(want, sizeof(want), "listen tcp %s: bind: address already in use", addr);
  CU_ASSERT_STRING_EQUAL(err, want);
}


static void test_server_stream_flow_control(void) {
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  /* the client's connection window stays nghttp2's default 64 KiB: the
   * 4 MiB response needs many WINDOW_UPDATEs and DEFERRED/resume rounds */
  uint8_t req[8];
  uint8_t count = 64;
  size_t n = frame(req, 0, (const char *)&count, 1);
  tcall *k = call_once(&c, "/etcdserverpb.Maintenance/Snapshot", req, n, 1, NULL, NULL);
  for (int i = 0; i < 500 && !k->closed; i++) cli_pump(&c, 10);
  CU_ASSERT_TRUE(k->closed);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  CU_ASSERT_EQUAL_FATAL(k->data_len, (size_t)count * (SNAP_CHUNK + 5));
  size_t bad = 0;
  for (size_t j = 0; j < count; j++) {
    const uint8_t *m = k->data + j * (SNAP_CHUNK + 5);
    if (m[0] != 0 || m[1] != 0 || m[2] != 1 || m[3] != 0 || m[4] != 0) bad++;
    for (size_t i = 0; i < SNAP_CHUNK; i++) bad += m[5 + i] != snap_byte(j, i);
  }
  CU_ASSERT_EQUAL(bad, 0);
  /* counted from net_stream_send_counted until the socket took it */
  for (int i = 0; i < 200 && atomic_load(&COUNTED) != 0; i++) usleep(5000);
  CU_ASSERT_EQUAL(atomic_load(&COUNTED), 0);
  /* a client that stops reading: what the server holds stays counted until
   * the connection goes */
  cli_start(&c, "/etcdserverpb.Maintenance/Snapshot", req, n, 1, NULL, NULL);
  cli_pump(&c, 0); /* the request goes; no WINDOW_UPDATE ever follows */
  for (int i = 0; i < 200 && atomic_load(&COUNTED) == 0; i++) usleep(5000);
  CU_ASSERT(atomic_load(&COUNTED) > 0);
  cli_close(&c);
  for (int i = 0; i < 200 && atomic_load(&COUNTED) != 0; i++) usleep(5000);
  CU_ASSERT_EQUAL(atomic_load(&COUNTED), 0);
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  /* server-streaming call half-closed without its request: grpc-go's EOF */
  k = call_once(&c, "/etcdserverpb.Maintenance/Snapshot", NULL, 0, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 2);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "EOF");
  cli_close(&c);
}


/* A client whose windows never pace the server (16 MiB, as cetcd-bench's):
 * one flush serializes at most 8 x max_conn_out_bytes (2 MiB here); the
 * rest of a 4 MiB response must still go, though the client sends nothing
 * more that would wake the connection. */
static void test_big_windows(void) {
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16 << 20}};
  nghttp2_submit_settings(c.h2, NGHTTP2_FLAG_NONE, iv, 1);
  nghttp2_session_set_local_window_size(c.h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
  for (int i = 0; i < 5; i++) cli_pump(&c, 5); /* settled before the call */
  uint8_t req[8];
  uint8_t count = 64;
  size_t n = frame(req, 0, (const char *)&count, 1);
  tcall *k = call_once(&c, "/etcdserverpb.Maintenance/Snapshot", req, n, 1, NULL, NULL);
  CU_ASSERT_TRUE(k->closed);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  CU_ASSERT_EQUAL(k->data_len, (size_t)count * (SNAP_CHUNK + 5));
  cli_close(&c);
}

static void test_goaway_on_stop(void) {
  uint16_t port = 0;
  net_server *s = bare_start(4, &port);
  CU_ASSERT_FATAL(s != NULL);
  tcli *c = calloc(1, sizeof(*c));
  CU_ASSERT_FATAL(cli_open(c, port) == 0);
  uint8_t req[16];
  size_t n = msg(req, "x");
  tcall *k = call_once(c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 12);
  CU_ASSERT_STRING_EQUAL(k->grpc_message, "unknown service etcdserverpb.KV");
  net_server_stop(s);
  for (int i = 0; i < 100 && !c->eof; i++) cli_pump(c, 10);
  CU_ASSERT_EQUAL(c->goaways, 1);
  CU_ASSERT_EQUAL(c->goaway_code, NGHTTP2_NO_ERROR);
  CU_ASSERT_TRUE(c->eof);
  cli_close(c);
  free(c);
}

/* Seeded junk on many connections: each gets closed or answered, the
 * server keeps serving (and ASan builds see no memory error). */
static void test_junk_storm(void) {
  uint32_t seed = 12345;
  uint8_t buf[4096];
  for (int conn = 0; conn < 60; conn++) {
    int fd = connect_port(PORT);
    CU_ASSERT_FATAL(fd >= 0);
    size_t n = 0;
    if (conn % 3 != 2) { /* most speak HTTP/2 first, then junk */
      memcpy(buf, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
      n = 24;
      if (conn % 3 == 1) { /* an empty SETTINGS first, then junk frames */
        memcpy(buf + n, "\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);
        n += 9;
      }
    }
    seed = seed * 1103515245u + 12345u;
    size_t junk = 1 + (seed >> 16) % 3000;
    for (size_t i = 0; i < junk; i++) {
      seed = seed * 1103515245u + 12345u;
      buf[n++] = (uint8_t)(seed >> 16);
    }
    ssize_t w = write(fd, buf, n);
    CU_ASSERT_TRUE(w > 0);
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    poll(&pf, 1, 20); /* HTTP/1 junk without a blank line just waits */
    close(fd);
  }
  tcli c;
  CU_ASSERT_FATAL(cli_open(&c, PORT) == 0);
  uint8_t req[16];
  size_t n = msg(req, "alive");
  tcall *k = call_once(&c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  cli_close(&c);
}


/* A minimal counting client (backpressure test, --bench mode). */

typedef struct bcli {
  nghttp2_session *h2;
  long done, bytes;
} bcli;

static int b_on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud) {
  (void)s, (void)id, (void)code;
  ((bcli *)ud)->done++;
  return 0;
}

static int b_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *d, size_t len,
                     void *ud) {
  (void)s, (void)flags, (void)id, (void)d;
  ((bcli *)ud)->bytes += (long)len;
  return 0;
}

/* Starts b's client session: stream window `win`, connection window
 * `conn_win`, the SETTINGS queued for the first send. */
static void bcli_init(bcli *b, int32_t win, int32_t conn_win) {
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, b_on_close);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, b_on_data);
  nghttp2_session_client_new(&b->h2, cb, b);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)win}};
  nghttp2_submit_settings(b->h2, NGHTTP2_FLAG_NONE, iv, 1);
  nghttp2_session_set_local_window_size(b->h2, NGHTTP2_FLAG_NONE, 0, conn_win);
}

/* A client that writes and does not read. HTTP/2 flow control alone lets
 * it send 4 x 4 MiB here (stream and connection windows); the server must
 * stop consuming once its unsent output reaches max_conn_out_bytes
 * (256 KiB). When the client reads again everything completes. */
enum { BP_STREAMS = 4, BP_REC = 3005, BP_RECS = 1300 }; /* 3000-byte messages */

typedef struct bp_src {
  uint64_t sent;
  uint64_t limit;
} bp_src;

static ssize_t bp_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud) {
  (void)s, (void)id, (void)ud;
  bp_src *b = src->ptr;
  size_t n = b->limit - b->sent < length ? (size_t)(b->limit - b->sent) : length;
  static const uint8_t pfx[5] = {0, 0, 0, 0x0b, 0xb8};
  for (size_t i = 0; i < n; i++) {
    size_t pos = (size_t)((b->sent + i) % BP_REC);
    buf[i] = pos < 5 ? pfx[pos] : 'e';
  }
  b->sent += n;
  if (b->sent == b->limit) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static void test_backpressure(void) {
  /* a small receive buffer keeps the kernel's share of the output small */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int rcv = 64 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(PORT)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  bcli b = {0};
  bcli_init(&b, 1 << 30, 1 << 30);
  nghttp2_nv nva[6] = {
      {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
      {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
      {(uint8_t *)":path", (uint8_t *)"/etcdserverpb.Watch/Watch", 5, 25, 0},
      {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
      {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
      {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0}};
  /* learn the server's windows (SETTINGS, WINDOW_UPDATE) before going deaf */
  static uint8_t in[1 << 17];
  for (int i = 0; i < 10; i++) {
    const uint8_t *p;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(b.h2, &p)) > 0) CU_ASSERT_EQUAL(write(fd, p, (size_t)n), n);
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 10) > 0) {
      ssize_t r = read(fd, in, sizeof(in));
      CU_ASSERT_FATAL(r > 0 && nghttp2_session_mem_recv(b.h2, in, (size_t)r) == r);
    }
  }
  CU_ASSERT(nghttp2_session_get_remote_window_size(b.h2) >= 16 * 1024 * 1024 - 65535);
  static bp_src srcs[BP_STREAMS];
  for (int i = 0; i < BP_STREAMS; i++) {
    srcs[i] = (bp_src){0, (uint64_t)BP_REC * BP_RECS};
    nghttp2_data_provider prd = {.source.ptr = &srcs[i], .read_callback = bp_read};
    nghttp2_submit_request(b.h2, NULL, nva, 6, &prd, NULL);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  int msgs0 = __atomic_load_n(&T.watch_msgs, __ATOMIC_SEQ_CST);
  static uint8_t pend[1 << 17];
  size_t plen = 0, poff = 0;
  uint64_t written = 0;
  int stalled = 0, idle = 0;
  /* phase 1: write only */
  while (!stalled) {
    if (poff == plen) {
      const uint8_t *p;
      ssize_t n = nghttp2_session_mem_send(b.h2, &p);
      if (n <= 0) break; /* flow control exhausted: the server never paused */
      memcpy(pend, p, (size_t)n);
      plen = (size_t)n;
      poff = 0;
    }
    ssize_t w = write(fd, pend + poff, plen - poff);
    if (w > 0) {
      poff += (size_t)w;
      written += (uint64_t)w;
      idle = 0;
    } else if (errno == EAGAIN) {
      usleep(2000);
      stalled = ++idle > 100; /* ~0.2 s without progress */
    } else {
      break;
    }
  }
  /* The kernel may buffer all 16 MiB (tcp_rmem autotuning), so a stall is
   * not the proof; what the server consumed is. Paused, it took what fits
   * in the kernel's send side (tcp_wmem max 4 MiB), the client's 64 KiB,
   * the 256 KiB cap and one turn's reads (1 MiB): under ~1800 messages of
   * 3005 bytes. Without the pause it consumes all ~5580. */
  usleep(200000);
  int consumed = __atomic_load_n(&T.watch_msgs, __ATOMIC_SEQ_CST) - msgs0;
  CU_ASSERT_TRUE(consumed < 3000);
  if (consumed >= 3000) {
    fprintf(stderr, "backpressure: server consumed %d messages (wrote %lu bytes, stalled %d)\n",
            consumed, (unsigned long)written, stalled);
  }
  /* phase 2: read and write until every stream is done */
  for (int i = 0; i < 100000 && b.done < BP_STREAMS; i++) {
    if (poff == plen) {
      const uint8_t *p;
      ssize_t n = nghttp2_session_mem_send(b.h2, &p);
      if (n > 0) {
        memcpy(pend, p, (size_t)n);
        plen = (size_t)n;
        poff = 0;
      }
    }
    if (poff < plen) {
      ssize_t w = write(fd, pend + poff, plen - poff);
      if (w > 0) poff += (size_t)w;
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, poff < plen ? 0 : 10) > 0) {
      ssize_t r = read(fd, in, sizeof(in));
      if (r <= 0) break;
      CU_ASSERT_FATAL(nghttp2_session_mem_recv(b.h2, in, (size_t)r) == r);
    }
  }
  CU_ASSERT_EQUAL(b.done, BP_STREAMS);
  CU_ASSERT_EQUAL(b.bytes, (long)BP_STREAMS * ((long)BP_REC * BP_RECS + 8)); /* echoes + "bye" */
  nghttp2_session_del(b.h2);
  close(fd);
}


/* ===== TLS ================================================================ */

/* A self-signed P-256 certificate for localhost / 127.0.0.1, written as
 * <dir>/cert.pem and <dir>/key.pem. */
static int make_cert(const char *dir) {
  char path[512];
  EVP_PKEY *pk = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  if (!pk || !x) return -1;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, pk);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
  X509_add_ext(x, san, -1);
  X509_add_ext(x, bc, -1);
  X509_EXTENSION_free(san);
  X509_EXTENSION_free(bc);
  int rc = X509_sign(x, pk, EVP_sha256()) > 0 ? 0 : -1;
  snprintf(path, sizeof(path), "%s/cert.pem", dir);
  FILE *f = fopen(path, "w");
  if (!f || PEM_write_X509(f, x) != 1) rc = -1;
  if (f) fclose(f);
  snprintf(path, sizeof(path), "%s/key.pem", dir);
  f = fopen(path, "w");
  if (!f || PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) != 1) rc = -1;
  if (f) fclose(f);
  X509_free(x);
  EVP_PKEY_free(pk);
  return rc;
}

static void rm_cert_dir(const char *dir) {
  char path[512];
  snprintf(path, sizeof(path), "%s/cert.pem", dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/key.pem", dir);
  unlink(path);
  rmdir(dir);
}

static net_server *tls_start(const char *dir, uint16_t *port) {
  static char cert[512], key[512];
  static net_tls_config tc;
  snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
  snprintf(key, sizeof(key), "%s/key.pem", dir);
  tc = (net_tls_config){.cert_file = cert, .key_file = key};
  net_config cfg;
  net_handlers h;
  toy_fill(&cfg, &h, 1, 4096, 100);
  cfg.tls = &tc;
  char err[256];
  net_server *s = NULL;
  if (net_server_start(&cfg, &h, &s, err, sizeof(err)) != 0) {
    fprintf(stderr, "tls start: %s\n", err);
    return NULL;
  }
  *port = net_server_port(s, 0);
  return s;
}

static void test_tls(void) {
  char dir[] = "/tmp/cetcd-net-tls-XXXXXX";
  CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
  CU_ASSERT_FATAL(make_cert(dir) == 0);
  uint16_t port = 0;
  net_server *s = tls_start(dir, &port);
  CU_ASSERT_FATAL(s != NULL);
  char ca[600];
  snprintf(ca, sizeof(ca), "%s/cert.pem", dir);

  /* gRPC over TLS with ALPN h2: unary, and a 4 MiB server stream (TLS
   * records buffered inside OpenSSL must not stall the loop) */
  tcli *c = calloc(1, sizeof(*c));
  CU_ASSERT_FATAL(cli_open_tls(c, port, ca) == 0);
  uint8_t req[16];
  size_t n = msg(req, "tls");
  tcall *k = call_once(c, "/etcdserverpb.KV/Range", req, n, 1, NULL, NULL);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  CU_ASSERT_EQUAL(k->data_len, 5 + 4 + 3);
  uint8_t count = 64;
  n = frame(req, 0, (const char *)&count, 1);
  k = call_once(c, "/etcdserverpb.Maintenance/Snapshot", req, n, 1, NULL, NULL);
  for (int i = 0; i < 500 && !k->closed; i++) cli_pump(c, 10);
  CU_ASSERT_EQUAL(k->grpc_status, 0);
  CU_ASSERT_EQUAL(k->data_len, (size_t)count * (SNAP_CHUNK + 5));
  cli_close(c);
  free(c);

  /* HTTP/1.1 over TLS (ALPN http/1.1) */
  int fd = connect_port(port);
  SSL_CTX *ctx = NULL;
  SSL *ssl = tls_connect(fd, ca, "\x08http/1.1", &ctx);
  CU_ASSERT_FATAL(ssl != NULL);
  const char *get = "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n";
  CU_ASSERT_EQUAL(SSL_write(ssl, get, (int)strlen(get)), (int)strlen(get));
  char out[4096];
  int got = 0, r;
  while ((r = SSL_read(ssl, out + got, (int)sizeof(out) - 1 - got)) > 0) got += r;
  out[got] = 0;
  CU_ASSERT_TRUE(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "hello GET /health 0"));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);

  /* cleartext on the TLS port: the handshake fails, the connection closes */
  fd = connect_port(port);
  CU_ASSERT_EQUAL(write(fd, get, strlen(get)), (ssize_t)strlen(get));
  int eof;
  read_all(fd, out, sizeof(out), &eof);
  CU_ASSERT_TRUE(eof);
  CU_ASSERT_TRUE(strncmp(out, "HTTP/1.1", 8) != 0);
  close(fd);

  net_server_stop(s);
  rm_cert_dir(dir);
}

static void test_tls_bad_files(void) {
  net_tls_config tc = {.cert_file = "/nonexistent/cert.pem", .key_file = "/nonexistent/key.pem"};
  net_config cfg;
  net_handlers h;
  toy_fill(&cfg, &h, 1, 4096, 100);
  cfg.tls = &tc;
  char err[256] = "";
  net_server *s = NULL;
  CU_ASSERT_EQUAL(net_server_start(&cfg, &h, &s, err, sizeof(err)), -1);
  CU_ASSERT_PTR_NULL(s);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/cert.pem"));
}

static int suite_init(void) { return toy_start(2, 4096, 1200, &PORT); }
static int suite_clean(void) {
  toy_stop();
  return 0;
}

/* ===== --serve mode for the python integration test ====================== */

static int serve_main(void) {
  uint16_t port;
  if (toy_start(2, 4096, 1200, &port) != 0) return 1;
  printf("PORT %u\n", (unsigned)port);
  fflush(stdout);
  char buf[64];
  while (read(0, buf, sizeof(buf)) > 0) {
  }
  toy_stop();
  return 0;
}


static ssize_t b_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                      nghttp2_data_source *src, void *ud) {
  (void)s, (void)id, (void)ud, (void)src;
  size_t n = msg(buf, "bench-key");
  (void)length;
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static int bench_main(long total, int inflight, const char *path) {
  uint16_t port;
  if (toy_start(1, 4096, 2000, &port) != 0) return 1;
  bcli b = {0};
  int fd = connect_port(port);
  bcli_init(&b, 1 << 24, 1 << 28);
  nghttp2_nv nva[6] = {
      {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
      {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
      {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
      {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
      {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
      {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0}};
  long started = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  static uint8_t out[1 << 20], in[1 << 20];
  while (b.done < total) {
    while (started < total && started - b.done < inflight) {
      nghttp2_data_provider prd = {.read_callback = b_read};
      nghttp2_submit_request(b.h2, NULL, nva, 6, &prd, NULL);
      started++;
    }
    size_t o = 0;
    const uint8_t *p;
    ssize_t n;
    while (o < sizeof(out) - 65536 && (n = nghttp2_session_mem_send(b.h2, &p)) > 0) {
      memcpy(out + o, p, (size_t)n);
      o += (size_t)n;
    }
    for (size_t w = 0; w < o;) {
      ssize_t r = write(fd, out + w, o - w);
      if (r <= 0) return 1;
      w += (size_t)r;
    }
    ssize_t r = read(fd, in, sizeof(in));
    if (r <= 0) return 1;
    if (nghttp2_session_mem_recv(b.h2, in, (size_t)r) < 0) return 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("%ld calls %s in %.3f s: %.0f calls/s (%ld response bytes)\n", total, path, secs,
         (double)total / secs, b.bytes);
  nghttp2_session_del(b.h2);
  close(fd);
  toy_stop();
  return 0;
}

/* --serve-tls DIR: the same toy over TLS, certificate made into DIR. */
static int serve_tls_main(const char *dir) {
  uint16_t port = 0;
  memset(&T, 0, sizeof(T));
  if (mailbox_init(&T.worker_mb, 1024) != 0 || make_cert(dir) != 0) return 1;
  net_server *s = tls_start(dir, &port);
  if (!s) return 1;
  printf("PORT %u\n", (unsigned)port);
  fflush(stdout);
  char buf[64];
  while (read(0, buf, sizeof(buf)) > 0) {
  }
  net_server_stop(s);
  mailbox_destroy(&T.worker_mb);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 2 && strcmp(argv[1], "--serve-tls") == 0) return serve_tls_main(argv[2]);
  if (argc > 2 && strcmp(argv[1], "--bench") == 0) {
    return bench_main(atol(argv[2]), argc > 3 ? atoi(argv[3]) : 256,
                      argc > 4 ? argv[4] : "/etcdserverpb.KV/Range");
  }
  if (argc > 1 && strcmp(argv[1], "--serve") == 0) return serve_main();
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  g_cunit = 1;
  CU_pSuite pure = CU_add_suite("net_pure", NULL, NULL);
  CU_add_test(pure, "decoder split every byte", test_dec_split_every_byte);
  CU_add_test(pure, "decoder many messages per chunk", test_dec_many_in_one_chunk);
  CU_add_test(pure, "decoder errors", test_dec_errors);
  CU_add_test(pure, "decoder big split message", test_dec_big_split);
  CU_add_test(pure, "percent encode", test_percent_encode);
  CU_add_test(pure, "http1 parse", test_http1_parse);
  CU_pSuite srv = CU_add_suite("net_server", suite_init, suite_clean);
  CU_add_test(srv, "unary ok", test_unary_ok);
  CU_add_test(srv, "unimplemented / unknown", test_unimplemented);
  CU_add_test(srv, "bad messages", test_bad_messages);
  CU_add_test(srv, "early reply resets", test_early_reply_resets);
  CU_add_test(srv, "garbage connection", test_garbage_connection);
  CU_add_test(srv, "many streams, posted replies", test_many_streams);
  CU_add_test(srv, "bidi stream", test_bidi_stream);
  CU_add_test(srv, "server stream, flow control", test_server_stream_flow_control);
  CU_add_test(srv, "server stream, big client windows: no stall", test_big_windows);
  CU_add_test(srv, "http1", test_http1);
  CU_add_test(srv, "http1 cancel", test_http1_cancel);
  CU_add_test(srv, "two loops", test_two_loops);
  CU_add_test(srv, "settings", test_max_streams_setting);
  CU_add_test(srv, "ticks", test_ticks);
  CU_add_test(srv, "connection limit", test_conn_limit);
  CU_add_test(srv, "port in use", test_port_in_use);
  CU_add_test(srv, "GOAWAY on stop", test_goaway_on_stop);
  CU_add_test(srv, "junk storm", test_junk_storm);
  CU_add_test(srv, "backpressure", test_backpressure);
  CU_add_test(srv, "tls", test_tls);
  CU_add_test(srv, "tls bad files", test_tls_bad_files);
  CU_add_test(srv, "header size limit", test_header_limit);
  CU_add_test(srv, "plain HTTP over HTTP/2", test_http_over_h2);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
