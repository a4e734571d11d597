/*
 * compare.h -- `cetcd-bench compare`: two servers, A and B, measured by the
 * same cetcd-bench, scenario by scenario, alternately (A B A B ...).
 *
 * compare.c runs it (flags, server processes, one child cetcd-bench per
 * measurement); compare_report.c turns the runs into ratios, the markdown
 * report and the printed table; svg.c draws the chart. The report side is
 * pure: it reads the structs below and writes to a FILE.
 */
#ifndef CETCD_BENCH_COMPARE_H
#define CETCD_BENCH_COMPARE_H

#include <stdio.h>

#define CMP_SCENARIOS_MAX 64
#define CMP_ROUNDS_MAX 100
#define CMP_ARGS_MAX 64
#define CMP_LABEL_MAX 64
/* The percentiles cetcd-bench prints in "latency_secs", in its order. */
#define CMP_N_PCTLS 8
extern const char *const cmp_pctl_names[CMP_N_PCTLS]; /* "p10" .. "p99.9" */
#define CMP_P99 6

/* One measurement: one scenario, one server, one round. */
typedef struct cmp_run {
  int measured;       /* 1: the child printed a result (errors or not) */
  char reason[256];   /* why not, when !measured */
  long requests, ok, errors;
  double rps;
  double pct_s[CMP_N_PCTLS]; /* seconds; NAN where cetcd-bench printed null */
  long peak_rss_kb;          /* server VmHWM; -1: unknown (no --server-pid) */
  double server_cpu_s;       /* -1: unknown */
  double bench_cpu_ms_per_1000;
  char top_error[200]; /* "Status: message" of the first error kind, "" if none */
  int server_pid;      /* 0: none known */
} cmp_run;

typedef struct cmp_scenario {
  char label[CMP_LABEL_MAX];
  char *argv[CMP_ARGS_MAX]; /* cetcd-bench arguments (owned, strdup'ed) */
  int argc;
  const char *range_key; /* a `range KEY` scenario: KEY, put before measuring */
  cmp_run runs[2][CMP_ROUNDS_MAX]; /* [side][round] */
} cmp_scenario;

/* Mean and min-max over the rounds that have a value; n == 0: none. */
typedef struct cmp_stat {
  int n;
  double mean, min, max;
} cmp_stat;

/* What the table shows for one scenario. Ratios are B/A, per round, over
 * the rounds where both were measured. */
typedef struct cmp_summary {
  int measured[2];     /* rounds measured, per side */
  cmp_stat rps[2], p99_s[2], rss_kb[2];
  cmp_stat rps_ratio, p99_ratio, rss_ratio;
  long errors[2];      /* failed requests over all measured rounds */
  const char *reason[2]; /* why a side was not measured (its first failure) */
  const char *top_error[2];
} cmp_summary;

/* The machine and the method, for the report. */
typedef struct cmp_context {
  const char *name[2];    /* labels of A and B */
  const char *what[2];    /* the command or the endpoints, as given */
  char version[2][160];   /* `CMD --version`'s first line, "" if unknown */
  char cpu[160], os[160], kernel[160], date[64], commit[80];
  char data_fs[160]; /* where fresh servers keep their data: "/tmp (ext4)" */
  int cores;
  double ram_gib;
  char load_before[64], load_after[64];
  int rounds;
  int fresh_servers; /* 1: a fresh server per run (commands given) */
  const char *svg_name; /* the chart, relative to the report; NULL: none */
} cmp_context;

/* compare.c: `cetcd-bench compare ...`; argv[0] is "compare". */
int compare_main(int argc, char **argv);

/* compare_report.c */
void cmp_summarize(const cmp_scenario *s, int rounds, cmp_summary *out);
void cmp_write_table(FILE *f, const cmp_context *ctx, cmp_scenario *const *sc, int n);
void cmp_write_markdown(FILE *f, const cmp_context *ctx, cmp_scenario *const *sc, int n);

/* svg.c: the throughput ratios and the latency curves, one SVG document. */
void cmp_write_svg(FILE *f, const cmp_context *ctx, cmp_scenario *const *sc, int n);

#endif /* CETCD_BENCH_COMPARE_H */
