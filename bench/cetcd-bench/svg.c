/*
 * svg.c -- the chart of `cetcd-bench compare`, hand-written SVG 1.1.
 *
 * Two parts, one document:
 *
 * - Throughput. Scenarios differ by orders of magnitude (a single-client
 *   put against a thousand-client serializable read), so each row is
 *   normalised to A = 1: an A bar of length 1, a B bar of length B/A with
 *   a whisker over the min-max of the per-round ratios, on a log2 axis
 *   (2x faster and 2x slower are the same distance from 1). The absolute
 *   requests/s of both are printed at the right of the row.
 * - Latency. One small panel per scenario: p50 .. p99.9 of A and of B
 *   (means over rounds), log scale in milliseconds, so the tail is visible
 *   next to the median.
 *
 * Everything the chart draws for a scenario is in <g class="scenario">;
 * the bars are <rect class="bar bar-a|bar-b">, which the tests count.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench/cetcd-bench/compare.h"

#define W 960
#define COLOR_A "#4c78a8"
#define COLOR_B "#f58518"
#define ROW_H 34
#define BAR_X0 230 /* the ratio axis runs from BAR_X0 to BAR_X1 */
#define BAR_X1 770
#define PANEL_COLS 4
#define PANEL_W 230
#define PANEL_H 175
#define FIRST_PCTL 2 /* p50: the curves start at the median */

static void xml_text(FILE *f, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '&': fputs("&amp;", f); break;
    case '<': fputs("&lt;", f); break;
    case '>': fputs("&gt;", f); break;
    case '"': fputs("&quot;", f); break;
    default: fputc(*s, f);
    }
  }
}

/* 12345.6 -> "12,346" */
static void fmt_thousands(double v, char *buf, size_t len) {
  char digits[32];
  snprintf(digits, sizeof digits, "%.0f", v);
  size_t n = strlen(digits), o = 0;
  for (size_t i = 0; i < n && o + 2 < len; i++) {
    if (i && (n - i) % 3 == 0 && digits[i - 1] != '-') buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = '\0';
}

/* The ratio axis: powers of two around every value shown, at least 0.5..2. */
typedef struct axis {
  double lo, hi; /* log2 of the ends */
} axis;

static axis ratio_axis(cmp_scenario *const *sc, int n, int rounds) {
  axis ax = {-1, 1};
  for (int i = 0; i < n; i++) {
    cmp_summary sm;
    cmp_summarize(sc[i], rounds, &sm);
    if (sm.rps_ratio.n == 0 || sm.rps_ratio.min <= 0) continue;
    ax.lo = fmin(ax.lo, floor(log2(sm.rps_ratio.min)));
    ax.hi = fmax(ax.hi, ceil(log2(sm.rps_ratio.max * 1.05)));
  }
  return ax;
}

static double ratio_x(const axis *ax, double v) {
  double l = log2(v);
  if (l < ax->lo) l = ax->lo;
  if (l > ax->hi) l = ax->hi;
  return BAR_X0 + (l - ax->lo) / (ax->hi - ax->lo) * (BAR_X1 - BAR_X0);
}

static void ratio_grid(FILE *f, const axis *ax, int top, int bottom) {
  for (double l = ax->lo; l <= ax->hi + 1e-9; l++) {
    double x = ratio_x(ax, exp2(l));
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" "
            "stroke-width=\"%s\"/>\n",
            x, top, x, bottom, l == 0 ? "#555" : "#ddd", l == 0 ? "1.5" : "1");
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"11\">%gx</text>\n",
            x, bottom + 14, exp2(l));
  }
}

static void throughput_row(FILE *f, const cmp_context *ctx, const cmp_scenario *s, const axis *ax,
                           int y) {
  cmp_summary sm;
  cmp_summarize(s, ctx->rounds, &sm);
  fputs("<g class=\"scenario\" data-label=\"", f);
  xml_text(f, s->label);
  fprintf(f, "\">\n<text x=\"10\" y=\"%d\" font-size=\"12\">", y + 21);
  xml_text(f, s->label);
  fputs("</text>\n", f);
  if (sm.rps_ratio.n == 0) {
    /* on a white patch, so the grid does not run through the words */
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"18\" fill=\"white\"/>\n", BAR_X0,
            y + 8, BAR_X1 - BAR_X0);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"#a00\">not measured: %s%s%s</text>\n</g>\n",
            BAR_X0 + 6, y + 21, sm.measured[0] ? "" : ctx->name[0],
            !sm.measured[0] && !sm.measured[1] ? ", " : "", sm.measured[1] ? "" : ctx->name[1]);
    return;
  }
  double x1 = ratio_x(ax, 1), xb = ratio_x(ax, sm.rps_ratio.mean);
  double wl = ratio_x(ax, sm.rps_ratio.min), wh = ratio_x(ax, sm.rps_ratio.max);
  fprintf(f, "<rect class=\"bar bar-a\" x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"12\" fill=\"%s\"/>\n",
          BAR_X0, y + 4, x1 - BAR_X0, COLOR_A);
  fprintf(f, "<rect class=\"bar bar-b\" x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"12\" fill=\"%s\"/>\n",
          BAR_X0, y + 18, xb - BAR_X0, COLOR_B);
  fprintf(f,
          "<path d=\"M%.1f %d v8 M%.1f %d H%.1f M%.1f %d v8\" stroke=\"#222\" fill=\"none\"/>\n",
          wl, y + 20, wl, y + 24, wh, wh, y + 20);
  fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" font-weight=\"bold\">%.2fx</text>\n",
          fmax(xb, wh) + 5, y + 28, sm.rps_ratio.mean);
  char a[32], b[32];
  fmt_thousands(sm.rps[0].mean, a, sizeof a);
  fmt_thousands(sm.rps[1].mean, b, sizeof b);
  fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" fill=\"%s\">%s req/s</text>\n",
          BAR_X1 + 60, y + 14, COLOR_A, a);
  fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" fill=\"%s\">%s req/s</text>\n</g>\n",
          BAR_X1 + 60, y + 28, COLOR_B, b);
}

/* ---- latency panels -------------------------------------------------------------- */

/* Mean of one percentile over a side's measured rounds, in ms; NAN if none. */
static double mean_pctl_ms(const cmp_scenario *s, int side, int rounds, int p) {
  double sum = 0;
  int n = 0;
  for (int r = 0; r < rounds; r++) {
    const cmp_run *run = &s->runs[side][r];
    if (run->measured && !isnan(run->pct_s[p]) && run->pct_s[p] > 0) {
      sum += run->pct_s[p] * 1e3;
      n++;
    }
  }
  return n ? sum / n : NAN;
}

typedef struct panel {
  int x, y;              /* top left */
  double lo, hi;         /* log10 of the y range, ms */
  double v[2][CMP_N_PCTLS];
} panel;

#define PX0 48 /* plot area inside a panel */
#define PX1 (PANEL_W - 12)
#define PY0 26
#define PY1 (PANEL_H - 30)

static double panel_x(const panel *p, int i) {
  return p->x + PX0 + (double)(i - FIRST_PCTL) * (PX1 - PX0) / (CMP_N_PCTLS - 1 - FIRST_PCTL);
}

static double panel_y(const panel *p, double ms) {
  return p->y + PY1 - (log10(ms) - p->lo) / (p->hi - p->lo) * (PY1 - PY0);
}

/* Ticks at 1, 2, 5 x 10^k inside the range (only decades when that is too
 * many). */
static void panel_ticks(FILE *f, const panel *p) {
  static const double steps[] = {1, 2, 5};
  /* 1, 2 and 5 while fewer than three decades would be labelled */
  int dense = (int)floor(p->hi) - (int)ceil(p->lo) + 1 < 3;
  for (int k = (int)floor(p->lo); k <= (int)ceil(p->hi); k++) {
    for (int j = 0; j < (dense ? 3 : 1); j++) {
      double v = steps[j] * pow(10, k), l = log10(v);
      if (l < p->lo || l > p->hi) continue;
      double y = panel_y(p, v);
      fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n",
              p->x + PX0, y, p->x + PX1, y);
      fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%g</text>\n",
              p->x + PX0 - 4, y + 3.5, v);
    }
  }
}

static void panel_curve(FILE *f, const panel *p, int side) {
  const char *color = side ? COLOR_B : COLOR_A;
  fprintf(f, "<polyline class=\"curve-%c\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
          side ? 'b' : 'a', color);
  for (int i = FIRST_PCTL; i < CMP_N_PCTLS; i++)
    if (!isnan(p->v[side][i])) fprintf(f, "%.1f,%.1f ", panel_x(p, i), panel_y(p, p->v[side][i]));
  fputs("\"/>\n", f);
  for (int i = FIRST_PCTL; i < CMP_N_PCTLS; i++)
    if (!isnan(p->v[side][i]))
      fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", panel_x(p, i),
              panel_y(p, p->v[side][i]), color);
}

static void panel_frame(FILE *f, const panel *p, const char *label) {
  fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" font-weight=\"bold\">", p->x + 6, p->y + 15);
  xml_text(f, label);
  fputs("</text>\n", f);
  fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n",
          p->x + PX0, p->y + PY0, PX1 - PX0, PY1 - PY0);
  for (int i = FIRST_PCTL; i < CMP_N_PCTLS; i++)
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%s</text>\n",
            panel_x(p, i), p->y + PY1 + 13, cmp_pctl_names[i] + 1);
  fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" fill=\"#555\">ms</text>\n", p->x + 8,
          p->y + PY0 + 4);
  fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" fill=\"#555\" text-anchor=\"middle\">percentile</text>\n",
          p->x + (PX0 + PX1) / 2, p->y + PY1 + 25);
}

static void latency_panel(FILE *f, const cmp_context *ctx, const cmp_scenario *s, int x, int y) {
  panel p = {.x = x, .y = y};
  double lo = INFINITY, hi = -INFINITY;
  for (int side = 0; side < 2; side++) {
    for (int i = 0; i < CMP_N_PCTLS; i++) {
      p.v[side][i] = mean_pctl_ms(s, side, ctx->rounds, i);
      if (i < FIRST_PCTL || isnan(p.v[side][i])) continue;
      lo = fmin(lo, log10(p.v[side][i]));
      hi = fmax(hi, log10(p.v[side][i]));
    }
  }
  fputs("<g class=\"latency\">\n", f);
  panel_frame(f, &p, s->label);
  if (lo > hi) {
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" fill=\"#a00\">no latencies</text>\n</g>\n",
            x + PX0 + 8, y + (PY0 + PY1) / 2);
    return;
  }
  /* a little room above and below; at least a factor of 2 tall */
  double pad = fmax(0.08, (0.3 - (hi - lo)) / 2);
  p.lo = lo - pad;
  p.hi = hi + pad;
  panel_ticks(f, &p);
  for (int side = 0; side < 2; side++) panel_curve(f, &p, side);
  fputs("</g>\n", f);
}

/* ---- the document ---------------------------------------------------------------- */

static void header(FILE *f, const cmp_context *ctx, int height) {
  fprintf(f,
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
          "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n"
          "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
          W, height, W, height);
  fputs("<text x=\"10\" y=\"24\" font-size=\"17\" font-weight=\"bold\">", f);
  xml_text(f, ctx->name[1]);
  fputs(" against ", f);
  xml_text(f, ctx->name[0]);
  fputs(" (cetcd-bench compare)</text>\n<text x=\"10\" y=\"42\" font-size=\"11\" fill=\"#444\">", f);
  xml_text(f, ctx->cpu);
  fprintf(f, ", %d cores, %.1f GiB; %s; %d round%s, alternating, means; load %s .. %s</text>\n",
          ctx->cores, ctx->ram_gib, ctx->date, ctx->rounds, ctx->rounds == 1 ? "" : "s",
          ctx->load_before, ctx->load_after);
  for (int side = 0; side < 2; side++) {
    int x = 10 + side * 260;
    fprintf(f, "<rect x=\"%d\" y=\"52\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", x,
            side ? COLOR_B : COLOR_A);
    fprintf(f, "<text x=\"%d\" y=\"62\" font-size=\"12\">%c: ", x + 17, side ? 'B' : 'A');
    xml_text(f, ctx->name[side]);
    fputs("</text>\n", f);
  }
}

void cmp_write_svg(FILE *f, const cmp_context *ctx, cmp_scenario *const *sc, int n) {
  int rows_top = 100, rows_bottom = rows_top + n * ROW_H;
  int lat_top = rows_bottom + 70;
  int panel_rows = (n + PANEL_COLS - 1) / PANEL_COLS;
  header(f, ctx, lat_top + 10 + panel_rows * (PANEL_H + 10) + 10);
  fprintf(f,
          "<text x=\"10\" y=\"%d\" font-size=\"14\" font-weight=\"bold\">Throughput, B/A "
          "(each scenario's A = 1; log scale; whisker: min-max over rounds)</text>\n",
          rows_top - 14);
  axis ax = ratio_axis(sc, n, ctx->rounds);
  ratio_grid(f, &ax, rows_top, rows_bottom);
  fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" fill=\"#444\">requests/s</text>\n",
          BAR_X1 + 60, rows_top - 2);
  for (int i = 0; i < n; i++) throughput_row(f, ctx, sc[i], &ax, rows_top + i * ROW_H);
  fprintf(f,
          "<text x=\"10\" y=\"%d\" font-size=\"14\" font-weight=\"bold\">Latency percentiles "
          "(ms, log scale; means over rounds)</text>\n",
          lat_top);
  for (int i = 0; i < n; i++)
    latency_panel(f, ctx, sc[i], 10 + (i % PANEL_COLS) * (PANEL_W + 5),
                  lat_top + 10 + (i / PANEL_COLS) * (PANEL_H + 10));
  fputs("</svg>\n", f);
}
