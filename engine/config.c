/* config.json (+ generation_config.json) -> mg_config. Both serialisations are read:
 *   transformers 4.5x: text_config.rope_theta, rope_local_base_freq, rope_scaling {rope_type, factor}
 *                      (applies to the global layers), sliding_window_pattern;
 *   transformers 5.x:  text_config.rope_parameters {full_attention: {...}, sliding_attention: {...}},
 *                      layer_types (and _sliding_window_pattern).
 * An absent key takes the Gemma3TextConfig / SiglipVisionConfig / Gemma3Config default of
 * transformers 5.17 (the same values as 4.5x), so the sparse Hub config.json parses too. */
#include "engine/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/json.h"

#define HINT_CONFIG "fix config.json or re-download the model directory"
#define HINT_UNSUPPORTED "medgem runs the MedGemma-4B / Gemma 3 architecture only; use a Gemma 3 multimodal checkpoint"

/* Reads an integer key; absent -> def. `sec` names the enclosing object in messages. */
static mg_status get_int(const mg_json *obj, const char *sec, const char *key, int def, int min, const char *what,
                         int *out) {
    const mg_json *v = mg_json_get(obj, key);
    if (!v) { *out = def; return MG_OK; }
    if (!mg_json_is_int(v) || v->number < min || v->number > 2147483647.0)
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: %s%s must be an integer >= %d", what, sec, key, min);
    *out = (int)v->number;
    return MG_OK;
}

static mg_status get_float(const mg_json *obj, const char *sec, const char *key, double def, const char *what,
                           float *out) {
    const mg_json *v = mg_json_get(obj, key);
    if (!v) { *out = (float)def; return MG_OK; }
    if (v->type != MG_JSON_NUMBER || !(v->number > 0))
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: %s%s must be a positive number", what, sec, key);
    *out = (float)v->number;
    return MG_OK;
}

/* A boolean key; absent -> def. */
static mg_status get_bool(const mg_json *obj, const char *sec, const char *key, bool def, const char *what, bool *out) {
    const mg_json *v = mg_json_get(obj, key);
    if (!v) { *out = def; return MG_OK; }
    if (v->type != MG_JSON_BOOL) return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: %s%s must be true or false", what, sec, key);
    *out = v->boolean != 0;
    return MG_OK;
}

/* A string key that must equal `want` when present. */
static mg_status require_string(const mg_json *obj, const char *sec, const char *key, const char *want,
                                const char *what) {
    const mg_json *v = mg_json_get(obj, key);
    if (!v || (v->type == MG_JSON_STRING && !strcmp(v->string, want))) return MG_OK;
    return mg_fail(MG_ERR_UNSUPPORTED, HINT_UNSUPPORTED, "%s: %s%s is %s%s%s; medgem supports only \"%s\"", what, sec,
                   key, v->type == MG_JSON_STRING ? "\"" : "", v->type == MG_JSON_STRING ? v->string : "not a string",
                   v->type == MG_JSON_STRING ? "\"" : "", want);
}

/* One rope entry ({rope_type|type, factor, rope_theta}), NULL meaning all defaults. Only the
 * default and linear types exist in Gemma 3 checkpoints. */
static mg_status parse_rope(const mg_json *e, const char *sec, double def_theta, const char *what, float *theta,
                            float *factor) {
    if (e && e->type != MG_JSON_OBJECT && e->type != MG_JSON_NULL)
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: %s must be an object", what, sec);
    if (!e || e->type == MG_JSON_NULL) e = NULL;
    const char *type = mg_json_get_string(e, "rope_type", mg_json_get_string(e, "type", "default"));
    char key[128];
    snprintf(key, sizeof key, "%s.", sec);
    MG_TRY(get_float(e, key, "rope_theta", def_theta, what, theta));
    if (!strcmp(type, "default")) {
        *factor = 1.0f;
        return MG_OK;
    }
    if (strcmp(type, "linear"))
        return mg_fail(MG_ERR_UNSUPPORTED, HINT_UNSUPPORTED, "%s: %s.rope_type \"%s\" is not supported (only default "
                       "and linear)", what, sec, type);
    if (!mg_json_get(e, "factor"))
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: %s: linear rope needs a factor", what, sec);
    return get_float(e, key, "factor", 1.0, what, factor);
}

/* Rope of the global and local layers, from either form. Like transformers' convert_rope_params_to_dict:
 * start from rope_parameters (5.x) or defaults, merge rope_scaling (4.5x) into full_attention, and
 * take rope_theta / rope_local_base_freq where an entry has no rope_theta of its own. */
static mg_status parse_ropes(const mg_json *text, const char *what, mg_config *c) {
    float theta_g = 0, theta_l = 0;
    MG_TRY(get_float(text, "text_config.", "rope_theta", 1e6, what, &theta_g));
    MG_TRY(get_float(text, "text_config.", "rope_local_base_freq", 1e4, what, &theta_l));
    const mg_json *params = mg_json_get(text, "rope_parameters");
    const mg_json *full = NULL, *sliding = NULL;
    if (params && params->type != MG_JSON_NULL) {
        if (params->type != MG_JSON_OBJECT)
            return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: text_config.rope_parameters must be an object", what);
        full = mg_json_get(params, "full_attention");
        sliding = mg_json_get(params, "sliding_attention");
        if (!full && !sliding)
            return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: text_config.rope_parameters needs \"full_attention\" and "
                           "\"sliding_attention\" entries", what);
    }
    const mg_json *scaling = mg_json_get(text, "rope_scaling");
    if (scaling && scaling->type != MG_JSON_NULL) {
        if (full && full->type == MG_JSON_OBJECT)
            return mg_fail(MG_ERR_UNSUPPORTED, HINT_CONFIG, "%s: text_config has both rope_scaling and "
                           "rope_parameters.full_attention; keep one", what);
        full = scaling;
    }
    MG_TRY(parse_rope(full, full == scaling && scaling ? "text_config.rope_scaling"
                                                       : "text_config.rope_parameters.full_attention",
                      theta_g, what, &c->rope_theta_global, &c->rope_factor_global));
    return parse_rope(sliding, "text_config.rope_parameters.sliding_attention", theta_l, what, &c->rope_theta_local,
                      &c->rope_factor_local);
}

/* layer_types when given (5.x), else every sliding_window_pattern-th layer is global. */
static mg_status parse_layer_types(const mg_json *text, const char *what, mg_config *c) {
    const mg_json *types = mg_json_get(text, "layer_types");
    if (types && types->type != MG_JSON_NULL) {
        if (types->type != MG_JSON_ARRAY || types->n != c->n_layers)
            return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: text_config.layer_types must list %d entries, one per "
                           "layer", what, c->n_layers);
        for (int i = 0; i < types->n; i++) {
            const mg_json *t = &types->items[i];
            int full = t->type == MG_JSON_STRING && !strcmp(t->string, "full_attention");
            int sliding = t->type == MG_JSON_STRING && !strcmp(t->string, "sliding_attention");
            if (!full && !sliding)
                return mg_fail(MG_ERR_UNSUPPORTED, HINT_UNSUPPORTED, "%s: text_config.layer_types[%d] must be "
                               "\"full_attention\" or \"sliding_attention\"", what, i);
            c->layer_is_global[i] = full;
        }
        return MG_OK;
    }
    int pattern = 6;
    const char *key = mg_json_get(text, "sliding_window_pattern") ? "sliding_window_pattern" : "_sliding_window_pattern";
    MG_TRY(get_int(text, "text_config.", key, 6, 1, what, &pattern));
    for (int i = 0; i < c->n_layers; i++) c->layer_is_global[i] = (i + 1) % pattern == 0;
    return MG_OK;
}

/* eos_token_id: an integer or a list of integers. */
static mg_status parse_eos(const mg_json *v, const char *what, mg_config *c) {
    int n = v->type == MG_JSON_ARRAY ? v->n : 1;
    const mg_json *items = v->type == MG_JSON_ARRAY ? v->items : v;
    if (n < 1 || n > MG_MAX_EOS)
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: eos_token_id must hold 1 to %d ids", what, MG_MAX_EOS);
    for (int i = 0; i < n; i++) {
        if (!mg_json_is_int(&items[i]) || items[i].number < 0 || items[i].number >= c->vocab)
            return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: eos_token_id entries must be token ids in [0, %d)", what,
                           c->vocab);
        c->eos_ids[i] = (int)items[i].number;
    }
    c->n_eos = n;
    return MG_OK;
}

/* What medgem's kernels assume; anything else is refused here rather than computed wrongly.
 * final_logit_softcapping is not checked: Gemma3ForConditionalGeneration never applies it
 * (spec/model.md §1). */
static mg_status check_supported(const mg_json *root, const mg_json *text, const mg_json *vision, const char *what) {
    const char *mt = mg_json_get_string(root, "model_type", "gemma3");
    if (strcmp(mt, "gemma3"))
        return mg_fail(MG_ERR_UNSUPPORTED, HINT_UNSUPPORTED, "%s: model_type is \"%s\"; medgem runs "
                       "Gemma3ForConditionalGeneration (model_type \"gemma3\")", what, mt);
    MG_TRY(require_string(text, "text_config.", "hidden_activation", "gelu_pytorch_tanh", what));
    MG_TRY(require_string(vision, "vision_config.", "hidden_act", "gelu_pytorch_tanh", what));
    const mg_json *cap = mg_json_get(text, "attn_logit_softcapping");
    if (cap && cap->type != MG_JSON_NULL)
        return mg_fail(MG_ERR_UNSUPPORTED, HINT_UNSUPPORTED, "%s: text_config.attn_logit_softcapping is set; medgem's "
                       "attention has no softcap (Gemma 3 uses null)", what);
    bool flag = false;
    MG_TRY(get_bool(text, "text_config.", "attention_bias", false, what, &flag));
    if (flag) return mg_fail(MG_ERR_UNSUPPORTED, HINT_UNSUPPORTED, "%s: text_config.attention_bias is true", what);
    MG_TRY(get_bool(text, "text_config.", "use_bidirectional_attention", false, what, &flag));
    if (flag)
        return mg_fail(MG_ERR_UNSUPPORTED, HINT_UNSUPPORTED, "%s: text_config.use_bidirectional_attention is true",
                       what);
    int channels = 3;
    MG_TRY(get_int(vision, "vision_config.", "num_channels", 3, 1, what, &channels));
    if (channels != 3)
        return mg_fail(MG_ERR_UNSUPPORTED, HINT_UNSUPPORTED, "%s: vision_config.num_channels is %d, not 3", what,
                       channels);
    return MG_OK;
}

static mg_status parse_text(const mg_json *t, const char *what, mg_config *c) {
    const char *s = "text_config.";
    MG_TRY(get_int(t, s, "hidden_size", 2304, 1, what, &c->hidden));
    MG_TRY(get_int(t, s, "num_hidden_layers", 26, 1, what, &c->n_layers));
    MG_TRY(get_int(t, s, "num_attention_heads", 8, 1, what, &c->n_heads));
    MG_TRY(get_int(t, s, "num_key_value_heads", 4, 1, what, &c->n_kv_heads));
    MG_TRY(get_int(t, s, "head_dim", 256, 1, what, &c->head_dim));
    MG_TRY(get_int(t, s, "intermediate_size", 9216, 1, what, &c->intermediate));
    MG_TRY(get_int(t, s, "vocab_size", 262208, 1, what, &c->vocab));
    MG_TRY(get_int(t, s, "sliding_window", 4096, 1, what, &c->sliding_window));
    MG_TRY(get_float(t, s, "rms_norm_eps", 1e-6, what, &c->rms_eps));
    MG_TRY(get_float(t, s, "query_pre_attn_scalar", 256, what, &c->query_pre_attn_scalar));
    if (c->n_layers > MG_MAX_LAYERS)
        return mg_fail(MG_ERR_UNSUPPORTED, HINT_UNSUPPORTED, "%s: %d text layers; medgem handles at most %d", what, c->n_layers,
                       MG_MAX_LAYERS);
    if (c->n_heads % c->n_kv_heads)
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: num_attention_heads %d is not a multiple of "
                       "num_key_value_heads %d", what, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2) return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: head_dim %d is odd (rope needs pairs)", what, c->head_dim);
    MG_TRY(parse_ropes(t, what, c));
    return parse_layer_types(t, what, c);
}

static mg_status parse_vision(const mg_json *v, const char *what, mg_config *c) {
    const char *s = "vision_config.";
    MG_TRY(get_int(v, s, "hidden_size", 768, 1, what, &c->v_hidden));
    MG_TRY(get_int(v, s, "num_hidden_layers", 12, 1, what, &c->v_layers));
    MG_TRY(get_int(v, s, "num_attention_heads", 12, 1, what, &c->v_heads));
    MG_TRY(get_int(v, s, "intermediate_size", 3072, 1, what, &c->v_intermediate));
    MG_TRY(get_int(v, s, "image_size", 224, 1, what, &c->image_size));
    MG_TRY(get_int(v, s, "patch_size", 16, 1, what, &c->patch_size));
    MG_TRY(get_float(v, s, "layer_norm_eps", 1e-6, what, &c->v_eps));
    MG_TRY(get_bool(v, s, "vision_use_head", true, what, &c->v_has_head));
    if (c->v_hidden % c->v_heads)
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: vision hidden_size %d is not a multiple of num_attention_heads "
                       "%d", what, c->v_hidden, c->v_heads);
    c->v_head_dim = c->v_hidden / c->v_heads;
    if (c->image_size % c->patch_size)
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: vision image_size %d is not a multiple of patch_size %d", what,
                       c->image_size, c->patch_size);
    return MG_OK;
}

/* Top-level keys: soft tokens per image and the special ids. */
static mg_status parse_glue(const mg_json *root, const mg_json *text, const char *gen_eos_what,
                            const mg_json *gen, const char *what, mg_config *c) {
    MG_TRY(get_int(root, "", "mm_tokens_per_image", 256, 1, what, &c->mm_tokens_per_image));
    /* The projector average-pools the patch grid down to a tok_side x tok_side grid. transformers'
     * own defaults (224 px / 16 = 14 patches a side, 256 tokens) fail this: they do not run. */
    int side = c->image_size / c->patch_size, tok_side = (int)lround(sqrt((double)c->mm_tokens_per_image));
    if (tok_side * tok_side != c->mm_tokens_per_image || side % tok_side)
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: mm_tokens_per_image %d must be a square whose side divides the "
                       "%d-patch grid side", what, c->mm_tokens_per_image, side);
    const char *img_key = mg_json_get(root, "image_token_id") ? "image_token_id" : "image_token_index";
    const char *boi_key = mg_json_get(root, "boi_token_id") ? "boi_token_id" : "boi_token_index";
    const char *eoi_key = mg_json_get(root, "eoi_token_id") ? "eoi_token_id" : "eoi_token_index";
    MG_TRY(get_int(root, "", img_key, 262144, 0, what, &c->image_token_id));
    MG_TRY(get_int(root, "", boi_key, 255999, 0, what, &c->boi_token_id));
    MG_TRY(get_int(root, "", eoi_key, 256000, 0, what, &c->eoi_token_id));
    /* pad/bos: text_config, then the top level, then Gemma3TextConfig's 0 / 2. */
    MG_TRY(get_int(root, "", "pad_token_id", 0, 0, what, &c->pad_token_id));
    MG_TRY(get_int(root, "", "bos_token_id", 2, 0, what, &c->bos_token_id));
    MG_TRY(get_int(text, "text_config.", "pad_token_id", c->pad_token_id, 0, what, &c->pad_token_id));
    MG_TRY(get_int(text, "text_config.", "bos_token_id", c->bos_token_id, 0, what, &c->bos_token_id));
    const int ids[] = { c->image_token_id, c->boi_token_id, c->eoi_token_id, c->pad_token_id, c->bos_token_id };
    const char *names[] = { img_key, boi_key, eoi_key, "pad_token_id", "bos_token_id" };
    for (int i = 0; i < 5; i++)
        if (ids[i] >= c->vocab)
            return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: %s %d is outside the vocabulary (%d)", what, names[i],
                           ids[i], c->vocab);
    /* eos: generation_config.json, then config.json's top level, then its text_config, then 1. */
    const mg_json *eos = mg_json_get(gen, "eos_token_id");
    const char *eos_what = gen_eos_what;
    if (!eos || eos->type == MG_JSON_NULL) { eos = mg_json_get(root, "eos_token_id"); eos_what = what; }
    if (!eos || eos->type == MG_JSON_NULL) eos = mg_json_get(text, "eos_token_id");
    if (!eos || eos->type == MG_JSON_NULL) {
        c->eos_ids[0] = 1;
        c->n_eos = 1;
        return MG_OK;
    }
    return parse_eos(eos, eos_what, c);
}

mg_status mg_config_parse(const char *config_text, const char *gen_text, const char *what, mg_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    mg_json *root = NULL, *gen = NULL;
    char gen_what[MG_PATH_MAX + 64];
    snprintf(gen_what, sizeof gen_what, "generation config beside %s", what);
    mg_status s = mg_json_parse(config_text, strlen(config_text), what, &root);
    if (s == MG_OK && gen_text) s = mg_json_parse(gen_text, strlen(gen_text), gen_what, &gen);
    if (s != MG_OK) goto done;
    const mg_json *text = mg_json_get(root, "text_config"), *vision = mg_json_get(root, "vision_config");
    if (root->type != MG_JSON_OBJECT || (text && text->type != MG_JSON_OBJECT) ||
        (vision && vision->type != MG_JSON_OBJECT)) {
        s = mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s: the config, its text_config and vision_config must be JSON "
                    "objects", what);
        goto done;
    }
    if ((s = check_supported(root, text, vision, what)) != MG_OK) goto done;
    if ((s = parse_text(text, what, cfg)) != MG_OK) goto done;
    if ((s = parse_vision(vision, what, cfg)) != MG_OK) goto done;
    s = parse_glue(root, text, gen_what, gen, what, cfg);
done:
    mg_json_free(root);
    mg_json_free(gen);
    return s;
}

/* The whole file as a NUL-terminated string; *out NULL (and MG_OK) when `optional` and absent. */
static mg_status read_text(const char *path, int optional, char **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (optional && errno == ENOENT) return MG_OK;
        return mg_fail(errno == ENOENT ? MG_ERR_MISSING : MG_ERR_IO,
                       "pass --model the Hugging Face model directory (with config.json and the safetensors)",
                       "cannot open %s: %s", path, strerror(errno));
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[65536];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = 2 * (len + n + 1);
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return mg_fail(MG_ERR_OOM, NULL, "out of memory reading %s", path); }
            buf = nb;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); return mg_fail(MG_ERR_IO, NULL, "cannot read %s", path); }
    if (!buf && !(buf = calloc(1, 1))) return mg_fail(MG_ERR_OOM, NULL, "out of memory");
    buf[len] = '\0';
    if (strlen(buf) != len) {
        free(buf);
        return mg_fail(MG_ERR_FORMAT, HINT_CONFIG, "%s contains a NUL byte; it is not a JSON text file", path);
    }
    *out = buf;
    return MG_OK;
}

mg_status mg_config_load(const char *dir, mg_config *cfg) {
    char config_path[MG_PATH_MAX], gen_path[MG_PATH_MAX], tok_path[MG_PATH_MAX];
    if ((size_t)snprintf(config_path, sizeof config_path, "%s/config.json", dir) >= sizeof config_path ||
        (size_t)snprintf(gen_path, sizeof gen_path, "%s/generation_config.json", dir) >= sizeof gen_path ||
        (size_t)snprintf(tok_path, sizeof tok_path, "%s/tokenizer.model", dir) >= sizeof tok_path)
        return mg_fail(MG_ERR_ARG, NULL, "model directory path too long: %s", dir);
    char *config_text, *gen_text;
    MG_TRY(read_text(config_path, 0, &config_text));
    mg_status s = read_text(gen_path, 1, &gen_text);
    if (s == MG_OK) s = mg_config_parse(config_text, gen_text, config_path, cfg);
    free(config_text);
    free(gen_text);
    if (s != MG_OK) return s;
    snprintf(cfg->dir, sizeof cfg->dir, "%s", dir);
    if (access(tok_path, R_OK) == 0) snprintf(cfg->tokenizer_path, sizeof cfg->tokenizer_path, "%s", tok_path);
    return MG_OK;
}
