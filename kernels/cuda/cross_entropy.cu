// Causal-LM cross-entropy and its logits gradient in one op (transformers' loss: logits upcast to
// fp32, ignore_index rows dropped; spec/model.md §8.3), over R rows of logits[R,V] (bf16):
//   lse_r = log Σ_v exp(logits[r,v])                               (fp32, max-shifted)
//   loss[0] += Σ_r (lse_r - logits[r, t_r])   over rows with t_r = targets[r] >= 0   (`+=`)
//   dlogits[r,v] = grad_scale · (exp(logits[r,v] - lse_r) - [v == t_r])   (`=`, bf16)
//   dlogits[r,:] = 0 when t_r < 0
// dlogits may alias logits. A target >= V (a caller bug: targets are checked on the host) gives a
// NaN loss and a NaN row instead of a stray read.
// One block per row: pass 1 keeps a running (max, Σexp) per thread (online softmax: the row is read
// once for both), the block merges them; pass 2 re-reads the row (V = 262208: 512 KiB, mostly from
// L2) and writes the gradient. The row's loss is added to loss[0] with one atomicAdd, so the sum's
// order over rows (and its last bits) varies between runs.
#include <float.h>
#include <limits.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

enum { CE_MAX_THREADS = 1024 };

// (m, s) stands for s · exp(m): the merge of two partial sums of exponentials. m starts at -FLT_MAX
// (not -inf) so that exp(m - mx) is never exp(-inf + inf).
static __device__ __forceinline__ void merge_max_sum(float &m, float &s, float m2, float s2) {
    const float mx = fmaxf(m, m2);
    s = s * expf(m - mx) + s2 * expf(m2 - mx);
    m = mx;
}

// VW = 8: V a multiple of 8 and logits, dlogits 16-byte aligned (every row then is), else VW = 1.
// Every element is read (both passes) and written by the same thread, and the target logit is read
// before the block's barrier, so dlogits may alias logits.
template <int VW>
static __global__ void __launch_bounds__(CE_MAX_THREADS)
    cross_entropy_backward_kernel(bf16 *dlogits, float *loss, const bf16 *logits, const int32_t *targets, int V,
                                  float grad_scale) {
    __shared__ float s_m[32], s_s[32], s_xt;
    const int64_t row = blockIdx.x;
    const bf16 *lr = logits + row * V;
    bf16 *dr = dlogits + row * V;
    const int t = targets[row], nu = V / VW;
    if (t < 0) {  // an ignored row: no loss, a zero gradient (the whole block takes this branch)
        const float zero[VW] = {};
        for (int u = threadIdx.x; u < nu; u += blockDim.x) store_bf16s<VW>(dr + u * VW, zero);
        return;
    }
    const bool bad = t >= V;
    // Stored before the barrier below, so the load cannot move past it (and past pass 2's writes).
    if (threadIdx.x == 0) s_xt = !bad ? ld_bf16(lr + t) : 0.0f;
    float m = -FLT_MAX, s = 0.0f;
    for (int u = threadIdx.x; u < nu; u += blockDim.x) {
        float f[VW];
        load_bf16s<VW>(lr + u * VW, f);
#pragma unroll
        for (int j = 0; j < VW; j++) {
            if (f[j] > m) {
                s = s * expf(m - f[j]) + 1.0f;
                m = f[j];
            } else {
                s += expf(f[j] - m);
            }
        }
    }
    // Merge: lanes by butterfly (each pair merges in both orders and gets the same bits), then every
    // thread merges the warps' results in the same order.
    for (int o = 16; o > 0; o >>= 1) merge_max_sum(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    if (lane == 0) s_m[warp] = m, s_s[warp] = s;
    __syncthreads();
    m = s_m[0], s = s_s[0];
    for (int w = 1; w < n_warps; w++) merge_max_sum(m, s, s_m[w], s_s[w]);
    const float lse = m + logf(s), inv_s = 1.0f / s;
    if (threadIdx.x == 0) atomicAdd(loss, bad ? nanf("") : lse - s_xt);
    for (int u = threadIdx.x; u < nu; u += blockDim.x) {
        float f[VW];
        load_bf16s<VW>(lr + u * VW, f);
#pragma unroll
        for (int j = 0; j < VW; j++) {
            const float p = expf(f[j] - m) * inv_s;
            f[j] = bad ? nanf("") : grad_scale * (u * VW + j == t ? p - 1.0f : p);
        }
        store_bf16s<VW>(dr + u * VW, f);
    }
}

static mg_status cross_entropy_backward_launch(mg_cuda_ctx *ctx, bf16 *dlogits, float *loss, const bf16 *logits,
                                               const int32_t *targets, int64_t R, int V, float grad_scale) {
    const bool vec = V % 8 == 0 && aligned16(logits) && aligned16(dlogits);
    const int units = vec ? V / 8 : V;
    int threads = (units + 31) / 32 * 32;  // a multiple of 32 for the warp merge
    if (threads > CE_MAX_THREADS) threads = CE_MAX_THREADS;
    if (vec)
        cross_entropy_backward_kernel<8><<<(unsigned)R, threads, 0, ctx->stream>>>(dlogits, loss, logits, targets, V,
                                                                                   grad_scale);
    else
        cross_entropy_backward_kernel<1><<<(unsigned)R, threads, 0, ctx->stream>>>(dlogits, loss, logits, targets, V,
                                                                                   grad_scale);
    MG_CUDA_LAUNCH_CHECK(cross_entropy_backward_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_cross_entropy_backward(mg_cuda_ctx *ctx, void *dlogits, float *loss, const void *logits,
                                                    const int32_t *targets, int64_t R, int V, float grad_scale) {
    if (R < 0 || R > INT_MAX || V <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "cross_entropy_backward: R=%lld V=%d (need 0 <= R <= 2^31-1, V > 0)",
                       (long long)R, V);
    if (R == 0) return MG_OK;  // no labelled row in the batch
    if (!dlogits || !loss || !logits || !targets)
        return mg_fail(MG_ERR_ARG, NULL, "cross_entropy_backward: dlogits, loss, logits and targets are required");
    return cross_entropy_backward_launch(ctx, (bf16 *)dlogits, loss, (const bf16 *)logits, targets, R, V, grad_scale);
}
