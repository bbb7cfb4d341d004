/* The model set-up that classify and eval share: the backend (the GPU unless --cpu), the model,
 * and the PEFT adapter merged in when one is given. */
#include <stdio.h>
#include <stdlib.h>

#include "data/image.h"

#include "engine/cli/commands.h"
#include "model/lora.h"

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

float *cli_load_images(const char *cmd, const char *const *paths, int n, int S) {
    const size_t per = (size_t)3 * S * S;
    float *pixels = malloc((size_t)n * per * sizeof(float));
    mg_status s = pixels ? MG_OK : mg_fail(MG_ERR_OOM, "give fewer images at once", "a batch of %d images", n);
    for (int b = 0; s == MG_OK && b < n; b++) s = mg_image_load_pixels(paths[b], S, pixels + b * per);
    if (s == MG_OK) return pixels;
    fprintf(stderr, "medgem %s: cannot read the images\n%s\n", cmd, mg_last_error());
    free(pixels);
    return NULL;
}
