/*
 * registry.c -- the registry scenario: the service-registry load cetcd's
 * users put on it.
 *
 * DESIGN
 *
 * --instances instances spread over --services services (instance i belongs
 * to service i % services). An instance is registered the way registry
 * clients do it: LeaseGrant with TTL --ttl, then Put
 * /registry/svc-NNNN/inst-NNNNNN with that lease and a ~110-byte JSON value
 * (address, version, zone, and the bench's send time). While registered,
 * the instance's lease is kept alive every TTL/3 (clientv3's KeepAlive
 * pace) over keepalive streams shared by the instances: one LeaseKeepAlive
 * stream per connection, many keepalives in flight on each, answers
 * matched by lease id.
 *
 * Before the clock: every instance is registered, --clients at a time;
 * then --watchers prefix watchers open (watcher w watches service
 * w % services, one watch stream each), and the run waits until every one
 * is created. The setup's time and rate go in "extra".
 *
 * The timed phase: --total unary requests (or as many as --duration
 * allows) by --clients closed-loop clients (--rate applies, as for every
 * scenario). A client's next request is a
 * step of a churn cycle if it is in one, else a new churn cycle if one is
 * due (--churn-rate per second over all clients, a token bucket of depth
 * one: falling behind is not made up by a burst), else a discovery get: a
 * prefix Range of a random service (--consistency l|s). A churn cycle is
 * an instance going away and coming back: LeaseRevoke of its lease (the
 * server deletes its key), then LeaseGrant and Put with the new lease. The
 * instance is picked at random among those registered, not churning and
 * with no keepalive in flight (a keepalive racing the revoke would find no
 * lease, which is reported as an error). Each of these RPCs is one request
 * (one latency sample, its op kept beside it in run.c's per-thread
 * latency arrays: bench_req.kind); the report's main figures are over all
 * of them.
 *
 * Measured in "extra": per-op latency and errors (discovery_get,
 * deregister_revoke, register_grant, register_put), register end to end
 * (grant sent -> put answered), keepalive (sent -> answered, in the
 * background), and the watch event latency: register put sent -> a
 * watcher of that service sees the event (the send time travels in the
 * value; CLOCK_MONOTONIC is one clock for all threads).
 *
 * Errors: besides failed requests, a keepalive answered with TTL <= 0 (the
 * lease is gone), a keepalive stream that ends with keepalives in flight,
 * a watch that is canceled or ends, and a watcher that misses an event.
 * After the last request each watcher must have seen one event per
 * successful register put and one per successful revoke of its service
 * during the timed phase; the run waits up to 10 s for stragglers, then
 * counts what is missing. These background errors are added to "errors"
 * and the error distribution (so ok + errors can exceed "requests").
 *
 * Lease ids are chosen by the bench (LeaseGrant's ID, as etcd allows), so
 * a keepalive answer leads straight to its instance: a random per-run salt
 * (bits 40..61), the instance's registration count (bits 24..39), the
 * instance number (bits 0..23; hence at most 2^24 instances).
 *
 * Threads: instance i and its leases belong to thread i % threads, which
 * alone registers, churns and keeps it alive; watchers are spread the same
 * way; the per-service expected-event counts are shared atomics.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/cetcd-bench/bench.h"
#include "kv.pb-c.h"
#include "rpc.pb-c.h"

#define RG_KEY_MAX 64
#define RG_VAL_MAX 192
#define RG_PROBES 8          /* tries to find an instance to churn */
#define RG_DRAIN_S 10.0      /* the wait for watch events after the last request */
#define RG_SETUP_WAIT_S 30.0 /* watchers must be created within this */

enum { OP_DISCOVER, OP_REVOKE, OP_GRANT, OP_PUT, N_OPS };
static const char *const op_name[N_OPS] = {"discovery_get", "deregister_revoke",
                                           "register_grant", "register_put"};

enum { PH_IDLE, PH_GRANT, PH_PUT }; /* a client's next churn step */

typedef struct rg_thread rg_thread;

typedef struct rg_inst {
  int64_t lease;   /* current lease id */
  uint16_t gen;    /* registrations so far (in the lease id) */
  uint8_t up;      /* the lease exists: keep it alive */
  uint8_t registered; /* the key exists */
  uint8_t churning;   /* in a churn cycle (or left broken by a failed one) */
  uint8_t ka_inflight;
  double ka_sent;
} rg_inst;

typedef struct rg_due { /* a keepalive to send */
  double due;
  uint32_t inst; /* local index */
  uint16_t gen;
} rg_due;

typedef struct rg_samples {
  double *v;
  long n, cap;
} rg_samples;

typedef struct rg_stream { /* a keepalive or watch stream; one per open */
  rg_thread *t;
  cc_stream *st;
  int j; /* keepalive: connection index; watch: watcher index */
} rg_stream;

typedef struct rg_watcher {
  rg_stream *s;
  int svc;
  int created;
  long seen; /* events received */
} rg_watcher;

typedef struct rg_client {
  bench_req *req;
  rg_thread *t;
  int phase;
  long inst; /* churn, setup: local instance */
  double reg_start;
  uint64_t rng;
} rg_client;

/* What the threads share; set up by thread 0's setup (setups run one after
 * the other), freed by thread 0's free. */
static struct {
  _Atomic long *expected; /* per service: events each of its watchers must see */
  atomic_int running;    /* threads still making requests */
  int64_t salt;
} rg_sh;

struct rg_thread {
  bench_ctx *x;
  rg_inst *inst;
  long n_inst; /* local i is global i * threads + index */
  rg_client *c;
  rg_stream **ka; /* per connection: the open keepalive stream, or NULL */
  rg_watcher *w;
  int n_w;
  rg_due *ring; /* keepalives by due time (pushed in time order) */
  size_t ring_cap, ring_head, ring_len;
  double period;
  double next_churn, churn_step;
  /* setup */
  long reg_next, setup_active, setup_failed;
  bench_errs setup_errs;
  double setup_s;
  /* background errors */
  bench_errs errs;
  long bg_failed;
  rg_samples ka_lat, watch_lat, reg_lat;
  long ka_sent, ka_late, churns, watch_events;
};

/* ---- small helpers ---------------------------------------------------------- */

static void samples_add(rg_samples *s, double v) {
  if (s->n == s->cap) {
    long cap = s->cap ? s->cap * 2 : 1024;
    double *p = realloc(s->v, (size_t)cap * sizeof *p);
    if (!p) return; /* a lost sample; the counts stay right */
    s->v = p;
    s->cap = cap;
  }
  s->v[s->n++] = v;
}

static void bg_error(rg_thread *t, int status, const char *message, long count) {
  t->bg_failed += count;
  bench_errs_add(&t->errs, status, message, count);
}

static long global_of(const rg_thread *t, long local) {
  return local * t->x->cfg->threads + t->x->index;
}

static int svc_of(const rg_thread *t, long local) {
  return (int)(global_of(t, local) % t->x->cfg->services);
}

static int64_t lease_id(const rg_thread *t, long local) {
  return rg_sh.salt << 40 | (int64_t)t->inst[local].gen << 24 | (int64_t)global_of(t, local);
}

static int prefix_of(char *buf, size_t cap, int svc) {
  return snprintf(buf, cap, "/registry/svc-%04d/", svc);
}

/* bench_now_s in ns: a double holds CLOCK_MONOTONIC's ns exactly up to
 * 2^53 ns (104 days of uptime), and to within a few ns beyond. */
static int64_t mono_ns(void) { return (int64_t)(bench_now_s() * 1e9); }

/* ---- keepalives ----------------------------------------------------------------- */

static void ring_push(rg_thread *t, long local, double due) {
  if (t->ring_len == t->ring_cap) {
    size_t cap = t->ring_cap ? t->ring_cap * 2 : 1024;
    rg_due *p = malloc(cap * sizeof *p);
    if (!p) return; /* the instance is no longer kept alive: its lease will expire */
    for (size_t i = 0; i < t->ring_len; i++) p[i] = t->ring[(t->ring_head + i) % t->ring_cap];
    free(t->ring);
    t->ring = p;
    t->ring_cap = cap;
    t->ring_head = 0;
  }
  t->ring[(t->ring_head + t->ring_len++) % t->ring_cap] =
      (rg_due){.due = due, .inst = (uint32_t)local, .gen = t->inst[local].gen};
}

static void ka_on_msg(void *ud, const uint8_t *data, size_t len) {
  rg_stream *s = ud;
  rg_thread *t = s->t;
  Etcdserverpb__LeaseKeepAliveResponse *k = etcdserverpb__lease_keep_alive_response__unpack(NULL, len, data);
  if (!k) {
    bg_error(t, CC_STATUS_INTERNAL, "keepalive: undecodable LeaseKeepAliveResponse", 1);
    return;
  }
  int64_t id = k->id, ttl = k->ttl;
  etcdserverpb__lease_keep_alive_response__free_unpacked(k, NULL);
  long global = (long)(id & 0xffffff), threads = t->x->cfg->threads;
  long local = global / threads;
  if (global % threads != t->x->index || local >= t->n_inst || !t->inst[local].ka_inflight ||
      t->inst[local].lease != id) {
    bg_error(t, CC_STATUS_INTERNAL, "keepalive: answer for a lease not asked about", 1);
    return;
  }
  rg_inst *in = &t->inst[local];
  in->ka_inflight = 0;
  samples_add(&t->ka_lat, bench_now_s() - in->ka_sent);
  if (ttl <= 0) bg_error(t, 5 /* NotFound */, "keepalive: lease not found (TTL <= 0)", 1);
}

static void ka_on_close(void *ud, const cc_reply *r) {
  rg_stream *s = ud;
  rg_thread *t = s->t;
  int j = s->j, current = t->ka[j] == s;
  free(s);
  if (!current) return;
  t->ka[j] = NULL; /* the next keepalive reopens it */
  long lost = 0;
  for (long i = j; i < t->n_inst; i += t->x->n_conns)
    if (t->inst[i].ka_inflight) {
      t->inst[i].ka_inflight = 0;
      lost++;
    }
  if (lost)
    bg_error(t, r->status ? r->status : CC_STATUS_UNAVAILABLE,
             r->status ? r->message : "keepalive stream ended with keepalives in flight", lost);
}

static rg_stream *stream_open(rg_thread *t, int conn, int j, const char *path,
                              cc_stream_msg_cb on_msg, cc_stream_close_cb on_close) {
  rg_stream *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->t = t;
  s->j = j;
  s->st = cc_stream_open(t->x->conns[conn], path, on_msg, on_close, s);
  if (!s->st) {
    free(s);
    return NULL;
  }
  return s;
}

static void ka_send(rg_thread *t, long local, double now) {
  int j = (int)(local % t->x->n_conns);
  if (!t->ka[j])
    t->ka[j] = stream_open(t, j, j, CC_PATH_LEASE_KEEPALIVE, ka_on_msg, ka_on_close);
  rg_inst *in = &t->inst[local];
  Etcdserverpb__LeaseKeepAliveRequest q = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
  q.id = in->lease;
  if (!t->ka[j] || cc_stream_send(t->ka[j]->st, &q.base) != 0) {
    bg_error(t, CC_STATUS_UNAVAILABLE, "keepalive: could not send", 1);
    return;
  }
  in->ka_inflight = 1;
  in->ka_sent = now;
  t->ka_sent++;
}

/* Sends the keepalives that are due; returns ms until the next one, -1: none. */
static int ka_sweep(rg_thread *t) {
  double now = bench_now_s();
  while (t->ring_len > 0) {
    rg_due e = t->ring[t->ring_head];
    if (e.due > now) return (int)((e.due - now) * 1000.0) + 1;
    t->ring_head = (t->ring_head + 1) % t->ring_cap;
    t->ring_len--;
    rg_inst *in = &t->inst[e.inst];
    if (e.gen != in->gen || !in->up) continue; /* revoked since */
    if (in->ka_inflight) t->ka_late++; /* the last one is still unanswered */
    else ka_send(t, e.inst, now);
    ring_push(t, e.inst, now + t->period);
  }
  return -1;
}

/* ---- the unary calls of a registration ---------------------------------------------- */

static int send_grant(rg_client *c, cc_unary_cb cb) {
  rg_thread *t = c->t;
  Etcdserverpb__LeaseGrantRequest q = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
  q.ttl = t->x->cfg->ttl;
  q.id = lease_id(t, c->inst);
  return cc_unary(c->req->conn, CC_PATH_LEASE_GRANT, &q.base, cb, c);
}

/* The grant's answer: the lease exists, keep it alive from now on. */
static int grant_ok(rg_client *c, const cc_reply *r) {
  if (r->status != CC_STATUS_OK) return 0;
  rg_thread *t = c->t;
  rg_inst *in = &t->inst[c->inst];
  in->lease = lease_id(t, c->inst);
  in->up = 1;
  ring_push(t, c->inst, bench_now_s() + t->period);
  return 1;
}

static int send_put(rg_client *c, cc_unary_cb cb) {
  rg_thread *t = c->t;
  long g = global_of(t, c->inst);
  char key[RG_KEY_MAX], val[RG_VAL_MAX];
  int kn = prefix_of(key, sizeof key, svc_of(t, c->inst));
  kn += snprintf(key + kn, sizeof key - (size_t)kn, "inst-%06ld", g);
  int vn = snprintf(val, sizeof val,
                    "{\"instance\":\"inst-%06ld\",\"addr\":\"10.%ld.%ld.%ld:8080\","
                    "\"version\":\"v1.4.%u\",\"zone\":\"zone-%c\",\"sent_ns\":%lld}",
                    g, (g >> 16) & 255, (g >> 8) & 255, g & 255, t->inst[c->inst].gen,
                    'a' + (int)(g % 3), (long long)mono_ns());
  Etcdserverpb__PutRequest q = ETCDSERVERPB__PUT_REQUEST__INIT;
  q.key = (ProtobufCBinaryData){(size_t)kn, (uint8_t *)key};
  q.value = (ProtobufCBinaryData){(size_t)vn, (uint8_t *)val};
  q.lease = t->inst[c->inst].lease;
  return cc_unary(c->req->conn, CC_PATH_PUT, &q.base, cb, c);
}

/* ---- setup: register every instance ------------------------------------------------- */

static void setup_next(rg_client *c);

static void setup_failed(rg_client *c, const cc_reply *r) {
  c->t->setup_failed++;
  bench_errs_add(&c->t->setup_errs, r->status, r->message, 1);
}

static void setup_on_put(void *ud, const cc_reply *r) {
  rg_client *c = ud;
  if (r->status == CC_STATUS_OK) c->t->inst[c->inst].registered = 1;
  else setup_failed(c, r);
  setup_next(c);
}

static void setup_on_grant(void *ud, const cc_reply *r) {
  rg_client *c = ud;
  if (!grant_ok(c, r)) {
    setup_failed(c, r);
    setup_next(c);
  } else if (send_put(c, setup_on_put) != 0) {
    c->t->setup_active--;
  }
}

static void setup_next(rg_client *c) {
  rg_thread *t = c->t;
  if (t->reg_next >= t->n_inst) {
    t->setup_active--;
    return;
  }
  c->inst = t->reg_next++;
  if (send_grant(c, setup_on_grant) != 0) t->setup_active--;
}

/* Runs the loop (and the keepalives) until *pending is 0 or the deadline. */
static void run_until(rg_thread *t, const long *pending, double deadline) {
  while (*pending > 0 && bench_now_s() < deadline) {
    int wait = ka_sweep(t);
    if (wait < 0 || wait > 100) wait = 100;
    if (cc_loop_run_once(t->x->loop, wait) < 0) break;
  }
}

static int thread_alloc(bench_ctx *x) {
  const bench_cfg *cfg = x->cfg;
  rg_thread *t = calloc(1, sizeof *t);
  if (!t) return -1;
  x->data = t;
  t->x = x;
  t->n_inst = (cfg->instances - x->index + cfg->threads - 1) / cfg->threads;
  t->inst = calloc((size_t)t->n_inst + 1, sizeof *t->inst);
  t->c = calloc((size_t)x->n_reqs + 1, sizeof *t->c);
  t->ka = calloc((size_t)x->n_conns, sizeof *t->ka);
  if (!t->inst || !t->c || !t->ka) return -1;
  t->period = cfg->ttl / 3.0;
  t->churn_step = cfg->churn_rate > 0 ? cfg->threads / cfg->churn_rate : 0;
  for (int i = 0; i < x->n_reqs; i++) {
    rg_client *c = &t->c[i];
    c->req = x->reqs[i];
    c->req->data = c;
    c->t = t;
    c->rng = 0x2545f4914f6cdd1dull * (uint64_t)(c->req->index + 1);
  }
  return 0;
}

static int shared_alloc(const bench_cfg *cfg) {
  rg_sh.expected = calloc((size_t)cfg->services, sizeof *rg_sh.expected);
  if (!rg_sh.expected) return -1;
  for (int s = 0; s < cfg->services; s++) atomic_init(&rg_sh.expected[s], 0);
  atomic_init(&rg_sh.running, cfg->threads);
  uint64_t seed = (uint64_t)mono_ns() | 1;
  rg_sh.salt = (int64_t)(bench_rng_next(&seed) % ((1u << 22) - 1)) + 1;
  return 0;
}

static int rg_thread_setup(bench_ctx *x) {
  if (x->index == 0 && shared_alloc(x->cfg) != 0) return -1;
  if (thread_alloc(x) != 0) {
    fprintf(stderr, "cetcd-bench: out of memory\n");
    return -1;
  }
  rg_thread *t = x->data;
  double t0 = bench_now_s();
  t->setup_active = x->n_reqs;
  for (int i = 0; i < x->n_reqs; i++) setup_next(&t->c[i]);
  run_until(t, &t->setup_active, 1e300);
  t->setup_s = bench_now_s() - t0;
  if (t->setup_failed || t->reg_next < t->n_inst) {
    const bench_err *e = &t->setup_errs.e[0];
    fprintf(stderr, "cetcd-bench: registry setup: %ld of %ld registrations failed (first: %s: %s)\n",
            t->setup_failed ? t->setup_failed : t->n_inst - t->reg_next, t->n_inst,
            t->setup_failed ? cc_status_name(e->status) : "client",
            t->setup_failed ? e->message : "out of memory");
    return -1;
  }
  return 0;
}

/* ---- watchers ------------------------------------------------------------------------ */

/* The send time a register put wrote into its value; -1 if absent. */
static int64_t value_sent_ns(const ProtobufCBinaryData *v) {
  static const char tag[] = "\"sent_ns\":";
  char buf[RG_VAL_MAX];
  size_t n = v->len < sizeof buf - 1 ? v->len : sizeof buf - 1;
  memcpy(buf, v->data, n);
  buf[n] = '\0';
  const char *p = strstr(buf, tag);
  return p ? strtoll(p + sizeof tag - 1, NULL, 10) : -1;
}

static void watch_on_msg(void *ud, const uint8_t *data, size_t len) {
  rg_stream *s = ud;
  rg_thread *t = s->t;
  rg_watcher *w = &t->w[s->j];
  Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, data);
  if (!r) {
    bg_error(t, CC_STATUS_INTERNAL, "watch: undecodable WatchResponse", 1);
    return;
  }
  if (r->created) w->created = 1;
  if (r->canceled) bg_error(t, CC_STATUS_UNKNOWN, "watch: canceled by the server", 1);
  int64_t now = mono_ns();
  for (size_t i = 0; i < r->n_events; i++) {
    const Mvccpb__Event *e = r->events[i];
    w->seen++;
    t->watch_events++;
    if (e->type != MVCCPB__EVENT__EVENT_TYPE__PUT || !e->kv) continue;
    int64_t sent = value_sent_ns(&e->kv->value);
    if (sent > 0) samples_add(&t->watch_lat, (double)(now - sent) * 1e-9);
  }
  etcdserverpb__watch_response__free_unpacked(r, NULL);
}

static void watch_on_close(void *ud, const cc_reply *r) {
  rg_stream *s = ud;
  rg_thread *t = s->t;
  if (t->w[s->j].s == s) {
    t->w[s->j].s = NULL;
    bg_error(t, r->status ? r->status : CC_STATUS_UNAVAILABLE,
             r->status ? r->message : "watch: stream ended", 1);
  }
  free(s);
}

static int watch_create(rg_thread *t, rg_watcher *w, int conn, int j) {
  char from[RG_KEY_MAX], to[RG_KEY_MAX];
  int n = prefix_of(from, sizeof from, w->svc);
  memcpy(to, from, (size_t)n);
  to[n - 1]++; /* '/' + 1: the end of the prefix */
  w->s = stream_open(t, conn, j, CC_PATH_WATCH, watch_on_msg, watch_on_close);
  if (!w->s) return -1;
  Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
  cr.key = (ProtobufCBinaryData){(size_t)n, (uint8_t *)from};
  cr.range_end = (ProtobufCBinaryData){(size_t)n, (uint8_t *)to};
  Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
  wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
  wr.create_request = &cr;
  return cc_stream_send(w->s->st, &wr.base);
}

/* Opens this thread's watchers (w % threads == index) and waits until the
 * server has created every one. */
static int rg_thread_ready(bench_ctx *x) {
  const bench_cfg *cfg = x->cfg;
  rg_thread *t = x->data;
  t->n_w = (cfg->watchers - x->index + cfg->threads - 1) / cfg->threads;
  t->w = calloc((size_t)t->n_w + 1, sizeof *t->w);
  if (!t->w) return -1;
  for (int j = 0; j < t->n_w; j++) {
    t->w[j].svc = (j * cfg->threads + x->index) % cfg->services;
    if (watch_create(t, &t->w[j], j % x->n_conns, j) != 0) {
      fprintf(stderr, "cetcd-bench: registry: could not open a watch stream\n");
      return -1;
    }
  }
  long pending = t->n_w;
  double deadline = bench_now_s() + RG_SETUP_WAIT_S;
  while (pending > 0 && bench_now_s() < deadline) {
    long still = t->n_w;
    for (int j = 0; j < t->n_w; j++) still -= t->w[j].created;
    pending = still;
    run_until(t, &pending, bench_now_s() + 0.05);
  }
  if (pending > 0) {
    fprintf(stderr, "cetcd-bench: registry: %ld of %d watchers not created within %.0f s\n",
            pending, t->n_w, RG_SETUP_WAIT_S);
    return -1;
  }
  return 0;
}

/* ---- the timed phase ---------------------------------------------------------------- */

static void on_discover(void *ud, const cc_reply *r) {
  rg_client *c = ud;
  bench_req_done(c->req, r->status, r->message);
}

static void on_churn_put(void *ud, const cc_reply *r) {
  rg_client *c = ud;
  rg_thread *t = c->t;
  c->phase = PH_IDLE;
  if (r->status == CC_STATUS_OK) {
    t->inst[c->inst].registered = 1;
    t->inst[c->inst].churning = 0;
    atomic_fetch_add(&rg_sh.expected[svc_of(t, c->inst)], 1);
    samples_add(&t->reg_lat, bench_now_s() - c->reg_start);
  }
  bench_req_done(c->req, r->status, r->message);
}

static void on_churn_grant(void *ud, const cc_reply *r) {
  rg_client *c = ud;
  c->phase = grant_ok(c, r) ? PH_PUT : PH_IDLE;
  bench_req_done(c->req, r->status, r->message);
}

static void on_churn_revoke(void *ud, const cc_reply *r) {
  rg_client *c = ud;
  rg_thread *t = c->t;
  c->phase = PH_IDLE;
  if (r->status == CC_STATUS_OK) {
    t->inst[c->inst].registered = 0;
    t->inst[c->inst].gen++; /* the next lease id */
    atomic_fetch_add(&rg_sh.expected[svc_of(t, c->inst)], 1);
    c->phase = PH_GRANT;
  }
  bench_req_done(c->req, r->status, r->message);
}

/* An instance to churn now, or -1: registered, not churning, and no
 * keepalive in flight that the revoke could race. */
static long churn_pick(rg_client *c) {
  rg_thread *t = c->t;
  for (int k = 0; k < RG_PROBES; k++) {
    long i = (long)(bench_rng_next(&c->rng) % (uint64_t)t->n_inst);
    rg_inst *in = &t->inst[i];
    if (in->up && in->registered && !in->churning && !in->ka_inflight) return i;
  }
  return -1;
}

/* Is a churn cycle due? A token bucket of depth one at --churn-rate. */
static int churn_due(rg_thread *t) {
  if (t->churn_step <= 0) return 0;
  double now = bench_now_s();
  if (now < t->next_churn) return 0;
  t->next_churn = (t->next_churn > now - t->churn_step ? t->next_churn : now) + t->churn_step;
  return 1;
}

static int send_revoke(rg_client *c) {
  rg_inst *in = &c->t->inst[c->inst];
  in->churning = 1;
  in->up = 0; /* no more keepalives for this lease */
  c->t->churns++;
  Etcdserverpb__LeaseRevokeRequest q = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
  q.id = in->lease;
  return cc_unary(c->req->conn, CC_PATH_LEASE_REVOKE, &q.base, on_churn_revoke, c);
}

static int send_discover(rg_client *c) {
  const bench_cfg *cfg = c->t->x->cfg;
  char from[RG_KEY_MAX], to[RG_KEY_MAX];
  int n = prefix_of(from, sizeof from, (int)(bench_rng_next(&c->rng) % (uint64_t)cfg->services));
  memcpy(to, from, (size_t)n);
  to[n - 1]++;
  Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
  q.key = (ProtobufCBinaryData){(size_t)n, (uint8_t *)from};
  q.range_end = (ProtobufCBinaryData){(size_t)n, (uint8_t *)to};
  q.serializable = cfg->serializable ? 1 : 0;
  return cc_unary(c->req->conn, CC_PATH_RANGE, &q.base, on_discover, c);
}

static int rg_send(bench_req *r) {
  rg_client *c = r->data;
  if (c->phase == PH_GRANT) {
    r->kind = OP_GRANT;
    c->reg_start = r->start;
    return send_grant(c, on_churn_grant);
  }
  if (c->phase == PH_PUT) {
    r->kind = OP_PUT;
    return send_put(c, on_churn_put);
  }
  long i;
  if (churn_due(c->t) && (i = churn_pick(c)) >= 0) {
    r->kind = OP_REVOKE;
    c->inst = i;
    return send_revoke(c);
  }
  r->kind = OP_DISCOVER;
  return send_discover(c);
}

static int rg_tick(bench_ctx *x) { return ka_sweep(x->data); }

/* Are this thread's watchers level with what was written? */
static int watchers_caught_up(const rg_thread *t) {
  for (int j = 0; j < t->n_w; j++)
    if (t->w[j].seen < atomic_load(&rg_sh.expected[t->w[j].svc])) return 0;
  return 1;
}

/* After the last request: wait (keeping the leases alive) until every
 * thread is done and this thread's watchers saw every event, at most
 * RG_DRAIN_S after that; then count what they missed. */
static void rg_thread_finish(bench_ctx *x) {
  rg_thread *t = x->data;
  atomic_fetch_sub(&rg_sh.running, 1);
  double deadline = 0;
  for (;;) {
    int others_done = atomic_load(&rg_sh.running) == 0;
    if (others_done && deadline == 0) deadline = bench_now_s() + RG_DRAIN_S;
    if (others_done && (watchers_caught_up(t) || bench_now_s() > deadline)) break;
    int wait = ka_sweep(t);
    if (wait < 0 || wait > 10) wait = 10;
    if (cc_loop_run_once(x->loop, wait) < 0) break;
  }
  for (int j = 0; j < t->n_w; j++) {
    long missed = atomic_load(&rg_sh.expected[t->w[j].svc]) - t->w[j].seen;
    if (missed > 0) bg_error(t, CC_STATUS_DEADLINE_EXCEEDED, "watch: events not seen within 10 s", missed);
  }
}

/* ---- the report ----------------------------------------------------------------------- */

/* Per op: latency of its successful requests, and its failures. */
static void collect_ops(bench_figs *f, const bench_result *res) {
  long failed[N_OPS] = {0};
  for (long k = 0; res->lat_kind && k < res->n_lat; k++)
    if (res->lat[k] < 0 && res->lat_kind[k] < N_OPS) failed[res->lat_kind[k]]++;
  for (int op = 0; op < N_OPS; op++) {
    char name[64];
    if (res->lat_kind)
      bench_figs_lat(f, op_name[op], res->lat, res->lat_kind, op, res->n_lat, res->wall_s);
    snprintf(name, sizeof name, "%s_errors", op_name[op]);
    bench_figs_num(f, name, (double)failed[op]);
  }
}

/* One background sample (keepalive, register, watch event) over all threads. */
static void collect_samples(bench_figs *f, const char *name, bench_ctx *const *xs, int n,
                            size_t field, double wall_s) {
  rg_samples all = {0};
  for (int i = 0; i < n; i++) {
    const rg_samples *s = (const rg_samples *)(void *)((char *)xs[i]->data + field);
    for (long k = 0; k < s->n; k++) samples_add(&all, s->v[k]);
  }
  bench_figs_lat(f, name, all.v, NULL, -1, all.n, wall_s);
  free(all.v);
}

static void rg_collect(bench_ctx *const *xs, int n, bench_result *res) {
  const bench_cfg *cfg = xs[0]->cfg;
  double setup_s = 0;
  long ka_sent = 0, ka_late = 0, churns = 0, events = 0, expected = 0, missed_before = res->failed;
  for (int i = 0; i < n; i++) {
    rg_thread *t = xs[i]->data;
    setup_s += t->setup_s;
    ka_sent += t->ka_sent;
    ka_late += t->ka_late;
    churns += t->churns;
    events += t->watch_events;
    for (int j = 0; j < t->n_w; j++) expected += atomic_load(&rg_sh.expected[t->w[j].svc]);
    for (int j = 0; j < t->errs.n; j++)
      bench_errs_add(&res->errs, t->errs.e[j].status, t->errs.e[j].message, t->errs.e[j].count);
    res->errs.other += t->errs.other;
    res->failed += t->bg_failed;
  }
  bench_figs *f = bench_figs_attach(res);
  bench_figs_num(f, "services", cfg->services);
  bench_figs_num(f, "instances", (double)cfg->instances);
  bench_figs_num(f, "watchers", cfg->watchers);
  bench_figs_num(f, "ttl", cfg->ttl);
  bench_figs_num(f, "setup_secs", setup_s);
  bench_figs_num(f, "setup_registrations_per_sec",
                 setup_s > 0 ? (double)cfg->instances / setup_s : 0);
  bench_figs_num(f, "churn_cycles", (double)churns);
  bench_figs_num(f, "churn_cycles_per_sec", res->wall_s > 0 ? (double)churns / res->wall_s : 0);
  bench_figs_num(f, "keepalives_sent", (double)ka_sent);
  bench_figs_num(f, "keepalives_late", (double)ka_late);
  bench_figs_num(f, "watch_events_expected", (double)expected);
  bench_figs_num(f, "watch_events_seen", (double)events);
  bench_figs_num(f, "background_errors", (double)(res->failed - missed_before));
  collect_ops(f, res);
  collect_samples(f, "register", xs, n, offsetof(rg_thread, reg_lat), res->wall_s);
  collect_samples(f, "keepalive", xs, n, offsetof(rg_thread, ka_lat), res->wall_s);
  collect_samples(f, "watch_event", xs, n, offsetof(rg_thread, watch_lat), res->wall_s);
}

static void rg_thread_free(bench_ctx *x) {
  rg_thread *t = x->data;
  if (x->index == 0) {
    free((void *)rg_sh.expected);
    rg_sh.expected = NULL;
  }
  if (!t) return;
  /* Open streams belong to the loop, which frees them without calling
   * on_close; their wrappers go here. */
  for (int j = 0; t->ka && j < x->n_conns; j++) free(t->ka[j]);
  for (int j = 0; t->w && j < t->n_w; j++) free(t->w[j].s);
  free(t->ka);
  free(t->w);
  free(t->inst);
  free(t->c);
  free(t->ring);
  free(t->ka_lat.v);
  free(t->watch_lat.v);
  free(t->reg_lat.v);
  free(t);
  x->data = NULL;
}

void bench_registry_params_json(const bench_cfg *cfg) {
  printf(",\"services\":%d,\"instances\":%ld,\"ttl\":%d,\"watchers\":%d,\"churn_rate\":%g,"
         "\"consistency\":\"%s\"",
         cfg->services, cfg->instances, cfg->ttl, cfg->watchers, cfg->churn_rate,
         cfg->serializable ? "s" : "l");
}

const bench_ops bench_registry_ops = {
    .thread_setup = rg_thread_setup,
    .thread_ready = rg_thread_ready,
    .send = rg_send,
    .tick = rg_tick,
    .thread_finish = rg_thread_finish,
    .collect = rg_collect,
    .thread_free = rg_thread_free,
    .lat_kinds = 1,
};
