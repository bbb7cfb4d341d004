/* Classification metrics over arrays of labels, predictions, probabilities and patient ids: pure
 * functions, shared by `medgem eval` and the training loop's per-epoch evaluation.
 *
 * Conventions (checked against scikit-learn 1.9 by tests/test_metrics.c):
 * - Per-class precision/recall/F1 and their weighted/macro averages are sklearn's
 *   precision_recall_fscore_support / f1_score with labels=range(K) and zero_division=0: every one
 *   of the K classes counts, also those absent from both labels and predictions (F1 0 under macro).
 * - A prediction of -1 (an answer naming no class) is always wrong: it counts against the recall of
 *   its true class and in no class's precision, and has no column in the confusion matrix
 *   (confusion_matrix(labels=range(K)) drops it); `no_answer` counts them.
 * - Binary: classes >= first_positive are positive (malignant for BreakHis, first_positive = 4);
 *   a -1 prediction is wrong for both classes (neither a true positive nor a true negative).
 *   Sensitivity = TP / positives, specificity = TN / negatives, F1 of the positive class.
 * - ROC-AUC (roc_auc_score) of the positive score = sum of the probabilities of the positive
 *   classes, ties given half credit; NaN when only one binary class is present.
 * - Patient-level recognition rate (spec/breakhis.md §4, Spanhol 2016): the mean over patients of
 *   each patient's share of correctly classified images. */
#ifndef MG_METRICS_H
#define MG_METRICS_H

#include <stdint.h>

#include "engine/status.h"

#define MG_METRICS_MAX_CLASSES 16

typedef struct {
    int64_t n;
    const int *labels;    /* (n) true classes 0..K-1 */
    const int *preds;     /* (n) predicted classes 0..K-1, or -1 for no answer */
    const double *probs;  /* (n, K) class probabilities; NULL: no ROC-AUC */
    const int *patients;  /* (n) patient ids (any ints); NULL: no patient rate */
    int n_classes;        /* K, 2..MG_METRICS_MAX_CLASSES */
    int first_positive;   /* classes >= this form the positive binary class, 1..K-1 */
} mg_metrics_input;

typedef struct {
    int64_t n;
    int n_classes;
    double accuracy;
    double f1_weighted, f1_macro;
    double precision[MG_METRICS_MAX_CLASSES]; /* (K) */
    double recall[MG_METRICS_MAX_CLASSES];    /* (K) */
    double f1[MG_METRICS_MAX_CLASSES];        /* (K) */
    int64_t support[MG_METRICS_MAX_CLASSES];  /* (K) images with that true class */
    int64_t confusion[MG_METRICS_MAX_CLASSES][MG_METRICS_MAX_CLASSES]; /* (K, K) [true][pred] */
    int64_t no_answer;                        /* predictions of -1 */

    double bin_accuracy, bin_f1_positive, sensitivity, specificity;
    double auc;          /* NaN without probs or with one binary class only */
    double patient_rate; /* NaN without patients */
    int64_t n_patients;
} mg_metrics;

/* Computes every metric. Fails (MG_ERR_ARG) on n < 1, K or first_positive out of range, a label
 * outside 0..K-1 or a prediction outside -1..K-1, naming the index. */
mg_status mg_metrics_compute(const mg_metrics_input *in, mg_metrics *out);

/* roc_auc_score(y, score) for y in {0, 1}: the probability that a random positive scores above a
 * random negative (ties count half), from average ranks. NaN when y holds one class only. */
double mg_roc_auc(const int *y, const double *score, int64_t n);

/* Mean over distinct patients of (correct images of the patient / images of the patient).
 * Sets *n_patients (may be NULL). NaN when n == 0. */
double mg_patient_rate(const int *patients, const int *correct, int64_t n, int64_t *n_patients);

#endif
