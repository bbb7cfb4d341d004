/* medgem classify: score BreakHis classes for images with one forward pass. For each image, the
 * prompt is the guide's (one user turn: the image, then "Analyze this image and classify (0-7 only):
 * ..."), in the generation form; the class scores are the logits of the tokens "0".."7" at the last
 * position (where the answer's first token is predicted), and probs their softmax. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/image.h"
#include "data/resize.h"
#include "engine/cli/commands.h"
#include "engine/json.h"
#include "model/lora.h"
#include "model/medgem_model.h"
#include "tokenizer/prompt.h"
#include "tokenizer/spm.h"

#define N_CLASSES 8

/* spec/seed-pipeline.md step 3: label k is the k-th class folder. */
static const char *const CLASS_NAMES[N_CLASSES] = {
    "benign_adenosis",           "benign_fibroadenoma",         "benign_phyllodes_tumor",
    "benign_tubular_adenoma",    "malignant_ductal_carcinoma",  "malignant_lobular_carcinoma",
    "malignant_mucinous_carcinoma", "malignant_papillary_carcinoma",
};

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

/* max_position_embeddings from DIR/config.json (top level or text_config); mg_config lacks it. */
static mg_status read_max_positions(const char *dir, int *out) {
    char path[MG_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/config.json", dir);
    mg_json *j;
    MG_TRY(mg_json_parse_file(path, &j));
    const mg_json *v = mg_json_get(j, "max_position_embeddings");
    if (!v) v = mg_json_get(mg_json_get(j, "text_config"), "max_position_embeddings");
    *out = v && mg_json_is_int(v) ? (int)v->number : 131072; /* Gemma3TextConfig's default */
    mg_json_free(j);
    return MG_OK;
}

/* Reads, decodes, resizes to S x S (Pillow bilinear) and normalises one image into dst (3, S, S). */
static mg_status load_pixels(const char *path, int S, float *dst) {
    FILE *f = fopen(path, "rb");
    if (!f) return mg_fail(MG_ERR_IO, "check the image path", "cannot open image %s", path);
    unsigned char *bytes = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (n == cap) {
            unsigned char *grown = realloc(bytes, cap = cap ? 2 * cap : 1 << 16);
            if (!grown) { free(bytes); fclose(f); return mg_fail(MG_ERR_OOM, NULL, "reading %s", path); }
            bytes = grown;
        }
        got = fread(bytes + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    mg_image im;
    mg_status s = mg_image_decode(bytes, n, path, &im);
    free(bytes);
    if (s != MG_OK) return s;
    unsigned char *resized = malloc((size_t)S * S * 3);
    if (!resized) s = mg_fail(MG_ERR_OOM, NULL, "resizing %s", path);
    if (s == MG_OK) s = mg_resize_bilinear(im.rgb, im.w, im.h, resized, S, S);
    if (s == MG_OK) mg_normalize_chw(resized, S, S, dst);
    free(resized);
    mg_image_free(&im);
    return s;
}

/* The token ids of "0".."n-1": each digit must be a single token of the tokenizer. */
static mg_status digit_ids(const mg_spm *spm, int n, int32_t *ids) {
    for (int k = 0; k < n; k++) {
        char digit[2] = { (char)('0' + k), 0 };
        int *t, nt;
        MG_TRY(mg_spm_encode(spm, digit, 1, &t, &nt));
        const int id = nt == 1 ? t[0] : -1;
        free(t);
        if (id < 0)
            return mg_fail(MG_ERR_FORMAT, "classify needs a tokenizer that splits digits (Gemma's does)",
                           "the digit \"%s\" is %d tokens, not one", digit, nt);
        ids[k] = id;
    }
    return MG_OK;
}

int cmd_classify(int argc, char **argv) {
    const char *dir = NULL, *prompt_file = NULL, *adapter = NULL;
    const char **images = calloc((size_t)argc, sizeof(char *));
    int n_img = 0;
    bool json = false, force_cpu = false;
    mg_prompt_opts opts = { .loss_on = MG_LOSS_ON_SEED };
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
    char be_desc[512];
    mg_model m = { 0 };
    mg_spm *spm = NULL;
    mg_chat_ids chat;
    mg_prompt p = { 0 };
    char *qtext = NULL;
    int32_t *ids = NULL, *types = NULL, *rows = NULL, vocab[N_CLASSES];
    float *pixels = NULL, *logits = NULL;
    if (mg_backend_open(force_cpu, &be, be_desc, sizeof be_desc) != MG_OK) {
        rc = fail("cannot set up the GPU (--cpu runs without it)");
        goto done;
    }
    fprintf(stderr, "medgem: using %s\n", be_desc);
    if (mg_model_open(&m, be, dir) != MG_OK) { rc = fail("cannot load the model"); goto done; }
    if (adapter) {
        mg_lora lora;
        mg_status ls = mg_lora_load(adapter, &m.cfg, &lora);
        if (ls == MG_OK) ls = mg_model_merge_lora(&m, &lora), mg_lora_free(&lora);
        if (ls != MG_OK) { rc = fail("cannot apply the adapter"); goto done; }
    }
    if (!m.cfg.tokenizer_path[0]) {
        mg_fail(MG_ERR_MISSING, "copy tokenizer.model into the model directory", "%s has no tokenizer.model", dir);
        rc = fail("cannot load the tokenizer");
        goto done;
    }
    if (mg_spm_load(m.cfg.tokenizer_path, &spm) != MG_OK || mg_chat_ids_init(&chat, &m.cfg, spm) != MG_OK ||
        digit_ids(spm, N_CLASSES, vocab) != MG_OK || read_max_positions(dir, &opts.max_tokens) != MG_OK) {
        rc = fail("cannot load the tokenizer");
        goto done;
    }
    mg_status s = prompt_file ? mg_prompt_read_file(prompt_file, &qtext)
                              : mg_prompt_default_text(CLASS_NAMES, N_CLASSES, &qtext);
    opts.text = qtext;
    if (s != MG_OK || mg_prompt_build(spm, &chat, &opts, &p) != MG_OK) { rc = fail("cannot build the prompt"); goto done; }

    /* the batch: every image with the same prompt, scored at its last position */
    const int64_t B = n_img, T = p.n, S = m.cfg.image_size;
    ids = malloc((size_t)(B * T) * sizeof(int32_t));
    types = malloc((size_t)(B * T) * sizeof(int32_t));
    rows = malloc((size_t)B * sizeof(int32_t));
    pixels = malloc((size_t)(B * 3 * S * S) * sizeof(float));
    logits = malloc((size_t)(B * N_CLASSES) * sizeof(float));
    if (!ids || !types || !rows || !pixels || !logits) {
        mg_fail(MG_ERR_OOM, "classify fewer images at once", "batch of %d images", n_img);
        rc = fail("out of memory");
        goto done;
    }
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) ids[b * T + t] = p.ids[t], types[b * T + t] = p.token_type_ids[t];
        rows[b] = (int32_t)(b * T + T - 1);
        if (load_pixels(images[b], (int)S, pixels + b * 3 * S * S) != MG_OK) { rc = fail("cannot read an image"); goto done; }
    }
    const mg_model_input in = { .B = B, .T = T, .ids = ids, .token_type = types, .pixels = pixels, .n_images = B };
    const mg_model_head head = { .rows = rows, .R = B, .vocab = vocab, .n_vocab = N_CLASSES, .logits = logits };
    if (mg_model_forward(&m, &in, &head, NULL) != MG_OK) { rc = fail("forward failed"); goto done; }

    for (int64_t b = 0; b < B; b++) {
        const float *l = logits + b * N_CLASSES;
        double probs[N_CLASSES], mx = l[0], sum = 0;
        int pred = 0;
        for (int k = 1; k < N_CLASSES; k++) {
            if (l[k] > l[pred]) pred = k; /* ties go to the lowest class, like torch.argmax */
            if (l[k] > mx) mx = l[k];
        }
        for (int k = 0; k < N_CLASSES; k++) sum += probs[k] = exp(l[k] - mx);
        for (int k = 0; k < N_CLASSES; k++) probs[k] /= sum;
        if (json) {
            printf("{\"image\": ");
            mg_json_write_string(stdout, images[b]);
            printf(", \"pred\": %d, \"probs\": [", pred);
            for (int k = 0; k < N_CLASSES; k++) printf("%s%.9g", k ? ", " : "", probs[k]);
            printf("], \"logits\": [");
            for (int k = 0; k < N_CLASSES; k++) printf("%s%.9g", k ? ", " : "", l[k]);
            printf("]}\n");
        } else {
            printf("%s: predicted %d (%s)\n", images[b], pred, CLASS_NAMES[pred]);
            for (int k = 0; k < N_CLASSES; k++)
                printf("  %d %-30s logit %+10.5f  prob %.5f\n", k, CLASS_NAMES[k], l[k], probs[k]);
        }
    }
done:
    free(images), free(ids), free(types), free(rows), free(pixels), free(logits), free(qtext);
    mg_prompt_free(&p);
    if (spm) mg_spm_free(spm);
    mg_model_free(&m);
    mg_backend_close(be);
    return rc;
}
