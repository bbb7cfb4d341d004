#include "model/arena.h"

#include <stdlib.h>

#define ALIGN 256 /* every tensor starts on a 256-byte boundary (vector loads, cuBLASLt) */

/* Reserves n elements and returns where they go (NULL while sizing). */
static void *reserve(mg_weight_arena *a, int64_t n) {
    void *p = a->base ? a->base + a->used : NULL;
    a->used += ((size_t)n * mg_dtype_size(a->be->act_dtype) + ALIGN - 1) / ALIGN * ALIGN;
    return p;
}

void *mg_arena_put(mg_weight_arena *a, const mg_st_tensor *t) {
    const int64_t n = mg_st_numel(t);
    void *p = reserve(a, n);
    if (p) a->be->upload(a->be->ctx, p, t->data, t->dtype, n);
    return p;
}

void *mg_arena_put_cat(mg_weight_arena *a, const mg_st_tensor *const *parts, int n) {
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += mg_st_numel(parts[i]);
    char *p = reserve(a, total);
    int64_t at = 0; /* elements placed so far */
    for (int i = 0; p && i < n; i++) {
        a->be->upload(a->be->ctx, p + (size_t)at * mg_dtype_size(a->be->act_dtype), parts[i]->data, parts[i]->dtype,
                      mg_st_numel(parts[i]));
        at += mg_st_numel(parts[i]);
    }
    return p;
}

void *mg_arena_put_transposed(mg_weight_arena *a, const mg_st_tensor *t) {
    const int64_t R = t->shape[0], C = t->shape[1];
    void *p = reserve(a, R * C);
    if (!p) return NULL;
    /* convert to fp32 on the host, transpose there, upload the fp32 copy */
    float *src = malloc((size_t)(R * C) * sizeof(float)), *dst = malloc((size_t)(R * C) * sizeof(float));
    if (src && dst) {
        mg_to_f32(src, t->data, t->dtype, (size_t)(R * C));
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++) dst[c * R + r] = src[r * C + c];
        a->be->upload(a->be->ctx, p, dst, MG_F32, R * C);
    } else {
        a->oom = 1;
    }
    free(src);
    free(dst);
    return p;
}
