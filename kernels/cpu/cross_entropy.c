/* Causal-LM cross-entropy and its logits gradient, in one pass over each row (engine/backend.h):
 *   logits[R,V], targets[R] (t_r < 0: an ignored row, e.g. a prompt token)
 *   lse_r = m_r + log Σ_v exp(logits[r,v] - m_r),  m_r = max_v logits[r,v]   (fp32)
 *   loss[0] += Σ_{r: t_r >= 0} (lse_r - logits[r, t_r])                       (`+=`)
 *   dlogits[r,v] = grad_scale · (exp(logits[r,v] - lse_r) - [v == t_r])      (`=`; a zero row when t_r < 0)
 * dlogits may alias logits: a row's max, lse and target logit are read before it is overwritten.
 * The rows' losses are summed in double in row order (an `ordered` section), so the loss does not
 * depend on the thread count; one fp32 add into loss[0] at the end. */
#include <math.h>

#include "kernels/cpu/ops.h"

void mg_cpu_cross_entropy_backward(void *ctx, void *dlogits_, float *loss, const void *logits_,
                                   const int32_t *targets, int64_t R, int V, float grad_scale) {
    (void)ctx;
    float *dlogits = dlogits_;
    const float *logits = logits_;
    double total = 0.0;
#pragma omp parallel for ordered schedule(static, 1)
    for (int64_t r = 0; r < R; r++) {
        const float *lr = logits + r * V;
        float *dr = dlogits + r * V;
        const int32_t t = targets[r];
        float row_loss = 0.0f;
        if (t < 0) {
            for (int v = 0; v < V; v++) dr[v] = 0.0f; /* ignored row: no loss, no gradient */
        } else {
            /* logsumexp, shifted by the max so no exp overflows */
            float mx = -INFINITY;
            for (int v = 0; v < V; v++) mx = lr[v] > mx ? lr[v] : mx;
            float sum = 0.0f;
            for (int v = 0; v < V; v++) sum += expf(lr[v] - mx);
            const float lse = mx + logf(sum);
            /* -log softmax at the target (read before dr, which may be lr, is written) */
            row_loss = lse - lr[t];
            /* softmax minus the one-hot target, scaled */
            for (int v = 0; v < V; v++) dr[v] = grad_scale * (expf(lr[v] - lse) - (v == t ? 1.0f : 0.0f));
        }
#pragma omp ordered
        total += row_loss;
    }
    loss[0] += (float)total;
}
