/* libmedgem: embed medgem (MedGemma-4B classification, generation and LoRA fine-tuning of
 * BreakHis' 8 classes) in a C program. This is the one public header: C11, self-contained, no
 * other medgem header needed. docs/api.md documents every function with a worked example.
 *
 *   cc prog.c $(pkg-config --cflags --libs medgem)            (or --static for libmedgem.a)
 *
 * Names: everything public starts with medgem_ / MEDGEM_. The library also exports internal mg_*
 * symbols; they are not part of the API and may change in any release.
 *
 * ABI promise (from 1.0; 0.x releases keep it too within one minor version): the soname is
 * libmedgem.so.<MAJOR>. Within one major version functions are only added, never removed or
 * changed; opaque handles hide their layout; every struct the caller fills starts with
 * `size_t size` (set it to sizeof the struct, or call its *_init function), so a newer library
 * reads only the fields an older program knew and gives the rest their defaults. Output structs
 * the library fills (medgem_prediction, medgem_train_progress, medgem_step_info) only grow at the
 * end, and those handed to a callback carry their own size.
 *
 * Errors: every function that can fail returns a medgem_status (MEDGEM_OK is 0). The message of
 * the last failure is kept twice: per calling thread (medgem_last_error(), like errno) and per
 * handle (medgem_model_last_error() etc.). A message names the file, tensor or argument at fault
 * and ends with a "HINT:" line. The library never exits, aborts or prints.
 *
 * Memory: the caller owns what it passes in and what it allocated for outputs (pixel buffers,
 * prediction arrays); the library owns handles until their *_free; strings the library
 * allocates for the caller (generated answers) are freed with medgem_free().
 *
 * Threads: different handles may be used from different threads at the same time (two models in
 * one process, each driven by its own thread, on the CPU or on one or several GPUs). One handle
 * must not be used by two threads at once: a model, its adapters and a trainer over it form one
 * unit that one thread uses at a time (protect it with a mutex to share it). A handle may move
 * between threads between calls: each call that runs on a GPU makes the model's device current on
 * the calling thread first. medgem_version*, medgem_class_name, medgem_breakhis_label and the
 * image functions touch no shared state and may be called from any thread. */
#ifndef MEDGEM_H
#define MEDGEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version --------------------------------------------------------------------------------- */

#define MEDGEM_VERSION_MAJOR 0
#define MEDGEM_VERSION_MINOR 1
#define MEDGEM_VERSION_PATCH 0
#define MEDGEM_VERSION "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH */
#define MEDGEM_VERSION_NUMBER (MEDGEM_VERSION_MAJOR * 10000 + MEDGEM_VERSION_MINOR * 100 + MEDGEM_VERSION_PATCH)
#define MG_VERSION MEDGEM_VERSION /* the spelling medgem's own code uses */

/* The library's version at run time ("0.1.0"): compare with MEDGEM_VERSION to detect a program
 * running against another libmedgem than it was compiled with. */
const char *medgem_version(void);
int medgem_version_number(void); /* MEDGEM_VERSION_NUMBER of the library */

/* ---- status ---------------------------------------------------------------------------------- */

/* The same values as medgem's internal mg_status (engine/status.h). */
typedef enum {
    MEDGEM_OK = 0,
    MEDGEM_ERR_IO = 1,          /* a file could not be opened, read, written or mapped */
    MEDGEM_ERR_FORMAT = 2,      /* a file is malformed: bad header, bad JSON, bad image */
    MEDGEM_ERR_SHAPE = 3,       /* a tensor or argument has the wrong shape */
    MEDGEM_ERR_MISSING = 4,     /* something required is absent: a tensor, a file, a key */
    MEDGEM_ERR_ARG = 5,         /* a bad argument (NULL handle, count out of range, ...) */
    MEDGEM_ERR_UNSUPPORTED = 6, /* valid input medgem does not handle, or no usable GPU for CUDA */
    MEDGEM_ERR_OOM = 7,         /* host or device memory exhausted */
    MEDGEM_ERR_CUDA = 8,        /* a CUDA or cuBLASLt call failed */
    MEDGEM_ERR_NUMERIC = 9,     /* NaN or Inf where a finite value is required (diverged training) */
} medgem_status;

const char *medgem_status_name(medgem_status s); /* "ok", "io error", "format error", ... (static) */
/* The message of the last failure on the calling thread; "" when none. Valid until the next
 * failing call on this thread. */
const char *medgem_last_error(void);

/* ---- classes ----------------------------------------------------------------------------------- */

#define MEDGEM_NUM_CLASSES 8
/* "benign_adenosis" ... "malignant_papillary_carcinoma" for k in 0..7 (0-3 benign, 4-7
 * malignant); NULL outside. Static strings. */
const char *medgem_class_name(int k);
/* The class (0-7) of a BreakHis image path (.../benign/SOB/adenosis/SOB_B_A_14-22549AB/100X/
 * SOB_B_A-14-22549AB-100-001.png); MEDGEM_ERR_FORMAT when the path does not follow the archive's
 * naming. */
medgem_status medgem_breakhis_label(const char *path, int *label);

/* ---- images ------------------------------------------------------------------------------------ */

/* The Gemma 3 processor's preprocessing (what transformers does before the model): decode
 * (PNG, JPEG, BMP; gray replicated, alpha dropped), resize to size x size with Pillow's bilinear
 * filter, scale to [-1, 1]. pixels: caller-allocated, 3 * size * size floats, channel-major
 * (3, size, size). size is medgem_model_image_size() (896 for MedGemma-4B). */
medgem_status medgem_image_load(const char *path, int size, float *pixels);
/* The same from 8-bit RGB in memory: rgb (height rows of width RGB triples, rows `stride` bytes
 * apart; stride 0 means 3 * width). */
medgem_status medgem_image_from_rgb(const unsigned char *rgb, int width, int height, size_t stride, int size,
                                    float *pixels);

/* ---- models ------------------------------------------------------------------------------------ */

typedef struct medgem_model medgem_model;
typedef struct medgem_adapter medgem_adapter;
typedef struct medgem_trainer medgem_trainer;

typedef enum {
    MEDGEM_BACKEND_AUTO = 0, /* CUDA device 0 when a usable GPU (compute capability 8.0+) is there, else CPU */
    MEDGEM_BACKEND_CPU = 1,  /* the fp32 CPU reference (OpenMP) */
    MEDGEM_BACKEND_CUDA = 2, /* bf16 on CUDA device `device`; MEDGEM_ERR_UNSUPPORTED without a usable GPU */
} medgem_backend_kind;

typedef struct {
    size_t size;                 /* sizeof(medgem_model_options) */
    medgem_backend_kind backend; /* AUTO */
    int device;                  /* CUDA device ordinal for MEDGEM_BACKEND_CUDA (0) */
    const char *prompt;          /* the question after the image; NULL: the guide's 8-class prompt (copied) */
    int double_bos;              /* 1: the guide's processor path with two BOS tokens (0) */
} medgem_model_options;

/* Sets size and the defaults above. */
void medgem_model_options_init(medgem_model_options *o);

/* Loads a Hugging Face MedGemma directory (config.json, model.safetensors or shards,
 * tokenizer.model) onto the chosen backend. o may be NULL (the defaults). On failure *out is NULL
 * and medgem_last_error() says why. */
medgem_status medgem_model_open(const char *dir, const medgem_model_options *o, medgem_model **out);
/* Releases the model and its backend (m may be NULL). Free its trainers first. */
void medgem_model_free(medgem_model *m);
/* The message of the last failed call that took m (open, classify, generate, adapter_load,
 * merge_adapter, trainer_create); "" when none. Owned by m; valid until its next failing call.
 * m NULL: medgem_last_error(). Adapters and trainers keep their own (medgem_*_last_error). */
const char *medgem_model_last_error(const medgem_model *m);
/* What runs the model, for logs: "cpu (requested)", "cuda (NVIDIA H100 80GB HBM3)", ... (owned by m). */
const char *medgem_model_backend(const medgem_model *m);
/* The side of the square image the model takes (896 for MedGemma-4B); 0 when m is NULL. */
int medgem_model_image_size(const medgem_model *m);

/* One image's class scores. */
typedef struct {
    int label;                            /* argmax of logits (ties to the lowest class) */
    float logits[MEDGEM_NUM_CLASSES];     /* the logits of the tokens "0".."7" where the answer starts */
    double probs[MEDGEM_NUM_CLASSES];     /* their softmax */
} medgem_prediction;

/* Scores n images, pixels (n, 3, S, S) from medgem_image_*, in one forward: out[n]
 * (caller-allocated). The adapter merged into the model, if any, is included. */
medgem_status medgem_classify(medgem_model *m, const float *pixels, int n, medgem_prediction *out);

/* Greedy answers for n images (the guide's evaluation: up to max_new_tokens new tokens, <= 0 for
 * the guide's 40): answers[n] (may be NULL) gets each answer's text, allocated by the library
 * (free each with medgem_free); labels[n] (may be NULL) the class the guide's parser reads from it
 * (the first standalone digit 0-7), -1 when the answer names none. */
medgem_status medgem_generate(medgem_model *m, const float *pixels, int n, int max_new_tokens, char **answers,
                              int *labels);

/* Frees what the library allocated for the caller (answers); p may be NULL. */
void medgem_free(void *p);

/* ---- adapters ---------------------------------------------------------------------------------- */

/* Reads a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) and checks it
 * against m's architecture. The adapter lives on the host; m is only read. */
medgem_status medgem_adapter_load(medgem_model *m, const char *dir, medgem_adapter **out);
/* Writes a in PEFT's format into dir (created if missing): adapter_config.json and
 * adapter_model.safetensors, each atomically. transformers + PEFT load it. */
medgem_status medgem_adapter_save(medgem_adapter *a, const char *dir);
void medgem_adapter_free(medgem_adapter *a); /* a may be NULL */
/* The message of the last failed call on a; "" when none. */
const char *medgem_adapter_last_error(const medgem_adapter *a);

/* Folds a into m's weights (PEFT's merge_and_unload: W + (B·A)·scale): every later classify and
 * generate includes it. Once per model: a second merge is refused (it would add LoRA twice), and
 * a model with a merged adapter cannot be trained. a stays valid and may be freed after. */
medgem_status medgem_model_merge_adapter(medgem_model *m, const medgem_adapter *a);

/* Writes model_dir with adapter_dir folded in as a new model directory out_dir (what PEFT's
 * merge_and_unload + save_pretrained write; `medgem merge`), on the host, without loading a model.
 * force: replace a non-empty out_dir. */
medgem_status medgem_merge_to_dir(const char *model_dir, const char *adapter_dir, const char *out_dir, int force);

/* ---- training ---------------------------------------------------------------------------------- */

typedef enum { MEDGEM_SCHEDULE_COSINE = 0, MEDGEM_SCHEDULE_LINEAR = 1, MEDGEM_SCHEDULE_CONSTANT = 2 } medgem_schedule;
typedef enum {
    MEDGEM_LOSS_ON_SEED = 0,   /* every text token except padding and the image (the guide's labels) */
    MEDGEM_LOSS_ON_ANSWER = 1, /* only the answer and the <end_of_turn> after it */
} medgem_loss_on;

/* What the progress callback gets after each optimizer update (valid during the call only). */
typedef struct {
    size_t size;      /* sizeof(medgem_train_progress) of the library */
    int step;         /* updates done (1 after the first) */
    int total_steps;  /* the options' total_steps (0: open-ended) */
    double loss;      /* mean cross-entropy over the update's labelled tokens */
    double lr;        /* the update's learning rate */
    double grad_norm; /* the gradient norm before clipping */
    double seconds;   /* since the trainer was created */
} medgem_train_progress;

typedef void (*medgem_progress_fn)(void *user, const medgem_train_progress *p);

typedef struct {
    size_t size;                  /* sizeof(medgem_trainer_options) */
    /* the adapter */
    const medgem_adapter *init;   /* continue from this adapter (copied); NULL: a fresh one (PEFT's init) */
    int lora_r;                   /* 8 */
    double lora_alpha;            /* 16 */
    double lora_dropout;          /* 0.1, on the LoRA input */
    const char *lora_targets;     /* "all-linear"; or "text", "vision", or "q_proj,v_proj,..." */
    /* the optimisation: AdamW (beta 0.9, 0.999, eps 1e-8) */
    double lr;                    /* 5e-4, the peak learning rate */
    double weight_decay;          /* 0 */
    double max_grad_norm;         /* 0.3; <= 0: no clipping */
    medgem_schedule schedule;     /* cosine, over total_steps */
    int total_steps;              /* updates the schedule spans; 0: a constant lr (no schedule) */
    double warmup_ratio;          /* 0.03 of total_steps */
    int grad_accum;               /* micro-batches (medgem_trainer_step calls) per update: 1 */
    uint64_t seed;                /* 42: the fresh adapter and the dropout masks */
    medgem_loss_on loss_on;       /* MEDGEM_LOSS_ON_SEED */
    int double_bos;               /* 1: the guide's training text with two BOS */
    int recompute;                /* 1: recompute text layers in backward (the least memory) */
    double max_memory_gb;         /* GPU memory the steps may use; 0: what is free */
    const char *prompt;           /* the question; NULL: the guide's 8-class prompt */
    medgem_progress_fn progress;  /* called after each update; may be NULL */
    void *user;                   /* passed to progress */
} medgem_trainer_options;

/* Sets size and the defaults above (the guide's recipe, with the host choosing batch and steps). */
void medgem_trainer_options_init(medgem_trainer_options *o);

/* A LoRA trainer over m: the adapter (fresh or o->init), its gradients and AdamW state on m's
 * backend. The host drives it: medgem_trainer_step on each micro-batch, medgem_trainer_evaluate
 * when it likes, medgem_trainer_save / _adapter at the end. m's weights are not changed (the
 * adapter runs unmerged); m must outlive the trainer, have no merged adapter, and while the
 * trainer exists classify/generate on m run without the trainer's adapter (use _evaluate). */
medgem_status medgem_trainer_create(medgem_model *m, const medgem_trainer_options *o, medgem_trainer **out);
void medgem_trainer_free(medgem_trainer *t); /* t may be NULL */
const char *medgem_trainer_last_error(const medgem_trainer *t);

/* What one step did. */
typedef struct {
    double loss;    /* mean cross-entropy of this micro-batch over its labelled tokens */
    int updated;    /* 1 when this step completed an accumulation window and updated the adapter */
    int step;       /* updates done so far */
    double lr;      /* the learning rate of the update (when updated) */
    double grad_norm; /* the gradient norm before clipping (when updated) */
} medgem_step_info;

/* One micro-batch of n images, pixels (n, 3, S, S), labels[n] in 0..7: the training prompt
 * answers each image's class; forward, loss, backward into the adapter's gradients; every
 * grad_accum-th call also runs the AdamW update (loss normalised over the window's labelled
 * tokens like transformers' Trainer) and calls progress. info may be NULL. A non-finite loss or
 * gradient fails with MEDGEM_ERR_NUMERIC and leaves the adapter as it was. */
medgem_status medgem_trainer_step(medgem_trainer *t, const float *pixels, const int *labels, int n,
                                  medgem_step_info *info);

/* Scores n images with the trainer's current adapter (unmerged, no dropout), as medgem_classify:
 * out[n] (may be NULL); with labels (may be NULL), *accuracy (may be NULL) gets the share of
 * images whose argmax is their label. */
medgem_status medgem_trainer_evaluate(medgem_trainer *t, const float *pixels, const int *labels, int n,
                                      medgem_prediction *out, double *accuracy);

/* Writes the current adapter in PEFT's format into dir (created if missing). */
medgem_status medgem_trainer_save(medgem_trainer *t, const char *dir);
/* A copy of the current adapter as a new handle (free it with medgem_adapter_free): to merge
 * into a model, or to start another trainer from. */
medgem_status medgem_trainer_adapter(medgem_trainer *t, medgem_adapter **out);

#ifdef __cplusplus
}
#endif

#endif
