// LayerNorm over the last dim (SigLIP layer_norm1/2 and post_layernorm), fp32 inside:
//   mean = Σ x / C,  var = Σ (x - mean)² / C  (biased),  y = (x - mean) / sqrt(var + eps) * w + b
//   x, y [M, C]; w, b [C]. Written with `=`, rounded to bf16 once; y may alias x.
#include <limits.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// One block per row; two passes for the mean and the variance (the row stays in L1/L2).
// Each element is read and written by the same thread, so y may alias x.
static __global__ void layernorm_forward_kernel(bf16 *y, const bf16 *x, const bf16 *w, const bf16 *b, int C,
                                                float eps) {
    __shared__ float scratch[32];
    const bf16 *xr = x + (int64_t)blockIdx.x * C;
    bf16 *yr = y + (int64_t)blockIdx.x * C;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) sum += ld_bf16(xr + c);
    const float mean = block_sum(sum, scratch) / (float)C;
    float sq = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float d = ld_bf16(xr + c) - mean;
        sq += d * d;
    }
    const float rstd = rsqrtf(block_sum(sq, scratch) / (float)C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        yr[c] = to_bf16((ld_bf16(xr + c) - mean) * rstd * ld_bf16(w + c) + ld_bf16(b + c));
}

static mg_status layernorm_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *b,
                                          int64_t M, int C, float eps) {
    const int threads = row_block_threads(C);  // a multiple of 32, as block_sum needs
    layernorm_forward_kernel<<<(unsigned)M, threads, 0, ctx->stream>>>(y, x, w, b, C, eps);
    MG_CUDA_LAUNCH_CHECK(layernorm_forward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_layernorm_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b,
                                               int64_t M, int C, float eps) {
    if (M <= 0 || M > INT_MAX || C <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "layernorm: M=%lld C=%d (need 0 < M <= 2^31-1, C > 0)", (long long)M, C);
    if (!w || !b) return mg_fail(MG_ERR_ARG, NULL, "layernorm: weight and bias are required");
    return layernorm_forward_launch(ctx, (bf16 *)y, (const bf16 *)x, (const bf16 *)w, (const bf16 *)b, M, C, eps);
}
