/*
 * bench.h -- cetcd-bench's parts: flags (main.c), the closed-loop load
 * generator for unary calls (run.c), the watch scenarios (watch.c), the
 * latency histogram (hist.c), --target-leader (leader.c), the protobuf
 * wire scanner for hot-path responses (pbscan.h), the scenarios that plug
 * into run.c through a bench_ops table (lease.c, registry.c), their
 * "extra" figures (extra.c) and the report (report.c).
 */
#ifndef CETCD_BENCH_H
#define CETCD_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "cli/client/client.h"

#define BENCH_ENDPOINTS_MAX 16
#define BENCH_ERRS_MAX 64 /* distinct (status, message) pairs kept */

typedef enum {
  BENCH_PUT, BENCH_RANGE, BENCH_TXN_PUT,
  BENCH_TXN_MIXED,     /* run.c: ranges and txn-puts, each in a Txn */
  BENCH_WATCH,         /* watch.c: watch creation, then events of puts */
  BENCH_WATCH_LATENCY, /* watch.c: put-to-event latency over many watchers */
  BENCH_LEASE_KEEPALIVE, /* lease.c: keepalives over LeaseKeepAlive streams */
  BENCH_REGISTRY,        /* registry.c: a service registry's mix */
} bench_scenario;

typedef struct bench_cfg {
  bench_scenario scenario;
  const char *scenario_name;
  const char *endpoints[BENCH_ENDPOINTS_MAX];
  int n_endpoints;
  int conns;   /* connections (--conns) */
  /* TLS (--cacert, --cert, --key, --insecure-skip-tls-verify) */
  const char *cacert, *cert, *key;
  int insecure_skip_tls_verify;
  int clients; /* closed-loop requesters, one request in flight each */
  int threads; /* event loops */
  long total;  /* requests */
  double rate; /* requests/s over all clients; 0 = unlimited */
  /* put */
  int key_size;
  int val_size;
  long key_space_size;
  int sequential_keys;
  int txn_ops; /* txn-put: puts per transaction */
  /* range */
  const char *range_key;
  const char *range_end;
  int serializable;
  long limit;
  int count_only;
  /* txn-mixed: reads per write; the read is `range KEY [END]` in a Txn */
  double rw_ratio;
  /* --duration: run this long instead of --total / --put-total (0 = off) */
  double duration_s;
  int target_leader; /* send everything to the leader (Maintenance.Status) */
  /* watch, watch-latency */
  int streams;          /* watch streams (--streams) */
  int watch_per_stream; /* watchers per stream (--watch-per-stream,
                           --watchers-per-stream) */
  long watched_key_total; /* watch: distinct watched keys */
  long put_total;         /* puts after the watchers are created */
  double put_rate;        /* puts/s; 0 = unlimited */
  double hold_s;          /* --hold: keep the watchers this long after the puts */
  int key_size_set, val_size_set, key_space_set; /* given on the command line */
  /* lease-keepalive, registry */
  long leases;      /* lease-keepalive: leases granted before the clock */
  int ttl;          /* lease TTL seconds; 0 = the scenario's default */
  int revoke;       /* lease-keepalive: revoke the leases after the clock stops */
  int services;     /* registry */
  long instances;   /* registry: leases, keys and keepalive cycles */
  int watchers;     /* registry: prefix watchers, watcher w on service w % services */
  double churn_rate; /* registry: deregister + re-register cycles per second */
  /* output */
  int json;
  int server_pid; /* 0 = none */
} bench_cfg;

/* One distinct error and how often it happened. */
typedef struct bench_err {
  int status;
  char message[160];
  long count;
} bench_err;

typedef struct bench_errs {
  bench_err e[BENCH_ERRS_MAX];
  int n;
  long other; /* errors beyond BENCH_ERRS_MAX distinct kinds */
} bench_errs;

void bench_errs_add(bench_errs *errs, int status, const char *message, long count);

typedef struct bench_hist bench_hist;
typedef struct bench_result bench_result;
struct cc_loop;
struct cc_conn;

/* What a run measured. */
struct bench_result {
  double *lat;   /* seconds per request; < 0: failed */
  long n_lat;    /* entries in lat */
  uint8_t *lat_kind; /* per lat entry, the request's kind (txn-mixed: 1 = write,
                        0 = read; registry: its op); NULL: no kinds kept */
  bench_hist *hist;  /* when set, the latencies are here instead of lat
                        (watch-latency: too many samples to keep) */
  long issued;   /* requests started */
  long ok;
  long failed;
  bench_errs errs;
  double wall_s;       /* first request to last completion */
  double cpu_user_s;   /* this process, during the run */
  double cpu_sys_s;
  int connect_failed;  /* connections that never came up */
  /* the server, when --server-pid is given (-1 if unreadable) */
  long server_hwm_kb;
  long server_rss_kb;
  double server_cpu_s; /* utime+stime during the run */
  /* Scenario-specific figures: called inside the JSON object (print
   * `,"extra":{...}`) and after the text report. NULL: none. */
  void (*extra_json)(const bench_cfg *cfg, const bench_result *res);
  void (*extra_text)(const bench_cfg *cfg, const bench_result *res);
  void *extra; /* the scenario's own figures, owned by the scenario */
  void (*extra_free)(void *extra);
};

/* Latency statistics as etcd's tool computes them (report.c). */
#define BENCH_N_PCTLS 8
extern const double bench_pctls[BENCH_N_PCTLS]; /* 10 .. 99.9 */
typedef struct bench_stats {
  double *lats; /* successful latencies, sorted (NULL with a histogram) */
  const bench_hist *hist;
  long n;
  double fastest, slowest, average, stddev, rps;
  double pct[BENCH_N_PCTLS];
} bench_stats;

/* From lat[0..n): the entries >= 0 whose kind is want_kind (kind == NULL
 * or want_kind < 0: all). rps = n / wall_s. Free s->lats. */
void bench_stats_compute(const double *lat, const uint8_t *kind, int want_kind, long n,
                         double wall_s, bench_stats *s);
void bench_stats_from_hist(const bench_hist *h, double wall_s, bench_stats *s);
/* `"name":{"count":..,"requests_per_sec":..,"average":..,"p50":..,...}` */
void bench_stats_json(const char *name, const bench_stats *s);
void bench_stats_text(const char *name, const bench_stats *s);

/* hist.c: a log-linear histogram of latencies (relative error < 0.4%,
 * 1 ns .. 1100 s), for runs with more samples than fit in an array. */
bench_hist *bench_hist_new(void);
void bench_hist_free(bench_hist *h);
void bench_hist_add(bench_hist *h, double secs);
long bench_hist_count(const bench_hist *h);
double bench_hist_min(const bench_hist *h);
double bench_hist_max(const bench_hist *h);
double bench_hist_mean(const bench_hist *h);
double bench_hist_stddev(const bench_hist *h);
/* The sample at 0-based rank r of the sorted samples (approximately). */
double bench_hist_at_rank(const bench_hist *h, long r);
/* Samples <= secs (bucket resolution). */
long bench_hist_count_le(const bench_hist *h, double secs);

/* Shared by the scenarios (run.c). */
double bench_now_s(void);
uint64_t bench_rng_next(uint64_t *s);
void bench_put_varint(uint8_t *dst, size_t cap, int64_t x);
/* Opens `n` connections (connection j to endpoint (first + j * step) mod
 * endpoints) and waits up to 5 s for them; returns how many failed, or -1
 * if one could not even be opened (message on stderr). */
int bench_connect(const bench_cfg *cfg, struct cc_loop *loop, struct cc_conn **conns, int n,
                  int first, int step);
/* A progress bar on stderr: done of total. */
void bench_progress_draw(long done, long total, int final);
/* Whether to draw it: stdout is a terminal (a person is watching, not a
 * pipe or file collecting the report) and so is stderr, where it goes. */
int bench_progress_wanted(void);
/* getrusage and the server's /proc figures around a run. */
typedef struct bench_usage {
  double user_s, sys_s, srv_cpu_s;
} bench_usage;
void bench_usage_begin(const bench_cfg *cfg, bench_usage *u);
void bench_usage_end(const bench_cfg *cfg, const bench_usage *u, bench_result *res);

/* watch.c: the watch and watch-latency scenarios; as bench_run. */
int bench_watch_run(const bench_cfg *cfg, bench_result *res);

/* leader.c: --target-leader. Asks each endpoint for its status and keeps
 * only the leader's; returns 0, or -1 with the reason on stderr. */
int bench_target_leader(bench_cfg *cfg);

/* run.c: runs the scenario; returns 0, or -1 (message on stderr) if it
 * could not start at all. */
int bench_run(const bench_cfg *cfg, bench_result *res);

/* report.c */
double bench_proc_cpu_s(int pid);                 /* -1 if unreadable */
long bench_proc_status_kb(int pid, const char *field); /* "VmHWM:", -1 if unreadable */
void bench_report_text(const bench_cfg *cfg, bench_result *res);
void bench_report_json(const bench_cfg *cfg, bench_result *res);

/* ---- scenarios beyond run.c's own (lease.c, registry.c) -----------------
 *
 * A scenario that needs more than one unary call per request (streams,
 * state between requests, work before the clock) plugs into run.c's
 * closed-loop generator through a bench_ops table. run.c still owns the
 * connections, the clients, tickets, --rate, --duration, the per-thread
 * latency arrays, the error table, the progress bar and the clock; the
 * scenario starts each ticket's request in send() and completes it with
 * bench_req_done(). Every hook of a thread runs on the thread that drives
 * that thread's loop. */

/* One event loop's share, as a scenario sees it. */
typedef struct bench_ctx {
  const bench_cfg *cfg;
  cc_loop *loop;
  cc_conn **conns; /* this thread's connections */
  int n_conns;
  int index;                  /* thread number, 0 .. cfg->threads - 1 */
  struct bench_req **reqs;    /* this thread's clients */
  int n_reqs;
  void *data;                 /* the scenario's per-thread state */
} bench_ctx;

/* One closed-loop client, as a scenario sees it. */
typedef struct bench_req {
  bench_ctx *ctx;
  cc_conn *conn;
  int index;    /* global client number, 0 .. cfg->clients - 1 */
  long ticket;  /* the request being made: 0, 1, ... (unbounded with --duration) */
  double start; /* when run.c started it (bench_now_s clock) */
  uint8_t kind; /* set by send() when the table's lat_kinds is set: kept
                   beside the request's latency (bench_result.lat_kind) */
  void *data;   /* the scenario's per-client state */
} bench_req;

typedef struct bench_ops {
  /* Before the clock, once per thread in thread order, after the
   * connections are up: grants, registrations, streams. -1 aborts the
   * run (message on stderr). */
  int (*thread_setup)(bench_ctx *x);
  /* Before the clock, after every thread's setup (watchers). May be NULL. */
  int (*thread_ready)(bench_ctx *x);
  /* Starts request r->ticket; returns 0, or -1 if memory ran out. */
  int (*send)(bench_req *r);
  /* Every loop turn: ms until it wants to run again, -1 if no timer. May be NULL. */
  int (*tick)(bench_ctx *x);
  /* After the thread's last request completed (draining). May be NULL. */
  void (*thread_finish)(bench_ctx *x);
  /* After every thread joined, the server was measured and the latencies
   * were joined into res->lat, on the main thread: errors of background
   * work, the "extra" figures (bench_figs_attach). */
  void (*collect)(bench_ctx *const *xs, int n, bench_result *res);
  void (*thread_free)(bench_ctx *x);
  int lat_kinds; /* keep bench_req.kind per latency, into res->lat_kind */
} bench_ops;

extern const bench_ops bench_lease_keepalive_ops; /* lease.c */
extern const bench_ops bench_registry_ops;        /* registry.c */

/* run.c: completes r's request (latency from r->start, or an error) and
 * starts the client's next one. Only from a callback of r's loop. */
void bench_req_done(bench_req *r, int status, const char *message);

/* extra.c: a scenario's "extra" figures as a list of named numbers and
 * latency statistics, printed in order through the bench_result callbacks
 * (`,"extra":{...}` in JSON; a section after the text report). */
typedef struct bench_figs bench_figs;
/* Makes an empty list res->extra, with extra_json, extra_text and
 * extra_free set to its printers; NULL if memory ran out (the figures are
 * then lost, the report still prints). */
bench_figs *bench_figs_attach(bench_result *res);
void bench_figs_num(bench_figs *f, const char *name, double v);
/* Statistics of lat[0..n) as bench_stats_compute selects them (entries
 * >= 0 of kind want_kind), printed as bench_stats_json / bench_stats_text. */
void bench_figs_lat(bench_figs *f, const char *name, const double *lat, const uint8_t *kind,
                    int want_kind, long n, double wall_s);

/* lease.c, registry.c: their "parameters" members (after a comma). */
void bench_lease_params_json(const bench_cfg *cfg);
void bench_registry_params_json(const bench_cfg *cfg);

#endif /* CETCD_BENCH_H */
