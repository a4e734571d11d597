/*
 * extra.c -- the "extra" figures of the scenarios that plug into run.c
 * (lease.c, registry.c): a list of named figures, each a number or the
 * statistics of a latency sample, kept in bench_result.extra and printed
 * through the same callbacks as txn-mixed's and the watch scenarios'
 * figures (bench_result.extra_json / extra_text), so report.c has one way
 * to print a scenario's own figures.
 *
 * Latency statistics are report.c's (bench_stats_compute): the same
 * percentile rule and the same JSON members as the main figures.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/cetcd-bench/bench.h"

#define FIG_NAME_MAX 48

typedef struct bench_fig {
  char name[FIG_NAME_MAX];
  int is_lat;      /* 1: stats, 0: num */
  double num;
  bench_stats stats; /* lats freed (NULL): only the figures are printed */
} bench_fig;

struct bench_figs {
  bench_fig *v;
  int n, cap;
};

/* The next free entry, or NULL if memory ran out (the figure is lost). */
static bench_fig *figs_push(bench_figs *f, const char *name) {
  if (!f) return NULL;
  if (f->n == f->cap) {
    int cap = f->cap ? f->cap * 2 : 32;
    bench_fig *v = realloc(f->v, sizeof *v * (size_t)cap);
    if (!v) return NULL;
    f->v = v;
    f->cap = cap;
  }
  bench_fig *g = &f->v[f->n++];
  memset(g, 0, sizeof *g);
  snprintf(g->name, sizeof g->name, "%s", name);
  return g;
}

void bench_figs_num(bench_figs *f, const char *name, double v) {
  bench_fig *g = figs_push(f, name);
  if (g) g->num = v;
}

void bench_figs_lat(bench_figs *f, const char *name, const double *lat, const uint8_t *kind,
                    int want_kind, long n, double wall_s) {
  bench_fig *g = figs_push(f, name);
  if (!g) return;
  g->is_lat = 1;
  bench_stats_compute(lat, kind, want_kind, n, wall_s, &g->stats);
  free(g->stats.lats);
  g->stats.lats = NULL;
}

static void figs_json(const bench_cfg *cfg, const bench_result *res) {
  (void)cfg;
  const bench_figs *f = res->extra;
  printf(",\"extra\":{");
  for (int i = 0; i < f->n; i++) {
    const bench_fig *g = &f->v[i];
    if (i) putchar(',');
    if (g->is_lat) bench_stats_json(g->name, &g->stats);
    else printf("\"%s\":%.10g", g->name, g->num);
  }
  putchar('}');
}

static void figs_text(const bench_cfg *cfg, const bench_result *res) {
  const bench_figs *f = res->extra;
  printf("\n%s:\n", cfg->scenario_name);
  for (int i = 0; i < f->n; i++) {
    const bench_fig *g = &f->v[i];
    fputs("  ", stdout);
    if (g->is_lat) bench_stats_text(g->name, &g->stats);
    else printf("%s: %.10g\n", g->name, g->num);
  }
}

static void figs_free(void *extra) {
  bench_figs *f = extra;
  if (!f) return;
  free(f->v);
  free(f);
}

bench_figs *bench_figs_attach(bench_result *res) {
  bench_figs *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  res->extra = f;
  res->extra_json = figs_json;
  res->extra_text = figs_text;
  res->extra_free = figs_free;
  return f;
}
