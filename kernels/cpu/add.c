/* Additions:
 *   add_rows: x[B,P,C] += pos[P,C]    (SigLIP position embedding; accumulates with `+=`)
 *   add:      y[n] = a[n] + b[n]      (residual connections; `=`, y may alias a or b) */
#include "kernels/cpu/ops.h"

void mg_cpu_add_rows_forward(void *ctx, void *x_, const void *pos_, int64_t B, int64_t P, int C) {
    (void)ctx;
    float *x = x_;
    const float *pos = pos_;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < P; t++)
            for (int c = 0; c < C; c++) x[(b * P + t) * C + c] += pos[t * C + c];
}

void mg_cpu_add_forward(void *ctx, void *y_, const void *a_, const void *b_, int64_t n) {
    (void)ctx;
    float *y = y_;
    const float *a = a_, *b = b_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
