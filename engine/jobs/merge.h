/* `medgem merge`: a PEFT LoRA adapter folded into a copy of its base model directory, what PEFT's
 * merge_and_unload() followed by save_pretrained() gives, so that transformers' from_pretrained
 * (and medgem --model) load it with no adapter:
 *   - every adapted Linear weight W becomes W + (B·A)·scale, computed in fp32 on the host
 *     (mg_lora_add_delta, the function the in-memory merge uses) and rounded once to W's stored
 *     dtype (round to nearest even); every other tensor is copied byte for byte;
 *   - the safetensors keep the base checkpoint's tensor names, dtypes and files: one
 *     model.safetensors, or the same shards with the base's model.safetensors.index.json;
 *   - config.json, generation_config.json and the tokenizer/processor files that exist in the
 *     model directory (tokenizer.model, tokenizer.json, tokenizer_config.json,
 *     special_tokens_map.json, added_tokens.json, processor_config.json, preprocessor_config.json,
 *     chat_template*) are copied unchanged.
 * Nothing half-written ever sits under the final name: the files are written (each atomically)
 * into a fresh sibling directory OUT.tmp-XXXXXX, which is renamed to OUT only when complete, and
 * removed on any failure. The job runs on the host alone (no backend). Peak memory: the changed
 * tensors of the largest safetensors file, in its dtype, plus one fp32 weight. */
#ifndef MG_JOBS_MERGE_H
#define MG_JOBS_MERGE_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/status.h"

/* Called before each safetensors file is written: its name, index (0-based) and the file count. */
typedef void (*mg_merge_progress_fn)(void *user, const char *file, int index, int n_files);

typedef struct {
    const char *model_dir;   /* the base model directory (config.json + safetensors) */
    const char *adapter_dir; /* PEFT save_pretrained: adapter_config.json + adapter_model.safetensors */
    const char *out_dir;     /* created; its parent must exist */
    bool force;              /* replace out_dir when it exists and is not empty (its content is deleted);
                              * refused when it holds the model, the adapter or the working directory */
    mg_merge_progress_fn progress; /* may be NULL */
    void *progress_user;
} mg_merge_opts;

typedef struct {
    int n_modules;      /* adapted Linears merged (= tensors changed) */
    int r;              /* the adapter's r and lora_alpha (rank_pattern/alpha_pattern may vary them) */
    double alpha;
    int n_files;        /* safetensors files written */
    bool sharded;       /* model.safetensors.index.json written */
    int n_tensors;      /* tensors written */
    size_t tensor_bytes;
    unsigned dtypes;    /* bit (1 << mg_dtype) for each dtype written */
    int n_copied;       /* config, generation config, tokenizer and processor files copied */
} mg_merge_result;

/* Checks everything (model, adapter against the model's config, out_dir) before writing anything.
 * Errors: a missing or unreadable model or adapter, an adapter that does not fit the model (its
 * modules, ranks or shapes), out_dir existing and not empty without force, a write failure (disk
 * full, permissions): each names the file and ends in a HINT; out_dir is then as it was. */
mg_status mg_merge_run(const mg_merge_opts *o, mg_merge_result *r);

#endif
