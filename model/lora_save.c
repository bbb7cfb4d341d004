/* Writing a LoRA adapter as PEFT save_pretrained does (peft 0.21 with transformers 5.x), so that
 * PeftModel.from_pretrained(base, DIR) loads it with no missing or unexpected keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/atomic_file.h"
#include "engine/json.h"
#include "engine/safetensors.h"
#include "model/lora.h"

/* The in-memory module path transformers 5.x gives a Linear (what PEFT keys and targets use). */
static void module_path(const mg_lora_module *m, char *out, size_t cap) {
    snprintf(out, cap, "model.%s.layers.%d.%s", m->comp == MG_COMP_TEXT ? "language_model" : "vision_tower.encoder",
             m->layer, mg_lora_module_name(m->comp, m->kind));
}

static const char *leaf(mg_component comp, mg_lora_kind kind) {
    const char *name = mg_lora_module_name(comp, kind);
    return strrchr(name, '.') + 1;
}

/* ---- target_modules -------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The distinct leaf names of the adapted modules, sorted; *exact says whether they select exactly
 * the adapted modules among all the Linears of cfg's model. */
static int leaf_names(const mg_lora *lora, const mg_config *cfg, const char **names, int *exact) {
    int n = 0;
    for (int i = 0; i < lora->n; i++) {
        const char *l = leaf(lora->mods[i].comp, lora->mods[i].kind);
        int seen = 0;
        for (int j = 0; j < n; j++) seen |= !strcmp(names[j], l);
        if (!seen) names[n++] = l;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int selected = 0; /* Linears of the model whose leaf name is in the list */
    const mg_component comps[2] = { MG_COMP_TEXT, MG_COMP_VISION };
    for (int c = 0; c < 2; c++)
        for (int k = 0; k < MG_LORA_N_KINDS; k++) {
            if (!mg_lora_module_name(comps[c], (mg_lora_kind)k)) continue;
            for (int j = 0; j < n; j++)
                if (!strcmp(names[j], leaf(comps[c], (mg_lora_kind)k)))
                    selected += comps[c] == MG_COMP_TEXT ? cfg->n_layers : cfg->v_layers;
        }
    *exact = selected == lora->n; /* modules are distinct, so equal counts mean equal sets */
    return n;
}

/* A double as JSON: the shortest of %.15g / %.17g that reads back exactly (16 -> 16, 0.1 -> 0.1). */
static void write_number(FILE *f, double v) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
    fputs(buf, f);
}

/* rank_pattern (which = 0) or alpha_pattern (1): full module paths of the modules that differ. */
static void write_pattern(FILE *f, const mg_lora *lora, int which) {
    char path[256];
    int n = 0;
    fputc('{', f);
    for (int i = 0; i < lora->n; i++) {
        const mg_lora_module *m = &lora->mods[i];
        if (which ? m->alpha == lora->alpha : m->r == lora->r) continue;
        module_path(m, path, sizeof path);
        fputs(n++ ? ", " : "", f);
        mg_json_write_string(f, path);
        fputs(": ", f);
        write_number(f, which ? m->alpha : m->r);
    }
    fputc('}', f);
}

static void write_config(FILE *f, const mg_lora *lora, const mg_config *cfg) {
    const char *names[MG_LORA_N_KINDS * 2];
    int exact;
    const int n_names = leaf_names(lora, cfg, names, &exact);
    fputs("{\n  \"alpha_pattern\": ", f);
    write_pattern(f, lora, 1);
    fputs(",\n  \"base_model_name_or_path\": ", f);
    if (lora->base_model[0]) mg_json_write_string(f, lora->base_model);
    else fputs("null", f);
    fputs(",\n  \"bias\": \"none\",\n  \"exclude_modules\": null,\n  \"fan_in_fan_out\": false,\n"
          "  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n  \"lora_alpha\": ", f);
    write_number(f, lora->alpha);
    fputs(",\n  \"lora_bias\": false,\n  \"lora_dropout\": ", f);
    write_number(f, lora->dropout);
    fprintf(f, ",\n  \"modules_to_save\": null,\n  \"peft_type\": \"LORA\",\n  \"r\": %d,\n  \"rank_pattern\": ", lora->r);
    write_pattern(f, lora, 0);
    fputs(",\n  \"target_modules\": [", f);
    char path[256];
    for (int i = 0; i < (exact ? n_names : lora->n); i++) {
        fputs(i ? ",\n    " : "\n    ", f);
        if (exact) {
            mg_json_write_string(f, names[i]);
        } else {
            module_path(&lora->mods[i], path, sizeof path);
            mg_json_write_string(f, path);
        }
    }
    fprintf(f, "\n  ],\n  \"task_type\": \"CAUSAL_LM\",\n  \"use_dora\": false,\n  \"use_rslora\": %s\n}\n",
            lora->use_rslora ? "true" : "false");
}

/* ---- files ----------------------------------------------------------------------------------- */

mg_status mg_lora_save(const char *dir, const mg_lora *lora, const mg_config *cfg) {
    char path[MG_PATH_MAX + 32];
    /* tensors: A then B of every module, PEFT's names */
    mg_st_entry *e = calloc((size_t)lora->n * 2, sizeof *e);
    char (*names)[320] = calloc((size_t)lora->n * 2, sizeof *names);
    int64_t (*shapes)[2] = calloc((size_t)lora->n * 2, sizeof *shapes);
    if (!e || !names || !shapes) {
        free(e), free(names), free(shapes);
        return mg_fail(MG_ERR_OOM, NULL, "saving a LoRA adapter to %s", dir);
    }
    for (int i = 0; i < lora->n; i++) {
        const mg_lora_module *m = &lora->mods[i];
        char mp[256];
        module_path(m, mp, sizeof mp);
        for (int w = 0; w < 2; w++) {
            const int j = 2 * i + w;
            snprintf(names[j], sizeof names[j], "base_model.model.%s.lora_%c.weight", mp, w ? 'B' : 'A');
            shapes[j][0] = w ? m->out : m->r;
            shapes[j][1] = w ? m->r : m->in;
            e[j] = (mg_st_entry){ .name = names[j], .dtype = MG_F32, .ndim = 2, .shape = shapes[j],
                                  .data = w ? m->B : m->A };
        }
    }
    static const char *const META[] = { "format", "pt" }; /* what safetensors' torch save writes */
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    mg_status s = mg_st_write(path, e, lora->n * 2, META, 1);
    free(e), free(names), free(shapes);
    if (s != MG_OK) return s;

    /* adapter_config.json */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return mg_fail(MG_ERR_OOM, NULL, "saving a LoRA adapter to %s", dir);
    write_config(f, lora, cfg);
    if (fclose(f) != 0) {
        free(buf);
        return mg_fail(MG_ERR_OOM, NULL, "saving a LoRA adapter to %s", dir);
    }
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    s = mg_write_file_atomic(path, buf, len);
    free(buf);
    return s;
}
