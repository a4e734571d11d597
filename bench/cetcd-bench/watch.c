/*
 * watch.c -- the watch scenarios: `watch` (etcd's tool's watch: how fast
 * watchers are created, then the events of puts to the watched keys) and
 * `watch-latency` (etcd's tool's watch-latency: put-to-event latency over
 * many watchers).
 *
 * DESIGN
 *
 * Both run on one event loop (--threads does not apply): --streams Watch
 * streams, stream s on connection s % --conns, each with --watch-per-stream
 * (watch) or --watchers-per-stream (watch-latency) watchers; one more
 * connection carries the puts, as etcd's tool puts through a client of
 * its own.
 *
 * Creation. Each stream has one create request in flight at a time, as
 * clientv3 sends the next create only when the previous one is answered;
 * the k-th created response of a stream belongs to its k-th create (a
 * server answers a stream's creates in order) and gives that watcher's
 * watch id. A create's latency is from sending the request to its created
 * response. For watch-latency the clock starts only when every watcher is
 * created.
 *
 * Keys. There are n_slots key slots (watch: --watched-key-total, keys
 * varint(i mod --key-space-size) with --sequential-keys, else varint of a
 * random number below --key-space-size, as etcd's tool; watch-latency:
 * --key-space-size slots, key varint(i), default 1: all watchers on one
 * key, as etcd's tool). Watcher g watches slot g mod n_slots; put i writes slot
 * i mod n_slots. Slots holding the same key are one key id.
 *
 * Puts. Put i carries i in the first 8 bytes of its value (little-endian;
 * so --val-size is at least 8) and its send time is kept by i, so an event
 * names the put it comes from without a lookup; its latency is receipt
 * minus that send time. Puts start on a token bucket at --put-rate (0:
 * unlimited) whose depth is etcd's tool's: one put for watch, one
 * second's puts for watch-latency. At most PUTS_INFLIGHT_MAX are in
 * flight (watch with no rate: --clients, as etcd's tool's put clients).
 *
 * Accounting. Per watcher: the last mod_revision seen. An event with a
 * higher revision is in order (ok); the same revision is a duplicate, a
 * lower one out of order; an event of a watch id the stream never created,
 * of another key, or with a put number never sent is unexpected. At the
 * end each watcher's missing events are the puts to its key minus what it
 * received in order. All of these are errors, with their count, in the
 * error table; failed puts are too (their events then also show as
 * missing).
 *
 * Hot path: a WatchResponse is read in place by pbscan.c (watch id,
 * flags; per event key, mod_revision, the value's first 8 bytes), one
 * clock read per message, one histogram increment per event. No malloc.
 *
 * The run ends when every expected event has arrived, or nothing arrived
 * for EVENT_IDLE_S after the last put completed (the rest are missing).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/cetcd-bench/bench.h"
#include "bench/cetcd-bench/pbscan.h"
#include "cli/client/client.h"
#include "rpc.pb-c.h"

#define PUTS_INFLIGHT_MAX 64
#define CREATE_IDLE_S 30.0 /* creation gives up after this long without progress */
#define EVENT_IDLE_S 15.0  /* events: wait this long for stragglers */
#define PUTS_DURATION_CAP 20000000L /* --duration with no rate: most puts kept */
#define STATUS_DATA_LOSS 15

typedef struct wb wb;

typedef struct wb_watcher {
  int64_t watch_id;
  int64_t last_rev; /* highest mod_revision received */
  long ok;          /* events received in order */
  int key_id;
} wb_watcher;

typedef struct wb_stream {
  wb *b;
  cc_stream *st;
  wb_watcher *w;   /* this stream's watchers, in creation order */
  int n_sent;      /* creates sent */
  int n_created;   /* created responses */
  int first_global; /* global index of w[0] */
  double sent_at;  /* the create in flight */
  int closed;
} wb_stream;

typedef struct wb_put {
  wb *b;
  double sent, done;
} wb_put;

struct wb {
  const bench_cfg *cfg;
  bench_result *res;
  int latency_mode; /* watch-latency */
  cc_loop *loop;
  cc_conn **conns;
  cc_conn *put_conn;
  wb_stream *streams;
  wb_watcher *watchers;
  long n_watchers;
  int wps;
  /* keys: slot -> key id -> bytes */
  long n_slots;
  int *slot_key;
  int n_keys;
  uint8_t *keys;   /* n_keys * key_size */
  long *key_puts;  /* puts sent per key id */
  uint8_t *value;  /* val_size bytes; the first 8 rewritten per put */
  /* creation */
  double *create_lat;
  long n_create_lat, created, create_failed;
  long answered; /* creates answered, plus those of closed streams */
  double create_t0, create_t1, last_create;
  /* puts */
  wb_put *puts;
  long put_cap, put_target, puts_sent, puts_done, puts_failed;
  int puts_inflight, inflight_max;
  double burst; /* token bucket depth, in puts */
  double put_t0, next_slot, deadline, last_put_done;
  /* events */
  bench_hist *ev_hist;
  long ev_ok, ev_dup, ev_ooo, ev_unexpected, ev_missing, ev_expected;
  double last_event;
  long stream_errors;
  bench_errs errs;
  bench_usage usage_create, usage_events;
  bench_result create_usage, event_usage; /* CPU figures per phase */
  int progress;
};

/* ---- keys ------------------------------------------------------------------ */

static int keys_setup(wb *b) {
  const bench_cfg *cfg = b->cfg;
  size_t ks = (size_t)cfg->key_size;
  b->n_slots = b->latency_mode ? cfg->key_space_size : cfg->watched_key_total;
  b->slot_key = calloc((size_t)b->n_slots, sizeof *b->slot_key);
  b->keys = calloc((size_t)b->n_slots, ks);
  b->key_puts = calloc((size_t)b->n_slots, sizeof *b->key_puts);
  if (!b->slot_key || !b->keys || !b->key_puts) return -1;
  uint64_t rng = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull | 1;
  uint8_t *k = malloc(ks);
  if (!k) return -1;
  for (long i = 0; i < b->n_slots; i++) {
    long n = b->latency_mode || cfg->sequential_keys
                 ? i % cfg->key_space_size
                 : (long)(bench_rng_next(&rng) % (uint64_t)cfg->key_space_size);
    memset(k, 0, ks);
    bench_put_varint(k, ks, n);
    int id = -1;
    /* watched-key-total is small in practice; a linear search is fine */
    for (int j = 0; j < b->n_keys && id < 0; j++)
      if (memcmp(b->keys + (size_t)j * ks, k, ks) == 0) id = j;
    if (id < 0) {
      id = b->n_keys++;
      memcpy(b->keys + (size_t)id * ks, k, ks);
    }
    b->slot_key[i] = id;
  }
  free(k);
  return 0;
}

/* ---- creation --------------------------------------------------------------- */

static void stream_close_mark(wb_stream *s);

static void stream_send_create(wb_stream *s) {
  wb *b = s->b;
  long g = s->first_global + s->n_sent;
  int kid = b->slot_key[g % b->n_slots];
  s->w[s->n_sent].key_id = kid;
  Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
  cr.key.data = b->keys + (size_t)kid * (size_t)b->cfg->key_size;
  cr.key.len = (size_t)b->cfg->key_size;
  Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
  req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
  req.create_request = &cr;
  s->sent_at = bench_now_s();
  s->n_sent++;
  if (cc_stream_send(s->st, &req.base) != 0) stream_close_mark(s); /* counted in wb_create */
}

static void stream_on_created(wb_stream *s, const pb_watch_resp *r, double now) {
  wb *b = s->b;
  if (s->n_created >= s->n_sent) {
    b->ev_unexpected++;
    bench_errs_add(&b->errs, STATUS_DATA_LOSS, "created response without a create", 1);
    return;
  }
  wb_watcher *w = &s->w[s->n_created++];
  b->last_create = now;
  b->answered++;
  if (r->canceled) {
    char why[160];
    snprintf(why, sizeof why, "watch create canceled: %.*s", (int)r->cancel_reason_len,
             r->cancel_reason ? (const char *)r->cancel_reason : "");
    w->watch_id = -1;
    b->create_failed++;
    bench_errs_add(&b->errs, STATUS_DATA_LOSS, why, 1);
  } else {
    w->watch_id = r->watch_id;
    b->create_lat[b->n_create_lat++] = now - s->sent_at;
    b->created++;
  }
  if (s->n_sent < b->wps) stream_send_create(s);
}

/* ---- events ----------------------------------------------------------------- */

/* The watcher of a stream with this watch id: servers hand out ids 0, 1,
 * ... per stream, so try that slot first. */
static wb_watcher *stream_find(wb_stream *s, int64_t id) {
  if (id >= 0 && id < s->n_created && s->w[id].watch_id == id) return &s->w[id];
  for (int i = 0; i < s->n_created; i++)
    if (s->w[i].watch_id == id) return &s->w[i];
  return NULL;
}

typedef struct ev_ctx {
  wb *b;
  wb_watcher *w;
  double now;
} ev_ctx;

static void on_event(void *ud, const pb_watch_event *ev) {
  ev_ctx *x = ud;
  wb *b = x->b;
  wb_watcher *w = x->w;
  size_t ks = (size_t)b->cfg->key_size;
  if (ev->type != 0 || ev->key_len != ks ||
      memcmp(ev->key, b->keys + (size_t)w->key_id * ks, ks) != 0 ||
      ev->value_seq >= (uint64_t)b->puts_sent) {
    b->ev_unexpected++;
    return;
  }
  if (ev->mod_revision <= w->last_rev) {
    if (ev->mod_revision == w->last_rev) b->ev_dup++;
    else b->ev_ooo++;
    return;
  }
  w->last_rev = ev->mod_revision;
  w->ok++;
  b->ev_ok++;
  bench_hist_add(b->ev_hist, x->now - b->puts[ev->value_seq].sent);
}

static void stream_on_msg(void *ud, const uint8_t *data, size_t len) {
  wb_stream *s = ud;
  wb *b = s->b;
  double now = bench_now_s();
  pb_watch_resp r;
  if (pb_watch_resp_scan(data, len, &r) != 0) {
    b->ev_unexpected++;
    bench_errs_add(&b->errs, CC_STATUS_INTERNAL, "undecodable WatchResponse", 1);
    return;
  }
  if (r.created) {
    stream_on_created(s, &r, now);
    return;
  }
  if (r.n_events == 0) {
    if (r.canceled) {
      b->stream_errors++;
      bench_errs_add(&b->errs, STATUS_DATA_LOSS, "watch canceled by the server", 1);
    }
    return;
  }
  ev_ctx x = {.b = b, .w = stream_find(s, r.watch_id), .now = now};
  if (!x.w) {
    b->ev_unexpected += r.n_events;
    return;
  }
  b->last_event = now;
  if (pb_watch_events(data, len, on_event, &x) < 0) {
    b->ev_unexpected++;
    bench_errs_add(&b->errs, CC_STATUS_INTERNAL, "undecodable watch event", 1);
  }
}

static void stream_close_mark(wb_stream *s) {
  if (s->closed) return;
  s->closed = 1;
  s->b->answered += s->b->wps - s->n_created; /* those will never be answered */
}

static void stream_on_close(void *ud, const cc_reply *r) {
  wb_stream *s = ud;
  stream_close_mark(s);
  s->b->stream_errors++;
  bench_errs_add(&s->b->errs, r->status ? r->status : CC_STATUS_UNKNOWN,
                 r->message[0] ? r->message : "watch stream ended", 1);
}

/* ---- puts ------------------------------------------------------------------- */

static void on_put_reply(void *ud, const cc_reply *r) {
  wb_put *p = ud;
  wb *b = p->b;
  p->done = bench_now_s();
  b->last_put_done = p->done;
  b->puts_done++;
  b->puts_inflight--;
  if (r->status != CC_STATUS_OK) {
    b->puts_failed++;
    bench_errs_add(&b->errs, r->status, r->message, 1);
  }
}

static void put_send(wb *b) {
  long i = b->puts_sent;
  int kid = b->slot_key[i % b->n_slots];
  for (int j = 0; j < 8; j++) b->value[j] = (uint8_t)((uint64_t)i >> (8 * j));
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  req.key.data = b->keys + (size_t)kid * (size_t)b->cfg->key_size;
  req.key.len = (size_t)b->cfg->key_size;
  req.value.data = b->value;
  req.value.len = (size_t)b->cfg->val_size;
  wb_put *p = &b->puts[i];
  p->b = b;
  p->sent = bench_now_s();
  b->puts_sent++;
  b->key_puts[kid]++;
  b->puts_inflight++;
  if (cc_unary(b->put_conn, CC_PATH_PUT, &req.base, on_put_reply, p) != 0) {
    cc_reply r = {.status = CC_STATUS_RESOURCE_EXHAUSTED, .message = "client out of memory"};
    on_put_reply(p, &r);
  }
}

/* Starts the puts whose slot has come; returns ms until the next (-1: none). */
static int puts_release(wb *b) {
  double now = bench_now_s();
  int more = b->puts_sent < b->put_target && (b->deadline <= 0 || now < b->deadline);
  while (more && b->puts_inflight < b->inflight_max) {
    if (b->cfg->put_rate > 0) {
      /* a token bucket of b->burst tokens: a put that is late by less than
       * the bucket goes at once, so a long loop turn does not lower the
       * rate; later than that, the schedule restarts from now */
      double step = 1.0 / b->cfg->put_rate, floor = now - (b->burst - 1) * step;
      if (b->next_slot > now) return (int)((b->next_slot - now) * 1000.0) + 1;
      b->next_slot = (b->next_slot > floor ? b->next_slot : floor) + step;
    }
    put_send(b);
    more = b->puts_sent < b->put_target && (b->deadline <= 0 || now < b->deadline);
  }
  return -1;
}

/* ---- phases ----------------------------------------------------------------- */

static int wb_setup(wb *b) {
  const bench_cfg *cfg = b->cfg;
  b->wps = cfg->watch_per_stream;
  b->n_watchers = (long)cfg->streams * b->wps;
  b->streams = calloc((size_t)cfg->streams, sizeof *b->streams);
  b->watchers = calloc((size_t)b->n_watchers, sizeof *b->watchers);
  b->create_lat = calloc((size_t)b->n_watchers, sizeof *b->create_lat);
  b->conns = calloc((size_t)cfg->conns, sizeof *b->conns);
  b->value = malloc((size_t)cfg->val_size);
  b->ev_hist = bench_hist_new();
  b->loop = cc_loop_new();
  if (cfg->duration_s > 0)
    b->put_cap = cfg->put_rate > 0 ? (long)(cfg->put_rate * cfg->duration_s * 1.1) + 1000
                                   : PUTS_DURATION_CAP;
  else
    b->put_cap = cfg->put_total;
  b->put_target = b->put_cap;
  b->puts = calloc((size_t)b->put_cap, sizeof *b->puts); /* untouched pages stay free */
  if (!b->streams || !b->watchers || !b->create_lat || !b->conns || !b->value ||
      !b->ev_hist || !b->loop || !b->puts || keys_setup(b) != 0)
    return -1;
  uint64_t seed = (uint64_t)time(NULL) | 1;
  for (int i = 0; i < cfg->val_size; i++) b->value[i] = (uint8_t)('a' + bench_rng_next(&seed) % 26);
  b->inflight_max = cfg->put_rate > 0 || b->latency_mode ? PUTS_INFLIGHT_MAX : cfg->clients;
  /* etcd's tool: watch-latency's limiter has a burst of one second's puts,
   * watch's a burst of one */
  b->burst = b->latency_mode && cfg->put_rate >= 1 ? cfg->put_rate : 1;
  for (int s = 0; s < cfg->streams; s++) {
    b->streams[s].b = b;
    b->streams[s].first_global = s * b->wps;
    b->streams[s].w = b->watchers + (long)s * b->wps;
  }
  return 0;
}

static int wb_connect(wb *b) {
  const bench_cfg *cfg = b->cfg;
  int f = bench_connect(cfg, b->loop, b->conns, cfg->conns, 0, 1);
  if (f < 0) return -1;
  int g = bench_connect(cfg, b->loop, &b->put_conn, 1, cfg->conns, 1);
  if (g < 0) return -1;
  b->res->connect_failed = f + g;
  return 0;
}

static void draw(wb *b, long done, long total, int final, double *next) {
  if (!b->progress) return;
  double now = bench_now_s();
  if (!final && now < *next) return;
  *next = now + 0.2;
  bench_progress_draw(done, total, final);
}

/* Opens the streams and creates every watcher. */
static void wb_create(wb *b) {
  const bench_cfg *cfg = b->cfg;
  bench_usage_begin(cfg, &b->usage_create);
  b->create_t0 = b->last_create = bench_now_s();
  for (int s = 0; s < cfg->streams; s++) {
    wb_stream *st = &b->streams[s];
    st->st = cc_stream_open(b->conns[s % cfg->conns], CC_PATH_WATCH, stream_on_msg,
                            stream_on_close, st);
    if (!st->st) {
      stream_close_mark(st);
      continue;
    }
    stream_send_create(st);
  }
  double next_draw = 0;
  for (;;) {
    draw(b, b->created, b->n_watchers, 0, &next_draw);
    if (b->answered >= b->n_watchers) break;
    if (bench_now_s() - b->last_create > CREATE_IDLE_S) {
      fprintf(stderr, "cetcd-bench: %ld of %ld watches not created after %.0f s without "
              "progress (the server's streams per connection may be too few: use --conns)\n",
              b->n_watchers - b->answered, b->n_watchers, CREATE_IDLE_S);
      break;
    }
    if (cc_loop_run_once(b->loop, 100) < 0) break;
  }
  long unanswered = 0; /* on closed streams, or still waiting */
  for (int s = 0; s < cfg->streams; s++) unanswered += b->wps - b->streams[s].n_created;
  if (unanswered) {
    b->create_failed += unanswered;
    bench_errs_add(&b->errs, CC_STATUS_UNAVAILABLE, "watch not created", unanswered);
  }
  draw(b, b->created, b->n_watchers, 1, &next_draw);
  b->create_t1 = b->last_create;
  bench_usage_end(cfg, &b->usage_create, &b->create_usage);
}

/* Events the created watchers should get from the puts sent so far. */
static long wb_expected(const wb *b) {
  long n = 0;
  for (long i = 0; i < b->n_watchers; i++)
    if (b->watchers[i].watch_id >= 0) n += b->key_puts[b->watchers[i].key_id];
  return n;
}

/* Puts at the rate and collects their events until all have arrived or
 * none arrived for EVENT_IDLE_S after the last put. */
static void wb_events(wb *b) {
  const bench_cfg *cfg = b->cfg;
  bench_usage_begin(cfg, &b->usage_events);
  b->put_t0 = b->next_slot = b->last_event = b->last_put_done = bench_now_s();
  if (cfg->duration_s > 0) b->deadline = b->put_t0 + cfg->duration_s;
  long per_put = 0; /* for the progress bar: events per put, on average */
  for (long i = 0; i < b->n_watchers; i++) per_put += b->watchers[i].watch_id >= 0;
  per_put = b->n_keys > 0 ? per_put / b->n_keys : 0;
  double next_draw = 0;
  long expected = -1;
  for (;;) {
    int wait = puts_release(b);
    double now = bench_now_s();
    int puts_over = b->puts_inflight == 0 &&
                    (b->puts_sent >= b->put_target || (b->deadline > 0 && now >= b->deadline));
    long total = b->deadline > 0 ? b->ev_ok : per_put * b->put_target;
    draw(b, b->ev_ok, total, 0, &next_draw);
    if (puts_over) {
      /* no more puts: what is expected is fixed now */
      if (expected < 0) expected = wb_expected(b);
      double quiet = now - (b->last_event > b->last_put_done ? b->last_event : b->last_put_done);
      if (b->ev_ok >= expected || quiet > EVENT_IDLE_S) break;
      wait = 100;
    }
    if (wait < 0 || wait > 100) wait = 100;
    if (cc_loop_run_once(b->loop, wait) < 0) break;
  }
  draw(b, b->ev_ok, b->ev_ok, 1, &next_draw);
  bench_usage_end(cfg, &b->usage_events, &b->event_usage);
}

/* --hold: the watchers stay open, idle unless others write their keys (an
 * event that comes now counts as usual). The line on stderr tells a script
 * that drives another bench against them when to start. */
static void wb_hold(wb *b) {
  const bench_cfg *cfg = b->cfg;
  if (cfg->hold_s <= 0) return;
  fprintf(stderr, "cetcd-bench: holding %ld watchers for %.1fs\n", b->created, cfg->hold_s);
  for (double end = bench_now_s() + cfg->hold_s, now; (now = bench_now_s()) < end;) {
    int wait = (int)((end - now) * 1000) + 1;
    if (cc_loop_run_once(b->loop, wait > 100 ? 100 : wait) < 0) break;
  }
}

/* Missing events per watcher, and every kind of event error in the table. */
static long wb_event_errors(wb *b) {
  b->ev_expected = wb_expected(b);
  for (long i = 0; i < b->n_watchers; i++) {
    wb_watcher *w = &b->watchers[i];
    if (w->watch_id < 0) continue;
    long want = b->key_puts[w->key_id];
    if (w->ok < want) b->ev_missing += want - w->ok;
  }
  if (b->ev_missing) bench_errs_add(&b->errs, STATUS_DATA_LOSS, "missing watch events", b->ev_missing);
  if (b->ev_dup) bench_errs_add(&b->errs, STATUS_DATA_LOSS, "duplicate watch events", b->ev_dup);
  if (b->ev_ooo) bench_errs_add(&b->errs, STATUS_DATA_LOSS, "out-of-order watch events", b->ev_ooo);
  if (b->ev_unexpected)
    bench_errs_add(&b->errs, STATUS_DATA_LOSS, "unexpected watch events (unknown watch id, other key, or not a put of this run)",
                   b->ev_unexpected);
  return b->ev_missing + b->ev_dup + b->ev_ooo + b->ev_unexpected;
}

/* ---- report ------------------------------------------------------------------ */

static double put_phase_s(const wb *b) {
  double end = b->last_put_done > b->put_t0 ? b->last_put_done : b->put_t0;
  return end - b->put_t0;
}

static void put_latency_stats(const wb *b, bench_stats *s) {
  double *lat = malloc(sizeof *lat * (size_t)(b->puts_sent ? b->puts_sent : 1));
  long n = 0;
  for (long i = 0; lat && i < b->puts_sent; i++)
    if (b->puts[i].done > 0) lat[n++] = b->puts[i].done - b->puts[i].sent;
  bench_stats_compute(lat ? lat : (double[1]){0}, NULL, -1, n, put_phase_s(b), s);
  free(lat);
}

static void wb_extra_json(const bench_cfg *cfg, const bench_result *res) {
  const wb *b = res->extra;
  double pt = put_phase_s(b);
  printf(",\"extra\":{\"watchers\":%ld,\"watchers_created\":%ld,\"create_secs\":%.6f,"
         "\"puts\":%ld,\"puts_failed\":%ld,\"put_secs\":%.6f,\"put_rate_achieved\":%.4f,",
         b->n_watchers, b->created, b->create_t1 - b->create_t0, b->puts_sent, b->puts_failed,
         pt, pt > 0 ? (double)b->puts_done / pt : 0.0);
  printf("\"events_expected\":%ld,\"events_ok\":%ld,\"events_missing\":%ld,"
         "\"events_duplicate\":%ld,\"events_out_of_order\":%ld,\"events_unexpected\":%ld,",
         b->ev_expected, b->ev_ok, b->ev_missing, b->ev_dup, b->ev_ooo, b->ev_unexpected);
  double ev_wall = b->last_event - b->put_t0;
  printf("\"events_per_sec\":%.4f,\"events_cpu_secs\":%.4f,\"events_cpu_ms_per_1000\":%.4f,",
         ev_wall > 0 ? (double)b->ev_ok / ev_wall : 0.0,
         b->event_usage.cpu_user_s + b->event_usage.cpu_sys_s,
         b->ev_ok ? (b->event_usage.cpu_user_s + b->event_usage.cpu_sys_s) * 1e6 / (double)b->ev_ok
                  : 0.0);
  if (cfg->server_pid) printf("\"server_events_cpu_secs\":%.4f,", b->event_usage.server_cpu_s);
  bench_stats s;
  put_latency_stats(b, &s);
  bench_stats_json("put_latency_secs", &s);
  free(s.lats);
  if (!b->latency_mode) {
    putchar(',');
    bench_stats_from_hist(b->ev_hist, ev_wall, &s);
    bench_stats_json("event_latency_secs", &s);
  }
  putchar('}');
}

static void wb_extra_text(const bench_cfg *cfg, const bench_result *res) {
  (void)cfg;
  const wb *b = res->extra;
  double pt = put_phase_s(b), ev_wall = b->last_event - b->put_t0;
  double ecpu = b->event_usage.cpu_user_s + b->event_usage.cpu_sys_s;
  printf("\nWatchers: %ld created of %ld in %.4f secs.\n", b->created, b->n_watchers,
         b->create_t1 - b->create_t0);
  printf("Puts: %ld sent, %ld failed, %.1f/s achieved.\n", b->puts_sent, b->puts_failed,
         pt > 0 ? (double)b->puts_done / pt : 0.0);
  printf("Events: %ld ok of %ld expected (%ld missing, %ld duplicate, %ld out of order, "
         "%ld unexpected), %.1f/s; bench CPU %.2f ms per 1000 events.\n",
         b->ev_ok, b->ev_expected, b->ev_missing, b->ev_dup, b->ev_ooo, b->ev_unexpected,
         ev_wall > 0 ? (double)b->ev_ok / ev_wall : 0.0,
         b->ev_ok ? ecpu * 1e6 / (double)b->ev_ok : 0.0);
  bench_stats s;
  put_latency_stats(b, &s);
  bench_stats_text("Put latency", &s);
  free(s.lats);
  if (!b->latency_mode) {
    bench_stats_from_hist(b->ev_hist, ev_wall, &s);
    bench_stats_text("Put-to-event latency", &s);
  }
}

static void wb_free(void *p) {
  wb *b = p;
  if (!b) return;
  if (b->loop) cc_loop_free(b->loop);
  free(b->streams);
  free(b->watchers);
  free(b->create_lat);
  free(b->conns);
  free(b->value);
  free(b->slot_key);
  free(b->keys);
  free(b->key_puts);
  free(b->puts);
  bench_hist_free(b->ev_hist);
  free(b);
}

/* Fills res: watch-latency reports events, watch reports creation. */
static void wb_result(wb *b, bench_result *res) {
  long ev_err = wb_event_errors(b);
  res->errs = b->errs;
  res->extra = b;
  res->extra_free = wb_free;
  res->extra_json = wb_extra_json;
  res->extra_text = wb_extra_text;
  const bench_result *pu = b->latency_mode ? &b->event_usage : &b->create_usage;
  res->cpu_user_s = pu->cpu_user_s;
  res->cpu_sys_s = pu->cpu_sys_s;
  res->server_cpu_s = pu->server_cpu_s;
  res->server_hwm_kb = b->event_usage.server_hwm_kb; /* the peak, read last */
  res->server_rss_kb = b->event_usage.server_rss_kb;
  if (b->latency_mode) {
    res->hist = b->ev_hist;
    res->issued = b->ev_expected;
    res->ok = b->ev_ok;
    res->failed = ev_err + b->puts_failed + b->create_failed + b->stream_errors;
    res->wall_s = (b->last_event > b->put_t0 ? b->last_event : b->last_put_done) - b->put_t0;
  } else {
    res->lat = b->create_lat;
    b->create_lat = NULL; /* main frees res->lat */
    res->n_lat = b->n_create_lat;
    res->issued = b->n_watchers;
    res->ok = b->created;
    res->failed = b->create_failed + ev_err + b->puts_failed + b->stream_errors;
    res->wall_s = b->create_t1 - b->create_t0;
  }
}

int bench_watch_run(const bench_cfg *cfg, bench_result *res) {
  wb *b = calloc(1, sizeof *b);
  if (!b) goto oom;
  b->cfg = cfg;
  b->res = res;
  b->latency_mode = cfg->scenario == BENCH_WATCH_LATENCY;
  b->progress = bench_progress_wanted();
  if (wb_setup(b) != 0) goto oom;
  for (long i = 0; i < b->n_watchers; i++) b->watchers[i].watch_id = -1;
  if (wb_connect(b) != 0) {
    wb_free(b);
    return -1;
  }
  wb_create(b);
  wb_events(b);
  wb_hold(b);
  wb_result(b, res);
  return 0;
oom:
  fprintf(stderr, "cetcd-bench: out of memory\n");
  wb_free(b);
  return -1;
}
