/* The host-driven LoRA trainer of engine/medgem.h: the pieces of mg_train_run (engine/jobs/train.c)
 * with the loop left to the caller. Each medgem_trainer_step is one micro-batch through
 * mg_train_step; every grad_accum-th step runs mg_adamw_update with the window's loss
 * normalisation, as the loop does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/clock.h"
#include "engine/atomic_file.h"
#include "engine/dropout.h"
#include "engine/jobs/api_internal.h"
#include "engine/jobs/train.h"
#include "engine/oom.h"
#include "model/lora_device.h"
#include "model/train_step.h"

struct medgem_trainer {
    medgem_model *model;      /* borrowed; outlives the trainer */
    medgem_trainer_options o; /* the caller's, prompt and targets not kept (used at create) */
    mg_lora lora;             /* host module table and parameter copy (dev.host points here) */
    mg_lora_device dev;       /* parameters, gradients, AdamW moments on the model's backend */
    mg_trainer tr;
    mg_train_prompts tp;
    mg_adamw_config adam;
    int warmup;               /* warmup updates of the schedule */
    int step;                 /* updates done */
    uint64_t micro;           /* micro-batches done (the dropout seed's counter) */
    int window_micro;         /* micro-batches in the current accumulation window */
    double window_loss;       /* their summed cross-entropy */
    int64_t window_targets;   /* their labelled tokens */
    double t0;
    char err[MG_API_ERR_CAP];
};

void medgem_trainer_options_init(medgem_trainer_options *o) {
    if (!o) return;
    /* the guide's recipe (mg_train_defaults), with batch and steps left to the host */
    const mg_train_opts d = mg_train_defaults();
    *o = (medgem_trainer_options){ .size = sizeof *o, .lora_r = d.lora_r, .lora_alpha = d.lora_alpha,
                                   .lora_dropout = d.lora_dropout, .lora_targets = d.lora_targets, .lr = d.lr,
                                   .weight_decay = d.weight_decay, .max_grad_norm = d.max_grad_norm,
                                   .schedule = (medgem_schedule)d.schedule, .warmup_ratio = d.warmup_ratio,
                                   .grad_accum = 1, .seed = d.seed, .loss_on = (medgem_loss_on)d.loss_on,
                                   .double_bos = d.guide_path, .recompute = d.recompute,
                                   .max_memory_gb = d.max_memory_gb };
}

_Static_assert(MEDGEM_SCHEDULE_COSINE == (int)MG_SCHED_COSINE && MEDGEM_SCHEDULE_LINEAR == (int)MG_SCHED_LINEAR &&
                   MEDGEM_SCHEDULE_CONSTANT == (int)MG_SCHED_CONSTANT,
               "medgem_schedule and mg_schedule differ");
_Static_assert(MEDGEM_LOSS_ON_SEED == (int)MG_LOSS_ON_SEED && MEDGEM_LOSS_ON_ANSWER == (int)MG_LOSS_ON_ANSWER,
               "medgem_loss_on and mg_loss_on differ");

static mg_status check_options(const medgem_trainer_options *o) {
    if (o->lora_r < 1 || !(o->lora_alpha > 0) || o->lora_dropout < 0 || o->lora_dropout >= 1 || !o->lora_targets)
        return mg_fail(MG_ERR_ARG, NULL, "trainer options: lora_r >= 1, lora_alpha > 0, lora_dropout in [0, 1), lora_targets set");
    if (!(o->lr > 0) || o->weight_decay < 0 || o->warmup_ratio < 0 || o->warmup_ratio > 1 || o->grad_accum < 1 ||
        o->total_steps < 0)
        return mg_fail(MG_ERR_ARG, NULL,
                       "trainer options: lr > 0, weight_decay >= 0, warmup_ratio in [0, 1], grad_accum >= 1, "
                       "total_steps >= 0");
    if ((unsigned)o->schedule > MEDGEM_SCHEDULE_CONSTANT || (unsigned)o->loss_on > MEDGEM_LOSS_ON_ANSWER)
        return mg_fail(MG_ERR_ARG, NULL, "trainer options: unknown schedule %d or loss_on %d", (int)o->schedule,
                       (int)o->loss_on);
    return MG_OK;
}

/* The adapter to train: a copy of init, or PEFT's fresh one. */
static mg_status open_adapter(medgem_trainer *t, const mg_config *cfg) {
    const medgem_trainer_options *o = &t->o;
    if (o->init) {
        MG_TRY(mg_lora_copy(&t->lora, &o->init->lora));
        t->lora.dropout = o->lora_dropout;
        return MG_OK;
    }
    mg_lora_targets targets;
    MG_TRY(mg_lora_parse_targets(o->lora_targets, &targets));
    return mg_lora_create(&t->lora, cfg, &targets, o->lora_r, o->lora_alpha, o->lora_dropout, o->seed);
}

/* What lowers a trainer's memory (medgem_trainer_options), when a step or its set-up runs out. */
static const char *OOM_HINT_STEP = "pass fewer images per medgem_trainer_step (and raise grad_accum to keep the "
                                   "effective batch), set recompute = 1, or a max_memory_gb below the free memory shown";

medgem_status medgem_trainer_create(medgem_model *h, const medgem_trainer_options *opts, medgem_trainer **out) {
    if (!out) return (medgem_status)mg_api_null("medgem_trainer_create", "out");
    *out = NULL;
    if (!h) return (medgem_status)mg_api_null("medgem_trainer_create", "model");
    medgem_trainer *t = calloc(1, sizeof *t);
    if (!t) return mg_api_status(h->err, mg_fail(MG_ERR_OOM, NULL, "a trainer"));
    t->model = h;
    medgem_trainer_options_init(&t->o);
    mg_status s = opts ? mg_api_options(&t->o, sizeof t->o, opts, opts->size, "medgem_trainer_options") : MG_OK;
    mg_model *m = &h->m;
    if (s == MG_OK) s = check_options(&t->o);
    if (s == MG_OK) s = mg_api_bind(h->be);
    if (s == MG_OK) s = open_adapter(t, &m->cfg);
    if (s == MG_OK) s = mg_lora_device_create(&t->dev, h->be, &m->cfg, &t->lora, true);
    if (s == MG_OK) s = mg_trainer_create(&t->tr, m, &t->dev);
    if (s == MG_OK) {
        t->tr.recompute = t->o.recompute != 0;
        t->tr.memory_budget = mg_memory_budget(h->be, m, t->o.max_memory_gb);
        s = mg_train_prompts_build(&t->tp, &h->cl, t->o.prompt, t->o.double_bos != 0, (mg_loss_on)t->o.loss_on);
    }
    if (s != MG_OK) {
        h->n_trainers++; /* medgem_trainer_free counts it down */
        medgem_trainer_free(t);
        return mg_api_status(h->err, mg_oom_hint(s, OOM_HINT_STEP));
    }
    t->o.init = NULL, t->o.prompt = NULL, t->o.lora_targets = NULL; /* borrowed: not kept past create */
    t->adam = (mg_adamw_config){ .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = t->o.weight_decay,
                                 .max_grad_norm = t->o.max_grad_norm };
    t->warmup = t->o.total_steps > 0 ? mg_warmup_steps(t->o.warmup_ratio, t->o.total_steps) : 0;
    t->t0 = mg_now_s();
    h->n_trainers++;
    *out = t;
    return MEDGEM_OK;
}

void medgem_trainer_free(medgem_trainer *t) {
    if (!t) return;
    mg_api_bind(t->model->be);
    mg_train_prompts_free(&t->tp);
    mg_trainer_free(&t->tr);
    mg_lora_device_free(&t->dev);
    mg_lora_free(&t->lora);
    t->model->n_trainers--;
    free(t);
}

const char *medgem_trainer_last_error(const medgem_trainer *t) { return t ? t->err : mg_last_error(); }

/* Forgets the window's gradients (after a failure), so the next update starts clean. */
static void drop_window(medgem_trainer *t) {
    const mg_backend *be = t->model->be;
    be->zero(be->ctx, t->dev.grads, (size_t)t->dev.n_params * sizeof(float));
    t->window_micro = 0, t->window_loss = 0, t->window_targets = 0;
}

/* The AdamW update closing an accumulation window, and the progress report. */
static mg_status update(medgem_trainer *t, medgem_step_info *info) {
    const medgem_trainer_options *o = &t->o;
    const double lr = o->total_steps > 0 ? mg_lr_at((mg_schedule)o->schedule, o->lr, t->step, t->warmup, o->total_steps)
                                         : o->lr;
    const double loss = t->window_loss / (double)t->window_targets;
    double norm = 0;
    mg_status s = isfinite(loss) ? MG_OK
                                 : mg_fail(MG_ERR_NUMERIC, "lower the learning rate; the adapter is unchanged",
                                           "the loss of update %d is %g", t->step + 1, loss);
    if (s == MG_OK)
        s = mg_adamw_update(t->model->be, t->dev.params, t->dev.grads, t->dev.m, t->dev.v, t->dev.act, t->dev.n_params,
                            t->dev.scratch, 1.0 / (double)t->window_targets, &t->adam, lr, t->step + 1, &norm);
    if (s != MG_OK) {
        drop_window(t);
        return s;
    }
    t->step++;
    t->window_micro = 0, t->window_loss = 0, t->window_targets = 0;
    info->updated = 1, info->lr = lr, info->grad_norm = norm;
    if (o->progress) {
        const medgem_train_progress p = { .size = sizeof p, .step = t->step, .total_steps = o->total_steps,
                                          .loss = loss, .lr = lr, .grad_norm = norm, .seconds = mg_now_s() - t->t0 };
        o->progress(o->user, &p);
    }
    return MG_OK;
}

medgem_status medgem_trainer_step(medgem_trainer *t, const float *pixels, const int *labels, int n,
                                  medgem_step_info *info) {
    if (!t) return (medgem_status)mg_api_null("medgem_trainer_step", "trainer");
    medgem_step_info local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    mg_status s = !pixels ? mg_api_null("medgem_trainer_step", "pixels")
                : !labels ? mg_api_null("medgem_trainer_step", "labels")
                : n < 1   ? mg_fail(MG_ERR_ARG, "pass at least one image", "medgem_trainer_step: n is %d", n)
                          : mg_api_bind(t->model->be);
    if (s == MG_OK) s = mg_train_prompts_fill(&t->tp, labels, n);
    if (s != MG_OK) return mg_api_status(t->err, s);

    const mg_model_input in = { .B = n, .T = t->tp.T, .ids = t->tp.ids, .token_type = t->tp.tt, .pixels = pixels,
                                .n_images = n };
    double loss_sum = 0;
    t->dev.dropout = (float)t->o.lora_dropout;
    t->dev.seed = mg_hash64(t->o.seed ^ mg_hash64(t->micro));
    s = mg_train_step(&t->tr, &in, t->tp.labels, 1.0f, &loss_sum);
    t->dev.dropout = 0;
    if (s != MG_OK) return mg_api_status(t->err, mg_oom_hint(s, OOM_HINT_STEP));
    const int64_t targets = mg_count_targets(t->tp.labels, n, t->tp.T);
    t->micro++;
    t->window_micro++, t->window_loss += loss_sum, t->window_targets += targets;
    info->loss = targets > 0 ? loss_sum / (double)targets : 0;
    if (t->window_micro >= t->o.grad_accum && t->window_targets > 0) s = update(t, info);
    info->step = t->step;
    return mg_api_status(t->err, s);
}

medgem_status medgem_trainer_evaluate(medgem_trainer *t, const float *pixels, const int *labels, int n,
                                      medgem_prediction *out, double *accuracy) {
    if (!t) return (medgem_status)mg_api_null("medgem_trainer_evaluate", "trainer");
    mg_status s = !pixels ? mg_api_null("medgem_trainer_evaluate", "pixels")
                : n < 1   ? mg_fail(MG_ERR_ARG, "pass at least one image", "medgem_trainer_evaluate: n is %d", n)
                          : mg_api_bind(t->model->be);
    medgem_prediction *preds = out;
    float *logits = NULL;
    if (s == MG_OK && !preds && !(preds = malloc((size_t)n * sizeof *preds))) s = mg_fail(MG_ERR_OOM, NULL, "%d predictions", n);
    if (s == MG_OK && !(logits = malloc((size_t)n * MEDGEM_NUM_CLASSES * sizeof *logits)))
        s = mg_fail(MG_ERR_OOM, "evaluate fewer images at once", "logits of %d images", n);
    if (s == MG_OK) {
        mg_model *m = &t->model->m;
        m->lora = &t->dev; /* the adapter unmerged, dropout 0 */
        s = mg_classifier_score(&t->model->cl, pixels, n, logits);
        m->lora = NULL;
    }
    if (s == MG_OK) {
        mg_api_predictions(logits, n, preds);
        int right = 0;
        for (int b = 0; labels && b < n; b++) right += preds[b].label == labels[b];
        if (accuracy) *accuracy = labels ? (double)right / n : 0;
    }
    if (preds != out) free(preds);
    free(logits);
    return mg_api_status(t->err, mg_oom_hint(s, "pass fewer images per medgem_trainer_evaluate call"));
}

/* The current parameters into the host copy (t->lora.params). */
static mg_status download(medgem_trainer *t) {
    MG_TRY(mg_api_bind(t->model->be));
    return mg_lora_device_download(&t->dev, t->lora.params, NULL, NULL);
}

medgem_status medgem_trainer_save(medgem_trainer *t, const char *dir) {
    if (!t) return (medgem_status)mg_api_null("medgem_trainer_save", "trainer");
    mg_status s = dir ? download(t) : mg_api_null("medgem_trainer_save", "dir");
    if (s == MG_OK) s = mg_make_dirs(dir);
    if (s == MG_OK) s = mg_lora_save(dir, &t->lora, &t->model->m.cfg);
    return mg_api_status(t->err, s);
}

medgem_status medgem_trainer_adapter(medgem_trainer *t, medgem_adapter **out) {
    if (!t) return (medgem_status)mg_api_null("medgem_trainer_adapter", "trainer");
    if (!out) return mg_api_status(t->err, mg_api_null("medgem_trainer_adapter", "out"));
    *out = NULL;
    medgem_adapter *a = calloc(1, sizeof *a);
    mg_status s = a ? download(t) : mg_fail(MG_ERR_OOM, NULL, "an adapter handle");
    if (s == MG_OK) s = mg_lora_copy(&a->lora, &t->lora);
    if (s != MG_OK) {
        free(a);
        return mg_api_status(t->err, s);
    }
    a->cfg = t->model->m.cfg;
    *out = a;
    return MEDGEM_OK;
}
