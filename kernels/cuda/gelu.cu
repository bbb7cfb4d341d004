// GELU, tanh approximation (torch gelu(approximate="tanh"), "gelu_pytorch_tanh"), in fp32:
//   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))
//   gelu:  y[n] = gelu_tanh(x[n])                         (y may alias x; the model fuses SigLIP's
//          GELU into fc1's GEMM, linear.cu, and keeps this op for unfused callers and comparisons)
//   geglu: y[M,F] = bf16(gelu_tanh(gu[:, :F])) * gu[:, F:] from gu[M,2F]
//          (Gemma MLP, gate_proj|up_proj fused in one GEMM; torch rounds the activation to bf16
//          before the product, and the product once more)
// Both written with `=`. Backward (fp32 math, `+=` into the bf16 gradient, one rounding):
//   gelu_tanh'(x) = s + 2 x s (1 - s) u',  s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3·0.044715 x²)
//   gelu:  dx[n] += dy[n] · gelu_tanh'(x[n])
//   geglu: dgu[:, :F] += dy · up · gelu_tanh'(gate)
//          dgu[:, F:] += dy · bf16(gelu_tanh(gate))   (the rounded activation the forward multiplied,
//          as torch's autograd sees it; dy·up is not rounded before gelu', one rounding at the end)
// Memory-bound: 16-byte accesses (8 bf16) in a grid-stride loop when the pointers allow it, element
// by element otherwise.
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// 0.5 x (1 + tanh(u)) = x · sigmoid(2u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x³):
// the same function with one exp and one divide instead of tanhf (fewer instructions per element,
// which a 3 TB/s stream needs), and without the cancellation of 1 + tanh(u) for negative x. An
// exp that overflows (x < -10) gives -0 where the true value is below 1e-37.
static __device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    const float u = k * (x + 0.044715f * x * x * x);
    return __fdividef(x, 1.0f + __expf(-2.0f * u));
}

// d gelu_tanh / dx = s + x s (1 - s) 2u' with s = sigmoid(2u) (the derivative of x·sigmoid(2u)). The
// exp overflows to inf for x < -10, giving s = 0 and a derivative of exactly 0 (true value < 1e-35);
// for x > 10, s = 1 and 1 - s = 0. IEEE division: 1 / inf must be 0.
static __device__ __forceinline__ float gelu_tanh_grad(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    const float u = k * (x + 0.044715f * x * x * x), du = k * (1.0f + 3.0f * 0.044715f * x * x);
    const float s = 1.0f / (1.0f + __expf(-2.0f * u));
    return s + 2.0f * x * s * (1.0f - s) * du;
}

// vec: x and y 16-byte aligned; the first n/8*8 elements go 8 at a time, the rest one by one.
static __global__ void gelu_forward_kernel(bf16 *y, const bf16 *x, int64_t n, bool vec) {
    const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t n8 = vec ? n / 8 : 0;
    for (int64_t v = tid; v < n8; v += stride) {
        float f[8];
        unpack8(reinterpret_cast<const uint4 *>(x)[v], f);
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = gelu_tanh(f[j]);
        reinterpret_cast<uint4 *>(y)[v] = pack8(f);
    }
    for (int64_t e = n8 * 8 + tid; e < n; e += stride) y[e] = to_bf16(gelu_tanh(ld_bf16(x + e)));
}

// vec: F a multiple of 8 and gu, y 16-byte aligned, so every gate, up and output vector is aligned.
static __global__ void geglu_forward_kernel(bf16 *y, const bf16 *gu, int64_t M, int F, bool vec) {
    const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    if (vec) {
        const int F8 = F / 8;
        for (int64_t v = tid; v < M * F8; v += stride) {
            const int64_t m = v / F8;
            const int64_t f8 = v - m * F8;
            const uint4 *row = reinterpret_cast<const uint4 *>(gu + m * 2 * F);
            float g[8], u[8];
            unpack8(row[f8], g);
            unpack8(row[F8 + f8], u);
#pragma unroll
            for (int j = 0; j < 8; j++) g[j] = round_bf16(gelu_tanh(g[j])) * u[j];
            reinterpret_cast<uint4 *>(y)[v] = pack8(g);
        }
        return;
    }
    for (int64_t e = tid; e < M * F; e += stride) {
        const int64_t m = e / F, f = e % F;
        const float act = round_bf16(gelu_tanh(ld_bf16(gu + m * 2 * F + f)));
        y[e] = to_bf16(act * ld_bf16(gu + m * 2 * F + F + f));
    }
}

// vec: dx, dy, x 16-byte aligned. Each element is read and written by the same thread.
static __global__ void gelu_backward_kernel(bf16 *dx, const bf16 *dy, const bf16 *x, int64_t n, bool vec) {
    const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t n8 = vec ? n / 8 : 0;
    for (int64_t v = tid; v < n8; v += stride) {
        float fx[8], fg[8], fd[8];
        unpack8(reinterpret_cast<const uint4 *>(x)[v], fx);
        unpack8(reinterpret_cast<const uint4 *>(dy)[v], fg);
        unpack8(reinterpret_cast<const uint4 *>(dx)[v], fd);
#pragma unroll
        for (int j = 0; j < 8; j++) fd[j] += fg[j] * gelu_tanh_grad(fx[j]);
        reinterpret_cast<uint4 *>(dx)[v] = pack8(fd);
    }
    for (int64_t e = n8 * 8 + tid; e < n; e += stride)
        dx[e] = to_bf16(ld_bf16(dx + e) + ld_bf16(dy + e) * gelu_tanh_grad(ld_bf16(x + e)));
}

// vec: F a multiple of 8 and dgu, dy, gu 16-byte aligned. Work item: 8 (vec) or 1 column f of row m,
// touching gate f and up f of gu and dgu.
static __global__ void geglu_backward_kernel(bf16 *dgu, const bf16 *dy, const bf16 *gu, int64_t M, int F, bool vec) {
    const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    if (vec) {
        const int F8 = F / 8;
        for (int64_t v = tid; v < M * F8; v += stride) {
            const int64_t m = v / F8;
            const int64_t f8 = v - m * F8;
            const uint4 *row = reinterpret_cast<const uint4 *>(gu + m * 2 * F);
            uint4 *drow = reinterpret_cast<uint4 *>(dgu + m * 2 * F);
            float g[8], u[8], d[8], dg[8], du[8];
            unpack8(row[f8], g);
            unpack8(row[F8 + f8], u);
            unpack8(reinterpret_cast<const uint4 *>(dy)[v], d);
            unpack8(drow[f8], dg);
            unpack8(drow[F8 + f8], du);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                dg[j] += d[j] * u[j] * gelu_tanh_grad(g[j]);
                du[j] += d[j] * round_bf16(gelu_tanh(g[j]));
            }
            drow[f8] = pack8(dg);
            drow[F8 + f8] = pack8(du);
        }
        return;
    }
    for (int64_t e = tid; e < M * F; e += stride) {
        const int64_t m = e / F, f = e % F;
        const int64_t ig = m * 2 * F + f, iu = ig + F;
        const float g = ld_bf16(gu + ig), u = ld_bf16(gu + iu), d = ld_bf16(dy + e);
        dgu[ig] = to_bf16(ld_bf16(dgu + ig) + d * u * gelu_tanh_grad(g));
        dgu[iu] = to_bf16(ld_bf16(dgu + iu) + d * round_bf16(gelu_tanh(g)));
    }
}

static mg_status gelu_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, int64_t n) {
    const int threads = 256;
    const bool vec = aligned16(x) && aligned16(y);
    gelu_forward_kernel<<<grid_stride_blocks(ctx, vec ? (n + 7) / 8 : n, threads), threads, 0, ctx->stream>>>(y, x, n,
                                                                                                          vec);
    MG_CUDA_LAUNCH_CHECK(gelu_forward_kernel);
    return MG_OK;
}

static mg_status geglu_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *gu, int64_t M, int F) {
    const int threads = 256;
    const bool vec = F % 8 == 0 && aligned16(gu) && aligned16(y);
    const int64_t items = vec ? M * (F / 8) : M * F;
    geglu_forward_kernel<<<grid_stride_blocks(ctx, items, threads), threads, 0, ctx->stream>>>(y, gu, M, F, vec);
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

static mg_status gelu_backward_launch(mg_cuda_ctx *ctx, bf16 *dx, const bf16 *dy, const bf16 *x, int64_t n) {
    const int threads = 256;
    const bool vec = aligned16(dx) && aligned16(dy) && aligned16(x);
    gelu_backward_kernel<<<grid_stride_blocks(ctx, vec ? (n + 7) / 8 : n, threads), threads, 0, ctx->stream>>>(
        dx, dy, x, n, vec);
    MG_CUDA_LAUNCH_CHECK(gelu_backward_kernel);
    return MG_OK;
}

static mg_status geglu_backward_launch(mg_cuda_ctx *ctx, bf16 *dgu, const bf16 *dy, const bf16 *gu, int64_t M, int F) {
    const int threads = 256;
    const bool vec = F % 8 == 0 && aligned16(dgu) && aligned16(dy) && aligned16(gu);
    const int64_t items = vec ? M * (F / 8) : M * F;
    geglu_backward_kernel<<<grid_stride_blocks(ctx, items, threads), threads, 0, ctx->stream>>>(dgu, dy, gu, M, F,
                                                                                                vec);
    MG_CUDA_LAUNCH_CHECK(geglu_backward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_gelu_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *x, int64_t n) {
    if (n <= 0) return mg_fail(MG_ERR_SHAPE, NULL, "gelu_backward: n=%lld must be positive", (long long)n);
    if (!dx || !dy || !x) return mg_fail(MG_ERR_ARG, NULL, "gelu_backward: dx, dy and x are required");
    return gelu_backward_launch(ctx, (bf16 *)dx, (const bf16 *)dy, (const bf16 *)x, n);
}

extern "C" mg_status mg_cuda_geglu_backward(mg_cuda_ctx *ctx, void *dgu, const void *dy, const void *gu, int64_t M,
                                            int F) {
    if (M <= 0 || F <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "geglu_backward: M=%lld F=%d must be positive", (long long)M, F);
    if (!dgu || !dy || !gu) return mg_fail(MG_ERR_ARG, NULL, "geglu_backward: dgu, dy and gu are required");
    return geglu_backward_launch(ctx, (bf16 *)dgu, (const bf16 *)dy, (const bf16 *)gu, M, F);
}
