/*
 * report.c -- what cetcd-bench prints.
 *
 * The text report has the shape of etcd's benchmark tool (pkg/report):
 * Summary (Total, Slowest, Fastest, Average, Stddev, Requests/sec), a
 * ten-bucket response-time histogram, the latency distribution at
 * 10..99.9%, and the error distribution. Statistics are computed as that
 * tool computes them (successful requests only; population stddev; the
 * percentile is the first sorted sample at or past the rank), so numbers
 * from the two tools can be compared. After it come what etcd's tool does
 * not print: the bench's own CPU per 1000 requests, the server's peak
 * RSS and CPU when --server-pid is given, and the scenario's own figures
 * (bench_result.extra_text / extra_json, set by the scenario).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/cetcd-bench/bench.h"
#include "cli/client/client.h"

const double bench_pctls[BENCH_N_PCTLS] = {10, 25, 50, 75, 90, 95, 99, 99.9};
#define pctls bench_pctls
#define N_PCTLS BENCH_N_PCTLS
typedef bench_stats stats;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void bench_stats_compute(const double *lat, const uint8_t *kind, int want_kind, long n,
                         double wall_s, bench_stats *s) {
  memset(s, 0, sizeof *s);
  s->lats = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
  if (!s->lats) return;
  double sum = 0;
  for (long i = 0; i < n; i++) {
    if (lat[i] < 0) continue;
    if (kind && want_kind >= 0 && kind[i] != want_kind) continue;
    s->lats[s->n++] = lat[i];
    sum += lat[i];
  }
  if (s->n == 0) return;
  qsort(s->lats, (size_t)s->n, sizeof(double), cmp_double);
  s->average = sum / (double)s->n;
  double var = 0;
  for (long i = 0; i < s->n; i++) var += (s->lats[i] - s->average) * (s->lats[i] - s->average);
  s->stddev = sqrt(var / (double)s->n);
  s->fastest = s->lats[0];
  s->slowest = s->lats[s->n - 1];
  s->rps = wall_s > 0 ? (double)s->n / wall_s : 0;
  size_t j = 0;
  for (long i = 0; i < s->n && j < N_PCTLS; i++) {
    if ((double)i * 100.0 / (double)s->n >= pctls[j]) s->pct[j++] = s->lats[i];
  }
}

/* The same figures from a histogram: the percentile is the sample at the
 * first rank i with i * 100 / n >= p, as above, read from its bucket. */
void bench_stats_from_hist(const bench_hist *h, double wall_s, bench_stats *s) {
  memset(s, 0, sizeof *s);
  s->hist = h;
  s->n = h ? bench_hist_count(h) : 0;
  if (s->n == 0) return;
  s->fastest = bench_hist_min(h);
  s->slowest = bench_hist_max(h);
  s->average = bench_hist_mean(h);
  s->stddev = bench_hist_stddev(h);
  s->rps = wall_s > 0 ? (double)s->n / wall_s : 0;
  for (size_t j = 0; j < N_PCTLS; j++) {
    long r = (long)ceil(pctls[j] * (double)s->n / 100.0);
    if (r < s->n) s->pct[j] = bench_hist_at_rank(h, r);
  }
}

static void stats_compute(const bench_cfg *cfg, const bench_result *res, stats *s) {
  (void)cfg;
  if (res->hist) bench_stats_from_hist(res->hist, res->wall_s, s);
  else bench_stats_compute(res->lat, NULL, -1, res->n_lat, res->wall_s, s);
}

void bench_stats_json(const char *name, const bench_stats *s) {
  printf("\"%s\":{\"count\":%ld,\"requests_per_sec\":%.4f,\"fastest\":%.6f,\"slowest\":%.6f,"
         "\"average\":%.6f,\"stddev\":%.6f", name, s->n, s->rps, s->fastest, s->slowest,
         s->average, s->stddev);
  for (size_t i = 0; i < N_PCTLS; i++) {
    if (s->pct[i] > 0) printf(",\"p%g\":%.6f", pctls[i], s->pct[i]);
    else printf(",\"p%g\":null", pctls[i]);
  }
  putchar('}');
}

void bench_stats_text(const char *name, const bench_stats *s) {
  printf("%s: %ld, %.1f/s, average %.4f, p50 %.4f, p90 %.4f, p99 %.4f, slowest %.4f secs.\n",
         name, s->n, s->rps, s->average, s->pct[2], s->pct[4], s->pct[6], s->slowest);
}

double bench_proc_cpu_s(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* Fields after the command, which is in parentheses and may hold spaces:
   * state is field 3, utime 14, stime 15. */
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  unsigned long ut = 0, st = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

long bench_proc_status_kb(int pid, const char *field) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  size_t fl = strlen(field);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, field, fl) == 0) {
      kb = strtol(line + fl, NULL, 10);
      break;
    }
  }
  fclose(f);
  return kb;
}

static void print_histogram(const stats *s) {
  enum { BC = 10 };
  double buckets[BC + 1];
  long counts[BC + 1] = {0};
  double bs = (s->slowest - s->fastest) / BC;
  for (int i = 0; i < BC; i++) buckets[i] = s->fastest + bs * i;
  buckets[BC] = s->slowest;
  int bi = 0;
  long max = 0;
  for (long i = 0; s->lats && i < s->n;) {
    if (s->lats[i] <= buckets[bi]) {
      i++;
      if (++counts[bi] > max) max = counts[bi];
    } else if (bi < BC) {
      bi++;
    } else {
      break; /* cannot happen: the last bucket is the slowest sample */
    }
  }
  long prev = 0;
  for (int i = 0; s->hist && i <= BC; i++) { /* at bucket resolution */
    long le = i == BC ? s->n : bench_hist_count_le(s->hist, buckets[i]);
    counts[i] = le - prev;
    prev = le;
    if (counts[i] > max) max = counts[i];
  }
  printf("\nResponse time histogram:\n");
  for (int i = 0; i <= BC; i++) {
    long bar = max > 0 ? counts[i] * 40 / max : 0;
    printf("  %4.4f [%ld]\t|", buckets[i], counts[i]);
    for (long k = 0; k < bar; k++) fputs("\xe2\x88\x8e", stdout); /* U+220E, as etcd */
    putchar('\n');
  }
}

static void print_errors(const bench_result *res) {
  if (res->failed == 0) return;
  printf("\nError distribution:\n");
  for (int i = 0; i < res->errs.n; i++) {
    const bench_err *e = &res->errs.e[i];
    printf("  [%ld]\trpc error: code = %s desc = %s\n", e->count, cc_status_name(e->status),
           e->message);
  }
  if (res->errs.other) printf("  [%ld]\t(other errors)\n", res->errs.other);
}

void bench_report_text(const bench_cfg *cfg, bench_result *res) {
  stats s;
  stats_compute(cfg, res, &s);
  if (s.n > 0) {
    printf("\nSummary:\n");
    printf("  Total:\t%4.4f secs.\n", res->wall_s);
    printf("  Slowest:\t%4.4f secs.\n", s.slowest);
    printf("  Fastest:\t%4.4f secs.\n", s.fastest);
    printf("  Average:\t%4.4f secs.\n", s.average);
    printf("  Stddev:\t%4.4f secs.\n", s.stddev);
    printf("  Requests/sec:\t%4.4f\n", s.rps);
    print_histogram(&s);
    printf("\nLatency distribution:\n");
    for (size_t i = 0; i < N_PCTLS; i++)
      if (s.pct[i] > 0) printf("  %g%% in %4.4f secs.\n", pctls[i], s.pct[i]);
  }
  print_errors(res);
  double cpu = res->cpu_user_s + res->cpu_sys_s;
  printf("\nRequests: %ld ok, %ld failed, of %ld\n", res->ok, res->failed, res->issued);
  if (res->connect_failed)
    printf("Connections that failed to come up: %d of %d\n", res->connect_failed, cfg->conns);
  printf("Bench CPU:\t%.3f secs (user %.3f, sys %.3f), %.2f ms per 1000 requests.\n", cpu,
         res->cpu_user_s, res->cpu_sys_s,
         res->issued > 0 ? cpu * 1e6 / (double)res->issued : 0.0);
  if (cfg->server_pid) {
    printf("Server pid %d:\tpeak RSS (VmHWM) %ld kB, RSS %ld kB, CPU %.3f secs", cfg->server_pid,
           res->server_hwm_kb, res->server_rss_kb, res->server_cpu_s);
    if (res->server_cpu_s >= 0 && res->issued > 0)
      printf(", %.2f ms per 1000 requests", res->server_cpu_s * 1e6 / (double)res->issued);
    printf(".\n");
  }
  if (res->extra_text) res->extra_text(cfg, res);
  free(s.lats);
}

static void json_string(const char *str) {
  putchar('"');
  for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
    if (*p == '"' || *p == '\\') printf("\\%c", *p);
    else if (*p < 0x20) printf("\\u%04x", *p);
    else putchar(*p);
  }
  putchar('"');
}

static void json_params(const bench_cfg *cfg) {
  printf("\"parameters\":{\"endpoints\":[");
  for (int i = 0; i < cfg->n_endpoints; i++) {
    if (i) putchar(',');
    json_string(cfg->endpoints[i]);
  }
  printf("],\"conns\":%d,\"clients\":%d,\"threads\":%d,", cfg->conns, cfg->clients,
         cfg->threads);
  if (cfg->duration_s > 0) printf("\"total\":null"); /* the duration decides */
  else printf("\"total\":%ld", cfg->total);
  printf(",\"rate\":%g", cfg->rate);
  if (cfg->duration_s > 0) printf(",\"duration_secs\":%g", cfg->duration_s);
  if (cfg->target_leader) printf(",\"target_leader\":true");
  if (cfg->scenario == BENCH_WATCH || cfg->scenario == BENCH_WATCH_LATENCY) {
    printf(",\"streams\":%d,\"%s\":%d,\"put_total\":%ld,\"put_rate\":%g,\"key_size\":%d,"
           "\"key_space_size\":%ld",
           cfg->streams, cfg->scenario == BENCH_WATCH ? "watch_per_stream" : "watchers_per_stream",
           cfg->watch_per_stream, cfg->put_total, cfg->put_rate, cfg->key_size,
           cfg->key_space_size);
    if (cfg->scenario == BENCH_WATCH)
      printf(",\"watched_key_total\":%ld,\"sequential_keys\":%s", cfg->watched_key_total,
             cfg->sequential_keys ? "true" : "false");
    else
      printf(",\"val_size\":%d", cfg->val_size);
  } else if (cfg->scenario == BENCH_TXN_MIXED) {
    printf(",\"key\":");
    json_string(cfg->range_key);
    if (cfg->range_end) {
      printf(",\"range_end\":");
      json_string(cfg->range_end);
    }
    printf(",\"rw_ratio\":%g,\"consistency\":\"%s\",\"limit\":%ld,\"key_size\":%d,"
           "\"val_size\":%d,\"key_space_size\":%ld",
           cfg->rw_ratio, cfg->serializable ? "s" : "l", cfg->limit, cfg->key_size,
           cfg->val_size, cfg->key_space_size);
  } else if (cfg->scenario == BENCH_PUT) {
    printf(",\"key_size\":%d,\"val_size\":%d,\"key_space_size\":%ld,\"sequential_keys\":%s",
           cfg->key_size, cfg->val_size, cfg->key_space_size,
           cfg->sequential_keys ? "true" : "false");
  } else if (cfg->scenario == BENCH_TXN_PUT) {
    printf(",\"key_size\":%d,\"val_size\":%d,\"key_space_size\":%ld,\"txn_ops\":%d",
           cfg->key_size, cfg->val_size, cfg->key_space_size, cfg->txn_ops);
  } else if (cfg->scenario == BENCH_LEASE_KEEPALIVE) {
    bench_lease_params_json(cfg);
  } else if (cfg->scenario == BENCH_REGISTRY) {
    bench_registry_params_json(cfg);
  } else {
    printf(",\"key\":");
    json_string(cfg->range_key);
    if (cfg->range_end) {
      printf(",\"range_end\":");
      json_string(cfg->range_end);
    }
    printf(",\"consistency\":\"%s\",\"limit\":%ld,\"count_only\":%s",
           cfg->serializable ? "s" : "l", cfg->limit, cfg->count_only ? "true" : "false");
  }
  printf("}");
}

void bench_report_json(const bench_cfg *cfg, bench_result *res) {
  stats s;
  stats_compute(cfg, res, &s);
  double cpu = res->cpu_user_s + res->cpu_sys_s;
  printf("{\"scenario\":\"%s\",", cfg->scenario_name);
  json_params(cfg);
  printf(",\"requests\":%ld,\"ok\":%ld,\"errors\":%ld,\"connect_failed\":%d,", res->issued,
         res->ok, res->failed, res->connect_failed);
  printf("\"error_distribution\":[");
  for (int i = 0; i < res->errs.n; i++) {
    const bench_err *e = &res->errs.e[i];
    printf("%s{\"code\":%d,\"status\":\"%s\",\"message\":", i ? "," : "", e->status,
           cc_status_name(e->status));
    json_string(e->message);
    printf(",\"count\":%ld}", e->count);
  }
  printf("],\"total_secs\":%.6f,\"requests_per_sec\":%.4f,", res->wall_s, s.rps);
  printf("\"latency_secs\":{\"fastest\":%.6f,\"slowest\":%.6f,\"average\":%.6f,\"stddev\":%.6f",
         s.fastest, s.slowest, s.average, s.stddev);
  /* A percentile too fine for the sample count is null, not 0. */
  for (size_t i = 0; i < N_PCTLS; i++) {
    if (s.pct[i] > 0) printf(",\"p%g\":%.6f", pctls[i], s.pct[i]);
    else printf(",\"p%g\":null", pctls[i]);
  }
  printf("},\"bench_cpu_secs\":%.4f,\"bench_cpu_ms_per_1000\":%.4f", cpu,
         res->issued > 0 ? cpu * 1e6 / (double)res->issued : 0.0);
  if (cfg->server_pid) {
    printf(",\"server\":{\"pid\":%d,\"peak_rss_kb\":%ld,\"rss_kb\":%ld,\"cpu_secs\":%.4f}",
           cfg->server_pid, res->server_hwm_kb, res->server_rss_kb, res->server_cpu_s);
  }
  if (res->extra_json) res->extra_json(cfg, res);
  printf("}\n");
  free(s.lats);
}
