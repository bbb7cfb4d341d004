/* `medgem run`: the guide's whole workflow (spec/seed-pipeline.md) as one job over the train, eval
 * and merge jobs, per fold:
 *   1. the selection: fold, magnification, binary balancing (mg_bh_selection_default's), the train
 *      and test splits, their counts per class and the leakage between them (data/leakage.h);
 *   2. baseline: the untouched model evaluated on the test split;
 *   3. LoRA training (engine/jobs/train.h) with an evaluation after each epoch (adapter unmerged,
 *      score mode), the adapter saved in PEFT format;
 *   4. final: the adapter merged into the weights in memory (mg_model_apply_adapter, what the
 *      guide's merge_and_unload does) and the test split evaluated again;
 *   5. optionally (save_merged) the merged model directory written by engine/jobs/merge.h.
 * Then metrics.json (both evaluations of each fold, every key of `medgem eval --json`) and
 * report.html (engine/jobs/report.h) in out_dir. With all_folds the five folds run in turn, each in
 * out_dir/fold-<k>/, and the summary gives mean ± standard deviation over folds.
 *
 * Embedded defaults: model_dir NULL runs the tiny MedGemma the repository carries
 * (tests/golden/tiny, found beside the executable) and data NULL writes a small synthetic BreakHis
 * (data/synth.h) into out_dir/synth; mg_run_defaults(true) gives the training settings that make
 * the tiny model learn in under a minute on two CPU cores (the guide's would need far more steps). */
#ifndef MG_JOBS_RUN_H
#define MG_JOBS_RUN_H

#include "data/leakage.h"
#include "data/splits.h"
#include "engine/jobs/train.h"

/* What the stage callback is told */
typedef enum { MG_RUN_DATA, MG_RUN_LOAD, MG_RUN_BASELINE, MG_RUN_TRAIN, MG_RUN_FINAL, MG_RUN_SAVE_MERGED, MG_RUN_REPORT } mg_run_stage;

typedef struct {
    const char *model_dir;   /* NULL: the embedded tiny model */
    const char *data;        /* NULL: synthetic data written into out_dir/synth */
    const char *out_dir;     /* required; created */
    mg_bh_selection sel;     /* fold, mag, balance, seed (split is set per step) */
    bool all_folds;          /* folds 1-5 (sel.fold ignored) */
    bool force_cpu;
    bool save_merged;        /* also write <fold dir>/merged (engine/jobs/merge.h) */
    bool resume;             /* continue an interrupted run in out_dir with the same settings: per fold the
                              * baseline is evaluated again, training continues from the fold's newest
                              * checkpoint, and a fold whose training finished (train_done.json) is not
                              * trained again */
    mg_train_opts train;     /* train.out_dir is set per fold; train.eval is the per-epoch evaluation */
    mg_eval_opts eval;       /* the baseline and final evaluations */
    const char *prompt_text; /* the user text after the image; NULL: the guide's */
    const char *command;     /* the command line, recorded in the report (may be NULL) */
    /* progress (each may be NULL) */
    void (*stage)(void *user, int fold, mg_run_stage stage, const char *what);
    void *user;
} mg_run_opts;

/* The guide's settings (train: mg_train_defaults; eval: score mode). embedded: the settings for
 * the tiny model and synthetic data instead: loss on the answer, lr 5e-3, 3 epochs of batch 4,
 * no accumulation, gradient norm clipped at 1, no warmup. */
mg_run_opts mg_run_defaults(bool embedded);

/* Images and patients (patient folders) per class in one split */
typedef struct {
    int64_t images, patients;
    int64_t class_images[MG_BREAKHIS_NCLASSES], class_patients[MG_BREAKHIS_NCLASSES];
} mg_run_split_counts;

typedef struct {
    int fold;
    char dir[4096];            /* where this fold's outputs are */
    int64_t n_train, n_test;
    mg_run_split_counts counts[2]; /* [0] train, [1] test */
    mg_bh_leaks leaks;
    mg_eval_result baseline, final;
    double bin_patient_rate[2]; /* patient-level rate of the binary task: baseline, final */
    mg_train_result train;
    int n_epoch_evals;
    double t_load, t_baseline, t_train, t_merge, t_final, t_save_merged; /* seconds */
} mg_run_fold;

typedef struct {
    int n_folds;
    mg_run_fold folds[MG_BH_NFOLDS];
    char model_dir[4096], data[4096];
    bool embedded_model, embedded_data;
    char backend[512];          /* which backend ran (mg_backend_open's description) */
    int64_t index_images;       /* images in the index */
    double t_data, t_total;     /* seconds: data (synthesis + index), everything */
    char started[32];           /* local time, "2026-12-02 14:03:11" */
} mg_run_result;

/* Runs the workflow. On failure the outputs written so far stay in out_dir and the error names the
 * stage. Free r with mg_run_result_free in every case. */
mg_status mg_run(const mg_run_opts *o, mg_run_result *r);
void mg_run_result_free(mg_run_result *r);

/* The embedded model's directory: tests/golden/tiny beside the executable (../tests/golden/tiny
 * from build/medgem, via /proc/self/exe), else under the working directory. Fails naming the
 * places looked at. */
mg_status mg_run_find_tiny_model(char *dir, size_t cap);

/* Writes metrics.json (atomically): settings, per fold the selection, counts, leakage, training
 * summary, timings and both evaluations (mg_eval_write_json), and the summary rows (mean and
 * standard deviation over folds). */
mg_status mg_run_write_metrics(const char *path, const mg_run_opts *o, const mg_run_result *r);

/* The summary table as text (task x model: accuracy, F1, patient-level rate, ROC-AUC; mean ± sd
 * over folds; the guide's published numbers beside them on the guide's selection). */
void mg_run_print_table(FILE *f, const mg_run_opts *o, const mg_run_result *r);

/* One summary value over folds: which = 0..3 (accuracy, F1, patient rate, ROC-AUC), task 0
 * (8-class) or 1 (binary), model 0 (baseline) or 1 (fine-tuned); mean and sample sd (0 for one fold). */
void mg_run_summary(const mg_run_result *r, int task, int model, int which, double *mean, double *sd);

/* The guide's published numbers (spec/seed-pipeline.md): accuracy and F1 for task x model. */
extern const double MG_GUIDE_RESULTS[2][2][2];

/* Whether sel is the guide's selection (fold 1, 100X, binary balancing): its numbers then apply. */
bool mg_run_is_guide_selection(const mg_run_opts *o);

#endif
