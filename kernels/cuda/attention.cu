// Scaled dot-product attention with GQA and the Gemma 3 / SigLIP masks (spec/model.md §5.4, §6):
//   q[B,T,H,D], k,v[B,T,Hkv,D] -> out[B,T,H,D]; query head h reads kv head g = h / (H/Hkv)
//   s_ij = (q_i · k_j) * scale                  for visible keys j (the rule of mg_attention_args, engine/backend.h)
//   out_i = Σ_j softmax_j(s_ij) v_j
// A query with no visible key gets zeros. Written with `=`. The T×T scores are never stored.
// The backward (the second half of this file) accumulates dq[B,T,H,D], dk, dv[B,T,Hkv,D] `+=`
// from dout and the forward's q, k, v, out; its block comment gives the math.
//
// Three kernels, chosen by plain conditions in the launcher (attention_uses_tensor_cores, then
// attention_sm90_fits):
// - attention_forward_sm90_kernel (attention_sm90.cu; an H100/H200, no mask, D <= 128): the same
//   scheme on Hopper's warpgroup MMA (wgmma). SigLIP's attention.
// - attention_forward_tc_kernel (D a multiple of 8, D <= 256, q/k/v 16-byte aligned): the
//   FlashAttention-2 scheme on tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulators).
//   Scores and softmax in fp32; P rounded to bf16 for the P·V product (as flash/SDPA kernels do).
// - attention_forward_fp32_kernel (any D <= 256, any alignment): fp32 on CUDA cores, P in fp32.
#include <limits.h>

#include "kernels/cuda/attention_sm90.cuh"
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

enum { ATTN_MAX_D = 256 };

// ================================================================================================
// Tensor-core kernel (FlashAttention-2 forward on mma.sync; the same code for sm_80 and sm_90a).
//
// One block of TC_WARPS = 4 warps per (query tile of BQ rows, head h, batch row b); warp w owns
// the WM = BQ/64 consecutive m16 row blocks starting at row 16·WM·w of the tile. With WM = 2 (BQ =
// 128, SigLIP's head dim) each K/V fragment read from shared memory feeds two mma, which halves
// the shared-memory reads per mma against WM = 1, and each K/V tile loaded serves 128 queries.
// Shared memory holds the Q tile and two stages of K and V tiles of BK keys, rows of DP bf16 (D
// padded with zeros to DP, a multiple of 16, for the k16 steps of Q·Kᵀ) plus 8 unused bf16 so
// that the 8 row addresses of an ldmatrix fall in 8 different 16-byte bank groups (row stride
// DP/2 + 4 words ≡ 4 mod 8). One barrier per K/V tile n:
//   wait for tile n; barrier (tile n visible; every warp is done with tile n-1, whose stage is free)
//   issue the cp.async copies of tile n+1 into the other stage
//   S = Q·K_nᵀ, mask, online softmax, O += bf16(P)·V_n
// so the copies of a tile overlap the whole computation of the previous one.
// Fragment layouts are PTX's for mma.m16n8k16 (g = lane/4, t = lane%4): an accumulator holds
// (row g, cols 2t, 2t+1) in c0,c1 and (row g+8, same cols) in c2,c3; the A operand of the P·V
// product is therefore the S accumulators of two adjacent 8-key blocks, converted in registers.
// P·V runs over n8 blocks of D (not DP): 72 = 9 blocks, so the padding costs only Q·Kᵀ work.
// ================================================================================================

enum {
    TC_WARPS = 4,
    TC_THREADS = TC_WARPS * 32,
};

// Keys per K/V tile: 64, or 32 for DP = 256 so that two stages of K and V (and the Q tile) stay
// under 100 KB and two blocks fit on an SM.
static constexpr __host__ __device__ int tc_key_tile(int DP) { return DP <= 128 ? 64 : 32; }

// Key code in shared memory: the key's image group (>= 0), -1 for a visible text key, or
// TC_KEY_HIDDEN for padding and for rows past the last key the block reads.
static constexpr int TC_KEY_HIDDEN = -2;

// Four 8×8 bf16 matrices; lane l gives the row address of matrix l/8, row l%8; r[i] is matrix i's
// (row lane/4, cols 2(lane%4), +1), or with .trans its (rows 2(lane%4), +1, col lane/4).
static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const bf16 *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(row)));
}
static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const bf16 *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(row)));
}

// Rows [j0, j0 + rows) of a [token][stride] bf16 slab into dst[rows][DP + 8]: the D real columns
// by cp.async, rows at or past `end` as zeros (their V rows meet P = 0 in the mma, so they must
// not hold NaN garbage). Columns D..DP-1 were zeroed once at block start.
template <int DP>
static __device__ __forceinline__ void tc_load_rows(bf16 *dst, const bf16 *src, int64_t stride, int j0, int end,
                                                    int rows, int D) {
    const int chunks = D / 8;  // 16-byte pieces per row
    for (int c = threadIdx.x; c < rows * chunks; c += TC_THREADS) {
        const int r = c / chunks, col = (c % chunks) * 8;
        bf16 *d = dst + r * (DP + 8) + col;
        if (j0 + r < end) cp_async16(d, src + (int64_t)(j0 + r) * stride + col);
        else *reinterpret_cast<uint4 *>(d) = make_uint4(0, 0, 0, 0);
    }
}

// Zeroes columns D..DP-1 of `rows` consecutive rows of DP + 8 bf16 (the whole block takes part).
// D is a parameter, not the caller's constant, so that D = DP compiles without a zero divisor.
template <int DP>
static __device__ __forceinline__ void tc_zero_pad(bf16 *rows_base, int rows, int D) {
    const int pad = DP - D;
    for (int e = threadIdx.x; e < rows * pad; e += TC_THREADS)
        rows_base[(e / pad) * (DP + 8) + D + e % pad] = __float2bfloat16_rn(0.0f);
}

// The key code of key j (see TC_KEY_HIDDEN); keys at or past `end` are hidden.
static __device__ __forceinline__ int tc_key_code(const mg_attention_args &a, int64_t b, int j, int end) {
    if (j >= end || (a.key_valid && a.key_valid[b * a.T + j] == 0)) return TC_KEY_HIDDEN;
    return a.group ? a.group[b * a.T + j] : -1;
}

// One past the last key the query tile [q0, q_last] can see under causal + image groups: a key
// after q_last is visible only through an image it shares with some query of the tile, so the
// block reads up to the last key whose group lies in [min, max] of the tile's query groups
// (exact when images are contiguous runs, and never too short otherwise). One pass over the
// row's group ids: O(T) per block, small next to the block's O(T·D) of K/V reads.
template <int BQ>
static __device__ int tc_causal_group_end(const mg_attention_args &a, int64_t b, int q0, int q_last) {
    __shared__ int range[3];  // min group, max group, last key seen through an image
    if (threadIdx.x == 0) range[0] = INT_MAX, range[1] = -1, range[2] = -1;
    __syncthreads();
    for (int r = threadIdx.x; r < BQ; r += TC_THREADS)
        if (q0 + r <= q_last) {
            const int gid = a.group[b * a.T + q0 + r];
            if (gid >= 0) atomicMin(&range[0], gid), atomicMax(&range[1], gid);
        }
    __syncthreads();
    const int gmin = range[0], gmax = range[1];
    if (gmax >= 0)
        for (int j = q_last + 1 + threadIdx.x; j < a.T; j += TC_THREADS) {
            const int gid = a.group[b * a.T + j];
            if (gid >= gmin && gid <= gmax) atomicMax(&range[2], j);
        }
    __syncthreads();
    return range[2] > q_last ? range[2] + 1 : q_last + 1;
}

// DP: D padded to a multiple of 16 (>= D); BQ: query rows per block, 64 or 128 (WM = 1 or 2 m16
// blocks per warp). Shared memory: attention_tc_smem_bytes(DP, BQ). Two blocks per SM at most
// 255 registers each.
// Each row's log-sum-exp of the scaled scores, in base 2, goes to lse2[b, h, i] = log2 Σ_j
// 2^(s_ij·log2 e) (+inf for a row that sees no key) when lse2 is not NULL (training: the backward
// reads it). STATS (the backward's first pass when the forward left no lse2): no V, no P·V and no
// out, only lse2.
template <int DP, int BQ, bool STATS, int DC>
static __global__ void __launch_bounds__(TC_THREADS, 2)
    attention_forward_tc_kernel(bf16 *out, float *lse2, const bf16 *q, const bf16 *k, const bf16 *v,
                                mg_attention_args a) {
    constexpr int WM = BQ / (16 * TC_WARPS);  // m16 row blocks per warp
    constexpr int BK = tc_key_tile(DP);
    constexpr int LD = DP + 8;                // shared row stride (bf16)
    constexpr int NB = BK / 8;                // 8-key blocks of S
    constexpr int KS = DP / 16;               // k16 steps of Q·Kᵀ
    constexpr int DB = DP / 8;                // 8-dim blocks of O (those at or past D stay unused)
    // Q's A fragments stay in registers for the whole block when they fit (4·WM·KS registers: 40
    // at DP = 80); at DP = 256 they are re-read from shared memory at each k16 step.
    constexpr bool Q_IN_REGS = DP <= 128;
    static_assert(WM == 1 || WM == 2, "BQ is 64 or 128");
    static_assert(BK <= TC_THREADS, "one thread per key code");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *qs = reinterpret_cast<bf16 *>(smem_raw);               // [BQ][LD]
    bf16 *ks = qs + BQ * LD;                                      // [2][BK][LD]
    bf16 *vs = ks + 2 * BK * LD;                                  // [2][BK][LD]
    int *kcode = reinterpret_cast<int *>(vs + 2 * BK * LD);       // [2][BK]

    // Token indices are int (T < 2^31, checked by mg_cuda_attention_forward); element offsets int64.
    const int D = DC ? DC : a.D, H = a.H, Hkv = a.Hkv, T = (int)a.T;
    const int64_t b = blockIdx.z;
    const int h = blockIdx.y, g = h / (H / Hkv);
    const int q0 = blockIdx.x * BQ;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t q_stride = (int64_t)H * D, kv_stride = (int64_t)Hkv * D;  // elements between tokens
    const bf16 *q_bh = q + (b * T * H + h) * D;   // token 0 of (b, h)
    const bf16 *k_bg = k + (b * T * Hkv + g) * D;
    const bf16 *v_bg = v + (b * T * Hkv + g) * D;

    // Keys that can be visible to some query of the tile: the window hides j <= i - window for
    // every query (also on image blocks); causal hides j > the last query unless an image the
    // tile's queries belong to goes on past it.
    const int q_last = (q0 + BQ < T ? q0 + BQ : T) - 1;
    int kv_begin = 0, kv_end = T;
    if (a.window > 0 && q0 - a.window + 1 > 0) kv_begin = q0 - a.window + 1;
    if (a.causal) kv_end = a.group ? tc_causal_group_end<BQ>(a, b, q0, q_last) : q_last + 1;

    // Zero the pad columns D..DP-1 of every row once (no copy writes them).
    tc_zero_pad<DP>(qs, BQ + 4 * BK, D);
    tc_load_rows<DP>(qs, q_bh, q_stride, q0, T, BQ, D);
    tc_load_rows<DP>(ks, k_bg, kv_stride, kv_begin, kv_end, BK, D);
    if constexpr (!STATS) tc_load_rows<DP>(vs, v_bg, kv_stride, kv_begin, kv_end, BK, D);
    cp_async_commit();
    if (threadIdx.x < BK) kcode[threadIdx.x] = tc_key_code(a, b, kv_begin + threadIdx.x, kv_end);

    // This warp's rows [w_first, w_first + 16·WM); this thread's 2·WM query rows (fragment rows g
    // and g+8 of each m16 block).
    const int w_first = q0 + warp * 16 * WM, w_last = w_first + 16 * WM - 1;
    const int fr = lane >> 2, fc = 2 * (lane & 3);
    int qi[WM][2];
    int qgroup[WM][2];
#pragma unroll
    for (int mt = 0; mt < WM; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            qi[mt][r] = w_first + 16 * mt + fr + 8 * r;
            qgroup[mt][r] = (a.group && qi[mt][r] < T) ? a.group[b * T + qi[mt][r]] : -1;
        }

    // Online-softmax state per row: the running max m of the raw scores (the same in the four
    // lanes of a row), this lane's share of the running sum l, the O accumulators. Probabilities
    // are p = 2^(s·c - m·c) with c = scale·log2(e) (scale > 0: the max of s·c is c·max s), one
    // fma and one ex2 per score.
    const float c_log2 = a.scale * 1.4426950408889634f;
    float m[WM][2], l[WM][2];
    float o[WM][DB][4];
#pragma unroll
    for (int mt = 0; mt < WM; mt++) {
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
        for (int d = 0; d < DB; d++) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.0f;
    }
    uint32_t qreg[Q_IN_REGS ? WM : 1][Q_IN_REGS ? KS : 1][4];  // Q's A fragments (when Q_IN_REGS)

    int stage = 0;
    for (int k0 = kv_begin; k0 < kv_end; k0 += BK, stage ^= 1) {
        cp_async_wait_all();
        __syncthreads();  // tile n (and Q) landed; every warp is done with tile n-1 and its stage
        const bf16 *ks_n = ks + stage * BK * LD, *vs_n = vs + stage * BK * LD;
        const int *kcode_n = kcode + stage * BK;
        const int k1 = k0 + BK;  // tile n+1, into the other stage
        int next_code = TC_KEY_HIDDEN;
        if (k1 < kv_end) {
            tc_load_rows<DP>(ks + (stage ^ 1) * BK * LD, k_bg, kv_stride, k1, kv_end, BK, D);
            if constexpr (!STATS) tc_load_rows<DP>(vs + (stage ^ 1) * BK * LD, v_bg, kv_stride, k1, kv_end, BK, D);
            cp_async_commit();
            if (threadIdx.x < BK) next_code = tc_key_code(a, b, k1 + threadIdx.x, kv_end);  // stored after the math
        }
        if constexpr (Q_IN_REGS) {
            if (k0 == kv_begin)
#pragma unroll
                for (int mt = 0; mt < WM; mt++)
#pragma unroll
                    for (int kk = 0; kk < KS; kk++)
                        ldmatrix_x4(qreg[mt][kk], qs + (warp * 16 * WM + 16 * mt + (lane & 15)) * LD + 16 * kk + (lane >> 4) * 8);
        }

        // The warp skips a tile none of its rows can see: rows past T, keys all after its last
        // row (causal, no images) or all before its first row's window.
        const bool warp_skips = w_first >= T || (a.causal && !a.group && k0 > w_last) ||
                                (a.window > 0 && w_first - (k1 - 1) >= a.window);
        if (!warp_skips) {
            // S = Q·K_nᵀ: 16·WM query rows × BK keys per warp; each K fragment feeds WM mma.
            float s[WM][NB][4];
#pragma unroll
            for (int mt = 0; mt < WM; mt++)
#pragma unroll
                for (int n = 0; n < NB; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t qa[WM][4];  // rows 0-7/8-15 × dims 16kk..+7/16kk+8..+15 of each m16 block
#pragma unroll
                for (int mt = 0; mt < WM; mt++) {
                    if constexpr (Q_IN_REGS)
#pragma unroll
                        for (int e = 0; e < 4; e++) qa[mt][e] = qreg[mt][kk][e];
                    else
                        ldmatrix_x4(qa[mt], qs + (warp * 16 * WM + 16 * mt + (lane & 15)) * LD + 16 * kk + (lane >> 4) * 8);
                }
#pragma unroll
                for (int n = 0; n < NB; n += 2) {
                    uint32_t kb[4];  // keys 8n..8n+7 × dims 16kk../16kk+8.., then keys 8n+8..8n+15
                    ldmatrix_x4(kb, ks_n + (8 * n + (lane & 7) + (lane >> 4) * 8) * LD + 16 * kk + ((lane >> 3) & 1) * 8);
#pragma unroll
                    for (int mt = 0; mt < WM; mt++) {
                        mma_bf16_16816(s[mt][n], qa[mt], kb[0], kb[1]);
                        mma_bf16_16816(s[mt][n + 1], qa[mt], kb[2], kb[3]);
                    }
                }
            }

            // Mask per element (raw score -> -inf) unless every key of the tile is visible to every
            // row of the warp: no padding, no key past kv_end, causal and window satisfied by every
            // pair (image groups only add visibility, so they need no check then).
            const bool all_visible = !a.key_valid && k1 <= kv_end && (!a.causal || k1 - 1 <= w_first) &&
                                     (a.window == 0 || w_last - k0 < a.window);
            if (!all_visible)
#pragma unroll
                for (int mt = 0; mt < WM; mt++)
#pragma unroll
                    for (int n = 0; n < NB; n++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int r = e >> 1, jt = 8 * n + fc + (e & 1);
                            const int i = qi[mt][r], j = k0 + jt;
                            const int code = kcode_n[jt];
                            const bool causal_ok = !a.causal || j <= i;
                            const bool same_image = qgroup[mt][r] >= 0 && code == qgroup[mt][r];
                            const bool in_window = a.window == 0 || i - j < a.window;
                            if (code == TC_KEY_HIDDEN || !(causal_ok || same_image) || !in_window)
                                s[mt][n][e] = -INFINITY;
                        }

            // Online softmax per row: new max over the quad, rescale the old state, p = 2^(s·c - m·c).
#pragma unroll
            for (int mt = 0; mt < WM; mt++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float mx = m[mt][r];
#pragma unroll
                    for (int n = 0; n < NB; n++) mx = fmaxf(mx, fmaxf(s[mt][n][2 * r], s[mt][n][2 * r + 1]));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                    const float base = mx == -INFINITY ? 0.0f : mx * c_log2;  // nothing visible yet: every p is 0
                    const float corr = exp2_fast(fmaf(m[mt][r], c_log2, -base));  // 0 while m is still -inf
                    m[mt][r] = mx;
                    float sum = 0.0f;
#pragma unroll
                    for (int n = 0; n < NB; n++) {
                        s[mt][n][2 * r] = exp2_fast(fmaf(s[mt][n][2 * r], c_log2, -base));
                        s[mt][n][2 * r + 1] = exp2_fast(fmaf(s[mt][n][2 * r + 1], c_log2, -base));
                        sum += s[mt][n][2 * r] + s[mt][n][2 * r + 1];
                    }
                    l[mt][r] = l[mt][r] * corr + sum;
                    if constexpr (!STATS)
#pragma unroll
                        for (int d = 0; d < DB; d++) {
                            o[mt][d][2 * r] *= corr;
                            o[mt][d][2 * r + 1] *= corr;
                        }
                }

            // O += bf16(P)·V_n, 16 keys per step: P's A fragment is S of key blocks 2j and 2j+1;
            // each V fragment (16 keys × 16 dims) feeds 2·WM mma, over the dims below D only.
            if constexpr (!STATS)
#pragma unroll
            for (int j = 0; j < NB / 2; j++) {
                uint32_t pa[WM][4];
#pragma unroll
                for (int mt = 0; mt < WM; mt++) {
                    pa[mt][0] = pack_bf16x2(s[mt][2 * j][0], s[mt][2 * j][1]);
                    pa[mt][1] = pack_bf16x2(s[mt][2 * j][2], s[mt][2 * j][3]);
                    pa[mt][2] = pack_bf16x2(s[mt][2 * j + 1][0], s[mt][2 * j + 1][1]);
                    pa[mt][3] = pack_bf16x2(s[mt][2 * j + 1][2], s[mt][2 * j + 1][3]);
                }
#pragma unroll
                for (int d = 0; d < DB; d += 2) {
                    if (8 * d >= D) continue;  // warp-uniform; D is a multiple of 8
                    uint32_t vb[4];  // keys 16j..+7/+8..+15 × dims 8d..8d+7, then dims 8d+8..8d+15
                    ldmatrix_x4_trans(vb, vs_n + (16 * j + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + 8 * d + (lane >> 4) * 8);
#pragma unroll
                    for (int mt = 0; mt < WM; mt++) {
                        mma_bf16_16816(o[mt][d], pa[mt], vb[0], vb[1]);
                        if (8 * d + 8 < D) mma_bf16_16816(o[mt][d + 1], pa[mt], vb[2], vb[3]);
                    }
                }
            }
        }
        if (threadIdx.x < BK && k1 < kv_end) kcode[(stage ^ 1) * BK + threadIdx.x] = next_code;
    }

    // out = O / l, rounded to bf16 once; l summed over the quad (no visible key: l = 0, zeros).
    // lse2 = m·c + log2 l, as p was 2^(s·c - m·c) (+inf when l = 0: the backward's P is 0).
#pragma unroll
    for (int mt = 0; mt < WM; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float sum = l[mt][r];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            if (qi[mt][r] >= T) continue;
            if (lse2 && (lane & 3) == 0)
                lse2[(b * H + h) * T + qi[mt][r]] = sum > 0.0f ? m[mt][r] * c_log2 + log2f(sum) : INFINITY;
            if constexpr (STATS) continue;
            const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
            bf16 *orow = out + (b * T + qi[mt][r]) * q_stride + (int64_t)h * D;
#pragma unroll
            for (int d = 0; d < DB; d++) {
                const int col = 8 * d + fc;  // D is a multiple of 8: col < D iff the whole block is real
                if (8 * d < D)
                    *reinterpret_cast<uint32_t *>(orow + col) =
                        pack_bf16x2(o[mt][d][2 * r] * inv, o[mt][d][2 * r + 1] * inv);
            }
        }
}

static size_t attention_tc_smem_bytes(int DP, int BQ) {
    const int BK = tc_key_tile(DP);
    return sizeof(bf16) * (size_t)(BQ + 4 * BK) * (DP + 8) + sizeof(int) * 2 * BK;
}

template <int DP, int BQ, bool STATS, int DC>
static mg_status attention_forward_tc_launch_cfg(mg_cuda_ctx *ctx, bf16 *out, float *lse2, const bf16 *q,
                                                 const bf16 *k, const bf16 *v, const mg_attention_args *a) {
    const size_t smem = attention_tc_smem_bytes(DP, BQ);
    if (smem > ctx->smem_optin)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "attention: D=%d needs %zu bytes of shared memory, %s allows %zu",
                       a->D, smem, ctx->name, ctx->smem_optin);
    // Above 48 KB a block needs the opt-in (DP = 80 takes 66 KB, DP = 256 99 KB).
    MG_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_tc_kernel<DP, BQ, STATS, DC>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)((a->T + BQ - 1) / BQ), (unsigned)a->H, (unsigned)a->B);
    attention_forward_tc_kernel<DP, BQ, STATS, DC><<<grid, TC_THREADS, smem, ctx->stream>>>(out, lse2, q, k, v, *a);
    MG_CUDA_LAUNCH_CHECK(attention_forward_tc_kernel);
    return MG_OK;
}

// The head dim each padded width DP is also compiled for exactly (DC = D): SigLIP's 72 at DP = 80,
// D = DP otherwise. With D a compile-time constant the kernels' per-block `8·d < D` tests and
// their address arithmetic fold away (the SigLIP backward ran about 1/3 of its instructions
// there); any other multiple of 8 runs the DC = 0 build, which reads D from the arguments.
static constexpr int tc_exact_dim(int DP) { return DP == 80 ? 72 : DP; }

template <int DP, int BQ, bool STATS>
static mg_status attention_forward_tc_launch_dp(mg_cuda_ctx *ctx, bf16 *out, float *lse2, const bf16 *q,
                                                const bf16 *k, const bf16 *v, const mg_attention_args *a) {
    if (a->D == tc_exact_dim(DP))
        return attention_forward_tc_launch_cfg<DP, BQ, STATS, tc_exact_dim(DP)>(ctx, out, lse2, q, k, v, a);
    return attention_forward_tc_launch_cfg<DP, BQ, STATS, 0>(ctx, out, lse2, q, k, v, a);
}

// The configuration, chosen here only: D padded to the smallest DP of 32, 64, 80, 128, 256 that
// holds it (80 for SigLIP's 72, 256 for Gemma); 128-row query tiles (two m16 blocks per warp)
// where the accumulators fit in registers (DP <= 80), 64-row tiles above.
template <bool STATS>
static mg_status attention_tc_launch(mg_cuda_ctx *ctx, bf16 *out, float *lse2, const bf16 *q, const bf16 *k,
                                     const bf16 *v, const mg_attention_args *a) {
    const int D = a->D;
    if (D <= 32) return attention_forward_tc_launch_dp<32, 128, STATS>(ctx, out, lse2, q, k, v, a);
    if (D <= 64) return attention_forward_tc_launch_dp<64, 128, STATS>(ctx, out, lse2, q, k, v, a);
    if (D <= 80) return attention_forward_tc_launch_dp<80, 128, STATS>(ctx, out, lse2, q, k, v, a);
    if (D <= 128) return attention_forward_tc_launch_dp<128, 64, STATS>(ctx, out, lse2, q, k, v, a);
    return attention_forward_tc_launch_dp<256, 64, STATS>(ctx, out, lse2, q, k, v, a);
}
static mg_status attention_forward_tc_launch(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                             const bf16 *v, const mg_attention_args *a) {
    return attention_tc_launch<false>(ctx, out, a->lse2, q, k, v, a);
}

// ================================================================================================
// fp32 kernel (the fallback for head dims and alignments the tensor-core kernel does not take).
//
// One block per (query tile of BQ rows, head h, batch row b); key/value tiles of BK = 32 rows go
// through shared memory (as fp32); each warp owns QPW queries and keeps for each an
// online-softmax state (running max m, running sum l, the output accumulator spread over the
// lanes: lane owns dims lane + 32t, t < DPL). Scores: lane j of the warp computes the score of key
// k0 + j in full, so the max and the sum need one warp reduction per tile. P stays fp32.
// ================================================================================================

enum {
    ATTN_WARPS = 4,                   // warps per block
    ATTN_QPW = 4,                     // queries per warp
    ATTN_BQ = ATTN_WARPS * ATTN_QPW,  // queries per block
    ATTN_BK = 32,                     // keys per tile: one per lane
};

// Shared memory (floats): q tile [BQ][D], k tile [BK][D+1] (the +1 keeps lane j's reads of row j
// in distinct banks for even D), v tile [BK][D].
static size_t attention_fp32_smem_bytes(int D) {
    return sizeof(float) * ((size_t)ATTN_BQ * D + (size_t)ATTN_BK * (D + 1) + (size_t)ATTN_BK * D);
}

// DPL = ceil(D / 32): dims per lane, a compile-time bound so the accumulators stay in registers.
template <int DPL>
static __global__ void __launch_bounds__(ATTN_WARPS * 32)
    attention_forward_fp32_kernel(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, mg_attention_args a) {
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

    // Keys that can be visible to some query of the tile (as in the tensor-core kernel).
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
        if (a.lse2 && lane == 0)  // log2 Σ e^s = m·log2 e + log2 l (natural-base m and l here)
            a.lse2[(b * H + h) * T + i] = l[qi] > 0.0f ? m[qi] * 1.4426950408889634f + log2f(l[qi]) : INFINITY;
        bf16 *o = out + ((b * T + i) * H + h) * D;
#pragma unroll
        for (int t = 0; t < DPL; t++) {
            const int d = lane + 32 * t;
            if (d < D) o[d] = to_bf16(acc[qi][t] * inv_l);
        }
    }
}

template <int DPL>
static mg_status attention_forward_fp32_launch_dpl(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                                   const bf16 *v, const mg_attention_args *a) {
    const size_t smem = attention_fp32_smem_bytes(a->D);
    // Above 48 KB a block needs the opt-in (D = 256 takes 80 KB).
    MG_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_fp32_kernel<DPL>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)((a->T + ATTN_BQ - 1) / ATTN_BQ), (unsigned)a->H, (unsigned)a->B);
    attention_forward_fp32_kernel<DPL><<<grid, ATTN_WARPS * 32, smem, ctx->stream>>>(out, q, k, v, *a);
    MG_CUDA_LAUNCH_CHECK(attention_forward_fp32_kernel);
    return MG_OK;
}

// Picks the instantiation whose DPL covers D.
static mg_status attention_forward_fp32_launch(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                               const bf16 *v, const mg_attention_args *a) {
    if (attention_fp32_smem_bytes(a->D) > ctx->smem_optin)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "attention: D=%d needs %zu bytes of shared memory, %s allows %zu",
                       a->D, attention_fp32_smem_bytes(a->D), ctx->name, ctx->smem_optin);
    switch ((a->D + 31) / 32) {
    case 1: return attention_forward_fp32_launch_dpl<1>(ctx, out, q, k, v, a);
    case 2: return attention_forward_fp32_launch_dpl<2>(ctx, out, q, k, v, a);
    case 3: return attention_forward_fp32_launch_dpl<3>(ctx, out, q, k, v, a);
    case 4: return attention_forward_fp32_launch_dpl<4>(ctx, out, q, k, v, a);
    case 5: return attention_forward_fp32_launch_dpl<5>(ctx, out, q, k, v, a);
    case 6: return attention_forward_fp32_launch_dpl<6>(ctx, out, q, k, v, a);
    case 7: return attention_forward_fp32_launch_dpl<7>(ctx, out, q, k, v, a);
    default: return attention_forward_fp32_launch_dpl<8>(ctx, out, q, k, v, a);
    }
}

// ================================================================================================

// The tensor-core kernel copies 16-byte pieces of q/k/v rows (cp.async) and stores bf16 pairs of
// out: it needs D a multiple of 8 and 16-byte aligned q, k, v (4-byte aligned out follows from
// D even once out is 4-byte aligned).
static bool attention_uses_tensor_cores(const void *out, const void *q, const void *k, const void *v, int D) {
    const uintptr_t in_addr = (uintptr_t)q | (uintptr_t)k | (uintptr_t)v;
    return D % 8 == 0 && in_addr % 16 == 0 && (uintptr_t)out % 4 == 0;
}

// The argument checks of the forward and backward entries (`op` names the entry in the message).
static mg_status attention_check_args(const mg_attention_args *a, const char *op) {
    if (a->B <= 0 || a->B > 65535 || a->T <= 0 || a->T > INT_MAX || a->H <= 0 || a->H > 65535 || a->Hkv <= 0 ||
        a->H % a->Hkv != 0)
        return mg_fail(MG_ERR_SHAPE, NULL,
                       "%s: B=%lld T=%lld H=%d Hkv=%d (need B, H <= 65535, T < 2^31 and H a multiple of Hkv)", op,
                       (long long)a->B, (long long)a->T, a->H, a->Hkv);
    if (a->D <= 0 || a->D > ATTN_MAX_D)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "%s: head dim D=%d, this kernel handles 1..%d", op, a->D,
                       ATTN_MAX_D);
    if (a->window < 0) return mg_fail(MG_ERR_ARG, NULL, "%s: window=%d must be >= 0", op, a->window);
    // The tensor-core kernel takes the row max of the raw scores (valid for a positive scale).
    if (!(a->scale > 0.0f) || a->scale == INFINITY)
        return mg_fail(MG_ERR_ARG, "pass scale = 1/sqrt(D) or another positive finite value",
                       "%s: scale=%g must be positive and finite", op, (double)a->scale);
    return MG_OK;
}

extern "C" mg_status mg_cuda_attention_forward(mg_cuda_ctx *ctx, void *out, const void *q, const void *k,
                                               const void *v, const mg_attention_args *a) {
    MG_TRY(attention_check_args(a, "attention"));
    if (attention_uses_tensor_cores(out, q, k, v, a->D)) {
        if (attention_sm90_fits(ctx, a))
            return attention_forward_sm90_launch(ctx, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, a);
        return attention_forward_tc_launch(ctx, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, a);
    }
    return attention_forward_fp32_launch(ctx, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, a);
}

// ================================================================================================
// Backward (FlashAttention-2's scheme: P is recomputed from each row's log-sum-exp, never stored).
// For every (b, h) and the visible pairs (i, j) of the forward's mask, s_ij = q_i·k_j·scale:
//   lse2_i = log2 Σ_j 2^(s_ij·log2 e)            (+inf for a query that sees no key)
//   P_ij   = 2^(s_ij·log2 e − lse2_i)            (0 for a hidden pair)
//   Δ_i    = Σ_d dout_id · out_id                (= Σ_j P_ij dP_ij, from the forward's out)
//   dP_ij  = dout_i · v_j,   dS_ij = P_ij (dP_ij − Δ_i)
//   dq_i  += scale · Σ_j dS_ij k_j
//   dk_j  += scale · Σ_{h of kv head g} Σ_i dS_ij q_i,   dv_j += Σ_{h of g} Σ_i P_ij dout_i
// dq, dk, dv accumulate (`+=`: read as bf16, the fp32 sum added, rounded once). A query that sees
// no key has P = 0 everywhere and contributes nothing.
// Passes, all on ctx->stream, through a fp32 scratch of lse2 and Δ, each (B, H, T) (ctx->attn_scratch):
//   1. attention_backward_delta_kernel: Δ.
//   2. lse2: on tensor cores the forward's own (a->lse2, written by the training forward), else
//      attention_forward_tc_kernel<STATS>; inside the fp32 dq kernel on that path.
//   3. dq: one block per query tile looping over the key tiles it can see (the forward's tiling);
//   4. dk, dv: one block per key tile of a kv head looping over the query tiles of its H/Hkv query
//      heads that can see it.
// dq and dk/dv have separate owners, so nothing is summed with atomics and the result does not
// depend on scheduling (bit-identical across runs); the price is recomputing S and dP in pass 4
// (and lse2's Q·Kᵀ in pass 2 when the forward left none): 8 T×T×D products instead of
// FlashAttention-2's 5.
// Up to D = 80 on tensor cores (SigLIP), passes 3 and 4 are one (FUSED, FlashAttention-2's
// scheme): the dk/dv kernel also computes each tile's dQ and adds it with fp32 atomics to a
// scratch accumulator, then dq += scale · acc; 5 products (6 without the forward's lse2), dq's
// last bits scheduling-dependent.
// Tensor cores when D is a multiple of 8 and q, k, v, dout, dq, dk, dv are 16-byte aligned
// (P and dS rounded to bf16 for their products, as in the forward); fp32 on CUDA cores otherwise.
// ================================================================================================

// Δ[b, h, i] = Σ_d dout[b,i,h,d] · out[b,i,h,d]: one warp per (b, i, h) row, any D and alignment.
static __global__ void attention_backward_delta_kernel(float *delta, const bf16 *dout, const bf16 *out,
                                                       mg_attention_args a) {
    const int lane = threadIdx.x & 31, D = a.D, H = a.H;
    const int64_t T = a.T, rows = a.B * T * H, warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
        const bf16 *o = out + row * D, *d_o = dout + row * D;
        float sum = 0.0f;
        for (int d = lane; d < D; d += 32) sum += ld_bf16(d_o + d) * ld_bf16(o + d);
        sum = warp_sum(sum);  // row is the same in the whole warp: every lane takes part
        if (lane == 0) {
            const int64_t h = row % H, bt = row / H, i = bt % T, b = bt / T;
            delta[(b * H + h) * T + i] = sum;
        }
    }
}

// ---- tensor cores: dq --------------------------------------------------------------------------
// The forward's tiling with BQ = 64 (one m16 row block per warp): Q and dout tiles stay in shared
// memory, K and V tiles stream through two stages (one barrier per tile, as in the forward). Per
// K/V tile, warp w (its 16 query rows × BK keys):
//   S = Q·Kᵀ, dP = dout·Vᵀ (one loop: each Q / dout fragment meets the K / V fragment of the same
//   keys), P = 2^(S·c − lse2) where visible, dS = P (dP − Δ) in S's registers,
//   dQ += bf16(dS)·K (dS's accumulators are the A fragments, as P in the forward's P·V; K read
//   with ldmatrix.trans as V there).
// Accumulators: DP/2 floats for dQ, BK/4 for each of S and dP (160 + fragments at DP = 256). Up
// to DP = 80 the Q and dout A fragments stay in registers for the whole block (DP/2 registers).
template <int DP, int DC>
static __global__ void __launch_bounds__(TC_THREADS, 2)
    attention_backward_dq_tc_kernel(bf16 *dq, const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
                                    const float *lse2, const float *delta, mg_attention_args a) {
    constexpr int BQ = 16 * TC_WARPS;  // query rows per block
    constexpr int BK = tc_key_tile(DP);
    constexpr int LD = DP + 8;         // shared row stride (bf16), as in the forward
    constexpr int NB = BK / 8;         // 8-key blocks of S and dP
    constexpr int KS = DP / 16;        // k16 steps of Q·Kᵀ
    constexpr int DB = DP / 8;         // 8-dim blocks of dQ (those at or past D stay unused)
    constexpr bool QD_IN_REGS = DP <= 80;
    static_assert(BK <= TC_THREADS, "one thread per key code");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *qs = reinterpret_cast<bf16 *>(smem_raw);          // [BQ][LD]
    bf16 *dos = qs + BQ * LD;                                // [BQ][LD]
    bf16 *ks = dos + BQ * LD;                                // [2][BK][LD]
    bf16 *vs = ks + 2 * BK * LD;                             // [2][BK][LD]
    int *kcode = reinterpret_cast<int *>(vs + 2 * BK * LD);  // [2][BK]

    const int D = DC ? DC : a.D, H = a.H, Hkv = a.Hkv, T = (int)a.T;
    const int64_t b = blockIdx.z;
    const int h = blockIdx.y, g = h / (H / Hkv);
    const int q0 = blockIdx.x * BQ;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t q_stride = (int64_t)H * D, kv_stride = (int64_t)Hkv * D;
    const bf16 *q_bh = q + (b * T * H + h) * D, *do_bh = dout + (b * T * H + h) * D;
    const bf16 *k_bg = k + (b * T * Hkv + g) * D, *v_bg = v + (b * T * Hkv + g) * D;

    // The keys some query of the tile can see (as in the forward).
    const int q_last = (q0 + BQ < T ? q0 + BQ : T) - 1;
    int kv_begin = 0, kv_end = T;
    if (a.window > 0 && q0 - a.window + 1 > 0) kv_begin = q0 - a.window + 1;
    if (a.causal) kv_end = a.group ? tc_causal_group_end<BQ>(a, b, q0, q_last) : q_last + 1;

    // Zero the pad columns D..DP-1 of every row once (no copy writes them).
    tc_zero_pad<DP>(qs, 2 * BQ + 4 * BK, D);
    tc_load_rows<DP>(qs, q_bh, q_stride, q0, T, BQ, D);
    tc_load_rows<DP>(dos, do_bh, q_stride, q0, T, BQ, D);
    tc_load_rows<DP>(ks, k_bg, kv_stride, kv_begin, kv_end, BK, D);
    tc_load_rows<DP>(vs, v_bg, kv_stride, kv_begin, kv_end, BK, D);
    cp_async_commit();
    if (threadIdx.x < BK) kcode[threadIdx.x] = tc_key_code(a, b, kv_begin + threadIdx.x, kv_end);

    // This warp's rows [w_first, w_first + 16); this thread's rows g and g+8 of the m16 block, with
    // their group, lse2 and Δ (rows past T: lse2 = +inf, so P = 0; they are never written).
    const int w_first = q0 + warp * 16, w_last = w_first + 15;
    const int fr = lane >> 2, fc = 2 * (lane & 3);
    int qi[2], qgroup[2];
    float qlse[2], qdelta[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        qi[r] = w_first + fr + 8 * r;
        const bool in = qi[r] < T;
        const int64_t stat = (b * H + h) * T + qi[r];
        qgroup[r] = (a.group && in) ? a.group[b * T + qi[r]] : -1;
        qlse[r] = in ? lse2[stat] : INFINITY;
        qdelta[r] = in ? delta[stat] : 0.0f;
    }
    const float c_log2 = a.scale * 1.4426950408889634f;
    float acc[DB][4];
#pragma unroll
    for (int d = 0; d < DB; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;
    // Q's and dout's A fragments (when QD_IN_REGS): rows 0-7/8-15 × dims 16kk..+7/16kk+8..+15
    uint32_t qreg[QD_IN_REGS ? KS : 1][4], dreg[QD_IN_REGS ? KS : 1][4];

    int stage = 0;
    for (int k0 = kv_begin; k0 < kv_end; k0 += BK, stage ^= 1) {
        cp_async_wait_all();
        __syncthreads();  // tile n (and Q, dout) landed; every warp is done with tile n-1 and its stage
        const bf16 *ks_n = ks + stage * BK * LD, *vs_n = vs + stage * BK * LD;
        const int *kcode_n = kcode + stage * BK;
        const int k1 = k0 + BK;  // tile n+1, into the other stage
        int next_code = TC_KEY_HIDDEN;
        if (k1 < kv_end) {
            tc_load_rows<DP>(ks + (stage ^ 1) * BK * LD, k_bg, kv_stride, k1, kv_end, BK, D);
            tc_load_rows<DP>(vs + (stage ^ 1) * BK * LD, v_bg, kv_stride, k1, kv_end, BK, D);
            cp_async_commit();
            if (threadIdx.x < BK) next_code = tc_key_code(a, b, k1 + threadIdx.x, kv_end);  // stored after the math
        }
        if constexpr (QD_IN_REGS) {
            if (k0 == kv_begin)  // Q and dout landed with the first tile
#pragma unroll
                for (int kk = 0; kk < KS; kk++) {
                    const int a_off = (warp * 16 + (lane & 15)) * LD + 16 * kk + (lane >> 4) * 8;
                    ldmatrix_x4(qreg[kk], qs + a_off);
                    ldmatrix_x4(dreg[kk], dos + a_off);
                }
        }

        // The warp skips a tile none of its rows can see (as in the forward).
        const bool warp_skips = w_first >= T || (a.causal && !a.group && k0 > w_last) ||
                                (a.window > 0 && w_first - (k1 - 1) >= a.window);
        if (!warp_skips) {
            float s[NB][4], dp[NB][4];
#pragma unroll
            for (int n = 0; n < NB; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t qa[4], da[4];  // rows 0-7/8-15 × dims 16kk..+7/16kk+8..+15 of Q and of dout
                if constexpr (QD_IN_REGS) {
#pragma unroll
                    for (int e = 0; e < 4; e++) qa[e] = qreg[kk][e], da[e] = dreg[kk][e];
                } else {
                    const int a_off = (warp * 16 + (lane & 15)) * LD + 16 * kk + (lane >> 4) * 8;
                    ldmatrix_x4(qa, qs + a_off);
                    ldmatrix_x4(da, dos + a_off);
                }
#pragma unroll
                for (int n = 0; n < NB; n += 2) {
                    uint32_t kb[4], vb[4];  // keys 8n..8n+7 × dims 16kk../16kk+8.., then keys 8n+8..8n+15
                    const int b_off = (8 * n + (lane & 7) + (lane >> 4) * 8) * LD + 16 * kk + ((lane >> 3) & 1) * 8;
                    ldmatrix_x4(kb, ks_n + b_off);
                    ldmatrix_x4(vb, vs_n + b_off);
                    mma_bf16_16816(s[n], qa, kb[0], kb[1]);
                    mma_bf16_16816(s[n + 1], qa, kb[2], kb[3]);
                    mma_bf16_16816(dp[n], da, vb[0], vb[1]);
                    mma_bf16_16816(dp[n + 1], da, vb[2], vb[3]);
                }
            }

            // dS = P (dP − Δ) into s; the mask as in the forward (every pair visible: no test).
            const bool all_visible = !a.key_valid && k1 <= kv_end && (!a.causal || k1 - 1 <= w_first) &&
                                     (a.window == 0 || w_last - k0 < a.window);
#pragma unroll
            for (int n = 0; n < NB; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1, jt = 8 * n + fc + (e & 1);
                    bool vis = true;
                    if (!all_visible) {
                        const int i = qi[r], j = k0 + jt, code = kcode_n[jt];
                        const bool causal_ok = !a.causal || j <= i;
                        const bool same_image = qgroup[r] >= 0 && code == qgroup[r];
                        const bool in_window = a.window == 0 || i - j < a.window;
                        vis = code != TC_KEY_HIDDEN && (causal_ok || same_image) && in_window;
                    }
                    const float p = vis ? exp2_fast(fmaf(s[n][e], c_log2, -qlse[r])) : 0.0f;
                    s[n][e] = p * (dp[n][e] - qdelta[r]);
                }

            // dQ += bf16(dS)·K_n, 16 keys per step, over the dims below D only.
#pragma unroll
            for (int j = 0; j < NB / 2; j++) {
                uint32_t sa[4];
                sa[0] = pack_bf16x2(s[2 * j][0], s[2 * j][1]);
                sa[1] = pack_bf16x2(s[2 * j][2], s[2 * j][3]);
                sa[2] = pack_bf16x2(s[2 * j + 1][0], s[2 * j + 1][1]);
                sa[3] = pack_bf16x2(s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
                for (int d = 0; d < DB; d += 2) {
                    if (8 * d >= D) continue;  // warp-uniform; D is a multiple of 8
                    uint32_t kt[4];  // keys 16j..+7/+8..+15 × dims 8d..8d+7, then dims 8d+8..8d+15
                    ldmatrix_x4_trans(kt, ks_n + (16 * j + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + 8 * d + (lane >> 4) * 8);
                    mma_bf16_16816(acc[d], sa, kt[0], kt[1]);
                    if (8 * d + 8 < D) mma_bf16_16816(acc[d + 1], sa, kt[2], kt[3]);
                }
            }
        }
        if (threadIdx.x < BK && k1 < kv_end) kcode[(stage ^ 1) * BK + threadIdx.x] = next_code;
    }

    // dq += scale · dQ: each (row, column pair) belongs to this thread alone.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (qi[r] >= T) continue;
        bf16 *row = dq + (b * T + qi[r]) * q_stride + (int64_t)h * D;
#pragma unroll
        for (int d = 0; d < DB; d++) {
            if (8 * d >= D) continue;
            __nv_bfloat162 *p2 = reinterpret_cast<__nv_bfloat162 *>(row + 8 * d + fc);
            const float2 old = __bfloat1622float2(*p2);
            *p2 = __floats2bfloat162_rn(old.x + a.scale * acc[d][2 * r], old.y + a.scale * acc[d][2 * r + 1]);
        }
    }
}

static size_t attention_backward_dq_smem_bytes(int DP) {
    const int BQ = 16 * TC_WARPS, BK = tc_key_tile(DP);
    return sizeof(bf16) * (size_t)(2 * BQ + 4 * BK) * (DP + 8) + sizeof(int) * 2 * BK;
}

// ---- tensor cores: dk, dv ----------------------------------------------------------------------
// One block per (key tile of BK keys, kv head g, batch row b); K and V stay in shared memory, the
// tiles of BQ queries of each query head of g that can see a key of the tile stream through two
// stages (Q, dout, and their lse2, Δ and group). The 4 warps split as KB = BK/16 key blocks × WN =
// 4/KB: warp (kb, wn) owns keys 16kb..16kb+15. Per query tile, two phases:
//   1. warp (kb, wn), queries wn·QW..+QW (QW = BQ/WN): Sᵀ = K·Qᵀ and dPᵀ = V·doutᵀ (K, V as A
//      fragments, Q, dout as B, read like the forward's Q and K), Pᵀ and dSᵀ = Pᵀ(dPᵀ − Δ);
//   2. warp (kb, wn), dims wn·DW..+DW (DW = DP/WN): dV += bf16(Pᵀ)·dout, dK += bf16(dSᵀ)·Q (B
//      from dout/Q with ldmatrix.trans, as V in the forward).
// WN = 1 (DP <= 80): each warp has all of D and all BQ queries, so phase 2's A fragments are its
// own Pᵀ/dSᵀ accumulators (as P in the forward's P·V). WN = 2 (DP >= 128) halves the dK/dV
// accumulators (2·DW/2 floats per thread: 128 at DP = 256) so that they stay in registers; then
// phase 1 stores Pᵀ, dSᵀ as bf16 into ps, dss [BK][BQ + 8] (the +8 as the other rows: ldmatrix
// without conflicts) and phase 2 reads them, after a barrier, with ldmatrix.
// Barriers per query tile: the loop-top one (tile landed; everyone done with the previous tile,
// its stage and ps/dss) and, when WN = 2, the one between the phases.

// The first query that can see a key of [k0, k_last] under causal + image groups: k0, or an
// earlier query through an image it shares with a key of the tile: the first query whose group
// lies in [min, max] of the tile's key groups (exact for contiguous images, never too late
// otherwise). The mirror of tc_causal_group_end; O(T) per block.
static __device__ int tc_causal_group_begin(const mg_attention_args &a, int64_t b, int k0, int k_last) {
    __shared__ int range[3];  // min group, max group, first query seen through an image
    if (threadIdx.x == 0) range[0] = INT_MAX, range[1] = -1, range[2] = k0;
    __syncthreads();
    for (int j = k0 + threadIdx.x; j <= k_last; j += TC_THREADS) {
        const int gid = a.group[b * a.T + j];
        if (gid >= 0) atomicMin(&range[0], gid), atomicMax(&range[1], gid);
    }
    __syncthreads();
    const int gmin = range[0], gmax = range[1];
    if (gmax >= 0)
        for (int i = threadIdx.x; i < k0; i += TC_THREADS) {
            const int gid = a.group[b * a.T + i];
            if (gid >= gmin && gid <= gmax) atomicMin(&range[2], i);
        }
    __syncthreads();
    return range[2];
}

// Warps per 16-key block of the dk/dv kernel (WN above).
static constexpr __host__ __device__ int dkdv_wn(int BK) { return TC_WARPS / (BK / 16); }
// Rows of ps: BK when WN > 1, none when phase 2 reads registers; dss also has BK rows when the
// kernel computes dQ (FUSED: phase 3 reads dS from there).
static constexpr __host__ __device__ int dkdv_ps_rows(int BK) { return dkdv_wn(BK) > 1 ? BK : 0; }
static constexpr __host__ __device__ int dkdv_dss_rows(int BK, bool FUSED) {
    return dkdv_wn(BK) > 1 || FUSED ? BK : 0;
}

// Shared memory of the dk/dv kernel: K, V [BK][LD]; Q, dout [2][BQ][LD]; ps [PS_ROWS][BQ+8], dss
// [DSS_ROWS][BQ+8]; lse2, Δ, group [2][BQ].
static constexpr __host__ __device__ size_t dkdv_smem_bytes(int DP, int BK, int BQ, bool FUSED) {
    return sizeof(bf16) * ((size_t)(2 * BK + 4 * BQ) * (DP + 8) +
                           (size_t)(dkdv_ps_rows(BK) + dkdv_dss_rows(BK, FUSED)) * (BQ + 8)) +
           (2 * sizeof(float) + sizeof(int)) * 2 * (size_t)BQ;
}

// FUSED (FlashAttention-2's single pass, WN = 1 only): a third phase per query tile computes
// dQ = dS·K for the tile's queries from dSᵀ (bf16 in dss, written by phase 1) and K, warp w taking
// queries 16w..16w+15 over all BK keys, and adds it to the fp32 dq_acc[B,T,H,D] (unscaled) with
// atomics: every key tile of the row adds there, so the sum's order (and its last bits) depends on
// scheduling. attention_backward_dq_add_kernel then does dq += scale · dq_acc. One more barrier per
// tile (dss complete before phase 3).
template <int DP, int BK, int BQ, bool FUSED, int DC>
static __global__ void __launch_bounds__(TC_THREADS, 2)
    attention_backward_dkdv_tc_kernel(bf16 *dk, bf16 *dv, float *dq_acc, const bf16 *q, const bf16 *k, const bf16 *v,
                                      const bf16 *dout, const float *lse2, const float *delta, mg_attention_args a) {
    constexpr int KB = BK / 16;          // key blocks of 16
    constexpr int WN = dkdv_wn(BK);      // warps per key block
    constexpr int PS_ROWS = dkdv_ps_rows(BK);
    constexpr int DSS_ROWS = dkdv_dss_rows(BK, FUSED);
    static_assert(!FUSED || (WN == 1 && BQ == 16 * TC_WARPS), "phase 3: one warp per 16 queries of the tile");
    constexpr int QW = BQ / WN;          // queries per warp in phase 1
    constexpr int DW = DP / WN;          // dims per warp in phase 2
    constexpr int LD = DP + 8, LP = BQ + 8;
    constexpr int KS = DP / 16;          // k16 steps of K·Qᵀ
    constexpr int NQ = QW / 8;           // 8-query blocks of Sᵀ per warp
    constexpr int DBW = DW / 8;          // 8-dim blocks of dK, dV per warp
    static_assert(KB * WN == TC_WARPS, "BK/16 divides the warp count");
    static_assert(QW % 16 == 0 && DW % 16 == 0, "phase 1 reads 16 queries, phase 2 16 dims per ldmatrix");
    static_assert(BQ <= TC_THREADS, "one thread per query statistic");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *ks = reinterpret_cast<bf16 *>(smem_raw);  // [BK][LD]
    bf16 *vs = ks + BK * LD;                         // [BK][LD]
    bf16 *qs = vs + BK * LD;                         // [2][BQ][LD]
    bf16 *dos = qs + 2 * BQ * LD;                    // [2][BQ][LD]
    bf16 *ps = dos + 2 * BQ * LD;                    // [PS_ROWS][LP] Pᵀ (WN > 1)
    bf16 *dss = ps + PS_ROWS * LP;                   // [DSS_ROWS][LP] dSᵀ (WN > 1 or FUSED)
    static_assert(sizeof(bf16) * ((2 * BK + 4 * BQ) * LD + (PS_ROWS + DSS_ROWS) * LP) % 8 == 0,
                  "slse and sdelta 8-byte aligned: the unmasked loop reads them as float2");
    float *slse = reinterpret_cast<float *>(dss + DSS_ROWS * LP);  // [2][BQ]
    float *sdelta = slse + 2 * BQ;                   // [2][BQ]
    int *sgroup = reinterpret_cast<int *>(sdelta + 2 * BQ);  // [2][BQ]

    const int D = DC ? DC : a.D, H = a.H, Hkv = a.Hkv, HG = H / Hkv, T = (int)a.T;
    const int64_t b = blockIdx.z;
    const int g = blockIdx.y;
    const int k0 = blockIdx.x * BK;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kb = warp / WN, wn = warp % WN;
    const int fr = lane >> 2, fc = 2 * (lane & 3);
    const int64_t q_stride = (int64_t)H * D, kv_stride = (int64_t)Hkv * D;
    const bf16 *k_bg = k + (b * T * Hkv + g) * D, *v_bg = v + (b * T * Hkv + g) * D;

    // The queries that can see some key of the tile: from k0 under causal (earlier through an
    // image), up to k_last + window - 1 under a window; otherwise all.
    const int k_last = (k0 + BK < T ? k0 + BK : T) - 1;
    int q_begin = 0, q_end = T;
    if (a.causal) q_begin = a.group ? tc_causal_group_begin(a, b, k0, k_last) : k0;
    if (a.window > 0 && (int64_t)k_last + a.window < T) q_end = k_last + a.window;
    const int n_qt = (q_end - q_begin + BQ - 1) / BQ;  // q_begin <= k0 < q_end: at least one
    const int n_it = n_qt * HG;                         // iteration it: head g·HG + it / n_qt

    // Zero the pad columns D..DP-1 of every LD row (K, V, both Q and dout stages) once.
    tc_zero_pad<DP>(ks, 2 * BK + 4 * BQ, D);
    tc_load_rows<DP>(ks, k_bg, kv_stride, k0, T, BK, D);
    tc_load_rows<DP>(vs, v_bg, kv_stride, k0, T, BK, D);
    // Query tile `it` into stage st: Q and dout rows by cp.async (zeros past T); its statistics
    // are returned for the caller to store (rows past T: lse2 = +inf, P = 0).
    auto load_tile = [&](int it, int st, float &l_out, float &d_out, int &g_out) {
        const int hh = it / n_qt, h = g * HG + hh, t0 = q_begin + (it - hh * n_qt) * BQ;
        const int64_t head = (b * T * H + h) * D;
        tc_load_rows<DP>(qs + st * BQ * LD, q + head, q_stride, t0, T, BQ, D);
        tc_load_rows<DP>(dos + st * BQ * LD, dout + head, q_stride, t0, T, BQ, D);
        cp_async_commit();
        const int i = t0 + (int)threadIdx.x;
        l_out = INFINITY, d_out = 0.0f, g_out = -1;
        if (threadIdx.x < BQ && i < T) {
            const int64_t stat = (b * H + h) * T + i;
            l_out = lse2[stat];
            d_out = delta[stat];
            if (a.group) g_out = a.group[b * T + i];
        }
    };
    {
        float l0, d0;
        int g0;
        load_tile(0, 0, l0, d0, g0);  // also commits K and V
        if (threadIdx.x < BQ) slse[threadIdx.x] = l0, sdelta[threadIdx.x] = d0, sgroup[threadIdx.x] = g0;
    }

    // This warp's key block [kj0, kj0 + 16); this thread's keys kj0 + fr and kj0 + fr + 8.
    const int kj0 = k0 + kb * 16, kj1 = kj0 + 15;
    int kcode[2];
#pragma unroll
    for (int r = 0; r < 2; r++) kcode[r] = tc_key_code(a, b, kj0 + fr + 8 * r, T);
    const float c_log2 = a.scale * 1.4426950408889634f;
    float dk_acc[DBW][4], dv_acc[DBW][4];
#pragma unroll
    for (int d = 0; d < DBW; d++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk_acc[d][e] = dv_acc[d][e] = 0.0f;

    for (int it = 0; it < n_it; it++) {
        const int st = it & 1;
        cp_async_wait_all();
        __syncthreads();  // tile `it` landed; every warp is done with tile it-1 (its stage, ps, dss)
        const int hh = it / n_qt, q0 = q_begin + (it - hh * n_qt) * BQ;
        float next_l = INFINITY, next_d = 0.0f;
        int next_g = -1;
        if (it + 1 < n_it) load_tile(it + 1, st ^ 1, next_l, next_d, next_g);  // stats stored after the math
        const bf16 *qs_n = qs + st * BQ * LD, *dos_n = dos + st * BQ * LD;
        const float *lse_n = slse + st * BQ, *delta_n = sdelta + st * BQ;
        const int *group_n = sgroup + st * BQ;

        // The key block skips a tile none of its keys is visible to: keys past T, every query
        // before every key (causal, no images), every query past every key's window. The same
        // answer for the WN warps of the block, which share ps/dss rows.
        const bool kb_skips = kj0 >= T || (a.causal && !a.group && q0 + BQ - 1 < kj0) ||
                              (a.window > 0 && q0 - kj1 >= a.window);
        float s[NQ][4], dp[NQ][4];  // Sᵀ then Pᵀ; dPᵀ then dSᵀ
        if (!kb_skips) {
#pragma unroll
            for (int n = 0; n < NQ; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t ka[4], va[4];  // keys 0-7/8-15 of the block × dims 16kk..+7/16kk+8..+15
                const int a_off = (kb * 16 + (lane & 15)) * LD + 16 * kk + (lane >> 4) * 8;
                ldmatrix_x4(ka, ks + a_off);
                ldmatrix_x4(va, vs + a_off);
#pragma unroll
                for (int n = 0; n < NQ; n += 2) {
                    uint32_t qb[4], ob[4];  // queries 8n..8n+7 × dims 16kk../16kk+8.., then queries 8n+8..8n+15
                    const int b_off =
                        (wn * QW + 8 * n + (lane & 7) + (lane >> 4) * 8) * LD + 16 * kk + ((lane >> 3) & 1) * 8;
                    ldmatrix_x4(qb, qs_n + b_off);
                    ldmatrix_x4(ob, dos_n + b_off);
                    mma_bf16_16816(s[n], ka, qb[0], qb[1]);
                    mma_bf16_16816(s[n + 1], ka, qb[2], qb[3]);
                    mma_bf16_16816(dp[n], va, ob[0], ob[1]);
                    mma_bf16_16816(dp[n + 1], va, ob[2], ob[3]);
                }
            }

            // Pᵀ and dSᵀ (row = key kj0 + fr + 8r, column = query q0 + col), into ps, dss when WN > 1.
            // Tiles that see every pair (all of SigLIP's) take a loop without the mask tests, which
            // reads each column's lse2 and Δ once for both of its rows (a third of this section's
            // instructions went to the skipped tests' bookkeeping when they shared one loop).
            const bool all_visible = !a.key_valid && kj1 < T && q0 + BQ <= T && (!a.causal || kj1 <= q0) &&
                                     (a.window == 0 || q0 + BQ - 1 - kj0 < a.window);
            if (all_visible) {
#pragma unroll
                for (int n = 0; n < NQ; n++) {
                    const int col = wn * QW + 8 * n + fc;  // even: the pair (col, col + 1) is 8-byte aligned
                    const float2 l2 = *reinterpret_cast<const float2 *>(lse_n + col);
                    const float2 d2 = *reinterpret_cast<const float2 *>(delta_n + col);
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const float p = exp2_fast(fmaf(s[n][e], c_log2, -((e & 1) ? l2.y : l2.x)));
                        s[n][e] = p;
                        dp[n][e] = p * (dp[n][e] - ((e & 1) ? d2.y : d2.x));
                    }
                }
            } else {
#pragma unroll
                for (int n = 0; n < NQ; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int r = e >> 1, col = wn * QW + 8 * n + fc + (e & 1);
                        const int i = q0 + col, j = kj0 + fr + 8 * r, code = kcode[r], qg = group_n[col];
                        const bool causal_ok = !a.causal || j <= i;
                        const bool same_image = qg >= 0 && code == qg;
                        const bool in_window = a.window == 0 || i - j < a.window;
                        const bool vis = code != TC_KEY_HIDDEN && i < T && (causal_ok || same_image) && in_window;
                        const float p = vis ? exp2_fast(fmaf(s[n][e], c_log2, -lse_n[col])) : 0.0f;
                        s[n][e] = p;
                        dp[n][e] = p * (dp[n][e] - delta_n[col]);
                    }
            }
            if constexpr (WN > 1 || FUSED)
#pragma unroll
                for (int n = 0; n < NQ; n++)
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        const int off = (kb * 16 + fr + 8 * r) * LP + wn * QW + 8 * n + fc;
                        if constexpr (WN > 1) *reinterpret_cast<uint32_t *>(ps + off) = pack_bf16x2(s[n][2 * r], s[n][2 * r + 1]);
                        *reinterpret_cast<uint32_t *>(dss + off) = pack_bf16x2(dp[n][2 * r], dp[n][2 * r + 1]);
                    }
        } else if constexpr (FUSED) {
            // Phase 3 reads every key's dS: this block of 16 keys adds nothing (16 rows of BQ bf16).
            for (int e = lane; e < 16 * BQ / 8; e += 32)
                *reinterpret_cast<uint4 *>(dss + (kb * 16 + e / (BQ / 8)) * LP + 8 * (e % (BQ / 8))) = make_uint4(0, 0, 0, 0);
        }
        if constexpr (WN > 1) __syncthreads();  // ps, dss of every key block complete

        if (!kb_skips) {
            // dV += Pᵀ·dout, dK += dSᵀ·Q over this warp's dims, 16 queries per step.
#pragma unroll
            for (int jq = 0; jq < BQ / 16; jq++) {
                uint32_t pa[4], sa[4];  // keys 0-7/8-15 of the block × queries 16jq..+7/16jq+8..+15
                if constexpr (WN == 1) {  // query blocks 2jq, 2jq+1 of this warp's accumulators
                    pa[0] = pack_bf16x2(s[2 * jq][0], s[2 * jq][1]);
                    pa[1] = pack_bf16x2(s[2 * jq][2], s[2 * jq][3]);
                    pa[2] = pack_bf16x2(s[2 * jq + 1][0], s[2 * jq + 1][1]);
                    pa[3] = pack_bf16x2(s[2 * jq + 1][2], s[2 * jq + 1][3]);
                    sa[0] = pack_bf16x2(dp[2 * jq][0], dp[2 * jq][1]);
                    sa[1] = pack_bf16x2(dp[2 * jq][2], dp[2 * jq][3]);
                    sa[2] = pack_bf16x2(dp[2 * jq + 1][0], dp[2 * jq + 1][1]);
                    sa[3] = pack_bf16x2(dp[2 * jq + 1][2], dp[2 * jq + 1][3]);
                } else {
                    const int a_off = (kb * 16 + (lane & 15)) * LP + 16 * jq + (lane >> 4) * 8;
                    ldmatrix_x4(pa, ps + a_off);
                    ldmatrix_x4(sa, dss + a_off);
                }
#pragma unroll
                for (int d = 0; d < DBW; d += 2) {
                    const int dg = wn * DBW + d;  // 8-dim block within D
                    if (8 * dg >= D) continue;    // warp-uniform; D is a multiple of 8
                    uint32_t ob[4], qb[4];  // queries 16jq..+7/+8..+15 × dims 8dg..+7, then dims 8dg+8..+15
                    const int b_off = (16 * jq + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + 8 * dg + (lane >> 4) * 8;
                    ldmatrix_x4_trans(ob, dos_n + b_off);
                    ldmatrix_x4_trans(qb, qs_n + b_off);
                    mma_bf16_16816(dv_acc[d], pa, ob[0], ob[1]);
                    mma_bf16_16816(dk_acc[d], sa, qb[0], qb[1]);
                    if (8 * dg + 8 < D) {
                        mma_bf16_16816(dv_acc[d + 1], pa, ob[2], ob[3]);
                        mma_bf16_16816(dk_acc[d + 1], sa, qb[2], qb[3]);
                    }
                }
            }
        }
        if constexpr (FUSED) {
            __syncthreads();  // dss holds every key block's dSᵀ
            const int qw = q0 + 16 * warp;  // this warp's queries qw..qw+15 (past T: dS = 0, nothing to add)
            if (qw < T) {
                constexpr int DB = DP / 8;
                float dq_p[DB][4];
#pragma unroll
                for (int d = 0; d < DB; d++) dq_p[d][0] = dq_p[d][1] = dq_p[d][2] = dq_p[d][3] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < BK / 16; kk++) {
                    // dS's A fragment (queries × keys 16kk..) from dSᵀ rows (keys) with .trans:
                    // matrices (keys +0, queries +0), (keys +0, queries +8), (keys +8, +0), (+8, +8).
                    uint32_t sa[4];
                    ldmatrix_x4_trans(sa, dss + (16 * kk + ((lane >> 4) & 1) * 8 + (lane & 7)) * LP + 16 * warp +
                                              ((lane >> 3) & 1) * 8);
#pragma unroll
                    for (int d = 0; d < DB; d += 2) {
                        if (8 * d >= D) continue;  // warp-uniform; D is a multiple of 8
                        uint32_t kt[4];  // keys 16kk..+7/+8..+15 × dims 8d..8d+7, then dims 8d+8..8d+15
                        ldmatrix_x4_trans(kt, ks + (16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + 8 * d + (lane >> 4) * 8);
                        mma_bf16_16816(dq_p[d], sa, kt[0], kt[1]);
                        if (8 * d + 8 < D) mma_bf16_16816(dq_p[d + 1], sa, kt[2], kt[3]);
                    }
                }
                const int h = g * HG + hh;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int i = qw + fr + 8 * r;
                    if (i >= T) continue;
                    float *row = dq_acc + ((b * T + i) * H + h) * (int64_t)D;
#pragma unroll
                    for (int d = 0; d < DB; d++) {
                        if (8 * d >= D) continue;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
                        atomicAdd(reinterpret_cast<float2 *>(row + 8 * d + fc), make_float2(dq_p[d][2 * r], dq_p[d][2 * r + 1]));
#else
                        atomicAdd(row + 8 * d + fc, dq_p[d][2 * r]);
                        atomicAdd(row + 8 * d + fc + 1, dq_p[d][2 * r + 1]);
#endif
                    }
                }
            }
        }
        if (it + 1 < n_it && threadIdx.x < BQ) {
            slse[(st ^ 1) * BQ + threadIdx.x] = next_l;
            sdelta[(st ^ 1) * BQ + threadIdx.x] = next_d;
            sgroup[(st ^ 1) * BQ + threadIdx.x] = next_g;
        }
    }

    // dk += scale · dK, dv += dV: each (key, column pair) belongs to this thread alone.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = kj0 + fr + 8 * r;
        if (j >= T) continue;
        const int64_t row = (b * T + j) * kv_stride + (int64_t)g * D;
#pragma unroll
        for (int d = 0; d < DBW; d++) {
            const int col = 8 * (wn * DBW + d) + fc;
            if (col >= D) continue;  // D is a multiple of 8: the whole 8-dim block is past D
            __nv_bfloat162 *k2 = reinterpret_cast<__nv_bfloat162 *>(dk + row + col);
            __nv_bfloat162 *v2 = reinterpret_cast<__nv_bfloat162 *>(dv + row + col);
            const float2 ko = __bfloat1622float2(*k2), vo = __bfloat1622float2(*v2);
            *k2 = __floats2bfloat162_rn(ko.x + a.scale * dk_acc[d][2 * r], ko.y + a.scale * dk_acc[d][2 * r + 1]);
            *v2 = __floats2bfloat162_rn(vo.x + dv_acc[d][2 * r], vo.y + dv_acc[d][2 * r + 1]);
        }
    }
}

static size_t attention_backward_dkdv_smem_bytes(int DP) {
    // The configurations of attention_backward_tc_launch: (BK, BQ) = (64, 64), fused, up to DP =
    // 80; (32, 64) at 128, (32, 32) at 256.
    return DP <= 80 ? dkdv_smem_bytes(DP, 64, 64, true)
                    : DP <= 128 ? dkdv_smem_bytes(DP, 32, 64, false) : dkdv_smem_bytes(DP, 32, 32, false);
}

// dq += scale · acc over n elements (n a multiple of 4; dq 8-byte, acc 16-byte aligned): the fused
// pass's fp32 dQ into the bf16 gradient, one rounding.
static __global__ void attention_backward_dq_add_kernel(bf16 *dq, const float *acc, float scale, int64_t n) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = 4 * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x); e < n; e += 4 * stride) {
        const float4 x = *reinterpret_cast<const float4 *>(acc + e);
        __nv_bfloat162 *p = reinterpret_cast<__nv_bfloat162 *>(dq + e);
        const float2 lo = __bfloat1622float2(p[0]), hi = __bfloat1622float2(p[1]);
        p[0] = __floats2bfloat162_rn(lo.x + scale * x.x, lo.y + scale * x.y);
        p[1] = __floats2bfloat162_rn(hi.x + scale * x.z, hi.y + scale * x.w);
    }
}

// ---- fp32 on CUDA cores (any D <= 256, any alignment) ------------------------------------------
// Plain and slow: one warp per output row, lane l holding dims l + 32t (t < DPL = ceil(D/32)), every
// dot product a warp reduction; no shared memory, no barriers. Only odd head dims and misaligned
// views take it; P and dS stay fp32.

// Key j is visible to query i of batch row b (the rule of mg_attention_args).
static __device__ __forceinline__ bool attn_visible(const mg_attention_args &a, int64_t b, int64_t i, int64_t j) {
    const int64_t row = b * a.T;
    if (a.key_valid && a.key_valid[row + j] == 0) return false;
    if (a.window > 0 && i - j >= a.window) return false;
    if (!a.causal || j <= i) return true;
    return a.group && a.group[row + i] >= 0 && a.group[row + i] == a.group[row + j];
}

// Warp per query row (b, i, h): lse2 over its visible keys (online max and sum), stored for the
// dk/dv kernel, then dq += scale · Σ_j dS_ij k_j.
template <int DPL>
static __global__ void attention_backward_dq_fp32_kernel(bf16 *dq, float *lse2, const bf16 *q, const bf16 *k,
                                                         const bf16 *v, const bf16 *dout, const float *delta,
                                                         mg_attention_args a) {
    const int lane = threadIdx.x & 31, D = a.D, H = a.H, Hkv = a.Hkv;
    const int64_t T = a.T, rows = a.B * T * H, warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    const float c_log2 = a.scale * 1.4426950408889634f;
    for (int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
        const int h = (int)(row % H), g = h / (H / Hkv);
        const int64_t bt = row / H, i = bt % T, b = bt / T, stat = (b * H + h) * T + i;
        float qr[DPL], dor[DPL];
#pragma unroll
        for (int t = 0; t < DPL; t++) {
            const int d = lane + 32 * t;
            qr[t] = d < D ? ld_bf16(q + row * D + d) : 0.0f;
            dor[t] = d < D ? ld_bf16(dout + row * D + d) : 0.0f;
        }
        // Keys outside [j_begin, j_end) are hidden by the window or (without images) by causality.
        const int64_t j_begin = a.window > 0 && i - a.window + 1 > 0 ? i - a.window + 1 : 0;
        const int64_t j_end = a.causal && !a.group ? i + 1 : T;
        float m = -INFINITY, l = 0.0f;  // running max of s·log2 e and Σ 2^(s·log2 e − m) (warp-uniform)
        for (int64_t j = j_begin; j < j_end; j++) {
            if (!attn_visible(a, b, i, j)) continue;
            const bf16 *kr = k + ((b * T + j) * Hkv + g) * D;
            float part = 0.0f;
#pragma unroll
            for (int t = 0; t < DPL; t++) {
                const int d = lane + 32 * t;
                if (d < D) part += qr[t] * ld_bf16(kr + d);
            }
            const float x = warp_sum(part) * c_log2;
            if (x > m) l = l * exp2f(m - x) + 1.0f, m = x;  // the first key: l = 0 · 0 + 1
            else l += exp2f(x - m);
        }
        const float lse = l > 0.0f ? m + log2f(l) : INFINITY;
        if (lane == 0) lse2[stat] = lse;
        if (l == 0.0f) continue;  // no visible key: no gradient (warp-uniform)
        const float dl = delta[stat];
        float acc[DPL];
#pragma unroll
        for (int t = 0; t < DPL; t++) acc[t] = 0.0f;
        for (int64_t j = j_begin; j < j_end; j++) {
            if (!attn_visible(a, b, i, j)) continue;
            const bf16 *kr = k + ((b * T + j) * Hkv + g) * D, *vr = v + ((b * T + j) * Hkv + g) * D;
            float sp = 0.0f, dpp = 0.0f;
#pragma unroll
            for (int t = 0; t < DPL; t++) {
                const int d = lane + 32 * t;
                if (d < D) sp += qr[t] * ld_bf16(kr + d), dpp += dor[t] * ld_bf16(vr + d);
            }
            const float p = exp2f(warp_sum(sp) * c_log2 - lse);
            const float ds = p * (warp_sum(dpp) - dl);
#pragma unroll
            for (int t = 0; t < DPL; t++) {
                const int d = lane + 32 * t;
                if (d < D) acc[t] += ds * ld_bf16(kr + d);
            }
        }
#pragma unroll
        for (int t = 0; t < DPL; t++) {
            const int d = lane + 32 * t;
            if (d < D) dq[row * D + d] = to_bf16(ld_bf16(dq + row * D + d) + a.scale * acc[t]);
        }
    }
}

// Warp per key row (b, j, g): dk += scale · Σ dS_ij q_i and dv += Σ P_ij dout_i over the queries i
// of the H/Hkv heads of g that see key j.
template <int DPL>
static __global__ void attention_backward_dkdv_fp32_kernel(bf16 *dk, bf16 *dv, const bf16 *q, const bf16 *k,
                                                           const bf16 *v, const bf16 *dout, const float *lse2,
                                                           const float *delta, mg_attention_args a) {
    const int lane = threadIdx.x & 31, D = a.D, H = a.H, Hkv = a.Hkv, HG = H / Hkv;
    const int64_t T = a.T, rows = a.B * T * Hkv, warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    const float c_log2 = a.scale * 1.4426950408889634f;
    for (int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
        const int g = (int)(row % Hkv);
        const int64_t bt = row / Hkv, j = bt % T, b = bt / T;
        if (a.key_valid && a.key_valid[b * T + j] == 0) continue;  // padding: seen by no query (warp-uniform)
        float kr[DPL], vr[DPL], dk_acc[DPL], dv_acc[DPL];
#pragma unroll
        for (int t = 0; t < DPL; t++) {
            const int d = lane + 32 * t;
            kr[t] = d < D ? ld_bf16(k + row * D + d) : 0.0f;
            vr[t] = d < D ? ld_bf16(v + row * D + d) : 0.0f;
            dk_acc[t] = dv_acc[t] = 0.0f;
        }
        // Queries outside [i_begin, i_end) cannot see key j (causality without images, the window).
        const int64_t i_begin = a.causal && !a.group ? j : 0;
        const int64_t i_end = a.window > 0 && j + a.window < T ? j + a.window : T;
        for (int hh = 0; hh < HG; hh++) {
            const int h = g * HG + hh;
            for (int64_t i = i_begin; i < i_end; i++) {
                if (!attn_visible(a, b, i, j)) continue;  // then query i sees a key: its lse2 is finite
                const bf16 *qrow = q + ((b * T + i) * H + h) * D, *dorow = dout + ((b * T + i) * H + h) * D;
                float sp = 0.0f, dpp = 0.0f;
#pragma unroll
                for (int t = 0; t < DPL; t++) {
                    const int d = lane + 32 * t;
                    if (d < D) sp += ld_bf16(qrow + d) * kr[t], dpp += ld_bf16(dorow + d) * vr[t];
                }
                const int64_t stat = (b * H + h) * T + i;
                const float p = exp2f(warp_sum(sp) * c_log2 - lse2[stat]);
                const float ds = p * (warp_sum(dpp) - delta[stat]);
#pragma unroll
                for (int t = 0; t < DPL; t++) {
                    const int d = lane + 32 * t;
                    if (d < D) dv_acc[t] += p * ld_bf16(dorow + d), dk_acc[t] += ds * ld_bf16(qrow + d);
                }
            }
        }
#pragma unroll
        for (int t = 0; t < DPL; t++) {
            const int d = lane + 32 * t;
            if (d < D) {
                dk[row * D + d] = to_bf16(ld_bf16(dk + row * D + d) + a.scale * dk_acc[t]);
                dv[row * D + d] = to_bf16(ld_bf16(dv + row * D + d) + dv_acc[t]);
            }
        }
    }
}

// ---- launchers ---------------------------------------------------------------------------------

enum { BWD_FP32_WARPS = 4 };  // warps per block of the warp-per-row kernels

static mg_status attention_backward_delta_launch(mg_cuda_ctx *ctx, float *delta, const bf16 *dout, const bf16 *out,
                                                 const mg_attention_args *a) {
    const int64_t rows = a->B * a->T * a->H;
    const unsigned blocks = grid_stride_blocks(ctx, rows, BWD_FP32_WARPS);
    attention_backward_delta_kernel<<<blocks, BWD_FP32_WARPS * 32, 0, ctx->stream>>>(delta, dout, out, *a);
    MG_CUDA_LAUNCH_CHECK(attention_backward_delta_kernel);
    return MG_OK;
}

template <int DP, int DC>
static mg_status attention_backward_dq_tc_launch_cfg(mg_cuda_ctx *ctx, bf16 *dq, const bf16 *q, const bf16 *k,
                                                     const bf16 *v, const bf16 *dout, const float *lse2,
                                                     const float *delta, const mg_attention_args *a) {
    const size_t smem = attention_backward_dq_smem_bytes(DP);
    MG_CUDA_CHECK(cudaFuncSetAttribute(attention_backward_dq_tc_kernel<DP, DC>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const int BQ = 16 * TC_WARPS;
    const dim3 grid((unsigned)((a->T + BQ - 1) / BQ), (unsigned)a->H, (unsigned)a->B);
    attention_backward_dq_tc_kernel<DP, DC><<<grid, TC_THREADS, smem, ctx->stream>>>(dq, q, k, v, dout, lse2, delta, *a);
    MG_CUDA_LAUNCH_CHECK(attention_backward_dq_tc_kernel);
    return MG_OK;
}

// The fused passes' and the Hopper kernel's fp32 dQ accumulator (n_stat·D floats, 16-byte
// aligned): zeroed before the kernel adds each tile's dQ into it, then dq += scale · dq_acc
// (attention_backward_dq_add_kernel).
static mg_status attention_backward_dq_acc_zero(mg_cuda_ctx *ctx, float *dq_acc, const mg_attention_args *a) {
    MG_CUDA_CHECK(cudaMemsetAsync(dq_acc, 0, sizeof(float) * (size_t)(a->B * a->T * a->H * a->D), ctx->stream));
    return MG_OK;
}
static mg_status attention_backward_dq_acc_add(mg_cuda_ctx *ctx, bf16 *dq, const float *dq_acc,
                                               const mg_attention_args *a) {
    const int64_t n_dq = a->B * a->T * a->H * a->D;
    const int threads = 256;
    const unsigned blocks = grid_stride_blocks(ctx, n_dq / 4, threads);
    attention_backward_dq_add_kernel<<<blocks, threads, 0, ctx->stream>>>(dq, dq_acc, a->scale, n_dq);
    MG_CUDA_LAUNCH_CHECK(attention_backward_dq_add_kernel);
    return MG_OK;
}

// FUSED: the kernel adds dQ into dq_acc (attention_backward_dq_acc_zero / _add around it).
template <int DP, int BK, int BQ, bool FUSED, int DC>
static mg_status attention_backward_dkdv_tc_launch_cfg(mg_cuda_ctx *ctx, bf16 *dq, bf16 *dk, bf16 *dv, float *dq_acc,
                                                       const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
                                                       const float *lse2, const float *delta,
                                                       const mg_attention_args *a) {
    if (FUSED) MG_TRY(attention_backward_dq_acc_zero(ctx, dq_acc, a));
    const size_t smem = dkdv_smem_bytes(DP, BK, BQ, FUSED);
    MG_CUDA_CHECK(cudaFuncSetAttribute(attention_backward_dkdv_tc_kernel<DP, BK, BQ, FUSED, DC>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)((a->T + BK - 1) / BK), (unsigned)a->Hkv, (unsigned)a->B);
    attention_backward_dkdv_tc_kernel<DP, BK, BQ, FUSED, DC>
        <<<grid, TC_THREADS, smem, ctx->stream>>>(dk, dv, dq_acc, q, k, v, dout, lse2, delta, *a);
    MG_CUDA_LAUNCH_CHECK(attention_backward_dkdv_tc_kernel);
    if (FUSED) return attention_backward_dq_acc_add(ctx, dq, dq_acc, a);
    return MG_OK;
}

// One configuration's passes: the dq kernel (unless FUSED), then dk/dv; DC as in the forward.
template <int DP, int BK, int BQ, bool FUSED, int DC>
static mg_status attention_backward_tc_passes(mg_cuda_ctx *ctx, bf16 *dq, bf16 *dk, bf16 *dv, float *dq_acc,
                                              const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
                                              const float *lse2, const float *delta, const mg_attention_args *a) {
    if constexpr (!FUSED) MG_TRY((attention_backward_dq_tc_launch_cfg<DP, DC>(ctx, dq, q, k, v, dout, lse2, delta, a)));
    return attention_backward_dkdv_tc_launch_cfg<DP, BK, BQ, FUSED, DC>(ctx, dq, dk, dv, dq_acc, q, k, v, dout, lse2,
                                                                        delta, a);
}
template <int DP, int BK, int BQ, bool FUSED>
static mg_status attention_backward_tc_launch_dp(mg_cuda_ctx *ctx, bf16 *dq, bf16 *dk, bf16 *dv, float *dq_acc,
                                                 const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
                                                 const float *lse2, const float *delta, const mg_attention_args *a) {
    if (a->D == tc_exact_dim(DP))
        return attention_backward_tc_passes<DP, BK, BQ, FUSED, tc_exact_dim(DP)>(ctx, dq, dk, dv, dq_acc, q, k, v,
                                                                                 dout, lse2, delta, a);
    return attention_backward_tc_passes<DP, BK, BQ, FUSED, 0>(ctx, dq, dk, dv, dq_acc, q, k, v, dout, lse2, delta, a);
}

// The backward's kernels: the Hopper kernel (attention_sm90.cu), the tensor-core ones (dQ fused
// into the dk/dv kernel up to DP = 80: BK = BQ = 64, one warp per 16 keys; 5 T×T×D products
// instead of 8), the same with the separate dq kernel (the lab's comparison), or fp32.
typedef enum { ATTN_BWD_SM90, ATTN_BWD_TC, ATTN_BWD_TC_SEPARATE_DQ, ATTN_BWD_FP32 } attn_bwd_path;

// Whether the path sums dQ in the fp32 accumulator (atomics, or the Hopper kernel's bulk
// reductions) rather than writing dq directly.
static bool attention_backward_fuses_dq(attn_bwd_path path, int D) {
    return path == ATTN_BWD_SM90 || (path == ATTN_BWD_TC && D <= 80);
}

// The scratch's floats: lse2 and Δ (n_stat each), then, when fused, dq_acc (n_stat·D) from a
// 16-byte boundary.
static size_t attention_backward_scratch_floats(const mg_attention_args *a, bool fused) {
    const size_t n_stat = (size_t)(a->B * a->T * a->H);
    const size_t acc_off = (2 * n_stat + 3) / 4 * 4;
    return fused ? acc_off + n_stat * (size_t)a->D : 2 * n_stat;
}

// lse2 (the forward's, or the forward kernel's STATS mode), then on ATTN_BWD_SM90 the Hopper
// kernel; otherwise dq, then dk and dv, with D padded to DP as in the forward. dk/dv tiles: 64 keys × 64 queries with one warp per 16 keys (all of D) up to DP = 80;
// 32 keys with two warps per 16 keys (half of D each) at DP = 128 (64 queries) and 256 (32), which
// keeps shared memory under 110 KB (two blocks per SM on the H100/H200).
static mg_status attention_backward_tc_launch(mg_cuda_ctx *ctx, attn_bwd_path path, bf16 *dq, bf16 *dk, bf16 *dv,
                                              const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
                                              float *lse2_scratch, const float *delta, float *dq_acc,
                                              const mg_attention_args *a) {
    const int D = a->D;
    const int DP = D <= 32 ? 32 : D <= 64 ? 64 : D <= 80 ? 80 : D <= 128 ? 128 : 256;
    const size_t smem = attention_backward_dq_smem_bytes(DP) > attention_backward_dkdv_smem_bytes(DP)
                            ? attention_backward_dq_smem_bytes(DP)
                            : attention_backward_dkdv_smem_bytes(DP);
    if (smem > ctx->smem_optin)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL,
                       "attention_backward: D=%d needs %zu bytes of shared memory, %s allows %zu", D, smem, ctx->name,
                       ctx->smem_optin);
    // The forward's lse2 when it left one (training), else the STATS pass into the scratch.
    const float *lse2 = a->lse2;
    if (!lse2) MG_TRY(attention_tc_launch<true>(ctx, NULL, lse2_scratch, q, k, k, a));  // v unused in STATS mode
    if (!lse2) lse2 = lse2_scratch;
    if (path == ATTN_BWD_SM90) {
        MG_TRY(attention_backward_dq_acc_zero(ctx, dq_acc, a));
        return attention_backward_sm90_launch(ctx, dq, dk, dv, dq_acc, q, k, v, dout, lse2, delta, a);
    }
    // dq_acc != NULL: the fused pass (attention_backward_fuses_dq), else the dq kernel first.
    if (dq_acc) switch (DP) {
        case 32: return attention_backward_tc_launch_dp<32, 64, 64, true>(ctx, dq, dk, dv, dq_acc, q, k, v, dout, lse2, delta, a);
        case 64: return attention_backward_tc_launch_dp<64, 64, 64, true>(ctx, dq, dk, dv, dq_acc, q, k, v, dout, lse2, delta, a);
        case 80: return attention_backward_tc_launch_dp<80, 64, 64, true>(ctx, dq, dk, dv, dq_acc, q, k, v, dout, lse2, delta, a);
        default: return mg_fail(MG_ERR_UNSUPPORTED, NULL, "attention_backward: no fused pass at D=%d", D);
        }
    switch (DP) {
    case 32: return attention_backward_tc_launch_dp<32, 64, 64, false>(ctx, dq, dk, dv, NULL, q, k, v, dout, lse2, delta, a);
    case 64: return attention_backward_tc_launch_dp<64, 64, 64, false>(ctx, dq, dk, dv, NULL, q, k, v, dout, lse2, delta, a);
    case 80: return attention_backward_tc_launch_dp<80, 64, 64, false>(ctx, dq, dk, dv, NULL, q, k, v, dout, lse2, delta, a);
    case 128: return attention_backward_tc_launch_dp<128, 32, 64, false>(ctx, dq, dk, dv, NULL, q, k, v, dout, lse2, delta, a);
    default: return attention_backward_tc_launch_dp<256, 32, 32, false>(ctx, dq, dk, dv, NULL, q, k, v, dout, lse2, delta, a);
    }
}

template <int DPL>
static mg_status attention_backward_fp32_launch_dpl(mg_cuda_ctx *ctx, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *q,
                                                    const bf16 *k, const bf16 *v, const bf16 *dout, float *lse2,
                                                    const float *delta, const mg_attention_args *a) {
    const unsigned dq_blocks = grid_stride_blocks(ctx, a->B * a->T * a->H, BWD_FP32_WARPS);
    attention_backward_dq_fp32_kernel<DPL>
        <<<dq_blocks, BWD_FP32_WARPS * 32, 0, ctx->stream>>>(dq, lse2, q, k, v, dout, delta, *a);
    MG_CUDA_LAUNCH_CHECK(attention_backward_dq_fp32_kernel);
    const unsigned kv_blocks = grid_stride_blocks(ctx, a->B * a->T * a->Hkv, BWD_FP32_WARPS);
    attention_backward_dkdv_fp32_kernel<DPL>
        <<<kv_blocks, BWD_FP32_WARPS * 32, 0, ctx->stream>>>(dk, dv, q, k, v, dout, lse2, delta, *a);
    MG_CUDA_LAUNCH_CHECK(attention_backward_dkdv_fp32_kernel);
    return MG_OK;
}

static mg_status attention_backward_fp32_launch(mg_cuda_ctx *ctx, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *q,
                                                const bf16 *k, const bf16 *v, const bf16 *dout, float *lse2,
                                                const float *delta, const mg_attention_args *a) {
    switch ((a->D + 31) / 32) {
    case 1: return attention_backward_fp32_launch_dpl<1>(ctx, dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 2: return attention_backward_fp32_launch_dpl<2>(ctx, dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 3: return attention_backward_fp32_launch_dpl<3>(ctx, dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 4: return attention_backward_fp32_launch_dpl<4>(ctx, dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 5: return attention_backward_fp32_launch_dpl<5>(ctx, dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 6: return attention_backward_fp32_launch_dpl<6>(ctx, dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 7: return attention_backward_fp32_launch_dpl<7>(ctx, dq, dk, dv, q, k, v, dout, lse2, delta, a);
    default: return attention_backward_fp32_launch_dpl<8>(ctx, dq, dk, dv, q, k, v, dout, lse2, delta, a);
    }
}

// The scratch of lse2 and Δ: ctx->attn_scratch, grown (never shrunk) to `bytes`. Growing waits for
// the stream first, as queued kernels may still read the old buffer; it happens at the first call
// of each larger shape only.
static mg_status attention_backward_scratch(mg_cuda_ctx *ctx, size_t bytes, float **p) {
    if (ctx->attn_scratch_bytes < bytes) {
        MG_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
        cudaFree(ctx->attn_scratch);
        ctx->attn_scratch = NULL;
        ctx->attn_scratch_bytes = 0;
        const cudaError_t e = cudaMalloc(&ctx->attn_scratch, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();  // so that the next launch check does not report it again
            ctx->attn_scratch = NULL;
            return mg_cuda_fail_("cudaMalloc(attention_backward scratch)", cudaGetErrorString(e),
                                 e == cudaErrorMemoryAllocation, __func__, __FILE__, __LINE__);
        }
        ctx->attn_scratch_bytes = bytes;
    }
    *p = (float *)ctx->attn_scratch;
    return MG_OK;
}

// The tensor-core backward reads 16-byte pieces of q, k, v, dout (cp.async) and updates bf16 pairs
// of dq, dk, dv: D a multiple of 8 and all seven 16-byte aligned (out is read one element at a time).
static bool attention_backward_uses_tensor_cores(const void *dq, const void *dk, const void *dv, const void *dout,
                                                 const void *q, const void *k, const void *v, int D) {
    const uintptr_t addr = (uintptr_t)dq | (uintptr_t)dk | (uintptr_t)dv | (uintptr_t)dout | (uintptr_t)q |
                           (uintptr_t)k | (uintptr_t)v;
    return D % 8 == 0 && addr % 16 == 0;
}

// The backward after the argument checks: scratch, Δ, then the path's kernels (the lab calls it with
// each path forced; ATTN_BWD_SM90 only where attention_sm90_fits).
static mg_status attention_backward_run(mg_cuda_ctx *ctx, attn_bwd_path path, bf16 *dq, bf16 *dk, bf16 *dv,
                                        const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                                        const bf16 *out, const mg_attention_args *a) {
    const int64_t n_stat = a->B * a->T * a->H;  // < 2^63: B, H <= 65535 and T < 2^31
    if (n_stat > ((int64_t)1 << 46))            // so that n_stat·(D + 3) floats cannot overflow
        return mg_fail(MG_ERR_SHAPE, NULL, "attention_backward: B*T*H = %lld rows is too many", (long long)n_stat);
    const bool fused = attention_backward_fuses_dq(path, a->D);
    const size_t floats = attention_backward_scratch_floats(a, fused);
    float *lse2 = NULL;
    MG_TRY(attention_backward_scratch(ctx, sizeof(float) * floats, &lse2));
    float *delta = lse2 + n_stat;
    float *dq_acc = fused ? lse2 + (floats - (size_t)n_stat * a->D) : NULL;
    MG_TRY(attention_backward_delta_launch(ctx, delta, dout, out, a));
    if (path != ATTN_BWD_FP32)
        return attention_backward_tc_launch(ctx, path, dq, dk, dv, q, k, v, dout, lse2, delta, dq_acc, a);
    return attention_backward_fp32_launch(ctx, dq, dk, dv, q, k, v, dout, lse2, delta, a);
}

extern "C" mg_status mg_cuda_attention_backward(mg_cuda_ctx *ctx, void *dq, void *dk, void *dv, const void *dout,
                                                const void *q, const void *k, const void *v, const void *out,
                                                const mg_attention_args *a) {
    MG_TRY(attention_check_args(a, "attention_backward"));
    const attn_bwd_path path = !attention_backward_uses_tensor_cores(dq, dk, dv, dout, q, k, v, a->D) ? ATTN_BWD_FP32
                               : attention_sm90_fits(ctx, a)                                           ? ATTN_BWD_SM90
                                                                                                       : ATTN_BWD_TC;
    return attention_backward_run(ctx, path, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                                  (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, (const bf16 *)out, a);
}
