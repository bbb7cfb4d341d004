/* The CUDA forward ops: bf16 storage, fp32 math, one family per file kernels/cuda/<family>.cu,
 * twins of kernels/cpu/<family>.c with the same argument order. Conventions:
 * - ctx from mg_cuda_ctx_create; every op is queued on ctx->stream and returns at once, so a fault
 *   inside a kernel is reported by the next mg_cuda_sync. Launch and argument errors return here.
 * - Float tensors are device pointers to bf16 unless the comment says otherwise; index tensors
 *   (ids, positions, rows, masks) are device int32. Shapes in PyTorch order.
 * - Outputs are written with `=`, except where a comment says `+=`; an output aliases an input only
 *   where the comment says "may alias".
 * - Rounding follows spec/model.md §10: each op computes in fp32 and rounds its output to bf16
 *   once, except where the comment lists extra bf16 rounding points (as torch's bf16 graph has).
 * - Shapes are checked (MG_ERR_SHAPE / MG_ERR_ARG); ids and rows must already be in range (checked
 *   on the host by the model code), an out-of-range id yields a NaN row instead of a stray read. */
#ifndef MG_KERNELS_CUDA_OPS_H
#define MG_KERNELS_CUDA_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/backend.h"
#include "engine/status.h"
#include "kernels/cuda/cuda_context.h"

/* linear.cu: y[M,N] = x[M,K] · w[N,K]ᵀ (+ b[N] when b != NULL), through cuBLASLt: fp32
 * accumulation, the bias added in fp32 in the epilogue, one rounding to bf16. */
mg_status mg_cuda_linear_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b, int64_t M,
                                 int K, int N);
/* linear.cu: y[M,N] = gelu_tanh(x[M,K] · w[N,K]ᵀ (+ b[N])), cuBLASLt's GELU(_BIAS) epilogue: the
 * bias and the activation in fp32, one rounding to bf16 (no rounding between the GEMM and the GELU). */
mg_status mg_cuda_linear_gelu_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b,
                                      int64_t M, int K, int N);
/* linear.cu: y[M,N] = r[M,N] + x[M,K] · w[N,K]ᵀ (+ b[N]), cuBLASLt with beta = 1 and C = r: the
 * product, bias and residual summed in fp32, one rounding to bf16 (no rounding of the linear's
 * output before the add); y may alias r. */
mg_status mg_cuda_linear_residual_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b,
                                          const void *r, int64_t M, int K, int N);

/* im2col.cu: cols[B*P, 3*p*p] from pixels[B,3,S,S] (bf16: rounded at upload, like
 * pixel_values.to(bf16)); P = (S/p)², patch index r*(S/p)+c, column ch*p*p + kh*p + kw. */
mg_status mg_cuda_im2col_forward(mg_cuda_ctx *ctx, void *cols, const void *pixels, int64_t B, int S, int p);

/* add.cu: x[B,P,C] += pos[P,C] (SigLIP position embedding), and y[n] = a[n] + b[n] (residual;
 * y may alias a or b). */
mg_status mg_cuda_add_rows_forward(mg_cuda_ctx *ctx, void *x, const void *pos, int64_t B, int64_t P, int C);
mg_status mg_cuda_add_forward(mg_cuda_ctx *ctx, void *y, const void *a, const void *b, int64_t n);

/* layernorm.cu: y[M,C] = (x - mean) / sqrt(var + eps) * w[C] + b[C], biased var; y may alias x. */
mg_status mg_cuda_layernorm_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b,
                                    int64_t M, int C, float eps);

/* rmsnorm.cu: Gemma RMSNorm y[M,C] = x * rsqrt(mean(x²) + eps) * (1 + w[C]); y may alias x.
 * Per head for q/k norm: M = B*T*H rows of C = D.
 * rmsnorm_add: h[M,C] = residual[M,C] + rmsnorm(x) with the norm rounded to bf16 before the add
 * (Gemma's post-attention / post-feedforward norm plus the residual); h may alias residual. */
mg_status mg_cuda_rmsnorm_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, int64_t M, int C,
                                  float eps);
mg_status mg_cuda_rmsnorm_add_forward(mg_cuda_ctx *ctx, void *h, const void *residual, const void *x, const void *w,
                                      int64_t M, int C, float eps);

/* qk_norm_rope.cu: q[B,T,H,D], k,v[B,T,Hkv,D] from the fused projection qkv[B,T,(H+2Hkv)*D]
 * (engine/backend.h mg_qkv_args, device pointers): with norm_rope, q/k get Gemma's RMSNorm (rounded
 * to bf16) then RoPE (fp32 angle, cos/sin rounded to bf16, bf16 products and sum), v is copied; without it, plain copies.
 * D even and <= 256 with norm_rope. */
mg_status mg_cuda_qk_norm_rope_forward(mg_cuda_ctx *ctx, void *q, void *k, void *v, const void *qkv,
                                       const mg_qkv_args *a);

/* attention_decode.cu: out[B,H,D] = softmax(q·kᵀ·scale) · v for one query token per row over the
 * caches kc, vc[B,Tmax,Hkv,D] (engine/backend.h mg_decode_args); fp32 scores, softmax and P, one
 * rounding of the output to bf16; D <= 256. */
mg_status mg_cuda_attention_decode_forward(mg_cuda_ctx *ctx, void *out, const void *q, const void *kc, const void *vc,
                                           const mg_decode_args *a);

/* attention.cu: out[B,T,H,D] = softmax(mask(q·kᵀ·scale)) · v from q[B,T,H,D], k,v[B,T,Hkv,D]; scores and
 * softmax in fp32; a query with no visible key gets zeros. Flash-style: the T×T scores are never
 * stored. The arguments and the mask are engine/backend.h's mg_attention_args (one type for both
 * backends); its pointers are device pointers; D <= 256; scale > 0 (MG_ERR_ARG otherwise). Two kernels:
 * - D a multiple of 8 and q, k, v 16-byte aligned (every model call): tensor cores (mma bf16,
 *   fp32 accumulation), P rounded to bf16 before P·V, as flash/SDPA kernels do;
 * - otherwise: fp32 on CUDA cores, P kept in fp32 (like SDPA's math path). */
mg_status mg_cuda_attention_forward(mg_cuda_ctx *ctx, void *out, const void *q, const void *k, const void *v,
                                    const mg_attention_args *a);
/* attention.cu: dq[B,T,H,D], dk, dv[B,T,Hkv,D] += the gradients of attention_forward (same args and
 * mask) from dout and the forward's q, k, v, out; each read as bf16, the fp32 gradient added, one
 * rounding. Row log-sum-exps recomputed into ctx->attn_scratch (grown on demand: the first call at
 * a larger B*T*H waits for the stream and may fail with MG_ERR_OOM). Deterministic (no atomics).
 * D a multiple of 8 and all pointers but out 16-byte aligned: tensor cores, P and dS rounded to
 * bf16 for their products; otherwise fp32 on CUDA cores (slow; for odd D / misaligned views). */
mg_status mg_cuda_attention_backward(mg_cuda_ctx *ctx, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                     const void *k, const void *v, const void *out, const mg_attention_args *a);

/* gelu.cu: gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))) in fp32.
 * gelu:  y[n] = gelu_tanh(x[n]); y may alias x.
 * geglu: y[M,F] = bf16(gelu_tanh(gu[:, :F])) * gu[:, F:] from gu[M,2F] (fused gate|up GEMM
 *        output); the activation is rounded to bf16 before the product, as in torch. */
mg_status mg_cuda_gelu_forward(mg_cuda_ctx *ctx, void *y, const void *x, int64_t n);
mg_status mg_cuda_geglu_forward(mg_cuda_ctx *ctx, void *y, const void *gu, int64_t M, int F);

/* avgpool.cu: y[B,(G/k)²,C] from x[B,G*G,C]: token i*(G/k)+j = mean of patches (k*i+a)*G + k*j+b,
 * a,b < k, summed in fp32. */
mg_status mg_cuda_avgpool_forward(mg_cuda_ctx *ctx, void *y, const void *x, int64_t B, int G, int k, int C);

/* embedding.cu (all with `=`):
 * embedding:    y[n,C] = bf16(E[ids[n]] * scale), E[V,C]; scale already rounded to bf16 by the
 *               model code (50.5 for C=2560); ids must be in [0, V) (a bad id gives a NaN row).
 * gather_rows:  y[R,C] = x[rows[r]]    (hidden rows at the scored positions)
 * scatter_rows: y[rows[r]] = src[r]     (image soft-token merge; other rows of y untouched) */
mg_status mg_cuda_embedding_forward(mg_cuda_ctx *ctx, void *y, const void *E, const int32_t *ids, int64_t n, int C,
                                    int64_t V, float scale);
mg_status mg_cuda_gather_rows_forward(mg_cuda_ctx *ctx, void *y, const void *x, const int32_t *rows, int64_t R,
                                      int C);
mg_status mg_cuda_scatter_rows_forward(mg_cuda_ctx *ctx, void *y, const void *src, const int32_t *rows, int64_t R,
                                       int C);

#endif
