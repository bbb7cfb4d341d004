/* Gemma 3 decoder forward, top to bottom (modeling_gemma3.py names in the comments). */
#include "model/gemma3.h"

#include "model/lora_device.h"

#include <math.h>
#include <stdio.h>

void mg_gemma3_load(mg_weight_arena *a, const mg_config *cfg, const mg_weights *w, mg_gemma3_weights *gw) {
    gw->embed = mg_arena_put(a, w->embed);
    /* Gemma3TextScaledWordEmbedding: the embed_scale buffer sqrt(C), cast to the weight dtype.
     * The fp32 CPU reference rounds it to a bf16 checkpoint's dtype; a bf16 backend runs the model
     * in bf16, where the buffer is bf16 whatever the checkpoint (an fp32 checkpoint loaded with
     * from_pretrained(dtype=bfloat16) also has bf16(sqrt(C)): 6.3125 for C = 40, 50.5 for 2560).
     * An fp16 checkpoint is upcast at load and never run in fp16 (Gemma 3's activations overflow
     * it): its scale is fp32's, as from_pretrained(dtype=float32) has it. */
    const float scale = (float)sqrt((double)cfg->hidden);
    const bool bf16 = a->be->act_dtype == MG_BF16 || w->embed->dtype == MG_BF16;
    gw->embed_scale = bf16 ? mg_round_bf16(scale) : scale;
    for (int l = 0; l < cfg->n_layers; l++) {
        const mg_text_layer_weights *src = &w->text[l];
        mg_gemma3_layer *d = &gw->layers[l];
        d->input_norm = mg_arena_put(a, src->input_norm);
        const mg_st_tensor *qkv[3] = { src->q_w, src->k_w, src->v_w };
        d->qkv_w = mg_arena_put_cat(a, qkv, 3);
        d->o_w = mg_arena_put(a, src->o_w);
        d->q_norm = mg_arena_put(a, src->q_norm), d->k_norm = mg_arena_put(a, src->k_norm);
        d->post_attn_norm = mg_arena_put(a, src->post_attn_norm);
        d->pre_ffw_norm = mg_arena_put(a, src->pre_ffw_norm);
        d->post_ffw_norm = mg_arena_put(a, src->post_ffw_norm);
        const mg_st_tensor *gate_up[2] = { src->gate_w, src->up_w };
        d->gate_up_w = mg_arena_put_cat(a, gate_up, 2);
        d->down_w = mg_arena_put(a, src->down_w);
    }
    gw->final_norm = mg_arena_put(a, w->final_norm);
}

/* One layer's activations for M = B*T rows, laid out in the caller's scratch. For inference the
 * two norms share xn, the two projections share o and the residual stream is updated in place;
 * for training (the tape) every tensor has its own buffer, since backward reads them all. */
typedef struct {
    void *xn1, *xn2; /* (M, C) input_layernorm, pre_feedforward_layernorm outputs */
    void *qkv;       /* (M, (H+2Hkv)*D) the fused q|k|v projection */
    void *q;         /* (M, H*D) = (B, T, H, D) */
    void *k;         /* (M, Hkv*D) = (B, T, Hkv, D) */
    void *v;         /* (M, Hkv*D) */
    void *att;       /* (M, H*D) attention output before o_proj */
    float *lse2;     /* (B, H, T) attention's log-sum-exp for its backward; NULL: inference */
    void *o1, *o2;   /* (M, C) o_proj, down_proj outputs */
    void *mid;       /* (M, C) residual stream after attention; NULL: in place (inference) */
    void *gu;        /* (M, 2F) gate_proj | up_proj */
    void *h;         /* (M, F) gelu(gate) * up */
    mg_lora_acts lora;
} gemma3_acts;

static size_t gemma3_acts_layout(gemma3_acts *s, char *base, const mg_config *cfg, const mg_lora_device *lora,
                                 int64_t M, size_t esize, bool training) {
    size_t used = 0;
    const int64_t qd = (int64_t)cfg->n_heads * cfg->head_dim, kvd = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    s->xn1 = mg_carve(base, &used, M * cfg->hidden, esize);
    s->xn2 = training ? mg_carve(base, &used, M * cfg->hidden, esize) : s->xn1;
    s->qkv = mg_carve(base, &used, M * (qd + 2 * kvd), esize);
    s->q = mg_carve(base, &used, M * qd, esize);
    s->k = mg_carve(base, &used, M * kvd, esize);
    s->v = mg_carve(base, &used, M * kvd, esize);
    s->att = mg_carve(base, &used, M * qd, esize);
    s->lse2 = training ? mg_carve(base, &used, M * cfg->n_heads, sizeof(float)) : NULL;
    s->o1 = mg_carve(base, &used, M * cfg->hidden, esize);
    s->o2 = training ? mg_carve(base, &used, M * cfg->hidden, esize) : s->o1;
    s->mid = training ? mg_carve(base, &used, M * cfg->hidden, esize) : NULL;
    s->gu = mg_carve(base, &used, M * 2 * cfg->intermediate, esize);
    s->h = mg_carve(base, &used, M * cfg->intermediate, esize);
    const size_t l = mg_lora_acts_layout(&s->lora, base ? base + used : NULL, lora, cfg, MG_COMP_TEXT, M, esize);
    return used + l;
}

size_t mg_gemma3_scratch_bytes(const mg_config *cfg, const mg_lora_device *lora, int64_t M, size_t esize) {
    gemma3_acts s;
    return gemma3_acts_layout(&s, NULL, cfg, lora, M, esize, false);
}

size_t mg_gemma3_layer_train_bytes(const mg_config *cfg, const mg_lora_device *lora, int64_t M, size_t esize) {
    gemma3_acts s;
    return gemma3_acts_layout(&s, NULL, cfg, lora, M, esize, true);
}

int64_t mg_gemma3_cache_elems(const mg_config *cfg, int64_t B, int64_t Tmax) {
    return (int64_t)cfg->n_layers * B * Tmax * cfg->n_kv_heads * cfg->head_dim;
}

/* Decoder layer l (Gemma3DecoderLayer.forward): x_out = layer(x_in). x_out may be x_in when s->mid
 * is NULL (inference, in place). */
static void gemma3_layer(const mg_backend *be, const mg_config *cfg, const mg_gemma3_layer *lw,
                         const mg_lora_device *lora, int l, const mg_gemma3_tokens *tok, const gemma3_acts *s,
                         const void *x_in, void *x_out) {
    const int64_t B = tok->B, T = tok->T, M = B * T;
    const int C = cfg->hidden, H = cfg->n_heads, Hkv = cfg->n_kv_heads, D = cfg->head_dim, F = cfg->intermediate;
    const int64_t qkv_cols = (int64_t)(H + 2 * Hkv) * D;
    const size_t es = mg_dtype_size(be->act_dtype);
    const float scale = 1.0f / sqrtf(cfg->query_pre_attn_scalar);
    const bool global = cfg->layer_is_global[l];
    const int window = global ? 0 : cfg->sliding_window;
    void *mid = s->mid ? s->mid : x_out;
    /* input_layernorm */
    be->rmsnorm_forward(be->ctx, s->xn1, x_in, lw->input_norm, M, C, cfg->rms_eps);
    /* self_attn: q/k/v_proj as one GEMM (+ each one's LoRA into its columns), then q_norm/k_norm per
     * head and rotary_emb (local or global) */
    be->linear_forward(be->ctx, s->qkv, s->xn1, lw->qkv_w, NULL, M, C, (int)qkv_cols);
    char *qkv = s->qkv;
    mg_lora_apply(be, lora, &s->lora, MG_COMP_TEXT, l, MG_LORA_Q, qkv, qkv_cols, s->xn1, M);
    mg_lora_apply(be, lora, &s->lora, MG_COMP_TEXT, l, MG_LORA_K, qkv + (size_t)H * D * es, qkv_cols, s->xn1, M);
    mg_lora_apply(be, lora, &s->lora, MG_COMP_TEXT, l, MG_LORA_V, qkv + (size_t)(H + Hkv) * D * es, qkv_cols,
                  s->xn1, M);
    const mg_qkv_args qa = { .B = B, .T = T, .H = H, .Hkv = Hkv, .D = D, .norm_rope = true, .q_norm = lw->q_norm,
                             .k_norm = lw->k_norm, .eps = cfg->rms_eps, .pos = tok->pos,
                             .theta = global ? cfg->rope_theta_global : cfg->rope_theta_local,
                             .factor = global ? cfg->rope_factor_global : cfg->rope_factor_local };
    be->qk_norm_rope_forward(be->ctx, s->q, s->k, s->v, s->qkv, &qa);
    /* past_key_values.update: this layer's keys and values at their cache positions */
    void *kc = NULL, *vc = NULL; /* (B, Tmax, Hkv, D) this layer's cache */
    if (tok->cache) {
        const int64_t layer = tok->cache->B * tok->cache->Tmax * Hkv * D;
        kc = (char *)tok->cache->k + (size_t)(l * layer) * es;
        vc = (char *)tok->cache->v + (size_t)(l * layer) * es;
        be->scatter_rows_forward(be->ctx, kc, s->k, tok->cache_rows, M, Hkv * D);
        be->scatter_rows_forward(be->ctx, vc, s->v, tok->cache_rows, M, Hkv * D);
    }
    if (tok->decode) {
        /* one query per row against the cached positions 0..past (plain causal / sliding mask) */
        const mg_decode_args dec = { .B = B, .H = H, .Hkv = Hkv, .D = D, .scale = scale, .Tmax = tok->cache->Tmax,
                                     .len = tok->past + 1, .window = window };
        be->attention_decode_forward(be->ctx, s->att, s->q, kc, vc, &dec);
    } else {
        /* the causal (+ sliding) mask OR the same-image blocks */
        const mg_attention_args attn = { .B = B, .T = T, .H = H, .Hkv = Hkv, .D = D, .scale = scale, .causal = true,
                                         .window = window, .key_valid = tok->key_valid, .group = tok->group,
                                         .lse2 = s->lse2 };
        be->attention_forward(be->ctx, s->att, s->q, s->k, s->v, &attn);
    }
    /* o_proj (+ LoRA), then post_attention_layernorm and the residual add in one pass */
    be->linear_forward(be->ctx, s->o1, s->att, lw->o_w, NULL, M, H * D, C);
    mg_lora_apply(be, lora, &s->lora, MG_COMP_TEXT, l, MG_LORA_O, s->o1, C, s->att, M);
    be->rmsnorm_add_forward(be->ctx, mid, x_in, s->o1, lw->post_attn_norm, M, C, cfg->rms_eps);
    /* pre_feedforward_layernorm, mlp: down_proj(gelu_tanh(gate_proj) * up_proj), LoRA on all three */
    be->rmsnorm_forward(be->ctx, s->xn2, mid, lw->pre_ffw_norm, M, C, cfg->rms_eps);
    be->linear_forward(be->ctx, s->gu, s->xn2, lw->gate_up_w, NULL, M, C, 2 * F);
    mg_lora_apply(be, lora, &s->lora, MG_COMP_TEXT, l, MG_LORA_GATE, s->gu, 2 * F, s->xn2, M);
    mg_lora_apply(be, lora, &s->lora, MG_COMP_TEXT, l, MG_LORA_UP, (char *)s->gu + (size_t)F * es, 2 * F, s->xn2, M);
    be->geglu_forward(be->ctx, s->h, s->gu, M, F);
    be->linear_forward(be->ctx, s->o2, s->h, lw->down_w, NULL, M, F, C);
    mg_lora_apply(be, lora, &s->lora, MG_COMP_TEXT, l, MG_LORA_DOWN, s->o2, C, s->h, M);
    /* post_feedforward_layernorm and the residual add */
    be->rmsnorm_add_forward(be->ctx, x_out, mid, s->o2, lw->post_ffw_norm, M, C, cfg->rms_eps);
}

void mg_gemma3_forward(const mg_backend *be, const mg_config *cfg, const mg_gemma3_weights *w,
                       const mg_lora_device *lora, void *x, const mg_gemma3_tokens *tok, const mg_observer *obs,
                       void *scratch) {
    const int64_t M = tok->B * tok->T;
    gemma3_acts s;
    gemma3_acts_layout(&s, scratch, cfg, lora, M, mg_dtype_size(be->act_dtype), false);
    for (int l = 0; l < cfg->n_layers; l++) {
        gemma3_layer(be, cfg, &w->layers[l], lora, l, tok, &s, x, x);
        if (obs) {
            char stage[32];
            snprintf(stage, sizeof stage, "hidden_%d", l);
            obs->fn(obs->user, stage, x, M * cfg->hidden);
        }
    }
    /* norm */
    be->rmsnorm_forward(be->ctx, x, x, w->final_norm, M, cfg->hidden, cfg->rms_eps);
    if (obs) obs->fn(obs->user, "final_norm_out", x, M * cfg->hidden);
}

void mg_gemma3_layer_train(const mg_backend *be, const mg_config *cfg, const mg_gemma3_weights *w,
                           const mg_lora_device *lora, int l, const mg_gemma3_tokens *tok, const void *x_in,
                           void *x_out, void *scratch) {
    gemma3_acts s;
    gemma3_acts_layout(&s, scratch, cfg, lora, tok->B * tok->T, mg_dtype_size(be->act_dtype), true);
    gemma3_layer(be, cfg, &w->layers[l], lora, l, tok, &s, x_in, x_out);
}
