// The launchers of kernels/cuda/attention.cu, emulated: the same kernels and configurations
// (keep in step with attention_tc_launch, attention_backward_tc_launch and
// attention_backward_fp32_launch: each padded width DP also built for its exact head dim, DC =
// tc_exact_dim(DP), as there; the backward reads the forward's lse2 when a.lse2 is set), grids run
// by emu_launch. Included after attn_emu.inc and attn_sm90_emu.inc.
#pragma once

template <int DP, int BQ, bool STATS>
static void emu_forward_tc_cfg(bf16 *out, float *lse2, const bf16 *q, const bf16 *k, const bf16 *v,
                               const mg_attention_args &a) {
    constexpr int DC = tc_exact_dim(DP);
    emu_launch({(unsigned)((a.T + BQ - 1) / BQ), (unsigned)a.H, (unsigned)a.B}, TC_THREADS,
               attention_tc_smem_bytes(DP, BQ), [&] {
                   if (a.D == DC) attention_forward_tc_kernel<DP, BQ, STATS, DC>(out, lse2, q, k, v, a);
                   else attention_forward_tc_kernel<DP, BQ, STATS, 0>(out, lse2, q, k, v, a);
               });
}
template <bool STATS>
static void emu_forward_tc(bf16 *out, float *lse2, const bf16 *q, const bf16 *k, const bf16 *v, const mg_attention_args &a) {
    const int D = a.D;
    if (D <= 32) return emu_forward_tc_cfg<32, 128, STATS>(out, lse2, q, k, v, a);
    if (D <= 64) return emu_forward_tc_cfg<64, 128, STATS>(out, lse2, q, k, v, a);
    if (D <= 80) return emu_forward_tc_cfg<80, 128, STATS>(out, lse2, q, k, v, a);
    if (D <= 128) return emu_forward_tc_cfg<128, 64, STATS>(out, lse2, q, k, v, a);
    return emu_forward_tc_cfg<256, 64, STATS>(out, lse2, q, k, v, a);
}

template <int DPL>
static void emu_forward_fp32_dpl(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, const mg_attention_args &a) {
    emu_launch({(unsigned)((a.T + ATTN_BQ - 1) / ATTN_BQ), (unsigned)a.H, (unsigned)a.B}, ATTN_WARPS * 32,
               attention_fp32_smem_bytes(a.D), [&] { attention_forward_fp32_kernel<DPL>(out, q, k, v, a); });
}

// attention_sm90.cu's forward (the Hopper path).
template <int DP>
static void emu_forward_sm90_dp(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, const mg_attention_args &a) {
    constexpr int DC = sm90_exact_dim(DP);
    emu_launch({(unsigned)((a.T + SM90F_ROWS - 1) / SM90F_ROWS), (unsigned)a.H, (unsigned)a.B}, SM90_THREADS,
               sm90_forward_smem_bytes(DP), [&] {
                   if (a.D == DC) attention_forward_sm90_kernel<DP, DC>(out, q, k, v, a);
                   else attention_forward_sm90_kernel<DP, 0>(out, q, k, v, a);
               });
}

// mg_cuda_attention_forward: the Hopper kernel (sm90: the caller found it fits, as on an
// H100/H200), else the tensor-core kernel or the fp32 one by the production condition; each writes
// a.lse2 when set.
static void emu_attention_forward(bool sm90, bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v,
                                  const mg_attention_args &a) {
    if (sm90) switch (sm90_padded_dim(a.D)) {
        case 64: return emu_forward_sm90_dp<64>(out, q, k, v, a);
        case 80: return emu_forward_sm90_dp<80>(out, q, k, v, a);
        default: return emu_forward_sm90_dp<128>(out, q, k, v, a);
        }
    if (attention_uses_tensor_cores(out, q, k, v, a.D)) return emu_forward_tc<false>(out, a.lse2, q, k, v, a);
    switch ((a.D + 31) / 32) {
    case 1: return emu_forward_fp32_dpl<1>(out, q, k, v, a);
    case 2: return emu_forward_fp32_dpl<2>(out, q, k, v, a);
    case 3: return emu_forward_fp32_dpl<3>(out, q, k, v, a);
    case 4: return emu_forward_fp32_dpl<4>(out, q, k, v, a);
    case 5: return emu_forward_fp32_dpl<5>(out, q, k, v, a);
    case 6: return emu_forward_fp32_dpl<6>(out, q, k, v, a);
    case 7: return emu_forward_fp32_dpl<7>(out, q, k, v, a);
    default: return emu_forward_fp32_dpl<8>(out, q, k, v, a);
    }
}

// FUSED: dq through the dk/dv kernel's dQ phase (fp32 accumulator, then dq += scale · acc, here on
// the host as attention_backward_dq_add_kernel does) unless EMU_SEPARATE_DQ is set.
template <int DP, int BK, int BQ, bool FUSED>
static void emu_backward_tc_cfg(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *q, const bf16 *k, const bf16 *v,
                                const bf16 *dout, float *lse2_scratch, const float *delta, const mg_attention_args &a) {
    constexpr int DC = tc_exact_dim(DP);
    const bool exact = a.D == DC;
    const float *lse2 = a.lse2;  // the forward's (training), else the STATS pass into the scratch
    if (!lse2) emu_forward_tc<true>(NULL, lse2_scratch, q, k, k, a), lse2 = lse2_scratch;
    const bool fused = FUSED && !getenv("EMU_SEPARATE_DQ");
    if (!fused)
        emu_launch({(unsigned)((a.T + 63) / 64), (unsigned)a.H, (unsigned)a.B}, TC_THREADS, attention_backward_dq_smem_bytes(DP),
                   [&] {
                       if (exact) attention_backward_dq_tc_kernel<DP, DC>(dq, q, k, v, dout, lse2, delta, a);
                       else attention_backward_dq_tc_kernel<DP, 0>(dq, q, k, v, dout, lse2, delta, a);
                   });
    const size_t n_dq = (size_t)(a.B * a.T * a.H * a.D);
    std::vector<float> acc(fused ? n_dq : 0, 0.0f);
    if constexpr (FUSED) {
        if (fused)
            emu_launch({(unsigned)((a.T + BK - 1) / BK), (unsigned)a.Hkv, (unsigned)a.B}, TC_THREADS, dkdv_smem_bytes(DP, BK, BQ, true),
                       [&] {
                           if (exact) attention_backward_dkdv_tc_kernel<DP, BK, BQ, true, DC>(dk, dv, acc.data(), q, k, v, dout, lse2, delta, a);
                           else attention_backward_dkdv_tc_kernel<DP, BK, BQ, true, 0>(dk, dv, acc.data(), q, k, v, dout, lse2, delta, a);
                       });
    }
    if (!fused)
        emu_launch({(unsigned)((a.T + BK - 1) / BK), (unsigned)a.Hkv, (unsigned)a.B}, TC_THREADS, dkdv_smem_bytes(DP, BK, BQ, false),
                   [&] {
                       if (exact) attention_backward_dkdv_tc_kernel<DP, BK, BQ, false, DC>(dk, dv, NULL, q, k, v, dout, lse2, delta, a);
                       else attention_backward_dkdv_tc_kernel<DP, BK, BQ, false, 0>(dk, dv, NULL, q, k, v, dout, lse2, delta, a);
                   });
    for (size_t e = 0; e < acc.size(); e++) dq[e] = __float2bfloat16_rn(__bfloat162float(dq[e]) + a.scale * acc[e]);
}

template <int DPL>
static void emu_backward_fp32_dpl(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *q, const bf16 *k, const bf16 *v,
                                  const bf16 *dout, float *lse2, const float *delta, const mg_attention_args &a) {
    emu_launch({3, 1, 1}, 128, 0, [&] { attention_backward_dq_fp32_kernel<DPL>(dq, lse2, q, k, v, dout, delta, a); });
    emu_launch({3, 1, 1}, 128, 0, [&] { attention_backward_dkdv_fp32_kernel<DPL>(dk, dv, q, k, v, dout, lse2, delta, a); });
}

// attention_sm90.cu's backward (the Hopper path): its kernel, then dq += scale · acc, acc being
// (B, H, T, D), on the host as attention_backward_sm90_dq_add_kernel does.
template <int DP>
static void emu_backward_sm90_dp(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *q, const bf16 *k, const bf16 *v,
                                 const bf16 *dout, const float *lse2, const float *delta, const mg_attention_args &a) {
    std::vector<float> acc((size_t)(a.B * a.H * a.T * a.D), 0.0f);
    constexpr int DC = sm90_exact_dim(DP);
    emu_launch({(unsigned)((a.T + SM90_KEYS - 1) / SM90_KEYS), (unsigned)a.Hkv, (unsigned)a.B}, SM90_THREADS,
               sm90_smem_bytes(DP), [&] {
                   if (a.D == DC) attention_backward_sm90_kernel<DP, DC>(dk, dv, acc.data(), q, k, v, dout, lse2, delta, a);
                   else attention_backward_sm90_kernel<DP, 0>(dk, dv, acc.data(), q, k, v, dout, lse2, delta, a);
               });
    for (int64_t b = 0; b < a.B; b++)
        for (int64_t t = 0; t < a.T; t++)
            for (int h = 0; h < a.H; h++)
                for (int d = 0; d < a.D; d++) {
                    bf16 &g = dq[((b * a.T + t) * a.H + h) * a.D + d];
                    g = __float2bfloat16_rn(__bfloat162float(g) + a.scale * acc[((b * a.H + h) * a.T + t) * a.D + d]);
                }
}

typedef enum { EMU_BWD_SM90, EMU_BWD_TC, EMU_BWD_FP32 } emu_bwd_path;

// mg_cuda_attention_backward with the path given: Δ, then the Hopper, tensor-core or fp32 passes.
static void emu_attention_backward(emu_bwd_path path, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                                   const bf16 *k, const bf16 *v, const bf16 *out, const mg_attention_args &a) {
    const int64_t n_stat = a.B * a.T * a.H;
    std::vector<float> scratch(2 * n_stat, NAN);  // NaN: a statistic read before it is written shows
    float *lse2 = scratch.data(), *delta = lse2 + n_stat;
    emu_launch({4, 1, 1}, 128, 0, [&] { attention_backward_delta_kernel(delta, dout, out, a); });
    if (path == EMU_BWD_SM90) {
        const float *l2 = a.lse2;  // the forward's, else the STATS pass into the scratch
        if (!l2) emu_forward_tc<true>(NULL, lse2, q, k, k, a), l2 = lse2;
        switch (sm90_padded_dim(a.D)) {
        case 64: return emu_backward_sm90_dp<64>(dq, dk, dv, q, k, v, dout, l2, delta, a);
        case 80: return emu_backward_sm90_dp<80>(dq, dk, dv, q, k, v, dout, l2, delta, a);
        default: return emu_backward_sm90_dp<128>(dq, dk, dv, q, k, v, dout, l2, delta, a);
        }
    }
    if (path == EMU_BWD_TC) {
        const int D = a.D, DP = D <= 32 ? 32 : D <= 64 ? 64 : D <= 80 ? 80 : D <= 128 ? 128 : 256;
        switch (DP) {
        case 32: return emu_backward_tc_cfg<32, 64, 64, true>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
        case 64: return emu_backward_tc_cfg<64, 64, 64, true>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
        case 80: return emu_backward_tc_cfg<80, 64, 64, true>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
        case 128: return emu_backward_tc_cfg<128, 32, 64, false>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
        default: return emu_backward_tc_cfg<256, 32, 32, false>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
        }
    }
    switch ((a.D + 31) / 32) {
    case 1: return emu_backward_fp32_dpl<1>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 2: return emu_backward_fp32_dpl<2>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 3: return emu_backward_fp32_dpl<3>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 4: return emu_backward_fp32_dpl<4>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 5: return emu_backward_fp32_dpl<5>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 6: return emu_backward_fp32_dpl<6>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
    case 7: return emu_backward_fp32_dpl<7>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
    default: return emu_backward_fp32_dpl<8>(dq, dk, dv, q, k, v, dout, lse2, delta, a);
    }
}
