/* Gemma RMSNorm over the last dim (every text norm, q_norm/k_norm per head, the projector norm):
 *   rmsnorm:     y[M,C] = x * rsqrt(mean(x²) + eps) * (1 + w[C])
 *   rmsnorm_add: h[M,C] = residual[M,C] + rmsnorm(x)     (post-attention / post-feedforward norm
 *                                                         followed by the residual add)
 * The weight is stored as the offset w (initialised to 0), hence 1 + w. q/k norm calls this with
 * M = B*T*H rows of C = D. Written with `=`; y may alias x, h may alias residual. In fp32 the
 * fused add is the same arithmetic as rmsnorm followed by add.
 * backward (input gradient only: w is frozen), `+=`, r = rsqrt(mean(x²) + eps) recomputed from x:
 *   g = dy * (1 + w)
 *   dx += r * g - x * r³ * mean(g * x)
 * (rmsnorm_add's gradient is this for x and dy itself for the residual: the caller adds that.) */
#include <math.h>

#include "kernels/cpu/ops.h"

/* r = rsqrt(mean(x²) + eps) of one row (the backward recomputes exactly what the forward used). */
static float row_rsqrt(const float *x, int C, float eps) {
    float ss = 0.0f;
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    return 1.0f / sqrtf(ss / C + eps);
}

/* One row: y = rmsnorm(x) (+ residual when residual != NULL). */
static void rmsnorm_row(float *y, const float *x, const float *w, const float *residual, int C, float eps) {
    const float r = row_rsqrt(x, C, eps);
    /* normalise, then the (1 + w) gain, then the residual */
    for (int c = 0; c < C; c++) {
        const float normed = (x[c] * r) * (1.0f + w[c]);
        y[c] = residual ? residual[c] + normed : normed;
    }
}

void mg_cpu_rmsnorm_forward(void *ctx, void *y_, const void *x_, const void *w_, int64_t M, int C, float eps) {
    (void)ctx;
    float *y = y_;
    const float *x = x_, *w = w_;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) rmsnorm_row(y + m * C, x + m * C, w, NULL, C, eps);
}

void mg_cpu_rmsnorm_add_forward(void *ctx, void *h_, const void *residual_, const void *x_, const void *w_, int64_t M,
                                int C, float eps) {
    (void)ctx;
    float *h = h_;
    const float *residual = residual_, *x = x_, *w = w_;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) rmsnorm_row(h + m * C, x + m * C, w, residual + m * C, C, eps);
}

void mg_cpu_rmsnorm_backward(void *ctx, void *dx_, const void *dy_, const void *x_, const void *w_, int64_t M, int C,
                             float eps) {
    (void)ctx;
    float *dx = dx_;
    const float *dy = dy_, *x = x_, *w = w_;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * C, *dym = dy + m * C;
        float *dxm = dx + m * C;
        const float r = row_rsqrt(xm, C, eps); /* as the forward computed it */
        /* mean(g * x), g = dy * (1 + w) the gradient of x * r */
        float gx = 0.0f;
        for (int c = 0; c < C; c++) gx += dym[c] * (1.0f + w[c]) * xm[c];
        const float k = r * r * r * (gx / C);
        /* the direct path through x * r, minus the path through r's dependence on x */
        for (int c = 0; c < C; c++) dxm[c] += r * dym[c] * (1.0f + w[c]) - xm[c] * k;
    }
}
