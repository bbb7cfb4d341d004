/* The model set-up the commands share: for eval and train the backend (the GPU unless --cpu), the
 * model and an optional merged PEFT adapter on the internal API; for classify and generate the same
 * through libmedgem's public API (engine/medgem.h), so that the CLI and embedders run one code path. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/cli/commands.h"
#include "engine/medgem.h"
#include "model/lora.h"
#include "tokenizer/prompt.h"

int cli_open_model(const char *cmd, bool force_cpu, const char *dir, const char *adapter, const mg_backend **be,
                   mg_model *m) {
    char desc[512];
    const char *what = NULL;
    if (mg_backend_open(force_cpu, be, desc, sizeof desc) != MG_OK) what = "cannot set up the GPU (--cpu runs without it)";
    else if (fprintf(stderr, "medgem: using %s\n", desc), mg_model_open(m, *be, dir) != MG_OK) what = "cannot load the model";
    else if (adapter && mg_model_apply_adapter(m, adapter) != MG_OK) what = "cannot apply the adapter";
    if (!what) return 0;
    fprintf(stderr, "medgem %s: %s\n%s\n", cmd, what, mg_last_error());
    return 1;
}

int cli_api_open(const char *cmd, bool force_cpu, const char *dir, const char *adapter, const char *prompt,
                 const char *prompt_file, int double_bos, medgem_model **m) {
    char *text = NULL;
    const char *what = NULL;
    medgem_model_options o;
    medgem_model_options_init(&o);
    o.backend = force_cpu ? MEDGEM_BACKEND_CPU : MEDGEM_BACKEND_AUTO;
    o.double_bos = double_bos;
    o.prompt = prompt;
    if (prompt_file && mg_prompt_read_file(prompt_file, &text) != MG_OK) what = "cannot read the prompt";
    if (text) o.prompt = text;
    if (!what && medgem_model_open(dir, &o, m) != MEDGEM_OK) what = "cannot load the model";
    if (!what) fprintf(stderr, "medgem: using %s\n", medgem_model_backend(*m));
    medgem_adapter *a = NULL;
    if (!what && adapter && (medgem_adapter_load(*m, adapter, &a) != MEDGEM_OK ||
                             medgem_model_merge_adapter(*m, a) != MEDGEM_OK))
        what = "cannot apply the adapter";
    medgem_adapter_free(a);
    free(text);
    if (!what) return 0;
    fprintf(stderr, "medgem %s: %s\n%s\n", cmd, what, *m ? medgem_model_last_error(*m) : medgem_last_error());
    medgem_model_free(*m);
    *m = NULL;
    return 1;
}

float *cli_api_load_images(const char *cmd, medgem_model *m, const char *const *paths, int n) {
    const int S = medgem_model_image_size(m);
    const size_t per = (size_t)3 * S * S;
    float *pixels = malloc((size_t)n * per * sizeof(float));
    if (!pixels) {
        fprintf(stderr, "medgem %s: out of memory for a batch of %d images\nHINT: give fewer images at once\n", cmd, n);
        return NULL;
    }
    for (int b = 0; b < n; b++)
        if (medgem_image_load(paths[b], S, pixels + b * per) != MEDGEM_OK) {
            fprintf(stderr, "medgem %s: cannot read the images\n%s\n", cmd, medgem_last_error());
            free(pixels);
            return NULL;
        }
    return pixels;
}
