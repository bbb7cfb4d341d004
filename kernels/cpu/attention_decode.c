/* Attention of one new token per batch row over a KV cache (engine/backend.h mg_decode_args):
 *   q[B,H,D], kc,vc[B,Tmax,Hkv,D] -> out[B,H,D]; query head h reads kv head g = h / (H/Hkv)
 *   the query is position len-1; key j < len is visible iff window == 0 or (len-1) - j < window
 *   s_j = (q · k_j) * scale,  p_j = exp(s_j - max s) / Σ exp(...)  (fp32),  out = Σ_j p_j v_j
 * Written with `=`. The same arithmetic as kernels/cpu/attention.c restricted to one query row,
 * and like it without a score buffer (the scores are recomputed), so it needs no memory. */
#include <math.h>

#include "kernels/cpu/ops.h"

static float score(const float *q, const float *k, int D, float scale) {
    float dot = 0.0f;
    for (int d = 0; d < D; d++) dot += q[d] * k[d];
    return dot * scale;
}

void mg_cpu_attention_decode_forward(void *ctx, void *out_, const void *q_, const void *kc_, const void *vc_,
                                     const mg_decode_args *a) {
    (void)ctx;
    float *out = out_;
    const float *q = q_, *kc = kc_, *vc = vc_;
    const int H = a->H, Hkv = a->Hkv, D = a->D, per_kv = H / Hkv;
    const int64_t i = a->len - 1;                                  /* the query's position */
    const int64_t lo = a->window > 0 && i - a->window + 1 > 0 ? i - a->window + 1 : 0; /* first visible key */
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < a->B; b++) {
        for (int h = 0; h < H; h++) {
            const int g = h / per_kv;
            const float *qh = q + (b * H + h) * (int64_t)D;
            float *oh = out + (b * H + h) * (int64_t)D;
            /* the max score and Σ exp(s - max) over the visible keys, in one pass (the sum so far
             * is rescaled when a larger score arrives); key lo always exists, so sum > 0 */
            float mx = -INFINITY, sum = 0.0f;
            for (int64_t j = lo; j <= i; j++) {
                const float s = score(qh, kc + ((b * a->Tmax + j) * Hkv + g) * (int64_t)D, D, a->scale);
                if (s > mx) {
                    sum *= expf(mx - s); /* 0 before the first key: expf(-inf) = 0 */
                    mx = s;
                }
                sum += expf(s - mx);
            }
            /* weighted sum of values, the scores recomputed */
            for (int d = 0; d < D; d++) oh[d] = 0.0f;
            for (int64_t j = lo; j <= i; j++) {
                const int64_t kv = ((b * a->Tmax + j) * Hkv + g) * (int64_t)D;
                const float p = expf(score(qh, kc + kv, D, a->scale) - mx) / sum;
                for (int d = 0; d < D; d++) oh[d] += p * vc[kv + d];
            }
        }
    }
}
