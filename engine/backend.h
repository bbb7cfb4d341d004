/* The backend interface: the model code (model/) calls every op through an mg_backend table,
 * so the CPU reference (kernels/cpu, fp32) and the CUDA backend (kernels/cuda, bf16 storage with
 * fp32 math) run the same model code.
 *
 * Conventions shared by every entry:
 * - `ctx` is the backend's context (device, stream, handles); the CPU backend ignores it.
 * - Tensor arguments are raw device pointers. Float tensors hold the backend's activation dtype
 *   (`act_dtype`: MG_F32 on CPU, MG_BF16 on CUDA); index tensors (ids, positions, rows, masks) are
 *   int32 on every backend. Shapes are given in PyTorch order in the comments.
 * - Outputs are written with `=` unless the comment says `+=`. Outputs never alias inputs unless
 *   the comment says "may alias".
 * - Dimension letters: M rows, K in-features, N out-features, B batch, T tokens, C features,
 *   H/Hkv heads, D head dim, P patches, F MLP width, V vocab (docs/architecture.md).
 * - Element counts and offsets are int64_t: products of dims overflow 32 bits at real sizes.
 * Ops never fail on valid arguments; argument validation (ids in range, counts matching) is the
 * model code's job, done on the host before the call. The memory entries can fail (OOM).
 * Errors: the op and copy entries return nothing because a GPU backend queues work and learns of
 * a failure (a bad launch, a fault inside a kernel) later. It records the first failure and
 * `sync` hands it back; callers call `sync` before trusting downloaded results (the model code
 * does at the end of every load, forward and merge). */
#ifndef MG_BACKEND_H
#define MG_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/dtype.h"
#include "engine/status.h"

/* Attention arguments, packed because there are many (STYLE habit 13).
 * Key j is visible to query i (same batch row b) iff
 *   key_valid[b,j] AND ( (causal ? j <= i : true) OR (group[b,i] >= 0 AND group[b,i] == group[b,j]) )
 *                  AND (window > 0 ? i - j < window : true).
 * spec/model.md §6: causal for the text decoder, the same-image block OR'd in through `group`,
 * the window AND'ed on sliding layers; the vision tower uses causal = false, no group, no window. */
typedef struct {
    int64_t B, T;             /* batch, tokens */
    int H, Hkv, D;            /* query heads, kv heads (H % Hkv == 0), head dim; query head h reads kv head h / (H/Hkv) */
    float scale;              /* scores = q·k * scale */
    bool causal;
    int window;               /* sliding window; 0 = none */
    const int32_t *key_valid; /* (B, T) 1 = real token, 0 = padding; NULL = all valid */
    const int32_t *group;     /* (B, T) image index of a soft token, -1 for text; NULL = no image blocks */
    /* Training: (B, H, T) floats or NULL. attention_forward also writes each query row's log-sum-exp
     * of its scaled scores in base 2, lse2[b,h,i] = log2 Σ_j 2^(s_ij·log2 e) over the visible keys
     * (+inf for a row that sees none), and attention_backward may read it instead of recomputing
     * it (the CUDA backend does: a pass of Q·Kᵀ saved): the same args, buffer untouched between. */
    float *lse2;
} mg_attention_args;

/* The fused q|k|v projection split into attention's inputs (spec/model.md §5.4). Row m of
 * qkv[B*T, (H+2Hkv)*D] holds H query heads, then Hkv key heads, then Hkv value heads, D features
 * each. With norm_rope, q and k are Gemma's q_norm/k_norm (RMSNorm with (1 + w), eps) over each head
 * and then RoPE (half-split, inv_freq_i = theta^(-2i/D) / factor, angle = pos * inv_freq_i); v is
 * copied. Without it (SigLIP) all three are plain copies. */
typedef struct {
    int64_t B, T;                /* batch, tokens */
    int H, Hkv, D;               /* query heads, kv heads, head dim (even with norm_rope) */
    bool norm_rope;
    const void *q_norm, *k_norm; /* (D) each; used with norm_rope */
    float eps;
    const int32_t *pos;          /* (B, T) RoPE positions; used with norm_rope */
    float theta, factor;
} mg_qkv_args;

/* One query token per batch row against a KV cache (greedy decoding after a prefill).
 * Row b's cache holds keys and values of positions 0..len-1; the query is position len-1, and
 * key j is visible iff window == 0 or (len-1) - j < window: the plain causal / sliding mask of
 * decode steps (spec/model.md §6.2; no padding, no image blocks). */
typedef struct {
    int64_t B;     /* batch */
    int H, Hkv, D; /* query heads, kv heads (H % Hkv == 0), head dim */
    float scale;   /* scores = q·k * scale */
    int64_t Tmax;  /* positions each row's cache holds: key j of row b is kc[b, j] */
    int64_t len;   /* filled positions, 1 <= len <= Tmax */
    int window;    /* sliding window; 0 = none */
} mg_decode_args;

/* One LoRA branch on top of a frozen linear (PEFT lora/layer.py Linear.forward, spec/model.md §8.1):
 *   xd = dropout(x)        (training only: element i of x kept iff mg_dropout_keep(seed, i, p), kept
 *                           values scaled by 1/(1-p); p == 0: xd is x itself. Never stored: the
 *                           forward applies the mask as it reads x and the backward draws it again
 *                           from (seed, i, p), so x is what a backward keeps)
 *   u  = xd · Aᵀ           u[M,r], A[r,K]
 *   y[:, :N] += scale · u · Bᵀ   B[N,r]; y's rows are ldy apart (a column slice of a fused output:
 *                           q, k or v inside q|k|v, gate or up inside gate|up)
 * A and B are given in act_dtype (the device copy of the fp32 master weights). */
typedef struct {
    int64_t M;        /* rows */
    int K, r, N;      /* in-features, rank, out-features */
    int64_t ldy;      /* row stride of y and dy, >= N */
    float scale;      /* alpha / r (PEFT's scaling) */
    float dropout;    /* p in [0, 1); 0 = no dropout (evaluation) */
    uint64_t seed;    /* dropout mask seed (engine/dropout.h), the same in a recompute */
} mg_lora_args;

/* One AdamW step over a flat fp32 vector (torch.optim.AdamW, decoupled weight decay):
 *   g = grad * grad_scale;  p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g²
 *   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps);  param_act = p in act_dtype */
typedef struct {
    int64_t n;
    float lr, beta1, beta2, eps, weight_decay;
    int step;         /* t, 1-based */
    float grad_scale; /* gradient clipping factor min(1, max_norm / norm), 1 when not clipping */
} mg_adamw_args;

typedef struct mg_backend {
    const char *name;   /* "cpu" or "cuda" */
    const char *device; /* what runs the ops: "host", "NVIDIA H100 80GB HBM3" */
    mg_dtype act_dtype; /* dtype of every float tensor the ops see */
    void *ctx;

    /* Waits for all queued work; returns the first failure of an op or copy since the previous
     * call (its message through mg_last_error) and forgets it. The CPU backend returns MG_OK. */
    mg_status (*sync)(void *ctx);

    /* ---- memory ---- */
    void *(*alloc)(void *ctx, size_t nbytes);  /* NULL when out of memory; contents undefined */
    void (*free)(void *ctx, void *p);          /* p may be NULL */
    /* dst[n] (act_dtype) = src[n] converted from src_dtype (a host pointer, e.g. into a checkpoint);
     * src may be freed or reused once upload returns (the copy to dst may still be queued) */
    void (*upload)(void *ctx, void *dst, const void *src, mg_dtype src_dtype, int64_t n);
    /* host dst[n] = fp32 of src[n] (act_dtype) */
    void (*download)(void *ctx, float *dst, const void *src, int64_t n);
    /* raw bytes host -> device (index tensors) */
    void (*copy_in)(void *ctx, void *dst, const void *src, size_t nbytes);
    /* raw bytes device -> host (fp32 gradients, the loss); waits for the queued work before it */
    void (*copy_out)(void *ctx, void *dst, const void *src, size_t nbytes);
    /* raw bytes device -> device (saved layer inputs) */
    void (*copy)(void *ctx, void *dst, const void *src, size_t nbytes);
    /* dst[0..nbytes) = 0 */
    void (*zero)(void *ctx, void *dst, size_t nbytes);

    /* ---- ops (kernels/cpu/<family>.c, kernels/cuda/<family>.cu) ---- */
    /* y[M,N] = x[M,K] · w[N,K]ᵀ (+ b[N] when b != NULL) */
    void (*linear_forward)(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K, int N);
    /* y[M,N] = gelu_tanh(x[M,K] · w[N,K]ᵀ (+ b[N] when b != NULL)) (SigLIP fc1 + activation), fp32
     * from the GEMM through the GELU and one rounding to act_dtype at the end: transformers' bf16
     * graph also rounds fc1's output before the GELU, so this is slightly closer to fp32 than it */
    void (*linear_gelu_forward)(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K,
                                int N);
    /* y[M,N] = r[M,N] + x[M,K] · w[N,K]ᵀ (+ b[N] when b != NULL) (SigLIP out_proj / fc2 and the
     * residual add after each); y may alias r (the residual stream updated in place). fp32 from the
     * GEMM through the add, one rounding to act_dtype: transformers' bf16 graph rounds the linear's
     * output before the add, so this is slightly closer to fp32 than it */
    void (*linear_residual_forward)(void *ctx, void *y, const void *x, const void *w, const void *b, const void *r,
                                    int64_t M, int K, int N);
    /* cols[B*P, 3*p*p] from pixels[B,3,S,S], P = (S/p)², patch r*(S/p)+c, column ch*p*p + kh*p + kw */
    void (*im2col_forward)(void *ctx, void *cols, const void *pixels, int64_t B, int S, int p);
    /* x[B,P,C] += pos[P,C] */
    void (*add_rows_forward)(void *ctx, void *x, const void *pos, int64_t B, int64_t P, int C);
    /* y[n] = a[n] + b[n]; y may alias a or b */
    void (*add_forward)(void *ctx, void *y, const void *a, const void *b, int64_t n);
    /* y[M,C] = (x - mean) / sqrt(var + eps) * w + b over the last dim (biased var); y may alias x */
    void (*layernorm_forward)(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int C,
                              float eps);
    /* y[M,C] = x * rsqrt(mean(x²) + eps) * (1 + w) (Gemma RMSNorm); y may alias x */
    void (*rmsnorm_forward)(void *ctx, void *y, const void *x, const void *w, int64_t M, int C, float eps);
    /* h[M,C] = residual + rmsnorm(x) (post-attention / post-feedforward norm and the residual add;
     * the norm's output is rounded to act_dtype before the add); h may alias residual */
    void (*rmsnorm_add_forward)(void *ctx, void *h, const void *residual, const void *x, const void *w, int64_t M,
                                int C, float eps);
    /* q[B,T,H,D], k,v[B,T,Hkv,D] from qkv[B,T,(H+2Hkv)*D] (mg_qkv_args) */
    void (*qk_norm_rope_forward)(void *ctx, void *q, void *k, void *v, const void *qkv, const mg_qkv_args *a);
    /* out[B,T,H,D] = softmax(mask(q·kᵀ·scale)) · v from q[B,T,H,D], k,v[B,T,Hkv,D] */
    void (*attention_forward)(void *ctx, void *out, const void *q, const void *k, const void *v,
                              const mg_attention_args *a);
    /* out[B,H,D] = softmax(q·kᵀ·scale) · v over the visible cached keys (mg_decode_args), from
     * q[B,H,D] and the caches kc, vc[B,Tmax,Hkv,D] */
    void (*attention_decode_forward)(void *ctx, void *out, const void *q, const void *kc, const void *vc,
                                     const mg_decode_args *a);
    /* y[n] = gelu_tanh(x[n]); y may alias x */
    void (*gelu_forward)(void *ctx, void *y, const void *x, int64_t n);
    /* y[M,F] = gelu_tanh(gu[:, :F]) * gu[:, F:] from gu[M,2F] (fused gate|up GEMM output) */
    void (*geglu_forward)(void *ctx, void *y, const void *gu, int64_t M, int F);
    /* y[B,(G/k)²,C] from x[B,G*G,C]: token i*(G/k)+j = mean of patches (k*i+a)*G + k*j+b, a,b < k */
    void (*avgpool_forward)(void *ctx, void *y, const void *x, int64_t B, int G, int k, int C);
    /* y[n,C] = E[ids[n]] * scale from E[V,C] (ids already checked to be < V; a bad id gives a NaN row) */
    void (*embedding_forward)(void *ctx, void *y, const void *E, const int32_t *ids, int64_t n, int C, int64_t V,
                              float scale);
    /* y[R,C] = x[rows[r]] (gather; also selects head vocab rows of E) */
    void (*gather_rows_forward)(void *ctx, void *y, const void *x, const int32_t *rows, int64_t R, int C);
    /* y[rows[r]] = src[r] for r < R, other rows of y untouched (the image soft-token merge) */
    void (*scatter_rows_forward)(void *ctx, void *y, const void *src, const int32_t *rows, int64_t R, int C);
    /* the LoRA branch (mg_lora_args): u (M,r) = dropout(x)·Aᵀ, y += scale·u·Bᵀ */
    void (*lora_forward)(void *ctx, void *y, void *u, const void *x, const void *A, const void *B,
                         const mg_lora_args *a);

    /* ---- training (engine/tape.c replays these; every one ACCUMULATES into its gradient outputs:
     * dx += ..., so a gradient reached by two paths needs no extra add; the caller zeroes them) ---- */
    /* dx[M,K] += dy[M,N] · w[N,K] (a frozen linear's input gradient; weights get none) */
    void (*linear_backward)(void *ctx, void *dx, const void *dy, const void *w, int64_t M, int K, int N);
    /* LoRA's leaves and input (x, u as the forward left them; du (M,r) fp32 scratch; the mask drawn
     * again from the seed):
     *   dB[N,r] += scale · dyᵀ·u;  du = scale · dy·B;  dA[r,K] += duᵀ·dropout(x);  dx += dropout_mask(du·A)
     * dA, dB fp32; dx, dy act_dtype (dy rows ldy apart) */
    void (*lora_backward)(void *ctx, void *dx, float *dA, float *dB, float *du, const void *dy, const void *x,
                          const void *u, const void *A, const void *B, const mg_lora_args *a);
    /* dx[n] += dy[n] · gelu_tanh'(x[n]) */
    void (*gelu_backward)(void *ctx, void *dx, const void *dy, const void *x, int64_t n);
    /* y = gelu_tanh(gate) * up:  dgu[:, :F] += dy·up·gelu_tanh'(gate),  dgu[:, F:] += dy·gelu_tanh(gate) */
    void (*geglu_backward)(void *ctx, void *dgu, const void *dy, const void *gu, int64_t M, int F);
    /* LayerNorm's input gradient (w, b frozen), mean and variance recomputed from x */
    void (*layernorm_backward)(void *ctx, void *dx, const void *dy, const void *x, const void *w, int64_t M, int C,
                               float eps);
    /* Gemma RMSNorm's input gradient (w frozen), rsqrt recomputed from x */
    void (*rmsnorm_backward)(void *ctx, void *dx, const void *dy, const void *x, const void *w, int64_t M, int C,
                             float eps);
    /* dqkv[B,T,(H+2Hkv)*D] += the gradient of qk_norm_rope_forward given dq, dk, dv and the forward's qkv */
    void (*qk_norm_rope_backward)(void *ctx, void *dqkv, const void *dq, const void *dk, const void *dv,
                                  const void *qkv, const mg_qkv_args *a);
    /* dq[B,T,H,D], dk, dv[B,T,Hkv,D] += the gradients of attention_forward (same mask) given dout and
     * the forward's q, k, v and out (softmax statistics are recomputed) */
    void (*attention_backward)(void *ctx, void *dq, void *dk, void *dv, const void *dout, const void *q,
                               const void *k, const void *v, const void *out, const mg_attention_args *a);
    /* dx[B,G*G,C] += dy[B,(G/k)²,C] / k² at each pooled patch */
    void (*avgpool_backward)(void *ctx, void *dx, const void *dy, int64_t B, int G, int k, int C);
    /* gather_rows' input gradient: dx[rows[r]] += dy[r] (rows distinct) */
    void (*gather_rows_backward)(void *ctx, void *dx, const void *dy, const int32_t *rows, int64_t R, int C);
    /* scatter_rows' source gradient: dsrc[r] += dy[rows[r]] */
    void (*scatter_rows_backward)(void *ctx, void *dsrc, const void *dy, const int32_t *rows, int64_t R, int C);
    /* Causal-LM cross-entropy on R rows of logits[R,V] (act_dtype, upcast to fp32 like transformers):
     *   loss[0] += Σ_r (logsumexp(logits[r]) - logits[r, t_r])   over rows with t_r = targets[r] >= 0
     *   dlogits[r] = grad_scale · (softmax(logits[r]) - onehot(t_r)), a zero row when t_r < 0
     * loss is one fp32 on the device; dlogits may alias logits (overwritten with `=`). */
    void (*cross_entropy_backward)(void *ctx, void *dlogits, float *loss, const void *logits, const int32_t *targets,
                                   int64_t R, int V, float grad_scale);
    /* out[0] += Σ x[i]² (fp32 on the device; the global gradient norm) */
    void (*sumsq)(void *ctx, float *out, const float *x, int64_t n);
    /* one AdamW step (mg_adamw_args) on fp32 param/grad/m/v, refreshing param_act (act_dtype) */
    void (*adamw_step)(void *ctx, float *param, const float *grad, float *m, float *v, void *param_act,
                       const mg_adamw_args *a);

    /* ---- threads ---- */
    /* Makes this backend's device current on the calling thread (CUDA's current device is per
     * thread), so a model may be driven from any thread, one at a time: the C API calls it at the
     * start of every call on a handle (engine/jobs/api.c). NULL when there is nothing to do (CPU). */
    mg_status (*bind)(void *ctx);
} mg_backend;

/* The fp32 CPU reference backend (kernels/cpu/backend_cpu.c). Never NULL. */
const mg_backend *mg_backend_cpu(void);

/* The bf16 CUDA backend on `device` (kernels/cuda/backend_cuda.cu): creates the CUDA context
 * (stream, cuBLASLt) and a pinned staging buffer. Fails with MG_ERR_UNSUPPORTED when there is no
 * usable GPU, MG_ERR_CUDA/MG_ERR_OOM otherwise. Release with mg_backend_cuda_destroy. */
mg_status mg_backend_cuda_create(int device, mg_backend **be);
void mg_backend_cuda_destroy(const mg_backend *be); /* be may be NULL */

/* The backend that runs the model (engine/backend_open.c): CUDA on device 0 when mg_gpu_query
 * finds a usable GPU and force_cpu is false, else the CPU reference; a GPU too old for the CUDA
 * kernels also falls back to the CPU. `desc` (may be NULL) gets one line for the user saying which
 * ran and why: "cuda (NVIDIA H100 80GB HBM3)", "cpu (--cpu)", "cpu, no GPU (...)". Fails only when
 * a usable GPU is there but its context cannot be created. Release with mg_backend_close. */
mg_status mg_backend_open(bool force_cpu, const mg_backend **be, char *desc, size_t desc_size);
void mg_backend_close(const mg_backend *be); /* be may be NULL or the CPU backend */

#endif
