/* engine/metrics.h against scikit-learn: tests/fixtures/metrics/metrics.json holds several
 * prediction sets (answers of -1, classes absent from the labels, a perfect set, tied scores, one
 * binary class only) with sklearn's accuracy, F1 (weighted, macro), per-class precision/recall/F1,
 * confusion matrix, binary metrics and ROC-AUC, and the patient rate from a Python loop (made by
 * make_metrics_fixture.py). Also: bad input is an error, not a crash. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/json.h"
#include "engine/metrics.h"
#include "tests/test.h"

#define TOL 1e-12

static int *int_array(const mg_json *a) {
    int *v = malloc((size_t)a->n * sizeof *v);
    for (int i = 0; i < a->n; i++) v[i] = (int)a->items[i].number;
    return v;
}

/* |got - want| <= TOL, or both NaN when the fixture says null */
static void check_value(const char *name, const char *what, double got, const mg_json *want) {
    if (!want || want->type == MG_JSON_NULL) {
        CHECK(isnan(got), "%s %s: %g, expected NaN (sklearn: undefined)", name, what, got);
        return;
    }
    CHECK(fabs(got - want->number) <= TOL, "%s %s: %.15g, sklearn %.15g", name, what, got, want->number);
}

static void check_case(const mg_json *c, int K, int first_positive) {
    const char *name = mg_json_get_string(c, "name", "?");
    const mg_json *e = mg_json_get(c, "expect"), *probs_j = mg_json_get(c, "probs");
    const int n = mg_json_get(c, "labels")->n;
    int *labels = int_array(mg_json_get(c, "labels")), *preds = int_array(mg_json_get(c, "preds")),
        *patients = int_array(mg_json_get(c, "patients"));
    double *probs = malloc((size_t)n * K * sizeof *probs);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < K; k++) probs[i * K + k] = probs_j->items[i].items[k].number;

    const mg_metrics_input in = { .n = n, .labels = labels, .preds = preds, .probs = probs, .patients = patients,
                                  .n_classes = K, .first_positive = first_positive };
    mg_metrics m;
    CHECK(mg_metrics_compute(&in, &m) == MG_OK, "%s: %s", name, mg_last_error());
    const int failed_before = test_failed_;
    check_value(name, "accuracy", m.accuracy, mg_json_get(e, "accuracy"));
    check_value(name, "f1_weighted", m.f1_weighted, mg_json_get(e, "f1_weighted"));
    check_value(name, "f1_macro", m.f1_macro, mg_json_get(e, "f1_macro"));
    static const char *const per_class[] = { "precision", "recall", "f1" };
    const double *mine[] = { m.precision, m.recall, m.f1 };
    for (int q = 0; q < 3; q++)
        for (int k = 0; k < K; k++) {
            char what[32];
            snprintf(what, sizeof what, "%s[%d]", per_class[q], k);
            check_value(name, what, mine[q][k], &mg_json_get(e, per_class[q])->items[k]);
        }
    int conf_ok = 1, support_ok = 1;
    for (int y = 0; y < K; y++) {
        support_ok &= m.support[y] == (int64_t)mg_json_get(e, "support")->items[y].number;
        for (int p = 0; p < K; p++) conf_ok &= m.confusion[y][p] == (int64_t)mg_json_get(e, "confusion")->items[y].items[p].number;
    }
    CHECK(conf_ok, "%s: confusion matrix equals sklearn's", name);
    CHECK(support_ok, "%s: support equals sklearn's", name);
    CHECK(m.no_answer == (int64_t)mg_json_get_number(e, "no_answer", -1), "%s: no_answer %lld", name, (long long)m.no_answer);
    check_value(name, "binary accuracy", m.bin_accuracy, mg_json_get(e, "bin_accuracy"));
    check_value(name, "binary F1 malignant", m.bin_f1_positive, mg_json_get(e, "bin_f1_malignant"));
    check_value(name, "sensitivity", m.sensitivity, mg_json_get(e, "sensitivity"));
    check_value(name, "specificity", m.specificity, mg_json_get(e, "specificity"));
    check_value(name, "auc", m.auc, mg_json_get(e, "auc"));
    check_value(name, "patient_rate", m.patient_rate, mg_json_get(e, "patient_rate"));
    CHECK(m.n_patients == (int64_t)mg_json_get_number(e, "n_patients", -1), "%s: %lld patients", name, (long long)m.n_patients);
    printf("%s %-30s n=%3d acc %.4f f1w %.4f f1m %.4f bin acc %.4f f1 %.4f sens %.4f spec %.4f auc %.4f patients %.4f\n",
           test_failed_ == failed_before ? "ok  " : "FAIL", name, n, m.accuracy, m.f1_weighted, m.f1_macro,
           m.bin_accuracy, m.bin_f1_positive, m.sensitivity, m.specificity, m.auc, m.patient_rate);

    /* without probs and patients: those two are NaN, the rest unchanged */
    const mg_metrics_input bare = { .n = n, .labels = labels, .preds = preds, .n_classes = K, .first_positive = first_positive };
    mg_metrics b;
    CHECK(mg_metrics_compute(&bare, &b) == MG_OK && isnan(b.auc) && isnan(b.patient_rate) && b.accuracy == m.accuracy,
          "%s: no probs, no patients", name);
    free(labels), free(preds), free(patients), free(probs);
}

static void check_bad_input(void) {
    int labels[3] = { 0, 1, 9 }, preds[3] = { 0, 1, 2 };
    mg_metrics m;
    mg_metrics_input in = { .n = 3, .labels = labels, .preds = preds, .n_classes = 8, .first_positive = 4 };
    CHECK(mg_metrics_compute(&in, &m) == MG_ERR_ARG && strstr(mg_last_error(), "image 2"), "label 9 rejected: %s",
          mg_last_error());
    labels[2] = 2, preds[1] = -2;
    CHECK(mg_metrics_compute(&in, &m) == MG_ERR_ARG && strstr(mg_last_error(), "image 1"), "prediction -2 rejected: %s",
          mg_last_error());
    preds[1] = 1, in.n = 0;
    CHECK(mg_metrics_compute(&in, &m) == MG_ERR_ARG, "no images rejected");
    in.n = 3, in.first_positive = 8;
    CHECK(mg_metrics_compute(&in, &m) == MG_ERR_ARG, "first_positive out of range rejected");
}

int main(void) {
    mg_json *j = NULL;
    CHECK(mg_json_parse_file("tests/fixtures/metrics/metrics.json", &j) == MG_OK, "fixture: %s", mg_last_error());
    if (!j) return test_finish();
    const mg_json *cases = mg_json_get(j, "cases");
    printf("reference: scikit-learn %s, %d cases\n", mg_json_get_string(j, "sklearn", "?"), cases ? cases->n : 0);
    CHECK(cases && cases->n >= 5, "fixture has its cases");
    for (int i = 0; cases && i < cases->n; i++)
        check_case(&cases->items[i], (int)mg_json_get_number(j, "n_classes", 8), (int)mg_json_get_number(j, "first_positive", 4));
    check_bad_input();
    mg_json_free(j);
    return test_finish();
}
