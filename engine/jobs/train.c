/* The LoRA training loop (engine/jobs/train.h): data order -> micro-batches -> mg_train_step ->
 * AdamW updates, with logs, evaluations and checkpoints. */
#include "engine/jobs/train.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/clock.h"
#include "data/prefetch.h"
#include "data/rng.h"
#include "engine/atomic_file.h"
#include "engine/device.h"
#include "engine/dropout.h"
#include "engine/jobs/feature_cache.h"
#include "engine/json.h"
#include "engine/oom.h"
#include "engine/jobs/train_ckpt.h"
#include "engine/jobs/train_log.h"
#include "model/train_step.h"

mg_train_opts mg_train_defaults(void) {
    mg_eval_opts eval = mg_eval_defaults();
    return (mg_train_opts){ .lora_r = 8, .lora_alpha = 16, .lora_dropout = 0.1, .lora_targets = "all-linear",
                            .epochs = 5, .batch = 1, .grad_accum = 8, .lr = 5e-4, .weight_decay = 0,
                            .warmup_ratio = 0.03, .max_grad_norm = 0.3, .schedule = MG_SCHED_COSINE, .seed = 42,
                            .loss_on = MG_LOSS_ON_SEED, .guide_path = true, .eval_every = 1, .eval = eval,
                            .threads = 2, .on_bad = MG_BAD_SKIP };
}

/* ---- where the run stands (state.json of a checkpoint) ----------------------------------------- */

typedef struct {
    int step;      /* optimizer updates done */
    int epoch;     /* 0-based epoch in progress */
    int64_t micro; /* micro-batches of that epoch consumed */
} run_position;

/* Writes checkpoint-<step>: the adapter (PEFT format), optimizer.safetensors, then state.json with
 * every file's size and CRC-32, which marks the checkpoint complete; then removes the checkpoints
 * older than the previous complete one (two are kept, so a damaged newest one leaves one). A failed
 * write removes the partial folder; the previous checkpoints are untouched. prev_good names the
 * last complete checkpoint for the message. */
static mg_status save_checkpoint(const mg_train_opts *o, const mg_config *cfg, mg_lora *lora, const mg_lora_device *dev,
                                 const run_position *pos, int total, int warmup, char *last, size_t last_cap,
                                 const char *prev_good) {
    char dir[4096], path[4352];
    snprintf(dir, sizeof dir, "%s/checkpoint-%d", o->out_dir, pos->step);
    MG_TRY(mg_make_dirs(dir));
    snprintf(path, sizeof path, "%s/state.json", dir);
    unlink(path); /* a stale checkpoint of this step (an earlier attempt) is incomplete until rewritten */
    const size_t bytes = (size_t)dev->n_params * sizeof(float);
    float *m = malloc(bytes), *v = malloc(bytes);
    mg_status s = m && v ? MG_OK : mg_fail(MG_ERR_OOM, NULL, "optimizer state of %lld parameters", (long long)dev->n_params);
    if (s == MG_OK) s = mg_lora_device_download(dev, lora->params, m, v);
    if (s == MG_OK) s = mg_lora_save(dir, lora, cfg);
    if (s == MG_OK) {
        const int64_t shape[1] = { dev->n_params };
        const mg_st_entry e[2] = { { "exp_avg", MG_F32, 1, shape, m }, { "exp_avg_sq", MG_F32, 1, shape, v } };
        snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
        s = mg_st_write(path, e, 2, NULL, 0);
    }
    free(m), free(v);
    char *files = NULL, *json = NULL;
    if (s == MG_OK) s = mg_ckpt_manifest(dir, &files);
    const size_t cap = files ? strlen(files) + 1024 : 0;
    if (s == MG_OK && !(json = malloc(cap))) s = mg_fail(MG_ERR_OOM, NULL, "state.json of %s", dir);
    if (s == MG_OK) {
        const int n = snprintf(json, cap,
                               "{\"step\": %d, \"epoch\": %d, \"micro_batch\": %lld, \"total_steps\": %d, "
                               "\"warmup_steps\": %d, \"seed\": %llu, \"batch\": %d, \"grad_accum\": %d, \"lr\": %.9g, "
                               "\"schedule\": \"%s\", \"epochs\": %d, \"lora_dropout\": %.9g, \"files\": %s}\n",
                               pos->step, pos->epoch, (long long)pos->micro, total, warmup,
                               (unsigned long long)o->seed, o->batch, o->grad_accum, o->lr,
                               mg_schedule_name(o->schedule), o->epochs, o->lora_dropout, files);
        snprintf(path, sizeof path, "%s/state.json", dir);
        s = mg_write_file_atomic(path, json, (size_t)n);
    }
    free(files), free(json);
    if (s != MG_OK) {
        mg_ckpt_remove(dir);
        return mg_fail_context(s, "writing checkpoint %s (removed; %s%s): ", dir,
                               prev_good[0] ? "the previous checkpoint is intact: " : "no earlier checkpoint",
                               prev_good);
    }
    mg_ckpt_prune(o->out_dir, pos->step);
    snprintf(last, last_cap, "%s", dir);
    return MG_OK;
}

/* The checkpoint of where the run stands (after pos.step updates; an epoch whose micro-batches are
 * all done counts as complete), unless the last one written is already of this step: rewriting it
 * could only lose it. */
static mg_status checkpoint_at(const mg_train_opts *o, const mg_config *cfg, mg_lora *lora, const mg_lora_device *dev,
                               run_position pos, int64_t n_batches, int total, int warmup, mg_train_result *res) {
    char here[4200];
    snprintf(here, sizeof here, "%s/checkpoint-%d", o->out_dir, pos.step);
    if (!strcmp(res->checkpoint, here)) return MG_OK;
    if (pos.micro == n_batches) pos.epoch++, pos.micro = 0;
    const char *good = res->checkpoint[0] ? res->checkpoint : res->resumed_from;
    return save_checkpoint(o, cfg, lora, dev, &pos, total, warmup, res->checkpoint, sizeof res->checkpoint, good);
}

/* Reads a checkpoint's state.json and checks that the run it continues has the same shape. */
static mg_status read_position(const char *dir, const mg_train_opts *o, run_position *pos) {
    char path[4352];
    snprintf(path, sizeof path, "%s/state.json", dir);
    mg_json *j;
    mg_status s = mg_json_parse_file(path, &j);
    if (s != MG_OK)
        return mg_fail_context(s, "--resume %s is not a complete checkpoint (state.json is written last): ", dir);
    pos->step = (int)mg_json_get_number(j, "step", -1);
    pos->epoch = (int)mg_json_get_number(j, "epoch", -1);
    pos->micro = (int64_t)mg_json_get_number(j, "micro_batch", -1);
    const int batch = (int)mg_json_get_number(j, "batch", -1), ga = (int)mg_json_get_number(j, "grad_accum", -1);
    const double seed = mg_json_get_number(j, "seed", -1);
    mg_json_free(j);
    if (pos->step < 0 || pos->epoch < 0 || pos->micro < 0)
        return mg_fail(MG_ERR_FORMAT, "resume from a checkpoint-<step> folder medgem wrote", "%s lacks step/epoch/micro_batch",
                       path);
    if (batch != o->batch || ga != o->grad_accum || seed != (double)o->seed)
        return mg_fail(MG_ERR_ARG, "resume with the --batch, --grad-accum and --seed of the interrupted run",
                       "%s was written with batch %d, grad_accum %d, seed %.0f; this run has %d, %d, %llu", path, batch,
                       ga, seed, o->batch, o->grad_accum, (unsigned long long)o->seed);
    return MG_OK;
}

static mg_status load_moments(const char *dir, mg_lora_device *dev) {
    char path[4352];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    mg_st_file f;
    MG_TRY(mg_st_open(path, &f));
    const mg_st_tensor *m = mg_st_find(&f, "exp_avg"), *v = mg_st_find(&f, "exp_avg_sq");
    mg_status s = MG_OK;
    if (!m || !v || m->dtype != MG_F32 || v->dtype != MG_F32 || mg_st_numel(m) != dev->n_params ||
        mg_st_numel(v) != dev->n_params)
        s = mg_fail(MG_ERR_SHAPE, "resume with the adapter settings of the interrupted run",
                    "%s: exp_avg / exp_avg_sq must be F32 of %lld elements", path, (long long)dev->n_params);
    else
        mg_lora_device_upload(dev, dev->host->params, (const float *)m->data, (const float *)v->data);
    if (s == MG_OK) s = dev->be->sync(dev->be->ctx);
    mg_st_close(&f);
    return s;
}

/* Names the first LoRA gradient holding a NaN or Inf (the grads are laid out like the params). */
static void nonfinite_grad(const mg_lora_device *dev, const mg_lora *lora, double norm, char *out, size_t cap) {
    mg_clear_error();
    snprintf(out, cap, "the gradient norm is %g", norm);
    float *g = malloc((size_t)dev->n_params * sizeof(float));
    if (!g) return;
    dev->be->copy_out(dev->be->ctx, g, dev->grads, (size_t)dev->n_params * sizeof(float));
    if (dev->be->sync(dev->be->ctx) == MG_OK)
        for (int i = 0; i < lora->n; i++) {
            const mg_lora_module *md = &lora->mods[i];
            const float *t[2] = { g + (md->A - lora->params), g + (md->B - lora->params) };
            const int64_t n[2] = { (int64_t)md->r * md->in, (int64_t)md->out * md->r };
            for (int k = 0; k < 2; k++)
                for (int64_t e = 0; e < n[k]; e++)
                    if (!isfinite(t[k][e])) {
                        snprintf(out, cap, "the gradient norm is %g (first non-finite gradient: %s layer %d %s lora_%c)",
                                 norm, md->comp == MG_COMP_VISION ? "vision" : "text", md->layer,
                                 mg_lora_module_name(md->comp, md->kind), k ? 'B' : 'A');
                        free(g);
                        return;
                    }
        }
    free(g);
}

/* ---- the feature cache ------------------------------------------------------------------------ */

/* Bytes the cache may take, decided after the first step (the step's buffers then exist): what
 * --max-memory leaves beside the weights, the adapter state and the step, or the GPU's free memory;
 * less an evaluation forward's vision buffers and 2 GB of slack. The CPU: no limit but malloc's. */
static size_t cache_budget(const mg_model *m, const mg_trainer *tr, size_t lora_bytes, const mg_train_opts *o) {
    const mg_backend *be = m->be;
    if (be == mg_backend_cpu() && o->max_memory_gb <= 0) return SIZE_MAX;
    const mg_config *cfg = &m->cfg;
    const size_t es = mg_dtype_size(be->act_dtype);
    const int64_t eb = o->eval.batch > 0 ? o->eval.batch : 1, G = cfg->image_size / cfg->patch_size;
    const double reserve = 2e9 + (double)mg_model_vision_scratch_bytes(cfg, m->lora, eb, es) +
                           (double)eb * (double)(3 * (int64_t)cfg->image_size * cfg->image_size +
                                                 G * G * cfg->v_hidden + (int64_t)cfg->mm_tokens_per_image * cfg->hidden) *
                               (double)es;
    double avail = 0;
    if (o->max_memory_gb > 0) {
        avail = o->max_memory_gb * 1e9 - (double)(m->arena_bytes + lora_bytes + tr->work_bytes + m->work_bytes);
    } else {
        mg_gpu_info gi;
        mg_gpu_query(&gi);
        avail = gi.available ? (double)gi.free_mem : 0;
    }
    return avail > reserve ? (size_t)(avail - reserve) : 0;
}

static void note(const mg_train_opts *o, mg_train_result *res, bool on, const char *text) {
    res->feature_cache = on;
    snprintf(res->feature_cache_note, sizeof res->feature_cache_note, "%s", text);
    if (o->on_note) {
        char line[256];
        snprintf(line, sizeof line, "feature cache %s", text);
        o->on_note(o->user, line);
    }
}

/* ---- the loop --------------------------------------------------------------------------------- */

mg_status mg_train_prompts_build(mg_train_prompts *tp, const mg_classifier *c, const char *prompt_text,
                                 bool guide_path, mg_loss_on loss_on) {
    memset(tp, 0, sizeof *tp);
    char *text = NULL;
    if (!prompt_text) MG_TRY(mg_prompt_default_text(MG_BREAKHIS_CLASSES, MG_BREAKHIS_NCLASSES, &text));
    mg_status s = MG_OK;
    for (int k = 0; k < MG_BREAKHIS_NCLASSES && s == MG_OK; k++) {
        char answer[2] = { (char)('0' + k), 0 };
        const mg_prompt_opts po = { .text = prompt_text ? prompt_text : text, .answer = answer,
                                    .guide_path = guide_path, .loss_on = loss_on,
                                    .max_tokens = c->model->cfg.max_positions };
        s = mg_prompt_build(c->spm, &c->chat, &po, &tp->prompt[k]);
        if (s == MG_OK && k > 0 && tp->prompt[k].n != tp->prompt[0].n)
            s = mg_fail(MG_ERR_UNSUPPORTED, "use a tokenizer where each class digit is one token",
                        "the training prompts of classes 0 and %d differ in length (%d vs %d tokens)", k,
                        tp->prompt[0].n, tp->prompt[k].n);
    }
    free(text);
    if (s != MG_OK) {
        mg_train_prompts_free(tp);
        return s;
    }
    tp->T = tp->prompt[0].n;
    return MG_OK;
}

mg_status mg_train_prompts_fill(mg_train_prompts *tp, const int *labels, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= MG_BREAKHIS_NCLASSES)
            return mg_fail(MG_ERR_ARG, "labels are classes 0..7", "label %d of image %lld is not a class", labels[i],
                           (long long)i);
    const int T = tp->T;
    if (n > tp->cap) {
        const size_t m = (size_t)n * (size_t)T * sizeof(int32_t);
        int32_t *ids = realloc(tp->ids, m), *tt = ids ? realloc(tp->tt, m) : NULL, *lb = tt ? realloc(tp->labels, m) : NULL;
        if (ids) tp->ids = ids;
        if (tt) tp->tt = tt;
        if (lb) tp->labels = lb;
        if (!lb) return mg_fail(MG_ERR_OOM, "use a smaller batch", "token arrays of a micro-batch of %lld", (long long)n);
        tp->cap = n;
    }
    for (int64_t i = 0; i < n; i++) {
        const mg_prompt *p = &tp->prompt[labels[i]];
        for (int t = 0; t < T; t++)
            tp->ids[i * T + t] = p->ids[t], tp->tt[i * T + t] = p->token_type_ids[t], tp->labels[i * T + t] = p->labels[t];
    }
    return MG_OK;
}

void mg_train_prompts_free(mg_train_prompts *tp) {
    for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++) mg_prompt_free(&tp->prompt[k]);
    free(tp->ids), free(tp->tt), free(tp->labels);
    tp->ids = tp->tt = tp->labels = NULL;
    tp->cap = 0;
}

/* The adapter to train: a checkpoint's, a given one, or a fresh one. */
static mg_status open_adapter(const mg_train_opts *o, const mg_config *cfg, mg_lora *lora) {
    const char *dir = o->resume ? o->resume : o->adapter;
    if (dir) {
        MG_TRY(mg_lora_load(dir, cfg, lora));
        lora->dropout = o->lora_dropout;
        return MG_OK;
    }
    mg_lora_targets t;
    MG_TRY(mg_lora_parse_targets(o->lora_targets, &t));
    return mg_lora_create(lora, cfg, &t, o->lora_r, o->lora_alpha, o->lora_dropout, o->seed);
}

static mg_status check_opts(const mg_train_opts *o, int64_t n_train) {
    if (!o->out_dir) return mg_fail(MG_ERR_ARG, "give --out DIR", "training needs an output directory");
    if (n_train < 1) return mg_fail(MG_ERR_ARG, "check the selection (fold, magnification)", "no training images");
    if (o->epochs < 1 || o->batch < 1 || o->grad_accum < 1 || o->threads < 1 || o->max_steps < 0 ||
        o->save_every < 0 || o->eval_every < 0)
        return mg_fail(MG_ERR_ARG, NULL,
                       "--epochs, --batch, --grad-accum and --threads take positive integers, --max-steps, "
                       "--save-every and --eval-every non-negative ones");
    if (!(o->lr > 0) || o->weight_decay < 0 || o->warmup_ratio < 0 || o->warmup_ratio > 1 || o->lora_dropout < 0 ||
        o->lora_dropout >= 1)
        return mg_fail(MG_ERR_ARG, NULL, "--lr must be > 0, --weight-decay >= 0, --warmup-ratio and --lora-dropout in [0, 1)");
    return MG_OK;
}

/* What lowers a training run's memory when it runs out (engine/oom.h); during its evaluations, the
 * evaluation batch. `medgem run` has the same flags. */
static const char *OOM_HINT_TRAIN = "lower --batch (and raise --grad-accum to keep the effective batch), add "
                                    "--recompute, or set --max-memory (GB) below the free memory shown";
static const char *OOM_HINT_EVAL = "lower --eval-batch (images per evaluation forward)";

mg_status mg_train_run(mg_model *m, const mg_bh_index *ix, const int64_t *train, int64_t n_train, const int64_t *test,
                       int64_t n_test, const mg_train_opts *o, mg_train_result *res) {
    memset(res, 0, sizeof *res);
    MG_TRY(check_opts(o, n_train));
    MG_TRY(mg_make_dirs(o->out_dir));
    const double t0 = mg_now_s();
    const mg_backend *be = m->be;
    const int64_t n_batches = (n_train + o->batch - 1) / o->batch;
    const int per_epoch = (int)((n_batches + o->grad_accum - 1) / o->grad_accum);
    const int total = o->max_steps > 0 ? o->max_steps : o->epochs * per_epoch;
    const int epochs = o->max_steps > 0 ? (total + per_epoch - 1) / per_epoch : o->epochs;
    const int warmup = mg_warmup_steps(o->warmup_ratio, total);
    const mg_adamw_config adam = { .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = o->weight_decay,
                                   .max_grad_norm = o->max_grad_norm };

    run_position pos = { 0 };
    mg_lora lora = { 0 };
    mg_lora_device dev = { 0 };
    mg_trainer tr = { 0 };
    mg_classifier cl = { 0 };
    mg_train_prompts tp = { 0 };
    mg_feature_cache fc = { 0 };
    bool fc_pending = false; /* the cache is wanted; allocated after the first step, when it fits */
    const char *oom_hint = OOM_HINT_TRAIN; /* the flags to name if memory runs out */
    int64_t *order = malloc((size_t)n_train * sizeof *order);
    FILE *log = NULL;
    mg_loader *ld = NULL;
    char path[4352];
    mg_status s = order ? MG_OK : mg_fail(MG_ERR_OOM, NULL, "data order of %lld images", (long long)n_train);
    /* --resume: a checkpoint whose files match their checksums (or the previous one) */
    mg_train_opts ro = *o;
    if (s == MG_OK && o->resume)
        s = mg_ckpt_resolve(o->resume, res->resumed_from, sizeof res->resumed_from, res->resume_note,
                            sizeof res->resume_note);
    if (s == MG_OK && o->resume) ro.resume = res->resumed_from, o = &ro;
    if (s == MG_OK && o->resume) s = read_position(o->resume, o, &pos);
    /* a new run beside an earlier run's checkpoints: a later --resume of the folder would take theirs */
    const int earlier = o->resume ? -1 : mg_ckpt_newest_step(o->out_dir);
    if (s == MG_OK && earlier >= 0)
        s = mg_fail(MG_ERR_ARG, "continue that run (medgem train --resume DIR), give another --out, or remove its checkpoint-* folders",
                    "%s holds checkpoints of an earlier run (the newest: checkpoint-%d); a new run there would mix with them",
                    o->out_dir, earlier);
    if (s == MG_OK) s = open_adapter(o, &m->cfg, &lora);
    if (s == MG_OK) s = mg_lora_device_create(&dev, be, &m->cfg, &lora, true);
    if (s == MG_OK && o->resume) s = load_moments(o->resume, &dev);
    if (s == MG_OK) s = mg_trainer_create(&tr, m, &dev);
    tr.recompute = o->recompute;
    tr.memory_budget = mg_memory_budget(be, m, o->max_memory_gb);
    const mg_classifier_opts co = { .text = o->prompt_text, .guide_path = o->guide_path };
    if (s == MG_OK) s = mg_classifier_init(&cl, m, &co);
    if (s == MG_OK) s = mg_train_prompts_build(&tp, &cl, o->prompt_text, o->guide_path, o->loss_on);
    if (s == MG_OK) {
        snprintf(path, sizeof path, "%s/train_log.jsonl", o->out_dir);
        if (o->resume) s = mg_train_log_trim(path, pos.step); /* lines past the checkpoint would repeat */
        if (s == MG_OK && !(log = fopen(path, o->resume ? "a" : "w")))
            s = mg_fail(MG_ERR_IO, "check the --out directory", "cannot write %s: %s", path, strerror(errno));
    }
    res->lora_bytes = (size_t)dev.n_params * (4 * sizeof(float) + mg_dtype_size(be->act_dtype));
    /* the vision tower is frozen without a vision LoRA: its soft tokens can be computed once per image */
    if (s == MG_OK && !o->no_feature_cache && !mg_trainer_trains_vision(&tr)) {
        s = mg_feature_cache_init(&fc, m, ix->n);
        if (s == MG_OK) s = mg_feature_cache_reserve(&fc, train, n_train);
        if (s == MG_OK && n_test > 0 && o->eval_every > 0) s = mg_feature_cache_reserve(&fc, test, n_test);
        fc_pending = true;
    } else if (s == MG_OK) {
        note(o, res, false, o->no_feature_cache ? "off (--no-feature-cache)" : "off (the adapter trains the vision tower)");
    }
    res->steps = pos.step;
    const int start_step = pos.step;
    m->lora = &dev; /* evaluations run with the adapter unmerged */

    mg_loader_opts lo = { .batch = o->batch, .image_size = m->cfg.image_size, .threads = o->threads,
                          .on_bad = o->on_bad };
    for (int epoch = pos.epoch; s == MG_OK && epoch < epochs && pos.step < total; epoch++) {
        /* this epoch's order: a function of (seed, epoch), so a resumed run sees the same */
        memcpy(order, train, (size_t)n_train * sizeof *order);
        mg_rng rng = mg_rng_seed(o->seed, 1000 + (uint64_t)epoch);
        mg_rng_shuffle(&rng, order, n_train);
        const int64_t first = epoch == pos.epoch ? pos.micro : 0;
        pos.epoch = epoch, pos.micro = first;
        lo.cached = mg_feature_cache_on(&fc) ? fc.have : NULL; /* wholly cached batches are not read */
        if ((s = mg_loader_create(ix, order + first * o->batch, n_train - first * o->batch, &lo, &ld)) != MG_OK) break;
        double window_loss = 0;
        int64_t window_targets = 0, window_micro = 0;
        const mg_batch *b;
        while (pos.step < total && (s = mg_loader_next(ld, &b)) == MG_OK && b->n > 0) {
            /* the micro-batch: each image's prompt answers its class */
            const int T = tp.T;
            if ((s = mg_train_prompts_fill(&tp, b->labels, b->n)) != MG_OK) break;
            const void *const *soft = NULL;
            if (mg_feature_cache_on(&fc) && (s = mg_feature_cache_batch(&fc, b, &soft)) != MG_OK) break;
            const mg_model_input in = { .B = b->n, .T = T, .ids = tp.ids, .token_type = tp.tt, .pixels = b->pixels,
                                        .n_images = b->n, .soft_tokens = soft };
            dev.dropout = (float)o->lora_dropout;
            dev.seed = mg_hash64(o->seed ^ mg_hash64((uint64_t)epoch * (uint64_t)n_batches + (uint64_t)pos.micro));
            s = mg_train_step(&tr, &in, tp.labels, 1.0f, &window_loss);
            dev.dropout = 0;
            if (s != MG_OK) break;
            if (fc_pending) {
                char text[192];
                fc_pending = false;
                note(o, res, mg_feature_cache_alloc(&fc, cache_budget(m, &tr, res->lora_bytes, o), text, sizeof text), text);
            }
            window_targets += mg_count_targets(tp.labels, b->n, T);
            res->images += b->n;
            pos.micro++, window_micro++;
            if (window_micro < o->grad_accum && pos.micro < n_batches) continue;

            /* the update, normalised like transformers' Trainer: the window's summed loss over its tokens */
            const double lr = mg_lr_at(o->schedule, o->lr, pos.step, warmup, total);
            const double loss = window_loss / (double)window_targets;
            double norm = 0;
            const char *good = res->checkpoint[0] ? res->checkpoint : res->resumed_from[0] ? res->resumed_from : NULL;
            char bad[256] = "";
            if (!isfinite(loss)) snprintf(bad, sizeof bad, "the loss is %g", loss), norm = NAN;
            else {
                s = mg_adamw_update(be, dev.params, dev.grads, dev.m, dev.v, dev.act, dev.n_params, dev.scratch,
                                    1.0 / (double)window_targets, &adam, lr, pos.step + 1, &norm);
                if (s == MG_ERR_NUMERIC) {
                    s = MG_OK;
                    nonfinite_grad(&dev, &lora, norm, bad, sizeof bad);
                }
                if (s != MG_OK) break;
            }
            if (bad[0] && o->on_nan == MG_ON_NAN_STOP) {
                s = mg_fail(MG_ERR_NUMERIC, "lower --lr or --max-grad-norm, or --on-nan skip to drop such updates",
                            "update %d (epoch %d): %s; nothing was applied; the last good checkpoint is %s", pos.step + 1,
                            epoch + 1, bad, good ? good : "none (--save-every N keeps some)");
                break;
            }
            if (bad[0]) { /* skip: drop the window's gradients, keep the schedule's pace */
                be->zero(be->ctx, dev.grads, (size_t)dev.n_params * sizeof(float));
                if ((s = be->sync(be->ctx)) != MG_OK) break;
                res->skipped++;
            }
            pos.step++;
            res->steps = pos.step;
            if (!bad[0]) res->last_loss = loss;
            const double secs = mg_now_s() - t0;
            mg_train_log_step(log, pos.step, epoch + (double)pos.micro / (double)n_batches, loss, lr, norm,
                              res->images / secs, secs, bad[0] != 0);
            if (o->progress) {
                const int done_here = pos.step - start_step;
                const mg_train_progress p = { .epoch = epoch + 1, .epochs = epochs, .step = pos.step,
                                              .total_steps = total, .loss = loss, .lr = lr, .grad_norm = norm,
                                              .images_per_s = res->images / secs, .seconds = secs,
                                              .eta_s = secs / done_here * (total - pos.step) };
                o->progress(o->user, &p);
            }
            window_loss = 0, window_targets = 0, window_micro = 0;
            const bool stop = o->stop && *o->stop;
            if (stop || (o->save_every && pos.step % o->save_every == 0)) {
                if ((s = checkpoint_at(o, &m->cfg, &lora, &dev, pos, n_batches, total, warmup, res)) != MG_OK) break;
            }
            if (stop) {
                res->interrupted = true;
                break;
            }
        }
        mg_loader_free(ld), ld = NULL;
        if (s != MG_OK || res->interrupted) break;
        /* evaluation of the test split, adapter unmerged, no dropout */
        const bool last = epoch + 1 == epochs || pos.step == total;
        if (n_test > 0 && o->eval_every > 0 && ((epoch + 1) % o->eval_every == 0 || last)) {
            mg_eval_result r;
            mg_eval_opts eo = o->eval;
            eo.features = mg_feature_cache_on(&fc) ? &fc : NULL;
            eo.stop = o->stop;
            if ((s = mg_eval_run(&cl, ix, test, n_test, &eo, &r)) != MG_OK) {
                oom_hint = OOM_HINT_EVAL;
                break;
            }
            if (r.stopped) { /* Ctrl-C while evaluating: keep the epoch's updates; the evaluation is dropped */
                mg_eval_result_free(&r);
                if ((s = checkpoint_at(o, &m->cfg, &lora, &dev, pos, n_batches, total, warmup, res)) == MG_OK)
                    res->interrupted = true;
                break;
            }
            mg_train_log_eval(log, epoch + 1, pos.step, &r);
            if (o->on_eval) o->on_eval(o->user, epoch + 1, &r);
            mg_eval_result_free(&r);
        }
        /* memory at the end of the epoch: flat from the second epoch on, or something grows */
        mg_train_epoch e = { .epoch = epoch + 1, .epochs = epochs, .step = pos.step, .seconds = mg_now_s() - t0 };
        mg_train_epoch_memory(be, &e);
        mg_train_log_epoch(log, &e);
        if (o->on_epoch) o->on_epoch(o->user, &e);
        pos.micro = 0;
    }
    /* the trained adapter, in PEFT's format */
    if (s == MG_OK && !res->interrupted) {
        snprintf(path, sizeof path, "%s/adapter", o->out_dir);
        s = mg_make_dirs(path);
        if (s == MG_OK) s = mg_lora_device_download(&dev, lora.params, NULL, NULL);
        if (s == MG_OK) s = mg_lora_save(path, &lora, &m->cfg);
    }
    res->peak_bytes = tr.peak_bytes + (tr.tape ? mg_tape_arena_bytes(tr.tape) : 0);
    res->features_computed = fc.computed, res->features_reused = fc.reused;
    res->feature_cache_bytes = mg_feature_cache_on(&fc) ? mg_feature_cache_bytes(&fc) : 0;
    mg_feature_cache_free(&fc);
    res->seconds = mg_now_s() - t0;
    m->lora = NULL;
    if (log) fclose(log);
    mg_loader_free(ld);
    mg_train_prompts_free(&tp);
    mg_classifier_free(&cl);
    mg_trainer_free(&tr);
    mg_lora_device_free(&dev);
    mg_lora_free(&lora);
    free(order);
    return mg_oom_hint(s, oom_hint);
}
