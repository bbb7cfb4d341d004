/* The model configuration, read from a Hugging Face model directory's config.json (both the
 * transformers 4.5x form: rope_scaling, rope_local_base_freq, sliding_window_pattern; and the
 * 5.x form: rope_parameters, layer_types) plus generation_config.json for the eos ids.
 * Dimension letters used across medgem: C text hidden, L text layers, H query heads, Hkv kv heads,
 * D head dim, F MLP width, V vocab; Cv, Lv, Hv, Dv, Fv the same for the vision tower. */
#ifndef MG_CONFIG_H
#define MG_CONFIG_H

#include <stdbool.h>

#include "engine/status.h"

#define MG_MAX_LAYERS 256
#define MG_MAX_EOS 8
#define MG_PATH_MAX 4096

typedef struct {
    /* text decoder (Gemma 3) */
    int hidden;              /* C   (2560 for MedGemma-4B) */
    int n_layers;            /* L   (34) */
    int n_heads;             /* H   (8) */
    int n_kv_heads;          /* Hkv (4) */
    int head_dim;            /* D   (256) */
    int intermediate;        /* F   (10240) */
    int vocab;               /* V   (262208) */
    int sliding_window;      /* local layers see keys with 0 <= i-j < sliding_window (1024) */
    float rms_eps;           /* 1e-6 */
    float query_pre_attn_scalar; /* scores are scaled by query_pre_attn_scalar^-0.5 */
    float rope_theta_local;  /* 1e4 */
    float rope_theta_global; /* 1e6 */
    float rope_factor_global;/* linear scaling factor of the global layers (8); 1 = none */
    float rope_factor_local; /* 1 unless the config scales local layers too */
    bool layer_is_global[MG_MAX_LAYERS]; /* full attention (true) or sliding window (false) */

    /* vision tower (SigLIP) */
    int v_hidden;        /* Cv (1152) */
    int v_layers;        /* Lv (27) */
    int v_heads;         /* Hv (16) */
    int v_head_dim;      /* Dv = Cv / Hv (72) */
    int v_intermediate;  /* Fv (4304) */
    int image_size;      /* 896 */
    int patch_size;      /* 14 */
    float v_eps;         /* LayerNorm eps, also the projector RMSNorm eps (1e-6) */
    bool v_has_head;     /* vision_use_head (absent means true in transformers): SigLIP's pooling head
                          * exists in the checkpoint, but Gemma 3 never uses its output, so its tensors
                          * are skipped. MedGemma sets false. */

    /* multimodal glue and special ids */
    int mm_tokens_per_image; /* 256 soft tokens per image */
    int image_token_id;      /* <image_soft_token> 262144 */
    int boi_token_id;        /* <start_of_image> 255999 */
    int eoi_token_id;        /* <end_of_image> 256000 */
    int pad_token_id, bos_token_id;
    int eos_ids[MG_MAX_EOS]; /* from generation_config.json when present, else config.json */
    int n_eos;

    char dir[MG_PATH_MAX];            /* the model directory */
    char tokenizer_path[MG_PATH_MAX]; /* DIR/tokenizer.model, "" when absent */
} mg_config;

/* Reads DIR/config.json (and DIR/generation_config.json when present) into cfg.
 * Every missing or inconsistent field is reported with the file and key named. */
mg_status mg_config_load(const char *dir, mg_config *cfg);

/* Same from an already-read config.json text (for tests); gen_text may be NULL. */
mg_status mg_config_parse(const char *config_text, const char *gen_text, const char *what, mg_config *cfg);

#endif
