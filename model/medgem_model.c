/* MedGemma composition (modeling_gemma3.py Gemma3Model.forward + Gemma3ForConditionalGeneration). */
#include "model/medgem_model.h"

#include "engine/oom.h"
#include "model/model_tokens.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Places every weight: run once with a->base NULL to size, once to upload (model/arena.h). */
static void place_all(mg_weight_arena *a, mg_model *m, const mg_weights *w) {
    mg_siglip_load(a, &m->cfg, w, &m->vision);
    mg_projector_load(a, w, &m->projector);
    mg_gemma3_load(a, &m->cfg, w, &m->text);
}

mg_status mg_model_load(mg_model *m, const mg_backend *be, const mg_config *cfg, const mg_weights *w) {
    memset(m, 0, sizeof *m);
    m->be = be;
    m->cfg = *cfg;
    m->vision.layers = calloc((size_t)cfg->v_layers, sizeof(mg_siglip_layer));
    m->text.layers = calloc((size_t)cfg->n_layers, sizeof(mg_gemma3_layer));
    if (!m->vision.layers || !m->text.layers) {
        mg_model_free(m);
        return mg_fail(MG_ERR_OOM, NULL, "model layer tables");
    }
    mg_weight_arena a = { .be = be };
    place_all(&a, m, w);
    m->arena_bytes = a.used;
    /* the weights are what they are: no flag lowers them, only free memory or another device does */
    const char *hint = strcmp(be->name, "cpu")
                           ? "free GPU memory that other programs hold (nvidia-smi lists them), or use a GPU with "
                             "more memory (--cpu runs on the host)"
                           : "free host memory, or use a machine with more (the CPU backend keeps every weight in fp32)";
    mg_status s = mg_mem_preflight(be, a.used, hint, "the model's weights");
    if (s == MG_OK && !(m->arena = be->alloc(be->ctx, a.used))) s = mg_fail_oom(be, a.used, hint, "the model's weights");
    if (s != MG_OK) {
        mg_model_free(m);
        return s;
    }
    a = (mg_weight_arena){ .be = be, .base = m->arena };
    place_all(&a, m, w);
    s = be->sync(be->ctx); /* a failed upload */
    if (s == MG_OK && a.oom) s = mg_fail(MG_ERR_OOM, "free host memory", "host staging buffer while loading weights");
    if (s != MG_OK) mg_model_free(m);
    return s;
}

mg_status mg_model_open(mg_model *m, const mg_backend *be, const char *dir) {
    mg_config cfg;
    mg_checkpoint ck = { 0 };
    mg_weights w = { 0 };
    MG_TRY(mg_config_load(dir, &cfg));
    MG_TRY(mg_checkpoint_open(dir, &ck));
    mg_status s = mg_weights_bind(&ck, &cfg, &w);
    if (s == MG_OK) s = mg_model_load(m, be, &cfg, &w);
    mg_weights_free(&w);
    mg_checkpoint_close(&ck);
    return s;
}

void mg_model_free(mg_model *m) {
    if (m->be && m->arena) m->be->free(m->be->ctx, m->arena);
    if (m->be && m->work) m->be->free(m->be->ctx, m->work);
    free(m->vision.layers);
    free(m->text.layers);
    memset(m, 0, sizeof *m);
}

/* Every device buffer of one forward, carved from m->work. */
typedef struct {
    void *cache_k, *cache_v; /* (L, B, t_max, Hkv, D) the KV cache, first so that decode steps find it in place */
    void *tok;     /* the token_arrays block (int32) */
    void *pixels;  /* (N, 3, S, S) */
    void *vis;     /* (N, P, Cv) vision tower output */
    void *soft;    /* (N, mm, C) projector output: the image soft tokens */
    void *x;       /* (B, T, C) embeddings, then the residual stream */
    void *hrows;   /* (R, C) hidden rows at the scored positions */
    void *ev;      /* (n_vocab, C) the scored rows of E (empty for the whole vocab) */
    void *logits;  /* (R, n_vocab) */
    void *scratch; /* shared in turn by the tower, the projector and the decoder */
} forward_bufs;

/* Lays the buffers out from base (NULL: only sizes them); returns the bytes needed. */
static size_t forward_layout(forward_bufs *f, char *base, const mg_config *cfg, const struct mg_lora_device *lora,
                             size_t esize, size_t tok_bytes, int64_t B, int64_t t_max, int64_t M, int64_t N, int64_t R,
                             int64_t n_vocab_rows, int nv, bool from_pixels) {
    const int64_t G = cfg->image_size / cfg->patch_size, C = cfg->hidden;
    size_t used = 0;
    f->cache_k = mg_carve(base, &used, mg_gemma3_cache_elems(cfg, B, t_max), esize);
    f->cache_v = mg_carve(base, &used, mg_gemma3_cache_elems(cfg, B, t_max), esize);
    f->tok = mg_carve(base, &used, (int64_t)tok_bytes, 1);
    const int64_t Np = from_pixels ? N : 0; /* images that go through the tower */
    f->pixels = mg_carve(base, &used, Np * 3 * (int64_t)cfg->image_size * cfg->image_size, esize);
    f->vis = mg_carve(base, &used, Np * G * G * cfg->v_hidden, esize);
    f->soft = mg_carve(base, &used, N * cfg->mm_tokens_per_image * C, esize);
    f->x = mg_carve(base, &used, M * C, esize);
    f->hrows = mg_carve(base, &used, R * C, esize);
    f->ev = mg_carve(base, &used, n_vocab_rows * C, esize);
    f->logits = mg_carve(base, &used, R * nv, esize);
    size_t scratch = mg_gemma3_scratch_bytes(cfg, lora, M, esize);
    if (Np) {
        const size_t vis = mg_model_vision_scratch_bytes(cfg, lora, Np, esize);
        scratch = scratch > vis ? scratch : vis;
    }
    f->scratch = mg_carve(base, &used, (int64_t)scratch, 1);
    return used;
}

size_t mg_model_vision_scratch_bytes(const mg_config *cfg, const struct mg_lora_device *lora, int64_t N, size_t esize) {
    const size_t vis = mg_siglip_scratch_bytes(cfg, lora, N, esize), proj = mg_projector_scratch_bytes(cfg, N, esize);
    return vis > proj ? vis : proj;
}

void mg_model_vision_forward(const mg_model *m, const struct mg_lora_device *lora, void *soft, void *vis,
                             const void *pixels, int64_t N, void *scratch, const mg_observer *obs) {
    const mg_config *cfg = &m->cfg;
    const int64_t G = cfg->image_size / cfg->patch_size;
    /* get_image_features: vision_tower(pixel_values).last_hidden_state */
    mg_siglip_forward(m->be, cfg, &m->vision, lora, vis, pixels, N, scratch);
    if (obs) obs->fn(obs->user, "vision_out", vis, N * G * G * cfg->v_hidden);
    /* multi_modal_projector */
    mg_projector_forward(m->be, cfg, &m->projector, soft, vis, N, scratch);
}

/* Makes m->work at least need bytes (its contents, the KV cache included, are lost when it grows). */
static mg_status reserve_work(mg_model *m, size_t need, const char *what) {
    if (need <= m->work_bytes) return MG_OK;
    m->be->free(m->be->ctx, m->work);
    m->work_bytes = 0;
    if (!(m->work = m->be->alloc(m->be->ctx, need)))
        return mg_fail_oom(m->be, need, "use a smaller batch", "%s", what);
    m->work_bytes = need;
    return MG_OK;
}

/* One run of the model: a plain forward, a prefill that keeps the KV cache, or a decode step. */
static mg_status model_run(mg_model *m, const mg_model_input *in, const mg_model_head *head, const mg_observer *obs,
                           const mg_run_mode *mode) {
    const mg_backend *be = m->be;
    const mg_config *cfg = &m->cfg;
    const int64_t B = in->B, T = in->T, M = B * T, N = in->n_images, R = head->R;
    const int C = cfg->hidden, mm = cfg->mm_tokens_per_image;
    const int nv = head->vocab ? head->n_vocab : cfg->vocab;
    const size_t es = mg_dtype_size(be->act_dtype);
    int64_t n_soft = 0;
    if (m->lora && m->adapter_merged)
        return mg_fail(MG_ERR_ARG, "reload the base model", "an unmerged adapter on a model with one merged adds LoRA twice");
    MG_TRY(mg_check_input(cfg, in, head, mode, &n_soft));

    /* the per-token int arrays: built on the host, one copy to the device */
    mg_token_arrays host, dev;
    const int64_t n_cache = mode->t_max ? M : 0, n_vocab = head->vocab ? nv : 0;
    const size_t tok_bytes = mg_token_arrays_layout(&host, NULL, M, n_cache, n_soft, R, n_vocab);
    /* the device buffers: one allocation, kept while later runs fit in it; a decode step must find
     * the prefill's cache where it left it, so it never reallocates */
    forward_bufs f;
    const bool from_pixels = !in->soft_tokens;
    if (N && from_pixels && !in->pixels) return mg_fail(MG_ERR_ARG, NULL, "%lld images without pixels or soft tokens", (long long)N);
    const size_t need = forward_layout(&f, NULL, cfg, m->lora, es, tok_bytes, B, mode->t_max, M, N, R, n_vocab, nv,
                                       from_pixels);
    if (mode->decode && need > m->work_bytes)
        return mg_fail(MG_ERR_ARG, "score at most as many rows per decode step as in the prefill",
                       "decode step needs %zu bytes of activations, the prefill reserved %zu", need, m->work_bytes);
    if (!mode->decode) m->kv = (mg_gemma3_cache){ 0 }, m->kv_len = 0; /* overwritten by this run */
    char what[96];
    snprintf(what, sizeof what, "the activations of a forward of B=%lld T=%lld", (long long)B, (long long)T);
    MG_TRY(reserve_work(m, need, what));
    int32_t *host_base = malloc(tok_bytes);
    if (!host_base) return mg_fail(MG_ERR_OOM, NULL, "token arrays for B=%lld T=%lld", (long long)B, (long long)T);
    forward_layout(&f, m->work, cfg, m->lora, es, tok_bytes, B, mode->t_max, M, N, R, n_vocab, nv, from_pixels);
    mg_token_arrays_layout(&host, host_base, M, n_cache, n_soft, R, n_vocab);
    mg_token_arrays_layout(&dev, f.tok, M, n_cache, n_soft, R, n_vocab);
    mg_fill_token_arrays(&host, cfg, in, head, mode);
    be->copy_in(be->ctx, f.tok, host_base, tok_bytes);
    free(host_base);

    if (N && from_pixels) {
        be->upload(be->ctx, f.pixels, in->pixels, MG_F32, N * 3 * (int64_t)cfg->image_size * cfg->image_size);
        mg_model_vision_forward(m, m->lora, f.soft, f.vis, f.pixels, N, f.scratch, obs);
    } else {
        /* precomputed soft tokens: gathered into one (N, mm, C) block */
        for (int64_t k = 0; k < N; k++)
            be->copy(be->ctx, (char *)f.soft + (size_t)(k * mm * C) * es, in->soft_tokens[k], (size_t)(mm * C) * es);
    }
    if (N && obs) obs->fn(obs->user, "projector_out", f.soft, N * mm * C);
    /* embed_tokens (scaled), then masked_scatter of the soft tokens at the placeholders */
    be->embedding_forward(be->ctx, f.x, m->text.embed, dev.ids, M, C, cfg->vocab, m->text.embed_scale);
    if (N) be->scatter_rows_forward(be->ctx, f.x, f.soft, dev.soft_rows, n_soft, C);
    if (obs) obs->fn(obs->user, "embeds", f.x, M * C);
    /* language_model, with the cache (past_key_values) when asked */
    const mg_gemma3_cache cache = { .B = B, .Tmax = mode->t_max, .k = f.cache_k, .v = f.cache_v };
    const mg_gemma3_tokens tok = { .B = B, .T = T, .pos = dev.pos, .key_valid = in->attn_mask ? dev.valid : NULL,
                                   .group = dev.group, .cache = mode->t_max ? &cache : NULL,
                                   .cache_rows = dev.cache_rows, .decode = mode->decode, .past = mode->past };
    mg_gemma3_forward(be, cfg, &m->text, m->lora, f.x, &tok, obs, f.scratch);
    /* lm_head (tied to embed_tokens) at the requested rows, over the requested vocab columns */
    be->gather_rows_forward(be->ctx, f.hrows, f.x, dev.head_rows, R, C);
    if (head->vocab) be->gather_rows_forward(be->ctx, f.ev, m->text.embed, dev.vocab, nv, C);
    be->linear_forward(be->ctx, f.logits, f.hrows, head->vocab ? f.ev : m->text.embed, NULL, R, C, nv);
    if (obs) obs->fn(obs->user, "logits", f.logits, R * nv);
    be->download(be->ctx, head->logits, f.logits, R * nv);
    const mg_status s = be->sync(be->ctx);
    if (s == MG_OK && mode->t_max) m->kv = cache, m->kv_len = mode->past + T;
    if (s != MG_OK) m->kv = (mg_gemma3_cache){ 0 }, m->kv_len = 0;
    return s;
}

mg_status mg_model_forward(mg_model *m, const mg_model_input *in, const mg_model_head *head, const mg_observer *obs) {
    const mg_run_mode plain = { 0 };
    return model_run(m, in, head, obs, &plain);
}

mg_status mg_model_prefill(mg_model *m, const mg_model_input *in, const mg_model_head *head, int64_t t_max) {
    if (t_max < in->T || t_max > m->cfg.max_positions)
        return mg_fail(MG_ERR_ARG, "ask for fewer new tokens", "KV cache of %lld positions for a %lld-token prompt "
                       "(the model has %d positions)", (long long)t_max, (long long)in->T, m->cfg.max_positions);
    if (in->attn_mask)
        return mg_fail(MG_ERR_ARG, "give every row the same prompt length (no padding)",
                       "cached decoding does not mask padded keys");
    const mg_run_mode prefill = { .t_max = t_max };
    return model_run(m, in, head, NULL, &prefill);
}

mg_status mg_model_decode_step(mg_model *m, const int32_t *ids, const mg_model_head *head) {
    if (m->kv.B == 0) return mg_fail(MG_ERR_ARG, "run mg_model_prefill first", "decode step without a KV cache");
    if (m->kv_len >= m->kv.Tmax)
        return mg_fail(MG_ERR_ARG, "prefill with a larger t_max", "the KV cache's %lld positions are all used",
                       (long long)m->kv.Tmax);
    const mg_model_input in = { .B = m->kv.B, .T = 1, .ids = ids };
    const mg_run_mode step = { .t_max = m->kv.Tmax, .decode = true, .past = m->kv_len };
    return model_run(m, &in, head, NULL, &step);
}

mg_status mg_model_image_features(mg_model *m, const float *pixels, int64_t N, void *const *out) {
    const mg_backend *be = m->be;
    const mg_config *cfg = &m->cfg;
    const size_t es = mg_dtype_size(be->act_dtype);
    const int64_t G = cfg->image_size / cfg->patch_size, per = (int64_t)cfg->mm_tokens_per_image * cfg->hidden;
    if (N < 1) return MG_OK;
    if (m->lora && m->adapter_merged)
        return mg_fail(MG_ERR_ARG, "reload the base model", "an unmerged adapter on a model with one merged adds LoRA twice");
    /* pixels, vis, soft, scratch: carved as the forward carves them */
    size_t used = 0;
    const int64_t n_pix = N * 3 * (int64_t)cfg->image_size * cfg->image_size;
    for (int pass = 0; pass < 2; pass++) {
        char *base = pass ? m->work : NULL;
        used = 0;
        void *px = mg_carve(base, &used, n_pix, es);
        void *vis = mg_carve(base, &used, N * G * G * cfg->v_hidden, es);
        void *soft = mg_carve(base, &used, N * per, es);
        void *scratch = mg_carve(base, &used, (int64_t)mg_model_vision_scratch_bytes(cfg, m->lora, N, es), 1);
        if (!pass) {
            m->kv = (mg_gemma3_cache){ 0 }, m->kv_len = 0; /* m->work is overwritten */
            char what[96];
            snprintf(what, sizeof what, "the vision activations of %lld images", (long long)N);
            MG_TRY(reserve_work(m, used, what));
            continue;
        }
        be->upload(be->ctx, px, pixels, MG_F32, n_pix);
        mg_model_vision_forward(m, m->lora, soft, vis, px, N, scratch, NULL);
        for (int64_t k = 0; k < N; k++) be->copy(be->ctx, out[k], (char *)soft + (size_t)(k * per) * es, (size_t)per * es);
    }
    return be->sync(be->ctx);
}
