/* AdamW with global-norm clipping and the warmup schedules (engine/optim.h). */
#include "engine/optim.h"

#include <math.h>
#include <string.h>

static const char *const NAMES[] = { "cosine", "linear", "constant" };

mg_status mg_schedule_parse(const char *name, mg_schedule *s) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, NAMES[i])) {
            *s = (mg_schedule)i;
            return MG_OK;
        }
    return mg_fail(MG_ERR_ARG, "use cosine, linear or constant", "unknown schedule \"%s\"", name);
}

const char *mg_schedule_name(mg_schedule s) { return NAMES[s]; }

int mg_warmup_steps(double ratio, int total_steps) { return (int)ceil(total_steps * ratio); }

double mg_lr_at(mg_schedule s, double lr, int step, int warmup_steps, int total_steps) {
    if (step < warmup_steps) return lr * (double)step / (double)(warmup_steps > 1 ? warmup_steps : 1);
    const double span = (double)(total_steps - warmup_steps > 1 ? total_steps - warmup_steps : 1);
    const double progress = (double)(step - warmup_steps) / span;
    switch (s) {
    case MG_SCHED_COSINE: return lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress)));
    case MG_SCHED_LINEAR: return lr * fmax(0.0, (double)(total_steps - step) / span);
    case MG_SCHED_CONSTANT: break;
    }
    return lr;
}

mg_status mg_adamw_update(const mg_backend *be, float *params, float *grads, float *m, float *v, void *act, int64_t n,
                          float *scratch, double grad_scale, const mg_adamw_config *c, double lr, int step,
                          double *grad_norm) {
    /* the norm is read back to the host (the clipping factor and the log need it): one small sync
     * per optimizer update */
    be->zero(be->ctx, scratch, sizeof(float));
    be->sumsq(be->ctx, scratch, grads, n);
    float sq = 0;
    be->copy_out(be->ctx, &sq, scratch, sizeof sq);
    MG_TRY(be->sync(be->ctx));
    const double norm = sqrt((double)sq) * grad_scale;
    *grad_norm = norm;
    if (!isfinite(norm))
        return mg_fail(MG_ERR_NUMERIC, "lower --lr or --max-grad-norm; the last checkpoint is intact",
                       "the gradient norm of update %d is %g", step, norm);
    const double clip = c->max_grad_norm > 0 ? fmin(1.0, c->max_grad_norm / (norm + 1e-6)) : 1.0;
    const mg_adamw_args a = { .n = n, .lr = (float)lr, .beta1 = (float)c->beta1, .beta2 = (float)c->beta2,
                              .eps = (float)c->eps, .weight_decay = (float)c->weight_decay, .step = step,
                              .grad_scale = (float)(grad_scale * clip) };
    be->adamw_step(be->ctx, params, grads, m, v, act, &a);
    be->zero(be->ctx, grads, (size_t)n * sizeof(float));
    return be->sync(be->ctx);
}
