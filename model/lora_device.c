/* The adapter on the backend (model/lora_device.h). */
#include "model/lora_device.h"

#include <stdlib.h>
#include <string.h>

#include "engine/dropout.h"

mg_status mg_lora_device_create(mg_lora_device *d, const mg_backend *be, const mg_config *cfg, const mg_lora *lora,
                                bool optimizer) {
    memset(d, 0, sizeof *d);
    d->be = be, d->host = lora, d->n_params = lora->n_params;
    const int layers[2] = { cfg->n_layers, cfg->v_layers };
    for (int c = 0; c < 2; c++) {
        d->index[c] = malloc((size_t)layers[c] * MG_LORA_N_KINDS * sizeof(int));
        if (!d->index[c]) {
            mg_lora_device_free(d);
            return mg_fail(MG_ERR_OOM, NULL, "LoRA module index");
        }
        for (int i = 0; i < layers[c] * MG_LORA_N_KINDS; i++) d->index[c][i] = -1;
    }
    for (int i = 0; i < lora->n; i++) {
        const mg_lora_module *mod = &lora->mods[i];
        const int c = mod->comp == MG_COMP_TEXT ? 0 : 1;
        int out, in;
        if (mod->comp == MG_COMP_PROJECTOR || mod->layer < 0 || mod->layer >= layers[c] ||
            !mg_lora_linear_shape(cfg, mod->comp, mod->kind, &out, &in) || out != mod->out || in != mod->in) {
            mg_lora_device_free(d);
            return mg_fail(MG_ERR_SHAPE, "use an adapter made for this model (same config)",
                           "LoRA module %s layer %d %s (%d x %d) does not exist in this model",
                           c == 0 ? "text" : "vision", mod->layer,
                           mg_lora_module_name(mod->comp, mod->kind) ? mg_lora_module_name(mod->comp, mod->kind) : "?",
                           mod->out, mod->in);
        }
        d->index[c][mod->layer * MG_LORA_N_KINDS + mod->kind] = i;
        d->r_max = mod->r > d->r_max ? mod->r : d->r_max;
    }
    /* one block: params, grads, [m, v], act (fp32 parts first keeps every part 256-byte aligned) */
    const size_t f32 = ((size_t)d->n_params * sizeof(float) + 255) / 256 * 256;
    const size_t act = (size_t)d->n_params * mg_dtype_size(be->act_dtype);
    const int n_f32 = optimizer ? 4 : 2;
    d->block = be->alloc(be->ctx, n_f32 * f32 + 256 + act);
    if (!d->block) {
        mg_lora_device_free(d);
        return mg_fail(MG_ERR_OOM, "use a smaller --lora-r or free device memory",
                       "LoRA parameters, gradients and optimizer state: %.1f MiB on %s",
                       (double)(n_f32 * f32 + 256 + act) / (1 << 20), be->name);
    }
    char *p = d->block;
    d->params = (float *)p, p += f32;
    d->grads = (float *)p, p += f32;
    if (optimizer) d->m = (float *)p, p += f32, d->v = (float *)p, p += f32;
    d->scratch = (float *)p, p += 256;
    d->act = p;
    be->zero(be->ctx, d->grads, (size_t)d->n_params * sizeof(float));
    if (optimizer) {
        be->zero(be->ctx, d->m, (size_t)d->n_params * sizeof(float));
        be->zero(be->ctx, d->v, (size_t)d->n_params * sizeof(float));
    }
    mg_lora_device_upload(d, lora->params, NULL, NULL);
    mg_status s = be->sync(be->ctx);
    if (s != MG_OK) mg_lora_device_free(d);
    return s;
}

void mg_lora_device_free(mg_lora_device *d) {
    if (d->be && d->block) d->be->free(d->be->ctx, d->block);
    free(d->index[0]);
    free(d->index[1]);
    memset(d, 0, sizeof *d);
}

const mg_lora_module *mg_lora_device_module(const mg_lora_device *d, mg_component comp, int layer, mg_lora_kind kind,
                                            const void **A, const void **B) {
    if (!d || comp == MG_COMP_PROJECTOR) return NULL;
    const int i = d->index[comp == MG_COMP_TEXT ? 0 : 1][layer * MG_LORA_N_KINDS + kind];
    if (i < 0) return NULL;
    const mg_lora_module *mod = &d->host->mods[i];
    const size_t es = mg_dtype_size(d->be->act_dtype);
    *A = (const char *)d->act + (size_t)(mod->A - d->host->params) * es;
    *B = (const char *)d->act + (size_t)(mod->B - d->host->params) * es;
    return mod;
}

mg_status mg_lora_device_download(const mg_lora_device *d, float *params, float *m, float *v) {
    const size_t bytes = (size_t)d->n_params * sizeof(float);
    d->be->copy_out(d->be->ctx, params, d->params, bytes);
    if (m && d->m) d->be->copy_out(d->be->ctx, m, d->m, bytes);
    if (v && d->v) d->be->copy_out(d->be->ctx, v, d->v, bytes);
    return d->be->sync(d->be->ctx);
}

void mg_lora_device_upload(mg_lora_device *d, const float *params, const float *m, const float *v) {
    const size_t bytes = (size_t)d->n_params * sizeof(float);
    d->be->copy_in(d->be->ctx, d->params, params, bytes);
    d->be->upload(d->be->ctx, d->act, params, MG_F32, d->n_params);
    if (m && d->m) d->be->copy_in(d->be->ctx, d->m, m, bytes);
    if (v && d->v) d->be->copy_in(d->be->ctx, d->v, v, bytes);
}

size_t mg_lora_acts_layout(mg_lora_acts *a, char *base, const mg_lora_device *d, const mg_config *cfg,
                           mg_component comp, int64_t M, size_t esize) {
    size_t used = 0;
    memset(a, 0, sizeof *a);
    if (!d) return 0;
    for (int k = 0; k < MG_LORA_N_KINDS; k++) {
        int out, in;
        if (!mg_lora_linear_shape(cfg, comp, k, &out, &in)) continue;
        a->u[k] = mg_carve(base, &used, M * d->r_max, esize);
    }
    return used;
}

void mg_lora_apply(const mg_backend *be, const mg_lora_device *d, const mg_lora_acts *a, mg_component comp, int layer,
                   mg_lora_kind kind, void *y, int64_t ldy, const void *x, int64_t M) {
    const void *A, *B;
    const mg_lora_module *mod = mg_lora_device_module(d, comp, layer, kind, &A, &B);
    if (!mod) return;
    /* a seed per (micro-batch, module): independent masks like PEFT's one nn.Dropout per module,
     * and the same mask when the layer is recomputed for its backward */
    const uint64_t seed = mg_hash64(d->seed ^ ((uint64_t)comp << 48 | (uint64_t)layer << 16 | (uint64_t)kind));
    const mg_lora_args args = { .M = M, .K = mod->in, .r = mod->r, .N = mod->out, .ldy = ldy, .scale = mod->scale,
                                .dropout = d->dropout, .seed = seed };
    be->lora_forward(be->ctx, y, a->u[kind], x, A, B, &args);
}
