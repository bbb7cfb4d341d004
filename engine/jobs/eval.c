/* The evaluation loop (engine/jobs/eval.h): loader batches -> classifier -> per-image results -> metrics. */
#include "engine/jobs/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/clock.h"
#include "data/prefetch.h"
#include "engine/atomic_file.h"
#include "engine/jobs/feature_cache.h"
#include "engine/oom.h"
#include "data/synth.h"
#include "data/splits.h"

mg_eval_opts mg_eval_defaults(void) {
    return (mg_eval_opts){ .mode = MG_EVAL_SCORE, .batch = 8, .max_new_tokens = 40, .threads = 2, .on_bad = MG_BAD_SKIP };
}

void mg_eval_result_free(mg_eval_result *r) {
    for (int64_t i = 0; r->answers && i < r->n; i++) free(r->answers[i]);
    free(r->answers), free(r->records), free(r->labels), free(r->preds), free(r->patients), free(r->logits), free(r->probs);
    memset(r, 0, sizeof *r);
}

typedef struct {
    const char *name;
    int64_t i;
} named;

static int cmp_named(const void *a, const void *b) { return strcmp(((const named *)a)->name, ((const named *)b)->name); }

/* patients[i] = the rank of image i's patient folder among the distinct ones */
static mg_status number_patients(const mg_bh_index *ix, mg_eval_result *r) {
    named *v = malloc((size_t)r->n * sizeof *v);
    if (!v) return mg_fail(MG_ERR_OOM, NULL, "numbering the patients of %lld images", (long long)r->n);
    for (int64_t i = 0; i < r->n; i++) v[i] = (named){ ix->recs[r->records[i]].patient, i };
    qsort(v, (size_t)r->n, sizeof *v, cmp_named);
    int id = -1;
    for (int64_t i = 0; i < r->n; i++) {
        if (i == 0 || strcmp(v[i - 1].name, v[i].name)) id++;
        r->patients[v[i].i] = id;
    }
    free(v);
    return MG_OK;
}

/* Runs one loader batch through the classifier into the result rows from r->n on. */
static mg_status eval_batch(const mg_classifier *c, const mg_batch *b, const mg_eval_opts *o, mg_eval_result *r) {
    const int K = c->n_classes;
    const int64_t at = r->n;
    float *logits = r->logits + at * K;
    if (o->mode == MG_EVAL_SCORE && mg_feature_cache_on(o->features)) {
        const void *const *soft;
        MG_TRY(mg_feature_cache_batch(o->features, b, &soft));
        MG_TRY(mg_classifier_score_features(c, soft, b->n, logits));
    } else if (o->mode == MG_EVAL_SCORE) {
        MG_TRY(mg_classifier_score(c, b->pixels, b->n, logits));
    } else {
        MG_TRY(mg_classifier_generate(c, b->pixels, b->n, o->max_new_tokens, r->preds + at, r->answers + at, logits));
    }
    for (int64_t j = 0; j < b->n; j++) {
        const int argmax = mg_class_softmax(logits + j * K, K, r->probs + (at + j) * K);
        if (o->mode == MG_EVAL_SCORE) r->preds[at + j] = argmax;
        r->records[at + j] = b->records[j];
        r->labels[at + j] = b->labels[j];
    }
    r->n += b->n;
    return MG_OK;
}

mg_status mg_eval_run(const mg_classifier *c, const mg_bh_index *ix, const int64_t *idx, int64_t n,
                      const mg_eval_opts *o, mg_eval_result *out) {
    memset(out, 0, sizeof *out);
    const int K = c->n_classes;
    if (n < 1) return mg_fail(MG_ERR_ARG, "check the selection (fold, magnification, split)", "nothing to evaluate: the selection is empty");
    if (o->batch < 1 || o->threads < 1 || (o->mode == MG_EVAL_GENERATE && o->max_new_tokens < 1))
        return mg_fail(MG_ERR_ARG, NULL, "eval: batch %d, threads %d and max_new_tokens %d must be positive", o->batch,
                       o->threads, o->max_new_tokens);
    mg_eval_result *r = out;
    r->n_classes = K;
    r->records = malloc((size_t)n * sizeof *r->records);
    r->labels = malloc((size_t)n * sizeof *r->labels);
    r->preds = malloc((size_t)n * sizeof *r->preds);
    r->patients = malloc((size_t)n * sizeof *r->patients);
    r->logits = malloc((size_t)(n * K) * sizeof *r->logits);
    r->probs = malloc((size_t)(n * K) * sizeof *r->probs);
    r->answers = o->mode == MG_EVAL_GENERATE ? calloc((size_t)n, sizeof *r->answers) : NULL;
    if (!r->records || !r->labels || !r->preds || !r->patients || !r->logits || !r->probs ||
        (o->mode == MG_EVAL_GENERATE && !r->answers)) {
        mg_eval_result_free(r);
        return mg_fail(MG_ERR_OOM, NULL, "results of %lld images", (long long)n);
    }

    const bool cached = o->mode == MG_EVAL_SCORE && mg_feature_cache_on(o->features);
    const mg_loader_opts lo = { .batch = o->batch, .image_size = c->model->cfg.image_size, .threads = o->threads,
                                .on_bad = o->on_bad, .cached = cached ? o->features->have : NULL };
    mg_loader *ld;
    mg_status s = mg_loader_create(ix, idx, n, &lo, &ld);
    if (s != MG_OK) { mg_eval_result_free(r); return s; }
    const double t0 = mg_now_s();
    const mg_batch *b;
    while ((s = mg_loader_next(ld, &b)) == MG_OK && b->n > 0) {
        if ((s = eval_batch(c, b, o, r)) != MG_OK) break;
        if (o->progress) o->progress(o->progress_user, r->n + mg_loader_skipped(ld), n, mg_now_s() - t0);
        if (o->stop && *o->stop) {
            r->stopped = true;
            break;
        }
    }
    r->skipped = mg_loader_skipped(ld);
    r->seconds = mg_now_s() - t0;
    mg_loader_free(ld);
    if (s == MG_OK && r->n == 0 && !r->stopped)
        s = mg_fail(MG_ERR_FORMAT, "check the images with `medgem data --verify`", "none of the %lld selected images could be read", (long long)n);
    if (s == MG_OK && r->n > 0) s = number_patients(ix, r);
    if (s == MG_OK && r->n > 0) {
        const mg_metrics_input mi = { .n = r->n, .labels = r->labels, .preds = r->preds, .probs = r->probs,
                                      .patients = r->patients, .n_classes = K, .first_positive = 4 /* 4-7 malignant */ };
        s = mg_metrics_compute(&mi, &r->metrics);
    }
    if (s != MG_OK) mg_eval_result_free(r);
    /* medgem eval's flag; train and run, whose flag is --eval-batch, set their own */
    return mg_oom_hint(s, "lower --batch (images per forward)");
}

/* One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180). */
static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

mg_status mg_eval_write_csv(const char *path, const mg_bh_index *ix, const mg_eval_result *r) {
    const int K = r->n_classes;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return mg_fail(MG_ERR_OOM, NULL, "building %s", path);
    fputs("path,label,pred", f);
    for (int k = 0; k < K; k++) fprintf(f, ",prob_%d", k);
    for (int k = 0; k < K; k++) fprintf(f, ",logit_%d", k);
    fputs(r->answers ? ",answer\n" : "\n", f);
    for (int64_t i = 0; i < r->n; i++) {
        csv_field(f, ix->recs[r->records[i]].path);
        fprintf(f, ",%d,%d", r->labels[i], r->preds[i]);
        for (int k = 0; k < K; k++) fprintf(f, ",%.9g", r->probs[i * K + k]);
        for (int k = 0; k < K; k++) fprintf(f, ",%.9g", r->logits[i * K + k]);
        if (r->answers) fputc(',', f), csv_field(f, r->answers[i] ? r->answers[i] : "");
        fputc('\n', f);
    }
    if (fclose(f)) { free(buf); return mg_fail(MG_ERR_OOM, NULL, "building %s", path); }
    mg_status s = mg_write_file_atomic(path, buf, len);
    free(buf);
    return s;
}
/* ---- the JSON report (mg_eval_write_json) ---- */

/* A JSON number, or null for NaN (ROC-AUC with one class only, no patients) */
static void json_num(FILE *f, double x) {
    if (isnan(x)) fprintf(f, "null");
    else fprintf(f, "%.9g", x);
}

void mg_eval_write_json(FILE *f, const mg_eval_result *r, const mg_bh_selection *sel, mg_eval_mode mode, int64_t selected) {
    const mg_metrics *m = &r->metrics;
    const int K = m->n_classes;
    fprintf(f, "{\"images\": %lld, \"selected\": %lld, \"skipped\": %lld, \"mode\": \"%s\",\n", (long long)r->n,
           (long long)selected, (long long)r->skipped, mode == MG_EVAL_SCORE ? "score" : "generate");
    char mag[16];
    snprintf(mag, sizeof mag, sel->mag ? "%dX" : "all", sel->mag);
    fprintf(f, " \"selection\": {\"fold\": %d, \"mag\": \"%s\", \"split\": \"%s\", \"balance\": \"%s\", \"seed\": %llu},\n",
           sel->fold, mag, sel->split == MG_BH_SPLIT_TRAIN ? "train" : "test", mg_balance_name(sel->balance),
           (unsigned long long)sel->seed);
    fprintf(f, " \"accuracy\": "), json_num(f, m->accuracy);
    fprintf(f, ", \"f1_weighted\": "), json_num(f, m->f1_weighted);
    fprintf(f, ", \"f1_macro\": "), json_num(f, m->f1_macro);
    fprintf(f, ", \"no_answer\": %lld,\n \"confusion\": [", (long long)m->no_answer);
    for (int y = 0; y < K; y++) {
        fprintf(f, "%s[", y ? ", " : "");
        for (int p = 0; p < K; p++) fprintf(f, "%s%lld", p ? ", " : "", (long long)m->confusion[y][p]);
        fprintf(f, "]");
    }
    fprintf(f, "],\n \"per_class\": [");
    for (int k = 0; k < K; k++) {
        fprintf(f, "%s\n  {\"class\": %d, \"name\": \"%s\", \"precision\": ", k ? "," : "", k, MG_BREAKHIS_CLASSES[k]);
        json_num(f, m->precision[k]), fprintf(f, ", \"recall\": "), json_num(f, m->recall[k]);
        fprintf(f, ", \"f1\": "), json_num(f, m->f1[k]), fprintf(f, ", \"support\": %lld}", (long long)m->support[k]);
    }
    fprintf(f, "],\n \"binary\": {\"accuracy\": "), json_num(f, m->bin_accuracy);
    fprintf(f, ", \"f1_malignant\": "), json_num(f, m->bin_f1_positive);
    fprintf(f, ", \"sensitivity\": "), json_num(f, m->sensitivity);
    fprintf(f, ", \"specificity\": "), json_num(f, m->specificity);
    fprintf(f, ", \"auc\": "), json_num(f, m->auc);
    fprintf(f, "},\n \"patient_rate\": "), json_num(f, m->patient_rate);
    fprintf(f, ", \"patients\": %lld, \"seconds\": %.3f, \"images_per_s\": ", (long long)m->n_patients, r->seconds);
    json_num(f, r->seconds > 0 ? (double)r->n / r->seconds : NAN);
    fprintf(f, "}\n");
}

