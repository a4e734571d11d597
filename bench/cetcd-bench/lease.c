/*
 * lease.c -- the lease-keepalive scenario: many leases kept alive over
 * LeaseKeepAlive streams.
 *
 * DESIGN
 *
 * Before the clock, the clients grant --leases leases (TTL --ttl) between
 * them, each its own share one grant at a time, so --clients grants are in
 * flight: client g of C owns leases [g*L/C, (g+1)*L/C). The grant phase's
 * time, rate and the server's RSS before and after it go in "extra" (the
 * RSS difference per lease is the server's memory cost of a lease).
 *
 * Then each client opens one LeaseKeepAlive stream on its connection and,
 * closed-loop as run.c's other clients, sends one keepalive at a time,
 * cycling through its leases. A latency sample is keepalive sent -> the
 * answer for that lease id received. An answer with TTL <= 0 (the server no
 * longer has the lease) is an error, as is an answer for another lease or
 * a stream that ends with a keepalive in flight (the stream is reopened for
 * the next one).
 *
 * etcd's tool (tools/benchmark lease-keepalive) grants one lease per client
 * with TTL 100 and calls KeepAliveOnce, which opens a fresh stream per
 * keepalive; here the stream is kept, as a long-lived client (clientv3's
 * KeepAlive) keeps it. The defaults (--ttl 100, --leases = --clients) are
 * that tool's.
 *
 * Nothing is revoked at the end (the server is thrown away) unless --revoke
 * is given: then every lease is revoked after the clock stopped, --clients
 * at a time, and the time and rate go in "extra".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/cetcd-bench/bench.h"
#include "rpc.pb-c.h"

typedef struct lk_client lk_client;

/* One LeaseKeepAlive stream; a fresh one per (re)open, so that the close
 * of an old stream is told apart from the current one's. */
typedef struct lk_stream {
  lk_client *c;
  cc_stream *st;
} lk_stream;

struct lk_client {
  bench_req *req;
  lk_stream *cur;   /* the open stream, NULL: open one at the next send */
  int64_t *ids;     /* this client's leases (a slice of lk_thread.ids) */
  long n, next;     /* how many; the next to keep alive (mod n) */
  int64_t inflight; /* lease id of the keepalive in flight, 0: none */
  long phase_done;  /* grant / revoke phase: leases done */
};

typedef struct lk_thread {
  bench_ctx *x;
  lk_client *c;
  int64_t *ids;
  long n_ids;
  long pending;      /* grant / revoke phase: clients still working */
  long phase_failed; /* grants or revokes that failed */
  bench_errs phase_errs;
  double grant_s, revoke_s;
  long rss_before_kb, rss_after_kb; /* the server's, around this thread's grants */
} lk_thread;

/* ---- grant and revoke phases (before and after the clock) ------------------------ */

static void phase_next(lk_client *c, int revoke);

static void phase_failed(lk_client *c, int status, const char *message) {
  lk_thread *t = c->req->ctx->data;
  t->phase_failed++;
  bench_errs_add(&t->phase_errs, status, message, 1);
}

static void on_grant(void *ud, const cc_reply *r) {
  lk_client *c = ud;
  Etcdserverpb__LeaseGrantResponse *g = NULL;
  if (r->status == CC_STATUS_OK) g = etcdserverpb__lease_grant_response__unpack(NULL, r->len, r->data);
  if (g && g->id > 0) c->ids[c->phase_done] = g->id;
  else phase_failed(c, r->status ? r->status : CC_STATUS_INTERNAL,
                    r->status ? r->message : "undecodable LeaseGrantResponse");
  if (g) etcdserverpb__lease_grant_response__free_unpacked(g, NULL);
  c->phase_done++;
  phase_next(c, 0);
}

static void on_revoke(void *ud, const cc_reply *r) {
  lk_client *c = ud;
  if (r->status != CC_STATUS_OK) phase_failed(c, r->status, r->message);
  c->phase_done++;
  phase_next(c, 1);
}

/* Starts the client's next grant (or revoke), or retires it. */
static void phase_next(lk_client *c, int revoke) {
  lk_thread *t = c->req->ctx->data;
  if (c->phase_done >= c->n) {
    t->pending--;
    return;
  }
  int rv;
  if (revoke) {
    Etcdserverpb__LeaseRevokeRequest q = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    q.id = c->ids[c->phase_done];
    rv = cc_unary(c->req->conn, CC_PATH_LEASE_REVOKE, &q.base, on_revoke, c);
  } else {
    Etcdserverpb__LeaseGrantRequest q = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    q.ttl = t->x->cfg->ttl;
    rv = cc_unary(c->req->conn, CC_PATH_LEASE_GRANT, &q.base, on_grant, c);
  }
  if (rv != 0) { /* out of memory: give up on this client's share */
    phase_failed(c, CC_STATUS_RESOURCE_EXHAUSTED, "client out of memory");
    t->pending--;
  }
}

/* Runs a phase on this thread's loop until every client is through its
 * share; returns the seconds it took. */
static double phase_run(lk_thread *t, int revoke) {
  double t0 = bench_now_s();
  t->pending = t->x->n_reqs;
  for (int i = 0; i < t->x->n_reqs; i++) {
    t->c[i].phase_done = 0;
    phase_next(&t->c[i], revoke);
  }
  while (t->pending > 0)
    if (cc_loop_run_once(t->x->loop, 100) < 0) break;
  return bench_now_s() - t0;
}

/* ---- keepalive streams ---------------------------------------------------------- */

static void ka_on_msg(void *ud, const uint8_t *data, size_t len) {
  lk_stream *s = ud;
  lk_client *c = s->c;
  if (s != c->cur || c->inflight == 0) return; /* nothing asked on this stream */
  int64_t want = c->inflight;
  c->inflight = 0;
  Etcdserverpb__LeaseKeepAliveResponse *k = etcdserverpb__lease_keep_alive_response__unpack(NULL, len, data);
  if (!k) {
    bench_req_done(c->req, CC_STATUS_INTERNAL, "undecodable LeaseKeepAliveResponse");
    return;
  }
  int64_t id = k->id, ttl = k->ttl;
  etcdserverpb__lease_keep_alive_response__free_unpacked(k, NULL);
  if (id != want) bench_req_done(c->req, CC_STATUS_INTERNAL, "keepalive answered for another lease");
  else if (ttl <= 0) bench_req_done(c->req, 5 /* NotFound */, "lease not found (keepalive TTL <= 0)");
  else bench_req_done(c->req, CC_STATUS_OK, "");
}

static void ka_on_close(void *ud, const cc_reply *r) {
  lk_stream *s = ud;
  lk_client *c = s->c;
  int current = s == c->cur;
  free(s);
  if (!current) return;
  c->cur = NULL; /* the next send opens a fresh stream */
  if (c->inflight == 0) return;
  c->inflight = 0;
  bench_req_done(c->req, r->status ? r->status : CC_STATUS_UNAVAILABLE,
                 r->status ? r->message : "keepalive stream ended with a keepalive in flight");
}

static int ka_open(lk_client *c) {
  lk_stream *s = calloc(1, sizeof *s);
  if (!s) return -1;
  s->c = c;
  s->st = cc_stream_open(c->req->conn, CC_PATH_LEASE_KEEPALIVE, ka_on_msg, ka_on_close, s);
  if (!s->st) {
    free(s);
    return -1;
  }
  c->cur = s;
  return 0;
}

static int lk_send(bench_req *r) {
  lk_client *c = r->data;
  if (!c->cur && ka_open(c) != 0) return -1;
  Etcdserverpb__LeaseKeepAliveRequest q = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
  q.id = c->ids[c->next++ % c->n];
  if (cc_stream_send(c->cur->st, &q.base) != 0) {
    /* the stream is closing (its on_close is on the way): use a fresh one */
    c->cur = NULL;
    if (ka_open(c) != 0 || cc_stream_send(c->cur->st, &q.base) != 0) return -1;
  }
  c->inflight = q.id;
  return 0;
}

/* ---- hooks ------------------------------------------------------------------------- */

static int lk_thread_setup(bench_ctx *x) {
  const bench_cfg *cfg = x->cfg;
  if (cfg->leases < cfg->clients) {
    fprintf(stderr, "cetcd-bench: lease-keepalive needs --leases >= --clients (%ld < %d)\n",
            cfg->leases, cfg->clients);
    return -1;
  }
  lk_thread *t = calloc(1, sizeof *t);
  if (!t) return -1;
  x->data = t;
  t->x = x;
  t->c = calloc((size_t)x->n_reqs + 1, sizeof *t->c);
  /* this thread's clients' shares, laid out one after the other */
  for (int i = 0; i < x->n_reqs; i++) {
    long g = x->reqs[i]->index;
    t->n_ids += (g + 1) * cfg->leases / cfg->clients - g * cfg->leases / cfg->clients;
  }
  t->ids = calloc((size_t)t->n_ids + 1, sizeof *t->ids);
  if (!t->c || !t->ids) return -1;
  long off = 0;
  for (int i = 0; i < x->n_reqs; i++) {
    lk_client *c = &t->c[i];
    long g = x->reqs[i]->index;
    c->req = x->reqs[i];
    c->req->data = c;
    c->ids = t->ids + off;
    c->n = (g + 1) * cfg->leases / cfg->clients - g * cfg->leases / cfg->clients;
    off += c->n;
  }
  t->rss_before_kb = cfg->server_pid ? bench_proc_status_kb(cfg->server_pid, "VmRSS:") : -1;
  t->grant_s = phase_run(t, 0);
  t->rss_after_kb = cfg->server_pid ? bench_proc_status_kb(cfg->server_pid, "VmRSS:") : -1;
  if (t->phase_failed) {
    const bench_err *e = &t->phase_errs.e[0];
    fprintf(stderr, "cetcd-bench: %ld of %ld lease grants failed (first: %s: %s)\n",
            t->phase_failed, t->n_ids, cc_status_name(e->status), e->message);
    return -1;
  }
  for (int i = 0; i < x->n_reqs; i++)
    if (ka_open(&t->c[i]) != 0) return -1;
  return 0;
}

static void lk_collect(bench_ctx *const *xs, int n, bench_result *res) {
  const bench_cfg *cfg = xs[0]->cfg;
  double grant_s = 0, revoke_s = 0;
  long revoke_failed = 0;
  for (int i = 0; i < n; i++) grant_s += ((lk_thread *)xs[i]->data)->grant_s;
  if (cfg->revoke) {
    for (int i = 0; i < n; i++) {
      lk_thread *t = xs[i]->data;
      t->phase_failed = 0;
      revoke_s += phase_run(t, 1);
      revoke_failed += t->phase_failed;
    }
  }
  bench_figs *f = bench_figs_attach(res);
  bench_figs_num(f, "leases", (double)cfg->leases);
  bench_figs_num(f, "ttl", cfg->ttl);
  bench_figs_num(f, "grant_secs", grant_s);
  bench_figs_num(f, "grants_per_sec", grant_s > 0 ? (double)cfg->leases / grant_s : 0);
  lk_thread *first = xs[0]->data, *last = xs[n - 1]->data;
  if (first->rss_before_kb >= 0 && last->rss_after_kb >= 0) {
    bench_figs_num(f, "server_rss_before_grant_kb", (double)first->rss_before_kb);
    bench_figs_num(f, "server_rss_after_grant_kb", (double)last->rss_after_kb);
    bench_figs_num(f, "server_rss_bytes_per_lease",
                   (double)(last->rss_after_kb - first->rss_before_kb) * 1024.0 /
                       (double)cfg->leases);
  }
  bench_figs_num(f, "keepalive_streams", cfg->clients);
  if (cfg->revoke) {
    bench_figs_num(f, "revoke_secs", revoke_s);
    bench_figs_num(f, "revokes_per_sec", revoke_s > 0 ? (double)cfg->leases / revoke_s : 0);
    bench_figs_num(f, "revoke_failed", (double)revoke_failed);
  }
}

static void lk_thread_free(bench_ctx *x) {
  lk_thread *t = x->data;
  if (!t) return;
  /* Streams still open belong to the loop, which frees them (and does not
   * call on_close then); their lk_stream wrappers go with them here. */
  for (int i = 0; t->c && i < x->n_reqs; i++) free(t->c[i].cur);
  free(t->c);
  free(t->ids);
  free(t);
  x->data = NULL;
}

void bench_lease_params_json(const bench_cfg *cfg) {
  printf(",\"leases\":%ld,\"ttl\":%d,\"revoke\":%s", cfg->leases, cfg->ttl,
         cfg->revoke ? "true" : "false");
}

const bench_ops bench_lease_keepalive_ops = {
    .thread_setup = lk_thread_setup,
    .send = lk_send,
    .collect = lk_collect,
    .thread_free = lk_thread_free,
};
