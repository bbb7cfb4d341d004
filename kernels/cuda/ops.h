/* The CUDA ops, forward and backward: bf16 storage, fp32 math, one family per file kernels/cuda/<family>.cu,
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
 * a larger B*T*H waits for the stream and may fail with MG_ERR_OOM; with D <= 80 on tensor cores
 * it also holds an fp32 dq accumulator of B*T*H*D floats). dk, dv deterministic; dq too except with
 * D <= 80 on tensor cores (fp32 atomics: its last bits may vary between runs).
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

/* ---- training (engine/backend.h's training entries): every backward ACCUMULATES (`+=`) into its
 * gradient outputs, in fp32 with one rounding to bf16 (fp32 outputs: no rounding). ---- */

/* linear.cu: dx[M,K] += dy[M,N] · w[N,K] (cuBLASLt, beta = 1 in place). */
mg_status mg_cuda_linear_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *w, int64_t M, int K, int N);

/* lora.cu (engine/backend.h mg_lora_args; A[r,K], B[N,r] bf16; xd = dropout(x) when dropout > 0
 * (element i = m*K + k kept iff mg_dropout_keep(seed, i, p), kept values bf16(x/(1-p))), x itself
 * otherwise; xd is never stored, only formed a chunk of rows at a time in ctx->scratch in the backward):
 * lora_forward:  u[M,r] = xd·Aᵀ (bf16); y[:, :N] += scale·u·Bᵀ (y rows ldy apart; one rounding).
 * lora_backward: dB[N,r] += scale·dyᵀ·u; du[M,r] = scale·dy·B; dA[r,K] += bf16(du)ᵀ·xd (all fp32);
 *                dx[M,K] += mask(du·A)/(1-p) (bf16); x is the forward's input (its mask drawn again);
 *                dx may be NULL (no input gradient); r <= 64 (MG_ERR_UNSUPPORTED otherwise). */
mg_status mg_cuda_lora_forward(mg_cuda_ctx *ctx, void *y, void *u, const void *x, const void *A, const void *B,
                               const mg_lora_args *a);
mg_status mg_cuda_lora_backward(mg_cuda_ctx *ctx, void *dx, float *dA, float *dB, float *du, const void *dy,
                                const void *x, const void *u, const void *A, const void *B, const mg_lora_args *a);

/* gelu.cu: gelu: dx[n] += dy[n]·gelu_tanh'(x[n]).
 * geglu: dgu[:, :F] += dy·up·gelu_tanh'(gate), dgu[:, F:] += dy·bf16(gelu_tanh(gate)) (the rounded
 * activation the forward multiplied), from gu[M,2F] = gate|up and dy[M,F]. */
mg_status mg_cuda_gelu_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *x, int64_t n);
mg_status mg_cuda_geglu_backward(mg_cuda_ctx *ctx, void *dgu, const void *dy, const void *gu, int64_t M, int F);

/* layernorm.cu / rmsnorm.cu: the input gradients dx[M,C] += ... (w, b frozen), statistics recomputed
 * from x (biased variance; Gemma's (1 + w)). */
mg_status mg_cuda_layernorm_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *x, const void *w,
                                     int64_t M, int C, float eps);
mg_status mg_cuda_rmsnorm_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *x, const void *w, int64_t M,
                                   int C, float eps);

/* qk_norm_rope.cu: dqkv[B,T,(H+2Hkv)*D] += the gradient of qk_norm_rope_forward given dq[B,T,H,D],
 * dk, dv[B,T,Hkv,D] and the forward's qkv (bf16 roundings passed straight through; the forward's
 * bf16 cos/sin). qkv may be NULL without norm_rope. */
mg_status mg_cuda_qk_norm_rope_backward(mg_cuda_ctx *ctx, void *dqkv, const void *dq, const void *dk, const void *dv,
                                        const void *qkv, const mg_qkv_args *a);

/* avgpool.cu: dx[B,G*G,C] += dy[B,(G/k)²,C] / k² at each pooled patch. */
mg_status mg_cuda_avgpool_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, int64_t B, int G, int k, int C);

/* embedding.cu: gather_rows: dx[rows[r]] += dy[r] (rows distinct); scatter_rows: dsrc[r] += dy[rows[r]]. */
mg_status mg_cuda_gather_rows_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const int32_t *rows, int64_t R,
                                       int C);
mg_status mg_cuda_scatter_rows_backward(mg_cuda_ctx *ctx, void *dsrc, const void *dy, const int32_t *rows, int64_t R,
                                        int C);

/* cross_entropy.cu: over R rows of logits[R,V] (bf16, fp32 math), targets[R] int32 (< 0: ignored):
 *   loss[0] (fp32, device) += Σ_r (logsumexp(logits[r]) - logits[r, t_r]) over rows with t_r >= 0
 *   dlogits[r] = grad_scale·(softmax(logits[r]) - onehot(t_r)) (`=`, bf16), zeros when t_r < 0;
 * dlogits may alias logits; a target >= V gives NaN (loss and row). */
mg_status mg_cuda_cross_entropy_backward(mg_cuda_ctx *ctx, void *dlogits, float *loss, const void *logits,
                                         const int32_t *targets, int64_t R, int V, float grad_scale);

/* adamw.cu: sumsq: out[0] += Σ x[i]² (fp32). adamw_step: one torch.optim.AdamW step on fp32
 * param/grad/m/v (engine/backend.h mg_adamw_args), param_act (bf16) = the updated param. */
mg_status mg_cuda_sumsq(mg_cuda_ctx *ctx, float *out, const float *x, int64_t n);
mg_status mg_cuda_adamw_step(mg_cuda_ctx *ctx, float *param, const float *grad, float *m, float *v, void *param_act,
                             const mg_adamw_args *a);

#endif
