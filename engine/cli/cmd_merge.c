/* medgem merge --model DIR --adapter DIR --out DIR [--force] [--json]: writes a model directory with
 * the PEFT adapter folded into the weights (engine/jobs/merge.h), which transformers'
 * from_pretrained and medgem --model load without the adapter. Host only: no GPU is used. */
#include <stdio.h>
#include <string.h>

#include "engine/cli/commands.h"
#include "engine/dtype.h"
#include "engine/jobs/merge.h"
#include "engine/json.h"

static const char *USAGE =
    "usage: medgem merge --model DIR --adapter DIR --out DIR [--force] [--json]\n"
    "  Folds a PEFT LoRA adapter into a copy of its base model, as PEFT's merge_and_unload() +\n"
    "  save_pretrained(): every adapted weight W becomes W + (B·A)·scale, computed in fp32 and rounded\n"
    "  once to the checkpoint's dtype; tensor names, dtypes and shards stay the base's; config.json and\n"
    "  the tokenizer/processor files are copied. The result loads with transformers' from_pretrained.\n"
    "  --model DIR     the base model directory (config.json + model.safetensors or its shards)\n"
    "  --adapter DIR   the adapter (adapter_config.json + adapter_model.safetensors, PEFT save_pretrained)\n"
    "  --out DIR       the merged model directory: new or empty; written beside it, then renamed\n"
    "  --force         replace --out even when it is not empty (its old content is deleted)\n"
    "  --json          print one JSON object\n";

static void progress(void *user, const char *file, int index, int n_files) {
    (void)user;
    fprintf(stderr, "medgem merge: writing %s (%d/%d)\n", file, index + 1, n_files);
}

int cmd_merge(int argc, char **argv) {
    mg_merge_opts o = { .progress = progress };
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(USAGE, stdout); return 0; }
        if (!strcmp(a, "--force")) o.force = true;
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--model") && i + 1 < argc) o.model_dir = argv[++i];
        else if (!strcmp(a, "--adapter") && i + 1 < argc) o.adapter_dir = argv[++i];
        else if (!strcmp(a, "--out") && i + 1 < argc) o.out_dir = argv[++i];
        else {
            fprintf(stderr, "medgem merge: unknown or incomplete option '%s'\n%s", a, USAGE);
            return 2;
        }
    }
    if (!o.model_dir || !o.adapter_dir || !o.out_dir) {
        fprintf(stderr, "medgem merge: --model, --adapter and --out are required\n%s", USAGE);
        return 2;
    }
    mg_merge_result r;
    if (mg_merge_run(&o, &r) != MG_OK) {
        fprintf(stderr, "medgem merge: cannot merge\n%s\n", mg_last_error());
        return 1;
    }
    char dtypes[32] = "";
    for (int t = 0; t < 3; t++)
        if (r.dtypes & (1u << t))
            snprintf(dtypes + strlen(dtypes), sizeof dtypes - strlen(dtypes), "%s%s", dtypes[0] ? "," : "",
                     mg_dtype_name((mg_dtype)t));
    if (json) {
        printf("{\"out\": "), mg_json_write_string(stdout, o.out_dir);
        printf(", \"model\": "), mg_json_write_string(stdout, o.model_dir);
        printf(", \"adapter\": "), mg_json_write_string(stdout, o.adapter_dir);
        printf(", \"modules_merged\": %d, \"r\": %d, \"lora_alpha\": %g, \"safetensors_files\": %d, \"sharded\": %s, "
               "\"tensors\": %d, \"tensor_bytes\": %zu, \"dtypes\": \"%s\", \"files_copied\": %d}\n",
               r.n_modules, r.r, r.alpha, r.n_files, r.sharded ? "true" : "false", r.n_tensors, r.tensor_bytes,
               dtypes, r.n_copied);
    } else {
        printf("merged %d LoRA modules (r=%d, alpha %g) into %s\n", r.n_modules, r.r, r.alpha, o.out_dir);
        printf("weights: %d tensors (%d changed), %s, %zu bytes in %d safetensors file(s)%s\n", r.n_tensors,
               r.n_modules, dtypes, r.tensor_bytes, r.n_files, r.sharded ? " + model.safetensors.index.json" : "");
        printf("copied:  %d config/tokenizer/processor file(s) from %s\n", r.n_copied, o.model_dir);
    }
    return 0;
}
