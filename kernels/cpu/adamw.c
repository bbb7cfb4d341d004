/* The optimiser's two ops over the flat fp32 LoRA leaves (engine/backend.h):
 *   sumsq:      out[0] += Σ x[i]²   (the squared global gradient norm for clipping; `+=`)
 *   adamw_step: torch.optim.AdamW's single-tensor step (_single_tensor_adamw, amsgrad off):
 *     g = grad · grad_scale                           (clip_grad_norm_'s factor)
 *     p *= 1 - lr·wd                                  (decoupled weight decay)
 *     m += (1 - b1) (g - m)                           (torch's lerp_, = b1 m + (1-b1) g)
 *     v  = b2 v + (1 - b2) g²
 *     p -= (lr / (1 - b1^t)) · m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *     param_act = p                                   (act_dtype is fp32 here: a copy; may alias param)
 *   The step's scalars are computed in double (torch computes them from Python floats) and used
 *   as fp32, as torch's fp32 kernels use them; param, m, v updated in place (`=`). */
#include <math.h>

#include "kernels/cpu/ops.h"

/* Sequential on purpose: a double accumulator in one fixed order gives the same bits whatever the
 * thread count, and n (the LoRA leaves) is small next to a training step. */
void mg_cpu_sumsq(void *ctx, float *out, const float *x, int64_t n) {
    (void)ctx;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) acc += (double)x[i] * x[i];
    out[0] += (float)acc;
}

void mg_cpu_adamw_step(void *ctx, float *param, const float *grad, float *m, float *v, void *param_act_,
                       const mg_adamw_args *a) {
    (void)ctx;
    float *param_act = param_act_;
    /* the step's scalars */
    const double bc1 = 1.0 - pow((double)a->beta1, a->step); /* bias corrections */
    const double bc2 = 1.0 - pow((double)a->beta2, a->step);
    const float decay = (float)(1.0 - (double)a->lr * a->weight_decay);
    const float one_m_b1 = (float)(1.0 - (double)a->beta1), one_m_b2 = (float)(1.0 - (double)a->beta2);
    const float step_size = (float)((double)a->lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < a->n; i++) {
        /* the clipped gradient */
        const float g = grad[i] * a->grad_scale;
        /* decoupled weight decay */
        float p = param[i] * decay;
        /* first and second moments */
        m[i] += one_m_b1 * (g - m[i]);
        v[i] = v[i] * a->beta2 + one_m_b2 * g * g;
        /* the bias-corrected step */
        const float denom = sqrtf(v[i]) / bc2_sqrt + a->eps;
        p -= step_size * m[i] / denom;
        param[i] = p;
        param_act[i] = p;
    }
}
