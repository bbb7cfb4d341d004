/* SigLIP vision tower forward, top to bottom (modeling_siglip.py names in the comments). */
#include "model/siglip.h"

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

/* The tower's activations for M = N*P rows, laid out in the caller's scratch. */
typedef struct {
    void *cols;     /* (M, 3*p*p) im2col of the pixels */
    void *xn;       /* (M, Cv) layer-normed input of a block */
    void *qkv;      /* (M, 3*Cv) the fused q|k|v projection */
    void *q, *k, *v;/* (M, Cv) = (N, P, Hv, Dv) */
    void *att;      /* (M, Cv) attention output before out_proj */
    void *h;        /* (M, Fv) gelu_tanh(fc1 output) */
} siglip_acts;

/* Lays the activations out from base (NULL: only sizes them); returns the bytes needed. */
static size_t siglip_acts_layout(siglip_acts *s, char *base, const mg_config *cfg, int64_t M, size_t esize) {
    size_t used = 0;
    const int64_t Cv = cfg->v_hidden;
    s->cols = mg_carve(base, &used, M * 3 * cfg->patch_size * cfg->patch_size, esize);
    s->xn = mg_carve(base, &used, M * Cv, esize);
    s->qkv = mg_carve(base, &used, M * 3 * Cv, esize);
    s->q = mg_carve(base, &used, M * Cv, esize);
    s->k = mg_carve(base, &used, M * Cv, esize);
    s->v = mg_carve(base, &used, M * Cv, esize);
    s->att = mg_carve(base, &used, M * Cv, esize);
    s->h = mg_carve(base, &used, M * cfg->v_intermediate, esize);
    return used;
}

size_t mg_siglip_scratch_bytes(const mg_config *cfg, int64_t N, size_t esize) {
    const int G = cfg->image_size / cfg->patch_size;
    siglip_acts s;
    return siglip_acts_layout(&s, NULL, cfg, N * G * G, esize);
}

void mg_siglip_forward(const mg_backend *be, const mg_config *cfg, const mg_siglip_weights *w, void *out,
                       const void *pixels, int64_t N, void *scratch) {
    const int p = cfg->patch_size, S = cfg->image_size, G = S / p, Cv = cfg->v_hidden, Fv = cfg->v_intermediate;
    const int64_t P = (int64_t)G * G, M = N * P;
    siglip_acts s;
    siglip_acts_layout(&s, scratch, cfg, M, mg_dtype_size(be->act_dtype));
    void *x = out; /* (N, P, Cv) the residual stream lives in the output buffer */

    /* embeddings.patch_embedding: Conv2d(3, Cv, p, stride p) as im2col + linear */
    be->im2col_forward(be->ctx, s.cols, pixels, N, S, p);
    be->linear_forward(be->ctx, x, s.cols, w->patch_w, w->patch_b, M, 3 * p * p, Cv);
    /* embeddings.position_embedding: + pos_emb[patch] */
    be->add_rows_forward(be->ctx, x, w->pos_emb, N, P, Cv);

    const mg_attention_args attn = { .B = N, .T = P, .H = cfg->v_heads, .Hkv = cfg->v_heads, .D = cfg->v_head_dim,
                                     .scale = 1.0f / sqrtf((float)cfg->v_head_dim), .causal = false };
    const mg_qkv_args split = { .B = N, .T = P, .H = cfg->v_heads, .Hkv = cfg->v_heads, .D = cfg->v_head_dim,
                                .norm_rope = false };
    for (int l = 0; l < cfg->v_layers; l++) {
        const mg_siglip_layer *lw = &w->layers[l];
        /* layer_norm1 */
        be->layernorm_forward(be->ctx, s.xn, x, lw->ln1_w, lw->ln1_b, M, Cv, cfg->v_eps);
        /* self_attn: q/k/v_proj as one GEMM split into q, k, v; attention with no mask */
        be->linear_forward(be->ctx, s.qkv, s.xn, lw->qkv_w, lw->qkv_b, M, Cv, 3 * Cv);
        be->qk_norm_rope_forward(be->ctx, s.q, s.k, s.v, s.qkv, &split);
        be->attention_forward(be->ctx, s.att, s.q, s.k, s.v, &attn);
        /* out_proj, and hidden_states = residual + attn in the same GEMM (onto x in place) */
        be->linear_residual_forward(be->ctx, x, s.att, lw->o_w, lw->o_b, x, M, Cv, Cv);
        /* layer_norm2, mlp: fc2(gelu_tanh(fc1(.))), fc1 and the activation in one GEMM (its epilogue) */
        be->layernorm_forward(be->ctx, s.xn, x, lw->ln2_w, lw->ln2_b, M, Cv, cfg->v_eps);
        be->linear_gelu_forward(be->ctx, s.h, s.xn, lw->fc1_w, lw->fc1_b, M, Cv, Fv);
        /* fc2, and hidden_states = residual + mlp in the same GEMM (onto x in place) */
        be->linear_residual_forward(be->ctx, x, s.h, lw->fc2_w, lw->fc2_b, x, M, Fv, Cv);
    }
    /* post_layernorm */
    be->layernorm_forward(be->ctx, x, x, w->post_ln_w, w->post_ln_b, M, Cv, cfg->v_eps);
}
