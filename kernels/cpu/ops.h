/* The CPU reference ops: fp32 storage, fp32 math, plain loops (OpenMP over rows). Each is the
 * entry of the same name in the mg_backend table (engine/backend.h, where the contracts are
 * stated); the CUDA twins are mg_cuda_<op>_forward in kernels/cuda/<family>.cu. `ctx` is unused.
 * Family files: linear.c (linear, linear_gelu, linear_residual), im2col.c, add.c, layernorm.c,
 * rmsnorm.c (rmsnorm, rmsnorm_add), qk_norm_rope.c, attention.c, attention_decode.c, gelu.c,
 * avgpool.c, embedding.c (embedding, gather_rows, scatter_rows). */
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

#endif
