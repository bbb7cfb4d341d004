/* SigLIP vision tower forward, top to bottom (modeling_siglip.py names in the comments). */
#include "model/siglip.h"

#include "model/lora_device.h"

#include <math.h>

void mg_siglip_load(mg_weight_arena *a, const mg_config *cfg, const mg_weights *w, mg_siglip_weights *sw) {
    sw->patch_w = mg_arena_put(a, w->patch_w);
    sw->patch_b = mg_arena_put(a, w->patch_b);
    sw->pos_emb = mg_arena_put(a, w->pos_emb);
    for (int l = 0; l < cfg->v_layers; l++) {
        const mg_vision_layer_weights *src = &w->vision[l];
        mg_siglip_layer *d = &sw->layers[l];
        d->ln1_w = mg_arena_put(a, src->ln1_w), d->ln1_b = mg_arena_put(a, src->ln1_b);
        const mg_st_tensor *qkv_w[3] = { src->q_w, src->k_w, src->v_w }, *qkv_b[3] = { src->q_b, src->k_b, src->v_b };
        d->qkv_w = mg_arena_put_cat(a, qkv_w, 3), d->qkv_b = mg_arena_put_cat(a, qkv_b, 3);
        d->o_w = mg_arena_put(a, src->o_w), d->o_b = mg_arena_put(a, src->o_b);
        d->ln2_w = mg_arena_put(a, src->ln2_w), d->ln2_b = mg_arena_put(a, src->ln2_b);
        d->fc1_w = mg_arena_put(a, src->fc1_w), d->fc1_b = mg_arena_put(a, src->fc1_b);
        d->fc2_w = mg_arena_put(a, src->fc2_w), d->fc2_b = mg_arena_put(a, src->fc2_b);
    }
    sw->post_ln_w = mg_arena_put(a, w->post_ln_w);
    sw->post_ln_b = mg_arena_put(a, w->post_ln_b);
}

/* The tower's activations for M = N*P rows, laid out in the caller's scratch. For inference the
 * residual stream is updated in place and the two norms share xn; for training (the tape) every
 * tensor has its own buffer. pre (fc1's output before the GELU) exists when fc1 is not fused with
 * its activation: in training, or when an unmerged LoRA adds to fc1. */
typedef struct {
    void *cols;      /* (M, 3*p*p) im2col of the pixels */
    void *xn1, *xn2; /* (M, Cv) layer_norm1, layer_norm2 outputs */
    void *qkv;       /* (M, 3*Cv) the fused q|k|v projection */
    void *q, *k, *v; /* (M, Cv) = (N, P, Hv, Dv) */
    void *att;       /* (M, Cv) attention output before out_proj */
    float *lse2;     /* (N, Hv, P) attention's log-sum-exp for its backward; NULL: inference */
    void *mid;       /* (M, Cv) residual stream after attention; NULL: in place (inference) */
    void *pre;       /* (M, Fv) fc1 output before the activation; NULL: fused fc1 + GELU */
    void *h;         /* (M, Fv) gelu_tanh(fc1 output) */
    mg_lora_acts lora;
} siglip_acts;

/* Lays the activations out from base (NULL: only sizes them); returns the bytes needed. */
static size_t siglip_acts_layout(siglip_acts *s, char *base, const mg_config *cfg, const mg_lora_device *lora,
                                 int64_t M, size_t esize, bool training) {
    size_t used = 0;
    const int64_t Cv = cfg->v_hidden;
    s->cols = training ? NULL : mg_carve(base, &used, M * 3 * cfg->patch_size * cfg->patch_size, esize);
    s->xn1 = mg_carve(base, &used, M * Cv, esize);
    s->xn2 = training ? mg_carve(base, &used, M * Cv, esize) : s->xn1;
    s->qkv = mg_carve(base, &used, M * 3 * Cv, esize);
    s->q = mg_carve(base, &used, M * Cv, esize);
    s->k = mg_carve(base, &used, M * Cv, esize);
    s->v = mg_carve(base, &used, M * Cv, esize);
    s->att = mg_carve(base, &used, M * Cv, esize);
    s->lse2 = training ? mg_carve(base, &used, M * cfg->v_heads, sizeof(float)) : NULL;
    s->mid = training ? mg_carve(base, &used, M * Cv, esize) : NULL;
    s->pre = training || lora ? mg_carve(base, &used, M * cfg->v_intermediate, esize) : NULL;
    s->h = mg_carve(base, &used, M * cfg->v_intermediate, esize);
    const size_t l = mg_lora_acts_layout(&s->lora, base ? base + used : NULL, lora, cfg, MG_COMP_VISION, M, esize);
    return used + l;
}

size_t mg_siglip_scratch_bytes(const mg_config *cfg, const mg_lora_device *lora, int64_t N, size_t esize) {
    const int G = cfg->image_size / cfg->patch_size;
    siglip_acts s;
    return siglip_acts_layout(&s, NULL, cfg, lora, N * G * G, esize, false);
}

size_t mg_siglip_layer_train_bytes(const mg_config *cfg, const mg_lora_device *lora, int64_t N, size_t esize) {
    const int G = cfg->image_size / cfg->patch_size;
    siglip_acts s;
    return siglip_acts_layout(&s, NULL, cfg, lora, N * G * G, esize, true);
}

/* Encoder layer l (SiglipEncoderLayer.forward): x_out = layer(x_in); in place (x_out == x_in) when
 * s->mid is NULL. */
static void siglip_layer(const mg_backend *be, const mg_config *cfg, const mg_siglip_layer *lw,
                         const mg_lora_device *lora, int l, const siglip_acts *s, int64_t N, const void *x_in,
                         void *x_out) {
    const int G = cfg->image_size / cfg->patch_size, Cv = cfg->v_hidden, Fv = cfg->v_intermediate;
    const int64_t P = (int64_t)G * G, M = N * P;
    const size_t es = mg_dtype_size(be->act_dtype);
    const mg_attention_args attn = { .B = N, .T = P, .H = cfg->v_heads, .Hkv = cfg->v_heads, .D = cfg->v_head_dim,
                                     .scale = 1.0f / sqrtf((float)cfg->v_head_dim), .causal = false,
                                     .lse2 = s->lse2 };
    const mg_qkv_args split = { .B = N, .T = P, .H = cfg->v_heads, .Hkv = cfg->v_heads, .D = cfg->v_head_dim,
                                .norm_rope = false };
    void *mid = s->mid ? s->mid : x_out;
    char *qkv = s->qkv;
    /* layer_norm1 */
    be->layernorm_forward(be->ctx, s->xn1, x_in, lw->ln1_w, lw->ln1_b, M, Cv, cfg->v_eps);
    /* self_attn: q/k/v_proj as one GEMM (+ each one's LoRA) split into q, k, v; attention with no mask */
    be->linear_forward(be->ctx, qkv, s->xn1, lw->qkv_w, lw->qkv_b, M, Cv, 3 * Cv);
    for (int k = MG_LORA_Q; k <= MG_LORA_V; k++)
        mg_lora_apply(be, lora, &s->lora, MG_COMP_VISION, l, k, qkv + (size_t)k * Cv * es, 3 * Cv, s->xn1, M);
    be->qk_norm_rope_forward(be->ctx, s->q, s->k, s->v, qkv, &split);
    be->attention_forward(be->ctx, s->att, s->q, s->k, s->v, &attn);
    /* out_proj, and hidden_states = residual + attn in the same GEMM, then out_proj's LoRA */
    be->linear_residual_forward(be->ctx, mid, s->att, lw->o_w, lw->o_b, x_in, M, Cv, Cv);
    mg_lora_apply(be, lora, &s->lora, MG_COMP_VISION, l, MG_LORA_O, mid, Cv, s->att, M);
    /* layer_norm2, mlp: fc2(gelu_tanh(fc1(.))); fc1 and the activation in one GEMM unless a LoRA
     * must be added between them or the tape needs the pre-activation */
    be->layernorm_forward(be->ctx, s->xn2, mid, lw->ln2_w, lw->ln2_b, M, Cv, cfg->v_eps);
    if (s->pre) {
        be->linear_forward(be->ctx, s->pre, s->xn2, lw->fc1_w, lw->fc1_b, M, Cv, Fv);
        mg_lora_apply(be, lora, &s->lora, MG_COMP_VISION, l, MG_LORA_FC1, s->pre, Fv, s->xn2, M);
        be->gelu_forward(be->ctx, s->h, s->pre, M * Fv);
    } else {
        be->linear_gelu_forward(be->ctx, s->h, s->xn2, lw->fc1_w, lw->fc1_b, M, Cv, Fv);
    }
    /* fc2, and hidden_states = residual + mlp in the same GEMM, then fc2's LoRA */
    be->linear_residual_forward(be->ctx, x_out, s->h, lw->fc2_w, lw->fc2_b, mid, M, Fv, Cv);
    mg_lora_apply(be, lora, &s->lora, MG_COMP_VISION, l, MG_LORA_FC2, x_out, Cv, s->h, M);
}

void mg_siglip_embed(const mg_backend *be, const mg_config *cfg, const mg_siglip_weights *w, void *x,
                     const void *pixels, int64_t N, void *cols) {
    const int p = cfg->patch_size, S = cfg->image_size, G = S / p, Cv = cfg->v_hidden;
    const int64_t P = (int64_t)G * G;
    /* embeddings.patch_embedding: Conv2d(3, Cv, p, stride p) as im2col + linear */
    be->im2col_forward(be->ctx, cols, pixels, N, S, p);
    be->linear_forward(be->ctx, x, cols, w->patch_w, w->patch_b, N * P, 3 * p * p, Cv);
    /* embeddings.position_embedding: + pos_emb[patch] */
    be->add_rows_forward(be->ctx, x, w->pos_emb, N, P, Cv);
}

void mg_siglip_forward(const mg_backend *be, const mg_config *cfg, const mg_siglip_weights *w,
                       const mg_lora_device *lora, void *out, const void *pixels, int64_t N, void *scratch) {
    const int G = cfg->image_size / cfg->patch_size;
    const int64_t M = N * G * G;
    siglip_acts s;
    siglip_acts_layout(&s, scratch, cfg, lora, M, mg_dtype_size(be->act_dtype), false);
    void *x = out; /* (N, P, Cv) the residual stream lives in the output buffer */
    mg_siglip_embed(be, cfg, w, x, pixels, N, s.cols);
    for (int l = 0; l < cfg->v_layers; l++) siglip_layer(be, cfg, &w->layers[l], lora, l, &s, N, x, x);
    /* post_layernorm */
    be->layernorm_forward(be->ctx, x, x, w->post_ln_w, w->post_ln_b, M, cfg->v_hidden, cfg->v_eps);
}

void mg_siglip_layer_train(const mg_backend *be, const mg_config *cfg, const mg_siglip_weights *w,
                           const mg_lora_device *lora, int l, int64_t N, const void *x_in, void *x_out, void *scratch) {
    const int G = cfg->image_size / cfg->patch_size;
    siglip_acts s;
    siglip_acts_layout(&s, scratch, cfg, lora, N * G * G, mg_dtype_size(be->act_dtype), true);
    siglip_layer(be, cfg, &w->layers[l], lora, l, &s, N, x_in, x_out);
}
