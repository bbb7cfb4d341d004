// The optimizer's device side over the flat fp32 LoRA vector (model/lora.h: A and B of every
// adapted layer in one block, with gradients and AdamW state beside it):
//   sumsq:      out[0] += Σ x[i]²                           (`+=`, fp32; the global gradient norm²)
//   adamw_step: torch.optim.AdamW (decoupled weight decay; engine/backend.h mg_adamw_args), fp32:
//     g = grad · grad_scale
//     p = p · (1 - lr·wd)
//     m = b1·m + (1 - b1)·g,   v = b2·v + (1 - b2)·g²
//     p = p - step_size · m / (sqrt(v) / bc2_sqrt + eps),  step_size = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t)
//     param_act = bf16(p)    (the copy the ops read)
//   p, m, v updated in place (`=`); grad is not written. The scalars 1 - lr·wd, step_size and bc2_sqrt
//   are computed on the host in double and rounded to fp32 once, as torch does with its Python floats.
// sumsq's blocks each reduce their part and add it with one atomicAdd, so the last bits of the sum
// vary between runs.
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// vec: x 16-byte aligned (four floats at a time), the tail one by one.
static __global__ void sumsq_kernel(float *out, const float *x, int64_t n, bool vec) {
    __shared__ float scratch[32];
    const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t n4 = vec ? n / 4 : 0;
    float acc = 0.0f;
    for (int64_t v = tid; v < n4; v += stride) {
        const float4 f = reinterpret_cast<const float4 *>(x)[v];
        acc += f.x * f.x + f.y * f.y + f.z * f.z + f.w * f.w;
    }
    for (int64_t e = n4 * 4 + tid; e < n; e += stride) acc += x[e] * x[e];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) atomicAdd(out, acc);
}

typedef struct {
    float grad_scale, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps;
} adamw_scalars;

static __global__ void adamw_step_kernel(float *param, const float *grad, float *m, float *v, bf16 *param_act, int64_t n,
                                         adamw_scalars k) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        const float g = grad[e] * k.grad_scale;
        float p = param[e] * k.decay;
        const float me = k.beta1 * m[e] + k.one_minus_beta1 * g;
        const float ve = k.beta2 * v[e] + k.one_minus_beta2 * (g * g);
        const float denom = sqrtf(ve) / k.bc2_sqrt + k.eps;
        p = p - k.step_size * (me / denom);
        m[e] = me;
        v[e] = ve;
        param[e] = p;
        param_act[e] = to_bf16(p);
    }
}

static mg_status sumsq_launch(mg_cuda_ctx *ctx, float *out, const float *x, int64_t n) {
    const int threads = 256;  // a multiple of 32, as block_sum needs
    const bool vec = aligned16(x);
    sumsq_kernel<<<grid_stride_blocks(ctx, vec ? (n + 3) / 4 : n, threads), threads, 0, ctx->stream>>>(out, x, n, vec);
    MG_CUDA_LAUNCH_CHECK(sumsq_kernel);
    return MG_OK;
}

static mg_status adamw_step_launch(mg_cuda_ctx *ctx, float *param, const float *grad, float *m, float *v,
                                   bf16 *param_act, const mg_adamw_args *a) {
    adamw_scalars k;
    k.grad_scale = a->grad_scale;
    k.decay = (float)(1.0 - (double)a->lr * (double)a->weight_decay);
    k.beta1 = a->beta1;
    k.one_minus_beta1 = (float)(1.0 - (double)a->beta1);
    k.beta2 = a->beta2;
    k.one_minus_beta2 = (float)(1.0 - (double)a->beta2);
    k.step_size = (float)((double)a->lr / (1.0 - pow((double)a->beta1, (double)a->step)));
    k.bc2_sqrt = (float)sqrt(1.0 - pow((double)a->beta2, (double)a->step));
    k.eps = a->eps;
    const int threads = 256;
    adamw_step_kernel<<<grid_stride_blocks(ctx, a->n, threads), threads, 0, ctx->stream>>>(param, grad, m, v, param_act,
                                                                                           a->n, k);
    MG_CUDA_LAUNCH_CHECK(adamw_step_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_sumsq(mg_cuda_ctx *ctx, float *out, const float *x, int64_t n) {
    if (n < 0) return mg_fail(MG_ERR_SHAPE, NULL, "sumsq: n=%lld", (long long)n);
    if (n == 0) return MG_OK;
    if (!out || !x) return mg_fail(MG_ERR_ARG, NULL, "sumsq: out and x are required");
    return sumsq_launch(ctx, out, x, n);
}

extern "C" mg_status mg_cuda_adamw_step(mg_cuda_ctx *ctx, float *param, const float *grad, float *m, float *v,
                                        void *param_act, const mg_adamw_args *a) {
    if (a->n < 0) return mg_fail(MG_ERR_SHAPE, NULL, "adamw_step: n=%lld", (long long)a->n);
    if (a->step < 1 || !(a->beta1 >= 0.0f && a->beta1 < 1.0f) || !(a->beta2 >= 0.0f && a->beta2 < 1.0f))
        return mg_fail(MG_ERR_ARG, "steps count from 1; betas are in [0, 1)", "adamw_step: step=%d beta1=%g beta2=%g",
                       a->step, a->beta1, a->beta2);
    if (a->n == 0) return MG_OK;
    if (!param || !grad || !m || !v || !param_act)
        return mg_fail(MG_ERR_ARG, NULL, "adamw_step: param, grad, m, v and param_act are required");
    return adamw_step_launch(ctx, param, grad, m, v, (bf16 *)param_act, a);
}
