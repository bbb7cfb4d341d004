// Scaled dot-product attention with GQA and the Gemma 3 / SigLIP masks (spec/model.md §5.4, §6):
//   q[B,T,H,D], k,v[B,T,Hkv,D] -> out[B,T,H,D]; query head h reads kv head g = h / (H/Hkv)
//   s_ij = (q_i · k_j) * scale                  for visible keys j (the rule of mg_attention_args, engine/backend.h)
//   out_i = Σ_j softmax_j(s_ij) v_j             (fp32 softmax; P stays fp32, as in SDPA)
// A query with no visible key gets zeros. Written with `=`.
//
// Flash-style, correctness first: one block per (query tile of BQ rows, head h, batch row b);
// key/value tiles of BK = 32 rows go through shared memory (as fp32); each warp owns QPW queries
// and keeps for each an online-softmax state (running max m, running sum l, the output
// accumulator spread over the lanes: lane owns dims lane + 32t, t < DPL). Scores: lane j of the
// warp computes the score of key k0 + j in full, so the max and the sum need one warp reduction
// per tile. The T×T score matrix is never stored.
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

enum {
    ATTN_WARPS = 4,                // warps per block
    ATTN_QPW = 4,                  // queries per warp
    ATTN_BQ = ATTN_WARPS * ATTN_QPW,  // queries per block
    ATTN_BK = 32,                  // keys per tile: one per lane
    ATTN_MAX_D = 256,              // 8 dims per lane
};

// Shared memory (floats): q tile [BQ][D], k tile [BK][D+1] (the +1 keeps lane j's reads of row j
// in distinct banks for even D), v tile [BK][D].
static size_t attention_smem_bytes(int D) {
    return sizeof(float) * ((size_t)ATTN_BQ * D + (size_t)ATTN_BK * (D + 1) + (size_t)ATTN_BK * D);
}

// DPL = ceil(D / 32): dims per lane, a compile-time bound so the accumulators stay in registers.
template <int DPL>
static __global__ void __launch_bounds__(ATTN_WARPS * 32)
    attention_forward_kernel(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, mg_attention_args a) {
    extern __shared__ float smem[];
    const int D = a.D, H = a.H, Hkv = a.Hkv;
    const int64_t T = a.T, b = blockIdx.z;
    const int h = blockIdx.y, g = h / (H / Hkv);
    const int64_t q0 = (int64_t)blockIdx.x * ATTN_BQ;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *qs = smem;                       // [BQ][D]
    float *ks = qs + ATTN_BQ * D;           // [BK][D+1]
    float *vs = ks + ATTN_BK * (D + 1);     // [BK][D]

    // The query tile; rows past T are zero and never written out.
    for (int e = threadIdx.x; e < ATTN_BQ * D; e += blockDim.x) {
        const int r = e / D, d = e % D;
        const int64_t i = q0 + r;
        qs[e] = i < T ? ld_bf16(q + ((b * T + i) * H + h) * D + d) : 0.0f;
    }

    // Online-softmax state of this warp's queries (same value in every lane, except acc).
    float m[ATTN_QPW], l[ATTN_QPW], acc[ATTN_QPW][DPL];
    int qgroup[ATTN_QPW];
#pragma unroll
    for (int qi = 0; qi < ATTN_QPW; qi++) {
        const int64_t i = q0 + warp * ATTN_QPW + qi;
        m[qi] = -INFINITY;
        l[qi] = 0.0f;
        qgroup[qi] = (a.group && i < T) ? a.group[b * T + i] : -1;
#pragma unroll
        for (int t = 0; t < DPL; t++) acc[qi][t] = 0.0f;
    }

    // Keys that can be visible to some query of the tile: the window hides j <= i - window for
    // every query (also on image blocks); without image blocks, causal hides j > the last query.
    const int64_t q_last = (q0 + ATTN_BQ < T ? q0 + ATTN_BQ : T) - 1;
    int64_t kv_begin = 0, kv_end = T;
    if (a.window > 0 && q0 - a.window + 1 > 0) kv_begin = q0 - a.window + 1;
    if (a.causal && !a.group) kv_end = q_last + 1;

    for (int64_t k0 = kv_begin; k0 < kv_end; k0 += ATTN_BK) {
        __syncthreads();  // the previous tile is consumed (and, the first time, the q tile is loaded)
        for (int e = threadIdx.x; e < ATTN_BK * D; e += blockDim.x) {
            const int r = e / D, d = e % D;
            const int64_t j = k0 + r;
            const bool in = j < kv_end;
            const int64_t off = ((b * T + j) * Hkv + g) * D + d;
            ks[r * (D + 1) + d] = in ? ld_bf16(k + off) : 0.0f;
            vs[r * D + d] = in ? ld_bf16(v + off) : 0.0f;
        }
        __syncthreads();

        // This lane's key.
        const int64_t j = k0 + lane;
        const bool key_ok = j < kv_end && (!a.key_valid || a.key_valid[b * T + j] != 0);
        const int kgroup = (a.group && j < kv_end) ? a.group[b * T + j] : -1;

#pragma unroll
        for (int qi = 0; qi < ATTN_QPW; qi++) {
            const int r = warp * ATTN_QPW + qi;
            const int64_t i = q0 + r;
            if (i >= T) continue;  // warp-uniform

            bool visible = key_ok && (!a.causal || j <= i);
            if (key_ok && qgroup[qi] >= 0 && qgroup[qi] == kgroup) visible = true;
            if (a.window > 0 && i - j >= a.window) visible = false;
            float s = -INFINITY;
            if (visible) {
                const float *qr = qs + r * D, *kr = ks + lane * (D + 1);
                float dot = 0.0f;
#pragma unroll 8
                for (int d = 0; d < D; d++) dot += qr[d] * kr[d];
                s = dot * a.scale;
            }

            // Online softmax: rescale the old state to the new max, add this tile.
            const float m_new = fmaxf(m[qi], warp_max(s));
            if (m_new == -INFINITY) continue;  // nothing visible yet (warp-uniform: every lane has m_new)
            const float p = expf(s - m_new);    // 0 for masked keys
            const float corr = expf(m[qi] - m_new);  // 0 on the first visible tile
            l[qi] = l[qi] * corr + warp_sum(p);
            m[qi] = m_new;
#pragma unroll
            for (int t = 0; t < DPL; t++) acc[qi][t] *= corr;
            for (int jj = 0; jj < ATTN_BK; jj++) {
                const float pj = __shfl_sync(0xffffffffu, p, jj);
                const float *vr = vs + jj * D;
#pragma unroll
                for (int t = 0; t < DPL; t++) {
                    const int d = lane + 32 * t;
                    if (d < D) acc[qi][t] += pj * vr[d];
                }
            }
        }
    }

#pragma unroll
    for (int qi = 0; qi < ATTN_QPW; qi++) {
        const int64_t i = q0 + warp * ATTN_QPW + qi;
        if (i >= T) continue;
        const float inv_l = l[qi] > 0.0f ? 1.0f / l[qi] : 0.0f;  // no visible key: zeros
        bf16 *o = out + ((b * T + i) * H + h) * D;
#pragma unroll
        for (int t = 0; t < DPL; t++) {
            const int d = lane + 32 * t;
            if (d < D) o[d] = to_bf16(acc[qi][t] * inv_l);
        }
    }
}

template <int DPL>
static mg_status attention_forward_launch_dpl(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                              const bf16 *v, const mg_attention_args *a) {
    const size_t smem = attention_smem_bytes(a->D);
    // Above 48 KB a block needs the opt-in (D = 256 takes 80 KB).
    MG_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_kernel<DPL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem));
    const dim3 grid((unsigned)((a->T + ATTN_BQ - 1) / ATTN_BQ), (unsigned)a->H, (unsigned)a->B);
    attention_forward_kernel<DPL><<<grid, ATTN_WARPS * 32, smem, ctx->stream>>>(out, q, k, v, *a);
    MG_CUDA_LAUNCH_CHECK(attention_forward_kernel);
    return MG_OK;
}

// The launcher: picks the instantiation whose DPL covers D.
static mg_status attention_forward_launch(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v,
                                          const mg_attention_args *a) {
    if (attention_smem_bytes(a->D) > ctx->smem_optin)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "attention: D=%d needs %zu bytes of shared memory, %s allows %zu",
                       a->D, attention_smem_bytes(a->D), ctx->name, ctx->smem_optin);
    switch ((a->D + 31) / 32) {
    case 1: return attention_forward_launch_dpl<1>(ctx, out, q, k, v, a);
    case 2: return attention_forward_launch_dpl<2>(ctx, out, q, k, v, a);
    case 3: return attention_forward_launch_dpl<3>(ctx, out, q, k, v, a);
    case 4: return attention_forward_launch_dpl<4>(ctx, out, q, k, v, a);
    case 5: return attention_forward_launch_dpl<5>(ctx, out, q, k, v, a);
    case 6: return attention_forward_launch_dpl<6>(ctx, out, q, k, v, a);
    case 7: return attention_forward_launch_dpl<7>(ctx, out, q, k, v, a);
    default: return attention_forward_launch_dpl<8>(ctx, out, q, k, v, a);
    }
}

extern "C" mg_status mg_cuda_attention_forward(mg_cuda_ctx *ctx, void *out, const void *q, const void *k,
                                               const void *v, const mg_attention_args *a) {
    if (a->B <= 0 || a->B > 65535 || a->T <= 0 || a->H <= 0 || a->H > 65535 || a->Hkv <= 0 || a->H % a->Hkv != 0)
        return mg_fail(MG_ERR_SHAPE, NULL,
                       "attention: B=%lld T=%lld H=%d Hkv=%d (need B, H <= 65535 and H a multiple of Hkv)",
                       (long long)a->B, (long long)a->T, a->H, a->Hkv);
    if (a->D <= 0 || a->D > ATTN_MAX_D)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "attention: head dim D=%d, this kernel handles 1..%d", a->D,
                       ATTN_MAX_D);
    if (a->window < 0) return mg_fail(MG_ERR_ARG, NULL, "attention: window=%d must be >= 0", a->window);
    return attention_forward_launch(ctx, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, a);
}
