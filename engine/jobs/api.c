/* The C API of engine/medgem.h over the jobs: versions, errors, images, models (classify,
 * generate) and adapters. The trainer is in api_train.c. Every entry checks its arguments,
 * binds the model's device to the calling thread, calls the existing job code and copies a
 * failure's message into the handle. */
#include "engine/jobs/api_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/breakhis_path.h"
#include "data/image.h"
#include "engine/atomic_file.h"
#include "engine/device.h"
#include "engine/jobs/merge.h"
#include "engine/oom.h"

/* The public status values are mg_status's. */
_Static_assert(MEDGEM_OK == (int)MG_OK && MEDGEM_ERR_IO == (int)MG_ERR_IO && MEDGEM_ERR_FORMAT == (int)MG_ERR_FORMAT &&
                   MEDGEM_ERR_SHAPE == (int)MG_ERR_SHAPE && MEDGEM_ERR_MISSING == (int)MG_ERR_MISSING &&
                   MEDGEM_ERR_ARG == (int)MG_ERR_ARG && MEDGEM_ERR_UNSUPPORTED == (int)MG_ERR_UNSUPPORTED &&
                   MEDGEM_ERR_OOM == (int)MG_ERR_OOM && MEDGEM_ERR_CUDA == (int)MG_ERR_CUDA &&
                   MEDGEM_ERR_NUMERIC == (int)MG_ERR_NUMERIC,
               "medgem_status and mg_status differ");
_Static_assert(MEDGEM_NUM_CLASSES == MG_BREAKHIS_NCLASSES, "8 classes");

/* ---- shared helpers ------------------------------------------------------------------------- */

medgem_status mg_api_status(char *err, mg_status s) {
    if (s != MG_OK && err) snprintf(err, MG_API_ERR_CAP, "%s", mg_last_error());
    return (medgem_status)s;
}

mg_status mg_api_null(const char *func, const char *arg) {
    return mg_fail(MG_ERR_ARG, "pass a valid handle or buffer", "%s: %s is NULL", func, arg);
}

mg_status mg_api_bind(const mg_backend *be) { return be->bind ? be->bind(be->ctx) : MG_OK; }

mg_status mg_api_options(void *dst, size_t dst_size, const void *o, size_t o_size, const char *what) {
    if (o_size < sizeof(size_t))
        return mg_fail(MG_ERR_ARG, "set .size = sizeof the struct, or call its _init function first",
                       "%s.size is %zu", what, o_size);
    /* a newer caller's extra fields are beyond what this library knows: ignored */
    memcpy((char *)dst + sizeof(size_t), (const char *)o + sizeof(size_t),
           (o_size < dst_size ? o_size : dst_size) - sizeof(size_t));
    return MG_OK;
}

void mg_api_predictions(const float *logits, int n, medgem_prediction *out) {
    for (int b = 0; b < n; b++) {
        const float *l = logits + (size_t)b * MEDGEM_NUM_CLASSES;
        memcpy(out[b].logits, l, sizeof out[b].logits);
        out[b].label = mg_class_softmax(l, MEDGEM_NUM_CLASSES, out[b].probs);
    }
}

/* ---- version, errors, classes ----------------------------------------------------------------- */

const char *medgem_version(void) { return MEDGEM_VERSION; }
int medgem_version_number(void) { return MEDGEM_VERSION_NUMBER; }
const char *medgem_status_name(medgem_status s) { return mg_status_name((mg_status)s); }
const char *medgem_last_error(void) { return mg_last_error(); }
void medgem_free(void *p) { free(p); }

const char *medgem_class_name(int k) { return k >= 0 && k < MEDGEM_NUM_CLASSES ? MG_BREAKHIS_CLASSES[k] : NULL; }

medgem_status medgem_breakhis_label(const char *path, int *label) {
    if (!path || !label) return (medgem_status)mg_api_null("medgem_breakhis_label", !path ? "path" : "label");
    mg_bh_path_info info;
    const mg_status s = mg_bh_parse_path(path, &info);
    if (s != MG_OK) return (medgem_status)s;
    *label = info.label;
    return MEDGEM_OK;
}

/* ---- images ----------------------------------------------------------------------------------- */

medgem_status medgem_image_load(const char *path, int size, float *pixels) {
    if (!path || !pixels) return (medgem_status)mg_api_null("medgem_image_load", !path ? "path" : "pixels");
    if (size < 1) return (medgem_status)mg_fail(MG_ERR_ARG, "pass medgem_model_image_size()", "image size %d", size);
    return (medgem_status)mg_image_load_pixels(path, size, pixels);
}

medgem_status medgem_image_from_rgb(const unsigned char *rgb, int width, int height, size_t stride, int size,
                                    float *pixels) {
    if (!rgb || !pixels) return (medgem_status)mg_api_null("medgem_image_from_rgb", !rgb ? "rgb" : "pixels");
    if (width < 1 || height < 1 || size < 1 || (stride && stride < (size_t)width * 3))
        return (medgem_status)mg_fail(MG_ERR_ARG, "width, height and size are positive; stride is 0 or >= 3 * width",
                                      "image %dx%d, stride %zu, size %d", width, height, stride, size);
    const size_t row = (size_t)width * 3;
    if (!stride || stride == row) return (medgem_status)mg_image_rgb_pixels(rgb, width, height, size, pixels);
    unsigned char *packed = malloc(row * (size_t)height); /* the resize reads packed rows */
    if (!packed) return (medgem_status)mg_fail(MG_ERR_OOM, NULL, "an image of %dx%d", width, height);
    for (int y = 0; y < height; y++) memcpy(packed + (size_t)y * row, rgb + (size_t)y * stride, row);
    const mg_status s = mg_image_rgb_pixels(packed, width, height, size, pixels);
    free(packed);
    return (medgem_status)s;
}

/* ---- models ----------------------------------------------------------------------------------- */

void medgem_model_options_init(medgem_model_options *o) {
    if (o) *o = (medgem_model_options){ .size = sizeof *o, .backend = MEDGEM_BACKEND_AUTO };
}

/* The backend the options ask for; desc says which runs. */
static mg_status open_backend(const medgem_model_options *o, const mg_backend **be, char *desc, size_t cap) {
    switch (o->backend) {
    case MEDGEM_BACKEND_AUTO: return mg_backend_open(false, be, desc, cap);
    case MEDGEM_BACKEND_CPU:
        *be = mg_backend_cpu();
        snprintf(desc, cap, "cpu (requested)");
        return MG_OK;
    case MEDGEM_BACKEND_CUDA: {
        mg_backend *cuda = NULL;
        MG_TRY(mg_backend_cuda_create(o->device, &cuda));
        *be = cuda;
        snprintf(desc, cap, "cuda:%d (%s)", o->device, cuda->device);
        return MG_OK;
    }
    }
    return mg_fail(MG_ERR_ARG, "use MEDGEM_BACKEND_AUTO, _CPU or _CUDA", "backend %d is unknown", (int)o->backend);
}

medgem_status medgem_model_open(const char *dir, const medgem_model_options *opts, medgem_model **out) {
    if (!out) return (medgem_status)mg_api_null("medgem_model_open", "out");
    *out = NULL;
    if (!dir) return (medgem_status)mg_api_null("medgem_model_open", "dir");
    medgem_model_options o;
    medgem_model_options_init(&o);
    if (opts && mg_api_options(&o, sizeof o, opts, opts->size, "medgem_model_options") != MG_OK) return MEDGEM_ERR_ARG;
    medgem_model *h = calloc(1, sizeof *h);
    if (!h) return (medgem_status)mg_fail(MG_ERR_OOM, NULL, "a model handle");
    mg_status s = open_backend(&o, &h->be, h->backend_desc, sizeof h->backend_desc);
    if (s == MG_OK && o.prompt && !(h->prompt = strdup(o.prompt))) s = mg_fail(MG_ERR_OOM, NULL, "the prompt");
    if (s == MG_OK) s = mg_model_open(&h->m, h->be, dir);
    const mg_classifier_opts co = { .text = h->prompt, .guide_path = o.double_bos != 0 };
    if (s == MG_OK) s = mg_classifier_init(&h->cl, &h->m, &co);
    if (s != MG_OK) {
        mg_fail_context(s, "opening the model %s: ", dir);
        medgem_model_free(h);
        return (medgem_status)s;
    }
    *out = h;
    return MEDGEM_OK;
}

void medgem_model_free(medgem_model *h) {
    if (!h) return;
    if (h->be) mg_api_bind(h->be); /* the frees below run on the model's device */
    mg_classifier_free(&h->cl);
    if (h->be) mg_model_free(&h->m);
    mg_backend_close(h->be);
    free(h->prompt);
    free(h);
}

const char *medgem_model_last_error(const medgem_model *h) { return h ? h->err : mg_last_error(); }
const char *medgem_model_backend(const medgem_model *h) { return h ? h->backend_desc : ""; }
int medgem_model_image_size(const medgem_model *h) { return h ? h->m.cfg.image_size : 0; }

/* What lowers the memory of medgem_classify / medgem_generate (the images of one call are one batch). */
static const char *OOM_HINT_BATCH = "pass fewer images per call (medgem classify and generate: fewer --image files at once)";

/* Common checks of the calls that run n images through a model. */
static mg_status check_batch(const char *func, const medgem_model *h, const float *pixels, int n) {
    if (!pixels) return mg_api_null(func, "pixels");
    if (n < 1) return mg_fail(MG_ERR_ARG, "pass at least one image", "%s: n is %d", func, n);
    return mg_api_bind(h->be);
}

medgem_status medgem_classify(medgem_model *h, const float *pixels, int n, medgem_prediction *out) {
    if (!h) return (medgem_status)mg_api_null("medgem_classify", "model");
    mg_status s = check_batch("medgem_classify", h, pixels, n);
    if (s == MG_OK && !out) s = mg_api_null("medgem_classify", "out");
    float *logits = NULL;
    if (s == MG_OK && !(logits = malloc((size_t)n * MEDGEM_NUM_CLASSES * sizeof *logits)))
        s = mg_fail(MG_ERR_OOM, "classify fewer images at once", "logits of %d images", n);
    if (s == MG_OK) s = mg_classifier_score(&h->cl, pixels, n, logits);
    if (s == MG_OK) mg_api_predictions(logits, n, out);
    free(logits);
    return mg_api_status(h->err, mg_oom_hint(s, OOM_HINT_BATCH));
}

medgem_status medgem_generate(medgem_model *h, const float *pixels, int n, int max_new_tokens, char **answers,
                              int *labels) {
    if (!h) return (medgem_status)mg_api_null("medgem_generate", "model");
    mg_status s = check_batch("medgem_generate", h, pixels, n);
    int *preds = NULL;
    if (s == MG_OK && !(preds = malloc((size_t)n * sizeof *preds))) s = mg_fail(MG_ERR_OOM, NULL, "%d answers", n);
    if (s == MG_OK)
        s = mg_classifier_generate(&h->cl, pixels, n, max_new_tokens > 0 ? max_new_tokens : 40, preds, answers, NULL);
    if (s == MG_OK && labels) memcpy(labels, preds, (size_t)n * sizeof *labels);
    free(preds);
    return mg_api_status(h->err, mg_oom_hint(s, OOM_HINT_BATCH));
}

/* ---- adapters --------------------------------------------------------------------------------- */

medgem_status medgem_adapter_load(medgem_model *h, const char *dir, medgem_adapter **out) {
    if (!out) return (medgem_status)mg_api_null("medgem_adapter_load", "out");
    *out = NULL;
    if (!h) return (medgem_status)mg_api_null("medgem_adapter_load", "model");
    if (!dir) return mg_api_status(h->err, mg_api_null("medgem_adapter_load", "dir"));
    medgem_adapter *a = calloc(1, sizeof *a);
    if (!a) return mg_api_status(h->err, mg_fail(MG_ERR_OOM, NULL, "an adapter handle"));
    const mg_status s = mg_lora_load(dir, &h->m.cfg, &a->lora);
    if (s != MG_OK) {
        free(a);
        return mg_api_status(h->err, s);
    }
    a->cfg = h->m.cfg;
    *out = a;
    return MEDGEM_OK;
}

medgem_status medgem_adapter_save(medgem_adapter *a, const char *dir) {
    if (!a) return (medgem_status)mg_api_null("medgem_adapter_save", "adapter");
    mg_status s = dir ? mg_make_dirs(dir) : mg_api_null("medgem_adapter_save", "dir");
    if (s == MG_OK) s = mg_lora_save(dir, &a->lora, &a->cfg);
    return mg_api_status(a->err, s);
}

void medgem_adapter_free(medgem_adapter *a) {
    if (!a) return;
    mg_lora_free(&a->lora);
    free(a);
}

const char *medgem_adapter_last_error(const medgem_adapter *a) { return a ? a->err : mg_last_error(); }

medgem_status medgem_model_merge_adapter(medgem_model *h, const medgem_adapter *a) {
    if (!h) return (medgem_status)mg_api_null("medgem_model_merge_adapter", "model");
    mg_status s = a ? mg_api_bind(h->be) : mg_api_null("medgem_model_merge_adapter", "adapter");
    if (s == MG_OK && h->n_trainers > 0)
        s = mg_fail(MG_ERR_ARG, "free the model's trainers first (or merge into another model)",
                    "the model has %d trainer(s): merging would change the weights they train on", h->n_trainers);
    if (s == MG_OK) s = mg_model_merge_lora(&h->m, &a->lora);
    return mg_api_status(h->err, s);
}

medgem_status medgem_merge_to_dir(const char *model_dir, const char *adapter_dir, const char *out_dir, int force) {
    if (!model_dir || !adapter_dir || !out_dir)
        return (medgem_status)mg_api_null("medgem_merge_to_dir", !model_dir ? "model_dir" : !adapter_dir ? "adapter_dir" : "out_dir");
    const mg_merge_opts o = { .model_dir = model_dir, .adapter_dir = adapter_dir, .out_dir = out_dir, .force = force != 0 };
    mg_merge_result r;
    return (medgem_status)mg_merge_run(&o, &r);
}
