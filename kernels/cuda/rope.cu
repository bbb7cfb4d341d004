// Rotary position embedding, half-split (NeoX) layout, in place on x[B,T,H,D] (spec/model.md §5.4):
//   inv_freq_i = (1 / theta^(2i/D)) / factor          for i < D/2, fp32 like transformers' buffer
//   angle = pos[b,t] * inv_freq_i (fp32);  c = bf16(cos angle),  s = bf16(sin angle)
//   x'_i       = bf16( bf16(x_i c)       - bf16(x_{i+D/2} s) )
//   x'_{i+D/2} = bf16( bf16(x_{i+D/2} c) + bf16(x_i s) )
// The bf16 roundings are torch's: cos/sin are cast to the activation dtype, and q*cos,
// rotate_half(q)*sin and their sum are each a bf16 tensor. Gemma 3: local layers theta 1e4,
// factor 1; global layers theta 1e6, factor 8. Overwrites x (`=`).
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// One thread per (b, t, h, i < D/2): it owns the pair (i, i + D/2), so in-place is race-free.
static __global__ void rope_forward_kernel(bf16 *x, const int32_t *pos, int64_t B, int64_t T, int H, int D,
                                           float theta, float factor) {
    const int half = D / 2;
    const int64_t n = B * T * H * half;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(e % half);
        const int64_t head = e / half;  // (b*T + t)*H + h
        const int64_t bt = head / H;    // b*T + t
        // transformers: inv_freq = 1 / theta ** (arange(0, D, 2).float() / D), then / factor, in
        // fp32 on the CPU, where powf is correctly rounded. CUDA's powf may be off by an ulp or two,
        // which moves large angles enough to flip the bf16 rounding of cos/sin, so the power is taken
        // in double and rounded to fp32 (the correctly rounded powf).
        const float expo = (float)(2 * i) / (float)D;
        const float inv_freq = (1.0f / (float)pow((double)theta, (double)expo)) / factor;
        const float angle = (float)pos[bt] * inv_freq;
        const float c = round_bf16(cosf(angle)), s = round_bf16(sinf(angle));
        bf16 *xh = x + head * D;
        const float x1 = ld_bf16(xh + i), x2 = ld_bf16(xh + i + half);
        xh[i] = to_bf16(round_bf16(x1 * c) - round_bf16(x2 * s));
        xh[i + half] = to_bf16(round_bf16(x2 * c) + round_bf16(x1 * s));
    }
}

static mg_status rope_forward_launch(mg_cuda_ctx *ctx, bf16 *x, const int32_t *pos, int64_t B, int64_t T, int H,
                                     int D, float theta, float factor) {
    const int threads = 256;
    const int64_t n = B * T * H * (D / 2);
    rope_forward_kernel<<<grid_stride_blocks(ctx, n, threads), threads, 0, ctx->stream>>>(x, pos, B, T, H, D, theta,
                                                                                          factor);
    MG_CUDA_LAUNCH_CHECK(rope_forward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_rope_forward(mg_cuda_ctx *ctx, void *x, const int32_t *pos, int64_t B, int64_t T, int H,
                                          int D, float theta, float factor) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0 || D % 2 != 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "rope: B=%lld T=%lld H=%d D=%d (D must be even and positive)",
                       (long long)B, (long long)T, H, D);
    if (!(theta > 0.0f) || !(factor > 0.0f))
        return mg_fail(MG_ERR_ARG, "read rope_theta and the linear factor from config.json", "rope: theta=%g factor=%g",
                       theta, factor);
    return rope_forward_launch(ctx, (bf16 *)x, pos, B, T, H, D, theta, factor);
}
