// Gemma RMSNorm over the last dim (spec/model.md §5.2), fp32 inside, one rounding to bf16:
//   rmsnorm:     y = (x * rsqrt(mean(x²) + eps)) * (1 + w)                x, y [M, C]; w [C]
//   rmsnorm_add: h = residual + bf16(rmsnorm(x))                           h, residual [M, C]
// rmsnorm_add is Gemma's post_attention_layernorm / post_feedforward_layernorm followed by the
// residual `+`: the norm's output is rounded to bf16 (its dtype in torch) before the bf16 add.
// Used per head for q_norm/k_norm with M = B*T*H rows of C = D. Written with `=`; y may alias x,
// h may alias residual.
// Backward (the input gradient only; w is frozen), rstd recomputed from x:
//   g = dy · (1 + w),  dx[M,C] += rstd · g - x · rstd³ · Σ(g · x) / C      (`+=`, one rounding)
// One block per row, two passes (Σx² with Σg·x; write), 16-byte accesses when C is a multiple of 8
// and the pointers are aligned. rmsnorm_add's gradient is this plus the residual's dh, which the
// caller adds (it is the same tensor).
#include <limits.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// One block per row. residual == NULL: plain rmsnorm. Each element is read and written by the
// same thread, so the output may alias x (plain) or residual (add).
static __global__ void rmsnorm_forward_kernel(bf16 *y, const bf16 *x, const bf16 *w, const bf16 *residual, int C,
                                              float eps) {
    __shared__ float scratch[32];
    const int64_t base = (int64_t)blockIdx.x * C;
    float sq = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float v = ld_bf16(x + base + c);
        sq += v * v;
    }
    const float rstd = rsqrtf(block_sum(sq, scratch) / (float)C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float normed = ld_bf16(x + base + c) * rstd * (1.0f + ld_bf16(w + c));
        y[base + c] = residual ? to_bf16(ld_bf16(residual + base + c) + round_bf16(normed)) : to_bf16(normed);
    }
}

static mg_status rmsnorm_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, const bf16 *w,
                                        const bf16 *residual, int64_t M, int C, float eps) {
    const int threads = row_block_threads(C);  // a multiple of 32, as block_sum needs
    rmsnorm_forward_kernel<<<(unsigned)M, threads, 0, ctx->stream>>>(y, x, w, residual, C, eps);
    MG_CUDA_LAUNCH_CHECK(rmsnorm_forward_kernel);
    return MG_OK;
}

// One block per row; VW = 8: C a multiple of 8 and every pointer 16-byte aligned, else VW = 1.
template <int VW>
static __global__ void rmsnorm_backward_kernel(bf16 *dx, const bf16 *dy, const bf16 *x, const bf16 *w, int C,
                                               float eps) {
    __shared__ float scratch[32];
    const int64_t base = (int64_t)blockIdx.x * C;
    const int nu = C / VW;
    float sq = 0.0f, sgx = 0.0f;
    for (int u = threadIdx.x; u < nu; u += blockDim.x) {
        float fx[VW], fdy[VW], fw[VW];
        load_bf16s<VW>(x + base + u * VW, fx);
        load_bf16s<VW>(dy + base + u * VW, fdy);
        load_bf16s<VW>(w + u * VW, fw);
#pragma unroll
        for (int j = 0; j < VW; j++) {
            sq += fx[j] * fx[j];
            sgx += fdy[j] * (1.0f + fw[j]) * fx[j];
        }
    }
    const float rstd = rsqrtf(block_sum(sq, scratch) / (float)C + eps);
    const float coef = block_sum(sgx, scratch) / (float)C * rstd * rstd * rstd;
    for (int u = threadIdx.x; u < nu; u += blockDim.x) {
        float fx[VW], fdy[VW], fw[VW], fdx[VW];
        load_bf16s<VW>(x + base + u * VW, fx);
        load_bf16s<VW>(dy + base + u * VW, fdy);
        load_bf16s<VW>(w + u * VW, fw);
        load_bf16s<VW>(dx + base + u * VW, fdx);
#pragma unroll
        for (int j = 0; j < VW; j++) fdx[j] += rstd * fdy[j] * (1.0f + fw[j]) - fx[j] * coef;
        store_bf16s<VW>(dx + base + u * VW, fdx);
    }
}

static mg_status rmsnorm_backward_launch(mg_cuda_ctx *ctx, bf16 *dx, const bf16 *dy, const bf16 *x, const bf16 *w,
                                         int64_t M, int C, float eps) {
    const bool vec = C % 8 == 0 && aligned16(dx) && aligned16(dy) && aligned16(x) && aligned16(w);
    const int threads = row_block_threads(vec ? C / 8 : C);  // a multiple of 32, as block_sum needs
    if (vec) rmsnorm_backward_kernel<8><<<(unsigned)M, threads, 0, ctx->stream>>>(dx, dy, x, w, C, eps);
    else rmsnorm_backward_kernel<1><<<(unsigned)M, threads, 0, ctx->stream>>>(dx, dy, x, w, C, eps);
    MG_CUDA_LAUNCH_CHECK(rmsnorm_backward_kernel);
    return MG_OK;
}

static mg_status rmsnorm_check(const char *op, const void *w, int64_t M, int C) {
    if (M <= 0 || M > INT_MAX || C <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "%s: M=%lld C=%d (need 0 < M <= 2^31-1, C > 0)", op, (long long)M, C);
    if (!w) return mg_fail(MG_ERR_ARG, NULL, "%s: the weight is required", op);
    return MG_OK;
}

extern "C" mg_status mg_cuda_rmsnorm_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, int64_t M, int C,
                                             float eps) {
    MG_TRY(rmsnorm_check("rmsnorm", w, M, C));
    return rmsnorm_forward_launch(ctx, (bf16 *)y, (const bf16 *)x, (const bf16 *)w, NULL, M, C, eps);
}

extern "C" mg_status mg_cuda_rmsnorm_add_forward(mg_cuda_ctx *ctx, void *h, const void *residual, const void *x,
                                                 const void *w, int64_t M, int C, float eps) {
    MG_TRY(rmsnorm_check("rmsnorm_add", w, M, C));
    if (!residual) return mg_fail(MG_ERR_ARG, NULL, "rmsnorm_add: the residual is required");
    return rmsnorm_forward_launch(ctx, (bf16 *)h, (const bf16 *)x, (const bf16 *)w, (const bf16 *)residual, M, C,
                                  eps);
}

extern "C" mg_status mg_cuda_rmsnorm_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *x, const void *w,
                                              int64_t M, int C, float eps) {
    MG_TRY(rmsnorm_check("rmsnorm_backward", w, M, C));
    if (!dx || !dy || !x) return mg_fail(MG_ERR_ARG, NULL, "rmsnorm_backward: dx, dy and x are required");
    return rmsnorm_backward_launch(ctx, (bf16 *)dx, (const bf16 *)dy, (const bf16 *)x, (const bf16 *)w, M, C, eps);
}
