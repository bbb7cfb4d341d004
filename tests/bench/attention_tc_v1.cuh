// The previous production tensor-core attention (main at 96a5a3b), kept only in the lab so that
// tests/bench/attention.cu can time it beside the current kernel (STYLE habit 10: the bench lab is
// the one place versions live side by side). Measured on the H100: SigLIP 178.6 TFLOP/s, Gemma
// causal 90.9, causal + image 54.3. Unchanged except for the namespace (its constants would
// otherwise clash with the production file's) and the PTX wrappers, now the production file's.
//   v1: block = 64 query rows, 4 warps × 16 rows; one K and one V buffer of 64 keys; D padded to 16
//       for both products; no K-tile skipping when image groups are present.
#pragma once

namespace attn_v1 {
enum {
    TC_WARPS = 4,
    TC_BQ = TC_WARPS * 16,  // query rows per block
    TC_BK = 64,             // keys per K/V tile
};

// Key code in shared memory: the key's image group (>= 0), -1 for a visible text key, or
// TC_KEY_HIDDEN for padding and for rows past the last key the block reads.
constexpr int TC_KEY_HIDDEN = -2;

// The PTX wrappers (smem_u32, cp_async16, cp_async_commit, cp_async_wait_all, ldmatrix_x4,
// ldmatrix_x4_trans, mma_bf16_16816, pack_bf16x2) are the production file's, unchanged since v1.

// Rows [j0, j0 + TC_BK) (or TC_BQ) of a [token][stride] bf16 slab into dst[rows][DP + 8]: the D
// real columns by cp.async, rows at or past `end` as zeros (their V rows meet P = 0 in the mma,
// so they must not hold NaN garbage). Columns D..DP-1 were zeroed once at block start.
template <int DP>
static __device__ __forceinline__ void tc_load_rows(bf16 *dst, const bf16 *src, int64_t stride, int64_t j0,
                                                    int64_t end, int rows, int D) {
    const int chunks = D / 8;  // 16-byte pieces per row
    for (int c = threadIdx.x; c < rows * chunks; c += TC_WARPS * 32) {
        const int r = c / chunks, col = (c % chunks) * 8;
        bf16 *d = dst + r * (DP + 8) + col;
        if (j0 + r < end) cp_async16(d, src + (j0 + r) * stride + col);
        else *reinterpret_cast<uint4 *>(d) = make_uint4(0, 0, 0, 0);
    }
}

// The key codes of tile [j0, j0 + TC_BK) (plain loads; ordered by the same barrier as the tile).
static __device__ __forceinline__ void tc_load_key_codes(int *kcode, const mg_attention_args &a, int64_t b, int64_t j0,
                                                         int64_t end) {
    for (int r = threadIdx.x; r < TC_BK; r += TC_WARPS * 32) {
        const int64_t j = j0 + r;
        int code = TC_KEY_HIDDEN;
        if (j < end && (!a.key_valid || a.key_valid[b * a.T + j] != 0)) code = a.group ? a.group[b * a.T + j] : -1;
        kcode[r] = code;
    }
}

// DP: D padded to a multiple of 16 (>= D). Shared memory: attention_tc_smem_bytes(DP).
template <int DP>
static __global__ void __launch_bounds__(TC_WARPS * 32)
    attention_forward_tc_kernel(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, mg_attention_args a) {
    constexpr int LD = DP + 8;       // shared row stride (bf16)
    constexpr int NB = TC_BK / 8;    // 8-key blocks of S per warp
    constexpr int DB = DP / 8;       // 8-dim blocks of O per warp
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *qs = reinterpret_cast<bf16 *>(smem_raw);  // [TC_BQ][LD]
    bf16 *ks = qs + TC_BQ * LD;                      // [TC_BK][LD]
    bf16 *vs = ks + TC_BK * LD;                      // [TC_BK][LD]
    int *kcode = reinterpret_cast<int *>(vs + TC_BK * LD);  // [TC_BK]

    const int D = a.D, H = a.H, Hkv = a.Hkv;
    const int64_t T = a.T, b = blockIdx.z;
    const int h = blockIdx.y, g = h / (H / Hkv);
    const int64_t q0 = (int64_t)blockIdx.x * TC_BQ;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t q_stride = (int64_t)H * D, kv_stride = (int64_t)Hkv * D;  // elements between tokens
    const bf16 *q_bh = q + (b * T * H + h) * D;   // token 0 of (b, h)
    const bf16 *k_bg = k + (b * T * Hkv + g) * D;
    const bf16 *v_bg = v + (b * T * Hkv + g) * D;

    // Keys that can be visible to some query of the tile: the window hides j <= i - window for
    // every query (also on image blocks); without image blocks, causal hides j > the last query.
    const int64_t q_last = (q0 + TC_BQ < T ? q0 + TC_BQ : T) - 1;
    int64_t kv_begin = 0, kv_end = T;
    if (a.window > 0 && q0 - a.window + 1 > 0) kv_begin = q0 - a.window + 1;
    if (a.causal && !a.group) kv_end = q_last + 1;

    // Zero the pad columns D..DP-1 of every row once (no copy writes them).
    for (int e = threadIdx.x; e < (TC_BQ + 2 * TC_BK) * (DP - D); e += TC_WARPS * 32) {
        const int r = e / (DP - D), c = D + e % (DP - D);
        qs[r * LD + c] = __float2bfloat16_rn(0.0f);
    }
    tc_load_rows<DP>(qs, q_bh, q_stride, q0, T, TC_BQ, D);
    tc_load_rows<DP>(ks, k_bg, kv_stride, kv_begin, kv_end, TC_BK, D);
    cp_async_commit();
    tc_load_key_codes(kcode, a, b, kv_begin, kv_end);

    // This thread's two query rows (fragment rows g and g+8 of the warp's 16).
    const int fr = lane >> 2, fc = 2 * (lane & 3);
    int64_t qi[2];
    int qgroup[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        qi[r] = q0 + warp * 16 + fr + 8 * r;
        qgroup[r] = (a.group && qi[r] < T) ? a.group[b * T + qi[r]] : -1;
    }

    // Online-softmax state in log2 units: scores x = s·log2(e), running max m (the same in the
    // four lanes of a row), this lane's share of the running sum l, the O accumulators.
    const float scale_log2 = a.scale * 1.4426950408889634f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[DB][4];
#pragma unroll
    for (int d = 0; d < DB; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;

    for (int64_t k0 = kv_begin; k0 < kv_end; k0 += TC_BK) {
        cp_async_wait_all();
        __syncthreads();  // K_n (and Q) landed; every warp is done with V_{n-1}
        tc_load_rows<DP>(vs, v_bg, kv_stride, k0, kv_end, TC_BK, D);
        cp_async_commit();

        // S = Q·K_nᵀ: 16 query rows × 64 keys per warp.
        float s[NB][4];
#pragma unroll
        for (int n = 0; n < NB; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DP; kk += 16) {
            uint32_t qa[4];  // rows 0-7/8-15 × dims kk..kk+7/kk+8..kk+15
            ldmatrix_x4(qa, qs + (warp * 16 + (lane & 15)) * LD + kk + (lane >> 4) * 8);
#pragma unroll
            for (int n = 0; n < NB; n += 2) {
                uint32_t kb[4];  // keys 8n..8n+7 × dims kk../kk+8.., then keys 8n+8..8n+15
                ldmatrix_x4(kb, ks + (8 * n + (lane & 7) + (lane >> 4) * 8) * LD + kk + ((lane >> 3) & 1) * 8);
                mma_bf16_16816(s[n], qa, kb[0], kb[1]);
                mma_bf16_16816(s[n + 1], qa, kb[2], kb[3]);
            }
        }

        // Scale; mask per element unless every key of the tile is visible to every query of it.
        const bool all_visible = !a.key_valid && !a.group && k0 + TC_BK <= kv_end &&
                                 (!a.causal || k0 + TC_BK - 1 <= q0) && (a.window == 0 || q_last - k0 < a.window);
#pragma unroll
        for (int n = 0; n < NB; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[n][e] * scale_log2;
                if (!all_visible) {
                    const int r = e >> 1, jt = 8 * n + fc + (e & 1);
                    const int64_t i = qi[r], j = k0 + jt;
                    const int code = kcode[jt];
                    const bool causal_ok = !a.causal || j <= i;
                    const bool same_image = qgroup[r] >= 0 && code == qgroup[r];
                    const bool in_window = a.window == 0 || i - j < a.window;
                    if (code == TC_KEY_HIDDEN || !(causal_ok || same_image) || !in_window) x = -INFINITY;
                }
                s[n][e] = x;
            }

        // Online softmax per row: new max over the quad, rescale the old state, p = 2^(x - m).
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = m[r];
#pragma unroll
            for (int n = 0; n < NB; n++) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float base = mx == -INFINITY ? 0.0f : mx;  // nothing visible yet: every p is 0
            const float corr = exp2f(m[r] - base);             // 0 while m is still -inf
            m[r] = mx;
            float sum = 0.0f;
#pragma unroll
            for (int n = 0; n < NB; n++) {
                s[n][2 * r] = exp2f(s[n][2 * r] - base);
                s[n][2 * r + 1] = exp2f(s[n][2 * r + 1] - base);
                sum += s[n][2 * r] + s[n][2 * r + 1];
            }
            l[r] = l[r] * corr + sum;
#pragma unroll
            for (int d = 0; d < DB; d++) {
                o[d][2 * r] *= corr;
                o[d][2 * r + 1] *= corr;
            }
        }

        cp_async_wait_all();
        __syncthreads();  // V_n landed; every warp is done with K_n and the key codes
        if (k0 + TC_BK < kv_end) {
            tc_load_rows<DP>(ks, k_bg, kv_stride, k0 + TC_BK, kv_end, TC_BK, D);
            cp_async_commit();
            tc_load_key_codes(kcode, a, b, k0 + TC_BK, kv_end);
        }

        // O += bf16(P)·V_n, 16 keys per step: P's A fragment is S of key blocks 2j and 2j+1.
#pragma unroll
        for (int j = 0; j < NB / 2; j++) {
            uint32_t pa[4];
            pa[0] = pack_bf16x2(s[2 * j][0], s[2 * j][1]);
            pa[1] = pack_bf16x2(s[2 * j][2], s[2 * j][3]);
            pa[2] = pack_bf16x2(s[2 * j + 1][0], s[2 * j + 1][1]);
            pa[3] = pack_bf16x2(s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
            for (int d = 0; d < DB; d += 2) {
                uint32_t vb[4];  // keys 16j..+7/+8..+15 × dims 8d..8d+7, then dims 8d+8..8d+15
                ldmatrix_x4_trans(vb, vs + (16 * j + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + 8 * d + (lane >> 4) * 8);
                mma_bf16_16816(o[d], pa, vb[0], vb[1]);
                mma_bf16_16816(o[d + 1], pa, vb[2], vb[3]);
            }
        }
    }

    // out = O / l, rounded to bf16 once; l summed over the quad (no visible key: l = 0, zeros).
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float sum = l[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        if (qi[r] >= T) continue;
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        bf16 *orow = out + (b * T + qi[r]) * q_stride + (int64_t)h * D;
#pragma unroll
        for (int d = 0; d < DB; d++) {
            const int col = 8 * d + fc;  // D is a multiple of 8: col < D iff the whole block is real
            if (8 * d < D)
                *reinterpret_cast<uint32_t *>(orow + col) = pack_bf16x2(o[d][2 * r] * inv, o[d][2 * r + 1] * inv);
        }
    }
}

static size_t attention_tc_smem_bytes(int DP) {
    return sizeof(bf16) * (size_t)(TC_BQ + 2 * TC_BK) * (DP + 8) + sizeof(int) * TC_BK;
}

// The padded head dim the tensor-core kernel is built for: the smallest of 32, 64, 80, 128, 256
// that holds D (80 for SigLIP's 72, 256 for Gemma).
static int attention_tc_padded_dim(int D) {
    return D <= 32 ? 32 : D <= 64 ? 64 : D <= 80 ? 80 : D <= 128 ? 128 : 256;
}

template <int DP>
static mg_status attention_forward_tc_launch_dp(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                                const bf16 *v, const mg_attention_args *a) {
    const size_t smem = attention_tc_smem_bytes(DP);
    // Above 48 KB a block needs the opt-in (DP = 256 takes 99 KB).
    MG_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_tc_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem));
    const dim3 grid((unsigned)((a->T + TC_BQ - 1) / TC_BQ), (unsigned)a->H, (unsigned)a->B);
    attention_forward_tc_kernel<DP><<<grid, TC_WARPS * 32, smem, ctx->stream>>>(out, q, k, v, *a);
    MG_CUDA_LAUNCH_CHECK(attention_forward_tc_kernel);
    return MG_OK;
}

static mg_status attention_forward_tc_launch(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                             const bf16 *v, const mg_attention_args *a) {
    const int DP = attention_tc_padded_dim(a->D);
    if (attention_tc_smem_bytes(DP) > ctx->smem_optin)
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "attention: D=%d needs %zu bytes of shared memory, %s allows %zu",
                       a->D, attention_tc_smem_bytes(DP), ctx->name, ctx->smem_optin);
    switch (DP) {
    case 32: return attention_forward_tc_launch_dp<32>(ctx, out, q, k, v, a);
    case 64: return attention_forward_tc_launch_dp<64>(ctx, out, q, k, v, a);
    case 80: return attention_forward_tc_launch_dp<80>(ctx, out, q, k, v, a);
    case 128: return attention_forward_tc_launch_dp<128>(ctx, out, q, k, v, a);
    default: return attention_forward_tc_launch_dp<256>(ctx, out, q, k, v, a);
    }
}

}  // namespace attn_v1
