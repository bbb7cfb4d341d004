/* The CPU reference ops: fp32 storage, fp32 math, plain loops (OpenMP over rows, each output
 * element written by one thread in a fixed order, so results do not depend on the thread count).
 * Each is the entry of the same name in the mg_backend table (engine/backend.h, where the
 * contracts are stated); the CUDA twins are mg_cuda_<op>_{forward,backward} in
 * kernels/cuda/<family>.cu. `ctx` is unused. Backwards sit beside their forwards.
 * Family files: linear.c (linear, linear_gelu, linear_residual; linear_backward), lora.c,
 * im2col.c, add.c, layernorm.c, rmsnorm.c (rmsnorm, rmsnorm_add), qk_norm_rope.c, attention.c,
 * attention_decode.c, gelu.c (gelu, geglu), avgpool.c, embedding.c (embedding, gather_rows,
 * scatter_rows), cross_entropy.c, adamw.c (sumsq, adamw_step). The memory entries are in
 * backend_cpu.c. */
#ifndef MG_KERNELS_CPU_OPS_H
#define MG_KERNELS_CPU_OPS_H

#include "engine/backend.h"

void mg_cpu_linear_forward(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K, int N);
void mg_cpu_linear_gelu_forward(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K,
                                int N);
void mg_cpu_linear_residual_forward(void *ctx, void *y, const void *x, const void *w, const void *b, const void *r,
                                    int64_t M, int K, int N);
void mg_cpu_im2col_forward(void *ctx, void *cols, const void *pixels, int64_t B, int S, int p);
void mg_cpu_add_rows_forward(void *ctx, void *x, const void *pos, int64_t B, int64_t P, int C);
void mg_cpu_add_forward(void *ctx, void *y, const void *a, const void *b, int64_t n);
void mg_cpu_layernorm_forward(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int C,
                              float eps);
void mg_cpu_rmsnorm_forward(void *ctx, void *y, const void *x, const void *w, int64_t M, int C, float eps);
void mg_cpu_rmsnorm_add_forward(void *ctx, void *h, const void *residual, const void *x, const void *w, int64_t M,
                                int C, float eps);
void mg_cpu_qk_norm_rope_forward(void *ctx, void *q, void *k, void *v, const void *qkv, const mg_qkv_args *a);
void mg_cpu_attention_forward(void *ctx, void *out, const void *q, const void *k, const void *v,
                              const mg_attention_args *a);
void mg_cpu_attention_decode_forward(void *ctx, void *out, const void *q, const void *kc, const void *vc,
                                     const mg_decode_args *a);
void mg_cpu_gelu_forward(void *ctx, void *y, const void *x, int64_t n);
void mg_cpu_geglu_forward(void *ctx, void *y, const void *gu, int64_t M, int F);
void mg_cpu_avgpool_forward(void *ctx, void *y, const void *x, int64_t B, int G, int k, int C);
void mg_cpu_embedding_forward(void *ctx, void *y, const void *E, const int32_t *ids, int64_t n, int C, int64_t V,
                              float scale);
void mg_cpu_gather_rows_forward(void *ctx, void *y, const void *x, const int32_t *rows, int64_t R, int C);
void mg_cpu_scatter_rows_forward(void *ctx, void *y, const void *src, const int32_t *rows, int64_t R, int C);

/* ---- training (every backward accumulates into its gradient outputs) ---- */
void mg_cpu_lora_forward(void *ctx, void *y, void *u, const void *x, const void *A, const void *B,
                         const mg_lora_args *a);
void mg_cpu_linear_backward(void *ctx, void *dx, const void *dy, const void *w, int64_t M, int K, int N);
void mg_cpu_lora_backward(void *ctx, void *dx, float *dA, float *dB, float *du, const void *dy, const void *x,
                          const void *u, const void *A, const void *B, const mg_lora_args *a);
void mg_cpu_gelu_backward(void *ctx, void *dx, const void *dy, const void *x, int64_t n);
void mg_cpu_geglu_backward(void *ctx, void *dgu, const void *dy, const void *gu, int64_t M, int F);
void mg_cpu_layernorm_backward(void *ctx, void *dx, const void *dy, const void *x, const void *w, int64_t M, int C,
                               float eps);
void mg_cpu_rmsnorm_backward(void *ctx, void *dx, const void *dy, const void *x, const void *w, int64_t M, int C,
                             float eps);
void mg_cpu_qk_norm_rope_backward(void *ctx, void *dqkv, const void *dq, const void *dk, const void *dv,
                                  const void *qkv, const mg_qkv_args *a);
void mg_cpu_attention_backward(void *ctx, void *dq, void *dk, void *dv, const void *dout, const void *q,
                               const void *k, const void *v, const void *out, const mg_attention_args *a);
void mg_cpu_avgpool_backward(void *ctx, void *dx, const void *dy, int64_t B, int G, int k, int C);
void mg_cpu_gather_rows_backward(void *ctx, void *dx, const void *dy, const int32_t *rows, int64_t R, int C);
void mg_cpu_scatter_rows_backward(void *ctx, void *dsrc, const void *dy, const int32_t *rows, int64_t R, int C);
void mg_cpu_cross_entropy_backward(void *ctx, void *dlogits, float *loss, const void *logits,
                                   const int32_t *targets, int64_t R, int V, float grad_scale);
void mg_cpu_sumsq(void *ctx, float *out, const float *x, int64_t n);
void mg_cpu_adamw_step(void *ctx, float *param, const float *grad, float *m, float *v, void *param_act,
                       const mg_adamw_args *a);

#endif
