/* GPU tests of the training ops (engine/backend.h's training entries, kernels/cuda/ops.h): every CUDA
 * backward, the LoRA forward, cross-entropy, sumsq and AdamW on fresh random bf16 inputs at odd
 * shapes and at the real MedGemma shapes, against float64 gradients computed here (analytic loops)
 * from the same bf16 inputs, with the output rounded to bf16 where the op stores bf16.
 *
 * The harness is tests/gpu/op_harness.h: one line per compared output, `op(shape).output: OK
 * nmse=… match=…` or FAIL with the limit missed; guard regions of sentinels around every output;
 * `=` outputs start poisoned with NaN; `+=` outputs start filled with random values that the
 * reference adds to (accumulation). Exit status 0 only when every case passed; without a GPU it
 * prints "no GPU" and fails. Seed: MG_TEST_SEED=<n> repeats a run. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/backend.h"
#include "engine/dropout.h"
#include "engine/dtype.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/ops.h"
#include "tests/test.h"
#include "tests/gpu/op_harness.h"

/* Tolerances (nmse; match = share bit-identical to the rounded float64 reference).
 * EXACT: a single rounding of a sum that fp32 holds exactly (row adds).
 * FP32: fp32 math rounded once to bf16; nmse ~10x one bf16 rounding, flips only where fp32 is inexact.
 * GEMM_INPLACE: bf16 cuBLASLt GEMMs accumulating into their output (beta = 1, C = D): the small-shape
 *   kernels round the product to bf16 before adding C (tests/gpu/test_cuda_ops.c measured up to
 *   1.3e-5 for linear_residual), so a second rounding is allowed and the match bound is low.
 * F32_OUT: fp32 outputs of fp32 accumulation over bf16 products (no bf16 rounding at all).
 * DA: dA reads du rounded to bf16 (kernels/cuda/lora.cu): a relative error of up to 2^-9 per du
 *   value with random sign, nmse ~1e-6 expected; the limit leaves room for the small cases (M = 5:
 *   21 outputs). A wrong layout or a missing scale is nmse ~1e-2 or more. */
static const double TOL_EXACT = 0.0, MATCH_EXACT = 1.0;
static const double TOL_FP32 = 1e-5, MATCH_FP32 = 0.90;
static const double TOL_GEMM_INPLACE = 3e-5, MATCH_GEMM = 0.50;
static const double TOL_F32_OUT = 1e-8, TOL_DA = 2e-5;

/* ---- small helpers --------------------------------------------------------------------------- */

static double gelu_tanh(double x) { return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }
static double gelu_tanh_grad(double x) {
    const double k = sqrt(2.0 / M_PI), t = tanh(k * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

static double *bf16_to_f64(const uint16_t *h, size_t n) {
    double *d = xmalloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = bf(h[i]);
    return d;
}
static double *f32_to_f64(const float *h, size_t n) {
    double *d = xmalloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = h[i];
    return d;
}
static float *zeros_f32(size_t n) {
    float *h = xmalloc(n * sizeof *h);
    memset(h, 0, n * sizeof *h);
    return h;
}
static float *rand_f32(size_t n, double lo, double hi) {
    float *h = xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = (float)(lo + (hi - lo) * 0.5 * (rng_uniform() + 1.0));
    return h;
}
/* R distinct rows of [0, Mrows) in random order (a partial Fisher-Yates shuffle). */
static int32_t *distinct_rows(int64_t Mrows, int64_t R) {
    int32_t *all = xmalloc((size_t)Mrows * sizeof *all), *rows = xmalloc((size_t)R * sizeof *rows);
    for (int64_t i = 0; i < Mrows; i++) all[i] = (int32_t)i;
    for (int64_t i = 0; i < R; i++) {
        const int64_t j = i + rng_int((int)(Mrows - i));
        const int32_t t = all[i];
        all[i] = all[j], all[j] = t;
        rows[i] = all[i];
    }
    free(all);
    return rows;
}

/* ---- linear_backward: dx += dy·w ------------------------------------------------------------ */

/* misalign: dy starts one element (2 bytes) past an allocation. want_rows: rows compared. */
static void case_linear_backward(mg_cuda_ctx *ctx, int64_t M, int K, int N, int misalign, int64_t want_rows) {
    tcase tc;
    tc_begin(&tc, ctx, "linear_backward(shape=[M=%lld,K=%d,N=%d]%s)", (long long)M, K, N,
             misalign ? ",dy_misaligned" : "");
    const size_t nx = (size_t)M * K, ny = (size_t)M * N;
    uint16_t *dy = rand_bf16(ny + 1, 1.0), *w = rand_bf16((size_t)N * K, 1.0 / sqrt(N)), *dx0 = rand_bf16(nx, 1.0);
    uint16_t *ddy = dev_from(&tc, dy, (ny + 1) * 2);
    void *dw = dev_from(&tc, w, (size_t)N * K * 2);
    uint16_t *ddx = dev_out(&tc, nx, dx0);
    if (misalign && ddy) {
        ddy++;
        memmove(dy, dy + 1, ny * 2);
    }
    if (!tc.broken) tc_status(&tc, mg_cuda_linear_backward(ctx, ddx, ddy, dw, M, K, N), "mg_cuda_linear_backward");
    uint16_t *out = xmalloc(nx * 2);
    int guard_bad;
    size_t nans;
    out_fetch(&tc, ddx, nx, out, &guard_bad, &nans);
    int64_t *rows = xmalloc((size_t)(M + 1) * sizeof *rows);
    const int64_t R = sample_rows(M, want_rows, rows);
    double *ref = xmalloc((size_t)R * K * sizeof *ref);
    uint16_t *got = xmalloc((size_t)R * K * 2);
    enum { KB = 64 };
    for (int64_t i = 0; i < R; i++) {
        const int64_t m = rows[i];
#pragma omp parallel for schedule(static)
        for (int kb = 0; kb < K; kb += KB) {
            const int ke = kb + KB < K ? kb + KB : K;
            double acc[KB];
            for (int k = kb; k < ke; k++) acc[k - kb] = bf(dx0[m * K + k]);
            for (int n = 0; n < N; n++) {
                const double g = bf(dy[m * N + n]);
                const uint16_t *wn = w + (size_t)n * K;
                for (int k = kb; k < ke; k++) acc[k - kb] += g * bf(wn[k]);
            }
            for (int k = kb; k < ke; k++) {
                ref[i * K + k] = rb(acc[k - kb]);
                got[i * K + k] = out[m * K + k];
            }
        }
    }
    tc_finish(&tc, got, ref, (size_t)R * K, guard_bad, nans, TOL_GEMM_INPLACE, MATCH_GEMM);
    free(dy); free(w); free(dx0); free(out); free(rows); free(ref); free(got);
}

/* ---- lora_forward: u = dropout(x)·Aᵀ, y[:, off:off+N] += scale·u·Bᵀ ----------------------------- */

typedef struct {
    int64_t M;
    int K, r, N;
    int64_t ldy, off; /* y's row stride and the first column of the branch's slice */
    float p;          /* dropout */
} lora_case;

/* The host dropout of the contract: bf16(x · fp32(1/(1-p))) where mg_dropout_keep, else 0. */
static uint16_t *host_dropout(const uint16_t *x, size_t n, uint64_t seed, float p) {
    const float inv = 1.0f / (1.0f - p);
    uint16_t *xd = xmalloc(n * sizeof *xd);
    for (size_t i = 0; i < n; i++) xd[i] = mg_dropout_keep(seed, (int64_t)i, p) ? mg_f32_to_bf16(mg_bf16_to_f32(x[i]) * inv) : 0;
    return xd;
}

static void case_lora_forward(mg_cuda_ctx *ctx, lora_case c) {
    tcase tc;
    tc_begin(&tc, ctx, "lora_forward(shape=[M=%lld,K=%d,r=%d,N=%d],ldy=%lld,col0=%lld,dropout=%g)", (long long)c.M, c.K,
             c.r, c.N, (long long)c.ldy, (long long)c.off, c.p);
    const size_t nx = (size_t)c.M * c.K, nu = (size_t)c.M * c.r, ny = (size_t)c.M * c.ldy;
    const uint64_t seed = rng_next();
    const float scale = 2.0f;
    uint16_t *x = rand_bf16(nx, 1.0), *A = rand_bf16((size_t)c.r * c.K, 1.0 / sqrt(c.K)),
             *B = rand_bf16((size_t)c.N * c.r, 1.0), *y0 = rand_bf16(ny, 1.0);
    void *dx = dev_from(&tc, x, nx * 2), *dA = dev_from(&tc, A, (size_t)c.r * c.K * 2);
    void *dB = dev_from(&tc, B, (size_t)c.N * c.r * 2);
    uint16_t *dy = dev_out(&tc, ny, y0), *du = dev_out(&tc, nu, NULL);
    const mg_lora_args a = {.M = c.M, .K = c.K, .r = c.r, .N = c.N, .ldy = c.ldy, .scale = scale, .dropout = c.p,
                            .seed = seed};
    if (!tc.broken)
        tc_status(&tc, mg_cuda_lora_forward(ctx, dy ? dy + c.off : NULL, du, dx, dA, dB, &a), "mg_cuda_lora_forward");
    uint16_t *y = xmalloc(ny * 2), *u = xmalloc(nu * 2);
    int gb_y, gb_u;
    size_t nan_y, nan_u;
    out_fetch(&tc, dy, ny, y, &gb_y, &nan_y);
    out_fetch(&tc, du, nu, u, &gb_u, &nan_u);
    tc_free(&tc);

    /* xd is not stored: u checks it (a mask other than mg_dropout_keep's, or one drawn at the wrong
     * element index in a later chunk of rows, moves u by ~p of its norm, far past the limit) */
    double *xin = xmalloc(nx * sizeof *xin);
    uint16_t *xd_ref = c.p > 0 ? host_dropout(x, nx, seed, c.p) : NULL;
    for (size_t i = 0; i < nx; i++) xin[i] = bf(xd_ref ? xd_ref[i] : x[i]);
    free(xd_ref);
    /* u = xd·Aᵀ rounded once */
    double *ref_u = xmalloc(nu * sizeof *ref_u);
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < c.M; m++)
        for (int j = 0; j < c.r; j++) {
            double acc = 0;
            for (int k = 0; k < c.K; k++) acc += xin[m * c.K + k] * bf(A[(size_t)j * c.K + k]);
            ref_u[m * c.r + j] = rb(acc);
        }
    double *got_u = tc.broken ? NULL : bf16_to_f64(u, nu);
    tc_check(&tc, ".u", got_u, ref_u, nu, gb_u, nan_u, TOL_FP32, MATCH_GEMM);
    /* y: the slice gets y0 + scale·u·Bᵀ from the op's own u, rounded once; other columns unchanged */
    double *ref_y = xmalloc(ny * sizeof *ref_y);
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < c.M; m++)
        for (int64_t col = 0; col < c.ldy; col++) {
            const size_t e = (size_t)m * c.ldy + col;
            ref_y[e] = bf(y0[e]);
            if (col < c.off || col >= c.off + c.N || !got_u) continue;
            double acc = 0;
            for (int j = 0; j < c.r; j++) acc += got_u[m * c.r + j] * bf(B[(col - c.off) * c.r + j]);
            ref_y[e] = rb(ref_y[e] + scale * acc);
        }
    double *got_y = tc.broken ? NULL : bf16_to_f64(y, ny);
    tc_check(&tc, ".y", got_y, ref_y, ny, gb_y, nan_y, TOL_GEMM_INPLACE, MATCH_GEMM);
    free(x); free(A); free(B); free(y0); free(y); free(u); free(xin); free(ref_u); free(got_u);
    free(ref_y); free(got_y);
}

/* ---- lora_backward: dB += scale·dyᵀu, du = scale·dy·B, dA += duᵀ·xd, dx += mask(du·A)/(1-p) ----
 * The op gets x; xd = dropout(x) is formed here only for the reference. */

static void case_lora_backward(mg_cuda_ctx *ctx, lora_case c, int with_dx) {
    tcase tc;
    tc_begin(&tc, ctx, "lora_backward(shape=[M=%lld,K=%d,r=%d,N=%d],ldy=%lld,col0=%lld,dropout=%g%s)", (long long)c.M,
             c.K, c.r, c.N, (long long)c.ldy, (long long)c.off, c.p, with_dx ? "" : ",dx=NULL");
    const size_t nx = (size_t)c.M * c.K, nu = (size_t)c.M * c.r, ny = (size_t)c.M * c.ldy;
    const size_t nA = (size_t)c.r * c.K, nB = (size_t)c.N * c.r;
    const uint64_t seed = rng_next();
    const float scale = 2.0f, inv_keep = c.p > 0 ? 1.0f / (1.0f - c.p) : 1.0f;
    uint16_t *dy = rand_bf16(ny, 1.0), *x = rand_bf16(nx, 1.0), *u = rand_bf16(nu, 1.0);
    uint16_t *A = rand_bf16(nA, 1.0 / sqrt(c.K)), *B = rand_bf16(nB, 1.0), *dx0 = rand_bf16(nx, 1.0);
    uint16_t *xd = c.p > 0 ? host_dropout(x, nx, seed, c.p) : NULL;
    float *dA0 = rand_f32(nA, -1.0, 1.0), *dB0 = rand_f32(nB, -1.0, 1.0);
    uint16_t *d_dy = dev_from(&tc, dy, ny * 2);
    void *d_x = dev_from(&tc, x, nx * 2), *d_u = dev_from(&tc, u, nu * 2), *d_A = dev_from(&tc, A, nA * 2);
    void *d_B = dev_from(&tc, B, nB * 2);
    float *d_dA = dev_out_f32(&tc, nA, dA0), *d_dB = dev_out_f32(&tc, nB, dB0), *d_du = dev_out_f32(&tc, nu, NULL);
    uint16_t *d_dx = with_dx ? dev_out(&tc, nx, dx0) : NULL;
    const mg_lora_args a = {.M = c.M, .K = c.K, .r = c.r, .N = c.N, .ldy = c.ldy, .scale = scale, .dropout = c.p,
                            .seed = seed};
    if (!tc.broken)
        tc_status(&tc, mg_cuda_lora_backward(ctx, d_dx, d_dA, d_dB, d_du, d_dy + c.off, d_x, d_u, d_A, d_B, &a),
                  "mg_cuda_lora_backward");
    float *gA = xmalloc(nA * sizeof *gA), *gB = xmalloc(nB * sizeof *gB), *gdu = xmalloc(nu * sizeof *gdu);
    uint16_t *gx = with_dx ? xmalloc(nx * 2) : NULL;
    int gb_A, gb_B, gb_du, gb_x = 0;
    size_t nan_A, nan_B, nan_du, nan_x = 0;
    out_fetch_f32(&tc, d_dA, nA, gA, &gb_A, &nan_A);
    out_fetch_f32(&tc, d_dB, nB, gB, &gb_B, &nan_B);
    out_fetch_f32(&tc, d_du, nu, gdu, &gb_du, &nan_du);
    if (with_dx) out_fetch(&tc, d_dx, nx, gx, &gb_x, &nan_x);
    tc_free(&tc);

    double *ref_du = xmalloc(nu * sizeof *ref_du), *ref_B = xmalloc(nB * sizeof *ref_B);
    double *ref_A = xmalloc(nA * sizeof *ref_A);
    /* du = scale · dy[:, slice] · B */
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < c.M; m++)
        for (int j = 0; j < c.r; j++) {
            double acc = 0;
            for (int n = 0; n < c.N; n++) acc += bf(dy[m * c.ldy + c.off + n]) * bf(B[(size_t)n * c.r + j]);
            ref_du[m * c.r + j] = scale * acc;
        }
    /* dB = dB0 + scale · dy[:, slice]ᵀ · u */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < c.N; n++)
        for (int j = 0; j < c.r; j++) {
            double acc = 0;
            for (int64_t m = 0; m < c.M; m++) acc += bf(dy[m * c.ldy + c.off + n]) * bf(u[m * c.r + j]);
            ref_B[(size_t)n * c.r + j] = dB0[(size_t)n * c.r + j] + scale * acc;
        }
    /* dA = dA0 + duᵀ · xd (the input the forward multiplied: xd with dropout, x without) */
#pragma omp parallel for schedule(static)
    for (int j = 0; j < c.r; j++) {
        double *acc = ref_A + (size_t)j * c.K;
        for (int k = 0; k < c.K; k++) acc[k] = dA0[(size_t)j * c.K + k];
        for (int64_t m = 0; m < c.M; m++) {
            const double d = ref_du[m * c.r + j];
            const uint16_t *xr = (xd ? xd : x) + m * c.K;
            for (int k = 0; k < c.K; k++) acc[k] += d * bf(xr[k]);
        }
    }
    double *g = tc.broken ? NULL : f32_to_f64(gB, nB);
    tc_check(&tc, ".dB", g, ref_B, nB, gb_B, nan_B, TOL_F32_OUT, 0.0);
    free(g);
    g = tc.broken ? NULL : f32_to_f64(gdu, nu);
    tc_check(&tc, ".du", g, ref_du, nu, gb_du, nan_du, TOL_F32_OUT, 0.0);
    free(g);
    g = tc.broken ? NULL : f32_to_f64(gA, nA);
    tc_check(&tc, ".dA", g, ref_A, nA, gb_A, nan_A, TOL_DA, 0.0);
    free(g);
    if (with_dx) {
        /* dx = dx0 + keep · inv_keep · du·A, rounded once */
        double *ref_x = xmalloc(nx * sizeof *ref_x);
#pragma omp parallel for schedule(static)
        for (int64_t m = 0; m < c.M; m++)
            for (int k = 0; k < c.K; k++) {
                const size_t e = (size_t)m * c.K + k;
                double acc = 0;
                for (int j = 0; j < c.r; j++) acc += ref_du[m * c.r + j] * bf(A[(size_t)j * c.K + k]);
                const int keep = c.p <= 0 || mg_dropout_keep(seed, (int64_t)e, c.p);
                ref_x[e] = rb(bf(dx0[e]) + (keep ? acc * (double)inv_keep : 0.0));
            }
        g = tc.broken ? NULL : bf16_to_f64(gx, nx);
        tc_check(&tc, ".dx", g, ref_x, nx, gb_x, nan_x, TOL_FP32, MATCH_FP32);
        free(g);
        free(ref_x);
    }
    free(dy); free(x); free(u); free(A); free(B); free(dx0); free(xd); free(dA0); free(dB0);
    free(gA); free(gB); free(gdu); free(gx); free(ref_du); free(ref_B); free(ref_A);
}

/* ---- gelu_backward, geglu_backward ------------------------------------------------------------ */

/* misalign: x starts one element past a 16-byte boundary (element by element). */
static void case_gelu_backward(mg_cuda_ctx *ctx, int64_t n, int misalign) {
    tcase tc;
    tc_begin(&tc, ctx, "gelu_backward(shape=[%lld]%s)", (long long)n, misalign ? ",x_misaligned" : "");
    uint16_t *x = rand_bf16((size_t)n + 1, 4.0), *dy = rand_bf16((size_t)n, 1.0), *dx0 = rand_bf16((size_t)n, 1.0);
    uint16_t *d_x = dev_from(&tc, x, ((size_t)n + 1) * 2);
    void *d_dy = dev_from(&tc, dy, (size_t)n * 2);
    uint16_t *d_dx = dev_out(&tc, (size_t)n, dx0);
    if (misalign && d_x) {
        d_x++;
        memmove(x, x + 1, (size_t)n * 2);
    }
    if (!tc.broken) tc_status(&tc, mg_cuda_gelu_backward(ctx, d_dx, d_dy, d_x, n), "mg_cuda_gelu_backward");
    uint16_t *got = xmalloc((size_t)n * 2);
    int guard_bad;
    size_t nans;
    out_fetch(&tc, d_dx, (size_t)n, got, &guard_bad, &nans);
    double *ref = xmalloc((size_t)n * sizeof *ref);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) ref[i] = rb(bf(dx0[i]) + bf(dy[i]) * gelu_tanh_grad(bf(x[i])));
    tc_finish(&tc, got, ref, (size_t)n, guard_bad, nans, TOL_FP32, MATCH_FP32);
    free(x); free(dy); free(dx0); free(got); free(ref);
}

static void case_geglu_backward(mg_cuda_ctx *ctx, int64_t M, int F) {
    tcase tc;
    tc_begin(&tc, ctx, "geglu_backward(shape=[M=%lld,F=%d])", (long long)M, F);
    const size_t n = (size_t)M * F;
    uint16_t *gu = rand_bf16(2 * n, 3.0), *dy = rand_bf16(n, 1.0), *dgu0 = rand_bf16(2 * n, 1.0);
    void *d_gu = dev_from(&tc, gu, 2 * n * 2), *d_dy = dev_from(&tc, dy, n * 2);
    uint16_t *d_dgu = dev_out(&tc, 2 * n, dgu0);
    if (!tc.broken) tc_status(&tc, mg_cuda_geglu_backward(ctx, d_dgu, d_dy, d_gu, M, F), "mg_cuda_geglu_backward");
    uint16_t *got = xmalloc(2 * n * 2);
    int guard_bad;
    size_t nans;
    out_fetch(&tc, d_dgu, 2 * n, got, &guard_bad, &nans);
    double *ref = xmalloc(2 * n * sizeof *ref);
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++)
        for (int f = 0; f < F; f++) {
            const size_t ig = (size_t)m * 2 * F + f, iu = ig + F;
            const double g = bf(gu[ig]), up = bf(gu[iu]), d = bf(dy[(size_t)m * F + f]);
            ref[ig] = rb(bf(dgu0[ig]) + d * up * gelu_tanh_grad(g));
            ref[iu] = rb(bf(dgu0[iu]) + d * rb(gelu_tanh(g))); /* the bf16 activation the forward used */
        }
    tc_finish(&tc, got, ref, 2 * n, guard_bad, nans, TOL_FP32, MATCH_FP32);
    free(gu); free(dy); free(dgu0); free(got); free(ref);
}

/* ---- layernorm_backward, rmsnorm_backward ----------------------------------------------------- */

static void case_norm_backward(mg_cuda_ctx *ctx, int64_t M, int C, int layernorm) {
    tcase tc;
    tc_begin(&tc, ctx, "%s(shape=[M=%lld,C=%d])", layernorm ? "layernorm_backward" : "rmsnorm_backward", (long long)M, C);
    const size_t n = (size_t)M * C;
    const float eps = 1e-6f;
    uint16_t *x = rand_bf16(n, 3.0), *w = rand_bf16((size_t)C, layernorm ? 1.5 : 1.0), *dy = rand_bf16(n, 1.0),
             *dx0 = rand_bf16(n, 1.0);
    if (layernorm)
        for (size_t i = 0; i < n; i++) x[i] = mg_f32_to_bf16(mg_bf16_to_f32(x[i]) + 0.7f); /* a non-zero mean */
    void *d_x = dev_from(&tc, x, n * 2), *d_w = dev_from(&tc, w, (size_t)C * 2), *d_dy = dev_from(&tc, dy, n * 2);
    uint16_t *d_dx = dev_out(&tc, n, dx0);
    if (!tc.broken)
        tc_status(&tc,
                  layernorm ? mg_cuda_layernorm_backward(ctx, d_dx, d_dy, d_x, d_w, M, C, eps)
                            : mg_cuda_rmsnorm_backward(ctx, d_dx, d_dy, d_x, d_w, M, C, eps),
                  "mg_cuda_{layernorm,rmsnorm}_backward");
    uint16_t *got = xmalloc(n * 2);
    int guard_bad;
    size_t nans;
    out_fetch(&tc, d_dx, n, got, &guard_bad, &nans);
    double *ref = xmalloc(n * sizeof *ref);
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const uint16_t *xr = x + m * C, *gr = dy + m * C;
        if (layernorm) {
            /* xhat = (x - mean)·rstd, g = dy·w: dx = rstd·(g - mean(g) - xhat·mean(g·xhat)) */
            double mean = 0, var = 0, sg = 0, sgx = 0;
            for (int c = 0; c < C; c++) mean += bf(xr[c]);
            mean /= C;
            for (int c = 0; c < C; c++) var += (bf(xr[c]) - mean) * (bf(xr[c]) - mean);
            const double rstd = 1.0 / sqrt(var / C + (double)eps);
            for (int c = 0; c < C; c++) {
                const double g = bf(gr[c]) * bf(w[c]);
                sg += g;
                sgx += g * (bf(xr[c]) - mean) * rstd;
            }
            for (int c = 0; c < C; c++) {
                const double xhat = (bf(xr[c]) - mean) * rstd, g = bf(gr[c]) * bf(w[c]);
                ref[m * C + c] = rb(bf(dx0[m * C + c]) + rstd * (g - sg / C - xhat * sgx / C));
            }
        } else {
            /* y = x·r·(1+w), r = (mean(x²) + eps)^-1/2: dx = r·g - x·r³·Σ(g·x)/C, g = dy·(1+w) */
            double ss = 0, sgx = 0;
            for (int c = 0; c < C; c++) {
                ss += bf(xr[c]) * bf(xr[c]);
                sgx += bf(gr[c]) * (1.0 + bf(w[c])) * bf(xr[c]);
            }
            const double r = 1.0 / sqrt(ss / C + (double)eps);
            for (int c = 0; c < C; c++) {
                const double g = bf(gr[c]) * (1.0 + bf(w[c]));
                ref[m * C + c] = rb(bf(dx0[m * C + c]) + r * g - bf(xr[c]) * r * r * r * sgx / C);
            }
        }
    }
    tc_finish(&tc, got, ref, n, guard_bad, nans, TOL_FP32, MATCH_FP32);
    free(x); free(w); free(dy); free(dx0); free(got); free(ref);
}

/* ---- qk_norm_rope_backward -------------------------------------------------------------------- */

static void case_qk_norm_rope_backward(mg_cuda_ctx *ctx, int64_t B, int64_t T, int H, int Hkv, int D, int norm_rope,
                                       float theta, float factor) {
    tcase tc;
    tc_begin(&tc, ctx, "qk_norm_rope_backward(shape=[B=%lld,T=%lld,H=%d,Hkv=%d,D=%d],norm_rope=%d,theta=%g,factor=%g)",
             (long long)B, (long long)T, H, Hkv, D, norm_rope, theta, factor);
    const int heads = H + 2 * Hkv;
    const int64_t M = B * T;
    const size_t n_in = (size_t)M * heads * D, nq = (size_t)M * H * D, nk = (size_t)M * Hkv * D;
    const float eps = 1e-6f;
    uint16_t *qkv = rand_bf16(n_in, 3.0), *qn = rand_bf16((size_t)D, 1.0), *kn = rand_bf16((size_t)D, 1.0);
    uint16_t *g = rand_bf16(nq + 2 * nk, 1.0), *d0 = rand_bf16(n_in, 1.0); /* dq | dk | dv back to back */
    int32_t *pos = xmalloc((size_t)M * sizeof *pos);
    for (int64_t i = 0; i < M; i++) pos[i] = (int32_t)(i % T) + (int32_t)(i / T) * 7;
    void *d_qkv = dev_from(&tc, qkv, n_in * 2), *d_qn = dev_from(&tc, qn, (size_t)D * 2);
    void *d_kn = dev_from(&tc, kn, (size_t)D * 2), *d_pos = dev_from(&tc, pos, (size_t)M * sizeof *pos);
    uint16_t *d_g = dev_from(&tc, g, (nq + 2 * nk) * 2), *d_dqkv = dev_out(&tc, n_in, d0);
    const mg_qkv_args a = {.B = B, .T = T, .H = H, .Hkv = Hkv, .D = D, .norm_rope = norm_rope != 0, .q_norm = d_qn,
                           .k_norm = d_kn, .eps = eps, .pos = d_pos, .theta = theta, .factor = factor};
    if (!tc.broken)
        tc_status(&tc, mg_cuda_qk_norm_rope_backward(ctx, d_dqkv, d_g, d_g + nq, d_g + nq + nk, d_qkv, &a),
                  "mg_cuda_qk_norm_rope_backward");
    uint16_t *got = xmalloc(n_in * 2);
    int guard_bad;
    size_t nans;
    out_fetch(&tc, d_dqkv, n_in, got, &guard_bad, &nans);
    double *ref = xmalloc(n_in * sizeof *ref);
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        double *gn = xmalloc((size_t)D * sizeof *gn);
        for (int sl = 0; sl < heads; sl++) {
            const size_t base = ((size_t)m * heads + sl) * D;
            const uint16_t *go = sl < H ? g + ((size_t)m * H + sl) * D
                                 : sl < H + Hkv ? g + nq + ((size_t)m * Hkv + sl - H) * D
                                                : g + nq + nk + ((size_t)m * Hkv + sl - H - Hkv) * D;
            if (!norm_rope || sl >= H + Hkv) {
                for (int d = 0; d < D; d++) ref[base + d] = rb(bf(d0[base + d]) + bf(go[d]));
                continue;
            }
            /* the rotation's transpose with the forward's bf16 cos/sin (inv_freq as kernels/cuda/qk_norm_rope.cu) */
            const uint16_t *w = sl < H ? qn : kn, *x = qkv + base;
            const int half = D / 2;
            for (int i = 0; i < half; i++) {
                const float expo = (float)(2 * i) / (float)D;
                const float inv_freq = (1.0f / (float)pow((double)theta, (double)expo)) / factor;
                const float angle = (float)pos[m] * inv_freq;
                const double cs = rb(cos((double)angle)), sn = rb(sin((double)angle));
                gn[i] = (bf(go[i]) * cs + bf(go[i + half]) * sn) * (1.0 + bf(w[i]));
                gn[i + half] = (bf(go[i + half]) * cs - bf(go[i]) * sn) * (1.0 + bf(w[i + half]));
            }
            /* then the per-head RMSNorm's input gradient */
            double ss = 0, sgx = 0;
            for (int d = 0; d < D; d++) {
                ss += bf(x[d]) * bf(x[d]);
                sgx += gn[d] * bf(x[d]);
            }
            const double r = 1.0 / sqrt(ss / D + (double)eps);
            for (int d = 0; d < D; d++) ref[base + d] = rb(bf(d0[base + d]) + r * gn[d] - bf(x[d]) * r * r * r * sgx / D);
        }
        free(gn);
    }
    tc_finish(&tc, got, ref, n_in, guard_bad, nans, norm_rope ? TOL_FP32 : TOL_EXACT,
              norm_rope ? MATCH_FP32 : MATCH_EXACT);
    free(qkv); free(qn); free(kn); free(g); free(d0); free(pos); free(got); free(ref);
}

/* ---- avgpool_backward ------------------------------------------------------------------------- */

static void case_avgpool_backward(mg_cuda_ctx *ctx, int64_t B, int G, int k, int C) {
    tcase tc;
    tc_begin(&tc, ctx, "avgpool_backward(shape=[B=%lld,G=%d,k=%d,C=%d])", (long long)B, G, k, C);
    const int Go = G / k;
    const size_t nx = (size_t)B * G * G * C, ny = (size_t)B * Go * Go * C;
    uint16_t *dy = rand_bf16(ny, 3.0), *dx0 = rand_bf16(nx, 1.0);
    void *d_dy = dev_from(&tc, dy, ny * 2);
    uint16_t *d_dx = dev_out(&tc, nx, dx0);
    if (!tc.broken) tc_status(&tc, mg_cuda_avgpool_backward(ctx, d_dx, d_dy, B, G, k, C), "mg_cuda_avgpool_backward");
    uint16_t *got = xmalloc(nx * 2);
    int guard_bad;
    size_t nans;
    out_fetch(&tc, d_dx, nx, got, &guard_bad, &nans);
    double *ref = xmalloc(nx * sizeof *ref);
    for (int64_t b = 0; b < B; b++)
        for (int pr = 0; pr < G; pr++)
            for (int pc = 0; pc < G; pc++)
                for (int ch = 0; ch < C; ch++) {
                    const size_t e = (((size_t)b * G + pr) * G + pc) * C + ch;
                    const size_t t = ((size_t)b * Go * Go + (size_t)(pr / k) * Go + pc / k) * C + ch;
                    ref[e] = rb(bf(dx0[e]) + bf(dy[t]) / (k * k));
                }
    tc_finish(&tc, got, ref, nx, guard_bad, nans, TOL_FP32, MATCH_FP32);
    free(dy); free(dx0); free(got); free(ref);
}

/* ---- gather_rows_backward, scatter_rows_backward ---------------------------------------------- */

/* gather: dx[Mrows,C] += dy[R,C] at rows; scatter: dsrc[R,C] += dy[Mrows,C] at rows. rows = start,
 * start+1, ... or, with start < 0, R distinct random rows. */
static void case_rows_backward(mg_cuda_ctx *ctx, int scatter, int64_t Mrows, int64_t R, int C, int64_t start) {
    tcase tc;
    tc_begin(&tc, ctx, "%s(shape=[rows=%lld,R=%lld,C=%d])", scatter ? "scatter_rows_backward" : "gather_rows_backward",
             (long long)Mrows, (long long)R, C);
    int32_t *rows = start >= 0 ? xmalloc((size_t)R * sizeof *rows) : distinct_rows(Mrows, R);
    if (start >= 0)
        for (int64_t r = 0; r < R; r++) rows[r] = (int32_t)(start + r);
    const size_t n_out = (size_t)(scatter ? R : Mrows) * C, n_in = (size_t)(scatter ? Mrows : R) * C;
    uint16_t *dy = rand_bf16(n_in, 1.0), *d0 = rand_bf16(n_out, 1.0);
    void *d_dy = dev_from(&tc, dy, n_in * 2), *d_rows = dev_from(&tc, rows, (size_t)R * sizeof *rows);
    uint16_t *d_out = dev_out(&tc, n_out, d0);
    if (!tc.broken)
        tc_status(&tc,
                  scatter ? mg_cuda_scatter_rows_backward(ctx, d_out, d_dy, d_rows, R, C)
                          : mg_cuda_gather_rows_backward(ctx, d_out, d_dy, d_rows, R, C),
                  "mg_cuda_{scatter,gather}_rows_backward");
    uint16_t *got = xmalloc(n_out * 2);
    int guard_bad;
    size_t nans;
    out_fetch(&tc, d_out, n_out, got, &guard_bad, &nans);
    double *ref = xmalloc(n_out * sizeof *ref);
    for (size_t e = 0; e < n_out; e++) ref[e] = bf(d0[e]);
    for (int64_t r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            const size_t o = scatter ? (size_t)r * C + c : (size_t)rows[r] * C + c;
            const size_t i = scatter ? (size_t)rows[r] * C + c : (size_t)r * C + c;
            ref[o] = rb(ref[o] + bf(dy[i]));
        }
    tc_finish(&tc, got, ref, n_out, guard_bad, nans, TOL_EXACT, MATCH_EXACT);
    free(rows); free(dy); free(d0); free(got); free(ref);
}

/* ---- cross_entropy_backward ------------------------------------------------------------------- */

/* ignore_every: rows r with r % ignore_every == ignore_every - 1 have target -100 (0: none;
 * 1: every row). alias: dlogits is the logits buffer. */
static void case_cross_entropy(mg_cuda_ctx *ctx, int64_t R, int V, int alias, int ignore_every) {
    tcase tc;
    tc_begin(&tc, ctx, "cross_entropy_backward(shape=[R=%lld,V=%d],alias=%d,ignore_every=%d)", (long long)R, V, alias,
             ignore_every);
    const size_t n = (size_t)R * V;
    uint16_t *logits = rand_bf16(n, 8.0);
    int32_t *t = xmalloc((size_t)R * sizeof *t);
    int64_t valid = 0;
    for (int64_t r = 0; r < R; r++) {
        t[r] = r == 0 ? V - 1 : r == 1 ? 0 : rng_int(V); /* the last and first columns too */
        if (ignore_every > 0 && r % ignore_every == ignore_every - 1) t[r] = -100;
        valid += t[r] >= 0;
    }
    const float grad_scale = valid ? 1.0f / (float)valid : 1.0f, loss0 = 1.5f;
    void *d_t = dev_from(&tc, t, (size_t)R * sizeof *t);
    uint16_t *d_dl = dev_out(&tc, n, alias ? logits : NULL);
    void *d_logits = alias ? (void *)d_dl : dev_from(&tc, logits, n * 2);
    float *d_loss = dev_out_f32(&tc, 1, &loss0);
    if (!tc.broken)
        tc_status(&tc, mg_cuda_cross_entropy_backward(ctx, d_dl, d_loss, d_logits, d_t, R, V, grad_scale),
                  "mg_cuda_cross_entropy_backward");
    uint16_t *got = xmalloc(n * 2);
    float loss = 0;
    int gb, gb_loss;
    size_t nans, nan_loss;
    out_fetch(&tc, d_dl, n, got, &gb, &nans);
    out_fetch_f32(&tc, d_loss, 1, &loss, &gb_loss, &nan_loss);
    tc_free(&tc);
    double *ref = xmalloc(n * sizeof *ref), ref_loss = loss0;
    for (int64_t r = 0; r < R; r++) {
        const uint16_t *lr = logits + r * V;
        double *dr = ref + r * V;
        if (t[r] < 0) {
            for (int v = 0; v < V; v++) dr[v] = 0.0;
            continue;
        }
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, bf(lr[v]));
        for (int v = 0; v < V; v++) sum += exp(bf(lr[v]) - mx);
        const double lse = mx + log(sum);
        ref_loss += lse - bf(lr[t[r]]);
        for (int v = 0; v < V; v++) dr[v] = rb(grad_scale * (exp(bf(lr[v]) - lse) - (v == t[r] ? 1.0 : 0.0)));
    }
    double *g = tc.broken ? NULL : bf16_to_f64(got, n);
    const double gl = loss;
    tc_check(&tc, ".dlogits", g, ref, n, gb, nans, TOL_FP32, MATCH_FP32);
    char label[80];
    snprintf(label, sizeof label, ".loss[%.6f vs %.6f]", (double)loss, ref_loss);
    tc_check(&tc, label, &gl, &ref_loss, 1, gb_loss, nan_loss, 1e-10, 0.0); /* relative error 1e-5 */
    free(logits); free(t); free(got); free(ref); free(g);
}

/* ---- sumsq, adamw_step ------------------------------------------------------------------------ */

/* misalign: x starts one float past a 16-byte boundary (no float4 loads). */
static void case_sumsq(mg_cuda_ctx *ctx, int64_t n, int misalign) {
    tcase tc;
    tc_begin(&tc, ctx, "sumsq(shape=[%lld]%s)", (long long)n, misalign ? ",x_misaligned" : "");
    float *x = rand_f32((size_t)n + 1, -1.0, 1.0);
    const float out0 = 2.0f;
    float *d_x = dev_from(&tc, x, ((size_t)n + 1) * sizeof *x), *d_out = dev_out_f32(&tc, 1, &out0);
    if (misalign && d_x) {
        d_x++;
        memmove(x, x + 1, (size_t)n * sizeof *x);
    }
    if (!tc.broken) tc_status(&tc, mg_cuda_sumsq(ctx, d_out, d_x, n), "mg_cuda_sumsq");
    float out = 0;
    int gb;
    size_t nans;
    out_fetch_f32(&tc, d_out, 1, &out, &gb, &nans);
    tc_free(&tc);
    double ref = out0, got = out;
    for (int64_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
    tc_check(&tc, "", &got, &ref, 1, gb, nans, 1e-10, 0.0); /* relative error 1e-5 */
    free(x);
}

static void case_adamw(mg_cuda_ctx *ctx, int64_t n, int step, float weight_decay, float grad_scale) {
    tcase tc;
    tc_begin(&tc, ctx, "adamw_step(shape=[%lld],step=%d,weight_decay=%g,grad_scale=%g)", (long long)n, step,
             weight_decay, grad_scale);
    const mg_adamw_args a = {.n = n, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                             .weight_decay = weight_decay, .step = step, .grad_scale = grad_scale};
    float *p0 = rand_f32((size_t)n, -1.0, 1.0), *g = rand_f32((size_t)n, -1.0, 1.0);
    float *m0 = step > 1 ? rand_f32((size_t)n, -0.1, 0.1) : zeros_f32((size_t)n);
    float *v0 = step > 1 ? rand_f32((size_t)n, 0.0, 0.01) : zeros_f32((size_t)n);
    float *d_p = dev_out_f32(&tc, (size_t)n, p0), *d_m = dev_out_f32(&tc, (size_t)n, m0);
    float *d_v = dev_out_f32(&tc, (size_t)n, v0), *d_g = dev_from(&tc, g, (size_t)n * sizeof *g);
    uint16_t *d_act = dev_out(&tc, (size_t)n, NULL);
    if (!tc.broken) tc_status(&tc, mg_cuda_adamw_step(ctx, d_p, d_g, d_m, d_v, d_act, &a), "mg_cuda_adamw_step");
    float *p = xmalloc((size_t)n * sizeof *p), *m = xmalloc((size_t)n * sizeof *m), *v = xmalloc((size_t)n * sizeof *v);
    uint16_t *act = xmalloc((size_t)n * 2);
    int gb_p, gb_m, gb_v, gb_a;
    size_t nan_p, nan_m, nan_v, nan_a;
    out_fetch_f32(&tc, d_p, (size_t)n, p, &gb_p, &nan_p);
    out_fetch_f32(&tc, d_m, (size_t)n, m, &gb_m, &nan_m);
    out_fetch_f32(&tc, d_v, (size_t)n, v, &gb_v, &nan_v);
    out_fetch(&tc, d_act, (size_t)n, act, &gb_a, &nan_a);
    tc_free(&tc);
    /* torch.optim.AdamW in float64; p compared as the step p - p0 (p itself hides the update) */
    double *rm = xmalloc((size_t)n * sizeof *rm), *rv = xmalloc((size_t)n * sizeof *rv);
    double *rdp = xmalloc((size_t)n * sizeof *rdp), *ract = xmalloc((size_t)n * sizeof *ract);
    double *gm = xmalloc((size_t)n * sizeof *gm), *gv = xmalloc((size_t)n * sizeof *gv);
    double *gdp = xmalloc((size_t)n * sizeof *gdp), *gact = xmalloc((size_t)n * sizeof *gact);
    const double b1 = a.beta1, b2 = a.beta2, lr = a.lr;
    const double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const double gi = (double)g[i] * grad_scale;
        double pi = p0[i] * (1.0 - lr * weight_decay);
        rm[i] = b1 * m0[i] + (1.0 - b1) * gi;
        rv[i] = b2 * v0[i] + (1.0 - b2) * gi * gi;
        pi -= lr / bc1 * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + (double)a.eps);
        rdp[i] = pi - p0[i];
        ract[i] = rb(pi);
        gm[i] = m[i], gv[i] = v[i], gdp[i] = (double)p[i] - p0[i], gact[i] = bf(act[i]);
    }
    /* fp32 p rounds the step to p's ulp (~3e-8 at |p| ~ 0.5 against steps of 2e-4..1e-3): nmse 1e-9..1e-8 */
    tc_check(&tc, ".p-p0", gdp, rdp, (size_t)n, gb_p, nan_p, 1e-6, 0.0);
    tc_check(&tc, ".m", gm, rm, (size_t)n, gb_m, nan_m, 1e-12, 0.0);
    tc_check(&tc, ".v", gv, rv, (size_t)n, gb_v, nan_v, 1e-12, 0.0);
    tc_check(&tc, ".param_act", gact, ract, (size_t)n, gb_a, nan_a, TOL_FP32, 0.99);
    free(p0); free(g); free(m0); free(v0); free(p); free(m); free(v); free(act);
    free(rm); free(rv); free(rdp); free(ract); free(gm); free(gv); free(gdp); free(gact);
}

/* ---- the backend table: raw copies and the training entries' wiring --------------------------- */

static void case_backend_table(void) {
    mg_backend *be = NULL;
    const mg_status s = mg_backend_cuda_create(0, &be);
    if (s != MG_OK) {
        printf("backend_table: FAIL error mg_backend_cuda_create: %s\n", mg_last_error());
        test_failed_++;
        return;
    }
    const int entries = be->lora_forward && be->copy_out && be->copy && be->zero && be->linear_backward &&
                        be->lora_backward && be->gelu_backward && be->geglu_backward && be->layernorm_backward &&
                        be->rmsnorm_backward && be->qk_norm_rope_backward && be->avgpool_backward &&
                        be->gather_rows_backward && be->scatter_rows_backward && be->cross_entropy_backward &&
                        be->sumsq && be->adamw_step;
    /* copy_in a pattern, copy it, zero [100, 300) of the copy, copy_out */
    enum { NB = 1000 };
    unsigned char src[NB], back[NB];
    for (int i = 0; i < NB; i++) src[i] = (unsigned char)(i * 7 + 3);
    unsigned char *a = be->alloc(be->ctx, NB), *b = be->alloc(be->ctx, NB);
    float *sq = be->alloc(be->ctx, 4 * sizeof(float));
    int copies_ok = 0, sumsq_ok = 0, error_ok = 0;
    if (a && b && sq) {
        be->copy_in(be->ctx, a, src, NB);
        be->copy(be->ctx, b, a, NB);
        be->zero(be->ctx, b + 100, 200);
        be->copy_out(be->ctx, back, b, NB);
        copies_ok = 1;
        for (int i = 0; i < NB; i++) copies_ok &= back[i] == (i >= 100 && i < 300 ? 0 : src[i]);
        /* sumsq through the table: 0 + 1² + 2² + 3² into a zeroed float */
        const float v[3] = {1.0f, 2.0f, 3.0f};
        float out = -1.0f;
        be->zero(be->ctx, sq, sizeof(float));
        be->copy_in(be->ctx, sq + 1, v, sizeof v);
        be->sumsq(be->ctx, sq, sq + 1, 3);
        be->copy_out(be->ctx, &out, sq, sizeof out);
        sumsq_ok = out == 14.0f && be->sync(be->ctx) == MG_OK;
        /* a bad call is recorded and handed back by sync, once */
        be->cross_entropy_backward(be->ctx, b, sq, a, NULL, 1, 0, 1.0f);
        error_ok = be->sync(be->ctx) == MG_ERR_SHAPE && be->sync(be->ctx) == MG_OK;
    }
    be->free(be->ctx, a);
    be->free(be->ctx, b);
    be->free(be->ctx, sq);
    mg_backend_cuda_destroy(be);
    const int ok = entries && copies_ok && sumsq_ok && error_ok;
    printf("backend_table(training entries set=%d, copy_in/copy/zero/copy_out=%d, sumsq via table=%d, "
           "error recorded by sync=%d): %s\n", entries, copies_ok, sumsq_ok, error_ok, ok ? "OK" : "FAIL");
    if (ok) test_passed_++; else test_failed_++;
}

/* ---- argument checks: bad shapes come back as errors, not launches ---------------------------- */

static void case_bad_args(mg_cuda_ctx *ctx) {
    mg_lora_args la = {.M = 4, .K = 8, .r = 0, .N = 4, .ldy = 4, .scale = 2.0f};
    const mg_status s1 = mg_cuda_lora_forward(ctx, NULL, NULL, NULL, NULL, NULL, &la); /* r = 0 */
    la.r = 8;
    la.ldy = 3;
    const mg_status s2 = mg_cuda_lora_backward(ctx, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                               &la); /* ldy < N */
    la.ldy = 4;
    la.dropout = 1.0f;
    const mg_status s3 = mg_cuda_lora_forward(ctx, NULL, NULL, NULL, NULL, NULL, &la); /* p = 1 */
    la.dropout = 0.0f;
    la.r = 65;
    const mg_status s4 = mg_cuda_lora_backward(ctx, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                               &la); /* r > 64 */
    const mg_status s5 = mg_cuda_cross_entropy_backward(ctx, NULL, NULL, NULL, NULL, 3, 0, 1.0f); /* V = 0 */
    const mg_qkv_args qa = {.B = 1, .T = 4, .H = 2, .Hkv = 1, .D = 7, .norm_rope = true, .theta = 1e4f, .factor = 1.0f};
    const mg_status s6 = mg_cuda_qk_norm_rope_backward(ctx, NULL, NULL, NULL, NULL, NULL, &qa); /* odd D */
    const mg_status s7 = mg_cuda_avgpool_backward(ctx, NULL, NULL, 1, 6, 4, 8);                /* 6 % 4 */
    const mg_adamw_args aa = {.n = 10, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .step = 0};
    const mg_status s8 = mg_cuda_adamw_step(ctx, NULL, NULL, NULL, NULL, NULL, &aa); /* step 0 */
    const mg_status s9 = mg_cuda_linear_backward(ctx, NULL, NULL, NULL, -1, 8, 8);    /* M < 0 (M = 0 is a no-op) */
    const int ok = s1 == MG_ERR_SHAPE && s2 == MG_ERR_SHAPE && s3 == MG_ERR_ARG && s4 == MG_ERR_UNSUPPORTED &&
                   s5 == MG_ERR_SHAPE && s6 == MG_ERR_SHAPE && s7 == MG_ERR_SHAPE && s8 == MG_ERR_ARG &&
                   s9 == MG_ERR_SHAPE;
    printf("bad_arguments(lora r=0, ldy<N, p=1, r=65; cross_entropy V=0; qk_norm_rope_backward odd D; "
           "avgpool_backward G%%k; adamw step 0; linear_backward M<0): %s (statuses %d %d %d %d %d %d %d %d %d)\n",
           ok ? "OK" : "FAIL", s1, s2, s3, s4, s5, s6, s7, s8, s9);
    if (ok) test_passed_++; else test_failed_++;
}

int main(void) {
    mg_cuda_ctx ctx;
    if (!op_test_start("test_cuda_backward", &ctx)) return test_finish();

    /* linear_backward: odd shapes (one misaligned dy), a shape twice (the cached plan), then the
     * model's frozen linears at batch 8 (M = 2880 text rows, 4096 patches): text q|k|v, o,
     * gate|up, down; vision q|k|v, fc1, fc2; the tied head's input gradient over V = 262208 */
    case_linear_backward(&ctx, 37, 40, 33, 0, 48);
    case_linear_backward(&ctx, 5, 7, 3, 0, 48);
    case_linear_backward(&ctx, 29, 588, 40, 1, 48);
    case_linear_backward(&ctx, 37, 40, 33, 0, 48);
    case_linear_backward(&ctx, 2880, 2560, 4096, 0, 24);
    case_linear_backward(&ctx, 2880, 2048, 2560, 0, 24);
    case_linear_backward(&ctx, 2880, 2560, 20480, 0, 12);
    case_linear_backward(&ctx, 2880, 10240, 2560, 0, 12);
    case_linear_backward(&ctx, 4096, 1152, 3456, 0, 24);
    case_linear_backward(&ctx, 4096, 1152, 4304, 0, 24);
    case_linear_backward(&ctx, 4096, 4304, 1152, 0, 24);
    case_linear_backward(&ctx, 37, 2560, 262208, 0, 4);

    /* LoRA: odd shapes (K = 7: element-by-element dx; r = 3), the vision q|k|v shape with ldy > N, a
     * text k slice inside q|k|v (col0 = 2048 of 4096), rank 64, with and without dropout */
    const lora_case lc[] = {
        {.M = 37, .K = 40, .r = 8, .N = 33, .ldy = 40, .off = 3, .p = 0.0f},
        {.M = 37, .K = 40, .r = 8, .N = 33, .ldy = 40, .off = 3, .p = 0.1f},
        {.M = 5, .K = 7, .r = 3, .N = 3, .ldy = 3, .off = 0, .p = 0.5f},
        {.M = 4099, .K = 1152, .r = 8, .N = 3456, .ldy = 3464, .off = 0, .p = 0.0f},
        {.M = 4099, .K = 1152, .r = 8, .N = 3456, .ldy = 3464, .off = 0, .p = 0.1f},
        {.M = 2880, .K = 2560, .r = 8, .N = 1024, .ldy = 4096, .off = 2048, .p = 0.1f},
        {.M = 300, .K = 1000, .r = 64, .N = 200, .ldy = 256, .off = 56, .p = 0.05f},
    };
    for (size_t i = 0; i < sizeof lc / sizeof lc[0]; i++) case_lora_forward(&ctx, lc[i]);
    for (size_t i = 0; i < sizeof lc / sizeof lc[0]; i++) case_lora_backward(&ctx, lc[i], 1);
    case_lora_backward(&ctx, lc[1], 0);
    /* down_proj's LoRA at batch 8 (K = 10240), a large M at rank 64. Then xd through the 32 MiB
     * scratch in chunks of rows (3840 rows at K = 4304, the last one partial): vision fc2 at two
     * images and a bit, and an odd K = 4301 (the dropout's draws of 4 elements straddle rows; the
     * second chunk's mask from element offset 3840·K) in two chunks; and rank 12 (the forward's
     * u in a second pass of 8 outputs, 4 of them used) */
    case_lora_backward(&ctx, (lora_case){.M = 2880, .K = 10240, .r = 8, .N = 2560, .ldy = 2560, .p = 0.1f}, 1);
    case_lora_backward(&ctx, (lora_case){.M = 70001, .K = 72, .r = 64, .N = 40, .ldy = 48, .off = 8, .p = 0.1f}, 1);
    const lora_case chunked[] = {
        {.M = 8195, .K = 4304, .r = 8, .N = 1152, .ldy = 1152, .off = 0, .p = 0.1f},
        {.M = 4000, .K = 4301, .r = 4, .N = 100, .ldy = 104, .off = 4, .p = 0.2f},
        {.M = 1031, .K = 1152, .r = 12, .N = 1152, .ldy = 3456, .off = 1152, .p = 0.1f},
    };
    for (size_t i = 0; i < sizeof chunked / sizeof chunked[0]; i++) {
        case_lora_forward(&ctx, chunked[i]);
        case_lora_backward(&ctx, chunked[i], 1);
    }

    case_gelu_backward(&ctx, 1000003, 0);
    case_gelu_backward(&ctx, (int64_t)4096 * 4304, 0);
    case_gelu_backward(&ctx, 4101, 1);
    case_geglu_backward(&ctx, 7, 33);
    case_geglu_backward(&ctx, 5, 24);
    case_geglu_backward(&ctx, 360, 10240);

    /* norms: odd C (element by element), C % 8 = 4, the model's sizes (vision 1152, text 2560 at
     * batch 8, the projector's 1152, q/k heads of 256) */
    case_norm_backward(&ctx, 7, 33, 1);
    case_norm_backward(&ctx, 6, 1004, 1);
    case_norm_backward(&ctx, 4096, 1152, 1);
    case_norm_backward(&ctx, 2880, 2560, 1);
    case_norm_backward(&ctx, 5, 17, 0);
    case_norm_backward(&ctx, 3, 1000, 0);
    case_norm_backward(&ctx, 2880, 2560, 0);
    case_norm_backward(&ctx, 256, 1152, 0);
    case_norm_backward(&ctx, 360 * 8, 256, 0);

    case_qk_norm_rope_backward(&ctx, 2, 13, 4, 2, 16, 1, 1e4f, 1.0f);
    case_qk_norm_rope_backward(&ctx, 1, 9, 3, 1, 18, 1, 1e6f, 8.0f);
    case_qk_norm_rope_backward(&ctx, 4, 293, 8, 4, 256, 1, 1e4f, 1.0f);
    case_qk_norm_rope_backward(&ctx, 1, 300, 8, 4, 256, 1, 1e6f, 8.0f);
    case_qk_norm_rope_backward(&ctx, 2, 4096, 16, 16, 72, 0, 0.0f, 0.0f);
    case_qk_norm_rope_backward(&ctx, 1, 5, 3, 3, 9, 0, 0.0f, 0.0f);
    case_qk_norm_rope_backward(&ctx, 3, 7, 4, 2, 24, 0, 0.0f, 0.0f);

    case_avgpool_backward(&ctx, 2, 6, 3, 5);
    case_avgpool_backward(&ctx, 2, 64, 4, 1152);

    case_rows_backward(&ctx, 0, 360, 8, 2560, -1);   /* hidden rows at scored positions */
    case_rows_backward(&ctx, 0, 5000, 8, 33, -1);
    case_rows_backward(&ctx, 1, 300, 256, 2560, 6);  /* image merge: 256 soft tokens from position 6 */
    case_rows_backward(&ctx, 1, 40, 7, 33, -1);

    /* cross-entropy: the real head (V = 262208, 37 rows) in place and separate, with ignored rows;
     * V not a multiple of 8 (element by element), tiny V, every row ignored */
    case_cross_entropy(&ctx, 37, 262208, 1, 6);
    case_cross_entropy(&ctx, 37, 262208, 0, 0);
    case_cross_entropy(&ctx, 5, 1001, 0, 3);
    case_cross_entropy(&ctx, 3, 7, 1, 0);
    case_cross_entropy(&ctx, 4, 1000, 1, 1);

    /* the optimizer over the real LoRA vector (19,248,896 values) and an odd count */
    case_sumsq(&ctx, 1000003, 0);
    case_sumsq(&ctx, 19248896, 0);
    case_sumsq(&ctx, 4101, 1);
    case_adamw(&ctx, 1000003, 1, 0.0f, 1.0f);
    case_adamw(&ctx, 19248896, 7, 0.01f, 0.5f);

    case_backend_table();
    case_bad_args(&ctx);

    mg_cuda_ctx_destroy(&ctx);
    printf("%d/%d cases passed\n", test_passed_, test_passed_ + test_failed_);
    return test_finish();
}
