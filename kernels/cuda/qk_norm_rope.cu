// The fused q|k|v projection split into attention's inputs, with Gemma's q/k norm and RoPE, in one
// pass over the GEMM output (engine/backend.h mg_qkv_args; spec/model.md §5.4 and §10):
//   qkv[B*T, (H+2Hkv)*D] row m = [ q heads 0..H-1 | k heads 0..Hkv-1 | v heads 0..Hkv-1 ]
//   norm_rope: n = bf16( x * rsqrt(mean(x²) + eps) * (1 + w) )      per head, w = q_norm or k_norm
//              c = bf16(cos angle), s = bf16(sin angle), angle = pos * inv_freq_i (fp32)
//              x'_i       = bf16( bf16(n_i c)       - bf16(n_{i+D/2} s) )
//              x'_{i+D/2} = bf16( bf16(n_{i+D/2} c) + bf16(n_i s) )
//              v copied
//   otherwise: q, k, v are plain copies (SigLIP)
// The rounding points are torch's bf16 graph: the norm returns a bf16 tensor (as rmsnorm.cu), cos/sin
// are cast to bf16, and each product and the sum are bf16 (Gemma 3: local layers theta 1e4, factor 1;
// global layers theta 1e6, factor 8).
// Written with `=`; the outputs never alias qkv.
// Backward: dqkv[B*T, (H+2Hkv)*D] += the gradient given dq, dk, dv and the forward's qkv (`+=`, one
// rounding). The bf16 roundings are treated as identities (as autograd does); the rotation uses the
// forward's bf16 cos/sin:
//   dn_i = dx'_i c + dx'_{i+D/2} s,   dn_{i+D/2} = dx'_{i+D/2} c - dx'_i s
//   g = dn · (1 + w),   dx_c = rstd · g_c - x_c · rstd³ · Σ(g · x) / D     (rstd recomputed from x)
//   v (and every head without norm_rope): the gradient is added as it is.
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

enum { WARPS_PER_BLOCK = 4, MAX_PAIRS_PER_LANE = 4 };  // D <= 2 * 32 * MAX_PAIRS_PER_LANE = 256

// The angle's bf16 cos and sin for pair i at position p (forward and backward). inv_freq as
// transformers' fp32 buffer: the power in double, rounded once, is the correctly rounded fp32 value
// torch computes on the CPU; CUDA's powf may be an ulp off, which can flip a bf16 cos/sin at large
// positions.
static __device__ __forceinline__ void rope_cos_sin(float p, int i, int D, float theta, float factor, float *c,
                                                    float *sn) {
    const float expo = (float)(2 * i) / (float)D;
    const float inv_freq = (1.0f / (float)pow((double)theta, (double)expo)) / factor;
    const float angle = p * inv_freq;
    *c = round_bf16(cosf(angle));
    *sn = round_bf16(sinf(angle));
}

// One warp per (token m, head slot s): slot s < H is query head s, then Hkv key heads, then Hkv
// value heads. Lane l owns the pairs (i, i + D/2) for i = l, l + 32, ... < D/2, so the norm's sum
// is a warp reduction and the rotation needs no exchange between lanes.
static __global__ void qk_norm_rope_forward_kernel(bf16 *q, bf16 *k, bf16 *v, const bf16 *qkv, mg_qkv_args a) {
    const int heads = a.H + 2 * a.Hkv, lane = threadIdx.x & 31;
    const int64_t unit = (int64_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    if (unit >= a.B * a.T * heads) return;  // whole warps leave together
    const int64_t m = unit / heads;
    const int s = (int)(unit % heads), D = a.D;
    const bool is_q = s < a.H, is_k = !is_q && s < a.H + a.Hkv;
    const bf16 *src = qkv + unit * D;  // row m, head slot s: (m*heads + s)*D
    bf16 *dst = is_q ? q + (m * a.H + s) * D
                : is_k ? k + (m * a.Hkv + (s - a.H)) * D
                       : v + (m * a.Hkv + (s - a.H - a.Hkv)) * D;
    if (!a.norm_rope || !(is_q || is_k)) {
        for (int c = lane; c < D; c += 32) dst[c] = src[c];
        return;
    }
    const int half = D / 2;
    const bf16 *w = (const bf16 *)(is_q ? a.q_norm : a.k_norm);
    float x1[MAX_PAIRS_PER_LANE], x2[MAX_PAIRS_PER_LANE];
    float sq = 0.0f;
#pragma unroll
    for (int r = 0; r < MAX_PAIRS_PER_LANE; r++) {
        const int i = lane + 32 * r;
        x1[r] = i < half ? ld_bf16(src + i) : 0.0f;
        x2[r] = i < half ? ld_bf16(src + i + half) : 0.0f;
        sq += x1[r] * x1[r] + x2[r] * x2[r];
    }
    const float rstd = rsqrtf(warp_sum(sq) / (float)D + a.eps);
    const float p = (float)a.pos[m];
#pragma unroll
    for (int r = 0; r < MAX_PAIRS_PER_LANE; r++) {
        const int i = lane + 32 * r;
        if (i >= half) continue;
        const float n1 = round_bf16(x1[r] * rstd * (1.0f + ld_bf16(w + i)));
        const float n2 = round_bf16(x2[r] * rstd * (1.0f + ld_bf16(w + i + half)));
        float c, sn;
        rope_cos_sin(p, i, D, a.theta, a.factor, &c, &sn);
        dst[i] = to_bf16(round_bf16(n1 * c) - round_bf16(n2 * sn));
        dst[i + half] = to_bf16(round_bf16(n2 * c) + round_bf16(n1 * sn));
    }
}

// The forward's warp layout: one warp per (token m, head slot s), lane l owns the pairs (i, i + D/2)
// for i = l, l + 32, ... < D/2. Each gradient element is read and written by one lane.
static __global__ void qk_norm_rope_backward_kernel(bf16 *dqkv, const bf16 *dq, const bf16 *dk, const bf16 *dv,
                                                    const bf16 *qkv, mg_qkv_args a) {
    const int heads = a.H + 2 * a.Hkv, lane = threadIdx.x & 31;
    const int64_t unit = (int64_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    if (unit >= a.B * a.T * heads) return;  // whole warps leave together
    const int64_t m = unit / heads;
    const int s = (int)(unit % heads), D = a.D;
    const bool is_q = s < a.H, is_k = !is_q && s < a.H + a.Hkv;
    bf16 *dst = dqkv + unit * D;  // row m, head slot s
    const bf16 *g = is_q ? dq + (m * a.H + s) * D
                    : is_k ? dk + (m * a.Hkv + (s - a.H)) * D
                           : dv + (m * a.Hkv + (s - a.H - a.Hkv)) * D;
    if (!a.norm_rope || !(is_q || is_k)) {
        for (int c = lane; c < D; c += 32) dst[c] = to_bf16(ld_bf16(dst + c) + ld_bf16(g + c));
        return;
    }
    const int half = D / 2;
    const bf16 *src = qkv + unit * D;
    const bf16 *w = (const bf16 *)(is_q ? a.q_norm : a.k_norm);
    float x1[MAX_PAIRS_PER_LANE], x2[MAX_PAIRS_PER_LANE], g1[MAX_PAIRS_PER_LANE], g2[MAX_PAIRS_PER_LANE];
    float sq = 0.0f, dot = 0.0f;
    const float p = (float)a.pos[m];
#pragma unroll
    for (int r = 0; r < MAX_PAIRS_PER_LANE; r++) {
        const int i = lane + 32 * r;
        x1[r] = x2[r] = g1[r] = g2[r] = 0.0f;
        if (i >= half) continue;
        x1[r] = ld_bf16(src + i);
        x2[r] = ld_bf16(src + i + half);
        sq += x1[r] * x1[r] + x2[r] * x2[r];
        float c, sn;
        rope_cos_sin(p, i, D, a.theta, a.factor, &c, &sn);
        const float o1 = ld_bf16(g + i), o2 = ld_bf16(g + i + half);
        // the rotation's transpose, then the norm weight
        g1[r] = (o1 * c + o2 * sn) * (1.0f + ld_bf16(w + i));
        g2[r] = (o2 * c - o1 * sn) * (1.0f + ld_bf16(w + i + half));
        dot += g1[r] * x1[r] + g2[r] * x2[r];
    }
    const float rstd = rsqrtf(warp_sum(sq) / (float)D + a.eps);
    const float coef = warp_sum(dot) / (float)D * rstd * rstd * rstd;
#pragma unroll
    for (int r = 0; r < MAX_PAIRS_PER_LANE; r++) {
        const int i = lane + 32 * r;
        if (i >= half) continue;
        dst[i] = to_bf16(ld_bf16(dst + i) + rstd * g1[r] - x1[r] * coef);
        dst[i + half] = to_bf16(ld_bf16(dst + i + half) + rstd * g2[r] - x2[r] * coef);
    }
}

// Without norm_rope (SigLIP) both directions are row copies; when the q and k|v widths are whole
// 16-byte pieces and every pointer is 16-byte aligned they run 16 bytes per thread (a block per row,
// grid-stride over rows) instead of the per-head warps' 2-byte accesses. BACKWARD: dqkv += the
// piece of dq|dk|dv, rounded once per element as the per-head kernel does.
template <bool BACKWARD>
static __global__ void qkv_split_vec_kernel(bf16 *qkv, bf16 *q, bf16 *k, bf16 *v, int64_t rows, int qw, int kw) {
    const int row_units = qw + 2 * kw;  // 16-byte pieces per row: qw of q, kw each of k and v
    for (int64_t m = blockIdx.x; m < rows; m += gridDim.x)
        for (int c = threadIdx.x; c < row_units; c += blockDim.x) {
            uint4 *whole = reinterpret_cast<uint4 *>(qkv) + m * row_units + c;
            uint4 *part = c < qw        ? reinterpret_cast<uint4 *>(q) + m * qw + c
                          : c < qw + kw ? reinterpret_cast<uint4 *>(k) + m * kw + (c - qw)
                                        : reinterpret_cast<uint4 *>(v) + m * kw + (c - qw - kw);
            if constexpr (!BACKWARD) {
                *part = *whole;
            } else {
                uint4 acc = *whole;
                const uint4 g = *part;
                __nv_bfloat162 *a2 = reinterpret_cast<__nv_bfloat162 *>(&acc);
                const __nv_bfloat162 *g2 = reinterpret_cast<const __nv_bfloat162 *>(&g);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float2 x = __bfloat1622float2(a2[e]), y = __bfloat1622float2(g2[e]);
                    a2[e] = __floats2bfloat162_rn(x.x + y.x, x.y + y.y);
                }
                *whole = acc;
            }
        }
}

static bool qkv_split_vectorizes(const mg_qkv_args *a, const void *p1, const void *p2, const void *p3,
                                 const void *p4) {
    const uintptr_t addr = (uintptr_t)p1 | (uintptr_t)p2 | (uintptr_t)p3 | (uintptr_t)p4;
    return !a->norm_rope && ((int64_t)a->H * a->D) % 8 == 0 && ((int64_t)a->Hkv * a->D) % 8 == 0 && addr % 16 == 0;
}

template <bool BACKWARD>
static mg_status qkv_split_vec_launch(mg_cuda_ctx *ctx, bf16 *qkv, bf16 *q, bf16 *k, bf16 *v, const mg_qkv_args *a) {
    const int64_t rows = a->B * a->T;
    const unsigned blocks = (unsigned)(rows < 65536 ? rows : 65536);
    qkv_split_vec_kernel<BACKWARD><<<blocks, 128, 0, ctx->stream>>>(qkv, q, k, v, rows, a->H * a->D / 8,
                                                                    a->Hkv * a->D / 8);
    MG_CUDA_LAUNCH_CHECK(qkv_split_vec_kernel);
    return MG_OK;
}

static mg_status qk_norm_rope_forward_launch(mg_cuda_ctx *ctx, bf16 *q, bf16 *k, bf16 *v, const bf16 *qkv,
                                             const mg_qkv_args *a) {
    if (qkv_split_vectorizes(a, q, k, v, qkv)) return qkv_split_vec_launch<false>(ctx, (bf16 *)qkv, q, k, v, a);
    const int64_t units = a->B * a->T * (a->H + 2 * a->Hkv);
    const int64_t blocks = (units + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK;
    qk_norm_rope_forward_kernel<<<(unsigned)blocks, 32 * WARPS_PER_BLOCK, 0, ctx->stream>>>(q, k, v, qkv, *a);
    MG_CUDA_LAUNCH_CHECK(qk_norm_rope_forward_kernel);
    return MG_OK;
}

// The shape and argument checks of both directions; `op` names the entry in messages.
static mg_status qkv_check(const char *op, const void *p1, const void *p2, const void *p3, const void *p4,
                           const mg_qkv_args *a) {
    if (a->B <= 0 || a->T <= 0 || a->H <= 0 || a->Hkv <= 0 || a->D <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "%s: B=%lld T=%lld H=%d Hkv=%d D=%d must be positive", op,
                       (long long)a->B, (long long)a->T, a->H, a->Hkv, a->D);
    const int64_t blocks = (a->B * a->T * (a->H + 2 * a->Hkv) + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK;
    if (blocks > 0x7fffffff)
        return mg_fail(MG_ERR_SHAPE, "run fewer tokens at once", "%s: %lld blocks exceed the grid", op,
                       (long long)blocks);
    if (a->norm_rope && (a->D % 2 != 0 || a->D > 2 * 32 * MAX_PAIRS_PER_LANE))
        return mg_fail(MG_ERR_SHAPE, NULL, "%s: D=%d must be even and at most %d", op, a->D,
                       2 * 32 * MAX_PAIRS_PER_LANE);
    if (!p1 || !p2 || !p3 || !p4) return mg_fail(MG_ERR_ARG, NULL, "%s: every tensor pointer is required", op);
    if (a->norm_rope) {
        if (!a->q_norm || !a->k_norm || !a->pos)
            return mg_fail(MG_ERR_ARG, NULL, "%s: q_norm, k_norm and pos are required with norm_rope", op);
        if (!(a->theta > 0.0f) || !(a->factor > 0.0f))
            return mg_fail(MG_ERR_ARG, "read rope_theta and the linear factor from config.json",
                           "%s: theta=%g factor=%g", op, a->theta, a->factor);
    }
    return MG_OK;
}

extern "C" mg_status mg_cuda_qk_norm_rope_forward(mg_cuda_ctx *ctx, void *q, void *k, void *v, const void *qkv,
                                                  const mg_qkv_args *a) {
    MG_TRY(qkv_check("qk_norm_rope", q, k, v, qkv, a));
    return qk_norm_rope_forward_launch(ctx, (bf16 *)q, (bf16 *)k, (bf16 *)v, (const bf16 *)qkv, a);
}

static mg_status qk_norm_rope_backward_launch(mg_cuda_ctx *ctx, bf16 *dqkv, const bf16 *dq, const bf16 *dk,
                                              const bf16 *dv, const bf16 *qkv, const mg_qkv_args *a) {
    if (qkv_split_vectorizes(a, dqkv, dq, dk, dv))
        return qkv_split_vec_launch<true>(ctx, dqkv, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, a);
    const int64_t units = a->B * a->T * (a->H + 2 * a->Hkv);
    const int64_t blocks = (units + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK;
    qk_norm_rope_backward_kernel<<<(unsigned)blocks, 32 * WARPS_PER_BLOCK, 0, ctx->stream>>>(dqkv, dq, dk, dv, qkv,
                                                                                             *a);
    MG_CUDA_LAUNCH_CHECK(qk_norm_rope_backward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_qk_norm_rope_backward(mg_cuda_ctx *ctx, void *dqkv, const void *dq, const void *dk,
                                                   const void *dv, const void *qkv, const mg_qkv_args *a) {
    MG_TRY(qkv_check("qk_norm_rope_backward", dqkv, dq, dk, dv, a));
    if (a->norm_rope && !qkv)
        return mg_fail(MG_ERR_ARG, NULL, "qk_norm_rope_backward: the forward's qkv is required with norm_rope");
    return qk_norm_rope_backward_launch(ctx, (bf16 *)dqkv, (const bf16 *)dq, (const bf16 *)dk, (const bf16 *)dv,
                                        (const bf16 *)qkv, a);
}
