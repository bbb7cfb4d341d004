/* Image features computed once per run: each record's soft tokens (the projector output, (mm, C)
 * in the backend's act dtype) kept in one device allocation and reused by the training steps and
 * the score-mode evaluations of the same run (engine/jobs/train.c).
 *
 * Valid only while the tower, the projector and the preprocessing are fixed: the caller uses it
 * only when the adapter has no vision LoRA module (otherwise the soft tokens change with every
 * update), and never across runs (it lives in memory, keyed by the record index of one index).
 * The features are computed by mg_model_image_features over a whole loader batch, as the pixel
 * path computes them, so a run with the cache repeats the run without it bit for bit on the CPU
 * (and uses the same kernels at the same shapes on CUDA). */
#ifndef MG_FEATURE_CACHE_H
#define MG_FEATURE_CACHE_H

#include <stdbool.h>

#include "data/prefetch.h"
#include "model/medgem_model.h"

typedef struct mg_feature_cache {
    mg_model *m;           /* borrowed; its m->lora at fill time must have no vision module */
    int64_t n_records;     /* the index's records: the key space */
    int64_t *slot;         /* (n_records) a record's slot, -1: not reserved */
    unsigned char *have;   /* (n_records) 1 once the record's soft tokens are in its slot (loaders skip those) */
    int64_t n_slots;
    size_t image_bytes;    /* mm * C * act size */
    void *base;            /* (n_slots, mm, C) on the model's backend; NULL: not allocated (off) */
    const void **ptrs;     /* (batch) the soft-token pointers handed out for a batch */
    void **outs;           /* (batch) where a batch's computed features go */
    int64_t cap;
    int64_t computed, reused; /* images whose features were computed / read from the cache */
} mg_feature_cache;

/* An empty cache over the n_records records of an index. */
mg_status mg_feature_cache_init(mg_feature_cache *fc, mg_model *m, int64_t n_records);
/* Reserves a slot for each of records[0..n) (repeats share one). */
mg_status mg_feature_cache_reserve(mg_feature_cache *fc, const int64_t *records, int64_t n);
/* Bytes the reserved slots take. */
size_t mg_feature_cache_bytes(const mg_feature_cache *fc);
/* Allocates the reserved slots when they take at most budget bytes and the backend has them;
 * otherwise leaves the cache off and says why in note. Returns whether it is on. */
bool mg_feature_cache_alloc(mg_feature_cache *fc, size_t budget, char *note, size_t note_cap);
static inline bool mg_feature_cache_on(const mg_feature_cache *fc) { return fc && fc->base; }
/* The soft tokens of a loader batch (b->n device pointers, valid until the next call): read from
 * the cache when every image of b is in it; otherwise computed for the whole batch from b's pixels
 * (which the loader then decoded: it skips only batches wholly cached) and stored. A record
 * without a slot is an error. */
mg_status mg_feature_cache_batch(mg_feature_cache *fc, const mg_batch *b, const void *const **ptrs);
void mg_feature_cache_free(mg_feature_cache *fc);

#endif
