// tests/gpu/test_cuda_ops.c's CUDA layer on the host, for test_main.c: device memory is host memory,
// copies are memcpy, and mg_cuda_attention_forward / mg_cuda_attention_backward run the kernels in
// the emulator, choosing the path with the production conditions (attention_uses_tensor_cores,
// attention_backward_uses_tensor_cores, and with EMU_SM90 set attention_sm90_fits as on an
// H100/H200: the Hopper forward and backward).
#include "emu.h"
#include "attn_emu.inc"
#include "attn_sm90_emu.inc"
#include "emu_attention.h"
extern "C" {
#include "engine/status.h"
#include "kernels/cuda/cuda_context.h"
}

int emu_sm90_calls, emu_tc_calls, emu_fp32_calls;

// attention_sm90_fits on a compute capability 9.0 device.
static bool emu_sm90_fits(const mg_attention_args *a) {
    return getenv("EMU_SM90") && !a->causal && a->window == 0 && !a->key_valid && a->D % 8 == 0 && a->D <= 128;
}

extern "C" mg_status mg_cuda_attention_backward(mg_cuda_ctx *, void *dq, void *dk, void *dv, const void *dout,
                                                const void *q, const void *k, const void *v, const void *out,
                                                const mg_attention_args *a) {
    const emu_bwd_path path = !attention_backward_uses_tensor_cores(dq, dk, dv, dout, q, k, v, a->D) ? EMU_BWD_FP32
                              : emu_sm90_fits(a)                                                   ? EMU_BWD_SM90
                                                                                                   : EMU_BWD_TC;
    (path == EMU_BWD_SM90 ? emu_sm90_calls : path == EMU_BWD_TC ? emu_tc_calls : emu_fp32_calls)++;
    emu_attention_backward(path, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout, (const bf16 *)q,
                           (const bf16 *)k, (const bf16 *)v, (const bf16 *)out, *a);
    return MG_OK;
}
extern "C" mg_status mg_cuda_attention_forward(mg_cuda_ctx *, void *out, const void *q, const void *k, const void *v,
                                               const mg_attention_args *a) {
    const bool sm90 = attention_uses_tensor_cores(out, q, k, v, a->D) && emu_sm90_fits(a);
    if (sm90) emu_sm90_calls++;
    emu_attention_forward(sm90, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, *a);
    return MG_OK;
}
extern "C" mg_status mg_cuda_alloc(mg_cuda_ctx *, void **p, size_t bytes) {
    *p = aligned_alloc(256, (bytes + 255) / 256 * 256);  // cudaMalloc's alignment
    return MG_OK;
}
extern "C" void mg_cuda_free(void *p) { free(p); }
extern "C" mg_status mg_cuda_upload(mg_cuda_ctx *, void *d, const void *s, size_t n) { memcpy(d, s, n); return MG_OK; }
extern "C" mg_status mg_cuda_download(mg_cuda_ctx *, void *d, const void *s, size_t n) { memcpy(d, s, n); return MG_OK; }
extern "C" mg_status mg_cuda_sync(mg_cuda_ctx *) { return MG_OK; }
