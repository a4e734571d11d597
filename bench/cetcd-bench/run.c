/*
 * run.c -- the closed-loop load generator.
 *
 * Clients are independent requesters with one request in flight each;
 * client i uses connection i % conns, and connection j is driven by event
 * loop (thread) j % threads, so a client and its connection always live on
 * one thread and nothing on the hot path is shared but two atomic counters.
 *
 * Every request takes a ticket (0 .. total-1) from a shared counter. The
 * ticket decides the key (--sequential-keys). Each thread appends its
 * latencies to its own array (no lock), and, for scenarios that report
 * kinds of requests apart (txn-mixed, registry), each request's kind to a
 * second one; the arrays are joined at the end.
 * With --duration the tickets are unbounded and a client stops taking
 * them once the duration has passed.
 *
 * txn-mixed (etcd's tool's txn-mixed): each request is a read with
 * probability rw_ratio / (1 + rw_ratio), else a write; a read is a Txn
 * whose one op is `range KEY [END]` (--limit, --consistency), a write a
 * Txn whose one op puts key (ticket mod key space) as txn-put does. The
 * read Txn is encoded once. Reads and writes are also reported apart.
 *
 * --rate is a token bucket of depth one, as the golang.org/x/time/rate
 * limiter etcd's tool uses: each request takes the next start slot,
 * max(next_slot, now), and moves next_slot on by 1/rate, so a server that
 * fell behind is not hit by a catch-up burst. A client whose slot has not
 * come waits in its thread's FIFO (slots are taken in increasing order, so
 * the FIFO is sorted).
 *
 * Connections are established before the clock starts, as etcd's benchmark
 * tool dials its clients first.
 *
 * Scenarios with their own files (lease.c, registry.c) plug in through a
 * bench_ops table (bench.h): their hooks start each ticket's request and
 * complete it with bench_req_done(); everything else here is shared.
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench/cetcd-bench/bench.h"
#include "cli/client/client.h"
#include "rpc.pb-c.h"

#define KEY_BYTES_MAX 4096

typedef struct bench_thread bench_thread;

typedef struct bench_client {
  bench_thread *t;
  cc_conn *conn;
  long ticket;
  double start;
  double due; /* --rate: start slot */
  uint64_t rng;
  struct bench_client *wait_next;
  uint8_t kind;  /* kept beside the latency when sh->kinds (txn-mixed: 1 = write) */
  uint8_t *key; /* key_size bytes (put), key_size * txn_ops (txn-put) */
  /* txn-put: the request's parts, built once per client */
  Etcdserverpb__PutRequest *txn_puts;
  Etcdserverpb__RequestOp *txn_ops;
  Etcdserverpb__RequestOp **txn_op_ptrs;
  bench_req req; /* what a bench_ops scenario sees of this client */
} bench_client;

typedef struct bench_shared {
  const bench_cfg *cfg;
  bench_result *res;
  atomic_long next_ticket;
  atomic_long completed; /* for the progress bar */
  _Atomic int64_t next_slot_ns; /* --rate: the next free start slot */
  int progress;          /* draw it: stderr is a terminal */
  double t0;
  double deadline;       /* --duration: no new request after this (0 = off) */
  long total;            /* tickets: cfg->total, or unbounded with --duration */
  uint8_t *value; /* val_size bytes, the same for every put */
  /* The request encoded once (range: all of it; put: with the key to be
   * overwritten at tmpl_key_off), so the hot path copies instead of
   * running protobuf-c's descriptor-driven packer; NULL: pack each time. */
  uint8_t *tmpl;
  size_t tmpl_len, tmpl_key_off;
  const bench_ops *ops; /* lease-keepalive, registry; NULL: the unary scenarios */
  int kinds;            /* keep a kind per latency (txn-mixed; ops->lat_kinds) */
} bench_shared;

struct bench_thread {
  bench_shared *sh;
  cc_loop *loop;
  cc_conn **conns; /* this thread's connections, by global index / threads */
  int n_conns;
  bench_client *clients;
  int n_clients;
  int active;                    /* clients still working */
  bench_client *wait_head, *wait_tail; /* --rate: clients waiting for their slot */
  bench_errs errs;
  long ok, failed;
  double *lat;      /* this thread's latencies (< 0: failed) */
  uint8_t *kind;    /* with sh->kinds: the request's kind, per lat entry */
  long n_lat, cap_lat;
  int lat_oom;      /* latencies lost because memory ran out */
  double last_done;
  int index;
  uint8_t *scratch; /* put: the template with this request's key */
  pthread_t tid;
  bench_ctx ctx; /* what a bench_ops scenario sees of this thread */
};

double bench_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now_s(void) { return bench_now_s(); }

void bench_errs_add(bench_errs *errs, int status, const char *message, long count) {
  for (int i = 0; i < errs->n; i++) {
    if (errs->e[i].status == status && strncmp(errs->e[i].message, message,
                                               sizeof errs->e[i].message - 1) == 0) {
      errs->e[i].count += count;
      return;
    }
  }
  if (errs->n == BENCH_ERRS_MAX) {
    errs->other += count;
    return;
  }
  bench_err *e = &errs->e[errs->n++];
  e->status = status;
  snprintf(e->message, sizeof e->message, "%s", message);
  e->count = count;
}

uint64_t bench_rng_next(uint64_t *s) {
  /* xorshift64*: plenty for picking keys */
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 2685821657736338717ull;
}

#define rng_next bench_rng_next
#define put_varint bench_put_varint

/* Go's binary.PutVarint (zigzag, then base-128), truncated to `cap` bytes:
 * the key encoding of etcd's benchmark tool. */
void bench_put_varint(uint8_t *dst, size_t cap, int64_t x) {
  uint64_t ux = (uint64_t)x << 1;
  if (x < 0) ux = ~ux;
  size_t i = 0;
  while (ux >= 0x80 && i < cap) {
    dst[i++] = (uint8_t)(ux | 0x80);
    ux >>= 7;
  }
  if (i < cap) dst[i] = (uint8_t)ux;
}

static void client_take(bench_client *c);

/* Takes the next start slot (seconds on the now_s() clock). */
static double rate_take_slot(bench_shared *sh) {
  int64_t now = (int64_t)(now_s() * 1e9);
  int64_t step = (int64_t)(1e9 / sh->cfg->rate);
  int64_t cur = atomic_load_explicit(&sh->next_slot_ns, memory_order_relaxed);
  int64_t slot;
  do {
    slot = cur > now ? cur : now;
  } while (!atomic_compare_exchange_weak_explicit(&sh->next_slot_ns, &cur, slot + step,
                                                  memory_order_relaxed, memory_order_relaxed));
  return (double)slot * 1e-9;
}

/* Appends one latency (< 0: failed) and, with sh->kinds, its kind to the
 * thread's arrays. */
static void thread_add_lat(bench_thread *t, double lat, uint8_t kind) {
  int kinds = t->sh->kinds;
  if (t->n_lat == t->cap_lat) {
    long cap = t->cap_lat ? t->cap_lat * 2 : 4096;
    double *l = realloc(t->lat, sizeof *l * (size_t)cap);
    if (l) t->lat = l;
    uint8_t *k = kinds ? realloc(t->kind, (size_t)cap) : NULL;
    if (k) t->kind = k;
    if (!l || (kinds && !k)) {
      t->lat_oom++;
      return;
    }
    t->cap_lat = cap;
  }
  if (kinds) t->kind[t->n_lat] = kind;
  t->lat[t->n_lat++] = lat;
}

static void client_done(bench_client *c, int status, const char *message) {
  bench_thread *t = c->t;
  double end = now_s();
  t->last_done = end;
  if (t->sh->progress) atomic_fetch_add_explicit(&t->sh->completed, 1, memory_order_relaxed);
  if (status == CC_STATUS_OK) {
    thread_add_lat(t, end - c->start, c->kind);
    t->ok++;
  } else {
    thread_add_lat(t, -1.0, c->kind);
    t->failed++;
    bench_errs_add(&t->errs, status, message, 1);
  }
  client_take(c);
}

static void on_reply(void *ud, const cc_reply *r) { client_done(ud, r->status, r->message); }

void bench_req_done(bench_req *r, int status, const char *message) {
  bench_client *c = (bench_client *)(void *)((char *)r - offsetof(bench_client, req));
  c->kind = r->kind;
  client_done(c, status, message);
}

/* txn-put: txn_ops puts on consecutive keys, as etcd's tool builds them. */
static int client_send_txn(bench_client *c) {
  const bench_cfg *cfg = c->t->sh->cfg;
  size_t ks = (size_t)cfg->key_size;
  memset(c->key, 0, ks * (size_t)cfg->txn_ops);
  for (int j = 0; j < cfg->txn_ops; j++) {
    long k = (c->ticket * cfg->txn_ops + j) % cfg->key_space_size;
    put_varint(c->key + ks * (size_t)j, ks, k);
  }
  Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
  req.n_success = (size_t)cfg->txn_ops;
  req.success = c->txn_op_ptrs;
  return cc_unary(c->conn, CC_PATH_TXN, &req.base, on_reply, c);
}

static void client_send(bench_client *c) {
  const bench_cfg *cfg = c->t->sh->cfg;
  int rv;
  c->start = now_s();
  if (c->t->sh->ops) {
    c->req.ticket = c->ticket;
    c->req.start = c->start;
    rv = c->t->sh->ops->send(&c->req);
    c->kind = c->req.kind; /* for the error below */
  } else if (cfg->scenario == BENCH_TXN_MIXED) {
    /* etcd's tool: read with probability rw / (1 + rw) */
    double u = (double)(rng_next(&c->rng) >> 11) * 0x1p-53;
    c->kind = !(u < cfg->rw_ratio / (1.0 + cfg->rw_ratio));
    bench_shared *sh = c->t->sh;
    rv = c->kind ? client_send_txn(c)
                 : cc_unary_raw(c->conn, CC_PATH_TXN, sh->tmpl, sh->tmpl_len, on_reply, c);
  } else if (cfg->scenario == BENCH_TXN_PUT) {
    rv = client_send_txn(c);
  } else if (cfg->scenario == BENCH_PUT) {
    long k = cfg->sequential_keys ? c->ticket % cfg->key_space_size
                                  : (long)(rng_next(&c->rng) % (uint64_t)cfg->key_space_size);
    bench_shared *sh = c->t->sh;
    if (sh->tmpl) {
      uint8_t *buf = c->t->scratch;
      memset(buf + sh->tmpl_key_off, 0, (size_t)cfg->key_size);
      put_varint(buf + sh->tmpl_key_off, (size_t)cfg->key_size, k);
      rv = cc_unary_raw(c->conn, CC_PATH_PUT, buf, sh->tmpl_len, on_reply, c);
      goto sent;
    }
    memset(c->key, 0, (size_t)cfg->key_size);
    put_varint(c->key, (size_t)cfg->key_size, k);
    Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
    req.key.data = c->key;
    req.key.len = (size_t)cfg->key_size;
    req.value.data = c->t->sh->value;
    req.value.len = (size_t)cfg->val_size;
    rv = cc_unary(c->conn, CC_PATH_PUT, &req.base, on_reply, c);
  } else {
    bench_shared *sh = c->t->sh;
    rv = cc_unary_raw(c->conn, CC_PATH_RANGE, sh->tmpl, sh->tmpl_len, on_reply, c);
  }
sent:
  if (rv != 0) client_done(c, CC_STATUS_RESOURCE_EXHAUSTED, "client out of memory");
}

static uint8_t *pack_alloc(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *p = malloc(*len ? *len : 1);
  if (p) protobuf_c_message_pack(m, p);
  return p;
}

/* txn-mixed's read: a Txn with one range op. KEY "" without END reads
 * the whole key space, as etcd's tool's read (key and end "\0"). */
static int shared_make_read_txn(bench_shared *sh) {
  const bench_cfg *cfg = sh->cfg;
  static uint8_t zero = 0;
  Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
  rr.key.data = (uint8_t *)cfg->range_key;
  rr.key.len = strlen(cfg->range_key);
  if (cfg->range_end) {
    rr.range_end.data = (uint8_t *)cfg->range_end;
    rr.range_end.len = strlen(cfg->range_end);
  } else if (rr.key.len == 0) {
    rr.key.data = rr.range_end.data = &zero;
    rr.key.len = rr.range_end.len = 1;
  }
  rr.serializable = cfg->serializable ? 1 : 0;
  rr.limit = cfg->limit;
  Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
  op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
  op.request_range = &rr;
  Etcdserverpb__RequestOp *ops[1] = {&op};
  Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
  req.n_success = 1;
  req.success = ops;
  sh->tmpl = pack_alloc(&req.base, &sh->tmpl_len);
  return sh->tmpl ? 0 : -1;
}

/* Encodes the scenario's request once (see bench_shared.tmpl). Returns -1
 * only if memory ran out. */
static int shared_make_template(bench_shared *sh) {
  const bench_cfg *cfg = sh->cfg;
  if (cfg->scenario == BENCH_TXN_MIXED) return shared_make_read_txn(sh);
  if (cfg->scenario == BENCH_RANGE) {
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)cfg->range_key;
    req.key.len = strlen(cfg->range_key);
    if (cfg->range_end) {
      req.range_end.data = (uint8_t *)cfg->range_end;
      req.range_end.len = strlen(cfg->range_end);
    }
    req.serializable = cfg->serializable ? 1 : 0;
    req.limit = cfg->limit;
    req.count_only = cfg->count_only ? 1 : 0;
    sh->tmpl = pack_alloc(&req.base, &sh->tmpl_len);
    return sh->tmpl ? 0 : -1;
  }
  if (cfg->scenario != BENCH_PUT) return 0;
  /* PutRequest's key is field 1, encoded first: tag byte, length varint,
   * the bytes. Check that against protobuf-c with a probe key; if the
   * layout ever differs, keep packing per request. */
  size_t ks = (size_t)cfg->key_size, lv = 1;
  for (size_t v = ks; v >= 0x80; v >>= 7) lv++;
  uint8_t *probe_key = malloc(ks);
  if (!probe_key) return -1;
  memset(probe_key, 0xab, ks);
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  req.key.data = probe_key;
  req.key.len = ks;
  req.value.data = sh->value;
  req.value.len = (size_t)cfg->val_size;
  sh->tmpl = pack_alloc(&req.base, &sh->tmpl_len);
  free(probe_key);
  if (!sh->tmpl) return -1;
  sh->tmpl_key_off = 1 + lv;
  int ok = sh->tmpl_len >= sh->tmpl_key_off + ks && sh->tmpl[0] == 0x0a;
  for (size_t i = 0; ok && i < ks; i++) ok = sh->tmpl[sh->tmpl_key_off + i] == 0xab;
  if (!ok) {
    free(sh->tmpl);
    sh->tmpl = NULL;
  }
  return 0;
}

/* Takes the next ticket and starts it now or queues it for its slot. */
static void client_take(bench_client *c) {
  bench_thread *t = c->t;
  bench_shared *sh = t->sh;
  long k = atomic_fetch_add_explicit(&sh->next_ticket, 1, memory_order_relaxed);
  if (k >= sh->total || (sh->deadline > 0 && now_s() >= sh->deadline)) {
    t->active--;
    return;
  }
  c->ticket = k;
  if (sh->cfg->rate > 0 && (c->due = rate_take_slot(sh)) > now_s()) {
    c->wait_next = NULL;
    if (t->wait_tail) t->wait_tail->wait_next = c;
    else t->wait_head = c;
    t->wait_tail = c;
    return;
  }
  client_send(c);
}

/* Starts the waiting clients whose slot has come; returns the ms to wait
 * for the next one (-1: none waiting). */
static int thread_release_due(bench_thread *t) {
  double now = now_s();
  while (t->wait_head) {
    bench_client *c = t->wait_head;
    if (c->due > now) return (int)((c->due - now) * 1000.0) + 1;
    t->wait_head = c->wait_next;
    if (!t->wait_head) t->wait_tail = NULL;
    client_send(c);
  }
  return -1;
}

int bench_progress_wanted(void) { return isatty(STDOUT_FILENO) && isatty(STDERR_FILENO); }

/* A progress bar on stderr, like etcd's tool shows, when it is a terminal. */
void bench_progress_draw(long done, long total, int final) {
  if (total <= 0) total = 1;
  if (done > total) done = total;
  int width = 50, fill = (int)(done * width / total);
  fprintf(stderr, "\r %ld / %ld [", done, total);
  for (int i = 0; i < width; i++) fputc(i < fill ? '=' : (i == fill ? '>' : ' '), stderr);
  fprintf(stderr, "] %3ld%%%s", done * 100 / total, final ? "\n" : "");
}

/* With --duration the bar counts seconds. */
static void progress_draw(bench_shared *sh, int final) {
  if (sh->deadline > 0) {
    double d = sh->cfg->duration_s, el = now_s() - sh->t0;
    bench_progress_draw(final ? (long)d : (long)el, (long)d, final);
    return;
  }
  bench_progress_draw(atomic_load_explicit(&sh->completed, memory_order_relaxed),
                      sh->cfg->total, final);
}

static void *thread_main(void *arg) {
  bench_thread *t = arg;
  int drawer = t->sh->progress && t->index == 0;
  double next_draw = 0;
  const bench_ops *ops = t->sh->ops;
  t->active = t->n_clients;
  for (int i = 0; i < t->n_clients; i++) client_take(&t->clients[i]);
  while (t->active > 0) {
    int wait = thread_release_due(t);
    if (wait < 0 || wait > 100) wait = 100;
    int tick = ops && ops->tick ? ops->tick(&t->ctx) : -1;
    if (tick >= 0 && tick < wait) wait = tick;
    if (drawer && now_s() >= next_draw) {
      progress_draw(t->sh, 0);
      next_draw = now_s() + 0.2;
    }
    if (cc_loop_run_once(t->loop, wait) < 0) {
      perror("cetcd-bench: epoll_wait");
      break;
    }
  }
  if (ops && ops->thread_finish) ops->thread_finish(&t->ctx);
  return NULL;
}

int bench_connect(const bench_cfg *cfg, cc_loop *loop, cc_conn **conns, int n, int first,
                  int step) {
  for (int j = 0; j < n; j++) {
    int global = first + j * step;
    const char *ep = cfg->endpoints[global % cfg->n_endpoints];
    char err[512];
    cc_tls_opts tls = {.ca_file = cfg->cacert, .cert_file = cfg->cert, .key_file = cfg->key,
                       .insecure_skip_verify = cfg->insecure_skip_tls_verify};
    int want_tls = cfg->cacert || cfg->cert || cfg->key || cfg->insecure_skip_tls_verify;
    conns[j] = cc_conn_open_tls(loop, ep, want_tls ? &tls : NULL, err, sizeof err);
    if (!conns[j]) {
      fprintf(stderr, "cetcd-bench: %s\n", err);
      return -1;
    }
  }
  double deadline = now_s() + 5.0;
  int failed = 0;
  for (;;) {
    int pending = 0;
    failed = 0;
    for (int j = 0; j < n; j++) {
      int st = cc_conn_state(conns[j]);
      pending += st == CC_CONN_CONNECTING;
      failed += st == CC_CONN_FAILED;
    }
    if (!pending || now_s() > deadline) break;
    cc_loop_run_once(loop, 50);
  }
  return failed;
}

/* Opens this thread's connections and waits (up to 5 s) until they are up. */
static int thread_connect(bench_thread *t, const bench_cfg *cfg, int index) {
  return bench_connect(cfg, t->loop, t->conns, t->n_conns, index, cfg->threads);
}

/* The txn-put request's parts; keys point into c->key, rewritten per txn. */
static int client_setup_txn(bench_client *c, const bench_cfg *cfg, uint8_t *value) {
  size_t n = (size_t)cfg->txn_ops;
  c->txn_puts = calloc(n, sizeof *c->txn_puts);
  c->txn_ops = calloc(n, sizeof *c->txn_ops);
  c->txn_op_ptrs = calloc(n, sizeof *c->txn_op_ptrs);
  if (!c->txn_puts || !c->txn_ops || !c->txn_op_ptrs) return -1;
  for (size_t j = 0; j < n; j++) {
    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    put.key.data = c->key + (size_t)cfg->key_size * j;
    put.key.len = (size_t)cfg->key_size;
    put.value.data = value;
    put.value.len = (size_t)cfg->val_size;
    c->txn_puts[j] = put;
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &c->txn_puts[j];
    c->txn_ops[j] = op;
    c->txn_op_ptrs[j] = &c->txn_ops[j];
  }
  return 0;
}

/* A bench_ops scenario's work before the clock: every thread's setup, then
 * every thread's ready (so that watchers see none of the setup's writes). */
static int threads_setup_ops(bench_thread *ts, bench_shared *sh, const bench_cfg *cfg) {
  for (int i = 0; i < cfg->threads; i++) {
    bench_thread *t = &ts[i];
    t->ctx = (bench_ctx){.cfg = cfg, .loop = t->loop, .conns = t->conns, .n_conns = t->n_conns,
                         .index = i, .n_reqs = t->n_clients};
    t->ctx.reqs = calloc((size_t)t->n_clients + 1, sizeof *t->ctx.reqs);
    if (!t->ctx.reqs) return -1;
    for (int j = 0; j < t->n_clients; j++) t->ctx.reqs[j] = &t->clients[j].req;
  }
  for (int i = 0; i < cfg->threads; i++)
    if (sh->ops->thread_setup(&ts[i].ctx) != 0) return -1;
  for (int i = 0; i < cfg->threads; i++)
    if (sh->ops->thread_ready && sh->ops->thread_ready(&ts[i].ctx) != 0) return -1;
  return 0;
}

static int threads_setup(bench_thread *ts, bench_shared *sh, const bench_cfg *cfg) {
  int failed = 0;
  for (int i = 0; i < cfg->threads; i++) {
    bench_thread *t = &ts[i];
    t->sh = sh;
    t->index = i;
    t->loop = cc_loop_new();
    t->n_conns = (cfg->conns - i + cfg->threads - 1) / cfg->threads;
    t->conns = calloc((size_t)t->n_conns, sizeof *t->conns);
    t->clients = calloc((size_t)cfg->clients, sizeof *t->clients);
    if (!t->loop || !t->conns || !t->clients) return -1;
    if (sh->tmpl && cfg->scenario == BENCH_PUT) {
      t->scratch = malloc(sh->tmpl_len);
      if (!t->scratch) return -1;
      memcpy(t->scratch, sh->tmpl, sh->tmpl_len);
    }
    int f = thread_connect(t, cfg, i);
    if (f < 0) return -1;
    failed += f;
  }
  sh->res->connect_failed = failed;
  /* client i -> connection i % conns -> thread (i % conns) % threads */
  for (int i = 0; i < cfg->clients; i++) {
    int conn = i % cfg->conns;
    bench_thread *t = &ts[conn % cfg->threads];
    bench_client *c = &t->clients[t->n_clients++];
    c->t = t;
    c->conn = t->conns[conn / cfg->threads];
    c->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    c->key = calloc((size_t)cfg->txn_ops, (size_t)cfg->key_size + 1);
    if (!c->key) return -1;
    if ((cfg->scenario == BENCH_TXN_PUT || cfg->scenario == BENCH_TXN_MIXED) &&
        client_setup_txn(c, cfg, sh->value) != 0)
      return -1;
    c->req = (bench_req){.ctx = &t->ctx, .conn = c->conn, .index = i};
  }
  return sh->ops ? threads_setup_ops(ts, sh, cfg) : 0;
}

static void threads_free(bench_thread *ts, int n, const bench_ops *ops) {
  for (int i = 0; i < n; i++) {
    if (ops && ops->thread_free && ts[i].ctx.cfg) ops->thread_free(&ts[i].ctx);
    free(ts[i].ctx.reqs);
    for (int j = 0; j < ts[i].n_clients; j++) {
      bench_client *c = &ts[i].clients[j];
      free(c->key);
      free(c->txn_puts);
      free(c->txn_ops);
      free(c->txn_op_ptrs);
    }
    free(ts[i].clients);
    free(ts[i].lat);
    free(ts[i].kind);
    free(ts[i].conns);
    free(ts[i].scratch);
    cc_loop_free(ts[i].loop);
  }
  free(ts);
}

static double rusage_s(const struct timeval *tv) {
  return (double)tv->tv_sec + (double)tv->tv_usec * 1e-6;
}

/* Joins the threads' latency arrays into res->lat (and lat_kind). */
static int threads_join_lat(bench_thread *ts, const bench_cfg *cfg, int kinds,
                            bench_result *res) {
  long n = 0;
  for (int i = 0; i < cfg->threads; i++) n += ts[i].n_lat;
  res->lat = malloc(sizeof *res->lat * (size_t)(n ? n : 1));
  if (kinds) res->lat_kind = malloc((size_t)(n ? n : 1));
  if (!res->lat || (kinds && !res->lat_kind)) return -1;
  for (int i = 0; i < cfg->threads; i++) {
    memcpy(res->lat + res->n_lat, ts[i].lat, sizeof *res->lat * (size_t)ts[i].n_lat);
    if (res->lat_kind) memcpy(res->lat_kind + res->n_lat, ts[i].kind, (size_t)ts[i].n_lat);
    res->n_lat += ts[i].n_lat;
    if (ts[i].lat_oom) bench_errs_add(&res->errs, CC_STATUS_RESOURCE_EXHAUSTED,
                                      "bench out of memory: latencies not kept", ts[i].lat_oom);
  }
  return 0;
}

static void threads_collect(bench_thread *ts, const bench_cfg *cfg, bench_result *res,
                            double t0) {
  double last = t0;
  for (int i = 0; i < cfg->threads; i++) {
    res->ok += ts[i].ok;
    res->failed += ts[i].failed;
    if (ts[i].last_done > last) last = ts[i].last_done;
    for (int j = 0; j < ts[i].errs.n; j++)
      bench_errs_add(&res->errs, ts[i].errs.e[j].status, ts[i].errs.e[j].message,
                     ts[i].errs.e[j].count);
    res->errs.other += ts[i].errs.other;
  }
  res->issued = res->ok + res->failed;
  res->wall_s = last - t0;
}

void bench_usage_begin(const bench_cfg *cfg, bench_usage *u) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  u->user_s = rusage_s(&ru.ru_utime);
  u->sys_s = rusage_s(&ru.ru_stime);
  u->srv_cpu_s = cfg->server_pid ? bench_proc_cpu_s(cfg->server_pid) : -1;
}

void bench_usage_end(const bench_cfg *cfg, const bench_usage *u, bench_result *res) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  res->cpu_user_s = rusage_s(&ru.ru_utime) - u->user_s;
  res->cpu_sys_s = rusage_s(&ru.ru_stime) - u->sys_s;
  res->server_hwm_kb = res->server_rss_kb = -1;
  res->server_cpu_s = -1;
  if (cfg->server_pid) {
    double srv_cpu1 = bench_proc_cpu_s(cfg->server_pid);
    if (u->srv_cpu_s >= 0 && srv_cpu1 >= 0) res->server_cpu_s = srv_cpu1 - u->srv_cpu_s;
    res->server_hwm_kb = bench_proc_status_kb(cfg->server_pid, "VmHWM:");
    res->server_rss_kb = bench_proc_status_kb(cfg->server_pid, "VmRSS:");
  }
}

/* txn-mixed: reads and writes apart, as etcd's tool reports them. */
static void txn_mixed_counts(const bench_result *res, long *r, long *w, long *rf, long *wf) {
  *r = *w = *rf = *wf = 0;
  for (long i = 0; i < res->n_lat; i++) {
    int write = res->lat_kind[i];
    if (res->lat[i] < 0) (write ? (*wf)++ : (*rf)++);
    (write ? (*w)++ : (*r)++);
  }
}

static void txn_mixed_extra_json(const bench_cfg *cfg, const bench_result *res) {
  (void)cfg;
  long r, w, rf, wf;
  txn_mixed_counts(res, &r, &w, &rf, &wf);
  printf(",\"extra\":{\"reads\":%ld,\"read_errors\":%ld,\"writes\":%ld,\"write_errors\":%ld,",
         r, rf, w, wf);
  bench_stats s;
  bench_stats_compute(res->lat, res->lat_kind, 0, res->n_lat, res->wall_s, &s);
  bench_stats_json("read_latency_secs", &s);
  free(s.lats);
  putchar(',');
  bench_stats_compute(res->lat, res->lat_kind, 1, res->n_lat, res->wall_s, &s);
  bench_stats_json("write_latency_secs", &s);
  free(s.lats);
  putchar('}');
}

static void txn_mixed_extra_text(const bench_cfg *cfg, const bench_result *res) {
  (void)cfg;
  long r, w, rf, wf;
  txn_mixed_counts(res, &r, &w, &rf, &wf);
  printf("Total Read Ops: %ld (%ld failed), Total Write Ops: %ld (%ld failed)\n", r, rf, w, wf);
  bench_stats s;
  bench_stats_compute(res->lat, res->lat_kind, 0, res->n_lat, res->wall_s, &s);
  bench_stats_text("Reads", &s);
  free(s.lats);
  bench_stats_compute(res->lat, res->lat_kind, 1, res->n_lat, res->wall_s, &s);
  bench_stats_text("Writes", &s);
  free(s.lats);
}

int bench_run(const bench_cfg *cfg, bench_result *res) {
  if (cfg->scenario == BENCH_WATCH || cfg->scenario == BENCH_WATCH_LATENCY)
    return bench_watch_run(cfg, res);
  int rc = -1;
  bench_shared sh = {.cfg = cfg, .res = res};
  if (cfg->scenario == BENCH_LEASE_KEEPALIVE) sh.ops = &bench_lease_keepalive_ops;
  if (cfg->scenario == BENCH_REGISTRY) sh.ops = &bench_registry_ops;
  sh.kinds = cfg->scenario == BENCH_TXN_MIXED || (sh.ops && sh.ops->lat_kinds);
  bench_thread *ts = calloc((size_t)cfg->threads, sizeof *ts);
  sh.total = cfg->duration_s > 0 ? LONG_MAX : cfg->total;
  sh.value = malloc((size_t)cfg->val_size + 1);
  if (!ts || !sh.value) {
    fprintf(stderr, "cetcd-bench: out of memory\n");
    goto out;
  }
  /* Printable random bytes: the content does not matter to the server and
   * keeps `etcdctl get` output readable. */
  uint64_t seed = (uint64_t)time(NULL) | 1;
  for (int i = 0; i < cfg->val_size; i++) sh.value[i] = (uint8_t)('a' + rng_next(&seed) % 26);
  sh.progress = bench_progress_wanted();
  if (shared_make_template(&sh) != 0) {
    fprintf(stderr, "cetcd-bench: out of memory\n");
    goto out;
  }
  if (threads_setup(ts, &sh, cfg) != 0) goto out;

  for (int i = 0; i < cfg->threads && cfg->duration_s <= 0; i++) {
    /* room for the thread's share, so the hot path never reallocates */
    ts[i].cap_lat = cfg->total / cfg->threads + cfg->clients + 1;
    ts[i].lat = malloc(sizeof *ts[i].lat * (size_t)ts[i].cap_lat);
    if (sh.kinds) ts[i].kind = malloc((size_t)ts[i].cap_lat);
    if (!ts[i].lat || (sh.kinds && !ts[i].kind)) {
      fprintf(stderr, "cetcd-bench: out of memory\n");
      goto out;
    }
  }

  bench_usage usage;
  bench_usage_begin(cfg, &usage);
  sh.t0 = now_s();
  if (cfg->duration_s > 0) sh.deadline = sh.t0 + cfg->duration_s;
  if (cfg->threads == 1) {
    thread_main(&ts[0]);
  } else {
    for (int i = 0; i < cfg->threads; i++)
      if (pthread_create(&ts[i].tid, NULL, thread_main, &ts[i]) != 0) {
        fprintf(stderr, "cetcd-bench: pthread_create failed\n");
        abort(); /* threads already running share ts; nothing sane to undo */
      }
    for (int i = 0; i < cfg->threads; i++) pthread_join(ts[i].tid, NULL);
  }
  if (sh.progress) progress_draw(&sh, 1);
  bench_usage_end(cfg, &usage, res);
  threads_collect(ts, cfg, res, sh.t0);
  if (threads_join_lat(ts, cfg, sh.kinds, res) != 0) {
    fprintf(stderr, "cetcd-bench: out of memory\n");
    goto out;
  }
  if (cfg->scenario == BENCH_TXN_MIXED) {
    res->extra_json = txn_mixed_extra_json;
    res->extra_text = txn_mixed_extra_text;
  }
  if (sh.ops) {
    bench_ctx *xs[64]; /* --threads is at most 64 */
    for (int i = 0; i < cfg->threads; i++) xs[i] = &ts[i].ctx;
    sh.ops->collect(xs, cfg->threads, res);
  }
  rc = 0;
out:
  if (ts) threads_free(ts, cfg->threads, sh.ops);
  free(sh.value);
  free(sh.tmpl);
  return rc;
}
