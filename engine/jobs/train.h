/* LoRA fine-tuning on a BreakHis selection: the loop behind `medgem train`, callable from C (and by
 * `medgem run`). The guide's recipe by default (spec/seed-pipeline.md steps 7-9, spec/model.md §8):
 * training-form prompts (the image, the guide's question, the class digit as the answer), causal-LM
 * loss on the seed labels, 5 epochs of batch 1 x 8 accumulated, AdamW lr 5e-4 with cosine
 * decay after 3% warmup, gradient norm clipped at 0.3, an evaluation of the test split after each
 * epoch (score mode, adapter unmerged).
 *
 * Outputs in out_dir: train_log.jsonl (one line per optimizer update, one per evaluation, one at
 * the end of each epoch with the process's host and GPU memory),
 * adapter/ (PEFT format, at the end), and checkpoint-<step>/ every save_every updates and when
 * stopped: a PEFT adapter directory plus optimizer.safetensors (AdamW moments) and state.json
 * (the position in the run, and each file's size and CRC-32), written file by file atomically with
 * state.json last; the two newest complete checkpoints are kept (engine/jobs/train_ckpt.h). Resuming from one reproduces the
 * uninterrupted run's updates exactly on the same backend: the data order and the dropout masks
 * are functions of (seed, epoch, micro-batch), not of a stream that would need saving. */
#ifndef MG_JOBS_TRAIN_H
#define MG_JOBS_TRAIN_H

#include <signal.h>

#include "engine/optim.h"
#include "engine/jobs/eval.h"

/* A NaN or Inf loss or gradient norm: stop with an error (the default), or skip that update (its
 * gradients are dropped, the schedule moves on) and count it. */
typedef enum { MG_ON_NAN_STOP, MG_ON_NAN_SKIP } mg_on_nan;

/* What the progress callback sees after each optimizer update. */
typedef struct {
    int epoch, epochs;       /* 1-based epoch */
    int step, total_steps;   /* updates done, updates in the run */
    double loss;             /* mean CE over this update's labelled tokens */
    double lr, grad_norm;    /* the update's learning rate and pre-clipping gradient norm */
    double images_per_s;     /* over the run so far (this process) */
    double seconds, eta_s;
} mg_train_progress;

/* What the epoch callback sees at the end of each epoch (after its evaluation, if any); the same
 * numbers as the epoch's "epoch_end" line of train_log.jsonl. */
typedef struct {
    int epoch, epochs;   /* 1-based epoch just finished */
    int step;            /* updates done */
    double seconds;      /* since this call started */
    int64_t host_rss;    /* resident bytes of this process (VmRSS of /proc/self/status); -1 where unreadable */
    int64_t host_peak;   /* its peak resident bytes so far (VmHWM); -1 where unreadable */
    int64_t device_used; /* bytes in use on the GPU (cudaMemGetInfo: total - free, so every process on it and
                          * the CUDA context count); -1 on the CPU backend */
} mg_train_epoch;

typedef struct {
    /* the adapter */
    const char *adapter;       /* start from this PEFT adapter; NULL: a fresh one (PEFT's init) */
    int lora_r;                /* 8 */
    double lora_alpha;         /* 16 */
    double lora_dropout;       /* 0.1, on the LoRA input only */
    const char *lora_targets;  /* "all-linear" */
    /* the optimisation */
    int epochs;                /* 5 */
    int batch;                 /* micro-batch, 1 */
    int grad_accum;            /* 8 */
    int max_steps;             /* > 0: stop after this many updates (the schedule spans them) */
    double lr;                 /* 5e-4 */
    double weight_decay;       /* 0 */
    double warmup_ratio;       /* 0.03 */
    double max_grad_norm;      /* 0.3; <= 0: no clipping */
    mg_schedule schedule;      /* cosine */
    uint64_t seed;             /* 42: data order, fresh adapter, dropout */
    mg_loss_on loss_on;        /* MG_LOSS_ON_SEED (the guide's labels) */
    bool guide_path;           /* the guide's stripped training text with two BOS (true) */
    bool recompute;            /* recompute text layers in backward (least memory) instead of keeping them */
    double max_memory_gb;      /* device memory the run may use (GB); vision layers' activations are kept
                                * within it, recomputed beyond; 0: the GPU's free memory (the CPU: none kept) */
    const char *prompt_text;   /* the question; NULL: the guide's 8-class prompt */
    bool no_feature_cache;     /* false: when the adapter has no vision module, each image's soft tokens are
                                * computed once and reused by later epochs and evaluations (in device memory,
                                * when they fit; engine/jobs/feature_cache.h); true: always from pixels */
    /* evaluation */
    int eval_every;            /* evaluate the test split every N epochs (1); 0: never */
    mg_eval_opts eval;
    /* outputs and control */
    const char *out_dir;       /* required; created if missing */
    int save_every;            /* checkpoint every N updates (0: only when stopped) */
    const char *resume;        /* a checkpoint-<step> directory to continue, or a run's out_dir (its newest
                                * complete checkpoint); a damaged one falls back to the previous one */
    mg_on_nan on_nan;          /* MG_ON_NAN_STOP */
    int threads;               /* image decoding workers (2) */
    mg_bad_policy on_bad;
    void (*progress)(void *user, const mg_train_progress *p); /* may be NULL */
    void (*on_eval)(void *user, int epoch, const mg_eval_result *r); /* may be NULL */
    void (*on_note)(void *user, const char *line); /* one-line notes (the feature cache's state); may be NULL */
    void (*on_epoch)(void *user, const mg_train_epoch *e); /* may be NULL */
    void *user;
    volatile sig_atomic_t *stop; /* when it becomes non-zero: checkpoint after the current update and return;
                                  * during an epoch's evaluation, after its batch in flight (the epoch's
                                  * updates are kept, that evaluation is dropped and not repeated on resume) */
} mg_train_opts;

/* The guide's settings (above). */
mg_train_opts mg_train_defaults(void);

typedef struct {
    int steps;                 /* updates done in all (resumed ones included) */
    bool interrupted;          /* stopped through opts.stop; checkpoint holds the state */
    char checkpoint[4096];     /* the last checkpoint written ("" if none) */
    double last_loss;
    double seconds;            /* wall time of this call */
    int64_t images;            /* training images seen by this call */
    size_t peak_bytes;         /* the largest activation allocation of a step plus the tape's gradient arena */
    size_t lora_bytes;         /* adapter parameters, gradients and AdamW moments on the backend */
    int skipped;               /* updates skipped for a NaN/Inf (on_nan MG_ON_NAN_SKIP) */
    char resumed_from[4096];   /* the checkpoint the run continued ("" if none) */
    char resume_note[4096];    /* why it is not the one asked for ("" if it is) */
    bool feature_cache;        /* the feature cache was on */
    char feature_cache_note[192]; /* "on: N images, X MiB on cuda" or why it was off */
    int64_t features_computed, features_reused; /* images whose soft tokens the cache computed / gave back */
    size_t feature_cache_bytes;
} mg_train_result;

/* The training-form prompts, one per class (the image, the question, the class digit as the
 * answer; tokenizer/prompt.h), and the token arrays of a micro-batch: shared by mg_train_run and
 * the C API's host-driven trainer (engine/jobs/api_train.c). */
typedef struct {
    mg_prompt prompt[MG_BREAKHIS_NCLASSES]; /* the prompt answering class k; all T tokens long */
    int T;
    int32_t *ids, *tt, *labels;            /* (cap, T) the micro-batch's ids, token types, labels */
    int64_t cap;                           /* rows the arrays hold */
} mg_train_prompts;

/* Builds the 8 prompts (prompt_text NULL: the guide's question); fails when they differ in length. */
mg_status mg_train_prompts_build(mg_train_prompts *tp, const mg_classifier *c, const char *prompt_text,
                                 bool guide_path, mg_loss_on loss_on);
/* Fills rows 0..n-1 of ids/tt/labels with the prompts answering labels[0..n) (grown as needed);
 * MG_ERR_ARG for a label outside 0..7. */
mg_status mg_train_prompts_fill(mg_train_prompts *tp, const int *labels, int64_t n);
void mg_train_prompts_free(mg_train_prompts *tp);

/* Trains m (whose weights stay untouched: the adapter runs unmerged) on records train[0..n_train)
 * of ix, evaluating on test[0..n_test) (n_test may be 0). */
mg_status mg_train_run(mg_model *m, const mg_bh_index *ix, const int64_t *train, int64_t n_train, const int64_t *test,
                       int64_t n_test, const mg_train_opts *o, mg_train_result *res);

#endif
