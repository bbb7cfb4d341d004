/* Evaluation of a classifier on a BreakHis selection: the loop behind `medgem eval`, callable from
 * C (and by the training loop after each epoch). Batches come from the background loader
 * (data/prefetch.h), so decoding the next batch overlaps the forward of this one; the metrics are
 * engine/metrics.h's over the evaluated images.
 *   score:    one forward per batch; pred = argmax of the class-digit logits, probs their softmax.
 *   generate: the guide's evaluation, greedy answers parsed by the guide's regex (pred -1 when the
 *             answer names no class); logits/probs are the class digits' at the first answer
 *             position, the same numbers score mode gives, so ROC-AUC is reported in both modes.
 * The patient of an image, for the patient-level rate, is its patient folder (Spanhol's 82). */
#ifndef MG_EVAL_H
#define MG_EVAL_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include "data/breakhis_index.h"
#include "data/splits.h"
#include "engine/metrics.h"
#include "engine/jobs/classifier.h"

typedef enum { MG_EVAL_SCORE, MG_EVAL_GENERATE } mg_eval_mode;

struct mg_feature_cache; /* engine/jobs/feature_cache.h */

/* Called after each batch with images done so far, the total, and seconds since the start. */
typedef void (*mg_eval_progress_fn)(void *user, int64_t done, int64_t total, double seconds);

typedef struct {
    mg_eval_mode mode;
    int batch;               /* images per forward (>= 1) */
    int max_new_tokens;      /* generate mode: at most this many new tokens (the guide: 40) */
    int threads;             /* image decode workers of the loader (>= 1) */
    mg_bad_policy on_bad;    /* an unreadable image: left out and counted, or the run fails */
    mg_eval_progress_fn progress; /* may be NULL */
    void *progress_user;
    struct mg_feature_cache *features; /* score mode: the images' soft tokens come from (and go to) this
                                        * cache, wholly cached batches are not read; NULL: none */
    volatile sig_atomic_t *stop; /* may be NULL; when it becomes non-zero the loop ends after the batch in
                                  * flight, with `stopped` set (Ctrl-C in train and run) */
} mg_eval_opts;

/* Defaults: score mode, batch 8, 40 new tokens, 2 threads, skip bad images, no progress. */
mg_eval_opts mg_eval_defaults(void);

typedef struct {
    int64_t n;          /* images evaluated */
    int n_classes;      /* K */
    int64_t *records;   /* (n) indices into the index's recs, in evaluation order */
    int *labels;        /* (n) true classes */
    int *preds;         /* (n) predicted classes; -1: the answer named none (generate) */
    int *patients;      /* (n) patient number: images of one patient folder share it */
    float *logits;      /* (n, K) class-digit logits at the first answer position */
    double *probs;      /* (n, K) their softmax */
    char **answers;     /* (n) generated text in generate mode; NULL in score mode */
    int64_t skipped;    /* images left out as unreadable (MG_BAD_SKIP) */
    double seconds;     /* wall time of the loop, loading included */
    bool stopped;       /* ended early through opts.stop: n covers the batches done (none possibly) */
    mg_metrics metrics;
} mg_eval_result;

/* Evaluates records idx[0..n) of ix. On error *out is empty. */
mg_status mg_eval_run(const mg_classifier *c, const mg_bh_index *ix, const int64_t *idx, int64_t n,
                      const mg_eval_opts *o, mg_eval_result *out);
void mg_eval_result_free(mg_eval_result *r);

/* The per-image predictions as CSV, written atomically:
 *   path,label,pred,prob_0..prob_{K-1},logit_0..logit_{K-1}[,answer]
 * (answer in generate mode only); fields with a comma, quote or newline are quoted (RFC 4180). */
mg_status mg_eval_write_csv(const char *path, const mg_bh_index *ix, const mg_eval_result *r);

/* The metrics as the one JSON object `medgem eval --json` prints (and `medgem run` puts in
 * metrics.json): images, selected, skipped, mode, selection {fold, mag, split, balance, seed},
 * accuracy, f1_weighted, f1_macro, no_answer, confusion, per_class [{class, name, precision, recall,
 * f1, support}], binary {accuracy, f1_malignant, sensitivity, specificity, auc}, patient_rate,
 * patients, seconds, images_per_s; NaN as null. Ends with a newline. */
void mg_eval_write_json(FILE *f, const mg_eval_result *r, const mg_bh_selection *sel, mg_eval_mode mode,
                        int64_t selected);

#endif
