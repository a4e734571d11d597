/*
 * hist.c -- a log-linear latency histogram.
 *
 * watch-latency takes one sample per (put, watcher): 500 puts to 100,000
 * watchers are 50 million samples, 400 MB as an array of doubles. A
 * histogram in the manner of HdrHistogram holds them in 35 KB: values in
 * nanoseconds; below 256 ns one bucket per nanosecond, above it each
 * power of two is cut into 128 buckets, so a bucket is at most 1/128 of
 * its value wide and the midpoint is within 0.4% of every sample in it.
 * Count, sum, sum of squares, min and max are kept exactly, so fastest,
 * slowest, average and stddev are exact; only percentiles are bucketed.
 */
#include <math.h>
#include <stdlib.h>

#include "bench/cetcd-bench/bench.h"

#define SUB_BITS 7                  /* 128 buckets per power of two */
#define LINEAR 256                  /* exact buckets below this many ns */
#define EXP_MAX 40                  /* 2^41 ns ~ 2200 s: larger is clamped */
#define N_BUCKETS (LINEAR + (EXP_MAX - 8 + 1) * (1 << SUB_BITS))

struct bench_hist {
  long counts[N_BUCKETS];
  long n;
  double sum, sumsq, min, max; /* seconds */
};

bench_hist *bench_hist_new(void) { return calloc(1, sizeof(bench_hist)); }

void bench_hist_free(bench_hist *h) { free(h); }

static int bucket_of(uint64_t ns) {
  if (ns < LINEAR) return (int)ns;
  int e = 63 - __builtin_clzll(ns); /* >= 8 */
  if (e > EXP_MAX) return N_BUCKETS - 1;
  int sub = (int)((ns >> (e - SUB_BITS)) & ((1u << SUB_BITS) - 1));
  return LINEAR + (e - 8) * (1 << SUB_BITS) + sub;
}

/* The midpoint of a bucket, in seconds. */
static double bucket_mid_s(int b) {
  if (b < LINEAR) return (double)b * 1e-9;
  int e = 8 + (b - LINEAR) / (1 << SUB_BITS);
  int sub = (b - LINEAR) % (1 << SUB_BITS);
  double lo = ldexp(1.0 + (double)sub / (1 << SUB_BITS), e);
  double width = ldexp(1.0, e - SUB_BITS);
  return (lo + width / 2) * 1e-9;
}

void bench_hist_add(bench_hist *h, double secs) {
  if (secs < 0) secs = 0;
  double ns = secs * 1e9;
  h->counts[bucket_of(ns >= 1.8e19 ? UINT64_MAX : (uint64_t)ns)]++;
  if (h->n == 0 || secs < h->min) h->min = secs;
  if (h->n == 0 || secs > h->max) h->max = secs;
  h->n++;
  h->sum += secs;
  h->sumsq += secs * secs;
}

long bench_hist_count(const bench_hist *h) { return h->n; }
double bench_hist_min(const bench_hist *h) { return h->min; }
double bench_hist_max(const bench_hist *h) { return h->max; }
double bench_hist_mean(const bench_hist *h) { return h->n ? h->sum / (double)h->n : 0; }

double bench_hist_stddev(const bench_hist *h) {
  if (h->n == 0) return 0;
  double m = bench_hist_mean(h), var = h->sumsq / (double)h->n - m * m;
  return var > 0 ? sqrt(var) : 0;
}

double bench_hist_at_rank(const bench_hist *h, long r) {
  if (h->n == 0) return 0;
  if (r <= 0) return h->min;
  if (r >= h->n - 1) return h->max;
  long cum = 0;
  for (int b = 0; b < N_BUCKETS; b++) {
    cum += h->counts[b];
    if (cum > r) {
      double v = bucket_mid_s(b);
      return v < h->min ? h->min : v > h->max ? h->max : v;
    }
  }
  return h->max;
}

long bench_hist_count_le(const bench_hist *h, double secs) {
  double ns = secs * 1e9;
  int last = bucket_of(ns <= 0 ? 0 : ns >= 1.8e19 ? UINT64_MAX : (uint64_t)ns);
  long cum = 0;
  for (int b = 0; b <= last; b++) cum += h->counts[b];
  return cum;
}
