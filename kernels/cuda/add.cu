// Additions on bf16 tensors, each sum computed in fp32 and rounded once (a bf16 `+` in torch):
//   add:      y[n] = a[n] + b[n]              (residual stream; y may alias a or b)
//   add_rows: x[B,P,C] += pos[P,C]            (SigLIP position embedding, broadcast over B)
// Both are one kernel: y[e] = a[e] + b[e mod period], with period = n for add and P*C for add_rows;
// 16-byte accesses (8 bf16) in a grid-stride loop when the period is a multiple of 8 and the pointers
// are 16-byte aligned, element by element otherwise.
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// vec: period (so n too) a multiple of 8, y, a and b 16-byte aligned. Each element is read and
// written by the same thread, so y may alias a or b.
static __global__ void add_forward_kernel(bf16 *y, const bf16 *a, const bf16 *b, int64_t n, int64_t period,
                                          bool vec) {
    const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    if (vec) {
        const int64_t n8 = n / 8, period8 = period / 8;
        for (int64_t v = tid; v < n8; v += stride) {
            float fa[8], fb[8];
            unpack8(reinterpret_cast<const uint4 *>(a)[v], fa);
            unpack8(reinterpret_cast<const uint4 *>(b)[v < period8 ? v : v % period8], fb);  // add: no division
#pragma unroll
            for (int j = 0; j < 8; j++) fa[j] += fb[j];
            reinterpret_cast<uint4 *>(y)[v] = pack8(fa);
        }
        return;
    }
    for (int64_t e = tid; e < n; e += stride) y[e] = to_bf16(ld_bf16(a + e) + ld_bf16(b + e % period));
}

static mg_status add_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *a, const bf16 *b, int64_t n,
                                    int64_t period) {
    const int threads = 256;
    const bool vec = period % 8 == 0 && aligned16(y) && aligned16(a) && aligned16(b);
    add_forward_kernel<<<grid_stride_blocks(ctx, vec ? n / 8 : n, threads), threads, 0, ctx->stream>>>(y, a, b, n,
                                                                                                      period, vec);
    MG_CUDA_LAUNCH_CHECK(add_forward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_add_forward(mg_cuda_ctx *ctx, void *y, const void *a, const void *b, int64_t n) {
    if (n <= 0) return mg_fail(MG_ERR_SHAPE, NULL, "add: n=%lld must be positive", (long long)n);
    return add_forward_launch(ctx, (bf16 *)y, (const bf16 *)a, (const bf16 *)b, n, n);
}

extern "C" mg_status mg_cuda_add_rows_forward(mg_cuda_ctx *ctx, void *x, const void *pos, int64_t B, int64_t P,
                                              int C) {
    if (B <= 0 || P <= 0 || C <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "add_rows: B=%lld P=%lld C=%d must be positive", (long long)B,
                       (long long)P, C);
    return add_forward_launch(ctx, (bf16 *)x, (const bf16 *)x, (const bf16 *)pos, B * P * C, P * C);
}
