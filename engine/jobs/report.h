/* report.html of `medgem run` (engine/jobs/run.h): one self-contained file, no scripts and no
 * network, charts drawn here as inline SVG. Sections: the summary table beside the guide's
 * published numbers; per fold the loss and learning-rate curves (from train_log.jsonl), accuracy
 * per epoch (epoch 0 is the baseline), both confusion matrices as heat maps with counts, per-class
 * precision/recall/F1, the ROC curve of the binary task (malignant score = the sum of the
 * probabilities of classes 4-7), the data (images and patients per class and split, leakage);
 * then the settings, versions and timings. Each chart's <svg> has an id "chart-<name>-<fold>"
 * (loss, lr, accuracy, confusion-baseline, confusion-finetuned, roc) and a <title>. */
#ifndef MG_JOBS_REPORT_H
#define MG_JOBS_REPORT_H

#include "engine/jobs/run.h"

/* Writes the report to path (atomically). ix: the index the run used (for leakage file names). */
mg_status mg_report_write(const char *path, const mg_run_opts *o, const mg_run_result *r, const mg_bh_index *ix);

/* The ROC curve of scores against y in {0,1}: *n_points (fpr, tpr) pairs from (0,0) to (1,1), one
 * per distinct threshold, in malloc'd *fpr and *tpr. Fails when y holds one class only. */
mg_status mg_roc_curve(const int *y, const double *score, int64_t n, double **fpr, double **tpr, int64_t *n_points);

#endif
