/*
 * bench.h -- cetcd-bench's parts: flags (main.c), the closed-loop load
 * generator (run.c) and the report (report.c).
 */
#ifndef CETCD_BENCH_H
#define CETCD_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "cli/client/client.h"

#define BENCH_ENDPOINTS_MAX 16
#define BENCH_ERRS_MAX 64 /* distinct (status, message) pairs kept */

typedef enum {
  BENCH_PUT,
  BENCH_RANGE,
  BENCH_TXN_PUT,
  BENCH_LEASE_KEEPALIVE, /* lease.c */
  BENCH_REGISTRY,        /* registry.c */
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

/* A growable string (extra.c). */
typedef struct bench_buf {
  char *p; /* NUL-terminated, or NULL while empty */
  size_t len, cap;
} bench_buf;

void bench_buf_printf(bench_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bench_buf_free(bench_buf *b);

/* What a run measured. */
typedef struct bench_result {
  double *lat;   /* seconds per request by ticket; < 0: failed */
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
  /* Scenario figures (grant phase, per-op breakdown, ...): a JSON object's
   * members without braces, and the same as text lines; NULL: none. */
  bench_buf extra_json, extra_text;
} bench_result;

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
 * connections, the clients, tickets, --rate, the latency array, the error
 * table, the progress bar and the clock; the scenario starts each ticket's
 * request in send() and completes it with bench_req_done(). Every hook of
 * a thread runs on the thread that drives that thread's loop. */

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
  long ticket;  /* the request being made (slot in bench_result.lat) */
  double start; /* when run.c started it (bench_now_s clock) */
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
  /* After every thread joined and the server was measured, on the main
   * thread: errors of background work, res->extra_*. */
  void (*collect)(bench_ctx *const *xs, int n, bench_result *res);
  void (*thread_free)(bench_ctx *x);
} bench_ops;

extern const bench_ops bench_lease_keepalive_ops; /* lease.c */
extern const bench_ops bench_registry_ops;        /* registry.c */

/* run.c: completes r's request (latency from r->start, or an error) and
 * starts the client's next one. Only from a callback of r's loop. */
void bench_req_done(bench_req *r, int status, const char *message);
double bench_now_s(void);
uint64_t bench_rng_next(uint64_t *s);

/* extra.c: latency figures of a sample (seconds; sorted in place) into
 * res->extra_json as "name":{count,average,p50,p90,p99,p99.9,slowest}
 * and a text line; and a plain number. */
void bench_extra_lat(bench_result *res, const char *name, double *v, long n);
void bench_extra_num(bench_result *res, const char *name, double v);

/* lease.c, registry.c: their "parameters" members (after a comma). */
void bench_lease_params_json(const bench_cfg *cfg);
void bench_registry_params_json(const bench_cfg *cfg);

#endif /* CETCD_BENCH_H */
