// im2col for the SigLIP patch embedding (Conv2d 3→C, kernel p, stride p, no padding, as a GEMM):
//   cols[B*P, 3*p*p] = pixels[b, ch, r*p + kh, c*p + kw]
//   with P = (S/p)², row b*P + r*(S/p) + c (patch row r from the top, column c from the left) and
//   column ch*p*p + kh*p + kw (the order of the conv weight viewed [C, 3*p*p]).
// pixels are bf16: the processor's fp32 values rounded once when uploaded, which is what
// pixel_values.to(bf16) does before the conv. A pure gather, written with `=`.
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// One thread per element of cols, grid-stride; consecutive threads write consecutive columns.
static __global__ void im2col_forward_kernel(bf16 *cols, const bf16 *pixels, int64_t B, int S, int p) {
    const int grid = S / p, pp = p * p, row_len = 3 * pp;
    const int64_t P = (int64_t)grid * grid, n = B * P * row_len;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = e / row_len;
        const int col = (int)(e % row_len);
        const int64_t b = row / P;
        const int patch = (int)(row % P), r = patch / grid, c = patch % grid;
        const int ch = col / pp, kh = (col % pp) / p, kw = col % p;
        const int64_t src = ((b * 3 + ch) * S + (int64_t)r * p + kh) * S + (int64_t)c * p + kw;
        cols[e] = pixels[src];
    }
}

static mg_status im2col_forward_launch(mg_cuda_ctx *ctx, bf16 *cols, const bf16 *pixels, int64_t B, int S, int p) {
    const int threads = 256;
    const int64_t n = B * (int64_t)(S / p) * (S / p) * 3 * p * p;
    im2col_forward_kernel<<<grid_stride_blocks(ctx, n, threads), threads, 0, ctx->stream>>>(cols, pixels, B, S, p);
    MG_CUDA_LAUNCH_CHECK(im2col_forward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_im2col_forward(mg_cuda_ctx *ctx, void *cols, const void *pixels, int64_t B, int S,
                                            int p) {
    if (B <= 0 || p <= 0 || S <= 0 || S % p != 0)
        return mg_fail(MG_ERR_SHAPE, "the image side must be a multiple of the patch size (896 = 64·14)",
                       "im2col: B=%lld S=%d p=%d", (long long)B, S, p);
    return im2col_forward_launch(ctx, (bf16 *)cols, (const bf16 *)pixels, B, S, p);
}
