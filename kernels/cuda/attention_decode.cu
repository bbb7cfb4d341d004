// Attention of one new token per batch row over a KV cache (engine/backend.h mg_decode_args):
//   q[B,H,D], kc,vc[B,Tmax,Hkv,D] -> out[B,H,D]; query head h reads kv head g = h / (H/Hkv)
//   the query is position len-1; key j < len is visible iff window == 0 or (len-1) - j < window
//   out = softmax(q·kᵀ·scale) · v, scores and softmax in fp32, P kept in fp32 (as attention.cu),
//   one rounding of the output to bf16. Written with `=`.
// Decoding reads a few hundred keys per head, so a simple kernel is enough: one block per (b, h),
// each warp walks every WARPS-th key with an online softmax, and the warps' partial results are
// merged through shared memory.
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

enum { WARPS = 4, MAX_D_PER_LANE = 8 };  // D <= 32 * MAX_D_PER_LANE = 256

static __global__ void attention_decode_forward_kernel(bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                                       mg_decode_args a) {
    __shared__ float warp_max_s[WARPS], warp_sum_s[WARPS];
    __shared__ float warp_acc[WARPS][32 * MAX_D_PER_LANE];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, D = a.D;
    const int64_t b = blockIdx.x / a.H;
    const int h = (int)(blockIdx.x % a.H), g = h / (a.H / a.Hkv);
    const int64_t i = a.len - 1, lo = a.window > 0 && i - a.window + 1 > 0 ? i - a.window + 1 : 0;

    // this lane's features d = lane + 32 r of the query
    float qd[MAX_D_PER_LANE], acc[MAX_D_PER_LANE];
    const bf16 *qh = q + (b * a.H + h) * D;
#pragma unroll
    for (int r = 0; r < MAX_D_PER_LANE; r++) {
        const int d = lane + 32 * r;
        qd[r] = d < D ? ld_bf16(qh + d) : 0.0f;
        acc[r] = 0.0f;
    }
    // online softmax over this warp's keys: running max mx, running sum l, acc = Σ p v
    float mx = -INFINITY, l = 0.0f;
    for (int64_t j = lo + warp; j <= i; j += WARPS) {
        const int64_t kv = ((b * a.Tmax + j) * a.Hkv + g) * D;
        float dot = 0.0f;
#pragma unroll
        for (int r = 0; r < MAX_D_PER_LANE; r++) {
            const int d = lane + 32 * r;
            if (d < D) dot += qd[r] * ld_bf16(kc + kv + d);
        }
        const float s = warp_sum(dot) * a.scale;
        const float new_mx = fmaxf(mx, s), rescale = expf(mx - new_mx), p = expf(s - new_mx);
        l = l * rescale + p;
#pragma unroll
        for (int r = 0; r < MAX_D_PER_LANE; r++) {
            const int d = lane + 32 * r;
            acc[r] = acc[r] * rescale + (d < D ? p * ld_bf16(vc + kv + d) : 0.0f);
        }
        mx = new_mx;
    }
    // merge the warps: out = Σ_w e^(mx_w - M) acc_w / Σ_w e^(mx_w - M) l_w
    if (lane == 0) warp_max_s[warp] = mx, warp_sum_s[warp] = l;
#pragma unroll
    for (int r = 0; r < MAX_D_PER_LANE; r++) warp_acc[warp][lane + 32 * r] = acc[r];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < WARPS; w++) M = fmaxf(M, warp_max_s[w]);
    float total = 0.0f;
    for (int w = 0; w < WARPS; w++)
        if (warp_max_s[w] > -INFINITY) total += expf(warp_max_s[w] - M) * warp_sum_s[w];
    bf16 *oh = out + (b * a.H + h) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < WARPS; w++)
            if (warp_max_s[w] > -INFINITY) o += expf(warp_max_s[w] - M) * warp_acc[w][d];
        oh[d] = to_bf16(total > 0.0f ? o / total : 0.0f);
    }
}

static mg_status attention_decode_forward_launch(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *kc,
                                                 const bf16 *vc, const mg_decode_args *a) {
    const int64_t blocks = a->B * a->H;
    attention_decode_forward_kernel<<<(unsigned)blocks, 32 * WARPS, 0, ctx->stream>>>(out, q, kc, vc, *a);
    MG_CUDA_LAUNCH_CHECK(attention_decode_forward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_attention_decode_forward(mg_cuda_ctx *ctx, void *out, const void *q, const void *kc,
                                                      const void *vc, const mg_decode_args *a) {
    if (a->B <= 0 || a->H <= 0 || a->Hkv <= 0 || a->D <= 0 || a->H % a->Hkv != 0 || a->B * a->H > 0x7fffffff)
        return mg_fail(MG_ERR_SHAPE, NULL, "attention_decode: B=%lld H=%d Hkv=%d D=%d (need positive, H %% Hkv == 0)",
                       (long long)a->B, a->H, a->Hkv, a->D);
    if (a->D > 32 * MAX_D_PER_LANE)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "attention_decode: head dim D=%d above %d", a->D,
                       32 * MAX_D_PER_LANE);
    if (a->len < 1 || a->len > a->Tmax || a->window < 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "attention_decode: len=%lld must be in [1, Tmax=%lld], window=%d >= 0",
                       (long long)a->len, (long long)a->Tmax, a->window);
    if (!out || !q || !kc || !vc) return mg_fail(MG_ERR_ARG, NULL, "attention_decode: out, q, kc and vc are required");
    return attention_decode_forward_launch(ctx, (bf16 *)out, (const bf16 *)q, (const bf16 *)kc, (const bf16 *)vc, a);
}
