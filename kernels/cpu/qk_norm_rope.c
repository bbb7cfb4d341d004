/* The fused q|k|v projection split into attention's inputs, with Gemma's q/k norm and RoPE
 * (engine/backend.h mg_qkv_args; spec/model.md §5.4):
 *   qkv[B*T, (H+2Hkv)*D] row m = [ q heads 0..H-1 | k heads 0..Hkv-1 | v heads 0..Hkv-1 ]
 *   norm_rope: q[m,h] = rope(rmsnorm(qkv q head h) * (1 + q_norm)), k[m,g] likewise with k_norm,
 *              v[m,g] = qkv v head g
 *   otherwise: q, k, v are plain copies (SigLIP)
 * RMSNorm and RoPE are the same fp32 arithmetic as kernels/cpu/rmsnorm.c and rope.c:
 *   n_c = (x_c * r) * (1 + w_c),  r = 1 / sqrt(mean(x²) + eps)
 *   inv_freq_i = (1 / theta^(2i/D)) / factor,  angle = pos * inv_freq_i,  c = cos, s = sin
 *   x'_i = n_i c - n_{i+D/2} s,   x'_{i+D/2} = n_{i+D/2} c + n_i s
 * Written with `=`; the outputs never alias qkv.
 * backward (dqkv accumulates with `+=`), r recomputed from qkv, per q/k head with do = dq or dk:
 *   undo the rotation (its transpose, a rotation by -angle):
 *     dn_i = do_i c + do_{i+D/2} s,   dn_{i+D/2} = do_{i+D/2} c - do_i s
 *   the RMSNorm's input gradient (rmsnorm.c): g = dn * (1 + w),  dx += r g - x r³ mean(g x)
 *   v heads (and every head without norm_rope): dqkv head += the output's gradient */
#include <math.h>
#include <string.h>

#include "kernels/cpu/ops.h"

/* cos and sin of pair i's angle at position p; the forward and the backward share it, so both
 * rotate by exactly the same angles. */
static void rope_cos_sin(int i, int D, float p, float theta, float factor, float *c, float *s) {
    const float inv_freq = (1.0f / powf(theta, (float)(2 * i) / (float)D)) / factor;
    const float angle = p * inv_freq;
    *c = cosf(angle), *s = sinf(angle);
}

/* dst[D] = rope(rmsnorm(src) * (1 + w)) at position p. */
static void norm_rope_head(float *dst, const float *src, const float *w, int D, float eps, float p, float theta,
                           float factor) {
    const int half = D / 2;
    /* the per-head RMSNorm */
    float ss = 0.0f;
    for (int c = 0; c < D; c++) ss += src[c] * src[c];
    const float r = 1.0f / sqrtf(ss / D + eps);
    for (int c = 0; c < D; c++) dst[c] = (src[c] * r) * (1.0f + w[c]);
    /* rotate each pair (i, i + D/2) */
    for (int i = 0; i < half; i++) {
        float c, s;
        rope_cos_sin(i, D, p, theta, factor, &c, &s);
        const float x1 = dst[i], x2 = dst[i + half];
        dst[i] = x1 * c - x2 * s;
        dst[i + half] = x2 * c + x1 * s;
    }
}

/* dsrc[D] += the gradient of norm_rope_head at src given the gradient ddst of its output. */
static void norm_rope_head_backward(float *dsrc, const float *ddst, const float *src, const float *w, int D,
                                    float eps, float p, float theta, float factor) {
    const int half = D / 2;
    /* r as the forward computed it */
    float ss = 0.0f;
    for (int c = 0; c < D; c++) ss += src[c] * src[c];
    const float r = 1.0f / sqrtf(ss / D + eps);
    /* pass 1: mean(g * x), g = dn * (1 + w) and dn the output gradient rotated back by -angle */
    float gx = 0.0f;
    for (int i = 0; i < half; i++) {
        float c, s;
        rope_cos_sin(i, D, p, theta, factor, &c, &s);
        const float dn1 = ddst[i] * c + ddst[i + half] * s, dn2 = ddst[i + half] * c - ddst[i] * s;
        gx += dn1 * (1.0f + w[i]) * src[i] + dn2 * (1.0f + w[i + half]) * src[i + half];
    }
    const float k = r * r * r * (gx / D);
    /* pass 2: the RMSNorm's input gradient, dn recomputed (no buffer of D floats) */
    for (int i = 0; i < half; i++) {
        float c, s;
        rope_cos_sin(i, D, p, theta, factor, &c, &s);
        const float dn1 = ddst[i] * c + ddst[i + half] * s, dn2 = ddst[i + half] * c - ddst[i] * s;
        dsrc[i] += r * dn1 * (1.0f + w[i]) - src[i] * k;
        dsrc[i + half] += r * dn2 * (1.0f + w[i + half]) - src[i + half] * k;
    }
}

void mg_cpu_qk_norm_rope_forward(void *ctx, void *q_, void *k_, void *v_, const void *qkv_, const mg_qkv_args *a) {
    (void)ctx;
    float *q = q_, *k = k_, *v = v_;
    const float *qkv = qkv_;
    const int H = a->H, Hkv = a->Hkv, D = a->D, heads = H + 2 * Hkv;
    const int64_t M = a->B * a->T;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *row = qkv + m * heads * (int64_t)D;
        const float p = a->norm_rope ? (float)a->pos[m] : 0.0f;
        for (int s = 0; s < heads; s++) {
            /* head s of the row: a query head, a key head or a value head */
            const int is_q = s < H, is_k = !is_q && s < H + Hkv;
            float *dst = is_q ? q + (m * H + s) * (int64_t)D
                         : is_k ? k + (m * Hkv + (s - H)) * (int64_t)D
                                : v + (m * Hkv + (s - H - Hkv)) * (int64_t)D;
            const float *src = row + (int64_t)s * D;
            if (a->norm_rope && (is_q || is_k))
                norm_rope_head(dst, src, is_q ? a->q_norm : a->k_norm, D, a->eps, p, a->theta, a->factor);
            else
                memcpy(dst, src, (size_t)D * sizeof(float));
        }
    }
}

void mg_cpu_qk_norm_rope_backward(void *ctx, void *dqkv_, const void *dq_, const void *dk_, const void *dv_,
                                  const void *qkv_, const mg_qkv_args *a) {
    (void)ctx;
    float *dqkv = dqkv_;
    const float *dq = dq_, *dk = dk_, *dv = dv_, *qkv = qkv_;
    const int H = a->H, Hkv = a->Hkv, D = a->D, heads = H + 2 * Hkv;
    const int64_t M = a->B * a->T;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float p = a->norm_rope ? (float)a->pos[m] : 0.0f;
        for (int s = 0; s < heads; s++) {
            /* the gradient of head s's output: a query, key or value head */
            const int is_q = s < H, is_k = !is_q && s < H + Hkv;
            const float *ddst = is_q ? dq + (m * H + s) * (int64_t)D
                                : is_k ? dk + (m * Hkv + (s - H)) * (int64_t)D
                                       : dv + (m * Hkv + (s - H - Hkv)) * (int64_t)D;
            const int64_t at = (m * heads + s) * (int64_t)D;
            if (a->norm_rope && (is_q || is_k))
                norm_rope_head_backward(dqkv + at, ddst, qkv + at, is_q ? a->q_norm : a->k_norm, D, a->eps, p,
                                        a->theta, a->factor);
            else
                for (int c = 0; c < D; c++) dqkv[at + c] += ddst[c]; /* a copy passes its gradient through */
        }
    }
}
