/* LayerNorm over the last dim (SigLIP layer_norm1/2, post_layernorm):
 *   mean = Σx / C,  var = Σ(x - mean)² / C   (biased, as torch)
 *   y[M,C] = (x - mean) / sqrt(var + eps) * w[C] + b[C]
 * Written with `=`; y may alias x (each row is read fully before it is written).
 * backward (input gradient only: w and b are frozen), `+=`, mean and rstd recomputed from x:
 *   xhat = (x - mean) * rstd,  g = dy * w
 *   dx += rstd * (g - mean(g) - xhat * mean(g * xhat)) */
#include <math.h>

#include "kernels/cpu/ops.h"

/* mean and 1/sqrt(biased variance + eps) of one row; the variance two-pass for accuracy. The
 * backward recomputes exactly what the forward used. */
static void row_stats(const float *xm, int C, float eps, float *mean, float *rstd) {
    float sum = 0.0f;
    for (int c = 0; c < C; c++) sum += xm[c];
    *mean = sum / C;
    float sq = 0.0f;
    for (int c = 0; c < C; c++) sq += (xm[c] - *mean) * (xm[c] - *mean);
    *rstd = 1.0f / sqrtf(sq / C + eps);
}

void mg_cpu_layernorm_forward(void *ctx, void *y_, const void *x_, const void *w_, const void *b_, int64_t M, int C,
                              float eps) {
    (void)ctx;
    float *y = y_;
    const float *x = x_, *w = w_, *b = b_;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * C;
        float *ym = y + m * C;
        float mean, rstd;
        row_stats(xm, C, eps, &mean, &rstd);
        /* normalise, scale, shift */
        for (int c = 0; c < C; c++) ym[c] = (xm[c] - mean) * rstd * w[c] + b[c];
    }
}

void mg_cpu_layernorm_backward(void *ctx, void *dx_, const void *dy_, const void *x_, const void *w_, int64_t M, int C,
                               float eps) {
    (void)ctx;
    float *dx = dx_;
    const float *dy = dy_, *x = x_, *w = w_;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * C, *dym = dy + m * C;
        float *dxm = dx + m * C;
        float mean, rstd; /* as the forward computed them */
        row_stats(xm, C, eps, &mean, &rstd);
        /* mean(g) and mean(g * xhat), g = dy * w the gradient of xhat */
        float g_sum = 0.0f, gx_sum = 0.0f;
        for (int c = 0; c < C; c++) {
            const float g = dym[c] * w[c], xhat = (xm[c] - mean) * rstd;
            g_sum += g;
            gx_sum += g * xhat;
        }
        const float g_mean = g_sum / C, gx_mean = gx_sum / C;
        /* project out the directions the normalisation removes (shift and scale of the row) */
        for (int c = 0; c < C; c++) {
            const float g = dym[c] * w[c], xhat = (xm[c] - mean) * rstd;
            dxm[c] += rstd * (g - g_mean - xhat * gx_mean);
        }
    }
}
