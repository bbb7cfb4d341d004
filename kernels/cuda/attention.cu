// Scaled dot-product attention with GQA and the Gemma 3 / SigLIP masks (spec/model.md §5.4, §6):
//   q[B,T,H,D], k,v[B,T,Hkv,D] -> out[B,T,H,D]; query head h reads kv head g = h / (H/Hkv)
//   s_ij = (q_i · k_j) * scale                  for visible keys j (the rule of mg_attention_args, engine/backend.h)
//   out_i = Σ_j softmax_j(s_ij) v_j
// A query with no visible key gets zeros. Written with `=`. The T×T scores are never stored.
//
// Two kernels, chosen by a plain condition in the launcher (attention_uses_tensor_cores):
// - attention_forward_tc_kernel (D a multiple of 8, D <= 256, q/k/v 16-byte aligned): the
//   FlashAttention-2 scheme on tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulators).
//   Scores and softmax in fp32; P rounded to bf16 for the P·V product (as flash/SDPA kernels do).
// - attention_forward_fp32_kernel (any D <= 256, any alignment): fp32 on CUDA cores, P in fp32.
#include <limits.h>

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

static __device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
static __device__ __forceinline__ void cp_async16(void *dst_smem, const void *src_global) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst_smem)), "l"(src_global));
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
static __device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

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

// c[16×8] += a[16×16] · b[16×8], bf16 operands, fp32 accumulators.
static __device__ __forceinline__ void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x on the special-function unit (one instruction; 2^-inf = 0; relative error ~2^-22).
static __device__ __forceinline__ float exp2_fast(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Two floats as a bf16 pair, `lo` in the low half (the lower column of an mma operand).
static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&p);
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
template <int DP, int BQ>
static __global__ void __launch_bounds__(TC_THREADS, 2)
    attention_forward_tc_kernel(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, mg_attention_args a) {
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
    const int D = a.D, H = a.H, Hkv = a.Hkv, T = (int)a.T;
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
    for (int e = threadIdx.x; e < (BQ + 4 * BK) * (DP - D); e += TC_THREADS) {
        const int r = e / (DP - D), c = D + e % (DP - D);
        qs[r * LD + c] = __float2bfloat16_rn(0.0f);
    }
    tc_load_rows<DP>(qs, q_bh, q_stride, q0, T, BQ, D);
    tc_load_rows<DP>(ks, k_bg, kv_stride, kv_begin, kv_end, BK, D);
    tc_load_rows<DP>(vs, v_bg, kv_stride, kv_begin, kv_end, BK, D);
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
            tc_load_rows<DP>(vs + (stage ^ 1) * BK * LD, v_bg, kv_stride, k1, kv_end, BK, D);
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
#pragma unroll
                    for (int d = 0; d < DB; d++) {
                        o[mt][d][2 * r] *= corr;
                        o[mt][d][2 * r + 1] *= corr;
                    }
                }

            // O += bf16(P)·V_n, 16 keys per step: P's A fragment is S of key blocks 2j and 2j+1;
            // each V fragment (16 keys × 16 dims) feeds 2·WM mma, over the dims below D only.
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
#pragma unroll
    for (int mt = 0; mt < WM; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float sum = l[mt][r];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            if (qi[mt][r] >= T) continue;
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

template <int DP, int BQ>
static mg_status attention_forward_tc_launch_cfg(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                                 const bf16 *v, const mg_attention_args *a) {
    const size_t smem = attention_tc_smem_bytes(DP, BQ);
    if (smem > ctx->smem_optin)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "attention: D=%d needs %zu bytes of shared memory, %s allows %zu",
                       a->D, smem, ctx->name, ctx->smem_optin);
    // Above 48 KB a block needs the opt-in (DP = 80 takes 66 KB, DP = 256 99 KB).
    MG_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_tc_kernel<DP, BQ>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)((a->T + BQ - 1) / BQ), (unsigned)a->H, (unsigned)a->B);
    attention_forward_tc_kernel<DP, BQ><<<grid, TC_THREADS, smem, ctx->stream>>>(out, q, k, v, *a);
    MG_CUDA_LAUNCH_CHECK(attention_forward_tc_kernel);
    return MG_OK;
}

// The configuration, chosen here only: D padded to the smallest DP of 32, 64, 80, 128, 256 that
// holds it (80 for SigLIP's 72, 256 for Gemma); 128-row query tiles (two m16 blocks per warp)
// where the accumulators fit in registers (DP <= 80), 64-row tiles above.
static mg_status attention_forward_tc_launch(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                             const bf16 *v, const mg_attention_args *a) {
    const int D = a->D;
    if (D <= 32) return attention_forward_tc_launch_cfg<32, 128>(ctx, out, q, k, v, a);
    if (D <= 64) return attention_forward_tc_launch_cfg<64, 128>(ctx, out, q, k, v, a);
    if (D <= 80) return attention_forward_tc_launch_cfg<80, 128>(ctx, out, q, k, v, a);
    if (D <= 128) return attention_forward_tc_launch_cfg<128, 64>(ctx, out, q, k, v, a);
    return attention_forward_tc_launch_cfg<256, 64>(ctx, out, q, k, v, a);
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

extern "C" mg_status mg_cuda_attention_forward(mg_cuda_ctx *ctx, void *out, const void *q, const void *k,
                                               const void *v, const mg_attention_args *a) {
    if (a->B <= 0 || a->B > 65535 || a->T <= 0 || a->T > INT_MAX || a->H <= 0 || a->H > 65535 || a->Hkv <= 0 ||
        a->H % a->Hkv != 0)
        return mg_fail(MG_ERR_SHAPE, NULL,
                       "attention: B=%lld T=%lld H=%d Hkv=%d (need B, H <= 65535, T < 2^31 and H a multiple of Hkv)",
                       (long long)a->B, (long long)a->T, a->H, a->Hkv);
    if (a->D <= 0 || a->D > ATTN_MAX_D)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "attention: head dim D=%d, this kernel handles 1..%d", a->D,
                       ATTN_MAX_D);
    if (a->window < 0) return mg_fail(MG_ERR_ARG, NULL, "attention: window=%d must be >= 0", a->window);
    // The tensor-core kernel takes the row max of the raw scores (valid for a positive scale).
    if (!(a->scale > 0.0f) || a->scale == INFINITY)
        return mg_fail(MG_ERR_ARG, "pass scale = 1/sqrt(D) or another positive finite value",
                       "attention: scale=%g must be positive and finite", (double)a->scale);
    if (attention_uses_tensor_cores(out, q, k, v, a->D))
        return attention_forward_tc_launch(ctx, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, a);
    return attention_forward_fp32_launch(ctx, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, a);
}
