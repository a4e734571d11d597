/*
 * extra.c -- the "extra" figures a scenario adds to the report: a growable
 * string, and helpers that write one figure both as a JSON member (for
 * --format json) and as a text line (for the text report).
 *
 * Percentiles follow report.c's rule (the first sorted sample at or past
 * the rank), so the extra latencies read like the main ones.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/cetcd-bench/bench.h"

void bench_buf_printf(bench_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  size_t need = b->len + (size_t)n + 1;
  if (need > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return; /* the figure is lost, the report still prints */
    b->p = p;
    b->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void bench_buf_free(bench_buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pctl(const double *v, long n, double p) {
  for (long i = 0; i < n; i++)
    if ((double)i * 100.0 / (double)n >= p) return v[i];
  return v[n - 1];
}

void bench_extra_lat(bench_result *res, const char *name, double *v, long n) {
  const char *sep = res->extra_json.len ? "," : "";
  if (n <= 0) {
    bench_buf_printf(&res->extra_json, "%s\"%s\":{\"count\":0}", sep, name);
    bench_buf_printf(&res->extra_text, "  %-28s none\n", name);
    return;
  }
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  double sum = 0;
  for (long i = 0; i < n; i++) sum += v[i];
  double avg = sum / (double)n, p50 = pctl(v, n, 50), p90 = pctl(v, n, 90);
  double p99 = pctl(v, n, 99), p999 = pctl(v, n, 99.9);
  bench_buf_printf(&res->extra_json,
                   "%s\"%s\":{\"count\":%ld,\"average\":%.6f,\"p50\":%.6f,\"p90\":%.6f,"
                   "\"p99\":%.6f,\"p99.9\":%.6f,\"slowest\":%.6f}",
                   sep, name, n, avg, p50, p90, p99, p999, v[n - 1]);
  bench_buf_printf(&res->extra_text,
                   "  %-28s %8ld  avg %.4f  p50 %.4f  p90 %.4f  p99 %.4f  p99.9 %.4f  max %.4f secs\n",
                   name, n, avg, p50, p90, p99, p999, v[n - 1]);
}

void bench_extra_num(bench_result *res, const char *name, double v) {
  bench_buf_printf(&res->extra_json, "%s\"%s\":%.10g", res->extra_json.len ? "," : "", name, v);
  bench_buf_printf(&res->extra_text, "  %-28s %.10g\n", name, v);
}
