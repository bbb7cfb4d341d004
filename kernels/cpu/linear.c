/* linear:          y[M,N] = x[M,K] · w[N,K]ᵀ + b[N]   (b optional; nn.Linear, weight stored [out, in])
 * linear_gelu:     y[M,N] = gelu_tanh(x[M,K] · w[N,K]ᵀ + b[N])   (SigLIP fc1 and its activation)
 * linear_residual: y[M,N] = r[M,N] + x[M,K] · w[N,K]ᵀ + b[N]   (SigLIP out_proj / fc2 and the residual add)
 * linear_backward: dx[M,K] += dy[M,N] · w[N,K]   (a frozen linear's input gradient; `+=`, no weight gradient)
 * The forwards write with `=`. Accumulates each dot product in fp32, k (n in backward) ascending;
 * everything stays fp32 here (the CUDA twin rounds once, at the end). The LoRA branch on top of a
 * linear is kernels/cpu/lora.c.
 * Every GEMM of the model goes through here: q/k/v/o, the MLPs, the patch embedding (after
 * im2col), the projector (its [Cv, C] weight transposed at load) and the tied head. */
#include "kernels/cpu/ops.h"

/* y = (r +) x·wᵀ (+ b). Each output element reads only r at its own index before writing it, so
 * y may alias r. */
static void linear_rows(float *y, const float *x, const float *w, const float *b, const float *r, int64_t M, int K,
                        int N) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            const float *xm = x + m * K, *wn = w + (int64_t)n * K;
            float acc = b ? b[n] : 0.0f;  /* bias first, then x·w */
            for (int k = 0; k < K; k++) acc += xm[k] * wn[k];
            y[m * N + n] = r ? r[m * N + n] + acc : acc;  /* the linear's output, then the add */
        }
    }
}

void mg_cpu_linear_forward(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K,
                           int N) {
    (void)ctx;
    linear_rows(y, x, w, b, NULL, M, K, N);
}

/* The linear, then the GELU over its fp32 output in place (gelu.c). */
void mg_cpu_linear_gelu_forward(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K,
                                int N) {
    mg_cpu_linear_forward(ctx, y, x, w, b, M, K, N);
    mg_cpu_gelu_forward(ctx, y, y, M * N);
}

void mg_cpu_linear_residual_forward(void *ctx, void *y, const void *x, const void *w, const void *b, const void *r,
                                    int64_t M, int K, int N) {
    (void)ctx;
    linear_rows(y, x, w, b, r, M, K, N);
}

void mg_cpu_linear_backward(void *ctx, void *dx_, const void *dy_, const void *w_, int64_t M, int K, int N) {
    (void)ctx;
    float *dx = dx_;
    const float *dy = dy_, *w = w_;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        for (int k = 0; k < K; k++) {
            /* dx[m,k] += Σ_n dy[m,n] w[n,k]: column k of w, read down its rows */
            float acc = 0.0f;
            for (int n = 0; n < N; n++) acc += dy[m * N + n] * w[(int64_t)n * K + k];
            dx[m * K + k] += acc;
        }
    }
}
