/* Rotary position embedding, half-split (NeoX) layout, in place on x[B,T,H,D]:
 *   inv_freq_i = (1 / theta^(2i/D)) / factor      for i < D/2   (fp32, as transformers' buffer;
 *                                                  factor is the "linear" rope scaling, 1 = none)
 *   angle = pos[b,t] * inv_freq_i,  c = cos(angle), s = sin(angle)
 *   x'_i       = x_i c - x_{i+D/2} s
 *   x'_{i+D/2} = x_{i+D/2} c + x_i s
 * Gemma 3: local layers theta 1e4 factor 1, global layers theta 1e6 factor 8. Overwrites x. */
#include <math.h>

#include "kernels/cpu/ops.h"

void mg_cpu_rope_forward(void *ctx, void *x_, const int32_t *pos, int64_t B, int64_t T, int H, int D, float theta,
                         float factor) {
    (void)ctx;
    float *x = x_;
    const int half = D / 2;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            const float p = (float)pos[b * T + t];
            for (int i = 0; i < half; i++) {
                /* the frequency and angle, in fp32 like transformers' rotary embedding */
                const float inv_freq = (1.0f / powf(theta, (float)(2 * i) / (float)D)) / factor;
                const float angle = p * inv_freq;
                const float c = cosf(angle), s = sinf(angle);
                /* rotate the pair (i, i + D/2) in every head */
                for (int h = 0; h < H; h++) {
                    float *xh = x + ((b * T + t) * H + h) * (int64_t)D;
                    const float x1 = xh[i], x2 = xh[i + half];
                    xh[i] = x1 * c - x2 * s;
                    xh[i + half] = x2 * c + x1 * s;
                }
            }
        }
    }
}
