/* Gemma RMSNorm over the last dim (every text norm, q_norm/k_norm per head, the projector norm):
 *   y[M,C] = x * rsqrt(mean(x²) + eps) * (1 + w[C])
 * The weight is stored as the offset w (initialised to 0), hence 1 + w. q/k norm calls this with
 * M = B*T*H rows of C = D. Written with `=`; y may alias x. */
#include <math.h>

#include "kernels/cpu/ops.h"

void mg_cpu_rmsnorm_forward(void *ctx, void *y_, const void *x_, const void *w_, int64_t M, int C, float eps) {
    (void)ctx;
    float *y = y_;
    const float *x = x_, *w = w_;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * C;
        float *ym = y + m * C;
        /* mean of squares */
        float ss = 0.0f;
        for (int c = 0; c < C; c++) ss += xm[c] * xm[c];
        const float r = 1.0f / sqrtf(ss / C + eps);
        /* normalise, then the (1 + w) gain */
        for (int c = 0; c < C; c++) ym[c] = (xm[c] * r) * (1.0f + w[c]);
    }
}
