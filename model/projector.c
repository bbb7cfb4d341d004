/* Multimodal projector forward (modeling_gemma3.py Gemma3MultiModalProjector). */
#include "model/projector.h"

#include <math.h>

void mg_projector_load(mg_weight_arena *a, const mg_weights *w, mg_projector_weights *pw) {
    pw->norm_w = mg_arena_put(a, w->mm_norm);
    pw->proj_w = mg_arena_put_transposed(a, w->mm_proj);
}

size_t mg_projector_scratch_bytes(const mg_config *cfg, int64_t N, size_t esize) {
    size_t used = 0;
    for (int i = 0; i < 2; i++) mg_carve(NULL, &used, N * cfg->mm_tokens_per_image * cfg->v_hidden, esize);
    return used;
}

void mg_projector_forward(const mg_backend *be, const mg_config *cfg, const mg_projector_weights *w, void *out,
                          const void *x, int64_t N, void *scratch) {
    const int G = cfg->image_size / cfg->patch_size;                  /* patch grid side (64) */
    const int g = (int)lround(sqrt((double)cfg->mm_tokens_per_image)); /* pooled side (16) */
    const int k = G / g, Cv = cfg->v_hidden;
    const int64_t M = N * g * g;
    /* (N, mm, Cv) each, separate so that a tape can differentiate the norm */
    size_t used = 0;
    void *pooled = mg_carve(scratch, &used, M * Cv, mg_dtype_size(be->act_dtype));
    void *normed = mg_carve(scratch, &used, M * Cv, mg_dtype_size(be->act_dtype));
    /* avg_pool: AvgPool2d(kernel k, stride k) on the (Cv, G, G) view */
    be->avgpool_forward(be->ctx, pooled, x, N, G, k, Cv);
    /* mm_soft_emb_norm: Gemma RMSNorm with the vision eps */
    be->rmsnorm_forward(be->ctx, normed, pooled, w->norm_w, M, Cv, cfg->v_eps);
    /* torch.matmul(normed, mm_input_projection_weight) */
    be->linear_forward(be->ctx, out, normed, w->proj_w, NULL, M, Cv, cfg->hidden);
}
