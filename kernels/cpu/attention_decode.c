/* Attention of one new token per batch row over a KV cache (engine/backend.h mg_decode_args):
 *   q[B,H,D], kc,vc[B,Tmax,Hkv,D] -> out[B,H,D]; query head h reads kv head g = h / (H/Hkv)
 *   the query is position len-1; key j < len is visible iff window == 0 or (len-1) - j < window
 *   s_j = (q · k_j) * scale,  p_j = exp(s_j - max s) / Σ exp(...)  (fp32),  out = Σ_j p_j v_j
 * Written with `=`. The same arithmetic as kernels/cpu/attention.c restricted to one query row. */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/ops.h"

void mg_cpu_attention_decode_forward(void *ctx, void *out_, const void *q_, const void *kc_, const void *vc_,
                                     const mg_decode_args *a) {
    (void)ctx;
    float *out = out_;
    const float *q = q_, *kc = kc_, *vc = vc_;
    const int H = a->H, Hkv = a->Hkv, D = a->D, per_kv = H / Hkv;
    const int64_t i = a->len - 1;                                  /* the query's position */
    const int64_t lo = a->window > 0 && i - a->window + 1 > 0 ? i - a->window + 1 : 0; /* first visible key */
#pragma omp parallel
    {
        float *s = malloc((size_t)a->len * sizeof(float)); /* (len) scores of one query head */
#pragma omp for collapse(2) schedule(static)
        for (int64_t b = 0; b < a->B; b++) {
            for (int h = 0; h < H; h++) {
                const int g = h / per_kv;
                const float *qh = q + (b * H + h) * (int64_t)D;
                float *oh = out + (b * H + h) * (int64_t)D;
                /* scores of the visible keys, and their max */
                float mx = -INFINITY;
                for (int64_t j = lo; j <= i; j++) {
                    const float *kj = kc + ((b * a->Tmax + j) * Hkv + g) * (int64_t)D;
                    float dot = 0.0f;
                    for (int d = 0; d < D; d++) dot += qh[d] * kj[d];
                    s[j] = dot * a->scale;
                    if (s[j] > mx) mx = s[j];
                }
                /* softmax */
                float sum = 0.0f;
                for (int64_t j = lo; j <= i; j++) {
                    s[j] = expf(s[j] - mx);
                    sum += s[j];
                }
                /* weighted sum of values */
                for (int d = 0; d < D; d++) oh[d] = 0.0f;
                for (int64_t j = lo; j <= i; j++) {
                    const float p = s[j] / sum;
                    const float *vj = vc + ((b * a->Tmax + j) * Hkv + g) * (int64_t)D;
                    for (int d = 0; d < D; d++) oh[d] += p * vj[d];
                }
            }
        }
        free(s);
    }
}
