/* The CPU reference backend: host memory, fp32 activations, the mg_cpu_* ops. Weights in
 * bf16/f16/f32 are converted to fp32 by `upload`. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops.h"

static void *cpu_alloc(void *ctx, size_t nbytes) {
    (void)ctx;
    return malloc(nbytes ? nbytes : 1);
}

static void cpu_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

static void cpu_upload(void *ctx, void *dst, const void *src, mg_dtype src_dtype, int64_t n) {
    (void)ctx;
    mg_to_f32(dst, src, src_dtype, (size_t)n);
}

static void cpu_download(void *ctx, float *dst, const void *src, int64_t n) {
    (void)ctx;
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void cpu_copy_in(void *ctx, void *dst, const void *src, size_t nbytes) {
    (void)ctx;
    memcpy(dst, src, nbytes);
}

static void cpu_copy_out(void *ctx, void *dst, const void *src, size_t nbytes) {
    (void)ctx;
    memcpy(dst, src, nbytes); /* nothing is queued on the CPU: the data is there */
}

static void cpu_copy(void *ctx, void *dst, const void *src, size_t nbytes) {
    (void)ctx;
    memcpy(dst, src, nbytes);
}

static void cpu_zero(void *ctx, void *dst, size_t nbytes) {
    (void)ctx;
    memset(dst, 0, nbytes);
}

static mg_status cpu_sync(void *ctx) {
    (void)ctx;
    return MG_OK; /* every op has finished when it returns and none can fail */
}

static const mg_backend CPU = {
    .name = "cpu",
    .device = "host",
    .act_dtype = MG_F32,
    .ctx = NULL,
    .sync = cpu_sync,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy_in = cpu_copy_in,
    .copy_out = cpu_copy_out,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .linear_forward = mg_cpu_linear_forward,
    .linear_gelu_forward = mg_cpu_linear_gelu_forward,
    .linear_residual_forward = mg_cpu_linear_residual_forward,
    .im2col_forward = mg_cpu_im2col_forward,
    .add_rows_forward = mg_cpu_add_rows_forward,
    .add_forward = mg_cpu_add_forward,
    .layernorm_forward = mg_cpu_layernorm_forward,
    .rmsnorm_forward = mg_cpu_rmsnorm_forward,
    .rmsnorm_add_forward = mg_cpu_rmsnorm_add_forward,
    .qk_norm_rope_forward = mg_cpu_qk_norm_rope_forward,
    .attention_forward = mg_cpu_attention_forward,
    .attention_decode_forward = mg_cpu_attention_decode_forward,
    .gelu_forward = mg_cpu_gelu_forward,
    .geglu_forward = mg_cpu_geglu_forward,
    .avgpool_forward = mg_cpu_avgpool_forward,
    .embedding_forward = mg_cpu_embedding_forward,
    .gather_rows_forward = mg_cpu_gather_rows_forward,
    .scatter_rows_forward = mg_cpu_scatter_rows_forward,
    .lora_forward = mg_cpu_lora_forward,
    .linear_backward = mg_cpu_linear_backward,
    .lora_backward = mg_cpu_lora_backward,
    .gelu_backward = mg_cpu_gelu_backward,
    .geglu_backward = mg_cpu_geglu_backward,
    .layernorm_backward = mg_cpu_layernorm_backward,
    .rmsnorm_backward = mg_cpu_rmsnorm_backward,
    .qk_norm_rope_backward = mg_cpu_qk_norm_rope_backward,
    .attention_backward = mg_cpu_attention_backward,
    .avgpool_backward = mg_cpu_avgpool_backward,
    .gather_rows_backward = mg_cpu_gather_rows_backward,
    .scatter_rows_backward = mg_cpu_scatter_rows_backward,
    .cross_entropy_backward = mg_cpu_cross_entropy_backward,
    .sumsq = mg_cpu_sumsq,
    .adamw_step = mg_cpu_adamw_step,
};

const mg_backend *mg_backend_cpu(void) { return &CPU; }
