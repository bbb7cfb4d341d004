/* Classification metrics: plain counts, then ratios with zero_division = 0 (engine/metrics.h). */
#include "engine/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

/* F1 = 2·TP / (2·TP + FP + FN), which equals 2PR/(P+R) and is 0 when the denominator is. */
static double f1_of(int64_t tp, int64_t fp, int64_t fn) { return ratio(2.0 * (double)tp, (double)(2 * tp + fp + fn)); }

typedef struct {
    double score;
    int y;
} scored;

static int cmp_score(const void *a, const void *b) {
    const double x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x > y) - (x < y);
}

double mg_roc_auc(const int *y, const double *score, int64_t n) {
    scored *s = malloc((size_t)(n > 0 ? n : 1) * sizeof *s);
    if (!s) return NAN;
    int64_t pos = 0;
    for (int64_t i = 0; i < n; i++) s[i] = (scored){ score[i], y[i] }, pos += y[i] == 1;
    const int64_t neg = n - pos;
    if (pos == 0 || neg == 0) { free(s); return NAN; }
    qsort(s, (size_t)n, sizeof *s, cmp_score);
    /* Mann-Whitney: sum of the positives' ranks (1-based, ties get their average rank) */
    double rank_sum = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && s[j].score == s[i].score) j++;
        const double avg_rank = 0.5 * (double)(i + 1 + j); /* mean of ranks i+1 .. j */
        for (int64_t k = i; k < j; k++)
            if (s[k].y == 1) rank_sum += avg_rank;
        i = j;
    }
    free(s);
    return (rank_sum - 0.5 * (double)pos * (double)(pos + 1)) / ((double)pos * (double)neg);
}

typedef struct {
    int patient, correct;
} patient_hit;

static int cmp_patient(const void *a, const void *b) {
    const int x = ((const patient_hit *)a)->patient, y = ((const patient_hit *)b)->patient;
    return (x > y) - (x < y);
}

double mg_patient_rate(const int *patients, const int *correct, int64_t n, int64_t *n_patients) {
    if (n_patients) *n_patients = 0;
    patient_hit *h = malloc((size_t)(n > 0 ? n : 1) * sizeof *h);
    if (!h || n == 0) { free(h); return NAN; }
    for (int64_t i = 0; i < n; i++) h[i] = (patient_hit){ patients[i], correct[i] != 0 };
    qsort(h, (size_t)n, sizeof *h, cmp_patient);
    double sum = 0;
    int64_t np = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i, hits = 0;
        for (; j < n && h[j].patient == h[i].patient; j++) hits += h[j].correct;
        sum += (double)hits / (double)(j - i); /* this patient's score N_rec / N_P */
        np++;
        i = j;
    }
    free(h);
    if (n_patients) *n_patients = np;
    return sum / (double)np;
}

mg_status mg_metrics_compute(const mg_metrics_input *in, mg_metrics *out) {
    const int K = in->n_classes;
    const int64_t n = in->n;
    if (K < 2 || K > MG_METRICS_MAX_CLASSES || in->first_positive < 1 || in->first_positive >= K || n < 1)
        return mg_fail(MG_ERR_ARG, "evaluate at least one image with 2..16 classes",
                       "metrics: %lld images, %d classes, first positive class %d", (long long)n, K, in->first_positive);
    for (int64_t i = 0; i < n; i++)
        if (in->labels[i] < 0 || in->labels[i] >= K || in->preds[i] < -1 || in->preds[i] >= K)
            return mg_fail(MG_ERR_ARG, NULL, "metrics: image %lld has label %d and prediction %d; labels must be 0..%d, "
                           "predictions -1..%d", (long long)i, in->labels[i], in->preds[i], K - 1, K - 1);
    memset(out, 0, sizeof *out);
    out->n = n;
    out->n_classes = K;

    /* the confusion matrix [true][pred] and the binary counts */
    int64_t correct = 0, tp = 0, fp = 0, tn = 0, fn = 0, negatives = 0, bin_correct = 0;
    for (int64_t i = 0; i < n; i++) {
        const int y = in->labels[i], p = in->preds[i];
        out->support[y]++;
        correct += p == y;
        if (p < 0) out->no_answer++;
        else out->confusion[y][p]++;
        const int yb = y >= in->first_positive, pb = p < 0 ? -1 : p >= in->first_positive;
        bin_correct += pb == yb;
        if (yb) tp += pb == 1, fn += pb != 1; /* a -1 on a positive is a missed positive */
        else tn += pb == 0, fp += pb == 1, negatives++; /* a -1 on a negative: neither TN nor FP */
    }
    out->accuracy = (double)correct / (double)n;

    /* per class: TP on the diagonal, FP down the column, FN = support - TP (covers -1 answers) */
    for (int k = 0; k < K; k++) {
        int64_t ktp = out->confusion[k][k], pred_k = 0;
        for (int y = 0; y < K; y++) pred_k += out->confusion[y][k];
        out->precision[k] = ratio((double)ktp, (double)pred_k);
        out->recall[k] = ratio((double)ktp, (double)out->support[k]);
        out->f1[k] = f1_of(ktp, pred_k - ktp, out->support[k] - ktp);
        out->f1_macro += out->f1[k] / K;
        out->f1_weighted += out->f1[k] * (double)out->support[k] / (double)n;
    }

    out->bin_accuracy = (double)bin_correct / (double)n;
    out->bin_f1_positive = f1_of(tp, fp, fn);
    out->sensitivity = ratio((double)tp, (double)(tp + fn));
    out->specificity = ratio((double)tn, (double)negatives);

    out->auc = NAN;
    if (in->probs) {
        int *yb = malloc((size_t)n * sizeof *yb);
        double *score = malloc((size_t)n * sizeof *score);
        if (!yb || !score) { free(yb), free(score); return mg_fail(MG_ERR_OOM, NULL, "metrics: ROC-AUC of %lld images", (long long)n); }
        for (int64_t i = 0; i < n; i++) {
            yb[i] = in->labels[i] >= in->first_positive;
            score[i] = 0;
            for (int k = in->first_positive; k < K; k++) score[i] += in->probs[i * K + k];
        }
        out->auc = mg_roc_auc(yb, score, n);
        free(yb), free(score);
    }

    out->patient_rate = NAN;
    if (in->patients) {
        int *hit = malloc((size_t)n * sizeof *hit);
        if (!hit) return mg_fail(MG_ERR_OOM, NULL, "metrics: patient rate of %lld images", (long long)n);
        for (int64_t i = 0; i < n; i++) hit[i] = in->preds[i] == in->labels[i];
        out->patient_rate = mg_patient_rate(in->patients, hit, n, &out->n_patients);
        free(hit);
    }
    return MG_OK;
}
