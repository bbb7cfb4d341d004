// Average pooling of the SigLIP patch grid for the projector (AvgPool2d(kernel k, stride k)):
//   y[b, i*(G/k) + j, c] = mean over a,b' < k of x[b, (k*i + a)*G + k*j + b', c]
//   x[B, G*G, C] with patches row-major on a G×G grid, y[B, (G/k)², C]. The k² bf16 values are
//   summed in fp32, divided by k² and rounded once. Written with `=`.
// Backward: dx[b, patch, c] += dy[b, token of the patch, c] / k²  (`+=`, one rounding; every patch
// belongs to exactly one token, so one thread per dx element and no races).
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// One thread per output element; consecutive threads take consecutive features c (coalesced).
static __global__ void avgpool_forward_kernel(bf16 *y, const bf16 *x, int64_t B, int G, int k, int C) {
    const int Go = G / k;
    const int64_t n = B * Go * Go * C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        const int64_t t = e / C, b = t / ((int64_t)Go * Go);
        const int tok = (int)(t % ((int64_t)Go * Go)), i = tok / Go, j = tok % Go;
        float sum = 0.0f;
        for (int a = 0; a < k; a++)
            for (int bb = 0; bb < k; bb++) {
                const int64_t patch = (int64_t)(k * i + a) * G + (k * j + bb);
                sum += ld_bf16(x + (b * G * G + patch) * C + c);
            }
        y[e] = to_bf16(sum / (float)(k * k));
    }
}

// One thread per dx element; consecutive threads take consecutive features c (coalesced).
static __global__ void avgpool_backward_kernel(bf16 *dx, const bf16 *dy, int64_t B, int G, int k, int C) {
    const int Go = G / k;
    const int64_t n = B * G * G * C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        const int64_t t = e / C, b = t / ((int64_t)G * G);
        const int patch = (int)(t % ((int64_t)G * G)), tok = (patch / G / k) * Go + (patch % G) / k;
        const float g = ld_bf16(dy + (b * Go * Go + tok) * C + c);
        dx[e] = to_bf16(ld_bf16(dx + e) + g / (float)(k * k));
    }
}

static mg_status avgpool_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, int64_t B, int G, int k, int C) {
    const int threads = 256;
    const int64_t n = B * (G / k) * (G / k) * (int64_t)C;
    avgpool_forward_kernel<<<grid_stride_blocks(ctx, n, threads), threads, 0, ctx->stream>>>(y, x, B, G, k, C);
    MG_CUDA_LAUNCH_CHECK(avgpool_forward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_avgpool_forward(mg_cuda_ctx *ctx, void *y, const void *x, int64_t B, int G, int k,
                                             int C) {
    if (B <= 0 || G <= 0 || k <= 0 || C <= 0 || G % k != 0)
        return mg_fail(MG_ERR_SHAPE, "the patch grid side must be a multiple of the pooling kernel (64 = 16·4)",
                       "avgpool: B=%lld G=%d k=%d C=%d", (long long)B, G, k, C);
    return avgpool_forward_launch(ctx, (bf16 *)y, (const bf16 *)x, B, G, k, C);
}

static mg_status avgpool_backward_launch(mg_cuda_ctx *ctx, bf16 *dx, const bf16 *dy, int64_t B, int G, int k, int C) {
    const int threads = 256;
    const int64_t n = B * G * G * (int64_t)C;
    avgpool_backward_kernel<<<grid_stride_blocks(ctx, n, threads), threads, 0, ctx->stream>>>(dx, dy, B, G, k, C);
    MG_CUDA_LAUNCH_CHECK(avgpool_backward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_avgpool_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, int64_t B, int G, int k,
                                              int C) {
    if (B <= 0 || G <= 0 || k <= 0 || C <= 0 || G % k != 0)
        return mg_fail(MG_ERR_SHAPE, "the patch grid side must be a multiple of the pooling kernel (64 = 16·4)",
                       "avgpool_backward: B=%lld G=%d k=%d C=%d", (long long)B, G, k, C);
    if (!dx || !dy) return mg_fail(MG_ERR_ARG, NULL, "avgpool_backward: dx and dy are required");
    return avgpool_backward_launch(ctx, (bf16 *)dx, (const bf16 *)dy, B, G, k, C);
}
