// GELU, tanh approximation (torch gelu(approximate="tanh"), "gelu_pytorch_tanh"), in fp32:
//   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))
//   gelu:  y[n] = gelu_tanh(x[n])                         (SigLIP fc1; y may alias x)
//   geglu: y[M,F] = bf16(gelu_tanh(gu[:, :F])) * gu[:, F:] from gu[M,2F]
//          (Gemma MLP, gate_proj|up_proj fused in one GEMM; torch rounds the activation to bf16
//          before the product, and the product once more)
// Both written with `=`.
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

static __device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static __global__ void gelu_forward_kernel(bf16 *y, const bf16 *x, int64_t n) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x)
        y[e] = to_bf16(gelu_tanh(ld_bf16(x + e)));
}

static __global__ void geglu_forward_kernel(bf16 *y, const bf16 *gu, int64_t M, int F) {
    const int64_t n = M * F;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = e / F, f = e % F;
        const float act = round_bf16(gelu_tanh(ld_bf16(gu + m * 2 * F + f)));
        y[e] = to_bf16(act * ld_bf16(gu + m * 2 * F + F + f));
    }
}

static mg_status gelu_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, int64_t n) {
    const int threads = 256;
    gelu_forward_kernel<<<grid_stride_blocks(ctx, n, threads), threads, 0, ctx->stream>>>(y, x, n);
    MG_CUDA_LAUNCH_CHECK(gelu_forward_kernel);
    return MG_OK;
}

static mg_status geglu_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *gu, int64_t M, int F) {
    const int threads = 256;
    geglu_forward_kernel<<<grid_stride_blocks(ctx, M * F, threads), threads, 0, ctx->stream>>>(y, gu, M, F);
    MG_CUDA_LAUNCH_CHECK(geglu_forward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_gelu_forward(mg_cuda_ctx *ctx, void *y, const void *x, int64_t n) {
    if (n <= 0) return mg_fail(MG_ERR_SHAPE, NULL, "gelu: n=%lld must be positive", (long long)n);
    return gelu_forward_launch(ctx, (bf16 *)y, (const bf16 *)x, n);
}

extern "C" mg_status mg_cuda_geglu_forward(mg_cuda_ctx *ctx, void *y, const void *gu, int64_t M, int F) {
    if (M <= 0 || F <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "geglu: M=%lld F=%d must be positive", (long long)M, F);
    return geglu_forward_launch(ctx, (bf16 *)y, (const bf16 *)gu, M, F);
}
