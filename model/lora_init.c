/* A fresh adapter as PEFT makes one (model/lora.h mg_lora_create): the selected Linears of the
 * model, A ~ kaiming_uniform_(a=√5) = U(-1/√in, 1/√in), B = 0 (init_lora_weights=True), so the
 * adapter starts as an exact no-op. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dropout.h"
#include "model/lora.h"

/* The leaf names PEFT's target_modules lists use, per kind (text and vision share q/k/v_proj). */
static const char *const LEAF[MG_LORA_N_KINDS][2] = {
    { "q_proj", "q_proj" }, { "k_proj", "k_proj" }, { "v_proj", "v_proj" }, { "o_proj", "out_proj" },
    { "gate_proj", NULL },  { "up_proj", NULL },    { "down_proj", NULL },  { NULL, "fc1" }, { NULL, "fc2" },
};

mg_status mg_lora_parse_targets(const char *spec, mg_lora_targets *t) {
    memset(t, 0, sizeof *t);
    const int all = !strcmp(spec, "all-linear"), text = !strcmp(spec, "text"), vision = !strcmp(spec, "vision");
    if (all || text || vision) {
        for (int k = 0; k < MG_LORA_N_KINDS; k++) {
            t->on[MG_COMP_TEXT][k] = (all || text) && LEAF[k][0];
            t->on[MG_COMP_VISION][k] = (all || vision) && LEAF[k][1];
        }
        return MG_OK;
    }
    char buf[512];
    if (strlen(spec) >= sizeof buf) return mg_fail(MG_ERR_ARG, NULL, "--lora-targets is too long");
    strcpy(buf, spec);
    for (char *save = NULL, *name = strtok_r(buf, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int k = 0; k < MG_LORA_N_KINDS; k++)
            for (int c = 0; c < 2; c++)
                if (LEAF[k][c] && !strcmp(LEAF[k][c], name)) t->on[c == 0 ? MG_COMP_TEXT : MG_COMP_VISION][k] = 1, found = 1;
        if (!found)
            return mg_fail(MG_ERR_ARG,
                           "use all-linear, text, vision or a comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,"
                           "up_proj,down_proj,out_proj,fc1,fc2",
                           "--lora-targets: unknown module \"%s\"", name);
    }
    return MG_OK;
}

mg_status mg_lora_create(mg_lora *lora, const mg_config *cfg, const mg_lora_targets *t, int r, double alpha,
                         double dropout, uint64_t seed) {
    memset(lora, 0, sizeof *lora);
    if (r <= 0 || alpha <= 0 || dropout < 0 || dropout >= 1)
        return mg_fail(MG_ERR_ARG, "use --lora-r > 0, --lora-alpha > 0 and 0 <= --lora-dropout < 1",
                       "LoRA r=%d alpha=%g dropout=%g", r, alpha, dropout);
    lora->r = r, lora->alpha = alpha, lora->dropout = dropout;
    const int n_layers[2] = { cfg->n_layers, cfg->v_layers };
    const mg_component comps[2] = { MG_COMP_TEXT, MG_COMP_VISION };
    /* count, then place: text layers first, then vision, each layer in kind order (mg_lora's order) */
    int n = 0;
    int64_t total = 0;
    for (int c = 0; c < 2; c++)
        for (int l = 0; l < n_layers[c]; l++)
            for (int k = 0; k < MG_LORA_N_KINDS; k++) {
                int out, in;
                if (!t->on[comps[c]][k] || !mg_lora_linear_shape(cfg, comps[c], k, &out, &in)) continue;
                n++, total += (int64_t)r * (in + out);
            }
    if (n == 0) return mg_fail(MG_ERR_ARG, "choose --lora-targets that name Linears of this model",
                               "the LoRA targets select no module of the model");
    lora->mods = calloc((size_t)n, sizeof *lora->mods);
    lora->params = calloc((size_t)total, sizeof(float));
    if (!lora->mods || !lora->params) {
        mg_lora_free(lora);
        return mg_fail(MG_ERR_OOM, NULL, "LoRA parameters (%lld floats)", (long long)total);
    }
    float *p = lora->params;
    uint64_t draw = 0;
    for (int c = 0; c < 2; c++)
        for (int l = 0; l < n_layers[c]; l++)
            for (int k = 0; k < MG_LORA_N_KINDS; k++) {
                int out, in;
                if (!t->on[comps[c]][k] || !mg_lora_linear_shape(cfg, comps[c], k, &out, &in)) continue;
                mg_lora_module *m = &lora->mods[lora->n++];
                *m = (mg_lora_module){ .comp = comps[c], .layer = l, .kind = k, .r = r, .in = in, .out = out,
                                       .alpha = alpha, .scale = (float)(alpha / r), .A = p, .B = p + (int64_t)r * in };
                const float bound = 1.0f / sqrtf((float)in); /* kaiming_uniform_(a=√5): gain/√fan_in·√3 */
                for (int64_t i = 0; i < (int64_t)r * in; i++) {
                    const double u = (double)(mg_hash64(seed ^ mg_hash64(draw++)) >> 11) * 0x1.0p-53;
                    m->A[i] = (float)((2 * u - 1) * bound);
                }
                p += (int64_t)r * (in + out); /* B stays zero */
            }
    lora->n_params = total;
    return MG_OK;
}
