// mg_cuda_lora_backward on the host for lora_main.c: kernels/cuda/lora.cu's tensor-core backward in
// the emulator, planned as on an H200 (132 SMs, the 32 MiB scratch). Shapes the production code
// sends to cuBLASLt instead are refused (the emulator has no cuBLASLt).
#include <vector>

#include "emu.h"
#include "lora_emu.inc"
#include "emu_lora.h"
extern "C" {
#include "engine/status.h"
#include "kernels/cuda/cuda_context.h"
}

int emu_lora_tc_calls;

extern "C" mg_status mg_cuda_lora_backward(mg_cuda_ctx *, void *dx, float *dA, float *dB, float *du, const void *dy,
                                           const void *x, const void *u, const void *A, const void *B,
                                           const mg_lora_args *a) {
    const size_t scratch_bytes = (size_t)32 << 20;
    static std::vector<float> scratch(scratch_bytes / sizeof(float));
    lora_tc_plan pl;
    if (!lora_backward_tc_plan(132, scratch_bytes, (const bf16 *)dy, (const bf16 *)x, a, &pl))
        return mg_fail(MG_ERR_UNSUPPORTED, NULL, "emulator: this shape takes the cuBLASLt path");
    emu_lora_tc_calls++;
    bf16 *dxb = (bf16 *)dx;
    const bf16 *dyb = (const bf16 *)dy, *xb = (const bf16 *)x, *ub = (const bf16 *)u, *Ab = (const bf16 *)A,
               *Bb = (const bf16 *)B;
    switch (pl.RP) {
    case 16: emu_lora_backward_tc<16>(dxb, dA, dB, du, dyb, xb, ub, Ab, Bb, *a, pl, scratch.data()); break;
    case 32: emu_lora_backward_tc<32>(dxb, dA, dB, du, dyb, xb, ub, Ab, Bb, *a, pl, scratch.data()); break;
    case 48: emu_lora_backward_tc<48>(dxb, dA, dB, du, dyb, xb, ub, Ab, Bb, *a, pl, scratch.data()); break;
    default: emu_lora_backward_tc<64>(dxb, dA, dB, du, dyb, xb, ub, Ab, Bb, *a, pl, scratch.data()); break;
    }
    return MG_OK;
}
