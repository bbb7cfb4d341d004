/* linear:      y[M,N] = x[M,K] · w[N,K]ᵀ + b[N]   (b optional; nn.Linear, weight stored [out, in])
 * linear_gelu: y[M,N] = gelu_tanh(x[M,K] · w[N,K]ᵀ + b[N])   (SigLIP fc1 and its activation)
 * Written with `=`. Accumulates each dot product in fp32, k ascending; everything stays fp32 here
 * (the CUDA twin rounds once, at the end).
 * Every GEMM of the model goes through here: q/k/v/o, the MLPs, the patch embedding (after
 * im2col), the projector (its [Cv, C] weight transposed at load) and the tied head. */
#include "kernels/cpu/ops.h"

void mg_cpu_linear_forward(void *ctx, void *y_, const void *x_, const void *w_, const void *b_, int64_t M, int K,
                           int N) {
    (void)ctx;
    float *y = y_;
    const float *x = x_, *w = w_, *b = b_;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            const float *xm = x + m * K, *wn = w + (int64_t)n * K;
            float acc = b ? b[n] : 0.0f;  /* bias first, then x·w */
            for (int k = 0; k < K; k++) acc += xm[k] * wn[k];
            y[m * N + n] = acc;
        }
    }
}

/* The linear, then the GELU over its fp32 output in place (gelu.c). */
void mg_cpu_linear_gelu_forward(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K,
                                int N) {
    mg_cpu_linear_forward(ctx, y, x, w, b, M, K, N);
    mg_cpu_gelu_forward(ctx, y, y, M * N);
}
