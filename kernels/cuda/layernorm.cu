// LayerNorm over the last dim (SigLIP layer_norm1/2 and post_layernorm), fp32 inside:
//   mean = Σ x / C,  var = Σ (x - mean)² / C  (biased),  y = (x - mean) / sqrt(var + eps) * w + b
//   x, y [M, C]; w, b [C]. Written with `=`, rounded to bf16 once; y may alias x.
// Two kernels, same formulas:
// - C a multiple of 8, at most 2048, and x, y, w, b 16-byte aligned (SigLIP's C = 1152): one warp
//   per row, the row read once into registers with 16-byte loads, mean and variance (two passes)
//   from the registers, written once: 2·M·C·2 bytes of traffic, the least there is;
// - otherwise one block per row, each pass re-reading the row (from L1/L2).
// Backward (the input gradient only; w and b are frozen), mean and rstd recomputed from x:
//   xhat = (x - mean) · rstd,  g = dy · w
//   dx[M,C] += rstd · (g - mean(g) - xhat · mean(g · xhat))      (`+=`, one rounding)
// One block per row, three passes over the row (mean; variance with Σg and Σg·(x - mean); write),
// 16-byte accesses when C is a multiple of 8 and the pointers are aligned.
#include <limits.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

enum { LN_WARPS = 8, LN_MAX_VECS = 8 };  // rows (warps) per block; 8-element vectors per lane, C <= 32*8*8

// V = ceil(C / 8 / 32) vectors per lane; vector i of a lane is row vector lane + 32 i (coalesced).
// A row's elements are read and written by the same lane, so y may alias x.
template <int V>
static __global__ void __launch_bounds__(LN_WARPS * 32)
    layernorm_forward_warp_kernel(bf16 *y, const bf16 *x, const bf16 *w, const bf16 *b, int64_t M, int C, float eps) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (row >= M) return;  // the whole warp leaves together
    const int nv = C / 8;
    const uint4 *xr = reinterpret_cast<const uint4 *>(x + row * C);
    float v[V][8];
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) {
        if (lane + 32 * i < nv) {
            unpack8(xr[lane + 32 * i], v[i]);
#pragma unroll
            for (int j = 0; j < 8; j++) sum += v[i][j];
        }
    }
    const float mean = warp_sum(sum) / (float)C;
    float sq = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) {
        if (lane + 32 * i < nv) {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float d = v[i][j] - mean;
                sq += d * d;
            }
        }
    }
    const float rstd = rsqrtf(warp_sum(sq) / (float)C + eps);
    uint4 *yr = reinterpret_cast<uint4 *>(y + row * C);
#pragma unroll
    for (int i = 0; i < V; i++) {
        const int c8 = lane + 32 * i;
        if (c8 < nv) {
            float fw[8], fb[8];
            unpack8(reinterpret_cast<const uint4 *>(w)[c8], fw);
            unpack8(reinterpret_cast<const uint4 *>(b)[c8], fb);
#pragma unroll
            for (int j = 0; j < 8; j++) v[i][j] = (v[i][j] - mean) * rstd * fw[j] + fb[j];
            yr[c8] = pack8(v[i]);
        }
    }
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

template <int V>
static void layernorm_warp_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *b, int64_t M,
                                  int C, float eps) {
    const unsigned blocks = (unsigned)((M + LN_WARPS - 1) / LN_WARPS);
    layernorm_forward_warp_kernel<V><<<blocks, LN_WARPS * 32, 0, ctx->stream>>>(y, x, w, b, M, C, eps);
}

static mg_status layernorm_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *b,
                                          int64_t M, int C, float eps) {
    const int vecs_per_lane = (C / 8 + 31) / 32;
    const bool warp_rows = C % 8 == 0 && vecs_per_lane <= LN_MAX_VECS && aligned16(x) && aligned16(y) &&
                           aligned16(w) && aligned16(b);
    if (!warp_rows) {
        const int threads = row_block_threads(C);  // a multiple of 32, as block_sum needs
        layernorm_forward_kernel<<<(unsigned)M, threads, 0, ctx->stream>>>(y, x, w, b, C, eps);
        MG_CUDA_LAUNCH_CHECK(layernorm_forward_kernel);
        return MG_OK;
    }
    switch (vecs_per_lane) {  // the row's registers are sized at compile time
    case 1: layernorm_warp_launch<1>(ctx, y, x, w, b, M, C, eps); break;
    case 2: layernorm_warp_launch<2>(ctx, y, x, w, b, M, C, eps); break;
    case 3: layernorm_warp_launch<3>(ctx, y, x, w, b, M, C, eps); break;
    case 4: layernorm_warp_launch<4>(ctx, y, x, w, b, M, C, eps); break;
    case 5: layernorm_warp_launch<5>(ctx, y, x, w, b, M, C, eps); break;
    case 6: layernorm_warp_launch<6>(ctx, y, x, w, b, M, C, eps); break;
    case 7: layernorm_warp_launch<7>(ctx, y, x, w, b, M, C, eps); break;
    default: layernorm_warp_launch<LN_MAX_VECS>(ctx, y, x, w, b, M, C, eps); break;
    }
    MG_CUDA_LAUNCH_CHECK(layernorm_forward_warp_kernel);
    return MG_OK;
}

// One block per row; VW = 8: C a multiple of 8 and every pointer 16-byte aligned, else VW = 1.
template <int VW>
static __global__ void layernorm_backward_kernel(bf16 *dx, const bf16 *dy, const bf16 *x, const bf16 *w, int C,
                                                 float eps) {
    __shared__ float scratch[32];
    const int64_t base = (int64_t)blockIdx.x * C;
    const int nu = C / VW;
    float sum = 0.0f;
    for (int u = threadIdx.x; u < nu; u += blockDim.x) {
        float fx[VW];
        load_bf16s<VW>(x + base + u * VW, fx);
#pragma unroll
        for (int j = 0; j < VW; j++) sum += fx[j];
    }
    const float mean = block_sum(sum, scratch) / (float)C;
    // Σ(x - mean)², Σg and Σg·(x - mean), g = dy·w
    float sq = 0.0f, sg = 0.0f, sgd = 0.0f;
    for (int u = threadIdx.x; u < nu; u += blockDim.x) {
        float fx[VW], fdy[VW], fw[VW];
        load_bf16s<VW>(x + base + u * VW, fx);
        load_bf16s<VW>(dy + base + u * VW, fdy);
        load_bf16s<VW>(w + u * VW, fw);
#pragma unroll
        for (int j = 0; j < VW; j++) {
            const float d = fx[j] - mean, g = fdy[j] * fw[j];
            sq += d * d;
            sg += g;
            sgd += g * d;
        }
    }
    const float rstd = rsqrtf(block_sum(sq, scratch) / (float)C + eps);
    const float mean_g = block_sum(sg, scratch) / (float)C;
    const float mean_gxhat = block_sum(sgd, scratch) / (float)C * rstd;
    for (int u = threadIdx.x; u < nu; u += blockDim.x) {
        float fx[VW], fdy[VW], fw[VW], fdx[VW];
        load_bf16s<VW>(x + base + u * VW, fx);
        load_bf16s<VW>(dy + base + u * VW, fdy);
        load_bf16s<VW>(w + u * VW, fw);
        load_bf16s<VW>(dx + base + u * VW, fdx);
#pragma unroll
        for (int j = 0; j < VW; j++) {
            const float xhat = (fx[j] - mean) * rstd;
            fdx[j] += rstd * (fdy[j] * fw[j] - mean_g - xhat * mean_gxhat);
        }
        store_bf16s<VW>(dx + base + u * VW, fdx);
    }
}

static mg_status layernorm_backward_launch(mg_cuda_ctx *ctx, bf16 *dx, const bf16 *dy, const bf16 *x, const bf16 *w,
                                           int64_t M, int C, float eps) {
    const bool vec = C % 8 == 0 && aligned16(dx) && aligned16(dy) && aligned16(x) && aligned16(w);
    const int threads = row_block_threads(vec ? C / 8 : C);  // a multiple of 32, as block_sum needs
    if (vec) layernorm_backward_kernel<8><<<(unsigned)M, threads, 0, ctx->stream>>>(dx, dy, x, w, C, eps);
    else layernorm_backward_kernel<1><<<(unsigned)M, threads, 0, ctx->stream>>>(dx, dy, x, w, C, eps);
    MG_CUDA_LAUNCH_CHECK(layernorm_backward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_layernorm_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b,
                                               int64_t M, int C, float eps) {
    if (M <= 0 || M > INT_MAX || C <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "layernorm: M=%lld C=%d (need 0 < M <= 2^31-1, C > 0)", (long long)M, C);
    if (!w || !b) return mg_fail(MG_ERR_ARG, NULL, "layernorm: weight and bias are required");
    return layernorm_forward_launch(ctx, (bf16 *)y, (const bf16 *)x, (const bf16 *)w, (const bf16 *)b, M, C, eps);
}

extern "C" mg_status mg_cuda_layernorm_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *x,
                                                const void *w, int64_t M, int C, float eps) {
    if (M <= 0 || M > INT_MAX || C <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "layernorm_backward: M=%lld C=%d (need 0 < M <= 2^31-1, C > 0)",
                       (long long)M, C);
    if (!dx || !dy || !x || !w) return mg_fail(MG_ERR_ARG, NULL, "layernorm_backward: dx, dy, x and w are required");
    return layernorm_backward_launch(ctx, (bf16 *)dx, (const bf16 *)dy, (const bf16 *)x, (const bf16 *)w, M, C, eps);
}
