/* medgem generate: free-text answers about images. The user turn is [image, text] in the Gemma 3
 * chat template (the text from --prompt, --prompt-file, or the guide's 8-class prompt); greedy
 * decoding with the KV cache until an eos id of the model or --max-new-tokens, as transformers'
 * generate(do_sample=False) does. Prints each answer (decoded without special tokens) and the
 * class the guide's parser reads from it. Runs through libmedgem's public API (engine/medgem.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cli/commands.h"
#include "engine/json.h"
#include "engine/medgem.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: medgem generate --model DIR --image FILE... [options]\n"
            "  --model DIR           Hugging Face model directory (config.json, safetensors, tokenizer.model)\n"
            "  --image FILE...       one or more images (PNG, JPEG, BMP), answered in one batch\n"
            "  --prompt TEXT         the user text after the image (default: the guide's 8-class prompt)\n"
            "  --prompt-file F       the same, read from a file\n"
            "  --adapter DIR         a PEFT LoRA adapter, merged into the weights after loading\n"
            "  --max-new-tokens N    at most N new tokens per image (default 40, the guide's)\n"
            "  --double-bos          the guide's processor path: two BOS tokens (spec/model.md §7.5)\n"
            "  --json                one JSON object per image: {\"image\", \"answer\", \"pred\"}\n"
            "  --cpu                 run on the fp32 CPU reference backend even when a GPU is available\n");
}

int cmd_generate(int argc, char **argv) {
    const char *dir = NULL, *prompt = NULL, *prompt_file = NULL, *adapter = NULL;
    const char **images = calloc((size_t)argc, sizeof(char *));
    int n_img = 0, max_new = 40;
    int double_bos = 0;
    bool json = false, force_cpu = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); free(images); return 0; }
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--cpu")) force_cpu = true;
        else if (!strcmp(a, "--double-bos")) double_bos = 1;
        else if (!strcmp(a, "--model") && has_value) dir = argv[++i];
        else if (!strcmp(a, "--prompt") && has_value) prompt = argv[++i];
        else if (!strcmp(a, "--prompt-file") && has_value) prompt_file = argv[++i];
        else if (!strcmp(a, "--adapter") && has_value) adapter = argv[++i];
        else if (!strcmp(a, "--max-new-tokens") && has_value) max_new = atoi(argv[++i]);
        else if (!strcmp(a, "--image") && has_value) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) images[n_img++] = argv[++i];
        } else {
            fprintf(stderr, "medgem generate: bad option '%s'%s\n\n", a, has_value ? "" : " (or its value is missing)");
            usage(stderr);
            free(images);
            return 2;
        }
    }
    if (!dir || n_img == 0 || (prompt && prompt_file) || max_new < 1) {
        fprintf(stderr, "medgem generate: give --model DIR, --image FILE..., at most one of --prompt/--prompt-file, "
                        "and --max-new-tokens >= 1\n\n");
        usage(stderr);
        free(images);
        return 2;
    }

    int rc = 0;
    medgem_model *m = NULL;
    char **answers = calloc((size_t)n_img, sizeof(char *));
    int *preds = calloc((size_t)n_img, sizeof(int));
    float *pixels = NULL;
    if (!answers || !preds) { rc = 1; fprintf(stderr, "medgem generate: out of memory for %d images\n", n_img); goto done; }
    if ((rc = cli_api_open("generate", force_cpu, dir, adapter, prompt, prompt_file, double_bos, &m)) != 0) goto done;
    if (!(pixels = cli_api_load_images("generate", m, images, n_img))) { rc = 1; goto done; }
    if (medgem_generate(m, pixels, n_img, max_new, answers, preds) != MEDGEM_OK) {
        fprintf(stderr, "medgem generate: generation failed\n%s\n", medgem_model_last_error(m));
        rc = 1;
        goto done;
    }
    const int B = n_img;
    for (int b = 0; b < B; b++) {
        if (json) {
            printf("{\"image\": ");
            mg_json_write_string(stdout, images[b]);
            printf(", \"answer\": ");
            mg_json_write_string(stdout, answers[b]);
            printf(", \"pred\": %d}\n", preds[b]);
        } else {
            printf("%s: %s\n", images[b], answers[b]);
            if (preds[b] >= 0) printf("  (the guide's parser reads class %d, %s)\n", preds[b], medgem_class_name(preds[b]));
            else printf("  (the guide's parser finds no class digit 0-7)\n");
        }
    }
done:
    for (int i = 0; answers && i < n_img; i++) medgem_free(answers[i]);
    free(answers), free(preds), free(images), free(pixels);
    medgem_model_free(m);
    return rc;
}
