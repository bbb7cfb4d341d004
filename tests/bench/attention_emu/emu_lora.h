// The tensor-core backward of kernels/cuda/lora.cu, emulated: the same kernels, plan and order of
// launches as lora_backward_tc_launch (keep in step with it, lora_dx_launch and lora_sum_launch),
// grids run by emu_launch. Included after lora_emu.inc.
#pragma once

static void emu_lora_sum(float *out, const float *part, int parts, int64_t n, float alpha, float beta) {
    emu_launch({1, 1, 1}, 256, 0, [&] { lora_sum_kernel(out, part, parts, n, alpha, beta); });
}

template <int RP>
static void emu_lora_backward_tc(bf16 *dx, float *dA, float *dB, float *du, const bf16 *dy, const bf16 *x,
                                 const bf16 *u, const bf16 *A, const bf16 *B, const mg_lora_args &a,
                                 const lora_tc_plan &pl, float *scratch) {
    float *part = scratch, *dB_part = part + (size_t)pl.n_splits * a.M * a.r;
    const size_t smem = lora_pass_smem_bytes(RP);
    emu_launch({(unsigned)pl.groups, (unsigned)pl.n_splits, 1}, LT_THREADS, smem,
               [&] { lora_dy_kernel<RP>(part, dB_part, dy, a.ldy, B, u, a.M, a.N, a.r, pl.n_cols); });
    emu_lora_sum(du, part, pl.n_splits, a.M * a.r, a.scale, 0.0f);
    emu_lora_sum(dB, dB_part, (int)pl.groups, (int64_t)a.N * a.r, a.scale, 1.0f);
    if (dx) {
        const bool vec = a.K % 8 == 0 && aligned16(dx) && aligned16(A);
        emu_launch({(unsigned)((a.M + DX_TILE_M - 1) / DX_TILE_M), (unsigned)((a.K + DX_TILE_K - 1) / DX_TILE_K), 1},
                   DX_WARPS * 32, 0,
                   [&] { lora_dx_kernel(dx, du, A, a.M, a.K, a.r, a.seed, a.dropout, keep_scale(a.dropout), vec); });
    }
    emu_launch({(unsigned)pl.groups, (unsigned)pl.k_splits, 1}, LT_THREADS, smem, [&] {
        lora_dA_kernel<RP>(part, x, du, a.M, a.K, a.r, pl.k_cols, a.seed, a.dropout, keep_scale(a.dropout));
    });
    emu_lora_sum(dA, part, (int)pl.groups, (int64_t)a.r * a.K, 1.0f, 1.0f);
}
