/* Scaled dot-product attention with GQA and the Gemma 3 / SigLIP masks:
 *   q[B,T,H,D], k,v[B,T,Hkv,D] -> out[B,T,H,D]; query head h reads kv head g = h / (H/Hkv)
 *   s_ij = (q_i · k_j) * scale                  for visible keys j (mask in engine/backend.h)
 *   p_ij = exp(s_ij - max_j s) / Σ_j exp(...)   (softmax over keys, fp32)
 *   out_i = Σ_j p_ij v_j
 * A query with no visible key (only possible for padding queries) gets zeros.
 * Written with `=`. One score row of T floats per thread (allocated per row; this is the
 * reference, not the fast path). */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/ops.h"

/* Whether key j is visible to query i in batch row b (engine/backend.h, spec/model.md §6). */
static bool visible(const mg_attention_args *a, int64_t b, int64_t i, int64_t j) {
    const int64_t row = b * a->T;
    if (a->key_valid && !a->key_valid[row + j]) return false;
    bool seen = a->causal ? j <= i : true;
    if (a->group && a->group[row + i] >= 0 && a->group[row + i] == a->group[row + j]) seen = true;
    if (a->window > 0 && i - j >= a->window) seen = false;
    return seen;
}

void mg_cpu_attention_forward(void *ctx, void *out_, const void *q_, const void *k_, const void *v_,
                              const mg_attention_args *a) {
    (void)ctx;
    float *out = out_;
    const float *q = q_, *k = k_, *v = v_;
    const int64_t B = a->B, T = a->T;
    const int H = a->H, Hkv = a->Hkv, D = a->D, per_kv = H / Hkv;
#pragma omp parallel
    {
        float *s = malloc((size_t)T * sizeof(float)); /* (T) scores of one query row */
#pragma omp for collapse(3) schedule(static)
        for (int64_t b = 0; b < B; b++) {
            for (int64_t i = 0; i < T; i++) {
                for (int h = 0; h < H; h++) {
                    const int g = h / per_kv;
                    const float *qi = q + ((b * T + i) * H + h) * (int64_t)D;
                    float *oi = out + ((b * T + i) * H + h) * (int64_t)D;
                    /* scores of the visible keys, and their max */
                    float mx = -INFINITY;
                    for (int64_t j = 0; j < T; j++) {
                        if (!visible(a, b, i, j)) { s[j] = -INFINITY; continue; }
                        const float *kj = k + ((b * T + j) * Hkv + g) * (int64_t)D;
                        float dot = 0.0f;
                        for (int d = 0; d < D; d++) dot += qi[d] * kj[d];
                        s[j] = dot * a->scale;
                        if (s[j] > mx) mx = s[j];
                    }
                    for (int d = 0; d < D; d++) oi[d] = 0.0f;
                    if (mx == -INFINITY) continue; /* nothing visible */
                    /* softmax */
                    float sum = 0.0f;
                    for (int64_t j = 0; j < T; j++) {
                        s[j] = s[j] == -INFINITY ? 0.0f : expf(s[j] - mx);
                        sum += s[j];
                    }
                    /* weighted sum of values */
                    for (int64_t j = 0; j < T; j++) {
                        if (s[j] == 0.0f) continue;
                        const float p = s[j] / sum;
                        const float *vj = v + ((b * T + j) * Hkv + g) * (int64_t)D;
                        for (int d = 0; d < D; d++) oi[d] += p * vj[d];
                    }
                }
            }
        }
        free(s);
    }
}
