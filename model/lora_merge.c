/* Merging a LoRA adapter into the loaded model weights (PEFT merge_and_unload, lora/layer.py
 * Linear.merge with safe_merge=False and get_delta_weight):
 *   delta = (B·A) · scale          (out, in), fp32 on the host (mg_lora_add_delta, shared with
 *   W     = W + delta              `medgem merge`), added in fp32, stored in the backend's dtype
 * Each weight is downloaded as fp32, updated and uploaded again, so the same code serves the fp32
 * CPU backend (exact) and a bf16 backend (one rounding to bf16, like PEFT's in-place add into a
 * bf16 weight). Merging is a one-off at load, so the host round trip costs nothing that matters. */
#include "model/lora.h"

#include <stdlib.h>

/* The device address of the (out, in) weight of a Linear in the model's arena. The model stores
 * q_proj, k_proj and v_proj fused as one weight (rows q, then k, then v) and gate_proj and up_proj
 * as one (2F, C) weight: k_proj, v_proj and up_proj start that many rows in. */
static void *linear_weight(const mg_model *m, const mg_lora_module *mod) {
    const mg_config *cfg = &m->cfg;
    const size_t es = mg_dtype_size(m->be->act_dtype);
    if (mod->comp == MG_COMP_VISION) {
        const mg_siglip_layer *l = &m->vision.layers[mod->layer];
        const size_t qkv_part = (size_t)cfg->v_hidden * cfg->v_hidden * es; /* one (Cv, Cv) projection */
        char *qkv = l->qkv_w;
        void *const w[MG_LORA_N_KINDS] = { qkv, qkv + qkv_part, qkv + 2 * qkv_part, l->o_w, NULL, NULL, NULL,
                                           l->fc1_w, l->fc2_w };
        return w[mod->kind];
    }
    const mg_gemma3_layer *l = &m->text.layers[mod->layer];
    const size_t q_rows = (size_t)cfg->n_heads * cfg->head_dim, kv_rows = (size_t)cfg->n_kv_heads * cfg->head_dim;
    const size_t row = (size_t)cfg->hidden * es; /* one row of a (out, C) weight */
    const size_t up_offset = (size_t)cfg->intermediate * row;
    char *qkv = l->qkv_w;
    void *const w[MG_LORA_N_KINDS] = { qkv, qkv + q_rows * row, qkv + (q_rows + kv_rows) * row, l->o_w,
                                       l->gate_up_w, (char *)l->gate_up_w + up_offset, l->down_w, NULL, NULL };
    return w[mod->kind];
}

mg_status mg_model_merge_lora(mg_model *m, const mg_lora *lora) {
    if (m->adapter_merged || m->lora)
        return mg_fail(MG_ERR_ARG, "reload the base model to merge another adapter",
                       "the model already carries an adapter (%s): merging would add LoRA on top of it",
                       m->adapter_merged ? "merged" : "unmerged");
    /* check every module against this model before touching any weight */
    for (int i = 0; i < lora->n; i++) {
        const mg_lora_module *mod = &lora->mods[i];
        const int layers = mod->comp == MG_COMP_TEXT ? m->cfg.n_layers : m->cfg.v_layers;
        int out, in;
        if (mod->layer < 0 || mod->layer >= layers || !mg_lora_linear_shape(&m->cfg, mod->comp, mod->kind, &out, &in) ||
            out != mod->out || in != mod->in)
            return mg_fail(MG_ERR_SHAPE, "load the adapter against the config of the model it is merged into",
                           "LoRA module %s layer %d %s (%d x %d) does not exist in this model",
                           mod->comp == MG_COMP_TEXT ? "text" : "vision", mod->layer,
                           mg_lora_module_name(mod->comp, mod->kind) ? mg_lora_module_name(mod->comp, mod->kind) : "?",
                           mod->out, mod->in);
    }
    const mg_backend *be = m->be;
    m->adapter_merged = true; /* from here the weights are no longer the base's, even if a copy fails */
    for (int i = 0; i < lora->n; i++) {
        const mg_lora_module *mod = &lora->mods[i];
        const int64_t n = (int64_t)mod->out * mod->in;
        float *w = malloc((size_t)n * sizeof(float));
        if (!w) return mg_fail(MG_ERR_OOM, NULL, "merging LoRA into a (%d, %d) weight", mod->out, mod->in);
        void *dev = linear_weight(m, mod);
        be->download(be->ctx, w, dev, n);
        mg_lora_add_delta(mod, w);
        be->upload(be->ctx, dev, w, MG_F32, n);
        free(w);
    }
    return be->sync(be->ctx); /* a failed download or upload */
}

void mg_lora_add_delta(const mg_lora_module *mod, float *w) {
    enum { BLOCK = 256 }; /* columns of a row of B·A summed at once, on the stack */
    const int64_t in = mod->in, r = mod->r;
    const float scale = mod->scale;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < mod->out; o++) {
        const float *b = mod->B + o * r;
        float *wo = w + o * in;
        for (int64_t c0 = 0; c0 < in; c0 += BLOCK) {
            const int64_t n = in - c0 < BLOCK ? in - c0 : BLOCK;
            float ba[BLOCK]; /* row o of B·A, columns c0.., then the scaling, then the add */
            for (int64_t c = 0; c < n; c++) ba[c] = 0.0f;
            for (int64_t k = 0; k < r; k++) {
                const float bk = b[k], *a = mod->A + k * in + c0;
                for (int64_t c = 0; c < n; c++) ba[c] += bk * a[c];
            }
            for (int64_t c = 0; c < n; c++) wo[c0 + c] += ba[c] * scale;
        }
    }
}

mg_status mg_model_apply_adapter(mg_model *m, const char *dir) {
    mg_lora lora;
    MG_TRY(mg_lora_load(dir, &m->cfg, &lora));
    mg_status s = mg_model_merge_lora(m, &lora);
    mg_lora_free(&lora);
    return s;
}
