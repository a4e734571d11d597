/*
 * compare_report.c -- from the runs of `cetcd-bench compare` to ratios and
 * the markdown report.
 *
 * Each ratio is B/A and is taken per round (A and B of one round ran back
 * to back, so drift of the machine hits both alike), then averaged; the
 * min-max of the per-round ratios is its spread. A side's own figures are
 * means over its measured rounds (throughput with its min-max). Errors are
 * always shown, summed over the rounds. A side that could not be measured
 * says so in its cells, and the reason follows the table.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench/cetcd-bench/compare.h"

const char *const cmp_pctl_names[CMP_N_PCTLS] = {"p10", "p25", "p50", "p75",
                                                 "p90", "p95", "p99", "p99.9"};

static void stat_add(cmp_stat *st, double v) {
  if (st->n == 0 || v < st->min) st->min = v;
  if (st->n == 0 || v > st->max) st->max = v;
  st->mean = (st->mean * st->n + v) / (st->n + 1);
  st->n++;
}

static void summarize_side(const cmp_scenario *s, int side, int rounds, cmp_summary *out) {
  for (int r = 0; r < rounds; r++) {
    const cmp_run *run = &s->runs[side][r];
    if (!run->measured) {
      if (!out->reason[side]) out->reason[side] = run->reason;
      continue;
    }
    out->measured[side]++;
    stat_add(&out->rps[side], run->rps);
    if (!isnan(run->pct_s[CMP_P99])) stat_add(&out->p99_s[side], run->pct_s[CMP_P99]);
    if (run->peak_rss_kb >= 0) stat_add(&out->rss_kb[side], (double)run->peak_rss_kb);
    out->errors[side] += run->errors;
    if (!out->top_error[side] && run->top_error[0]) out->top_error[side] = run->top_error;
  }
}

void cmp_summarize(const cmp_scenario *s, int rounds, cmp_summary *out) {
  memset(out, 0, sizeof *out);
  for (int side = 0; side < 2; side++) summarize_side(s, side, rounds, out);
  for (int r = 0; r < rounds; r++) {
    const cmp_run *a = &s->runs[0][r], *b = &s->runs[1][r];
    if (!a->measured || !b->measured) continue;
    if (a->rps > 0) stat_add(&out->rps_ratio, b->rps / a->rps);
    double pa = a->pct_s[CMP_P99], pb = b->pct_s[CMP_P99];
    if (!isnan(pa) && !isnan(pb) && pa > 0) stat_add(&out->p99_ratio, pb / pa);
    if (a->peak_rss_kb > 0 && b->peak_rss_kb >= 0)
      stat_add(&out->rss_ratio, (double)b->peak_rss_kb / (double)a->peak_rss_kb);
  }
}

/* "1234 (1100-1300)": a mean with its spread when there is more than one
 * value; `scale` converts the unit, `prec` is the number of decimals. */
static void put_stat(FILE *f, const cmp_stat *st, double scale, int prec, int spread) {
  if (st->n == 0) {
    fputs("-", f);
    return;
  }
  fprintf(f, "%.*f", prec, st->mean * scale);
  if (spread && st->n > 1) fprintf(f, " (%.*f-%.*f)", prec, st->min * scale, prec, st->max * scale);
}

static void put_ratio(FILE *f, const cmp_stat *st) {
  if (st->n == 0) {
    fputs("-", f);
    return;
  }
  fprintf(f, "%.2fx", st->mean);
  if (st->n > 1) fprintf(f, " (%.2f-%.2f)", st->min, st->max);
}

/* A side's cell: its figure, or why it has none. */
static void put_side(FILE *f, const cmp_summary *sm, int side, const cmp_stat *st, double scale,
                     int prec, int spread) {
  if (sm->measured[side] == 0) fputs("failed", f);
  else put_stat(f, st, scale, prec, spread);
}

static void write_row(FILE *f, const cmp_scenario *s, int rounds) {
  cmp_summary sm;
  cmp_summarize(s, rounds, &sm);
  fprintf(f, "| %s | ", s->label);
  put_side(f, &sm, 0, &sm.rps[0], 1, 0, 1);
  fputs(" | ", f);
  put_side(f, &sm, 1, &sm.rps[1], 1, 0, 1);
  fputs(" | ", f);
  put_ratio(f, &sm.rps_ratio);
  fputs(" | ", f);
  put_side(f, &sm, 0, &sm.p99_s[0], 1e3, 2, 0);
  fputs(" | ", f);
  put_side(f, &sm, 1, &sm.p99_s[1], 1e3, 2, 0);
  fputs(" | ", f);
  put_ratio(f, &sm.p99_ratio);
  fputs(" | ", f);
  put_side(f, &sm, 0, &sm.rss_kb[0], 1.0 / 1024, 1, 0);
  fputs(" | ", f);
  put_side(f, &sm, 1, &sm.rss_kb[1], 1.0 / 1024, 1, 0);
  fputs(" | ", f);
  put_ratio(f, &sm.rss_ratio);
  fputs(" | ", f);
  for (int side = 0; side < 2; side++) {
    if (side) fputc('/', f);
    if (sm.measured[side]) fprintf(f, "%ld", sm.errors[side]);
    else fputc('-', f);
  }
  fputs(" |\n", f);
}

/* What is wrong with a scenario: failed sides and errors, one line each. */
static void write_notes(FILE *f, const cmp_context *ctx, cmp_scenario *const *sc, int n) {
  const char *sep = "\n"; /* a blank line ends the table */
  for (int i = 0; i < n; i++) {
    cmp_summary sm;
    cmp_summarize(sc[i], ctx->rounds, &sm);
    for (int side = 0; side < 2; side++) {
      if (sm.measured[side] < ctx->rounds && sm.reason[side]) {
        fprintf(f, "%s- %s: %s measured in %d of %d rounds: %s\n", sep, sc[i]->label,
                ctx->name[side], sm.measured[side], ctx->rounds, sm.reason[side]);
        sep = "";
      }
      if (sm.errors[side]) {
        fprintf(f, "%s- %s: %s had %ld failed requests (%s)\n", sep, sc[i]->label,
                ctx->name[side], sm.errors[side], sm.top_error[side] ? sm.top_error[side] : "?");
        sep = "";
      }
    }
  }
}

void cmp_write_table(FILE *f, const cmp_context *ctx, cmp_scenario *const *sc, int n) {
  const char *a = ctx->name[0], *b = ctx->name[1];
  fprintf(f,
          "| scenario | %s req/s | %s req/s | ratio | %s p99 ms | %s p99 ms | p99 ratio "
          "| %s peak RSS MiB | %s peak RSS MiB | RSS ratio | errors %s/%s |\n",
          a, b, a, b, a, b, a, b);
  fputs("|---|---|---|---|---|---|---|---|---|---|---|\n", f);
  for (int i = 0; i < n; i++) write_row(f, sc[i], ctx->rounds);
  write_notes(f, ctx, sc, n);
}

static void write_machine(FILE *f, const cmp_context *ctx) {
  fprintf(f, "- Machine: %s, %d cores, %.1f GiB RAM; %s; kernel %s\n", ctx->cpu, ctx->cores,
          ctx->ram_gib, ctx->os, ctx->kernel);
  fprintf(f, "- Date: %s; load average before %s, after %s\n", ctx->date, ctx->load_before,
          ctx->load_after);
  for (int side = 0; side < 2; side++)
    fprintf(f, "- %s %s: `%s`%s%s\n", side ? "B" : "A", ctx->name[side], ctx->what[side],
            ctx->version[side][0] ? ", " : "", ctx->version[side]);
  if (ctx->fresh_servers) fprintf(f, "- Data directories: %s\n", ctx->data_fs);
  if (ctx->commit[0]) fprintf(f, "- Source tree: git commit %s\n", ctx->commit);
}

static void write_method(FILE *f, const cmp_context *ctx) {
  fprintf(f,
          "Method: each scenario ran %d round%s, %s then %s in every round (A B A B ...), "
          "measured by the same client, `cetcd-bench`, each run in its own process. ",
          ctx->rounds, ctx->rounds == 1 ? "" : "s", ctx->name[0], ctx->name[1]);
  if (ctx->fresh_servers)
    fputs("Every run had a freshly started single-member server on free loopback ports with "
          "a fresh data directory, stopped afterwards; both fsync their WAL before "
          "acknowledging a write (their defaults). ",
          f);
  else
    fputs("Both servers were already running (not restarted between runs). ", f);
  fputs("Ratios are B/A, computed per round and averaged, with the min-max of the per-round "
        "ratios in parentheses; a side's throughput is its mean with min-max; p99 and peak "
        "RSS (the server's VmHWM) are means over rounds. On a shared machine absolute numbers "
        "drift; read the ratios and their spread.\n",
        f);
}

void cmp_write_markdown(FILE *f, const cmp_context *ctx, cmp_scenario *const *sc, int n) {
  fprintf(f, "## %s against %s (`cetcd-bench compare`)\n\n", ctx->name[1], ctx->name[0]);
  write_machine(f, ctx);
  fputc('\n', f);
  write_method(f, ctx);
  fputc('\n', f);
  cmp_write_table(f, ctx, sc, n);
  fputs("\nScenarios (cetcd-bench arguments):\n\n", f);
  for (int i = 0; i < n; i++) {
    fprintf(f, "- %s: `", sc[i]->label);
    for (int k = 0; k < sc[i]->argc; k++) fprintf(f, "%s%s", k ? " " : "", sc[i]->argv[k]);
    fputs("`\n", f);
  }
  if (ctx->svg_name)
    fprintf(f, "\n![throughput ratios and latency percentiles](%s)\n", ctx->svg_name);
}
