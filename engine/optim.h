/* The optimizer and the learning-rate schedules of training (spec/model.md §8.4), over one flat
 * fp32 vector of leaves on a backend (the LoRA block). */
#ifndef MG_OPTIM_H
#define MG_OPTIM_H

#include "engine/backend.h"

typedef enum { MG_SCHED_COSINE, MG_SCHED_LINEAR, MG_SCHED_CONSTANT } mg_schedule;

/* "cosine", "linear" or "constant"; MG_ERR_ARG otherwise. */
mg_status mg_schedule_parse(const char *name, mg_schedule *s);
const char *mg_schedule_name(mg_schedule s);

/* transformers' TrainingArguments.get_warmup_steps with warmup_steps = 0: ceil(total * ratio). */
int mg_warmup_steps(double ratio, int total_steps);

/* transformers' get_{cosine,linear,constant}_schedule_with_warmup: the learning rate of optimizer
 * update `step` (0-based; the Trainer steps the scheduler after each update, so update 0 uses
 * lambda(0), which is 0 under warmup). Constant keeps the warmup ramp when warmup_steps > 0. */
double mg_lr_at(mg_schedule s, double lr, int step, int warmup_steps, int total_steps);

typedef struct {
    double beta1, beta2, eps, weight_decay; /* torch.optim.AdamW */
    double max_grad_norm;                   /* clip_grad_norm_ threshold; <= 0: no clipping */
} mg_adamw_config;

/* One update of params[n] from grad_scale * grads[n] (both fp32 on be; grad_scale = 1 / the
 * labelled tokens of the accumulation window turns summed losses into transformers' mean), m, v
 * its moments, act its act_dtype copy, scratch one fp32 on be: the global gradient norm
 * (reported in *grad_norm), clipping as torch's clip_grad_norm_ (scale min(1, max_norm /
 * (norm + 1e-6))), AdamW at lr for update number step (1-based), then the gradients are zeroed
 * for the next accumulation. A non-finite norm fails with MG_ERR_NUMERIC
 * and leaves params, moments and gradients untouched. */
mg_status mg_adamw_update(const mg_backend *be, float *params, float *grads, float *m, float *v, void *act, int64_t n,
                          float *scratch, double grad_scale, const mg_adamw_config *c, double lr, int step,
                          double *grad_norm);

#endif
