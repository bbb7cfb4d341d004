/* Average pooling of the SigLIP patch grid for the projector (AvgPool2d(kernel k, stride k) on the
 * [C, G, G] view of x, then flattened back to tokens):
 *   x[B, G*G, C], patch r*G + c (row-major)  ->  y[B, (G/k)², C]
 *   y[b, i*(G/k) + j, :] = (1/k²) Σ_{a,d<k} x[b, (k*i + a)*G + k*j + d, :]
 * Written with `=`. backward (`+=`): each patch receives its token's gradient over k²:
 *   dx[b, r*G + c, :] += dy[b, (r/k)*(G/k) + c/k, :] / k²   for r, c < (G/k)*k (patches the pool reads) */
#include "kernels/cpu/ops.h"

void mg_cpu_avgpool_forward(void *ctx, void *y_, const void *x_, int64_t B, int G, int k, int C) {
    (void)ctx;
    float *y = y_;
    const float *x = x_;
    const int g = G / k; /* pooled grid side */
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t tok = 0; tok < (int64_t)g * g; tok++) {
            const int i = (int)(tok / g), j = (int)(tok % g);
            float *yt = y + (b * g * g + tok) * C;
            for (int c = 0; c < C; c++) {
                /* sum the k×k window, then divide */
                float sum = 0.0f;
                for (int a = 0; a < k; a++)
                    for (int d = 0; d < k; d++) sum += x[(b * G * G + (int64_t)(k * i + a) * G + k * j + d) * C + c];
                yt[c] = sum * inv;
            }
        }
    }
}

void mg_cpu_avgpool_backward(void *ctx, void *dx_, const void *dy_, int64_t B, int G, int k, int C) {
    (void)ctx;
    float *dx = dx_;
    const float *dy = dy_;
    const int g = G / k; /* pooled grid side */
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t patch = 0; patch < (int64_t)G * G; patch++) {
            const int r = (int)(patch / G), c = (int)(patch % G);
            if (r / k >= g || c / k >= g) continue; /* a patch outside every window (G % k != 0) */
            /* the token whose window holds this patch */
            const float *dyt = dy + (b * g * g + (int64_t)(r / k) * g + c / k) * C;
            float *dxp = dx + (b * G * G + patch) * C;
            for (int ch = 0; ch < C; ch++) dxp[ch] += dyt[ch] * inv;
        }
    }
}
