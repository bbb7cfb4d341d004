/* Arenas (STYLE habit 11).
 * Weights: one backend allocation holding every weight of the model in the backend's
 * activation dtype (fp32 on CPU, bf16 on CUDA), converted from the checkpoint's dtype at load.
 * The components' load functions run twice over the same code: first with base == NULL to size
 * the arena (nothing is written, the put functions return NULL), then with the allocation to
 * place and upload. So the layout is written once (STYLE habit 11). */
#ifndef MG_ARENA_H
#define MG_ARENA_H

#include "engine/backend.h"
#include "engine/safetensors.h"

typedef struct {
    const mg_backend *be;
    char *base;    /* NULL while sizing */
    size_t used;   /* bytes placed so far (sizing: bytes needed) */
    int oom;       /* a host staging buffer could not be allocated */
} mg_weight_arena;

/* Places t (any shape, elements in storage order) and returns its device pointer. */
void *mg_arena_put(mg_weight_arena *a, const mg_st_tensor *t);
/* Places parts[0..n-1] one after the other: for 2-D parts of one column count C, the fused
 * [R0+R1+..., C] weight (q|k|v, gate|up); for 1-D parts, the concatenated bias. */
void *mg_arena_put_cat(mg_weight_arena *a, const mg_st_tensor *const *parts, int n);
/* Places the 2-D t [R, C] transposed, as [C, R]. */
void *mg_arena_put_transposed(mg_weight_arena *a, const mg_st_tensor *t);

/* Activations: each forward lays its buffers out with mg_carve from one allocation, running the
 * same layout function twice (base NULL: sizing only). Returns where n elements go (NULL while
 * sizing) and advances *used past them, 256-byte aligned. */
static inline void *mg_carve(char *base, size_t *used, int64_t n, size_t esize) {
    void *p = base ? base + *used : NULL;
    *used += ((size_t)n * esize + 255) / 256 * 256;
    return p;
}

#endif
