/* The batch loader: reads, decodes, resizes and normalises the next batch on a background thread
 * while the caller computes on the current one (double buffering). Inside the background thread
 * the images of a batch are spread over `threads` OpenMP workers.
 *
 *   mg_loader *ld; mg_loader_create(ix, order, n, &opts, &ld);
 *   const mg_batch *b;
 *   while (mg_loader_next(ld, &b) == MG_OK && b->n > 0) { ... b->pixels ... }
 *   mg_loader_free(ld);
 *
 * A bad image (unreadable or undecodable) is left out of its batch and counted under MG_BAD_SKIP
 * (so a batch can hold fewer than `batch` images), or makes mg_loader_next fail under MG_BAD_FAIL. */
#ifndef MG_PREFETCH_H
#define MG_PREFETCH_H

#include <stdint.h>

#include "data/breakhis_index.h"

typedef struct {
    int batch;          /* images per batch B */
    int image_size;     /* S: the model's image_size (896 for MedGemma) */
    int threads;        /* decode workers inside the background thread (>= 1) */
    mg_bad_policy on_bad;
    const unsigned char *cached; /* (ix->n) or NULL: records whose pixels the caller no longer needs (their
                         * features are cached); a batch made only of such records is not read, its
                         * pixels left unset. Read once, in mg_loader_create. */
} mg_loader_opts;

typedef struct {
    int64_t n;          /* images in this batch (<= B); 0 at the end */
    float *pixels;      /* (B, 3, S, S) normalised to [-1, 1]; the first n are valid */
    int *labels;        /* (B) class labels 0-7 */
    int *binary;        /* (B) 0 benign, 1 malignant */
    int64_t *records;   /* (B) indices into ix->recs */
} mg_batch;

typedef struct mg_loader mg_loader;

/* order: (n) record indices in the order to load them (copied). ix must outlive the loader. */
mg_status mg_loader_create(const mg_bh_index *ix, const int64_t *order, int64_t n, const mg_loader_opts *opts, mg_loader **out);
/* The next batch; valid until the next call. b->n == 0 after the last one. */
mg_status mg_loader_next(mg_loader *ld, const mg_batch **out);
/* Images left out so far under MG_BAD_SKIP. */
int64_t mg_loader_skipped(const mg_loader *ld);
void mg_loader_free(mg_loader *ld);

/* Reads, decodes and resizes record i to (S, S, 3) uint8 on the calling thread. */
mg_status mg_bh_load_rgb(const mg_bh_index *ix, int64_t i, int image_size, unsigned char *rgb);

#endif
