/* report.html (engine/jobs/report.h): HTML and inline SVG written with fprintf; small helpers for
 * a plot's axes, ticks, lines and legend, heat maps and tables. */
#include "engine/jobs/report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/atomic_file.h"
#include "engine/json.h"
#include "engine/medgem.h"

/* ---- the ROC curve ---------------------------------------------------------------------------- */

typedef struct {
    double s;
    int y;
} scored;

static int by_score_desc(const void *a, const void *b) {
    const double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return x < y ? 1 : x > y ? -1 : 0;
}

mg_status mg_roc_curve(const int *y, const double *score, int64_t n, double **fpr, double **tpr, int64_t *n_points) {
    *fpr = *tpr = NULL, *n_points = 0;
    int64_t pos = 0;
    for (int64_t i = 0; i < n; i++) pos += y[i] != 0;
    const int64_t neg = n - pos;
    if (pos == 0 || neg == 0) return mg_fail(MG_ERR_ARG, NULL, "ROC curve: one class only (%lld positives of %lld)", (long long)pos, (long long)n);
    scored *v = malloc((size_t)n * sizeof *v);
    double *fx = malloc(((size_t)n + 2) * sizeof *fx), *ty = malloc(((size_t)n + 2) * sizeof *ty);
    if (!v || !fx || !ty) {
        free(v), free(fx), free(ty);
        return mg_fail(MG_ERR_OOM, NULL, "ROC curve of %lld points", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) v[i] = (scored){ score[i], y[i] != 0 };
    qsort(v, (size_t)n, sizeof *v, by_score_desc);
    int64_t tp = 0, fp = 0, k = 0;
    fx[k] = 0, ty[k++] = 0;
    for (int64_t i = 0; i < n; i++) {
        tp += v[i].y, fp += !v[i].y;
        if (i + 1 < n && v[i + 1].s == v[i].s) continue; /* one point per distinct threshold */
        fx[k] = (double)fp / neg, ty[k++] = (double)tp / pos;
    }
    free(v);
    *fpr = fx, *tpr = ty, *n_points = k;
    return MG_OK;
}

/* ---- HTML and SVG helpers --------------------------------------------------------------------- */

static void esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

static const char *const BLUE = "#1f6fb4", *const ORANGE = "#e07b20", *const GREEN = "#2a9d4b", *const GREY = "#888";

/* A plot area inside an SVG: data ranges [x0, x1] x [y0, y1] onto the rectangle (L, T, W, H). */
typedef struct {
    FILE *f;
    double x0, x1, y0, y1;
    double L, T, W, H;
    int legend_rows;
} plot;

static double px(const plot *p, double x) { return p->L + (x - p->x0) / (p->x1 - p->x0) * p->W; }
static double py(const plot *p, double y) { return p->T + p->H - (y - p->y0) / (p->y1 - p->y0) * p->H; }

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over range */
static double nice_step(double range, int target) {
    const double raw = range / target, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * mag;
}

static void svg_open(FILE *f, const char *id, int fold, const char *title, int w, int h) {
    /* max-width in proportion to the viewBox: every chart's text shows at the same size */
    fprintf(f, "<figure><svg id=\"chart-%s-%d\" viewBox=\"0 0 %d %d\" style=\"max-width:%dpx\" role=\"img\" "
               "xmlns=\"http://www.w3.org/2000/svg\"><title>",
            id, fold, w, h, w * 7 / 6);
    esc(f, title);
    fprintf(f, "</title>\n<text x=\"%d\" y=\"16\" text-anchor=\"middle\" class=\"t\">", w / 2);
    esc(f, title);
    fprintf(f, "</text>\n");
}
static void svg_close(FILE *f) { fprintf(f, "</svg></figure>\n"); }

static void tick_label(char *buf, size_t cap, double v, bool percent) {
    if (fabs(v) < 1e-12) v = 0;
    if (percent) snprintf(buf, cap, "%.0f%%", 100 * v);
    else snprintf(buf, cap, "%g", v);
}

/* The widest y tick label, in characters (a learning rate's "0.0005" needs more room than "14"). */
static int y_tick_chars(double y0, double y1, bool percent) {
    char b[32];
    int most = 0;
    const double ys = nice_step(y1 - y0, 5);
    for (double v = ceil(y0 / ys - 1e-9) * ys; v <= y1 + 1e-9 * ys; v += ys) {
        tick_label(b, sizeof b, v, percent);
        if ((int)strlen(b) > most) most = (int)strlen(b);
    }
    return most;
}

/* Left margin and y title position for tick labels of `chars` characters (about 7 px each), so
 * that the rotated title never overlaps them. */
static double left_margin(int chars) { return fmax(58, 22 + 7.0 * chars); }
static double y_title_x(double L, int chars) { return fmin(L - 42, L - 14 - 7.0 * chars); }

/* The frame, grid lines, tick labels and axis titles. */
static void axes(plot *p, const char *xlabel, const char *ylabel, bool x_int, bool y_percent) {
    FILE *f = p->f;
    char b[32];
    const double ys = nice_step(p->y1 - p->y0, 5);
    for (double v = ceil(p->y0 / ys - 1e-9) * ys; v <= p->y1 + 1e-9 * ys; v += ys) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"g\"/>", p->L, py(p, v), p->L + p->W, py(p, v));
        tick_label(b, sizeof b, v, y_percent);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", p->L - 4, py(p, v) + 4, b);
    }
    double xs = nice_step(p->x1 - p->x0, 6);
    if (x_int && xs < 1) xs = 1;
    for (double v = ceil(p->x0 / xs - 1e-9) * xs; v <= p->x1 + 1e-9 * xs; v += xs) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"g\"/>", px(p, v), p->T, px(p, v), p->T + p->H);
        tick_label(b, sizeof b, v, false);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", px(p, v), p->T + p->H + 14, b);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n", p->L, p->T, p->W, p->H);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", p->L + p->W / 2, p->T + p->H + 32, xlabel);
    fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
            y_title_x(p->L, y_tick_chars(p->y0, p->y1, y_percent)), p->T + p->H / 2, ylabel);
}

static void line(plot *p, const double *x, const double *y, int64_t n, const char *color, bool dots, bool dashed) {
    FILE *f = p->f;
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s points=\"", color,
            dashed ? " stroke-dasharray=\"5 4\"" : "");
    for (int64_t i = 0; i < n; i++) fprintf(f, "%s%.1f,%.1f", i ? " " : "", px(p, x[i]), py(p, y[i]));
    fprintf(f, "\"/>\n");
    for (int64_t i = 0; dots && i < n; i++)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", px(p, x[i]), py(p, y[i]), color);
    if (dots) fputc('\n', f);
}

/* A legend entry, stacked down the top-right (or bottom-right) corner of the plot area */
static void legend(plot *p, const char *color, const char *text, bool bottom) {
    const double x = p->L + p->W - 8, y = bottom ? p->T + p->H - 10 - 16 * p->legend_rows : p->T + 14 + 16 * p->legend_rows;
    fprintf(p->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" class=\"lg\">",
            x - 18, y - 4, x, y - 4, color, x - 24, y);
    esc(p->f, text);
    fprintf(p->f, "</text>\n");
    p->legend_rows++;
}

static plot plot_area(FILE *f, int w, int h, double x0, double x1, double y0, double y1) {
    if (!(x1 > x0)) x1 = x0 + 1;
    if (!(y1 > y0)) y1 = y0 + 1;
    const double L = left_margin(y_tick_chars(y0, y1, false));
    return (plot){ .f = f, .x0 = x0, .x1 = x1, .y0 = y0, .y1 = y1, .L = L, .T = 28, .W = w - L - 14, .H = h - 28 - 44 };
}

/* ---- train_log.jsonl -------------------------------------------------------------------------- */

typedef struct {
    double *step, *loss, *lr;
    int64_t n;
    double ep[64], acc[64], bin_acc[64];
    int n_ep;
} train_log;

static void read_log(const char *dir, train_log *t) {
    memset(t, 0, sizeof *t);
    char path[4400], buf[4096];
    snprintf(path, sizeof path, "%s/train_log.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return;
    int64_t cap = 0;
    while (fgets(buf, sizeof buf, f)) {
        mg_json *j = NULL;
        if (mg_json_parse(buf, strlen(buf), "train_log.jsonl", &j) != MG_OK) continue;
        const mg_json *ev = mg_json_get(j, "eval");
        if (ev && t->n_ep < 64) {
            t->ep[t->n_ep] = mg_json_get_number(ev, "epoch", 0);
            t->acc[t->n_ep] = mg_json_get_number(ev, "accuracy", NAN);
            t->bin_acc[t->n_ep++] = mg_json_get_number(ev, "binary_accuracy", NAN);
        } else if (mg_json_get(j, "loss")) {
            if (t->n == cap) {
                cap = cap ? 2 * cap : 256;
                t->step = realloc(t->step, (size_t)cap * sizeof(double));
                t->loss = realloc(t->loss, (size_t)cap * sizeof(double));
                t->lr = realloc(t->lr, (size_t)cap * sizeof(double));
            }
            t->step[t->n] = mg_json_get_number(j, "step", (double)t->n + 1);
            t->loss[t->n] = mg_json_get_number(j, "loss", NAN);
            t->lr[t->n++] = mg_json_get_number(j, "lr", NAN);
        }
        mg_json_free(j);
    }
    fclose(f);
}

static double max_of(const double *v, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i]) && v[i] > m) m = v[i];
    return m;
}

/* ---- the charts ------------------------------------------------------------------------------- */

enum { CW = 480, CH = 290 };

static void chart_loss(FILE *f, int fold, const train_log *t) {
    svg_open(f, "loss", fold, "training loss per optimizer update", CW, CH);
    plot p = plot_area(f, CW, CH, t->n ? t->step[0] - 1 : 0, t->n ? t->step[t->n - 1] : 1, 0, 1.05 * max_of(t->loss, t->n));
    axes(&p, "optimizer update", "loss (mean CE per token)", true, false);
    line(&p, t->step, t->loss, t->n, BLUE, t->n < 40, false);
    svg_close(f);
}

static void chart_lr(FILE *f, int fold, const train_log *t) {
    svg_open(f, "lr", fold, "learning rate per optimizer update", CW, CH);
    plot p = plot_area(f, CW, CH, t->n ? t->step[0] - 1 : 0, t->n ? t->step[t->n - 1] : 1, 0, 1.1 * max_of(t->lr, t->n));
    axes(&p, "optimizer update", "learning rate", true, false);
    line(&p, t->step, t->lr, t->n, ORANGE, t->n < 40, false);
    svg_close(f);
}

static void chart_accuracy(FILE *f, int fold, const train_log *t, const mg_run_fold *fo) {
    svg_open(f, "accuracy", fold, "test accuracy per epoch (0: baseline)", CW, CH);
    double x[65], a[65], b[65];
    int n = 0;
    x[n] = 0, a[n] = fo->baseline.metrics.accuracy, b[n++] = fo->baseline.metrics.bin_accuracy;
    for (int i = 0; i < t->n_ep; i++) x[n] = t->ep[i], a[n] = t->acc[i], b[n++] = t->bin_acc[i];
    plot p = plot_area(f, CW, CH, 0, x[n - 1] > 0 ? x[n - 1] : 1, 0, 1);
    axes(&p, "epoch", "accuracy on the test split", true, true);
    line(&p, x, b, n, GREEN, true, false);
    line(&p, x, a, n, BLUE, true, false);
    /* the final evaluation, adapter merged, at the last epoch */
    const double xe = x[n - 1];
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"9\" height=\"9\" fill=\"none\" stroke=\"#222\" stroke-width=\"1.5\"/>"
               "<rect x=\"%.1f\" y=\"%.1f\" width=\"9\" height=\"9\" fill=\"none\" stroke=\"#222\" stroke-width=\"1.5\"/>\n",
            px(&p, xe) - 4.5, py(&p, fo->final.metrics.accuracy) - 4.5, px(&p, xe) - 4.5,
            py(&p, fo->final.metrics.bin_accuracy) - 4.5);
    legend(&p, BLUE, "8-class", true);
    legend(&p, GREEN, "binary", true);
    legend(&p, "#222", "□ final, adapter merged", true);
    svg_close(f);
}

/* Heat map of the confusion matrix: colour = share of the true class's images, text = count */
static void chart_confusion(FILE *f, int fold, const char *id, const char *title, const mg_metrics *m) {
    const int K = m->n_classes, cell = 36, L = 62, T = 44, w = L + K * cell + 12, h = T + K * cell + 52;
    svg_open(f, id, fold, title, w, h);
    fprintf(f, "<text x=\"%d\" y=\"34\" text-anchor=\"middle\">predicted</text>\n", L + K * cell / 2);
    fprintf(f, "<text transform=\"translate(14 %d) rotate(-90)\" text-anchor=\"middle\">true class</text>\n", T + K * cell / 2);
    for (int y = 0; y < K; y++) {
        int64_t row = 0;
        for (int q = 0; q < K; q++) row += m->confusion[y][q];
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d %s</text>", L - 4, T + y * cell + cell / 2 + 4, y,
                MG_BREAKHIS_TYPE_CODES[y]);
        for (int q = 0; q < K; q++) {
            const int64_t c = m->confusion[y][q];
            const double s = row ? (double)c / row : 0;
            const int r = (int)(247 - s * (247 - 8)), g = (int)(251 - s * (251 - 48)), b = (int)(255 - s * (255 - 107));
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,%d)\" stroke=\"#fff\"/>",
                    L + q * cell, T + y * cell, cell, cell, r, g, b);
            if (c)
                fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\"%s>%lld</text>", L + q * cell + cell / 2,
                        T + y * cell + cell / 2 + 4, s > 0.5 ? " class=\"w\"" : "", (long long)c);
        }
        fputc('\n', f);
    }
    for (int q = 0; q < K; q++)
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d %s</text>", L + q * cell + cell / 2,
                T + K * cell + 14, q, MG_BREAKHIS_TYPE_CODES[q]);
    fprintf(f, "\n<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" class=\"lg\">colour: share of the true class's images</text>\n",
            L + K * cell / 2, T + K * cell + 32);
    if (m->no_answer)
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" class=\"lg\">%lld answers named no class (not shown)</text>\n",
                L + K * cell / 2, T + K * cell + 46, (long long)m->no_answer);
    svg_close(f);
}

/* The ROC curve of the binary task from the per-image probabilities */
static void roc_of(const mg_eval_result *e, double **fx, double **ty, int64_t *n) {
    int *y = malloc(((size_t)e->n + 1) * sizeof *y);
    double *s = malloc(((size_t)e->n + 1) * sizeof *s);
    *fx = *ty = NULL, *n = 0;
    if (y && s) {
        const int K = e->n_classes;
        for (int64_t i = 0; i < e->n; i++) {
            y[i] = e->labels[i] >= 4, s[i] = 0;
            for (int k = 4; k < K; k++) s[i] += e->probs[i * K + k];
        }
        if (mg_roc_curve(y, s, e->n, fx, ty, n) != MG_OK) *n = 0;
    }
    free(y), free(s);
}

static void chart_roc(FILE *f, int fold, const mg_run_fold *fo) {
    const int w = 400, h = 380;
    svg_open(f, "roc", fold, "ROC curve, benign vs malignant", w, h);
    plot p = { .f = f, .x0 = 0, .x1 = 1, .y0 = 0, .y1 = 1, .L = 58, .T = 28, .W = w - 58 - 14, .H = h - 28 - 44 };
    axes(&p, "false positive rate (1 - specificity)", "true positive rate (sensitivity)", false, false);
    const double d[2] = { 0, 1 };
    line(&p, d, d, 2, GREY, false, true);
    const mg_eval_result *ev[2] = { &fo->baseline, &fo->final };
    const char *col[2] = { ORANGE, BLUE }, *name[2] = { "baseline", "fine-tuned" };
    for (int i = 0; i < 2; i++) {
        double *fx, *ty;
        int64_t n;
        roc_of(ev[i], &fx, &ty, &n);
        char lg[96];
        if (n) {
            line(&p, fx, ty, n, col[i], false, false);
            snprintf(lg, sizeof lg, "%s, AUC %.3f", name[i], ev[i]->metrics.auc);
        } else {
            snprintf(lg, sizeof lg, "%s: not defined (one class)", name[i]);
        }
        legend(&p, col[i], lg, true);
        free(fx), free(ty);
    }
    svg_close(f);
}

/* ---- tables ----------------------------------------------------------------------------------- */

static void num3(FILE *f, double x) {
    if (isnan(x)) fprintf(f, "<td>-</td>");
    else fprintf(f, "<td>%.3f</td>", x);
}

static void summary_table(FILE *f, const mg_run_opts *o, const mg_run_result *r) {
    static const char *const task[2] = { "8-class", "binary" }, *const model[2] = { "baseline", "fine-tuned" };
    static const char *const f1[2] = { "weighted", "malignant" };
    const bool guide = mg_run_is_guide_selection(o), folds = r->n_folds > 1;
    fprintf(f, "<table class=\"num sum\"><tr><th>task</th><th>model</th><th>accuracy</th><th>F1</th><th>patient-level rate</th>"
               "<th>ROC-AUC</th>%s</tr>\n",
            guide ? "<th class=\"guide\">guide: accuracy</th><th class=\"guide\">guide: F1</th>" : "");
    for (int t = 0; t < 2; t++)
        for (int m = 0; m < 2; m++) {
            fprintf(f, "<tr%s><td>%s</td><td>%s</td>", m ? " class=\"ft\"" : "", task[t], model[m]);
            for (int q = 0; q < 4; q++) {
                double mean, sd;
                mg_run_summary(r, t, m, q, &mean, &sd);
                const bool p = q == 0 || q == 2;
                const double u = p ? 100 : 1;
                char c[64];
                if (isnan(mean)) snprintf(c, sizeof c, "-");
                else if (folds) snprintf(c, sizeof c, p ? "%.1f ± %.1f%%" : "%.3f ± %.3f", u * mean, u * sd);
                else snprintf(c, sizeof c, p ? "%.1f%%" : "%.3f", u * mean);
                fprintf(f, "<td>%s%s%s%s</td>", c, q == 1 ? " <small>" : "", q == 1 ? f1[t] : "", q == 1 ? "</small>" : "");
            }
            if (guide)
                fprintf(f, "<td class=\"guide\">%.1f%%</td><td class=\"guide\">%.3f</td>", 100 * MG_GUIDE_RESULTS[t][m][0],
                        MG_GUIDE_RESULTS[t][m][1]);
            fprintf(f, "</tr>\n");
        }
    fprintf(f, "</table>\n");
}

static void per_class_table(FILE *f, const mg_run_fold *fo) {
    const mg_metrics *b = &fo->baseline.metrics, *t = &fo->final.metrics;
    fprintf(f, "<table class=\"num\"><tr><th rowspan=\"2\">class</th><th colspan=\"3\">baseline</th>"
               "<th colspan=\"3\">fine-tuned</th><th rowspan=\"2\">support</th></tr>\n"
               "<tr><th>precision</th><th>recall</th><th>F1</th><th>precision</th><th>recall</th><th>F1</th></tr>\n");
    for (int k = 0; k < b->n_classes; k++) {
        fprintf(f, "<tr><td>%d %s</td>", k, MG_BREAKHIS_CLASSES[k]);
        num3(f, b->precision[k]), num3(f, b->recall[k]), num3(f, b->f1[k]);
        num3(f, t->precision[k]), num3(f, t->recall[k]), num3(f, t->f1[k]);
        fprintf(f, "<td>%lld</td></tr>\n", (long long)t->support[k]);
    }
    fprintf(f, "<tr class=\"tot\"><td>weighted F1 / macro F1</td><td colspan=\"3\">%.3f / %.3f</td><td colspan=\"3\">%.3f / "
               "%.3f</td><td>%lld</td></tr>\n</table>\n",
            b->f1_weighted, b->f1_macro, t->f1_weighted, t->f1_macro, (long long)t->n);
    fprintf(f, "<p>binary (malignant positive): baseline sensitivity %.3f, specificity %.3f; fine-tuned sensitivity %.3f, "
               "specificity %.3f.</p>\n",
            b->sensitivity, b->specificity, t->sensitivity, t->specificity);
}

static void data_table(FILE *f, const mg_run_fold *fo, const mg_bh_index *ix) {
    const mg_run_split_counts *tr = &fo->counts[0], *te = &fo->counts[1];
    fprintf(f, "<table class=\"num\"><tr><th rowspan=\"2\">class</th><th colspan=\"2\">train</th><th colspan=\"2\">test</th></tr>\n"
               "<tr><th>images</th><th>patients</th><th>images</th><th>patients</th></tr>\n");
    for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++)
        fprintf(f, "<tr><td>%d %s</td><td>%lld</td><td>%lld</td><td>%lld</td><td>%lld</td></tr>\n", k,
                MG_BREAKHIS_CLASSES[k], (long long)tr->class_images[k], (long long)tr->class_patients[k],
                (long long)te->class_images[k], (long long)te->class_patients[k]);
    fprintf(f, "<tr class=\"tot\"><td>all</td><td>%lld</td><td>%lld</td><td>%lld</td><td>%lld</td></tr></table>\n",
            (long long)tr->images, (long long)tr->patients, (long long)te->images, (long long)te->patients);
    const mg_bh_leaks *l = &fo->leaks;
    fprintf(f, "<p><b>Leakage.</b> Slide numbers (patients as the folds define them) with images in both splits: ");
    if (!l->n_patients) fprintf(f, "none.");
    for (int64_t i = 0; i < l->n_patients; i++) {
        fprintf(f, "%s<code>", i ? ", " : "");
        esc(f, l->patients[i]);
        fprintf(f, "</code>%s", i + 1 == l->n_patients ? "." : "");
    }
    fprintf(f, " Byte-identical images filed under different labels: %lld%s</p>\n", (long long)l->n_duplicates,
            l->n_duplicates ? ":" : ".");
    if (l->n_duplicates) {
        fprintf(f, "<ul class=\"small\">");
        for (int64_t i = 0; i < l->n_duplicates && i < 5; i++) {
            fprintf(f, "<li><code>");
            esc(f, ix->recs[l->duplicates[i][0]].key);
            fprintf(f, "</code> = <code>");
            esc(f, ix->recs[l->duplicates[i][1]].key);
            fprintf(f, "</code></li>");
        }
        if (l->n_duplicates > 5) fprintf(f, "<li>… %lld more</li>", (long long)l->n_duplicates - 5);
        fprintf(f, "</ul>\n");
    }
}

static void kv(FILE *f, const char *k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void kv(FILE *f, const char *k, const char *fmt, ...) {
    char buf[4400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(f, "<tr><th>%s</th><td>", k);
    esc(f, buf);
    fprintf(f, "</td></tr>\n");
}

static void settings_table(FILE *f, const mg_run_opts *o, const mg_run_result *r) {
    const mg_train_opts *t = &o->train;
    char mag[16];
    snprintf(mag, sizeof mag, o->sel.mag ? "%dX" : "all", o->sel.mag);
    fprintf(f, "<table class=\"kv\">\n");
    if (o->command) kv(f, "command", "%s", o->command);
    kv(f, "model", "%s%s", r->model_dir, r->embedded_model ? " (embedded tiny MedGemma, tests/golden/tiny)" : "");
    kv(f, "data", "%s%s (%lld images indexed)", r->data,
       r->embedded_data ? " (synthetic BreakHis format: 32 patients, 4 images per magnification, 140x92)" : "",
       (long long)r->index_images);
    kv(f, "selection", "fold %s, %s, %s balancing, seed %llu", o->all_folds ? "1-5" : (char[2]){ (char)('0' + o->sel.fold), 0 },
       mag, mg_balance_name(o->sel.balance), (unsigned long long)o->sel.seed);
    kv(f, "LoRA", "r %d, alpha %g, dropout %g, targets %s", t->lora_r, t->lora_alpha, t->lora_dropout, t->lora_targets);
    kv(f, "optimisation", "%d epochs%s, batch %d x %d accumulated, AdamW lr %g, weight decay %g, %s schedule, warmup ratio %g, "
       "max grad norm %g, seed %llu",
       t->epochs, t->max_steps > 0 ? " (capped by max steps)" : "", t->batch, t->grad_accum, t->lr, t->weight_decay,
       mg_schedule_name(t->schedule), t->warmup_ratio, t->max_grad_norm, (unsigned long long)t->seed);
    kv(f, "labels", "%s", t->loss_on == MG_LOSS_ON_ANSWER ? "loss on the answer tokens only" : "the guide's labels (all tokens but pad and image)");
    kv(f, "prompt", "%s, %s", o->prompt_text ? "custom" : "the guide's 8-class prompt",
       t->guide_path ? "two BOS (the guide's processor path)" : "one BOS");
    kv(f, "evaluation", "%s mode, batch %d%s; per epoch: score mode, adapter unmerged; final: adapter merged into the "
       "weights in memory (merge_and_unload)",
       o->eval.mode == MG_EVAL_GENERATE ? "generate" : "score", o->eval.batch,
       o->eval.mode == MG_EVAL_GENERATE ? ", greedy, first standalone digit 0-7" : ", argmax of the class-digit logits");
    if (r->embedded_model)
        kv(f, "note", "the embedded tiny run uses settings that make the tiny model learn quickly (loss on the answer, "
           "lr 5e-3, 3 epochs, batch 4, no accumulation, grad norm 1, no warmup); with --model the guide's settings apply");
    fprintf(f, "</table>\n");
}

static void timings_table(FILE *f, const mg_run_result *r) {
    fprintf(f, "<table class=\"num\"><tr><th>fold</th><th>load model</th><th>baseline eval</th><th>training</th>"
               "<th>merge</th><th>final eval</th><th>save merged</th><th>training speed</th><th>eval speed</th></tr>\n");
    for (int k = 0; k < r->n_folds; k++) {
        const mg_run_fold *fo = &r->folds[k];
        char sm[32] = "-";
        if (fo->t_save_merged > 0) snprintf(sm, sizeof sm, "%.1f s", fo->t_save_merged);
        fprintf(f, "<tr><td>%d</td><td>%.1f s</td><td>%.1f s</td><td>%.1f s</td><td>%.2f s</td><td>%.1f s</td><td>%s</td>"
                   "<td>%.2f images/s</td><td>%.2f images/s</td></tr>\n",
                fo->fold, fo->t_load, fo->t_baseline, fo->t_train, fo->t_merge, fo->t_final, sm, fo->train.seconds > 0 ? fo->train.images / fo->train.seconds : 0,
                fo->final.seconds > 0 ? fo->final.n / fo->final.seconds : 0);
    }
    fprintf(f, "</table>\n<p>Data (synthesis and index): %.1f s. Whole run: %.1f s.</p>\n", r->t_data, r->t_total);
}

static const char *const CSS =
    "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;max-width:1120px;margin:0 auto;padding:16px 20px}"
    "h1{font-size:24px;margin:8px 0}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd}h3{font-size:16px;margin:18px 0 6px}"
    "table{border-collapse:collapse;margin:8px 0;font-size:14px}td,th{border:1px solid #ddd;padding:3px 8px}"
    "th{background:#f4f6f8;text-align:left}table.num td{text-align:right;white-space:nowrap}table.sum td:nth-child(2){text-align:left}table.num td:first-child{text-align:left}"
    "table.num tr.ft td{font-weight:600}td.guide,th.guide{background:#fbf7ee;color:#555}tr.tot td{background:#f9f9f9}"
    "table.kv th{width:130px;vertical-align:top}small{color:#666;font-weight:400}code{font-size:13px}ul.small{font-size:13px}"
    ".charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:12px 20px;align-items:start}"
    "figure{margin:0}svg{width:100%;height:auto;display:block;font:11px system-ui,sans-serif}"
    "svg text{fill:#333}svg text.w{fill:#fff}svg .t{font-size:13px;font-weight:600}svg .lg{font-size:11px}"
    "svg .g{stroke:#e6e6e6}svg .frame{fill:none;stroke:#999}.note{color:#555;font-size:14px}";

mg_status mg_report_write(const char *path, const mg_run_opts *o, const mg_run_result *r, const mg_bh_index *ix) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return mg_fail(MG_ERR_OOM, NULL, "report.html buffer");
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
               "<title>medgem run %s</title><style>%s</style></head><body>\n",
            r->started, CSS);
    fprintf(f, "<h1>medgem run: LoRA fine-tuning of MedGemma on BreakHis</h1>\n<p class=\"note\">%s · %s%s · ", r->started,
            r->embedded_model ? "embedded tiny model" : "model ", r->embedded_model ? "" : r->model_dir);
    esc(f, r->embedded_data ? "synthetic data" : r->data);
    fprintf(f, " · %s</p>\n", r->backend);

    fprintf(f, "<h2 id=\"summary\">Summary</h2>\n");
    if (r->n_folds > 1) fprintf(f, "<p>Mean ± standard deviation over folds 1-5.</p>\n");
    summary_table(f, o, r);
    fprintf(f, "<p class=\"note\">Test split of the selection. F1: weighted over the 8 classes, of the malignant class for "
               "the binary task (classes 0-3 benign, 4-7 malignant). Patient-level rate: the mean over patients of the "
               "share of their images classified correctly. Fine-tuned: the final evaluation, adapter merged into the "
               "weights.");
    if (mg_run_is_guide_selection(o))
        fprintf(f, " The guide's numbers are MedGemma-4B on the real BreakHis (fold 1, 100X, 522 balanced test images)%s",
                r->embedded_model || r->embedded_data ? ": this run used the embedded tiny model and synthetic data, so "
                                                        "they are a reference, not a comparison." : ".");
    fprintf(f, "</p>\n");

    for (int k = 0; k < r->n_folds; k++) {
        const mg_run_fold *fo = &r->folds[k];
        train_log t;
        read_log(fo->dir, &t);
        fprintf(f, "<h2 id=\"fold-%d\">Fold %d: %lld training and %lld test images</h2>\n", fo->fold, fo->fold,
                (long long)fo->n_train, (long long)fo->n_test);
        fprintf(f, "<h3>Training</h3>\n<p>%d optimizer updates over %lld images in %.1f s, last loss %.4f.</p>\n<div class=\"charts\">\n",
                fo->train.steps, (long long)fo->train.images, fo->train.seconds, fo->train.last_loss);
        chart_loss(f, fo->fold, &t);
        chart_lr(f, fo->fold, &t);
        chart_accuracy(f, fo->fold, &t, fo);
        chart_roc(f, fo->fold, fo);
        fprintf(f, "</div>\n<h3>Confusion matrices (rows: true class, columns: predicted)</h3>\n<div class=\"charts\">\n");
        chart_confusion(f, fo->fold, "confusion-baseline", "baseline (untouched model)", &fo->baseline.metrics);
        chart_confusion(f, fo->fold, "confusion-finetuned", "fine-tuned (adapter merged)", &fo->final.metrics);
        fprintf(f, "</div>\n<p class=\"note\">Classes: ");
        for (int c = 0; c < MG_BREAKHIS_NCLASSES; c++)
            fprintf(f, "%s%d %s = %s", c ? ", " : "", c, MG_BREAKHIS_TYPE_CODES[c], MG_BREAKHIS_CLASSES[c]);
        fprintf(f, ".</p>\n<h3>Per class</h3>\n");
        per_class_table(f, fo);
        fprintf(f, "<h3>Data</h3>\n");
        data_table(f, fo, ix);
        free(t.step), free(t.loss), free(t.lr);
    }

    fprintf(f, "<h2 id=\"settings\">Settings</h2>\n");
    settings_table(f, o, r);
    fprintf(f, "<h2 id=\"versions\">Versions</h2>\n<table class=\"kv\">\n");
    kv(f, "medgem", "%s", MG_VERSION);
    kv(f, "compiler", "%s", __VERSION__);
    kv(f, "built", "%s", __DATE__);
    kv(f, "backend", "%s", r->backend);
    fprintf(f, "</table>\n<h2 id=\"timings\">Timings</h2>\n");
    timings_table(f, r);
    fprintf(f, "<p class=\"note\">Outputs beside this file: metrics.json, train_log.jsonl, adapter/ (PEFT), "
               "predictions_baseline.csv, predictions_finetuned.csv%s.</p>\n</body></html>\n",
            o->save_merged ? ", merged/" : "");
    fclose(f);
    const mg_status s = mg_write_file_atomic(path, buf, n);
    free(buf);
    return s;
}
