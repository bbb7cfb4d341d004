/* Every CPU reference op against a float64 loop written here, on random inputs of odd sizes.
 * One line per case in main(): each case builds its inputs, runs the op through the CPU backend
 * table, computes the float64 reference, and check_close prints the error relative to the
 * reference's max |value| next to the op's tolerance. Outputs sit between guard values that must
 * survive (out-of-bounds writes). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/backend.h"
#include "tests/cpu_op_harness.h"

#define TOL 1e-5    /* fp32 math against float64: a few ulps of accumulated rounding */
#define EXACT 1e-12 /* pure copies: any difference is a bug */


static const mg_backend *be;

static double gelu_ref(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

/* gelu: linear_gelu, y = gelu_tanh(x·wᵀ + b) */
static void case_linear(int64_t M, int K, int N, int bias, int gelu) {
    char what[128];
    snprintf(what, sizeof what, "%s(M=%lld,K=%d,N=%d,bias=%d)", gelu ? "linear_gelu_forward" : "linear_forward",
             (long long)M, K, N, bias);
    float *x = rand_vec(M * K, -1, 1), *w = rand_vec((int64_t)N * K, -1, 1), *b = rand_vec(N, -1, 1);
    float *y = out_new(M * N);
    double *ref = ref_new(M * N);
    (gelu ? be->linear_gelu_forward : be->linear_forward)(be->ctx, y, x, w, bias ? b : NULL, M, K, N);
    for (int64_t m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = bias ? b[n] : 0;
            for (int k = 0; k < K; k++) acc += (double)x[m * K + k] * w[(int64_t)n * K + k];
            ref[m * N + n] = gelu ? gelu_ref(acc) : acc;
        }
    check_close(what, y, ref, M * N, TOL);
    out_free(what, y, M * N);
    free(x), free(w), free(b), free(ref);
}

/* linear_residual: y = r + x·wᵀ (+ b), written over r (the model's use) or into its own buffer. */
static void case_linear_residual(int64_t M, int K, int N, int bias, int in_place) {
    char what[128];
    snprintf(what, sizeof what, "linear_residual_forward(M=%lld,K=%d,N=%d,bias=%d,in_place=%d)", (long long)M, K, N,
             bias, in_place);
    float *x = rand_vec(M * K, -1, 1), *w = rand_vec((int64_t)N * K, -1, 1), *b = rand_vec(N, -1, 1);
    float *r0 = rand_vec(M * N, -4, 4), *r = out_new(M * N), *y = in_place ? r : out_new(M * N);
    double *ref = ref_new(M * N);
    for (int64_t i = 0; i < M * N; i++) r[i] = r0[i];
    for (int64_t m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = (double)r0[m * N + n] + (bias ? b[n] : 0);
            for (int k = 0; k < K; k++) acc += (double)x[m * K + k] * w[(int64_t)n * K + k];
            ref[m * N + n] = acc;
        }
    be->linear_residual_forward(be->ctx, y, x, w, bias ? b : NULL, r, M, K, N);
    check_close(what, y, ref, M * N, TOL);
    if (!in_place) {
        int kept = 1; /* the residual is an input here: it must come back untouched */
        for (int64_t i = 0; i < M * N; i++) kept &= r[i] == r0[i];
        CHECK(kept, "%s changed its residual input", what);
        out_free(what, y, M * N);
    }
    out_free(what, r, M * N);
    free(x), free(w), free(b), free(r0), free(ref);
}

static void case_im2col(int64_t B, int S, int p) {
    char what[128];
    snprintf(what, sizeof what, "im2col_forward(B=%lld,S=%d,p=%d)", (long long)B, S, p);
    const int G = S / p;
    const int64_t rows = B * G * G, width = 3 * p * p, n = rows * width;
    float *px = rand_vec(B * 3 * S * S, -1, 1), *cols = out_new(n);
    double *ref = ref_new(n);
    be->im2col_forward(be->ctx, cols, px, B, S, p);
    /* the conv as a sum: output (b, r, c) reads pixel (ch, r*p+kh, c*p+kw) with weight column ch,kh,kw */
    for (int64_t b = 0; b < B; b++)
        for (int r = 0; r < G; r++)
            for (int c = 0; c < G; c++)
                for (int ch = 0; ch < 3; ch++)
                    for (int kh = 0; kh < p; kh++)
                        for (int kw = 0; kw < p; kw++)
                            ref[((b * G + r) * G + c) * width + ch * p * p + kh * p + kw] =
                                px[((b * 3 + ch) * S + r * p + kh) * (int64_t)S + c * p + kw];
    check_close(what, cols, ref, n, EXACT);
    out_free(what, cols, n);
    free(px), free(ref);
}

static void case_add_rows(int64_t B, int64_t P, int C) {
    char what[128];
    snprintf(what, sizeof what, "add_rows_forward(B=%lld,P=%lld,C=%d)", (long long)B, (long long)P, C);
    const int64_t n = B * P * C;
    float *x0 = rand_vec(n, -1, 1), *pos = rand_vec(P * C, -1, 1), *x = out_new(n);
    double *ref = ref_new(n);
    for (int64_t i = 0; i < n; i++) x[i] = x0[i];
    be->add_rows_forward(be->ctx, x, pos, B, P, C);
    for (int64_t i = 0; i < n; i++) ref[i] = (double)x0[i] + pos[i % (P * C)];
    check_close(what, x, ref, n, TOL);
    out_free(what, x, n);
    free(x0), free(pos), free(ref);
}

static void case_add(int64_t n, int in_place) {
    char what[128];
    snprintf(what, sizeof what, "add_forward(n=%lld,in_place=%d)", (long long)n, in_place);
    float *a = out_new(n), *b = rand_vec(n, -1, 1), *y = in_place ? a : out_new(n);
    double *ref = ref_new(n);
    for (int64_t i = 0; i < n; i++) a[i] = uniform(-1, 1), ref[i] = (double)a[i] + b[i];
    be->add_forward(be->ctx, y, a, b, n);
    check_close(what, y, ref, n, TOL);
    if (!in_place) out_free(what, y, n);
    out_free(what, a, n);
    free(b), free(ref);
}

static void case_layernorm(int64_t M, int C, float shift) {
    char what[128];
    snprintf(what, sizeof what, "layernorm_forward(M=%lld,C=%d,shift=%g)", (long long)M, C, shift);
    float *x = rand_vec(M * C, shift - 2, shift + 2), *w = rand_vec(C, -2, 2), *b = rand_vec(C, -1, 1);
    float *y = out_new(M * C);
    double *ref = ref_new(M * C);
    const double eps = 1e-6;
    be->layernorm_forward(be->ctx, y, x, w, b, M, C, (float)eps);
    for (int64_t m = 0; m < M; m++) {
        double mean = 0, var = 0;
        for (int c = 0; c < C; c++) mean += x[m * C + c];
        mean /= C;
        for (int c = 0; c < C; c++) var += (x[m * C + c] - mean) * (x[m * C + c] - mean);
        var /= C;
        for (int c = 0; c < C; c++) ref[m * C + c] = (x[m * C + c] - mean) / sqrt(var + eps) * w[c] + b[c];
    }
    check_close(what, y, ref, M * C, TOL);
    out_free(what, y, M * C);
    free(x), free(w), free(b), free(ref);
}

static void case_rmsnorm(int64_t M, int C, float scale) {
    char what[128];
    snprintf(what, sizeof what, "rmsnorm_forward(M=%lld,C=%d,scale=%g)", (long long)M, C, scale);
    float *x = rand_vec(M * C, -scale, scale), *w = rand_vec(C, -1, 1), *y = out_new(M * C);
    double *ref = ref_new(M * C);
    const double eps = 1e-6;
    be->rmsnorm_forward(be->ctx, y, x, w, M, C, (float)eps);
    for (int64_t m = 0; m < M; m++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[m * C + c] * x[m * C + c];
        for (int c = 0; c < C; c++) ref[m * C + c] = x[m * C + c] / sqrt(ss / C + eps) * (1.0 + w[c]);
    }
    check_close(what, y, ref, M * C, TOL);
    out_free(what, y, M * C);
    free(x), free(w), free(ref);
}

/* rmsnorm_add: h = residual + rmsnorm(x), written over the residual (the decoder's use). */
static void case_rmsnorm_add(int64_t M, int C) {
    char what[128];
    snprintf(what, sizeof what, "rmsnorm_add_forward(M=%lld,C=%d,h_aliases_residual)", (long long)M, C);
    float *x = rand_vec(M * C, -3, 3), *w = rand_vec(C, -1, 1), *h = out_new(M * C);
    double *ref = ref_new(M * C);
    const double eps = 1e-6;
    for (int64_t i = 0; i < M * C; i++) h[i] = uniform(-4, 4), ref[i] = h[i];
    be->rmsnorm_add_forward(be->ctx, h, h, x, w, M, C, (float)eps);
    for (int64_t m = 0; m < M; m++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[m * C + c] * x[m * C + c];
        for (int c = 0; c < C; c++) ref[m * C + c] += x[m * C + c] / sqrt(ss / C + eps) * (1.0 + w[c]);
    }
    check_close(what, h, ref, M * C, TOL);
    out_free(what, h, M * C);
    free(x), free(w), free(ref);
}

/* qk_norm_rope: the fused q|k|v rows split into q, k, v; with norm_rope, per-head RMSNorm (1 + w)
 * then RoPE on q and k, written from spec/model.md §5.2 and §5.4 in float64. */
static void case_qk_norm_rope(int64_t B, int64_t T, int H, int Hkv, int D, int norm_rope, float theta, float factor) {
    char what[160];
    snprintf(what, sizeof what, "qk_norm_rope_forward(B=%lld,T=%lld,H=%d,Hkv=%d,D=%d,norm_rope=%d,theta=%g,factor=%g)",
             (long long)B, (long long)T, H, Hkv, D, norm_rope, theta, factor);
    const int heads = H + 2 * Hkv;
    const int64_t M = B * T, nq = M * H * D, nk = M * Hkv * D;
    float *qkv = rand_vec(M * heads * D, -3, 3), *qn = rand_vec(D, -1, 1), *kn = rand_vec(D, -1, 1);
    float *q = out_new(nq), *k = out_new(nk), *v = out_new(nk);
    int32_t *pos = malloc((size_t)M * sizeof(int32_t));
    for (int64_t i = 0; i < M; i++) pos[i] = (int32_t)(i % T) + (int32_t)(i / T) * 5; /* per-row offsets */
    const mg_qkv_args a = { .B = B, .T = T, .H = H, .Hkv = Hkv, .D = D, .norm_rope = norm_rope, .q_norm = qn,
                            .k_norm = kn, .eps = 1e-6f, .pos = pos, .theta = theta, .factor = factor };
    be->qk_norm_rope_forward(be->ctx, q, k, v, qkv, &a);
    double *ref_q = ref_new(nq), *ref_k = ref_new(nk), *ref_v = ref_new(nk), *n = malloc((size_t)D * sizeof(double));
    for (int64_t m = 0; m < M; m++)
        for (int s = 0; s < heads; s++) {
            const float *src = qkv + (m * heads + s) * D;
            double *dst = s < H ? ref_q + (m * H + s) * D : s < H + Hkv ? ref_k + (m * Hkv + s - H) * D
                                                                        : ref_v + (m * Hkv + s - H - Hkv) * D;
            if (!norm_rope || s >= H + Hkv) {
                for (int d = 0; d < D; d++) dst[d] = src[d];
                continue;
            }
            const float *w = s < H ? qn : kn;
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)src[d] * src[d];
            for (int d = 0; d < D; d++) n[d] = src[d] / sqrt(ss / D + 1e-6) * (1.0 + w[d]);
            for (int i = 0; i < D / 2; i++) {
                const double ang = pos[m] * pow(theta, -2.0 * i / D) / factor;
                dst[i] = n[i] * cos(ang) - n[i + D / 2] * sin(ang);
                dst[i + D / 2] = n[i + D / 2] * cos(ang) + n[i] * sin(ang);
            }
        }
    /* fp32 angles carry ~pos ulps; a plain split is a copy */
    check_close(what, q, ref_q, nq, norm_rope ? 2 * TOL : EXACT);
    check_close(what, k, ref_k, nk, norm_rope ? 2 * TOL : EXACT);
    check_close(what, v, ref_v, nk, EXACT);
    out_free(what, q, nq), out_free(what, k, nk), out_free(what, v, nk);
    free(qkv), free(qn), free(kn), free(pos), free(ref_q), free(ref_k), free(ref_v), free(n);
}

/* attention_decode: one query per row at position len-1 over caches of Tmax positions (only the
 * first len filled; the rest hold garbage that must be ignored). */
static void case_attention_decode(int64_t B, int H, int Hkv, int D, int64_t Tmax, int64_t len, int window) {
    char what[160];
    snprintf(what, sizeof what, "attention_decode_forward(B=%lld,H=%d,Hkv=%d,D=%d,Tmax=%lld,len=%lld,window=%d)",
             (long long)B, H, Hkv, D, (long long)Tmax, (long long)len, window);
    float *q = rand_vec(B * H * D, -2, 2), *kc = rand_vec(B * Tmax * Hkv * D, -2, 2);
    float *vc = rand_vec(B * Tmax * Hkv * D, -1, 1), *out = out_new(B * H * D);
    for (int64_t b = 0; b < B; b++) /* unfilled positions: huge values that would dominate if read */
        for (int64_t t = len; t < Tmax; t++)
            for (int64_t e = 0; e < Hkv * D; e++) kc[(b * Tmax + t) * Hkv * D + e] = 1e4f, vc[(b * Tmax + t) * Hkv * D + e] = 1e4f;
    const mg_decode_args a = { .B = B, .H = H, .Hkv = Hkv, .D = D, .scale = 1.0f / sqrtf((float)D), .Tmax = Tmax,
                               .len = len, .window = window };
    be->attention_decode_forward(be->ctx, out, q, kc, vc, &a);
    double *ref = ref_new(B * H * D), *p = malloc((size_t)len * sizeof(double));
    const int64_t i = len - 1;
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int g = h / (H / Hkv);
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < len; j++) {
                p[j] = -INFINITY;
                if (window > 0 && i - j >= window) continue; /* spec/model.md §6.1: 0 <= i - j < window */
                double s = 0;
                for (int d = 0; d < D; d++) s += (double)q[(b * H + h) * D + d] * kc[((b * Tmax + j) * Hkv + g) * D + d];
                p[j] = s / sqrt((double)D);
                if (p[j] > mx) mx = p[j];
            }
            for (int64_t j = 0; j < len; j++) sum += p[j] == -INFINITY ? 0 : exp(p[j] - mx);
            for (int64_t j = 0; j < len; j++) {
                if (p[j] == -INFINITY) continue;
                for (int d = 0; d < D; d++)
                    ref[(b * H + h) * D + d] += exp(p[j] - mx) / sum * vc[((b * Tmax + j) * Hkv + g) * D + d];
            }
        }
    check_close(what, out, ref, B * H * D, TOL);
    out_free(what, out, B * H * D);
    free(q), free(kc), free(vc), free(ref), free(p);
}

/* Attention with every mask ingredient: causal, window, padding keys (key_valid), image groups. */
static void case_attention(int64_t B, int64_t T, int H, int Hkv, int D, int causal, int window, int padded,
                           int images) {
    char what[160];
    snprintf(what, sizeof what,
             "attention_forward(B=%lld,T=%lld,H=%d,Hkv=%d,D=%d,causal=%d,window=%d,padded=%d,images=%d)",
             (long long)B, (long long)T, H, Hkv, D, causal, window, padded, images);
    float *q = rand_vec(B * T * H * D, -2, 2), *k = rand_vec(B * T * Hkv * D, -2, 2);
    float *v = rand_vec(B * T * Hkv * D, -1, 1), *out = out_new(B * T * H * D), *lse = out_new(B * H * T);
    int32_t *valid = malloc((size_t)(B * T) * sizeof(int32_t)), *group = malloc((size_t)(B * T) * sizeof(int32_t));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            valid[b * T + t] = !(padded && t >= T - 1 - b); /* right padding, one more per row */
            /* two images per row: tokens [2,6) and [7,10) (clipped to T), text elsewhere */
            group[b * T + t] = t >= 2 && t < 6 ? 0 : t >= 7 && t < 10 ? 1 : -1;
        }
    const mg_attention_args a = { .B = B, .T = T, .H = H, .Hkv = Hkv, .D = D, .scale = 1.0f / sqrtf((float)D),
                                  .causal = causal, .window = window, .key_valid = padded ? valid : NULL,
                                  .group = images ? group : NULL, .lse2 = lse };
    be->attention_forward(be->ctx, out, q, k, v, &a);
    double *ref = ref_new(B * T * H * D), *ref_l = ref_new(B * H * T), *p = malloc((size_t)T * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < T; i++)
            for (int h = 0; h < H; h++) {
                const int g = h / (H / Hkv);
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < T; j++) {
                    /* the mask written out as spec/model.md §6 states it */
                    int in_block = images && group[b * T + i] >= 0 && group[b * T + i] == group[b * T + j];
                    int vis = (!padded || valid[b * T + j]) && ((causal ? j <= i : 1) || in_block) &&
                              (window > 0 ? i - j < window : 1);
                    p[j] = -INFINITY;
                    if (!vis) continue;
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += (double)q[((b * T + i) * H + h) * D + d] * k[((b * T + j) * Hkv + g) * D + d];
                    p[j] = s / sqrt((double)D);
                    if (p[j] > mx) mx = p[j];
                }
                for (int64_t j = 0; j < T; j++) sum += p[j] == -INFINITY ? 0 : exp(p[j] - mx);
                /* lse2 = log2 Σ_j e^s_j; a row that sees no key: +inf, compared as 1e30 */
                float *gl = &lse[(b * H + h) * T + i];
                ref_l[(b * H + h) * T + i] = sum > 0 ? (mx + log(sum)) / log(2.0) : 1e30;
                if (isinf(*gl) && *gl > 0) *gl = 1e30f;
                for (int64_t j = 0; j < T; j++) {
                    if (p[j] == -INFINITY) continue;
                    for (int d = 0; d < D; d++)
                        ref[((b * T + i) * H + h) * D + d] += exp(p[j] - mx) / sum * v[((b * T + j) * Hkv + g) * D + d];
                }
            }
    check_close(what, out, ref, B * T * H * D, TOL);
    char what_l[190];
    snprintf(what_l, sizeof what_l, "%s lse2", what);
    check_close(what_l, lse, ref_l, B * H * T, TOL);
    out_free(what, out, B * T * H * D);
    out_free(what_l, lse, B * H * T);
    free(q), free(k), free(v), free(valid), free(group), free(ref), free(ref_l), free(p);
}

static void case_gelu(int64_t n) {
    char what[128];
    snprintf(what, sizeof what, "gelu_forward(n=%lld)", (long long)n);
    float *x = rand_vec(n, -6, 6), *y = out_new(n);
    double *ref = ref_new(n);
    be->gelu_forward(be->ctx, y, x, n);
    for (int64_t i = 0; i < n; i++) ref[i] = gelu_ref(x[i]);
    check_close(what, y, ref, n, TOL);
    out_free(what, y, n);
    free(x), free(ref);
}

static void case_geglu(int64_t M, int F) {
    char what[128];
    snprintf(what, sizeof what, "geglu_forward(M=%lld,F=%d)", (long long)M, F);
    float *gu = rand_vec(M * 2 * F, -4, 4), *y = out_new(M * F);
    double *ref = ref_new(M * F);
    be->geglu_forward(be->ctx, y, gu, M, F);
    for (int64_t m = 0; m < M; m++)
        for (int f = 0; f < F; f++) ref[m * F + f] = gelu_ref(gu[m * 2 * F + f]) * gu[m * 2 * F + F + f];
    check_close(what, y, ref, M * F, TOL);
    out_free(what, y, M * F);
    free(gu), free(ref);
}

static void case_avgpool(int64_t B, int G, int k, int C) {
    char what[128];
    snprintf(what, sizeof what, "avgpool_forward(B=%lld,G=%d,k=%d,C=%d)", (long long)B, G, k, C);
    const int g = G / k;
    const int64_t n = B * g * g * C;
    float *x = rand_vec(B * G * G * C, -1, 1), *y = out_new(n);
    double *ref = ref_new(n);
    be->avgpool_forward(be->ctx, y, x, B, G, k, C);
    /* every patch (r, c) adds itself to token (r/k, c/k) */
    for (int64_t b = 0; b < B; b++)
        for (int r = 0; r < G; r++)
            for (int c = 0; c < G; c++)
                for (int ch = 0; ch < C; ch++)
                    ref[((b * g + r / k) * g + c / k) * C + ch] += x[((b * G + r) * G + c) * C + ch] / (double)(k * k);
    check_close(what, y, ref, n, TOL);
    out_free(what, y, n);
    free(x), free(ref);
}

static void case_embedding(int64_t n, int V, int C, float scale) {
    char what[128];
    snprintf(what, sizeof what, "embedding_forward(n=%lld,V=%d,C=%d,scale=%g)", (long long)n, V, C, scale);
    float *E = rand_vec((int64_t)V * C, -1, 1), *y = out_new(n * C);
    int32_t *ids = malloc((size_t)n * sizeof(int32_t));
    double *ref = ref_new(n * C);
    for (int64_t t = 0; t < n; t++) ids[t] = (int32_t)((t * 7919 + 3) % V);
    be->embedding_forward(be->ctx, y, E, ids, n, C, V, scale);
    for (int64_t t = 0; t < n; t++)
        for (int c = 0; c < C; c++) ref[t * C + c] = (double)E[(int64_t)ids[t] * C + c] * scale;
    check_close(what, y, ref, n * C, TOL);
    out_free(what, y, n * C);
    free(E), free(ids), free(ref);
}

/* gather then scatter back into a copy: gathered rows must match, untouched rows must stay. */
static void case_gather_scatter(int64_t M, int64_t R, int C) {
    char what[128];
    snprintf(what, sizeof what, "gather_rows_forward+scatter_rows_forward(M=%lld,R=%lld,C=%d)", (long long)M,
             (long long)R, C);
    float *x = rand_vec(M * C, -1, 1), *src = rand_vec(R * C, -1, 1), *g = out_new(R * C), *y = out_new(M * C);
    int32_t *rows = malloc((size_t)R * sizeof(int32_t));
    double *ref_g = ref_new(R * C), *ref_y = ref_new(M * C);
    for (int64_t r = 0; r < R; r++) rows[r] = (int32_t)((r * 5 + 2) % M); /* distinct while R <= M, 5 ∤ M */
    for (int64_t i = 0; i < M * C; i++) y[i] = x[i], ref_y[i] = x[i];
    be->gather_rows_forward(be->ctx, g, x, rows, R, C);
    be->scatter_rows_forward(be->ctx, y, src, rows, R, C);
    for (int64_t r = 0; r < R; r++)
        for (int c = 0; c < C; c++) ref_g[r * C + c] = x[rows[r] * C + c], ref_y[rows[r] * C + c] = src[r * C + c];
    check_close(what, g, ref_g, R * C, EXACT);
    check_close(what, y, ref_y, M * C, EXACT);
    out_free(what, g, R * C);
    out_free(what, y, M * C);
    free(x), free(src), free(rows), free(ref_g), free(ref_y);
}

int main(void) {
    be = mg_backend_cpu();
    case_linear(7, 33, 19, 1, 0);
    case_linear(13, 129, 5, 0, 0);
    case_linear(1, 257, 31, 1, 0);
    case_linear(7, 33, 19, 1, 1);  /* linear_gelu: K=33 sums reach the GELU's tails (|acc| up to ~6) */
    case_linear(3, 48, 97, 0, 1);
    case_linear_residual(7, 33, 19, 1, 1);
    case_linear_residual(13, 129, 5, 0, 1);
    case_linear_residual(5, 65, 23, 1, 0);
    case_linear_residual(1, 257, 31, 0, 0);
    case_im2col(1, 15, 5);
    case_im2col(3, 21, 7);
    case_add_rows(3, 9, 17);
    case_add(1001, 0);
    case_add(777, 1);
    case_layernorm(9, 37, 0);
    case_layernorm(5, 251, 30);  /* a large mean: the two-pass variance matters */
    case_rmsnorm(11, 37, 1);
    case_rmsnorm(3, 259, 100);
    case_rmsnorm_add(7, 45);
    case_qk_norm_rope(2, 5, 4, 2, 18, 1, 10000, 1);
    case_qk_norm_rope(1, 7, 3, 1, 34, 1, 1e6f, 8);
    case_qk_norm_rope(2, 3, 3, 3, 9, 0, 0, 0); /* SigLIP: plain split, odd D */
    case_attention_decode(2, 4, 2, 10, 13, 9, 0);
    case_attention_decode(3, 6, 3, 7, 11, 11, 4); /* full cache, sliding window */
    case_attention_decode(1, 2, 1, 5, 6, 1, 0);   /* first position: one key */
    case_attention(1, 11, 3, 3, 9, 0, 0, 0, 0);  /* SigLIP: no mask */
    case_attention(2, 13, 6, 2, 10, 1, 0, 0, 0); /* GQA, causal */
    case_attention(2, 13, 4, 2, 10, 1, 0, 1, 1); /* causal + padding + images */
    case_attention(3, 15, 4, 1, 6, 1, 3, 1, 1);  /* sliding window 3 + images + padding */
    case_attention(1, 9, 2, 1, 5, 1, 4, 0, 0);   /* sliding window alone */
    case_gelu(1023);
    case_geglu(7, 45);
    case_avgpool(2, 9, 3, 11);
    case_avgpool(1, 10, 5, 7);
    case_embedding(17, 101, 23, 50.5f);
    case_gather_scatter(19, 7, 13);
    return test_finish();
}
