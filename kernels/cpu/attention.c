/* Scaled dot-product attention with GQA and the Gemma 3 / SigLIP masks:
 *   q[B,T,H,D], k,v[B,T,Hkv,D] -> out[B,T,H,D]; query head h reads kv head g = h / (H/Hkv)
 * forward (out written with `=`):
 *   s_ij = (q_i · k_j) * scale                   for visible keys j (mask in engine/backend.h)
 *   m_i = max_j s_ij,  l_i = Σ_j exp(s_ij - m_i),  p_ij = exp(s_ij - m_i) / l_i   (fp32)
 *   out_i = Σ_j p_ij v_j
 *   lse2[b,h,i] = (m_i + ln l_i) · log2 e   (when a->lse2 is given; +inf for a row that sees no key)
 * backward (dq, dk, dv accumulate with `+=`), p recomputed from q and k (a->lse2 not read):
 *   dv_j += Σ_i p_ij dout_i
 *   dp_ij = dout_i · v_j,   δ_i = dout_i · out_i   (= Σ_j p_ij dp_ij, from the forward's out)
 *   ds_ij = p_ij (dp_ij - δ_i)                     (the softmax's Jacobian)
 *   dq_i += scale Σ_j ds_ij k_j,   dk_j += scale Σ_i ds_ij q_i
 * A query with no visible key (a padding query with no real key at or before it) gets zeros and
 * passes no gradient. No score buffer: each pass over the keys recomputes the scores, so the op
 * needs no memory of its own and cannot fail. */
#include <math.h>

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

/* (D) pointers into q/out (query rows) and k/v (key rows); offsets are int64_t (engine/backend.h). */
static int64_t q_at(const mg_attention_args *a, int64_t b, int64_t i, int h) {
    return ((b * a->T + i) * a->H + h) * (int64_t)a->D;
}
static int64_t kv_at(const mg_attention_args *a, int64_t b, int64_t j, int g) {
    return ((b * a->T + j) * a->Hkv + g) * (int64_t)a->D;
}

static float score(const float *qi, const float *kj, int D, float scale) {
    float dot = 0.0f;
    for (int d = 0; d < D; d++) dot += qi[d] * kj[d];
    return dot * scale;
}

/* The softmax statistics of query (b, i, head h): m = the max score over the visible keys and
 * l = Σ exp(s - m), in one pass (when a larger score arrives, the sum so far is rescaled to it).
 * Returns false when no key is visible. */
static bool row_stats(const mg_attention_args *a, const float *q, const float *k, int64_t b, int64_t i, int h,
                      float *m, float *l) {
    const int g = h / (a->H / a->Hkv);
    const float *qi = q + q_at(a, b, i, h);
    float mx = -INFINITY, sum = 0.0f;
    for (int64_t j = 0; j < a->T; j++) {
        if (!visible(a, b, i, j)) continue;
        const float s = score(qi, k + kv_at(a, b, j, g), a->D, a->scale);
        if (s > mx) {
            sum *= expf(mx - s); /* 0 before the first key: expf(-inf) = 0 */
            mx = s;
        }
        sum += expf(s - mx);
    }
    *m = mx, *l = sum;
    return mx != -INFINITY;
}

void mg_cpu_attention_forward(void *ctx, void *out_, const void *q_, const void *k_, const void *v_,
                              const mg_attention_args *a) {
    (void)ctx;
    float *out = out_;
    const float *q = q_, *k = k_, *v = v_;
    const int64_t B = a->B, T = a->T;
    const int H = a->H, D = a->D, per_kv = H / a->Hkv;
#pragma omp parallel for collapse(3) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t i = 0; i < T; i++) {
            for (int h = 0; h < H; h++) {
                const int g = h / per_kv;
                const float *qi = q + q_at(a, b, i, h);
                float *oi = out + q_at(a, b, i, h);
                for (int d = 0; d < D; d++) oi[d] = 0.0f;
                /* the softmax's max and normaliser */
                float m, l;
                const bool seen = row_stats(a, q, k, b, i, h, &m, &l);
                if (a->lse2) a->lse2[(b * H + h) * T + i] = seen ? m * 1.44269504088896341f + log2f(l) : INFINITY;
                if (!seen) continue; /* nothing visible: zeros */
                /* weighted sum of values */
                for (int64_t j = 0; j < T; j++) {
                    if (!visible(a, b, i, j)) continue;
                    const float p = expf(score(qi, k + kv_at(a, b, j, g), D, a->scale) - m) / l;
                    const float *vj = v + kv_at(a, b, j, g);
                    for (int d = 0; d < D; d++) oi[d] += p * vj[d];
                }
            }
        }
    }
}

/* One thread per (batch row, kv head): it alone writes dk and dv of that kv head and dq of the
 * query heads reading it, in a fixed order, so the result does not depend on the thread count. */
void mg_cpu_attention_backward(void *ctx, void *dq_, void *dk_, void *dv_, const void *dout_, const void *q_,
                               const void *k_, const void *v_, const void *out_, const mg_attention_args *a) {
    (void)ctx;
    float *dq = dq_, *dk = dk_, *dv = dv_;
    const float *dout = dout_, *q = q_, *k = k_, *v = v_, *out = out_;
    const int64_t B = a->B, T = a->T;
    const int Hkv = a->Hkv, D = a->D, per_kv = a->H / Hkv;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        for (int g = 0; g < Hkv; g++) {
            for (int h = g * per_kv; h < (g + 1) * per_kv; h++) {
                for (int64_t i = 0; i < T; i++) {
                    const float *qi = q + q_at(a, b, i, h), *doi = dout + q_at(a, b, i, h);
                    const float *oi = out + q_at(a, b, i, h);
                    float *dqi = dq + q_at(a, b, i, h);
                    /* the forward's softmax statistics */
                    float m, l;
                    if (!row_stats(a, q, k, b, i, h, &m, &l)) continue; /* no key seen: no gradient */
                    /* δ_i = dout_i · out_i */
                    float delta = 0.0f;
                    for (int d = 0; d < D; d++) delta += doi[d] * oi[d];
                    for (int64_t j = 0; j < T; j++) {
                        if (!visible(a, b, i, j)) continue;
                        const float *kj = k + kv_at(a, b, j, g), *vj = v + kv_at(a, b, j, g);
                        float *dkj = dk + kv_at(a, b, j, g), *dvj = dv + kv_at(a, b, j, g);
                        /* p_ij recomputed */
                        const float p = expf(score(qi, kj, D, a->scale) - m) / l;
                        /* dv_j += p_ij dout_i */
                        for (int d = 0; d < D; d++) dvj[d] += p * doi[d];
                        /* ds_ij = p_ij (dout_i · v_j - δ_i), times scale for the score's q·k */
                        float dp = 0.0f;
                        for (int d = 0; d < D; d++) dp += doi[d] * vj[d];
                        const float ds = p * (dp - delta) * a->scale;
                        /* dq_i += ds k_j,  dk_j += ds q_i */
                        for (int d = 0; d < D; d++) {
                            dqi[d] += ds * kj[d];
                            dkj[d] += ds * qi[d];
                        }
                    }
                }
            }
        }
    }
}
