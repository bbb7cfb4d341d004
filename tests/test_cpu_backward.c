/* Every CPU backward against 4-point central finite differences of a float64 forward written here
 * (STYLE habit 8), plus the LoRA branch, cross-entropy, AdamW and sumsq against float64 loops.
 * For an op y = f(x) and a random projection dy, the gradient of L(x) = Σ dy ⊙ f(x) is
 *   dL/dx_i ≈ (L(x - 2h e_i) - 8 L(x - h e_i) + 8 L(x + h e_i) - L(x + 2h e_i)) / (12 h)
 * (error O(h⁴) from truncation plus ~1e-16·|L|/h from rounding: with h = 1e-3 × the input's scale
 * both are below 1e-10 relative, far under the fp32 op's own error, so the difference measures the
 * op). Each backward runs on a gradient buffer pre-filled with values of the gradient's own size
 * and must give prefill + gradient (every backward ACCUMULATES; one that wrote `=` fails by ~100%).
 * One line per case in main(), odd sizes, several input scales, every mask; outputs sit between
 * guard values that must survive. check_close prints the error relative to the expected tensor's
 * max |value| next to the tolerance; a failure names the line in main() of its case. Ops that
 * reduce across rows are also rerun on one thread and must give the same bits. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/dropout.h"
#include "tests/cpu_op_harness.h"

#define THREADS 3 /* more threads than rows in some cases, fewer in others */

static double *to_double(const float *x, int64_t n) {
    double *d = ref_new(n);
    for (int64_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
static double max_abs(const double *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}
static int same_bits(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

static const mg_backend *be;

/* The loss L = Σ dy ⊙ f(inputs) of one case, from its float64 forward over `env`, which holds the
 * double copies of the inputs (fd_grad perturbs one of them in place). */
typedef double (*loss_fn)(void *env);

/* g[n] = dL/dx by 4-point central differences; x is restored. */
static void fd_grad(loss_fn L, void *env, double *x, int64_t n, double h, double *g) {
    for (int64_t i = 0; i < n; i++) {
        const double x0 = x[i];
        x[i] = x0 + 2 * h;
        const double p2 = L(env);
        x[i] = x0 + h;
        const double p1 = L(env);
        x[i] = x0 - h;
        const double m1 = L(env);
        x[i] = x0 - 2 * h;
        const double m2 = L(env);
        x[i] = x0;
        g[i] = (m2 - 8 * m1 + 8 * p1 - p2) / (12 * h);
    }
}

/* A gradient buffer between guards, pre-filled with values the size of the gradient g, and what it
 * must hold after the backward: prefill + g. `prefill` keeps the prefill for a rerun. */
typedef struct {
    int64_t n;
    float *got, *prefill;
    double *expect;
} grad_buf;

static grad_buf grad_new(int64_t n, const double *g) {
    grad_buf b = { .n = n, .got = out_new(n), .prefill = malloc((size_t)(n ? n : 1) * sizeof(float)),
                   .expect = ref_new(n) };
    const double s = max_abs(g, n) > 0 ? max_abs(g, n) : 1.0;
    for (int64_t i = 0; i < n; i++) {
        b.prefill[i] = b.got[i] = uniform(-1, 1) * (float)s;
        b.expect[i] = b.prefill[i] + g[i];
    }
    return b;
}
/* A second buffer with the same prefill, for a rerun that must match bit for bit. */
static float *grad_again(const grad_buf *b) {
    float *p = out_new(b->n);
    memcpy(p, b->prefill, (size_t)b->n * sizeof(float));
    return p;
}
/* Checks got against prefill + g at `tol` (a failure names main()'s line), then the guards. */
static void grad_check(int line, const char *what, grad_buf *b, double tol) {
    check_close_(__FILE__, line, what, b->got, b->expect, (size_t)b->n, tol);
    out_free(what, b->got, b->n);
    free(b->prefill), free(b->expect);
}
/* Rerun on one thread: the same bits as the THREADS run. */
static void check_same(int line, const char *what, const float *a, float *rerun, int64_t n) {
    CHECK(same_bits(a, rerun, n), "%s: 1 thread differs from %d threads (case at line %d)", what, THREADS, line);
    out_free(what, rerun, n);
}

static double gelu_ref(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

/* ---- linear ------------------------------------------------------------------------------- */

typedef struct {
    int64_t M;
    int K, N;
    double *x, *w, *dy;
} linear_env;

static double linear_loss(void *e_) {
    const linear_env *e = e_;
    double L = 0;
    for (int64_t m = 0; m < e->M; m++)
        for (int n = 0; n < e->N; n++) {
            double y = 0;
            for (int k = 0; k < e->K; k++) y += e->x[m * e->K + k] * e->w[(int64_t)n * e->K + k];
            L += e->dy[m * e->N + n] * y;
        }
    return L;
}

static void case_linear_backward(int line, int64_t M, int K, int N, float scale) {
    char what[128];
    snprintf(what, sizeof what, "linear_backward(M=%lld,K=%d,N=%d,scale=%g)", (long long)M, K, N, scale);
    float *x = rand_vec(M * K, -scale, scale), *w = rand_vec((int64_t)N * K, -1, 1), *dy = rand_vec(M * N, -1, 1);
    linear_env e = { M, K, N, to_double(x, M * K), to_double(w, (int64_t)N * K), to_double(dy, M * N) };
    double *g = ref_new(M * K);
    fd_grad(linear_loss, &e, e.x, M * K, 1e-3 * scale, g);
    grad_buf dx = grad_new(M * K, g);
    be->linear_backward(be->ctx, dx.got, dy, w, M, K, N);
    grad_check(line, what, &dx, 1e-5); /* N-term fp32 dot products (N <= 31): a few ulps */
    free(x), free(w), free(dy), free(e.x), free(e.w), free(e.dy), free(g);
}

/* ---- LoRA --------------------------------------------------------------------------------- */

typedef struct {
    int64_t M;
    int K, r, N;
    int64_t ldy;
    double scale, p;
    uint64_t seed;
    double *x, *A, *B, *dy;
} lora_env;

/* xd[m,k] in float64: the mask of engine/dropout.h, kept values scaled by 1/(1-p) */
static double lora_xd(const lora_env *e, int64_t m, int k) {
    const double x = e->x[m * e->K + k];
    if (e->p == 0) return x;
    return mg_dropout_keep(e->seed, m * e->K + k, (float)e->p) ? x / (1 - e->p) : 0;
}

static double lora_loss(void *e_) {
    const lora_env *e = e_;
    double L = 0, *u = ref_new(e->r);
    for (int64_t m = 0; m < e->M; m++) {
        for (int j = 0; j < e->r; j++) {
            u[j] = 0;
            for (int k = 0; k < e->K; k++) u[j] += lora_xd(e, m, k) * e->A[(int64_t)j * e->K + k];
        }
        for (int n = 0; n < e->N; n++) {
            double y = 0;
            for (int j = 0; j < e->r; j++) y += u[j] * e->B[(int64_t)n * e->r + j];
            L += e->dy[m * e->ldy + n] * e->scale * y;
        }
    }
    free(u);
    return L;
}

/* lora_forward into a y of ldy > N columns (a slice of a fused output), then lora_backward on the
 * forward's x and u (the dropout mask drawn again); dy's columns >= N hold junk the backward must
 * ignore. */
static void case_lora(int line, int64_t M, int K, int r, int N, int extra_cols, float p, float scale_x) {
    char what[160], name[200];
    snprintf(what, sizeof what, "(M=%lld,K=%d,r=%d,N=%d,ldy=%d,dropout=%g,scale_x=%g)", (long long)M, K, r, N,
             N + extra_cols, p, scale_x);
    const int64_t ldy = N + extra_cols;
    const float scale = 2.0f; /* alpha / r of the project's config */
    const mg_lora_args a = { .M = M, .K = K, .r = r, .N = N, .ldy = ldy, .scale = scale, .dropout = p,
                             .seed = 0x5eed0000ull + (uint64_t)line };
    float *x = rand_vec(M * K, -scale_x, scale_x), *A = rand_vec((int64_t)r * K, -0.5f, 0.5f);
    float *B = rand_vec((int64_t)N * r, -0.5f, 0.5f), *dy = rand_vec(M * ldy, -1, 1);
    lora_env e = { M, K, r, N, ldy, scale, p, a.seed, to_double(x, M * K), to_double(A, (int64_t)r * K),
                   to_double(B, (int64_t)N * r), to_double(dy, M * ldy) };

    /* forward: y (pre-filled) += scale·u·Bᵀ in columns < N only; u */
    float *y = out_new(M * ldy), *u = out_new(M * r);
    double *ref_y = ref_new(M * ldy), *ref_u = ref_new(M * r), *ref_xd = ref_new(M * K);
    for (int64_t i = 0; i < M * ldy; i++) y[i] = uniform(-1, 1), ref_y[i] = y[i];
    be->lora_forward(be->ctx, y, u, x, A, B, &a);
    for (int64_t m = 0; m < M; m++) {
        for (int k = 0; k < K; k++) ref_xd[m * K + k] = lora_xd(&e, m, k);
        for (int j = 0; j < r; j++)
            for (int k = 0; k < K; k++) ref_u[m * r + j] += ref_xd[m * K + k] * A[(int64_t)j * K + k];
        for (int n = 0; n < N; n++)
            for (int j = 0; j < r; j++) ref_y[m * ldy + n] += scale * ref_u[m * r + j] * B[(int64_t)n * r + j];
    }
    snprintf(name, sizeof name, "lora_forward%s y", what);
    check_close_(__FILE__, line, name, y, ref_y, (size_t)(M * ldy), 1e-5); /* K- and r-term fp32 sums */
    snprintf(name, sizeof name, "lora_forward%s u", what);
    check_close_(__FILE__, line, name, u, ref_u, (size_t)(M * r), 1e-5);

    /* backward */
    double *gx = ref_new(M * K), *gA = ref_new((int64_t)r * K), *gB = ref_new((int64_t)N * r);
    fd_grad(lora_loss, &e, e.x, M * K, 1e-3 * scale_x, gx);
    fd_grad(lora_loss, &e, e.A, (int64_t)r * K, 1e-3 * 0.5, gA);
    fd_grad(lora_loss, &e, e.B, (int64_t)N * r, 1e-3 * 0.5, gB);
    grad_buf dx = grad_new(M * K, gx), dA = grad_new((int64_t)r * K, gA), dB = grad_new((int64_t)N * r, gB);
    float *du = out_new(M * r);
    double *ref_du = ref_new(M * r);
    for (int64_t m = 0; m < M; m++)
        for (int j = 0; j < r; j++)
            for (int n = 0; n < N; n++) ref_du[m * r + j] += scale * (double)dy[m * ldy + n] * B[(int64_t)n * r + j];
    be->lora_backward(be->ctx, dx.got, dA.got, dB.got, du, dy, x, u, A, B, &a);
    /* the rerun on one thread, before the checks free the buffers */
    float *dx1 = grad_again(&dx), *dA1 = grad_again(&dA), *dB1 = grad_again(&dB), *du1 = out_new(M * r);
    omp_set_num_threads(1);
    be->lora_backward(be->ctx, dx1, dA1, dB1, du1, dy, x, u, A, B, &a);
    omp_set_num_threads(THREADS);
    check_same(line, "lora_backward dx", dx.got, dx1, M * K);
    check_same(line, "lora_backward dA", dA.got, dA1, (int64_t)r * K);
    check_same(line, "lora_backward dB", dB.got, dB1, (int64_t)N * r);
    check_same(line, "lora_backward du", du, du1, M * r);
    /* fp32 sums of at most max(M, N, K, r) <= 70 terms against exact gradients: a few ulps */
    snprintf(name, sizeof name, "lora_backward%s dx", what);
    grad_check(line, name, &dx, 1e-5);
    snprintf(name, sizeof name, "lora_backward%s dA", what);
    grad_check(line, name, &dA, 1e-5);
    snprintf(name, sizeof name, "lora_backward%s dB", what);
    grad_check(line, name, &dB, 1e-5);
    snprintf(name, sizeof name, "lora_backward%s du", what);
    check_close_(__FILE__, line, name, du, ref_du, (size_t)(M * r), 1e-5);
    out_free("lora_backward du", du, M * r);

    out_free("lora_forward y", y, M * ldy);
    out_free("lora_forward u", u, M * r);
    free(x), free(A), free(B), free(dy), free(e.x), free(e.A), free(e.B), free(e.dy);
    free(ref_y), free(ref_u), free(ref_xd), free(gx), free(gA), free(gB), free(ref_du);
}

/* Dropout's statistics on a larger input, seen through u with A = I (r = K, so u = xd exactly and
 * the forward's rank loop runs several blocks): about p of u is 0, the rest x / (1-p); with p == 0,
 * u is x itself. */
static void case_lora_dropout(int line, int64_t M, int K, float p) {
    char what[128];
    snprintf(what, sizeof what, "lora_forward dropout(M=%lld,K=%d,p=%g)", (long long)M, K, p);
    const int r = K, N = 5;
    const mg_lora_args a = { .M = M, .K = K, .r = r, .N = N, .ldy = N, .scale = 1, .dropout = p, .seed = 42 };
    float *x = rand_vec(M * K, 0.5f, 1.5f), *A = calloc((size_t)r * K, sizeof(float)),
          *B = rand_vec((int64_t)N * r, -1, 1);
    for (int k = 0; k < K; k++) A[(int64_t)k * K + k] = 1.0f;
    float *y = out_new(M * N), *u = out_new(M * r);
    for (int64_t i = 0; i < M * N; i++) y[i] = 0;
    be->lora_forward(be->ctx, y, u, x, A, B, &a);
    int64_t dropped = 0, bad = 0;
    for (int64_t i = 0; i < M * K; i++) {
        if (p == 0) { bad += u[i] != x[i]; continue; }
        const int keep = mg_dropout_keep(a.seed, i, p);
        dropped += u[i] == 0.0f;
        /* kept: x * (1/(1-p)) in fp32, within 1 ulp of the exact quotient; dropped: exactly 0 */
        bad += keep ? fabs(u[i] - x[i] / (1.0 - p)) > 2e-7 * u[i] : u[i] != 0.0f;
    }
    const double n = (double)(M * K), frac = dropped / n, sd = sqrt(p * (1 - p) / n);
    /* the share dropped is binomial(n, p)/n: within 5 standard deviations */
    const int ok = bad == 0 && (p == 0 || fabs(frac - p) <= 5 * sd);
    printf("%s %s: n=%.0f dropped %.4f (p=%g, tol ±%.4f), %lld elements off\n", ok ? "ok  " : "FAIL", what, n, frac,
           p, 5 * sd, (long long)bad);
    CHECK(ok, "%s (case at line %d)", what, line);
    out_free(what, y, M * N), out_free(what, u, M * r);
    free(x), free(A), free(B);
}

/* ---- GELU, GEGLU -------------------------------------------------------------------------- */

typedef struct {
    int64_t M;
    int F;
    double *x, *dy;
} act_env;

static double gelu_loss(void *e_) {
    const act_env *e = e_;
    double L = 0;
    for (int64_t i = 0; i < e->M; i++) L += e->dy[i] * gelu_ref(e->x[i]);
    return L;
}

static void case_gelu_backward(int line, int64_t n, float scale) {
    char what[128];
    snprintf(what, sizeof what, "gelu_backward(n=%lld,scale=%g)", (long long)n, scale);
    float *x = rand_vec(n, -scale, scale), *dy = rand_vec(n, -1, 1);
    act_env e = { n, 0, to_double(x, n), to_double(dy, n) };
    double *g = ref_new(n);
    fd_grad(gelu_loss, &e, e.x, n, 1e-3 * scale, g);
    grad_buf dx = grad_new(n, g);
    be->gelu_backward(be->ctx, dx.got, dy, x, n);
    grad_check(line, what, &dx, 1e-5); /* elementwise: tanhf and a few products, a few ulps */
    free(x), free(dy), free(e.x), free(e.dy), free(g);
}

static double geglu_loss(void *e_) {
    const act_env *e = e_;
    double L = 0;
    for (int64_t m = 0; m < e->M; m++)
        for (int f = 0; f < e->F; f++) {
            const double *gate = e->x + m * 2 * e->F, *up = gate + e->F;
            L += e->dy[m * e->F + f] * gelu_ref(gate[f]) * up[f];
        }
    return L;
}

static void case_geglu_backward(int line, int64_t M, int F, float scale) {
    char what[128];
    snprintf(what, sizeof what, "geglu_backward(M=%lld,F=%d,scale=%g)", (long long)M, F, scale);
    float *gu = rand_vec(M * 2 * F, -scale, scale), *dy = rand_vec(M * F, -1, 1);
    act_env e = { M, F, to_double(gu, M * 2 * F), to_double(dy, M * F) };
    double *g = ref_new(M * 2 * F);
    fd_grad(geglu_loss, &e, e.x, M * 2 * F, 1e-3 * scale, g);
    grad_buf dgu = grad_new(M * 2 * F, g);
    be->geglu_backward(be->ctx, dgu.got, dy, gu, M, F);
    grad_check(line, what, &dgu, 1e-5); /* elementwise, as gelu */
    free(gu), free(dy), free(e.x), free(e.dy), free(g);
}

/* ---- LayerNorm, RMSNorm ------------------------------------------------------------------- */

typedef struct {
    int64_t M;
    int C;
    double eps;
    double *x, *w, *b, *dy;
} norm_env;

static double layernorm_loss(void *e_) {
    const norm_env *e = e_;
    const int C = e->C;
    double L = 0;
    for (int64_t m = 0; m < e->M; m++) {
        const double *x = e->x + m * C;
        double mean = 0, var = 0;
        for (int c = 0; c < C; c++) mean += x[c];
        mean /= C;
        for (int c = 0; c < C; c++) var += (x[c] - mean) * (x[c] - mean);
        var /= C;
        for (int c = 0; c < C; c++) L += e->dy[m * C + c] * ((x[c] - mean) / sqrt(var + e->eps) * e->w[c] + e->b[c]);
    }
    return L;
}

static void case_layernorm_backward(int line, int64_t M, int C, float shift, float scale, double tol) {
    char what[128];
    snprintf(what, sizeof what, "layernorm_backward(M=%lld,C=%d,shift=%g,scale=%g)", (long long)M, C, shift, scale);
    float *x = rand_vec(M * C, shift - scale, shift + scale), *w = rand_vec(C, -2, 2), *b = rand_vec(C, -1, 1);
    float *dy = rand_vec(M * C, -1, 1);
    norm_env e = { M, C, 1e-6, to_double(x, M * C), to_double(w, C), to_double(b, C), to_double(dy, M * C) };
    double *g = ref_new(M * C);
    fd_grad(layernorm_loss, &e, e.x, M * C, 1e-3 * scale, g);
    grad_buf dx = grad_new(M * C, g);
    be->layernorm_backward(be->ctx, dx.got, dy, x, w, M, C, (float)e.eps);
    grad_check(line, what, &dx, tol);
    free(x), free(w), free(b), free(dy), free(e.x), free(e.w), free(e.b), free(e.dy), free(g);
}

static double rmsnorm_loss(void *e_) {
    const norm_env *e = e_;
    const int C = e->C;
    double L = 0;
    for (int64_t m = 0; m < e->M; m++) {
        const double *x = e->x + m * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        for (int c = 0; c < C; c++) L += e->dy[m * C + c] * x[c] / sqrt(ss / C + e->eps) * (1 + e->w[c]);
    }
    return L;
}

static void case_rmsnorm_backward(int line, int64_t M, int C, float scale) {
    char what[128];
    snprintf(what, sizeof what, "rmsnorm_backward(M=%lld,C=%d,scale=%g)", (long long)M, C, scale);
    float *x = rand_vec(M * C, -scale, scale), *w = rand_vec(C, -1, 1), *dy = rand_vec(M * C, -1, 1);
    norm_env e = { M, C, 1e-6, to_double(x, M * C), to_double(w, C), NULL, to_double(dy, M * C) };
    double *g = ref_new(M * C);
    fd_grad(rmsnorm_loss, &e, e.x, M * C, 1e-3 * scale, g);
    grad_buf dx = grad_new(M * C, g);
    be->rmsnorm_backward(be->ctx, dx.got, dy, x, w, M, C, (float)e.eps);
    grad_check(line, what, &dx, 1e-5); /* C-term fp32 sums (C <= 259): a few ulps of sqrt(C) growth */
    free(x), free(w), free(dy), free(e.x), free(e.w), free(e.dy), free(g);
}

/* ---- q/k norm + RoPE ---------------------------------------------------------------------- */

typedef struct {
    const mg_qkv_args *a;
    double *qkv, *qn, *kn, *dq, *dk, *dv, *n;
} qkv_env;

/* Σ dq⊙q + dk⊙k + dv⊙v of the forward written from spec/model.md §5.2 and §5.4 in float64. */
static double qkv_loss(void *e_) {
    const qkv_env *e = e_;
    const mg_qkv_args *a = e->a;
    const int H = a->H, Hkv = a->Hkv, D = a->D, heads = H + 2 * Hkv;
    double L = 0;
    for (int64_t m = 0; m < a->B * a->T; m++)
        for (int s = 0; s < heads; s++) {
            const double *src = e->qkv + (m * heads + s) * D;
            const double *dd = s < H ? e->dq + (m * H + s) * D : s < H + Hkv ? e->dk + (m * Hkv + s - H) * D
                                                                           : e->dv + (m * Hkv + s - H - Hkv) * D;
            if (!a->norm_rope || s >= H + Hkv) {
                for (int d = 0; d < D; d++) L += dd[d] * src[d];
                continue;
            }
            const double *w = s < H ? e->qn : e->kn;
            double ss = 0;
            for (int d = 0; d < D; d++) ss += src[d] * src[d];
            for (int d = 0; d < D; d++) e->n[d] = src[d] / sqrt(ss / D + a->eps) * (1.0 + w[d]);
            for (int i = 0; i < D / 2; i++) {
                const double ang = a->pos[m] * pow(a->theta, -2.0 * i / D) / a->factor;
                L += dd[i] * (e->n[i] * cos(ang) - e->n[i + D / 2] * sin(ang));
                L += dd[i + D / 2] * (e->n[i + D / 2] * cos(ang) + e->n[i] * sin(ang));
            }
        }
    return L;
}

static void case_qk_norm_rope_backward(int line, int64_t B, int64_t T, int H, int Hkv, int D, int norm_rope,
                                       float theta, float factor, float scale) {
    char what[192];
    snprintf(what, sizeof what,
             "qk_norm_rope_backward(B=%lld,T=%lld,H=%d,Hkv=%d,D=%d,norm_rope=%d,theta=%g,factor=%g,scale=%g)",
             (long long)B, (long long)T, H, Hkv, D, norm_rope, theta, factor, scale);
    const int heads = H + 2 * Hkv;
    const int64_t M = B * T, n = M * heads * D, nq = M * H * D, nk = M * Hkv * D;
    float *qkv = rand_vec(n, -scale, scale), *qn = rand_vec(D, -1, 1), *kn = rand_vec(D, -1, 1);
    float *dq = rand_vec(nq, -1, 1), *dk = rand_vec(nk, -1, 1), *dv = rand_vec(nk, -1, 1);
    int32_t *pos = malloc((size_t)M * sizeof(int32_t));
    for (int64_t i = 0; i < M; i++) pos[i] = (int32_t)(i % T) + (int32_t)(i / T) * 5; /* per-row offsets */
    const mg_qkv_args a = { .B = B, .T = T, .H = H, .Hkv = Hkv, .D = D, .norm_rope = norm_rope, .q_norm = qn,
                            .k_norm = kn, .eps = 1e-6f, .pos = pos, .theta = theta, .factor = factor };
    qkv_env e = { &a, to_double(qkv, n), to_double(qn, D), to_double(kn, D), to_double(dq, nq), to_double(dk, nk),
                  to_double(dv, nk), ref_new(D) };
    double *g = ref_new(n);
    fd_grad(qkv_loss, &e, e.qkv, n, 1e-3 * scale, g);
    grad_buf dqkv = grad_new(n, g);
    be->qk_norm_rope_backward(be->ctx, dqkv.got, dq, dk, dv, qkv, &a);
    /* D-term fp32 sums and fp32 angles (positions <= 20: angle error ~ 20 ulps of the angle) */
    grad_check(line, what, &dqkv, 1e-5);
    free(qkv), free(qn), free(kn), free(dq), free(dk), free(dv), free(pos), free(g);
    free(e.qkv), free(e.qn), free(e.kn), free(e.dq), free(e.dk), free(e.dv), free(e.n);
}

/* ---- attention ---------------------------------------------------------------------------- */

typedef struct {
    const mg_attention_args *a;
    double *q, *k, *v, *dout, *p;
} attn_env;

/* Σ dout ⊙ attention(q, k, v), the mask written out as spec/model.md §6 states it. */
static double attention_loss(void *e_) {
    const attn_env *e = e_;
    const mg_attention_args *a = e->a;
    const int64_t T = a->T;
    const int H = a->H, Hkv = a->Hkv, D = a->D;
    double L = 0;
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t i = 0; i < T; i++)
            for (int h = 0; h < H; h++) {
                const int g = h / (H / Hkv);
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < T; j++) {
                    const int in_block = a->group && a->group[b * T + i] >= 0 && a->group[b * T + i] == a->group[b * T + j];
                    const int vis = (!a->key_valid || a->key_valid[b * T + j]) && ((a->causal ? j <= i : 1) || in_block) &&
                                    (a->window > 0 ? i - j < a->window : 1);
                    e->p[j] = -INFINITY;
                    if (!vis) continue;
                    double s = 0;
                    for (int d = 0; d < D; d++) s += e->q[((b * T + i) * H + h) * D + d] * e->k[((b * T + j) * Hkv + g) * D + d];
                    e->p[j] = s * a->scale;
                    if (e->p[j] > mx) mx = e->p[j];
                }
                if (mx == -INFINITY) continue; /* no visible key: the output is 0 */
                for (int64_t j = 0; j < T; j++) sum += e->p[j] == -INFINITY ? 0 : exp(e->p[j] - mx);
                for (int64_t j = 0; j < T; j++) {
                    if (e->p[j] == -INFINITY) continue;
                    for (int d = 0; d < D; d++)
                        L += e->dout[((b * T + i) * H + h) * D + d] * exp(e->p[j] - mx) / sum *
                             e->v[((b * T + j) * Hkv + g) * D + d];
                }
            }
    return L;
}

/* padded: 0 none, 1 right padding (one more per batch row), 2 left padding (b pads in row b: the
 * first query of rows b >= 1 sees no key, so it gets a zero output and no gradient). */
static void case_attention_backward(int line, int64_t B, int64_t T, int H, int Hkv, int D, int causal, int window,
                                    int padded, int images, float scale) {
    char what[192];
    snprintf(what, sizeof what,
             "attention_backward(B=%lld,T=%lld,H=%d,Hkv=%d,D=%d,causal=%d,window=%d,padded=%d,images=%d,scale=%g)",
             (long long)B, (long long)T, H, Hkv, D, causal, window, padded, images, scale);
    const int64_t nq = B * T * H * D, nk = B * T * Hkv * D;
    float *q = rand_vec(nq, -scale, scale), *k = rand_vec(nk, -scale, scale), *v = rand_vec(nk, -1, 1);
    float *dout = rand_vec(nq, -1, 1), *out = out_new(nq);
    int32_t *valid = malloc((size_t)(B * T) * sizeof(int32_t)), *group = malloc((size_t)(B * T) * sizeof(int32_t));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            valid[b * T + t] = padded == 1 ? t < T - 1 - b : padded == 2 ? t >= b : 1;
            /* two images per row: tokens [2,6) and [7,10) (clipped to T), text elsewhere */
            group[b * T + t] = t >= 2 && t < 6 ? 0 : t >= 7 && t < 10 ? 1 : -1;
        }
    const mg_attention_args a = { .B = B, .T = T, .H = H, .Hkv = Hkv, .D = D, .scale = 1.0f / sqrtf((float)D),
                                  .causal = causal, .window = window, .key_valid = padded ? valid : NULL,
                                  .group = images ? group : NULL };
    be->attention_forward(be->ctx, out, q, k, v, &a);
    attn_env e = { &a, to_double(q, nq), to_double(k, nk), to_double(v, nk), to_double(dout, nq), ref_new(T) };
    double *gq = ref_new(nq), *gk = ref_new(nk), *gv = ref_new(nk);
    fd_grad(attention_loss, &e, e.q, nq, 1e-3 * scale, gq);
    fd_grad(attention_loss, &e, e.k, nk, 1e-3 * scale, gk);
    fd_grad(attention_loss, &e, e.v, nk, 1e-3, gv);
    grad_buf dq = grad_new(nq, gq), dk = grad_new(nk, gk), dv = grad_new(nk, gv);
    be->attention_backward(be->ctx, dq.got, dk.got, dv.got, dout, q, k, v, out, &a);
    float *dq1 = grad_again(&dq), *dk1 = grad_again(&dk), *dv1 = grad_again(&dv);
    omp_set_num_threads(1);
    be->attention_backward(be->ctx, dq1, dk1, dv1, dout, q, k, v, out, &a);
    omp_set_num_threads(THREADS);
    check_same(line, "attention_backward dq", dq.got, dq1, nq);
    check_same(line, "attention_backward dk", dk.got, dk1, nk);
    check_same(line, "attention_backward dv", dv.got, dv1, nk);
    /* softmax over T <= 15 keys and D-term dot products in fp32; dk and dv sum over up to H/Hkv·T
     * queries: tens of ulps */
    char name[224];
    snprintf(name, sizeof name, "%s dq", what);
    grad_check(line, name, &dq, 2e-5);
    snprintf(name, sizeof name, "%s dk", what);
    grad_check(line, name, &dk, 2e-5);
    snprintf(name, sizeof name, "%s dv", what);
    grad_check(line, name, &dv, 2e-5);
    out_free(what, out, nq);
    free(q), free(k), free(v), free(dout), free(valid), free(group), free(gq), free(gk), free(gv);
    free(e.q), free(e.k), free(e.v), free(e.dout), free(e.p);
}

/* ---- avgpool, gather, scatter ------------------------------------------------------------- */

typedef struct {
    int64_t B, R;
    int G, k, C;
    const int32_t *rows;
    double *x, *dy;
} rows_env;

static double avgpool_loss(void *e_) {
    const rows_env *e = e_;
    const int G = e->G, k = e->k, g = G / k, C = e->C;
    double L = 0;
    /* token (i, j) averages patches (k i + a, k j + d) */
    for (int64_t b = 0; b < e->B; b++)
        for (int i = 0; i < g; i++)
            for (int j = 0; j < g; j++)
                for (int c = 0; c < C; c++) {
                    double y = 0;
                    for (int a = 0; a < k; a++)
                        for (int d = 0; d < k; d++) y += e->x[((b * G + k * i + a) * G + k * j + d) * C + c];
                    L += e->dy[((b * g + i) * g + j) * C + c] * y / (k * k);
                }
    return L;
}

static void case_avgpool_backward(int line, int64_t B, int G, int k, int C) {
    char what[128];
    snprintf(what, sizeof what, "avgpool_backward(B=%lld,G=%d,k=%d,C=%d)", (long long)B, G, k, C);
    const int g = G / k;
    const int64_t nx = B * G * G * C, ny = B * g * g * C;
    float *x = rand_vec(nx, -1, 1), *dy = rand_vec(ny, -1, 1);
    rows_env e = { B, 0, G, k, C, NULL, to_double(x, nx), to_double(dy, ny) };
    double *gx = ref_new(nx);
    fd_grad(avgpool_loss, &e, e.x, nx, 1e-3, gx);
    grad_buf dx = grad_new(nx, gx);
    be->avgpool_backward(be->ctx, dx.got, dy, B, G, k, C);
    grad_check(line, what, &dx, 1e-6); /* one multiply and one add per element */
    free(x), free(dy), free(e.x), free(e.dy), free(gx);
}

static double gather_loss(void *e_) { /* y[r] = x[rows[r]] */
    const rows_env *e = e_;
    double L = 0;
    for (int64_t r = 0; r < e->R; r++)
        for (int c = 0; c < e->C; c++) L += e->dy[r * e->C + c] * e->x[(int64_t)e->rows[r] * e->C + c];
    return L;
}

static double scatter_loss(void *e_) { /* y[rows[r]] = src[r]: only those rows depend on src */
    const rows_env *e = e_;
    double L = 0;
    for (int64_t r = 0; r < e->R; r++)
        for (int c = 0; c < e->C; c++) L += e->dy[(int64_t)e->rows[r] * e->C + c] * e->x[r * e->C + c];
    return L;
}

/* gather_rows: x[M,C] -> y[R,C]; scatter_rows: src[R,C] -> y[M,C]. */
static void case_gather_scatter_backward(int line, int64_t M, int64_t R, int C) {
    char what[128];
    int32_t *rows = malloc((size_t)R * sizeof(int32_t));
    for (int64_t r = 0; r < R; r++) rows[r] = (int32_t)((r * 5 + 2) % M); /* distinct while R <= M, 5 ∤ M */
    /* gather's input gradient: rows not gathered get nothing */
    snprintf(what, sizeof what, "gather_rows_backward(M=%lld,R=%lld,C=%d)", (long long)M, (long long)R, C);
    float *x = rand_vec(M * C, -1, 1), *dy = rand_vec(R * C, -1, 1);
    rows_env e = { 0, R, 0, 0, C, rows, to_double(x, M * C), to_double(dy, R * C) };
    double *g = ref_new(M * C);
    fd_grad(gather_loss, &e, e.x, M * C, 1e-3, g);
    grad_buf dx = grad_new(M * C, g);
    be->gather_rows_backward(be->ctx, dx.got, dy, rows, R, C);
    grad_check(line, what, &dx, 1e-6); /* one add per element */
    free(x), free(dy), free(e.x), free(e.dy), free(g);
    /* scatter's source gradient */
    snprintf(what, sizeof what, "scatter_rows_backward(M=%lld,R=%lld,C=%d)", (long long)M, (long long)R, C);
    float *src = rand_vec(R * C, -1, 1), *dyM = rand_vec(M * C, -1, 1);
    rows_env f = { 0, R, 0, 0, C, rows, to_double(src, R * C), to_double(dyM, M * C) };
    double *gs = ref_new(R * C);
    fd_grad(scatter_loss, &f, f.x, R * C, 1e-3, gs);
    grad_buf dsrc = grad_new(R * C, gs);
    be->scatter_rows_backward(be->ctx, dsrc.got, dyM, rows, R, C);
    grad_check(line, what, &dsrc, 1e-6);
    free(src), free(dyM), free(f.x), free(f.dy), free(gs), free(rows);
}

/* ---- cross-entropy ------------------------------------------------------------------------ */

/* Rows r % 3 == 1 are ignored (target -1); the others target a spread of vocab ids. The loss is
 * pre-filled (it accumulates); alias: dlogits written over logits. */
static void case_cross_entropy(int line, int64_t R, int V, float scale, int alias) {
    char what[128], name[160];
    snprintf(what, sizeof what, "cross_entropy_backward(R=%lld,V=%d,scale=%g,alias=%d)", (long long)R, V, scale,
             alias);
    float *logits = rand_vec(R * V, -scale, scale);
    int32_t *t = malloc((size_t)R * sizeof(int32_t));
    int valid = 0;
    for (int64_t r = 0; r < R; r++) {
        t[r] = r % 3 == 1 ? -1 : (int32_t)((r * 7919 + 11) % V);
        valid += t[r] >= 0;
    }
    const float grad_scale = 1.0f / (float)valid; /* the mean over labelled rows */
    /* float64 references: logsumexp, the loss, softmax - onehot */
    double loss_ref = 0.25, *ref = ref_new(R * V);
    for (int64_t r = 0; r < R; r++) {
        if (t[r] < 0) continue;
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < V; v++) mx = logits[r * V + v] > mx ? logits[r * V + v] : mx;
        for (int v = 0; v < V; v++) sum += exp(logits[r * V + v] - mx);
        const double lse = mx + log(sum);
        loss_ref += lse - logits[r * V + t[r]];
        for (int v = 0; v < V; v++)
            ref[r * V + v] = (double)grad_scale * (exp(logits[r * V + v] - lse) - (v == t[r]));
    }
    float *in = out_new(R * V), *dl = alias ? in : out_new(R * V), loss = 0.25f;
    memcpy(in, logits, (size_t)(R * V) * sizeof(float));
    if (!alias)
        for (int64_t i = 0; i < R * V; i++) dl[i] = uniform(-1, 1); /* `=`: whatever was there goes */
    be->cross_entropy_backward(be->ctx, dl, &loss, in, t, R, V, grad_scale);
    /* the rerun on one thread: same loss bits, same gradient */
    float *in1 = out_new(R * V), *dl1 = alias ? in1 : out_new(R * V), loss1 = 0.25f;
    memcpy(in1, logits, (size_t)(R * V) * sizeof(float));
    omp_set_num_threads(1);
    be->cross_entropy_backward(be->ctx, dl1, &loss1, in1, t, R, V, grad_scale);
    omp_set_num_threads(THREADS);
    CHECK(loss == loss1, "%s: loss on 1 thread %.9g differs from %d threads %.9g", what, loss1, THREADS, loss);
    check_same(line, "cross_entropy_backward dlogits", dl, dl1, R * V);
    if (!alias) out_free(what, in1, R * V);
    /* fp32 logsumexp over V terms (V <= 1001): the loss within ~V ulps at worst, the softmax within
     * a few ulps of its row's largest value */
    snprintf(name, sizeof name, "%s loss", what);
    check_close_(__FILE__, line, name, &loss, &loss_ref, 1, 1e-5);
    snprintf(name, sizeof name, "%s dlogits", what);
    check_close_(__FILE__, line, name, dl, ref, (size_t)(R * V), 1e-5);
    int zero_rows = 1; /* ignored rows: exactly zero */
    for (int64_t r = 0; r < R; r++)
        for (int v = 0; v < V && t[r] < 0; v++) zero_rows &= dl[r * V + v] == 0.0f;
    CHECK(zero_rows, "%s: an ignored row has a nonzero gradient (case at line %d)", what, line);
    out_free(what, dl, R * V);
    if (!alias) out_free(what, in, R * V);
    free(logits), free(t), free(ref);
}

/* ---- AdamW, sumsq ------------------------------------------------------------------------- */

/* Three steps of torch.optim.AdamW (_single_tensor_adamw) in float64 against adamw_step, with
 * weight decay and a clipping factor; parameters in [-pscale, pscale]; param_act either its own
 * buffer or param itself. */
static void case_adamw(int line, int64_t n, float pscale, float lr, float wd, float grad_scale, int alias) {
    char what[128], name[192];
    snprintf(what, sizeof what, "adamw_step(n=%lld,pscale=%g,lr=%g,wd=%g,grad_scale=%g,alias=%d) x3", (long long)n,
             pscale, lr, wd, grad_scale, alias);
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    float *p = out_new(n), *m = out_new(n), *v = out_new(n), *act = alias ? p : out_new(n);
    float *p0 = rand_vec(n, -pscale, pscale), *p_prev = malloc((size_t)n * sizeof(float));
    double *rp = ref_new(n), *rm = ref_new(n), *rv = ref_new(n), *rdelta = ref_new(n);
    float *delta = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = p0[i], m[i] = v[i] = 0, rp[i] = p0[i];
    for (int step = 1; step <= 3; step++) {
        /* gradients of mixed sizes, some tiny so eps matters */
        float *grad = rand_vec(n, -1, 1);
        for (int64_t i = 0; i < n; i += 7) grad[i] *= 1e-6f;
        const mg_adamw_args a = { .n = n, .lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd,
                                  .step = step, .grad_scale = grad_scale };
        memcpy(p_prev, p, (size_t)n * sizeof(float));
        be->adamw_step(be->ctx, p, grad, m, v, act, &a);
        const double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
        for (int64_t i = 0; i < n; i++) {
            const double g = (double)grad[i] * grad_scale, before = rp[i];
            rp[i] *= 1 - (double)lr * wd;
            rm[i] = b1 * rm[i] + (1 - (double)b1) * g;
            rv[i] = b2 * rv[i] + (1 - (double)b2) * g * g;
            rp[i] -= (double)lr / bc1 * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + eps);
            rdelta[i] = rp[i] - before;
            delta[i] = p[i] - p_prev[i]; /* exact in fp32 (Sterbenz: p and p_prev within 2x) */
        }
        free(grad);
    }
    /* p within a few ulps of max |p| after 3 steps; m and v a few ulps of their size. The last
     * step's update (lr-sized) is also checked on its own, limited by p's rounding: half an ulp of
     * max |p| is 6e-6 of lr for (pscale, lr) = (1, 1e-2) and 3e-6 for (0.03, 3e-4): 1e-4 */
    snprintf(name, sizeof name, "%s param", what);
    check_close_(__FILE__, line, name, p, rp, (size_t)n, 1e-6);
    snprintf(name, sizeof name, "%s update", what);
    check_close_(__FILE__, line, name, delta, rdelta, (size_t)n, 1e-4);
    snprintf(name, sizeof name, "%s m", what);
    check_close_(__FILE__, line, name, m, rm, (size_t)n, 1e-6);
    snprintf(name, sizeof name, "%s v", what);
    check_close_(__FILE__, line, name, v, rv, (size_t)n, 1e-6);
    CHECK(same_bits(p, act, n), "%s: param_act differs from param (case at line %d)", what, line);
    out_free(what, p, n), out_free(what, m, n), out_free(what, v, n);
    if (!alias) out_free(what, act, n);
    free(p0), free(p_prev), free(rp), free(rm), free(rv), free(rdelta), free(delta);
}

static void case_sumsq(int line, int64_t n) {
    char what[128];
    snprintf(what, sizeof what, "sumsq(n=%lld)", (long long)n);
    float *x = rand_vec(n, -3, 3), *out = out_new(1);
    double ref = 0.5;
    for (int64_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
    out[0] = 0.5f; /* it accumulates */
    be->sumsq(be->ctx, out, x, n);
    /* a double sum rounded once to fp32, then one fp32 add */
    check_close_(__FILE__, line, what, out, &ref, 1, 2e-7);
    out_free(what, out, 1);
    free(x);
}

/* copy_out, copy, zero: raw bytes, nothing outside the range touched. */
static void case_memory(int line, int64_t n) {
    char what[128];
    snprintf(what, sizeof what, "copy_out+copy+zero(n=%lld)", (long long)n);
    float *src = rand_vec(n, -1, 1), *a = out_new(n), *b = out_new(n);
    be->copy(be->ctx, a, src, (size_t)n * sizeof(float));
    be->copy_out(be->ctx, b, a, (size_t)n * sizeof(float));
    CHECK(same_bits(b, src, n), "%s: copies differ (case at line %d)", what, line);
    be->zero(be->ctx, a, (size_t)n * sizeof(float));
    int zero = 1;
    for (int64_t i = 0; i < n; i++) zero &= a[i] == 0.0f;
    CHECK(zero, "%s: zero left a nonzero (case at line %d)", what, line);
    printf("%s %s\n", zero && same_bits(b, src, n) ? "ok  " : "FAIL", what);
    out_free(what, a, n), out_free(what, b, n);
    free(src);
}

#define RUN(case_fn, ...) case_fn(__LINE__, __VA_ARGS__)

int main(void) {
    be = mg_backend_cpu();
    omp_set_num_threads(THREADS);
    RUN(case_memory, 1001);
    RUN(case_linear_backward, 7, 33, 19, 1.0f);
    RUN(case_linear_backward, 13, 5, 31, 10.0f);
    RUN(case_lora, 7, 33, 4, 19, 0, 0.0f, 1.0f);    /* evaluation: no dropout, xd = x */
    RUN(case_lora, 9, 21, 3, 13, 7, 0.0f, 3.0f);    /* a column slice of a wider y */
    RUN(case_lora, 11, 27, 5, 17, 2 * 17, 0.1f, 1.0f); /* training: the project's p = 0.1 */
    RUN(case_lora, 5, 65, 8, 9, 1, 0.5f, 0.3f);
    RUN(case_lora, 3, 20, 70, 4, 0, 0.1f, 1.0f);    /* a rank past one block of accumulators (64) */
    RUN(case_lora_dropout, 64, 257, 0.1f);
    RUN(case_lora_dropout, 33, 129, 0.5f);
    RUN(case_lora_dropout, 7, 13, 0.0f); /* p = 0: u = x */
    RUN(case_gelu_backward, 1023, 1.0f);
    RUN(case_gelu_backward, 999, 6.0f); /* the tails, where tanh saturates */
    RUN(case_gelu_backward, 257, 0.01f);
    RUN(case_geglu_backward, 7, 45, 1.0f);
    RUN(case_geglu_backward, 3, 17, 4.0f);
    /* LayerNorm: C-term fp32 sums (a few ulps, 1e-5); with a mean 15x the spread the recomputed
     * x - mean carries mean's rounding (~1 ulp of 30), so ~15x more error: 1e-4 */
    RUN(case_layernorm_backward, 9, 37, 0.0f, 1.0f, 1e-5);
    RUN(case_layernorm_backward, 5, 251, 0.0f, 0.01f, 1e-5);
    RUN(case_layernorm_backward, 3, 65, 30.0f, 2.0f, 1e-4);
    RUN(case_rmsnorm_backward, 11, 37, 1.0f);
    RUN(case_rmsnorm_backward, 3, 259, 100.0f);
    RUN(case_rmsnorm_backward, 5, 63, 0.003f); /* mean(x²) ~ 3e-6, the same order as eps */
    RUN(case_qk_norm_rope_backward, 2, 5, 4, 2, 18, 1, 10000, 1, 1.0f);
    RUN(case_qk_norm_rope_backward, 1, 7, 3, 1, 34, 1, 1e6f, 8, 3.0f);
    RUN(case_qk_norm_rope_backward, 2, 3, 2, 1, 10, 1, 10000, 1, 0.05f);
    RUN(case_qk_norm_rope_backward, 2, 3, 3, 3, 9, 0, 0, 0, 1.0f); /* SigLIP: plain split, odd D */
    RUN(case_attention_backward, 1, 11, 3, 3, 9, 0, 0, 0, 0, 1.0f);  /* SigLIP: no mask */
    RUN(case_attention_backward, 2, 13, 6, 2, 10, 1, 0, 0, 0, 1.0f); /* GQA, causal */
    RUN(case_attention_backward, 2, 13, 6, 2, 10, 1, 0, 0, 0, 3.0f); /* sharper softmax */
    RUN(case_attention_backward, 2, 13, 4, 2, 10, 1, 0, 1, 1, 1.0f); /* causal + right padding + images */
    RUN(case_attention_backward, 3, 15, 4, 1, 6, 1, 3, 1, 1, 2.0f);  /* window 3 + images + padding */
    RUN(case_attention_backward, 3, 11, 2, 1, 5, 1, 4, 2, 0, 1.0f);  /* left padding: unseeing queries */
    RUN(case_attention_backward, 2, 12, 4, 4, 7, 0, 0, 2, 1, 0.3f);  /* bidirectional + padding + images */
    RUN(case_avgpool_backward, 2, 9, 3, 11);
    RUN(case_avgpool_backward, 1, 10, 5, 7);
    RUN(case_avgpool_backward, 1, 10, 3, 5); /* G % k != 0: the last row and column get nothing */
    RUN(case_gather_scatter_backward, 19, 7, 13);
    RUN(case_gather_scatter_backward, 11, 11, 3); /* every row */
    RUN(case_cross_entropy, 7, 1001, 1.0f, 0);
    RUN(case_cross_entropy, 5, 333, 20.0f, 0); /* peaked softmax */
    RUN(case_cross_entropy, 4, 777, 3.0f, 1);  /* dlogits over logits */
    RUN(case_adamw, 1001, 1.0f, 1e-2f, 0.1f, 0.5f, 0);
    RUN(case_adamw, 333, 0.03f, 3e-4f, 0.0f, 1.0f, 1); /* LoRA A's init size, a typical lr */
    RUN(case_sumsq, 100003);
    RUN(case_sumsq, 0);
    return test_finish();
}
