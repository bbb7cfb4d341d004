/* medgem classify: score BreakHis classes for images with one forward pass. For each image, the
 * prompt is the guide's (one user turn: the image, then "Analyze this image and classify (0-7 only):
 * ..."), in the generation form; the class scores are the logits of the tokens "0".."7" at the last
 * position (where the answer's first token is predicted), and probs their softmax. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cli/commands.h"
#include "engine/json.h"
#include "engine/jobs/classifier.h"

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

static int fail(const char *what) {
    fprintf(stderr, "medgem classify: %s\n%s\n", what, mg_last_error());
    return 1;
}

int cmd_classify(int argc, char **argv) {
    const char *dir = NULL, *prompt_file = NULL, *adapter = NULL;
    const char **images = calloc((size_t)argc, sizeof(char *));
    int n_img = 0;
    bool json = false, force_cpu = false;
    mg_classifier_opts opts = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); free(images); return 0; }
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--cpu")) force_cpu = true;
        else if (!strcmp(a, "--double-bos")) opts.guide_path = true;
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
    const mg_backend *be = NULL;
    mg_model m = { 0 };
    mg_classifier cl = { 0 };
    char *qtext = NULL;
    float *pixels = NULL, *logits = NULL;
    if ((rc = cli_open_model("classify", force_cpu, dir, adapter, &be, &m)) != 0) goto done;
    if (prompt_file && mg_prompt_read_file(prompt_file, &qtext) != MG_OK) { rc = fail("cannot read the prompt"); goto done; }
    opts.text = qtext;
    if (mg_classifier_init(&cl, &m, &opts) != MG_OK) { rc = fail("cannot load the tokenizer or build the prompt"); goto done; }

    /* the batch: every image with the same prompt, scored at its last position */
    const int64_t B = n_img, S = m.cfg.image_size;
    if (!(pixels = cli_load_images("classify", images, n_img, (int)S))) { rc = 1; goto done; }
    logits = malloc((size_t)(B * MG_BREAKHIS_NCLASSES) * sizeof(float));
    if (!logits) { mg_fail(MG_ERR_OOM, "classify fewer images at once", "batch of %d images", n_img); rc = fail("out of memory"); goto done; }
    if (mg_classifier_score(&cl, pixels, B, logits) != MG_OK) { rc = fail("forward failed"); goto done; }

    for (int64_t b = 0; b < B; b++) {
        const float *l = logits + b * MG_BREAKHIS_NCLASSES;
        double probs[MG_BREAKHIS_NCLASSES];
        const int pred = mg_class_softmax(l, MG_BREAKHIS_NCLASSES, probs);
        if (json) {
            printf("{\"image\": ");
            mg_json_write_string(stdout, images[b]);
            printf(", \"pred\": %d, \"probs\": [", pred);
            for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++) printf("%s%.9g", k ? ", " : "", probs[k]);
            printf("], \"logits\": [");
            for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++) printf("%s%.9g", k ? ", " : "", l[k]);
            printf("]}\n");
        } else {
            printf("%s: predicted %d (%s)\n", images[b], pred, MG_BREAKHIS_CLASSES[pred]);
            for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++)
                printf("  %d %-30s logit %+10.5f  prob %.5f\n", k, MG_BREAKHIS_CLASSES[k], l[k], probs[k]);
        }
    }
done:
    free(images), free(pixels), free(logits), free(qtext);
    mg_classifier_free(&cl);
    mg_model_free(&m);
    mg_backend_close(be);
    return rc;
}
