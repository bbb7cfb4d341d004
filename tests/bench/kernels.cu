// The C side of tests/bench/bench_kernels_torch.py: medgem's production CUDA ops (kernels/cuda/ops.h,
// the very entries the model calls) behind a flat C API that Python loads with ctypes. Torch
// allocates the tensors and medgem computes on them in the same process, on its own stream, which
// the script wraps as a torch.cuda.ExternalStream: both sides are validated on the same inputs and
// timed with the same CUDA events and L2 flush. No kernel is copied here; a faster version is
// promoted in kernels/cuda/ and measured through this file unchanged.
//   make build/bench/libmgbench_kernels.so
// Every entry returns an mg_status (0 = MG_OK); mgb_error() gives the message of the last failure.
#include <stdlib.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"

const char *mgb_error(void) { return mg_last_error(); }

// A context on device `device` (the device torch uses), or NULL with the reason in mgb_error().
mg_cuda_ctx *mgb_open(int device) {
    mg_cuda_ctx *ctx = (mg_cuda_ctx *)calloc(1, sizeof *ctx);
    if (!ctx) {
        mg_fail(MG_ERR_OOM, NULL, "CUDA context struct");
        return NULL;
    }
    if (mg_cuda_ctx_create(ctx, device) != MG_OK) {
        free(ctx);
        return NULL;
    }
    return ctx;
}

void mgb_close(mg_cuda_ctx *ctx) {
    if (!ctx) return;
    mg_cuda_ctx_destroy(ctx);
    free(ctx);
}

// The cudaStream_t every op runs on, for torch.cuda.ExternalStream.
void *mgb_stream(mg_cuda_ctx *ctx) { return ctx->stream; }
const char *mgb_device_name(mg_cuda_ctx *ctx) { return ctx->name; }

// Waits for the stream; reports faults inside kernels that already ran.
int mgb_sync(mg_cuda_ctx *ctx) { return mg_cuda_sync(ctx); }

// y[M,N] = x[M,K] · w[N,K]ᵀ (+ b[N]); b may be NULL. All bf16.
int mgb_linear(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K, int N) {
    return mg_cuda_linear_forward(ctx, y, x, w, b, M, K, N);
}

// y[M,N] = gelu_tanh(x[M,K] · w[N,K]ᵀ (+ b[N])), the GELU in the GEMM's epilogue; b may be NULL.
int mgb_linear_gelu(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K, int N) {
    return mg_cuda_linear_gelu_forward(ctx, y, x, w, b, M, K, N);
}

// y[M,N] = r[M,N] + x[M,K] · w[N,K]ᵀ (+ b[N]) in one GEMM (beta = 1, C = r); y may alias r.
int mgb_linear_residual(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b, const void *r,
                        int64_t M, int K, int N) {
    return mg_cuda_linear_residual_forward(ctx, y, x, w, b, r, M, K, N);
}

// Gemma RMSNorm y[M,C] = x * rsqrt(mean(x²) + eps) * (1 + w[C]).
int mgb_rmsnorm(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, int64_t M, int C, float eps) {
    return mg_cuda_rmsnorm_forward(ctx, y, x, w, M, C, eps);
}

// y[M,C] = (x - mean) / sqrt(var + eps) * w[C] + b[C].
int mgb_layernorm(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int C,
                  float eps) {
    return mg_cuda_layernorm_forward(ctx, y, x, w, b, M, C, eps);
}

// y[M,F] = bf16(gelu_tanh(gu[:, :F])) * gu[:, F:] from gu[M,2F].
int mgb_geglu(mg_cuda_ctx *ctx, void *y, const void *gu, int64_t M, int F) {
    return mg_cuda_geglu_forward(ctx, y, gu, M, F);
}

// y[n] = a[n] + b[n] (the residual add).
int mgb_add(mg_cuda_ctx *ctx, void *y, const void *a, const void *b, int64_t n) { return mg_cuda_add_forward(ctx, y, a, b, n); }

// y[n] = gelu_tanh(x[n]).
int mgb_gelu(mg_cuda_ctx *ctx, void *y, const void *x, int64_t n) { return mg_cuda_gelu_forward(ctx, y, x, n); }

// Backward entries (bench_kernels_bwd_torch.py): each ACCUMULATES (`+=`) into its bf16 gradient output.
// dx[M,K] += dy[M,N] · w[N,K] (a frozen linear's input gradient).
int mgb_linear_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *w, int64_t M, int K, int N) {
    return mg_cuda_linear_backward(ctx, dx, dy, w, M, K, N);
}

// Gemma RMSNorm's input gradient dx[M,C] += ... (w frozen, rstd recomputed from x).
int mgb_rmsnorm_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *x, const void *w, int64_t M, int C,
                         float eps) {
    return mg_cuda_rmsnorm_backward(ctx, dx, dy, x, w, M, C, eps);
}

// LayerNorm's input gradient dx[M,C] += ... (w, b frozen; mean and variance recomputed from x).
int mgb_layernorm_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *x, const void *w, int64_t M,
                           int C, float eps) {
    return mg_cuda_layernorm_backward(ctx, dx, dy, x, w, M, C, eps);
}

// dgu[M,2F] += the gradient of bf16(gelu_tanh(gate)) * up given dy[M,F] and gu = gate|up.
int mgb_geglu_backward(mg_cuda_ctx *ctx, void *dgu, const void *dy, const void *gu, int64_t M, int F) {
    return mg_cuda_geglu_backward(ctx, dgu, dy, gu, M, F);
}

// dx[n] += dy[n] · gelu_tanh'(x[n]).
int mgb_gelu_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *x, int64_t n) {
    return mg_cuda_gelu_backward(ctx, dx, dy, x, n);
}

// The LoRA branch (engine/backend.h mg_lora_args; bench_lora_torch.py): forward u[M,r] =
// bf16(dropout(x)·Aᵀ), y[:, :N] += scale·u·Bᵀ (y's rows ldy apart); backward du (fp32 scratch),
// dB += , dA += (fp32), dx += (bf16; may be NULL).
static mg_lora_args lora_args(int64_t M, int K, int r, int N, int64_t ldy, float scale, float p, uint64_t seed) {
    mg_lora_args a = {};
    a.M = M, a.K = K, a.r = r, a.N = N, a.ldy = ldy, a.scale = scale, a.dropout = p, a.seed = seed;
    return a;
}

int mgb_lora_forward(mg_cuda_ctx *ctx, void *y, void *u, const void *x, const void *A, const void *B, int64_t M, int K,
                     int r, int N, int64_t ldy, float scale, float p, uint64_t seed) {
    const mg_lora_args a = lora_args(M, K, r, N, ldy, scale, p, seed);
    return mg_cuda_lora_forward(ctx, y, u, x, A, B, &a);
}

int mgb_lora_backward(mg_cuda_ctx *ctx, void *dx, float *dA, float *dB, float *du, const void *dy, const void *x,
                      const void *u, const void *A, const void *B, int64_t M, int K, int r, int N, int64_t ldy,
                      float scale, float p, uint64_t seed) {
    const mg_lora_args a = lora_args(M, K, r, N, ldy, scale, p, seed);
    return mg_cuda_lora_backward(ctx, dx, dA, dB, du, dy, x, u, A, B, &a);
}
}
