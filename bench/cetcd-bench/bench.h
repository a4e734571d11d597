/*
 * bench.h -- cetcd-bench's parts: flags (main.c), the closed-loop load
 * generator (run.c) and the report (report.c).
 */
#ifndef CETCD_BENCH_H
#define CETCD_BENCH_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_ENDPOINTS_MAX 16
#define BENCH_ERRS_MAX 64 /* distinct (status, message) pairs kept */

typedef enum { BENCH_PUT, BENCH_RANGE, BENCH_TXN_PUT } bench_scenario;

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
} bench_result;

/* run.c: runs the scenario; returns 0, or -1 (message on stderr) if it
 * could not start at all. */
int bench_run(const bench_cfg *cfg, bench_result *res);

/* report.c */
double bench_proc_cpu_s(int pid);                 /* -1 if unreadable */
long bench_proc_status_kb(int pid, const char *field); /* "VmHWM:", -1 if unreadable */
void bench_report_text(const bench_cfg *cfg, bench_result *res);
void bench_report_json(const bench_cfg *cfg, bench_result *res);

#endif /* CETCD_BENCH_H */
