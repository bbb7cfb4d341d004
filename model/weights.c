/* Checkpoint tensor names -> (component, layer, module) -> slots of mg_weights, with the shape
 * each slot must have under the config. One table (expected_tensors) drives binding and the
 * parameter count, so the two cannot disagree. */
#include "model/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/binding_report.h"

typedef struct {
    mg_component comp;
    int layer;                 /* -1 outside the layer stacks */
    const char *module;        /* canonical (Hub) module name after the layer prefix */
    int ndim;
    int64_t shape[4];
    const mg_st_tensor **slot; /* where the tensor goes in mg_weights; NULL when only counting */
    const mg_st_tensor *found;
} expected;

typedef struct {
    expected *e; /* NULL when only counting */
    int n;
} table;

static void add(table *t, mg_component comp, int layer, const char *module, const mg_st_tensor **slot, int ndim,
                int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    if (t->e) t->e[t->n] = (expected){ comp, layer, module, ndim, { d0, d1, d2, d3 }, slot, NULL };
    t->n++;
}
#define ADD1(comp, layer, module, slot, a) add(t, comp, layer, module, slot, 1, a, 0, 0, 0)
#define ADD2(comp, layer, module, slot, a, b) add(t, comp, layer, module, slot, 2, a, b, 0, 0)

/* The 883 tensors of MedGemma-4B (spec/model.md §2), generalised to any config. w may be NULL. */
static void expected_tensors(const mg_config *c, mg_weights *w, table *t) {
    const mg_component V = MG_COMP_VISION, T = MG_COMP_TEXT, P = MG_COMP_PROJECTOR;
    const int64_t Cv = c->v_hidden, Fv = c->v_intermediate, Pp = c->patch_size;
    const int64_t Np = (int64_t)(c->image_size / c->patch_size) * (c->image_size / c->patch_size);
    const int64_t C = c->hidden, F = c->intermediate, D = c->head_dim, HD = (int64_t)c->n_heads * D,
                  KD = (int64_t)c->n_kv_heads * D;
#define S(field) (w ? &w->field : NULL)
    add(t, V, -1, "embeddings.patch_embedding.weight", S(patch_w), 4, Cv, 3, Pp, Pp);
    ADD1(V, -1, "embeddings.patch_embedding.bias", S(patch_b), Cv);
    ADD2(V, -1, "embeddings.position_embedding.weight", S(pos_emb), Np, Cv);
    for (int l = 0; l < c->v_layers; l++) {
#define L(field) (w ? &w->vision[l].field : NULL)
        ADD1(V, l, "layer_norm1.weight", L(ln1_w), Cv);
        ADD1(V, l, "layer_norm1.bias", L(ln1_b), Cv);
        ADD2(V, l, "self_attn.q_proj.weight", L(q_w), Cv, Cv);
        ADD1(V, l, "self_attn.q_proj.bias", L(q_b), Cv);
        ADD2(V, l, "self_attn.k_proj.weight", L(k_w), Cv, Cv);
        ADD1(V, l, "self_attn.k_proj.bias", L(k_b), Cv);
        ADD2(V, l, "self_attn.v_proj.weight", L(v_w), Cv, Cv);
        ADD1(V, l, "self_attn.v_proj.bias", L(v_b), Cv);
        ADD2(V, l, "self_attn.out_proj.weight", L(o_w), Cv, Cv);
        ADD1(V, l, "self_attn.out_proj.bias", L(o_b), Cv);
        ADD1(V, l, "layer_norm2.weight", L(ln2_w), Cv);
        ADD1(V, l, "layer_norm2.bias", L(ln2_b), Cv);
        ADD2(V, l, "mlp.fc1.weight", L(fc1_w), Fv, Cv);
        ADD1(V, l, "mlp.fc1.bias", L(fc1_b), Fv);
        ADD2(V, l, "mlp.fc2.weight", L(fc2_w), Cv, Fv);
        ADD1(V, l, "mlp.fc2.bias", L(fc2_b), Cv);
#undef L
    }
    ADD1(V, -1, "post_layernorm.weight", S(post_ln_w), Cv);
    ADD1(V, -1, "post_layernorm.bias", S(post_ln_b), Cv);
    ADD1(P, -1, "mm_soft_emb_norm.weight", S(mm_norm), Cv);
    ADD2(P, -1, "mm_input_projection_weight", S(mm_proj), Cv, C);
    ADD2(T, -1, "embed_tokens.weight", S(embed), c->vocab, C);
    for (int l = 0; l < c->n_layers; l++) {
#define L(field) (w ? &w->text[l].field : NULL)
        ADD1(T, l, "input_layernorm.weight", L(input_norm), C);
        ADD2(T, l, "self_attn.q_proj.weight", L(q_w), HD, C);
        ADD2(T, l, "self_attn.k_proj.weight", L(k_w), KD, C);
        ADD2(T, l, "self_attn.v_proj.weight", L(v_w), KD, C);
        ADD2(T, l, "self_attn.o_proj.weight", L(o_w), C, HD);
        ADD1(T, l, "self_attn.q_norm.weight", L(q_norm), D);
        ADD1(T, l, "self_attn.k_norm.weight", L(k_norm), D);
        ADD1(T, l, "post_attention_layernorm.weight", L(post_attn_norm), C);
        ADD1(T, l, "pre_feedforward_layernorm.weight", L(pre_ffw_norm), C);
        ADD1(T, l, "post_feedforward_layernorm.weight", L(post_ffw_norm), C);
        ADD2(T, l, "mlp.gate_proj.weight", L(gate_w), F, C);
        ADD2(T, l, "mlp.up_proj.weight", L(up_w), F, C);
        ADD2(T, l, "mlp.down_proj.weight", L(down_w), C, F);
#undef L
    }
    ADD1(T, -1, "norm.weight", S(final_norm), C);
#undef S
}

void mg_param_counts(const mg_config *cfg, mg_param_count *out) {
    table t = { NULL, 0 };
    expected_tensors(cfg, NULL, &t);
    t.e = malloc((size_t)t.n * sizeof *t.e);
    memset(out, 0, sizeof *out);
    if (!t.e) return;
    t.n = 0;
    expected_tensors(cfg, NULL, &t);
    for (int i = 0; i < t.n; i++) {
        int64_t n = 1;
        for (int d = 0; d < t.e[i].ndim; d++) n *= t.e[i].shape[d];
        *(t.e[i].comp == MG_COMP_TEXT ? &out->text : t.e[i].comp == MG_COMP_VISION ? &out->vision : &out->projector) += n;
    }
    out->total = out->text + out->vision + out->projector;
    free(t.e);
}

/* ---- names ----------------------------------------------------------------------------------- */

static const struct {
    const char *prefix;
    mg_component comp;
} PREFIXES[] = {
    { "language_model.model.", MG_COMP_TEXT },                /* Hub, 4.50-4.51 in memory, 5.x save */
    { "model.language_model.", MG_COMP_TEXT },                /* in memory 4.52+ / 5.x */
    { "vision_tower.vision_model.", MG_COMP_VISION },         /* Hub */
    { "model.vision_tower.vision_model.", MG_COMP_VISION },   /* in memory 4.52-4.57 */
    { "vision_tower.", MG_COMP_VISION },                      /* 5.x save_pretrained */
    { "model.vision_tower.", MG_COMP_VISION },                /* in memory 5.x */
    { "multi_modal_projector.", MG_COMP_PROJECTOR },          /* Hub */
    { "model.multi_modal_projector.", MG_COMP_PROJECTOR },    /* in memory 4.52+ */
};

int mg_parse_tensor_name(const char *name, mg_component *comp, int *layer, char *module, int module_cap) {
    const char *peft = "base_model.model."; /* PEFT adapters wrap the in-memory names */
    if (!strncmp(name, peft, strlen(peft))) name += strlen(peft);
    const char *rest = NULL;
    if (!strcmp(name, "lm_head.weight") || !strcmp(name, "language_model.lm_head.weight")) {
        *comp = MG_COMP_TEXT;
        rest = "lm_head.weight";
    }
    for (size_t i = 0; !rest && i < sizeof PREFIXES / sizeof PREFIXES[0]; i++) {
        size_t n = strlen(PREFIXES[i].prefix);
        if (!strncmp(name, PREFIXES[i].prefix, n)) {
            *comp = PREFIXES[i].comp;
            rest = name + n;
        }
    }
    if (!rest) return 0;
    /* "layers.N." (text) or "encoder.layers.N." (vision) */
    const char *stack = *comp == MG_COMP_TEXT ? "layers." : *comp == MG_COMP_VISION ? "encoder.layers." : NULL;
    *layer = -1;
    if (stack && !strncmp(rest, stack, strlen(stack))) {
        const char *p = rest + strlen(stack);
        long v = 0;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9' && v < MG_MAX_LAYERS * 16) v = v * 10 + (*p++ - '0');
        if (*p != '.') return 0;
        *layer = (int)v;
        rest = p + 1;
    }
    if (!*rest || (int)strlen(rest) >= module_cap) return 0;
    strcpy(module, rest);
    return 1;
}

/* ---- binding --------------------------------------------------------------------------------- */

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "(");
    for (int d = 0; d < ndim && n < cap; d++) n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, ")");
}

static int same_shape(const mg_st_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return 0;
    return 1;
}

static const char *comp_prefix(mg_component c) {
    return c == MG_COMP_TEXT ? "language_model.model." : c == MG_COMP_VISION ? "vision_tower.vision_model." : "multi_modal_projector.";
}

/* `where` names the shard when there are several, "" otherwise. */
static void check_tensor(const mg_config *cfg, table *t, const mg_st_tensor *x, const char *where, mg_binding_report *p) {
    mg_component comp;
    int layer;
    char module[160], want[96], got[96];
    shape_str(got, sizeof got, x->ndim, x->shape);
    if (!mg_parse_tensor_name(x->name, &comp, &layer, module, sizeof module)) {
        mg_report_note(p, &p->unexpected, "unexpected  %s %s%s", x->name, got, where);
        return;
    }
    if (comp == MG_COMP_TEXT && layer < 0 && !strcmp(module, "lm_head.weight")) {
        const int64_t head[2] = { cfg->vocab, cfg->hidden };  /* tied: accepted and ignored when it fits */
        shape_str(want, sizeof want, 2, head);
        if (!same_shape(x, 2, head)) mg_report_note(p, &p->shape, "wrong shape %s %s, want %s (tied head)", x->name, got, want);
        return;
    }
    if (comp == MG_COMP_VISION && layer < 0 && cfg->v_has_head && !strncmp(module, "head.", 5)) return;
    for (int i = 0; i < t->n; i++) {
        expected *e = &t->e[i];
        if (e->comp != comp || e->layer != layer || strcmp(e->module, module)) continue;
        shape_str(want, sizeof want, e->ndim, e->shape);
        if (e->found)
            mg_report_note(p, &p->duplicated, "duplicated  %s and %s (same tensor under two names)", e->found->name, x->name);
        else if (!same_shape(x, e->ndim, e->shape))
            mg_report_note(p, &p->shape, "wrong shape %s %s, want %s", x->name, got, want);
        e->found = x;
        return;
    }
    mg_report_note(p, &p->unexpected, "unexpected  %s %s%s", x->name, got, where);
}

mg_status mg_weights_bind(const mg_checkpoint *ck, const mg_config *cfg, mg_weights *w) {
    memset(w, 0, sizeof *w);
    table t = { NULL, 0 };
    expected_tensors(cfg, NULL, &t);
    t.e = calloc((size_t)t.n, sizeof *t.e);
    w->vision = calloc((size_t)cfg->v_layers, sizeof *w->vision);
    w->text = calloc((size_t)cfg->n_layers, sizeof *w->text);
    mg_binding_report *p = calloc(1, sizeof *p);
    if (!t.e || !w->vision || !w->text || !p) {
        free(t.e);
        free(p);
        mg_weights_free(w);
        return mg_fail(MG_ERR_OOM, NULL, "out of memory binding weights");
    }
    t.n = 0;
    expected_tensors(cfg, w, &t);
    for (int f = 0; f < ck->n_files; f++) {
        const char *base = strrchr(ck->files[f].path, '/');
        char where[128] = "";
        if (ck->n_files > 1) snprintf(where, sizeof where, " in %s", base ? base + 1 : ck->files[f].path);
        for (int i = 0; i < ck->files[f].n; i++) check_tensor(cfg, &t, &ck->files[f].tensors[i], where, p);
    }
    for (int i = 0; i < t.n; i++) {
        expected *e = &t.e[i];
        char want[96], layer[32] = "";
        if (e->found) continue;
        shape_str(want, sizeof want, e->ndim, e->shape);
        if (e->layer >= 0)
            snprintf(layer, sizeof layer, "%slayers.%d.", e->comp == MG_COMP_VISION ? "encoder." : "", e->layer);
        mg_report_note(p, &p->missing, "missing     %s%s%s %s", comp_prefix(e->comp), layer, e->module, want);
    }
    mg_status s = MG_OK;
    if (p->n) {
        char what[MG_PATH_MAX + 64];
        snprintf(what, sizeof what, "%s (%d tensor file(s))", cfg->dir[0] ? cfg->dir : ck->n_files ? ck->files[0].path : "checkpoint",
                 ck->n_files);
        s = mg_report_fail(p, "the weights do not match config.json: re-download the model directory, or check that "
                              "config.json belongs to these safetensors",
                           what, "binding the tensors to the config");
        mg_weights_free(w);
    } else {
        for (int i = 0; i < t.n; i++) *t.e[i].slot = t.e[i].found;
    }
    free(t.e);
    free(p);
    return s;
}

void mg_weights_free(mg_weights *w) {
    free(w->vision);
    free(w->text);
    memset(w, 0, sizeof *w);
}
