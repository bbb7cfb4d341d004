/* medgem classify: score BreakHis classes for images with one forward pass, through libmedgem's
 * public API (engine/medgem.h), the same calls an embedding program makes. For each image, the
 * prompt is the guide's (one user turn: the image, then "Analyze this image and classify (0-7 only):
 * ..."), in the generation form; the class scores are the logits of the tokens "0".."7" at the last
 * position (where the answer's first token is predicted), and probs their softmax. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cli/commands.h"
#include "engine/json.h"
#include "engine/medgem.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: medgem classify --model DIR --image FILE... [options]\n"
            "  --model DIR         Hugging Face model directory (config.json, safetensors, tokenizer.model)\n"
            "  --image FILE...     one or more images (PNG, JPEG, BMP); all are scored in one batch\n"
            "  --adapter DIR       a PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors),\n"
            "                      merged into the weights after loading, like PEFT merge_and_unload\n"
            "  --prompt-file F     the user text after the image (default: the guide's 8-class prompt)\n"
            "  --double-bos        the guide's processor path: two BOS tokens (spec/model.md §7.5)\n"
            "  --json              one JSON object per image: {\"image\", \"pred\", \"probs\", \"logits\"}\n"
            "  --cpu               run on the fp32 CPU reference backend even when a GPU is available\n"
            "                      (by default the bf16 CUDA backend runs on GPU 0 when there is one)\n");
}

int cmd_classify(int argc, char **argv) {
    const char *dir = NULL, *prompt_file = NULL, *adapter = NULL;
    const char **images = calloc((size_t)argc, sizeof(char *));
    int n_img = 0, double_bos = 0;
    bool json = false, force_cpu = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); free(images); return 0; }
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--cpu")) force_cpu = true;
        else if (!strcmp(a, "--double-bos")) double_bos = 1;
        else if (!strcmp(a, "--model") && has_value) dir = argv[++i];
        else if (!strcmp(a, "--prompt-file") && has_value) prompt_file = argv[++i];
        else if (!strcmp(a, "--adapter") && has_value) adapter = argv[++i];
        else if (!strcmp(a, "--image") && has_value) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) images[n_img++] = argv[++i];
        } else {
            fprintf(stderr, "medgem classify: bad option '%s'%s\n\n", a, has_value ? "" : " (or its value is missing)");
            usage(stderr);
            free(images);
            return 2;
        }
    }
    if (!dir || n_img == 0) {
        fprintf(stderr, "medgem classify: give --model DIR and at least one --image FILE\n\n");
        usage(stderr);
        free(images);
        return 2;
    }

    int rc = 0;
    medgem_model *m = NULL;
    float *pixels = NULL;
    medgem_prediction *pred = malloc((size_t)n_img * sizeof *pred);
    if (!pred) { rc = 1; fprintf(stderr, "medgem classify: out of memory for %d images\n", n_img); goto done; }
    if ((rc = cli_api_open("classify", force_cpu, dir, adapter, NULL, prompt_file, double_bos, &m)) != 0) goto done;
    if (!(pixels = cli_api_load_images("classify", m, images, n_img))) { rc = 1; goto done; }
    if (medgem_classify(m, pixels, n_img, pred) != MEDGEM_OK) {
        fprintf(stderr, "medgem classify: forward failed\n%s\n", medgem_model_last_error(m));
        rc = 1;
        goto done;
    }
    for (int b = 0; b < n_img; b++) {
        const medgem_prediction *p = &pred[b];
        if (json) {
            printf("{\"image\": ");
            mg_json_write_string(stdout, images[b]);
            printf(", \"pred\": %d, \"probs\": [", p->label);
            for (int k = 0; k < MEDGEM_NUM_CLASSES; k++) printf("%s%.9g", k ? ", " : "", p->probs[k]);
            printf("], \"logits\": [");
            for (int k = 0; k < MEDGEM_NUM_CLASSES; k++) printf("%s%.9g", k ? ", " : "", p->logits[k]);
            printf("]}\n");
        } else {
            printf("%s: predicted %d (%s)\n", images[b], p->label, medgem_class_name(p->label));
            for (int k = 0; k < MEDGEM_NUM_CLASSES; k++)
                printf("  %d %-30s logit %+10.5f  prob %.5f\n", k, medgem_class_name(k), p->logits[k], p->probs[k]);
        }
    }
done:
    free(images), free(pixels), free(pred);
    medgem_model_free(m);
    return rc;
}
