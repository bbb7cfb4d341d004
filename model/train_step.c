/* One training micro-batch (model/train_step.h): forward keeping layer inputs, then the head and
 * the loss, then each layer recomputed through the tape and differentiated, top to bottom. */
#include "model/train_step.h"

#include <stdlib.h>
#include <string.h>

#include "engine/device.h"
#include "model/model_tokens.h"

/* Logits of at most this many elements exist at once (64 Mi: 256 rows of the 262,208-word vocab). */
#define HEAD_CHUNK_ELEMS ((int64_t)1 << 26)

/* Every device buffer of a step, carved from t->work. */
typedef struct {
    void *tok;       /* the mg_token_arrays block (int32); head_rows = the labelled positions */
    int32_t *targets;/* (R) the label each labelled position predicts */
    float *loss;     /* (1) Σ CE, fp32 */
    void *pixels;    /* (N, 3, S, S) */
    void *cols;      /* (N*P, 3*p*p) im2col */
    void *vsaved;    /* (Lv+1, N, P, Cv) each vision layer's input, then the last layer's output */
    void *vis;       /* (N, P, Cv) after post_layernorm */
    void *soft;      /* (N, mm, C) projector output */
    void *xsaved;    /* (L+1, B, T, C) each decoder layer's input, then the last layer's output */
    void *ytmp;      /* a recomputed segment's output (largest of the segments) */
    void *ga, *gb;   /* gradients at segment boundaries, ping-pong (same size as ytmp) */
    void *hrows;     /* (R, C) the labelled rows of the last hidden state */
    void *hn;        /* (R, C) after the final norm */
    void *dhn;       /* (R, C) its gradient */
    void *logits;    /* (Rc, V) one chunk of logits, then its gradient in place */
    void *vstore;    /* the kept vision layers' activations, one part per layer */
    void *scratch;   /* the text layers' activations (all, or one with recompute), a recomputed vision
                      * layer's, or the projector's, in turn */
} step_bufs;

/* How a step gets the image soft tokens. */
typedef enum {
    VISION_GIVEN,    /* precomputed (mg_model_input.soft_tokens): no tower at all */
    VISION_PLAIN,    /* no vision LoRA: the tower runs once as in inference (mg_model_vision_forward), no backward */
    VISION_RECORDED, /* vision LoRA: layer inputs kept, layers recomputed (or kept) and differentiated */
} vision_mode;

typedef struct {
    int64_t B, T, M, N, R, Rc, n_soft;
    size_t tok_bytes;
    vision_mode vision;
    int vision_keep; /* top vision layers whose activations are kept (the others are recomputed) */
} step_dims;

static size_t step_layout(step_bufs *f, char *base, const mg_config *cfg, const mg_lora_device *lora, size_t es,
                          const step_dims *d, bool recompute) {
    const int64_t G = cfg->image_size / cfg->patch_size, P = G * G, C = cfg->hidden, Cv = cfg->v_hidden;
    size_t used = 0;
    f->tok = mg_carve(base, &used, (int64_t)d->tok_bytes, 1);
    f->targets = mg_carve(base, &used, d->R, sizeof(int32_t));
    f->loss = mg_carve(base, &used, 1, sizeof(float));
    const int64_t Np = d->vision == VISION_GIVEN ? 0 : d->N, Nr = d->vision == VISION_RECORDED ? d->N : 0;
    f->pixels = mg_carve(base, &used, Np * 3 * (int64_t)cfg->image_size * cfg->image_size, es);
    f->cols = mg_carve(base, &used, Nr * P * 3 * cfg->patch_size * cfg->patch_size, es);
    f->vsaved = mg_carve(base, &used, (cfg->v_layers + 1) * Nr * P * Cv, es);
    f->vis = mg_carve(base, &used, Np * P * Cv, es);
    f->soft = mg_carve(base, &used, d->N * cfg->mm_tokens_per_image * C, es);
    f->xsaved = mg_carve(base, &used, (cfg->n_layers + 1) * d->M * C, es);
    int64_t seg = d->M * C;
    seg = Nr * P * Cv > seg ? Nr * P * Cv : seg;
    seg = d->N * cfg->mm_tokens_per_image * C > seg ? d->N * cfg->mm_tokens_per_image * C : seg;
    f->ytmp = mg_carve(base, &used, seg, es);
    f->ga = mg_carve(base, &used, seg, es);
    f->gb = mg_carve(base, &used, seg, es);
    f->hrows = mg_carve(base, &used, d->R * C, es);
    f->hn = mg_carve(base, &used, d->R * C, es);
    f->dhn = mg_carve(base, &used, d->R * C, es);
    f->logits = mg_carve(base, &used, d->Rc * cfg->vocab, es);
    size_t scratch = mg_gemma3_layer_train_bytes(cfg, lora, d->M, es) * (recompute ? 1 : (size_t)cfg->n_layers);
    size_t vstore = 0;
    if (d->vision == VISION_PLAIN) {
        const size_t vis = mg_model_vision_scratch_bytes(cfg, lora, d->N, es);
        scratch = vis > scratch ? vis : scratch;
    } else if (Nr) {
        const size_t vis = mg_siglip_layer_train_bytes(cfg, lora, d->N, es);
        const size_t proj = mg_projector_scratch_bytes(cfg, d->N, es);
        vstore = vis * (size_t)d->vision_keep;
        if (d->vision_keep < cfg->v_layers) scratch = vis > scratch ? vis : scratch;
        scratch = proj > scratch ? proj : scratch;
    }
    f->vstore = mg_carve(base, &used, (int64_t)vstore, 1);
    f->scratch = mg_carve(base, &used, (int64_t)scratch, 1);
    return used;
}

mg_status mg_trainer_create(mg_trainer *t, mg_model *m, mg_lora_device *lora) {
    memset(t, 0, sizeof *t);
    if (lora->be != m->be) return mg_fail(MG_ERR_ARG, NULL, "the adapter and the model live on different backends");
    if (m->adapter_merged)
        return mg_fail(MG_ERR_ARG, "train from the base model (give the adapter to train with --adapter)",
                       "the model has an adapter merged into its weights");
    t->m = m, t->lora = lora;
    t->marks = malloc((size_t)(m->cfg.n_layers + 1) * sizeof(int));
    t->vmarks = malloc((size_t)(m->cfg.v_layers + 1) * sizeof(int));
    if (!t->marks || !t->vmarks) {
        mg_trainer_free(t);
        return mg_fail(MG_ERR_OOM, NULL, "trainer tables");
    }
    MG_TRY(mg_tape_create(&t->tape, m->be));
    mg_tape_set_leaves(t->tape, lora->act, lora->grads, lora->n_params);
    return MG_OK;
}

void mg_trainer_free(mg_trainer *t) {
    if (t->m && t->work) t->m->be->free(t->m->be->ctx, t->work);
    mg_tape_destroy(t->tape);
    free(t->marks);
    free(t->vmarks);
    memset(t, 0, sizeof *t);
}

size_t mg_memory_budget(const mg_backend *be, const mg_model *m, double max_gb) {
    const double margin = 2e9;
    if (max_gb > 0) return max_gb * 1e9 > margin ? (size_t)(max_gb * 1e9 - margin) : 0;
    if (be == mg_backend_cpu()) return 0;
    mg_gpu_info gi;
    mg_gpu_query(&gi);
    if (!gi.available || (double)gi.free_mem <= margin) return 0;
    return m->arena_bytes + (size_t)((double)gi.free_mem - margin);
}

int64_t mg_count_targets(const int32_t *labels, int64_t B, int64_t T) {
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t + 1 < T; t++) n += labels[b * T + t + 1] != -100;
    return n;
}

static bool has_vision_lora(const mg_lora_device *lora, const mg_config *cfg) {
    for (int i = 0; i < cfg->v_layers * MG_LORA_N_KINDS; i++)
        if (lora->index[1][i] >= 0) return true;
    return false;
}

bool mg_trainer_trains_vision(const mg_trainer *t) { return has_vision_lora(t->lora, &t->m->cfg); }

/* Differentiates records [from, to) of the tape: out's gradient is dout (read), in's is din
 * (zeroed here, then accumulated by the replay). */
static mg_status segment_backward(mg_trainer *t, int from, int to, const void *out, void *dout, const void *in,
                                  void *din, int64_t n_out, int64_t n_in) {
    const mg_backend *be = t->m->be;
    be->zero(be->ctx, din, (size_t)n_in * mg_dtype_size(be->act_dtype));
    mg_tape_bind_grad(t->tape, out, dout, n_out);
    mg_tape_bind_grad(t->tape, in, din, n_in);
    const mg_status s = mg_tape_backward(t->tape, from, to);
    mg_tape_clear_grads(t->tape);
    return s;
}

/* How many of the top vision layers keep their activations within t->memory_budget: the weights,
 * the adapter state, the step's buffers with k layers kept, and the tape's gradient arena must
 * fit. The arena holds one segment's gradients, one per distinct input (engine/tape.c arena_need):
 * at most one layer's activations, vision or text (tests/test_train_peft.c checks this). */
static int plan_vision_keep(const mg_trainer *t, step_dims *d, size_t es) {
    const mg_config *cfg = &t->m->cfg;
    if (d->vision != VISION_RECORDED || !t->memory_budget) return 0;
    step_bufs f;
    d->vision_keep = 0;
    const size_t base = step_layout(&f, NULL, cfg, t->lora, es, d, t->recompute);
    const size_t layer = mg_siglip_layer_train_bytes(cfg, t->lora, d->N, es);
    const size_t text = mg_gemma3_layer_train_bytes(cfg, t->lora, d->M, es);
    const size_t fixed = t->m->arena_bytes + (size_t)t->lora->n_params * (4 * sizeof(float) + es) + base +
                         (layer > text ? layer : text);
    if (fixed >= t->memory_budget) return 0;
    const size_t k = (t->memory_budget - fixed) / layer;
    return k > (size_t)cfg->v_layers ? cfg->v_layers : (int)k;
}

mg_status mg_train_step(mg_trainer *t, const mg_model_input *in, const int32_t *labels, float grad_scale,
                        double *loss_sum) {
    mg_model *m = t->m;
    const mg_backend *be = m->be, *tb = mg_tape_backend(t->tape);
    const mg_config *cfg = &m->cfg;
    mg_lora_device *lora = t->lora;
    const size_t es = mg_dtype_size(be->act_dtype);
    const int64_t G = cfg->image_size / cfg->patch_size, P = G * G;
    const int C = cfg->hidden, Cv = cfg->v_hidden, V = cfg->vocab, mm = cfg->mm_tokens_per_image;

    /* the labelled positions and their targets (the shift), on the host */
    step_dims d = { .B = in->B, .T = in->T, .M = in->B * in->T, .N = in->n_images };
    d.R = mg_count_targets(labels, in->B, in->T);
    if (d.R == 0) return mg_fail(MG_ERR_ARG, "give each sample labelled tokens", "the micro-batch has no labelled tokens");
    int32_t *rows = malloc((size_t)d.R * sizeof(int32_t)), *targets = malloc((size_t)d.R * sizeof(int32_t));
    if (!rows || !targets) {
        free(rows), free(targets);
        return mg_fail(MG_ERR_OOM, NULL, "label rows of a B=%lld T=%lld batch", (long long)d.B, (long long)d.T);
    }
    for (int64_t b = 0, r = 0; b < d.B; b++)
        for (int64_t pos = 0; pos + 1 < d.T; pos++) {
            const int32_t y = labels[b * d.T + pos + 1];
            if (y == -100) continue;
            rows[r] = (int32_t)(b * d.T + pos), targets[r++] = y;
        }
    mg_status s = MG_OK;
    for (int64_t r = 0; r < d.R && s == MG_OK; r++)
        if (targets[r] < 0 || targets[r] >= V)
            s = mg_fail(MG_ERR_ARG, "labels are token ids or -100", "label %d at position %lld is outside [0, %d)",
                        targets[r], (long long)rows[r] + 1, V);
    const mg_model_head head = { .rows = rows, .R = d.R };
    const mg_run_mode plain = { 0 };
    if (s == MG_OK) s = mg_check_input(cfg, in, &head, &plain, &d.n_soft);
    const bool vision_lora = has_vision_lora(lora, cfg);
    d.vision = in->soft_tokens ? VISION_GIVEN : vision_lora ? VISION_RECORDED : VISION_PLAIN;
    if (s == MG_OK && in->soft_tokens && vision_lora)
        s = mg_fail(MG_ERR_ARG, "give pixels: the adapter trains the vision tower",
                    "precomputed soft tokens would bypass the adapter's vision LoRA");
    if (s == MG_OK && d.N && !in->soft_tokens && !in->pixels)
        s = mg_fail(MG_ERR_ARG, NULL, "%lld images without pixels or soft tokens", (long long)d.N);
    if (s != MG_OK) {
        free(rows), free(targets);
        return s;
    }
    d.Rc = HEAD_CHUNK_ELEMS / V < 1 ? 1 : HEAD_CHUNK_ELEMS / V;
    d.Rc = d.Rc > d.R ? d.R : d.Rc;

    /* the buffers: one allocation, kept while later steps fit in it */
    mg_token_arrays host, dev;
    d.tok_bytes = mg_token_arrays_layout(&host, NULL, d.M, 0, d.n_soft, d.R, 0);
    d.vision_keep = plan_vision_keep(t, &d, es);
    t->vision_keep = d.vision_keep;
    step_bufs f;
    const size_t need = step_layout(&f, NULL, cfg, lora, es, &d, t->recompute);
    if (need > t->work_bytes) {
        be->free(be->ctx, t->work);
        t->work_bytes = 0;
        if (!(t->work = be->alloc(be->ctx, need))) {
            free(rows), free(targets);
            mg_gpu_info gi = { 0 };
            if (be != mg_backend_cpu()) mg_gpu_query(&gi);
            return mg_fail(MG_ERR_OOM, "use a smaller --batch (and a larger --grad-accum to keep the effective batch)",
                           "a training step of B=%lld T=%lld needs %.1f MiB of activations on %s; %.1f MiB are free "
                           "(the weights take %.1f MiB)", (long long)d.B, (long long)d.T, (double)need / (1 << 20),
                           be->name, gi.available ? (double)gi.free_mem / (1 << 20) : 0.0,
                           (double)m->arena_bytes / (1 << 20));
        }
        t->work_bytes = need;
        t->peak_bytes = need > t->peak_bytes ? need : t->peak_bytes;
    }
    step_layout(&f, t->work, cfg, lora, es, &d, t->recompute);
    int32_t *host_base = malloc(d.tok_bytes);
    if (!host_base) {
        free(rows), free(targets);
        return mg_fail(MG_ERR_OOM, NULL, "token arrays for B=%lld T=%lld", (long long)d.B, (long long)d.T);
    }
    mg_token_arrays_layout(&host, host_base, d.M, 0, d.n_soft, d.R, 0);
    mg_token_arrays_layout(&dev, f.tok, d.M, 0, d.n_soft, d.R, 0);
    mg_fill_token_arrays(&host, cfg, in, &head, &plain);
    be->copy_in(be->ctx, f.tok, host_base, d.tok_bytes);
    be->copy_in(be->ctx, f.targets, targets, (size_t)d.R * sizeof(int32_t));
    be->zero(be->ctx, f.loss, sizeof(float));
    free(host_base), free(rows), free(targets);

    const int64_t MC = d.M * C, NPC = d.N * P * Cv;
    char *vsaved = f.vsaved, *xsaved = f.xsaved;
    const mg_gemma3_tokens tok = { .B = d.B, .T = d.T, .pos = dev.pos, .key_valid = in->attn_mask ? dev.valid : NULL,
                                   .group = dev.group };

    /* ---- forward, keeping each layer's input ---- */
    mg_tape_reset(t->tape);
    t->vmarks[0] = t->vmarks[cfg->v_layers] = 0;
    if (d.vision == VISION_GIVEN) {
        /* precomputed soft tokens, gathered into one (N, mm, C) block */
        for (int64_t k = 0; k < d.N; k++)
            be->copy(be->ctx, (char *)f.soft + (size_t)(k * mm * C) * es, in->soft_tokens[k], (size_t)(mm * C) * es);
    } else if (d.vision == VISION_PLAIN) {
        /* nothing to differentiate in the tower: it runs as in inference (and as mg_model_image_features) */
        be->upload(be->ctx, f.pixels, in->pixels, MG_F32, d.N * 3 * (int64_t)cfg->image_size * cfg->image_size);
        mg_model_vision_forward(m, lora, f.soft, f.vis, f.pixels, d.N, f.scratch, NULL);
    } else if (d.N) {
        be->upload(be->ctx, f.pixels, in->pixels, MG_F32, d.N * 3 * (int64_t)cfg->image_size * cfg->image_size);
        mg_siglip_embed(be, cfg, &m->vision, vsaved, f.pixels, d.N, f.cols);
        /* the bottom layers run plainly (recomputed in backward); the top vision_keep are recorded
         * now, each with its activations in its own part of vstore */
        const int first_kept = cfg->v_layers - d.vision_keep;
        const size_t vbytes = mg_siglip_layer_train_bytes(cfg, lora, d.N, es);
        for (int l = 0; l < cfg->v_layers; l++) {
            t->vmarks[l] = mg_tape_mark(t->tape);
            const bool kept = l >= first_kept;
            mg_siglip_layer_train(kept ? tb : be, cfg, &m->vision, lora, l, d.N, vsaved + (size_t)(l * NPC) * es,
                                  vsaved + (size_t)((l + 1) * NPC) * es,
                                  kept ? (char *)f.vstore + (size_t)(l - first_kept) * vbytes : f.scratch);
        }
        t->vmarks[cfg->v_layers] = mg_tape_mark(t->tape);
        /* post_layernorm, multi_modal_projector */
        be->layernorm_forward(be->ctx, f.vis, vsaved + (size_t)(cfg->v_layers * NPC) * es, m->vision.post_ln_w,
                              m->vision.post_ln_b, d.N * P, Cv, cfg->v_eps);
        mg_projector_forward(be, cfg, &m->projector, f.soft, f.vis, d.N, f.scratch);
    }
    /* embed_tokens (scaled), the soft tokens at the placeholders, then the decoder layers */
    be->embedding_forward(be->ctx, xsaved, m->text.embed, dev.ids, d.M, C, V, m->text.embed_scale);
    if (d.N) be->scatter_rows_forward(be->ctx, xsaved, f.soft, dev.soft_rows, d.n_soft, C);
    /* with recompute, the layers run plainly and are recorded again one at a time in backward;
     * without, each is recorded now, its activations in its own part of the scratch */
    const size_t text_bytes = mg_gemma3_layer_train_bytes(cfg, lora, d.M, es);
    const int vision_end = mg_tape_mark(t->tape); /* the kept vision layers' records end here */
    for (int l = 0; l < cfg->n_layers; l++) {
        t->marks[l] = mg_tape_mark(t->tape);
        mg_gemma3_layer_train(t->recompute ? be : tb, cfg, &m->text, lora, l, &tok, xsaved + (size_t)(l * MC) * es,
                              xsaved + (size_t)((l + 1) * MC) * es,
                              (char *)f.scratch + (t->recompute ? 0 : (size_t)l * text_bytes));
    }
    t->marks[cfg->n_layers] = mg_tape_mark(t->tape);

    /* ---- head and loss: final norm on the labelled rows, logits a chunk at a time ---- */
    const void *x_last = xsaved + (size_t)(cfg->n_layers * MC) * es;
    const int head_from = mg_tape_mark(t->tape);
    tb->gather_rows_forward(tb->ctx, f.hrows, x_last, dev.head_rows, d.R, C);
    tb->rmsnorm_forward(tb->ctx, f.hn, f.hrows, m->text.final_norm, d.R, C, cfg->rms_eps);
    be->zero(be->ctx, f.dhn, (size_t)(d.R * C) * es);
    for (int64_t r0 = 0; r0 < d.R; r0 += d.Rc) {
        const int64_t rc = d.R - r0 < d.Rc ? d.R - r0 : d.Rc;
        const void *hn = (const char *)f.hn + (size_t)(r0 * C) * es;
        /* lm_head (tied), fp32 cross-entropy, and the logits' gradient back through the head */
        be->linear_forward(be->ctx, f.logits, hn, m->text.embed, NULL, rc, C, V);
        be->cross_entropy_backward(be->ctx, f.logits, f.loss, f.logits, f.targets + r0, rc, V, grad_scale);
        be->linear_backward(be->ctx, (char *)f.dhn + (size_t)(r0 * C) * es, f.logits, m->text.embed, rc, C, V);
    }
    MG_TRY(segment_backward(t, head_from, mg_tape_mark(t->tape), f.hn, f.dhn, x_last, f.ga, d.R * C, MC));

    /* ---- decoder layers, top down: (recompute through the tape and) replay ---- */
    void *g_out = f.ga, *g_in = f.gb;
    for (int l = cfg->n_layers - 1; l >= 0; l--) {
        const void *x_in = xsaved + (size_t)(l * MC) * es;
        if (t->recompute) {
            mg_tape_truncate(t->tape, vision_end);
            mg_gemma3_layer_train(tb, cfg, &m->text, lora, l, &tok, x_in, f.ytmp, f.scratch);
            MG_TRY(segment_backward(t, vision_end, mg_tape_mark(t->tape), f.ytmp, g_out, x_in, g_in, MC, MC));
        } else {
            MG_TRY(segment_backward(t, t->marks[l], t->marks[l + 1], xsaved + (size_t)((l + 1) * MC) * es, g_out, x_in,
                                    g_in, MC, MC));
        }
        void *swap = g_out;
        g_out = g_in, g_in = swap;
    }
    /* g_out = dL/d(embeddings) */

    if (d.N && d.vision == VISION_RECORDED) {
        /* the soft tokens' gradient is the embeddings' at the placeholders */
        void *dsoft = g_in; /* (N, mm, C) */
        be->zero(be->ctx, dsoft, (size_t)(d.N * mm * C) * es);
        be->scatter_rows_backward(be->ctx, dsoft, g_out, dev.soft_rows, d.n_soft, C);
        /* post_layernorm + projector */
        const void *v_last = vsaved + (size_t)(cfg->v_layers * NPC) * es;
        mg_tape_truncate(t->tape, vision_end); /* the text and head records are done with */
        tb->layernorm_forward(tb->ctx, f.vis, v_last, m->vision.post_ln_w, m->vision.post_ln_b, d.N * P, Cv,
                              cfg->v_eps);
        mg_projector_forward(tb, cfg, &m->projector, f.ytmp, f.vis, d.N, f.scratch);
        MG_TRY(segment_backward(t, vision_end, mg_tape_mark(t->tape), f.ytmp, dsoft, v_last, g_out, d.N * mm * C,
                                NPC));
        /* g_out = dL/d(last vision layer's output); kept layers replay their records, the others
         * are recomputed through the tape first */
        const int first_kept = cfg->v_layers - d.vision_keep;
        for (int l = cfg->v_layers - 1; l >= 0; l--) {
            const void *x_in = vsaved + (size_t)(l * NPC) * es, *x_out = vsaved + (size_t)((l + 1) * NPC) * es;
            if (l >= first_kept) {
                MG_TRY(segment_backward(t, t->vmarks[l], t->vmarks[l + 1], x_out, g_out, x_in, g_in, NPC, NPC));
            } else {
                mg_tape_reset(t->tape);
                mg_siglip_layer_train(tb, cfg, &m->vision, lora, l, d.N, x_in, f.ytmp, f.scratch);
                MG_TRY(segment_backward(t, 0, mg_tape_mark(t->tape), f.ytmp, g_out, x_in, g_in, NPC, NPC));
            }
            void *swap = g_out;
            g_out = g_in, g_in = swap;
        }
    }

    float loss = 0;
    be->copy_out(be->ctx, &loss, f.loss, sizeof loss);
    MG_TRY(be->sync(be->ctx));
    *loss_sum += loss;
    return MG_OK;
}
