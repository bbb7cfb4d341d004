/* Reading and validating PEFT LoRA adapters (model/lora.h). PEFT's rules are followed where they
 * decide which tensors take effect (peft 0.21 tuners_utils.check_target_module_exists,
 * utils/other.py get_pattern_key): a module is adapted when target_modules selects it and
 * exclude_modules does not; its r and alpha come from the first rank_pattern/alpha_pattern key
 * matching it. Python regexes are evaluated as POSIX extended regexes (the same for the plain
 * patterns PEFT configs use; others fail to compile with a clear message). */
#include "model/lora.h"

#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "engine/json.h"
#include "engine/safetensors.h"
#include "model/binding_report.h"

/* ---- the model's Linears --------------------------------------------------------------------- */

const char *mg_lora_module_name(mg_component comp, mg_lora_kind kind) {
    static const char *const TEXT[MG_LORA_N_KINDS] = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",    NULL, NULL,
    };
    static const char *const VISION[MG_LORA_N_KINDS] = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
        NULL, NULL, NULL, "mlp.fc1", "mlp.fc2",
    };
    if ((int)kind < 0 || kind >= MG_LORA_N_KINDS) return NULL;
    return comp == MG_COMP_TEXT ? TEXT[kind] : comp == MG_COMP_VISION ? VISION[kind] : NULL;
}

int mg_lora_linear_shape(const mg_config *cfg, mg_component comp, mg_lora_kind kind, int *out, int *in) {
    if (!mg_lora_module_name(comp, kind)) return 0;
    if (comp == MG_COMP_VISION) {
        const int Cv = cfg->v_hidden, Fv = cfg->v_intermediate;
        *out = kind == MG_LORA_FC1 ? Fv : Cv;
        *in = kind == MG_LORA_FC2 ? Fv : Cv;
        return 1;
    }
    const int C = cfg->hidden, F = cfg->intermediate, HD = cfg->n_heads * cfg->head_dim,
              KD = cfg->n_kv_heads * cfg->head_dim;
    switch (kind) {
    case MG_LORA_Q: *out = HD, *in = C; break;
    case MG_LORA_K:
    case MG_LORA_V: *out = KD, *in = C; break;
    case MG_LORA_O: *out = C, *in = HD; break;
    case MG_LORA_GATE:
    case MG_LORA_UP: *out = F, *in = C; break;
    default: *out = C, *in = F; break; /* down_proj */
    }
    return 1;
}

/* ---- adapter_config.json --------------------------------------------------------------------- */

typedef struct {
    const mg_json *target, *exclude;  /* target_modules, exclude_modules (string, list or NULL) */
    const mg_json *rank_pattern, *alpha_pattern; /* objects or NULL */
} selection;

#define HINT_PLAIN "medgem merges plain LoRA adapters: PEFT LoraConfig with peft_type LORA, use_dora=False, " \
                   "lora_bias=False, bias=\"none\", no modules_to_save, target_modules on the model's Linears"

/* True for a value PEFT treats as "not set": absent, null, false, "", [], {}. */
static int unset(const mg_json *j) {
    return !j || j->type == MG_JSON_NULL || (j->type == MG_JSON_BOOL && !j->boolean) ||
           (j->type == MG_JSON_STRING && !j->len) ||
           ((j->type == MG_JSON_ARRAY || j->type == MG_JSON_OBJECT) && j->n == 0);
}

/* Python's re.fullmatch(pattern, s) (or re.match(r"(.*\.)?(pattern)$", s) when suffix) as a POSIX
 * extended regex. Returns 1 on a match, 0 on none, -1 when the pattern does not compile. */
static int regex_match(const char *pattern, const char *s, int suffix) {
    size_t n = strlen(pattern) + 16;
    char *full = malloc(n);
    if (!full) return -1;
    snprintf(full, n, suffix ? "^(.*\\.)?(%s)$" : "^(%s)$", pattern);
    regex_t re;
    int rc = regcomp(&re, full, REG_EXTENDED | REG_NOSUB);
    free(full);
    if (rc != 0) return -1;
    rc = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return rc;
}

/* check_target_module_exists for one list-or-string field: 1 match, 0 none, -1 bad regex. */
static int selects(const mg_json *field, const char *key, int all_linear_ok) {
    if (unset(field)) return 0;
    if (field->type == MG_JSON_STRING) {
        if (all_linear_ok && !strcasecmp(field->string, "all-linear")) return 1; /* every Linear but lm_head */
        return regex_match(field->string, key, 0);
    }
    const size_t kn = strlen(key);
    for (int i = 0; i < field->n; i++) {
        const char *t = field->items[i].string;
        const size_t tn = strlen(t);
        if (!strcmp(key, t) || (kn > tn && key[kn - tn - 1] == '.' && !strcmp(key + kn - tn, t))) return 1;
    }
    return 0;
}

/* get_pattern_key + dict.get: the value of the first key of obj matching module, or fallback.
 * *bad is set to the offending key when a pattern does not compile. */
static double pattern_value(const mg_json *obj, const char *module, double fallback, const char **bad) {
    for (int i = 0; obj && i < obj->n; i++) {
        const int m = regex_match(obj->items[i].key, module, 1);
        if (m < 0) *bad = obj->items[i].key;
        if (m == 1) return obj->items[i].number;
    }
    return fallback;
}

static mg_status parse_config(const char *path, const mg_json *j, mg_lora *lora, selection *sel) {
    const char *type = mg_json_get_string(j, "peft_type", NULL);
    if (!type || strcmp(type, "LORA"))
        return mg_fail(MG_ERR_UNSUPPORTED, HINT_PLAIN, "%s: peft_type is %s%s%s, not \"LORA\"", path,
                       type ? "\"" : "", type ? type : "missing", type ? "\"" : "");
    /* settings that change the math or add trainable tensors besides A and B */
    static const char *const MUST_BE_UNSET[] = {
        "use_dora", "lora_bias", "modules_to_save", "layers_to_transform", "layer_replication", "target_parameters",
        "trainable_token_indices", "alora_invocation_tokens", "use_qalora", "use_bdlora",
    };
    for (size_t i = 0; i < sizeof MUST_BE_UNSET / sizeof MUST_BE_UNSET[0]; i++)
        if (!unset(mg_json_get(j, MUST_BE_UNSET[i])))
            return mg_fail(MG_ERR_UNSUPPORTED, HINT_PLAIN, "%s: \"%s\" is set; medgem does not support it", path,
                           MUST_BE_UNSET[i]);
    const char *bias = mg_json_get_string(j, "bias", "none");
    if (strcmp(bias, "none"))
        return mg_fail(MG_ERR_UNSUPPORTED, HINT_PLAIN, "%s: \"bias\" is \"%s\"; only \"none\" is supported", path, bias);

    /* r and lora_alpha default as in PEFT's LoraConfig */
    const mg_json *r = mg_json_get(j, "r"), *alpha = mg_json_get(j, "lora_alpha"), *rs = mg_json_get(j, "use_rslora");
    if (r && (!mg_json_is_int(r) || r->number < 1))
        return mg_fail(MG_ERR_FORMAT, NULL, "%s: \"r\" must be a positive integer", path);
    if (alpha && alpha->type != MG_JSON_NUMBER)
        return mg_fail(MG_ERR_FORMAT, NULL, "%s: \"lora_alpha\" must be a number", path);
    lora->r = r ? (int)r->number : 8;
    lora->alpha = alpha ? alpha->number : 8;
    lora->use_rslora = rs && rs->type == MG_JSON_BOOL && rs->boolean;
    lora->dropout = mg_json_get_number(j, "lora_dropout", 0.0);
    snprintf(lora->base_model, sizeof lora->base_model, "%s", mg_json_get_string(j, "base_model_name_or_path", ""));

    sel->target = mg_json_get(j, "target_modules");
    sel->exclude = mg_json_get(j, "exclude_modules");
    sel->rank_pattern = mg_json_get(j, "rank_pattern");
    sel->alpha_pattern = mg_json_get(j, "alpha_pattern");
    if (unset(sel->target))
        return mg_fail(MG_ERR_FORMAT, "save the adapter with PEFT's save_pretrained, which records the targets",
                       "%s: \"target_modules\" is missing", path);
    const mg_json *lists[] = { sel->target, sel->exclude };
    const char *names[] = { "target_modules", "exclude_modules" };
    for (int l = 0; l < 2; l++) {
        if (unset(lists[l]) || lists[l]->type == MG_JSON_STRING) continue;
        int ok = lists[l]->type == MG_JSON_ARRAY;
        for (int i = 0; ok && i < lists[l]->n; i++) ok = lists[l]->items[i].type == MG_JSON_STRING;
        if (!ok) return mg_fail(MG_ERR_FORMAT, NULL, "%s: \"%s\" must be a string or a list of strings", path, names[l]);
    }
    const mg_json *pats[] = { sel->rank_pattern, sel->alpha_pattern };
    for (int p = 0; p < 2; p++) {
        if (unset(pats[p])) continue;
        if (pats[p]->type != MG_JSON_OBJECT)
            return mg_fail(MG_ERR_FORMAT, NULL, "%s: \"%s\" must be an object", path, p ? "alpha_pattern" : "rank_pattern");
        for (int i = 0; i < pats[p]->n; i++)
            if (pats[p]->items[i].type != MG_JSON_NUMBER || (!p && (!mg_json_is_int(&pats[p]->items[i]) ||
                                                                    pats[p]->items[i].number < 1)))
                return mg_fail(MG_ERR_FORMAT, NULL, "%s: %s[\"%s\"] must be a %s", path,
                               p ? "alpha_pattern" : "rank_pattern", pats[p]->items[i].key,
                               p ? "number" : "positive integer");
    }
    return MG_OK;
}

/* ---- tensors --------------------------------------------------------------------------------- */

/* The tensors found for one Linear of the model. */
typedef struct {
    const mg_st_tensor *A, *B;
} slot;

static const char *const SUFFIX[2] = { ".lora_A.weight", ".lora_B.weight" };
#define PEFT_PREFIX "base_model.model."

/* Finds the slot of an adapter key: (L + Lv) * kinds slots, text layers then vision layers.
 * Returns the slot index and sets *which (0 = A, 1 = B), or -1 when the key is no adapted Linear. */
static int slot_of(const mg_config *cfg, const char *name, int *which) {
    const size_t n = strlen(name);
    for (*which = 0; *which < 2; (*which)++) {
        const size_t sn = strlen(SUFFIX[*which]);
        if (n <= sn || strcmp(name + n - sn, SUFFIX[*which]) || strncmp(name, PEFT_PREFIX, strlen(PEFT_PREFIX)))
            continue;
        char weight[512], module[160];
        if (n - sn + 8 > sizeof weight) return -1;
        snprintf(weight, sizeof weight, "%.*s.weight", (int)(n - sn), name);
        mg_component comp;
        int layer;
        if (!mg_parse_tensor_name(weight, &comp, &layer, module, sizeof module)) return -1;
        const int layers = comp == MG_COMP_TEXT ? cfg->n_layers : comp == MG_COMP_VISION ? cfg->v_layers : 0;
        if (layer < 0 || layer >= layers) return -1;
        for (int k = 0; k < MG_LORA_N_KINDS; k++) {
            const char *m = mg_lora_module_name(comp, (mg_lora_kind)k);
            if (m && !strncmp(module, m, strlen(m)) && !strcmp(module + strlen(m), ".weight"))
                return ((comp == MG_COMP_TEXT ? 0 : cfg->n_layers) + layer) * MG_LORA_N_KINDS + k;
        }
        return -1;
    }
    return -1;
}

/* The in-memory module path of an adapter key ("model.language_model.layers.0.self_attn.q_proj"),
 * what PEFT matches target_modules and the patterns against. */
static void module_path(const char *name, char *out, size_t cap) {
    const size_t n = strlen(name) - strlen(SUFFIX[0]) - strlen(PEFT_PREFIX);
    snprintf(out, cap, "%.*s", (int)n, name + strlen(PEFT_PREFIX));
}

/* The partner key of a present one (lora_A <-> lora_B), for "missing" lines. */
static void partner_key(const char *name, int which, char *out, size_t cap) {
    const size_t n = strlen(name) - strlen(SUFFIX[which]);
    snprintf(out, cap, "%.*s%s", (int)n, name, SUFFIX[!which]);
}

/* Checks one slot that holds at least one tensor; fills *mod (without pointers) when it is usable. */
static void check_slot(const mg_config *cfg, const selection *sel, const mg_lora *lora, int index, const slot *s,
                       mg_binding_report *p, mg_lora_module *mod, int *usable, const char **bad_regex) {
    const mg_st_tensor *any = s->A ? s->A : s->B;
    const int L = cfg->n_layers;
    char module[512], key[600];
    module_path(any->name, module, sizeof module);
    *usable = 0;
    const int t = selects(sel->target, module, 1), x = selects(sel->exclude, module, 0);
    if (t < 0 || x < 0) {
        *bad_regex = t < 0 ? sel->target->string : sel->exclude->string;
        return;
    }
    if (!t || x) {
        mg_report_note(p, &p->unexpected, "unexpected  %s (module not selected by target_modules%s)", any->name,
             x ? "/exclude_modules" : "");
        return;
    }
    if (!s->A || !s->B) {
        partner_key(any->name, s->A ? 0 : 1, key, sizeof key);
        mg_report_note(p, &p->missing, "missing     %s (its partner %s is present)", key, any->name);
        return;
    }
    mod->comp = index / MG_LORA_N_KINDS < L ? MG_COMP_TEXT : MG_COMP_VISION;
    mod->layer = index / MG_LORA_N_KINDS - (mod->comp == MG_COMP_TEXT ? 0 : L);
    mod->kind = (mg_lora_kind)(index % MG_LORA_N_KINDS);
    mg_lora_linear_shape(cfg, mod->comp, mod->kind, &mod->out, &mod->in);
    mod->r = (int)pattern_value(sel->rank_pattern, module, lora->r, bad_regex);
    mod->alpha = pattern_value(sel->alpha_pattern, module, lora->alpha, bad_regex);
    mod->scale = (float)(lora->use_rslora ? mod->alpha / sqrt(mod->r) : mod->alpha / mod->r);
    const int64_t want[2][2] = { { mod->r, mod->in }, { mod->out, mod->r } };
    const mg_st_tensor *ab[2] = { s->A, s->B };
    int ok = 1;
    for (int w = 0; w < 2; w++) {
        if (ab[w]->ndim == 2 && ab[w]->shape[0] == want[w][0] && ab[w]->shape[1] == want[w][1]) continue;
        char got[96] = "(";
        for (int d = 0; d < ab[w]->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)ab[w]->shape[d]);
        mg_report_note(p, &p->shape, "wrong shape %s %s), want (%lld, %lld) (r=%d, base weight (%d, %d))", ab[w]->name, got,
             (long long)want[w][0], (long long)want[w][1], mod->r, mod->out, mod->in);
        ok = 0;
    }
    *usable = ok;
}

/* Copies the usable modules' tensors into one fp32 block. */
static mg_status fill(mg_lora *lora, const slot *slots, const mg_lora_module *mods, const int *usable, int n_slots) {
    int64_t total = 0;
    int n = 0;
    for (int i = 0; i < n_slots; i++)
        if (usable[i]) total += (int64_t)mods[i].r * (mods[i].in + mods[i].out), n++;
    lora->mods = calloc((size_t)n, sizeof *lora->mods);
    lora->params = malloc((size_t)total * sizeof(float));
    if (!lora->mods || !lora->params) return mg_fail(MG_ERR_OOM, NULL, "LoRA parameters (%lld floats)", (long long)total);
    float *p = lora->params;
    for (int i = 0; i < n_slots; i++) {
        if (!usable[i]) continue;
        mg_lora_module *m = &lora->mods[lora->n++];
        *m = mods[i];
        m->A = p, p += (int64_t)m->r * m->in;
        m->B = p, p += (int64_t)m->out * m->r;
        mg_to_f32(m->A, slots[i].A->data, slots[i].A->dtype, (size_t)m->r * m->in);
        mg_to_f32(m->B, slots[i].B->data, slots[i].B->dtype, (size_t)m->out * m->r);
    }
    lora->n_params = total;
    return MG_OK;
}

static mg_status bind_tensors(const mg_st_file *f, const mg_config *cfg, const selection *sel, mg_lora *lora) {
    const int n_slots = (cfg->n_layers + cfg->v_layers) * MG_LORA_N_KINDS;
    slot *slots = calloc((size_t)n_slots, sizeof *slots);
    mg_lora_module *mods = calloc((size_t)n_slots, sizeof *mods);
    int *usable = calloc((size_t)n_slots, sizeof *usable);
    mg_binding_report *p = calloc(1, sizeof *p);
    mg_status s = MG_OK;
    if (!slots || !mods || !usable || !p) {
        s = mg_fail(MG_ERR_OOM, NULL, "binding %s", f->path);
        goto done;
    }
    for (int i = 0; i < f->n; i++) {
        const mg_st_tensor *t = &f->tensors[i];
        int which, k = slot_of(cfg, t->name, &which);
        if (k < 0) {
            mg_report_note(p, &p->unexpected, "unexpected  %s (not the lora_A/lora_B of a Linear of this model)", t->name);
            continue;
        }
        const mg_st_tensor **dst = which ? &slots[k].B : &slots[k].A;
        if (*dst) mg_report_note(p, &p->duplicated, "duplicated  %s and %s (same module under two names)", (*dst)->name, t->name);
        else *dst = t;
    }
    const char *bad_regex = NULL;
    int n_usable = 0;
    for (int k = 0; k < n_slots && !bad_regex; k++) {
        if (!slots[k].A && !slots[k].B) continue;
        check_slot(cfg, sel, lora, k, &slots[k], p, &mods[k], &usable[k], &bad_regex);
        n_usable += usable[k];
    }
    if (bad_regex) {
        s = mg_fail(MG_ERR_FORMAT, "rewrite the pattern as a POSIX extended regex (no Python-only syntax)",
                    "adapter_config.json: pattern \"%s\" does not compile", bad_regex);
        goto done;
    }
    if (p->n) {
        s = mg_report_fail(p, "the adapter does not fit this model: check that it was trained on this base model "
                              "(adapter_config.json base_model_name_or_path) and saved by PEFT save_pretrained",
                           f->path, "binding the adapter to the model");
        goto done;
    }
    if (n_usable == 0) {
        s = mg_fail(MG_ERR_MISSING, "save the adapter with PEFT save_pretrained", "%s holds no lora_A/lora_B tensors",
                    f->path);
        goto done;
    }
    s = fill(lora, slots, mods, usable, n_slots);
done:
    free(slots), free(mods), free(usable), free(p);
    return s;
}

mg_status mg_lora_load(const char *dir, const mg_config *cfg, mg_lora *lora) {
    memset(lora, 0, sizeof *lora);
    char cfg_path[MG_PATH_MAX + 32], st_path[MG_PATH_MAX + 32];
    snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", dir);
    snprintf(st_path, sizeof st_path, "%s/adapter_model.safetensors", dir);
    const char *paths[2] = { cfg_path, st_path };
    for (int i = 0; i < 2; i++)
        if (access(paths[i], R_OK) != 0)
            return mg_fail(MG_ERR_MISSING,
                           "an adapter directory (PEFT save_pretrained) holds adapter_config.json and "
                           "adapter_model.safetensors",
                           "cannot read %s: %s", paths[i], strerror(errno));
    mg_json *j = NULL;
    mg_st_file f = { 0 };
    selection sel = { 0 };
    mg_status s = mg_json_parse_file(cfg_path, &j);
    if (s == MG_OK) s = parse_config(cfg_path, j, lora, &sel);
    if (s == MG_OK) s = mg_st_open(st_path, &f);
    if (s == MG_OK) s = bind_tensors(&f, cfg, &sel, lora);
    mg_st_close(&f);
    mg_json_free(j);
    if (s != MG_OK) {
        mg_lora_free(lora);
        mg_fail_context(s, "loading the LoRA adapter %s: ", dir);
    }
    return s;
}

mg_status mg_lora_copy(mg_lora *dst, const mg_lora *src) {
    *dst = *src;
    dst->mods = malloc((size_t)(src->n > 0 ? src->n : 1) * sizeof *dst->mods);
    dst->params = malloc((size_t)(src->n_params > 0 ? src->n_params : 1) * sizeof *dst->params);
    if (!dst->mods || !dst->params) {
        free(dst->mods), free(dst->params);
        memset(dst, 0, sizeof *dst);
        return mg_fail(MG_ERR_OOM, NULL, "a copy of an adapter of %lld parameters", (long long)src->n_params);
    }
    memcpy(dst->mods, src->mods, (size_t)src->n * sizeof *dst->mods);
    memcpy(dst->params, src->params, (size_t)src->n_params * sizeof *dst->params);
    for (int i = 0; i < src->n; i++) { /* A and B point into the copy's own block */
        dst->mods[i].A = dst->params + (src->mods[i].A - src->params);
        dst->mods[i].B = dst->params + (src->mods[i].B - src->params);
    }
    return MG_OK;
}

void mg_lora_free(mg_lora *lora) {
    free(lora->mods);
    free(lora->params);
    memset(lora, 0, sizeof *lora);
}
