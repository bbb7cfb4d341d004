/* Row lookups:
 *   embedding:    y[n, C] = E[ids[n], :] * scale   (Gemma3TextScaledWordEmbedding; the model code
 *                 passes scale = sqrt(C) rounded to the checkpoint dtype, 50.5 for bf16 C=2560)
 *   gather_rows:  y[R, C] = x[rows[r], :]           (hidden rows at the scored positions; the class
 *                 digits' rows of E for a head restricted to a few vocab columns)
 *   scatter_rows: y[rows[r], :] = src[r, :]          (image soft-token merge: projector rows into
 *                 the placeholder positions; other rows of y are untouched)
 * All written with `=`. Indices are int32 and already checked in range by the caller.
 * backwards (`+=`; embedding has none: E is frozen):
 *   gather_rows_backward:  dx[rows[r], :] += dy[r, :]     (rows distinct, so rows never collide)
 *   scatter_rows_backward: dsrc[r, :] += dy[rows[r], :] */
#include <math.h>
#include <string.h>

#include "kernels/cpu/ops.h"

void mg_cpu_embedding_forward(void *ctx, void *y_, const void *E_, const int32_t *ids, int64_t n, int C, int64_t V,
                              float scale) {
    (void)ctx;
    float *y = y_;
    const float *E = E_;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        const int ok = ids[t] >= 0 && ids[t] < V; /* a bad id (a caller's bug) gives NaN, never a stray read */
        for (int c = 0; c < C; c++) y[t * C + c] = ok ? E[(int64_t)ids[t] * C + c] * scale : NAN;
    }
}

void mg_cpu_gather_rows_forward(void *ctx, void *y_, const void *x_, const int32_t *rows, int64_t R, int C) {
    (void)ctx;
    float *y = y_;
    const float *x = x_;
    for (int64_t r = 0; r < R; r++) memcpy(y + r * C, x + (int64_t)rows[r] * C, (size_t)C * sizeof(float));
}

void mg_cpu_scatter_rows_forward(void *ctx, void *y_, const void *src_, const int32_t *rows, int64_t R, int C) {
    (void)ctx;
    float *y = y_;
    const float *src = src_;
    for (int64_t r = 0; r < R; r++) memcpy(y + (int64_t)rows[r] * C, src + r * C, (size_t)C * sizeof(float));
}

void mg_cpu_gather_rows_backward(void *ctx, void *dx_, const void *dy_, const int32_t *rows, int64_t R, int C) {
    (void)ctx;
    float *dx = dx_;
    const float *dy = dy_;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; r++)
        for (int c = 0; c < C; c++) dx[(int64_t)rows[r] * C + c] += dy[r * C + c];
}

void mg_cpu_scatter_rows_backward(void *ctx, void *dsrc_, const void *dy_, const int32_t *rows, int64_t R, int C) {
    (void)ctx;
    float *dsrc = dsrc_;
    const float *dy = dy_;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; r++)
        for (int c = 0; c < C; c++) dsrc[r * C + c] += dy[(int64_t)rows[r] * C + c];
}
