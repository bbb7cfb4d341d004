/* Binding checkpoint tensors to the model: every tensor name is parsed into (component, layer,
 * module) and checked against the shape the config implies. Accepted spellings: the Hub's
 * (language_model.model.*, vision_tower.vision_model.*, multi_modal_projector.*), what
 * transformers 5.x save_pretrained writes (vision_tower.encoder.* without vision_model), and the
 * in-memory names of 4.52+/5.x (model.language_model.*, model.vision_tower[.vision_model].*,
 * model.multi_modal_projector.*). The head is tied to embed_tokens. Missing, duplicated,
 * unexpected or wrong-shaped tensors are all listed in one error. Pointers are into the
 * checkpoint's mappings (no copies). */
#ifndef MG_WEIGHTS_H
#define MG_WEIGHTS_H

#include "engine/config.h"
#include "engine/safetensors.h"

typedef enum { MG_COMP_TEXT, MG_COMP_VISION, MG_COMP_PROJECTOR } mg_component;

/* Parses a checkpoint/adapter-style tensor name. layer is -1 for non-layer tensors; module is
 * the canonical rest after the layer prefix, e.g. "self_attn.q_proj.weight" or
 * "embed_tokens.weight". Returns 0 when the name is not a MedGemma tensor. The canonical module
 * strings are those of the Hub checkpoint. */
int mg_parse_tensor_name(const char *name, mg_component *comp, int *layer, char *module, int module_cap);

typedef struct {
    const mg_st_tensor *ln1_w, *ln1_b;        /* layer_norm1 (Cv) */
    const mg_st_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b; /* (Cv, Cv), (Cv); o = out_proj */
    const mg_st_tensor *ln2_w, *ln2_b;        /* layer_norm2 (Cv) */
    const mg_st_tensor *fc1_w, *fc1_b;        /* (Fv, Cv), (Fv) */
    const mg_st_tensor *fc2_w, *fc2_b;        /* (Cv, Fv), (Cv) */
} mg_vision_layer_weights;

typedef struct {
    const mg_st_tensor *input_norm;           /* (C) */
    const mg_st_tensor *q_w, *k_w, *v_w, *o_w;/* (H*D, C), (Hkv*D, C), (Hkv*D, C), (C, H*D) */
    const mg_st_tensor *q_norm, *k_norm;      /* (D) */
    const mg_st_tensor *post_attn_norm, *pre_ffw_norm, *post_ffw_norm; /* (C) */
    const mg_st_tensor *gate_w, *up_w;        /* (F, C) */
    const mg_st_tensor *down_w;               /* (C, F) */
} mg_text_layer_weights;

typedef struct {
    /* vision tower */
    const mg_st_tensor *patch_w, *patch_b;    /* (Cv, 3, P, P), (Cv) */
    const mg_st_tensor *pos_emb;              /* (num_patches, Cv) */
    mg_vision_layer_weights *vision;          /* [Lv] */
    const mg_st_tensor *post_ln_w, *post_ln_b;/* (Cv) */
    /* projector */
    const mg_st_tensor *mm_norm;              /* (Cv) */
    const mg_st_tensor *mm_proj;              /* (Cv, C): used as x @ W, no transpose */
    /* text decoder */
    const mg_st_tensor *embed;                /* (V, C), also the tied head */
    mg_text_layer_weights *text;              /* [L] */
    const mg_st_tensor *final_norm;           /* (C) */
} mg_weights;

/* Fills w with pointers to the checkpoint's tensors (w->vision and w->text are allocated here;
 * mg_weights_free releases them). A lm_head.weight is not expected (the head is tied); one of
 * shape (V, C) is accepted and ignored, any other shape is an error. SigLIP pooling-head tensors
 * (vision "head.*") are skipped when cfg->v_has_head, unexpected otherwise. */
mg_status mg_weights_bind(const mg_checkpoint *ck, const mg_config *cfg, mg_weights *w);
void mg_weights_free(mg_weights *w);

/* Parameter counts implied by the config (the tensors mg_weights_bind expects). */
typedef struct {
    int64_t text, vision, projector, total;
} mg_param_count;
void mg_param_counts(const mg_config *cfg, mg_param_count *out);

#endif
