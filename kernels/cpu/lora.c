/* One LoRA branch on top of a frozen linear (engine/backend.h mg_lora_args; PEFT lora/layer.py
 * Linear.forward; spec/model.md §8.1). x[M,K], A[r,K], B[N,r], y and dy rows ldy apart:
 * forward:
 *   xd = dropout(x): x[m,k] / (1-p) where mg_dropout_keep(seed, m*K + k, p), else 0   (xd[M,K], `=`;
 *        only when p > 0: with p == 0, xd is x itself and is neither read nor written)
 *   u  = xd · Aᵀ                         (u[M,r], `=`)
 *   y[:, :N] += scale · u · Bᵀ            (`+=`; columns >= N of y untouched)
 * backward (the gradients of L = Σ dy ⊙ y through the branch):
 *   dB += scale · dyᵀ · u                 (dB[N,r] fp32, `+=`)
 *   du  = scale · dy · B                  (du[M,r] fp32 scratch, `=`)
 *   dA += duᵀ · xd                        (dA[r,K] fp32, `+=`)
 *   dx += mask ⊙ (du · A) / (1-p)         (dx[M,K], `+=`; the dropout's own mask, recomputed)
 * Every sum in fp32, its index ascending; each output element is owned by one thread, so results
 * do not depend on the thread count. */
#include "engine/dropout.h"
#include "kernels/cpu/ops.h"

void mg_cpu_lora_forward(void *ctx, void *y_, void *u_, void *xd_, const void *x_, const void *A_, const void *B_,
                         const mg_lora_args *a) {
    (void)ctx;
    float *y = y_, *u = u_, *xd = xd_;
    const float *x = x_, *A = A_, *Bw = B_;
    const int64_t M = a->M;
    const int K = a->K, r = a->r, N = a->N;
    const float p = a->dropout, keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        /* xd row: dropped elements 0, kept ones scaled by 1/(1-p); without dropout, x itself */
        const float *xm = x + m * K;
        if (p > 0.0f) {
            float *xdm = xd + m * K;
            for (int k = 0; k < K; k++)
                xdm[k] = mg_dropout_keep(a->seed, m * K + k, p) ? xm[k] * keep_scale : 0.0f;
            xm = xdm;
        }
        /* u[m,j] = xd[m,:] · A[j,:] */
        float *um = u + m * r;
        for (int j = 0; j < r; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) acc += xm[k] * A[(int64_t)j * K + k];
            um[j] = acc;
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
                          const void *xd_, const void *u_, const void *A_, const void *B_, const mg_lora_args *a) {
    (void)ctx;
    float *dx = dx_;
    const float *dy = dy_, *A = A_, *Bw = B_, *u = u_;
    const int64_t M = a->M;
    const int K = a->K, r = a->r, N = a->N;
    const float p = a->dropout, keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    const float *xd = p > 0.0f ? (const float *)xd_ : (const float *)x_; /* the input A saw */
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
    /* dA[j,k] += Σ_m du[m,j] xd[m,k] */
#pragma omp parallel for collapse(2) schedule(static)
    for (int j = 0; j < r; j++) {
        for (int k = 0; k < K; k++) {
            float acc = 0.0f;
            for (int64_t m = 0; m < M; m++) acc += du[m * r + j] * xd[m * K + k];
            dA[(int64_t)j * K + k] += acc;
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
