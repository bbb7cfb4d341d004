/* medgem info --model DIR [--json]: what a model directory holds, after the same checks a run
 * does (config parsed, every tensor bound with its shape): the architecture, parameter counts,
 * dtypes, the GPU memory the weights need in bf16, the tokenizer and the GPU this process sees. */
#include <stdio.h>
#include <string.h>

#include "engine/cli/commands.h"
#include "engine/config.h"
#include "engine/device.h"
#include "engine/json.h"
#include "engine/safetensors.h"
#include "model/weights.h"

typedef struct {
    mg_config cfg;
    mg_param_count params;
    int n_files, n_tensors;
    unsigned dtypes;     /* bit (1 << mg_dtype) for each dtype present */
    size_t disk_bytes;   /* tensor bytes in the safetensors files */
    mg_gpu_info gpu;
} model_info;

static void usage(FILE *f) {
    fprintf(f, "usage: medgem info --model DIR [--json]\n"
               "  Checks and describes a Hugging Face MedGemma / Gemma 3 model directory (config.json,\n"
               "  model.safetensors or its sharded index, tokenizer.model).\n"
               "  --json   print one JSON object instead of text\n");
}

/* 4300079472 -> "4,300,079,472" */
static const char *commas(long long v, char *buf) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v), o = 0;
    for (int i = 0; i < n; i++) {
        buf[o++] = tmp[i];
        if (tmp[i] != '-' && (n - 1 - i) % 3 == 0 && i != n - 1) buf[o++] = ',';
    }
    buf[o] = '\0';
    return buf;
}

static void print_text(const model_info *m) {
    const mg_config *c = &m->cfg;
    char a[32], b[32], d[32], e[32];
    int grid = c->image_size / c->patch_size, tok_side = grid;
    while (tok_side * tok_side > c->mm_tokens_per_image) tok_side--;
    printf("model       %s\n", c->dir);
    printf("text        Gemma 3: %d layers, hidden %d, %d heads / %d kv heads x head_dim %d, MLP %d, vocab %d\n",
           c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim, c->intermediate, c->vocab);
    printf("attention   sliding window %d; global (full attention) layers:", c->sliding_window);
    for (int i = 0; i < c->n_layers; i++)
        if (c->layer_is_global[i]) printf(" %d", i);
    printf("\nrope        global theta %g, linear factor %g; local theta %g, factor %g\n", c->rope_theta_global,
           c->rope_factor_global, c->rope_theta_local, c->rope_factor_local);
    printf("vision      SigLIP: %d layers, hidden %d, %d heads x head_dim %d, MLP %d, image %d px, patch %d, "
           "%d patches\n", c->v_layers, c->v_hidden, c->v_heads, c->v_head_dim, c->v_intermediate, c->image_size,
           c->patch_size, grid * grid);
    printf("projector   %d soft tokens per image (average pool %dx%d)\n", c->mm_tokens_per_image, grid / tok_side,
           grid / tok_side);
    printf("special ids image %d, boi %d, eoi %d, pad %d, bos %d, eos", c->image_token_id, c->boi_token_id,
           c->eoi_token_id, c->pad_token_id, c->bos_token_id);
    for (int i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("\nparameters  text %s, vision %s, projector %s, total %s\n", commas(m->params.text, a),
           commas(m->params.vision, b), commas(m->params.projector, d), commas(m->params.total, e));
    printf("checkpoint  %d file(s), %d tensors, dtypes", m->n_files, m->n_tensors);
    for (int t = 0; t < 3; t++)
        if (m->dtypes & (1u << t)) printf(" %s", mg_dtype_name((mg_dtype)t));
    printf(", %s bytes\n", commas((long long)m->disk_bytes, a));
    printf("gpu memory  %s bytes (%.2f GiB) for the weights in bf16; fusing QKV and gate/up adds nothing\n",
           commas(m->params.total * 2, a), m->params.total * 2 / 1073741824.0);
    printf("tokenizer   %s\n", c->tokenizer_path[0] ? c->tokenizer_path : "none (no tokenizer.model in the directory)");
    if (m->gpu.available)
        printf("gpu         %s (sm_%d%d, %.1f GiB)\n", m->gpu.name, m->gpu.cc_major, m->gpu.cc_minor,
               m->gpu.total_mem / 1073741824.0);
    else
        printf("gpu         %s\n", m->gpu.name);
}

static void print_json(const model_info *m) {
    const mg_config *c = &m->cfg;
    printf("{\"model\": ");
    mg_json_write_string(stdout, c->dir);
    printf(",\n \"text\": {\"layers\": %d, \"hidden\": %d, \"heads\": %d, \"kv_heads\": %d, \"head_dim\": %d, "
           "\"intermediate\": %d, \"vocab\": %d, \"sliding_window\": %d, \"global_layers\": [",
           c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim, c->intermediate, c->vocab,
           c->sliding_window);
    for (int i = 0, k = 0; i < c->n_layers; i++)
        if (c->layer_is_global[i]) printf("%s%d", k++ ? ", " : "", i);
    printf("], \"rope_theta_global\": %.9g, \"rope_factor_global\": %.9g, \"rope_theta_local\": %.9g, "
           "\"rope_factor_local\": %.9g, \"rms_norm_eps\": %g},\n",
           c->rope_theta_global, c->rope_factor_global, c->rope_theta_local, c->rope_factor_local, c->rms_eps);
    int grid = c->image_size / c->patch_size;
    printf(" \"vision\": {\"layers\": %d, \"hidden\": %d, \"heads\": %d, \"head_dim\": %d, \"intermediate\": %d, "
           "\"image_size\": %d, \"patch_size\": %d, \"patches\": %d},\n",
           c->v_layers, c->v_hidden, c->v_heads, c->v_head_dim, c->v_intermediate, c->image_size, c->patch_size,
           grid * grid);
    printf(" \"mm_tokens_per_image\": %d,\n \"special_ids\": {\"image\": %d, \"boi\": %d, \"eoi\": %d, \"pad\": %d, "
           "\"bos\": %d, \"eos\": [", c->mm_tokens_per_image, c->image_token_id, c->boi_token_id, c->eoi_token_id,
           c->pad_token_id, c->bos_token_id);
    for (int i = 0; i < c->n_eos; i++) printf("%s%d", i ? ", " : "", c->eos_ids[i]);
    printf("]},\n \"parameters\": {\"text\": %lld, \"vision\": %lld, \"projector\": %lld, \"total\": %lld},\n",
           (long long)m->params.text, (long long)m->params.vision, (long long)m->params.projector,
           (long long)m->params.total);
    printf(" \"checkpoint\": {\"files\": %d, \"tensors\": %d, \"bytes\": %zu, \"dtypes\": [", m->n_files, m->n_tensors,
           m->disk_bytes);
    for (int t = 0, k = 0; t < 3; t++)
        if (m->dtypes & (1u << t)) printf("%s\"%s\"", k++ ? ", " : "", mg_dtype_name((mg_dtype)t));
    printf("]},\n \"gpu_weight_bytes_bf16\": %lld,\n \"tokenizer\": ", (long long)m->params.total * 2);
    if (c->tokenizer_path[0]) mg_json_write_string(stdout, c->tokenizer_path);
    else printf("null");
    printf(",\n \"gpu\": {\"available\": %s, \"name\": ", m->gpu.available ? "true" : "false");
    mg_json_write_string(stdout, m->gpu.name);
    printf(", \"total_mem\": %zu}}\n", m->gpu.total_mem);
}

/* Loads and checks everything `info` reports. */
static mg_status gather(const char *dir, model_info *m) {
    memset(m, 0, sizeof *m);
    MG_TRY(mg_config_load(dir, &m->cfg));
    mg_checkpoint ck;
    MG_TRY(mg_checkpoint_open(dir, &ck));
    mg_weights w;
    mg_status s = mg_weights_bind(&ck, &m->cfg, &w);
    if (s == MG_OK) {
        mg_weights_free(&w);
        m->n_files = ck.n_files;
        for (int f = 0; f < ck.n_files; f++)
            for (int i = 0; i < ck.files[f].n; i++) {
                m->n_tensors++;
                m->dtypes |= 1u << ck.files[f].tensors[i].dtype;
                m->disk_bytes += ck.files[f].tensors[i].nbytes;
            }
        mg_param_counts(&m->cfg, &m->params);
    }
    mg_checkpoint_close(&ck);
    mg_gpu_query(&m->gpu);
    return s;
}

int cmd_info(int argc, char **argv) {
    const char *dir = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) dir = argv[++i];
        else { fprintf(stderr, "medgem info: unknown or incomplete option '%s'\n", argv[i]); usage(stderr); return 2; }
    }
    if (!dir) { fprintf(stderr, "medgem info: --model DIR is required\n"); usage(stderr); return 2; }
    model_info m;
    if (gather(dir, &m) != MG_OK) {
        fprintf(stderr, "medgem info: %s\n", mg_last_error());
        return 1;
    }
    if (json) print_json(&m);
    else print_text(&m);
    return 0;
}
