/* LayerNorm over the last dim (SigLIP layer_norm1/2, post_layernorm):
 *   mean = Σx / C,  var = Σ(x - mean)² / C   (biased, as torch)
 *   y[M,C] = (x - mean) / sqrt(var + eps) * w[C] + b[C]
 * Written with `=`; y may alias x (each row is read fully before it is written). */
#include <math.h>

#include "kernels/cpu/ops.h"

void mg_cpu_layernorm_forward(void *ctx, void *y_, const void *x_, const void *w_, const void *b_, int64_t M, int C,
                              float eps) {
    (void)ctx;
    float *y = y_;
    const float *x = x_, *w = w_, *b = b_;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * C;
        float *ym = y + m * C;
        /* mean */
        float sum = 0.0f;
        for (int c = 0; c < C; c++) sum += xm[c];
        const float mean = sum / C;
        /* biased variance, two-pass for accuracy */
        float sq = 0.0f;
        for (int c = 0; c < C; c++) sq += (xm[c] - mean) * (xm[c] - mean);
        const float rstd = 1.0f / sqrtf(sq / C + eps);
        /* normalise, scale, shift */
        for (int c = 0; c < C; c++) ym[c] = (xm[c] - mean) * rstd * w[c] + b[c];
    }
}
