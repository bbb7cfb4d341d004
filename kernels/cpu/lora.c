/* One LoRA branch on top of a frozen linear (engine/backend.h mg_lora_args; PEFT lora/layer.py
 * Linear.forward; spec/model.md §8.1). x[M,K], A[r,K], B[N,r], y and dy rows ldy apart:
 * forward:
 *   xd = dropout(x): x[m,k] / (1-p) where mg_dropout_keep(seed, m*K + k, p), else 0   (p > 0 only;
 *        never stored: each element is formed where it is read)
 *   u  = xd · Aᵀ                         (u[M,r], `=`)
 *   y[:, :N] += scale · u · Bᵀ            (`+=`; columns >= N of y untouched)
 * backward (the gradients of L = Σ dy ⊙ y through the branch; xd formed again from x and the seed):
 *   dB += scale · dyᵀ · u                 (dB[N,r] fp32, `+=`)
 *   du  = scale · dy · B                  (du[M,r] fp32 scratch, `=`)
 *   dA += duᵀ · xd                        (dA[r,K] fp32, `+=`)
 *   dx += mask ⊙ (du · A) / (1-p)         (dx[M,K], `+=`; the dropout's own mask, recomputed)
 * Every sum in fp32, its index ascending, one accumulator per output element: the loops that form
 * xd once for JB outputs (u's r, dA's r) keep JB accumulators side by side, which is the same
 * arithmetic as one output at a time. Each output element is owned by one thread, so results do
 * not depend on the thread count. */
#include "engine/dropout.h"
#include "kernels/cpu/ops.h"

/* Accumulators held at once: rank columns (JB) by in-features (KB, dA only). */
enum { JB = 64, KB = 16 };

/* xd[m,k] from x[m,k]: dropped 0, kept x / (1-p); x itself without dropout */
static inline float dropped(const mg_lora_args *a, float keep_scale, int64_t i, float x) {
    if (a->dropout <= 0.0f) return x;
    return mg_dropout_keep(a->seed, i, a->dropout) ? x * keep_scale : 0.0f;
}

void mg_cpu_lora_forward(void *ctx, void *y_, void *u_, const void *x_, const void *A_, const void *B_,
                         const mg_lora_args *a) {
    (void)ctx;
    float *y = y_, *u = u_;
    const float *x = x_, *A = A_, *Bw = B_;
    const int64_t M = a->M;
    const int K = a->K, r = a->r, N = a->N;
    const float keep_scale = a->dropout > 0.0f ? 1.0f / (1.0f - a->dropout) : 1.0f;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        /* u[m,j] = xd[m,:] · A[j,:], JB values of j at a time over one pass of the row */
        const float *xm = x + m * K;
        float *um = u + m * r;
        for (int j0 = 0; j0 < r; j0 += JB) {
            const int nj = r - j0 < JB ? r - j0 : JB;
            float acc[JB] = { 0 };
            for (int k = 0; k < K; k++) {
                const float xv = dropped(a, keep_scale, m * K + k, xm[k]);
                for (int j = 0; j < nj; j++) acc[j] += xv * A[(int64_t)(j0 + j) * K + k];
            }
            for (int j = 0; j < nj; j++) um[j0 + j] = acc[j];
        }
        /* y[m,n] += scale · (u[m,:] · B[n,:]) */
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int j = 0; j < r; j++) acc += um[j] * Bw[(int64_t)n * r + j];
            y[m * a->ldy + n] += a->scale * acc;
        }
    }
}

void mg_cpu_lora_backward(void *ctx, void *dx_, float *dA, float *dB, float *du, const void *dy_, const void *x_,
                          const void *u_, const void *A_, const void *B_, const mg_lora_args *a) {
    (void)ctx;
    float *dx = dx_;
    const float *dy = dy_, *x = x_, *A = A_, *Bw = B_, *u = u_;
    const int64_t M = a->M;
    const int K = a->K, r = a->r, N = a->N;
    const float p = a->dropout, keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    /* dB[n,j] += scale · Σ_m dy[m,n] u[m,j] */
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++) {
        for (int j = 0; j < r; j++) {
            float acc = 0.0f;
            for (int64_t m = 0; m < M; m++) acc += dy[m * a->ldy + n] * u[m * r + j];
            dB[(int64_t)n * r + j] += a->scale * acc;
        }
    }
    /* du[m,j] = scale · Σ_n dy[m,n] B[n,j] */
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        for (int j = 0; j < r; j++) {
            float acc = 0.0f;
            for (int n = 0; n < N; n++) acc += dy[m * a->ldy + n] * Bw[(int64_t)n * r + j];
            du[m * r + j] = a->scale * acc;
        }
    }
    /* dA[j,k] += Σ_m du[m,j] xd[m,k]: a block of KB columns by JB ranks at a time, each xd element
     * formed once per block from a stretch of x's row */
#pragma omp parallel for schedule(static)
    for (int k0 = 0; k0 < K; k0 += KB) {
        const int nk = K - k0 < KB ? K - k0 : KB;
        for (int j0 = 0; j0 < r; j0 += JB) {
            const int nj = r - j0 < JB ? r - j0 : JB;
            float acc[KB][JB] = { { 0 } };
            for (int64_t m = 0; m < M; m++) {
                const float *dum = du + m * r + j0;
                for (int c = 0; c < nk; c++) {
                    const float xv = dropped(a, keep_scale, m * K + k0 + c, x[m * K + k0 + c]);
                    for (int j = 0; j < nj; j++) acc[c][j] += dum[j] * xv;
                }
            }
            for (int c = 0; c < nk; c++)
                for (int j = 0; j < nj; j++) dA[(int64_t)(j0 + j) * K + k0 + c] += acc[c][j];
        }
    }
    /* dx[m,k] += (du[m,:] · A[:,k]) / (1-p) where the forward kept x[m,k], else nothing */
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        for (int k = 0; k < K; k++) {
            if (p > 0.0f && !mg_dropout_keep(a->seed, m * K + k, p)) continue;
            float acc = 0.0f;
            for (int j = 0; j < r; j++) acc += du[m * r + j] * A[(int64_t)j * K + k];
            dx[m * K + k] += acc * keep_scale;
        }
    }
}
