/* The C API (engine/medgem.h) end to end on the CPU with the tiny golden model:
 * - classify equals what `medgem classify --cpu --json` prints for the same images (with and
 *   without --adapter: medgem_adapter_load + medgem_model_merge_adapter);
 * - images from memory (RGB buffer, with a row stride) give the file path's pixels;
 * - a trainer: a few steps on two images lower the loss, grad_accum updates every 2nd step, the
 *   progress callback runs, the saved adapter reloads and merged gives the trainer's scores;
 * - two models classifying concurrently from two threads give the results of one alone;
 * - bad input (missing directory, wrong image path, NULL handles, bad sizes and labels, a second
 *   merge) fails with MEDGEM_ERR_* and a message, per thread and per handle. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/medgem.h"
#include "engine/json.h"
#include "tests/test.h"

#define MODEL "tests/golden/tiny"
#define ADAPTER "tests/golden/lora_adapter"
#define IMG0 "tests/fixtures/classify/noise_30x20.png"
#define IMG1 "tests/fixtures/classify/stripes_70x46.png"

static medgem_model *open_cpu(const char *dir) {
    medgem_model_options o;
    medgem_model_options_init(&o);
    o.backend = MEDGEM_BACKEND_CPU;
    medgem_model *m = NULL;
    const medgem_status s = medgem_model_open(dir, &o, &m);
    CHECK(s == MEDGEM_OK && m, "open %s: %s", dir, medgem_last_error());
    return m;
}

static float *load2(int S) {
    float *px = malloc((size_t)2 * 3 * S * S * sizeof(float));
    CHECK(medgem_image_load(IMG0, S, px) == MEDGEM_OK, "load %s: %s", IMG0, medgem_last_error());
    CHECK(medgem_image_load(IMG1, S, px + (size_t)3 * S * S) == MEDGEM_OK, "load %s: %s", IMG1, medgem_last_error());
    return px;
}

/* The CLI's --json lines against the API's predictions: the printed %.9g values must round-trip. */
static void compare_cli(const char *extra, const medgem_prediction *p, const char *what) {
    char cmd[512], *out = NULL;
    snprintf(cmd, sizeof cmd, "build/medgem classify --cpu --json --model " MODEL " %s --image " IMG0 " " IMG1 " 2>/dev/null",
             extra);
    const int rc = test_run(cmd, &out);
    CHECK(rc == 0, "%s: the CLI ran (rc %d)", what, rc);
    char *line = out;
    double worst = 0;
    int lines = 0;
    for (int b = 0; b < 2 && line && *line; b++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        mg_json *j = NULL;
        if (mg_json_parse(line, strlen(line), "cli", &j) == MG_OK) {
            const mg_json *lg = mg_json_get(j, "logits"), *pr = mg_json_get(j, "probs");
            CHECK((int)mg_json_get_number(j, "pred", -1) == p[b].label, "%s image %d: same class", what, b);
            for (int k = 0; lg && pr && k < 8; k++) {
                worst = fmax(worst, fabs(lg->items[k].number - p[b].logits[k]) / fmax(1e-30, fabs(p[b].logits[k])));
                worst = fmax(worst, fabs(pr->items[k].number - p[b].probs[k]) / fmax(1e-30, fabs(p[b].probs[k])));
            }
            lines++;
            mg_json_free(j);
        }
        line = nl ? nl + 1 : NULL;
    }
    printf("%s %s: API vs `medgem classify --cpu --json`: %d images, max relative difference %.2g (printed to 9 digits)\n",
           worst <= 1e-8 && lines == 2 ? "ok  " : "FAIL", what, lines, worst);
    CHECK(lines == 2 && worst <= 1e-8, "%s: the API's logits and probs are the CLI's", what);
    free(out);
}

/* Field by field: the struct has padding that memcmp would read. */
static int same_preds(const medgem_prediction *a, const medgem_prediction *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i].label != b[i].label || memcmp(a[i].logits, b[i].logits, sizeof a[i].logits) ||
            memcmp(a[i].probs, b[i].probs, sizeof a[i].probs))
            return 0;
    return 1;
}

/* ---- threads ---------------------------------------------------------------------------------- */

typedef struct {
    medgem_model *m;
    const float *px;
    int reps;
    medgem_prediction out[2];
    int bad;
} job;

static void *classify_job(void *arg) {
    job *j = arg;
    for (int r = 0; r < j->reps; r++)
        if (medgem_classify(j->m, j->px, 2, j->out) != MEDGEM_OK) j->bad++;
    return NULL;
}

/* ---- training --------------------------------------------------------------------------------- */

static int progress_calls, progress_last_step;
static void on_progress(void *user, const medgem_train_progress *p) {
    (void)user;
    progress_calls++;
    progress_last_step = p->step;
}

static void test_training(medgem_model *m, const float *px, const medgem_prediction *base) {
    const int labels[2] = { 3, 6 };
    medgem_trainer_options o;
    medgem_trainer_options_init(&o);
    o.lr = 5e-3, o.lora_dropout = 0, o.loss_on = MEDGEM_LOSS_ON_ANSWER, o.schedule = MEDGEM_SCHEDULE_CONSTANT;
    o.grad_accum = 2, o.progress = on_progress;
    medgem_trainer *t = NULL;
    CHECK(medgem_trainer_create(m, &o, &t) == MEDGEM_OK, "trainer: %s", medgem_model_last_error(m));
    if (!t) return;

    /* a fresh adapter (B = 0) scores like the base model */
    medgem_prediction ev[2];
    double acc = -1;
    CHECK(medgem_trainer_evaluate(t, px, labels, 2, ev, &acc) == MEDGEM_OK, "evaluate: %s", medgem_trainer_last_error(t));
    CHECK(memcmp(ev[0].logits, base[0].logits, sizeof ev[0].logits) == 0, "a fresh adapter changes nothing");

    double first = 0, last = 0;
    int updates = 0;
    for (int i = 0; i < 24; i++) {
        medgem_step_info info;
        const medgem_status s = medgem_trainer_step(t, px, labels, 2, &info);
        CHECK(s == MEDGEM_OK, "step %d: %s", i, medgem_trainer_last_error(t));
        if (s != MEDGEM_OK) break;
        if (i == 0) first = info.loss;
        last = info.loss;
        updates += info.updated;
        CHECK(info.updated == (i % 2 == 1), "step %d: an update every 2nd micro-batch (grad_accum 2)", i);
    }
    printf("%s trainer: loss %.4f -> %.4f over 24 micro-batches, %d updates, %d progress calls\n",
           last < 0.5 * first ? "ok  " : "FAIL", first, last, updates, progress_calls);
    CHECK(last < 0.5 * first, "the loss falls (%.4f -> %.4f)", first, last);
    CHECK(updates == 12 && progress_calls == 12 && progress_last_step == 12, "12 updates reported");
    CHECK(medgem_trainer_evaluate(t, px, labels, 2, ev, &acc) == MEDGEM_OK && acc == 1.0,
          "the trained adapter classifies both images right (accuracy %g)", acc);

    /* saved, reloaded and merged: the trainer's scores (fp32 merge vs unmerged branch) */
    char dir[] = "/tmp/medgem_api_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temp dir");
    char sub[600];
    snprintf(sub, sizeof sub, "%s/adapter", dir);
    CHECK(medgem_trainer_save(t, sub) == MEDGEM_OK, "save: %s", medgem_trainer_last_error(t));
    medgem_adapter *snap = NULL;
    CHECK(medgem_trainer_adapter(t, &snap) == MEDGEM_OK && snap, "snapshot: %s", medgem_trainer_last_error(t));
    CHECK(medgem_model_merge_adapter(m, snap) == MEDGEM_ERR_ARG, "merging while a trainer exists is refused");
    printf("     (expected) %s\n", medgem_model_last_error(m));
    medgem_trainer_free(t);

    medgem_model *m2 = open_cpu(MODEL);
    medgem_adapter *a = NULL;
    CHECK(m2 && medgem_adapter_load(m2, sub, &a) == MEDGEM_OK, "reload: %s", medgem_model_last_error(m2));
    medgem_prediction merged[2];
    if (a) {
        CHECK(medgem_model_merge_adapter(m2, a) == MEDGEM_OK, "merge: %s", medgem_model_last_error(m2));
        CHECK(medgem_classify(m2, px, 2, merged) == MEDGEM_OK, "classify merged");
        double worst = 0;
        for (int b = 0; b < 2; b++)
            for (int k = 0; k < 8; k++) worst = fmax(worst, fabs(merged[b].logits[k] - ev[b].logits[k]));
        printf("%s reloaded adapter merged vs the trainer's unmerged scores: max |diff| %.2g\n", worst < 1e-4 ? "ok  " : "FAIL", worst);
        CHECK(worst < 1e-4, "saved adapter reproduces the trainer");
        CHECK(medgem_model_merge_adapter(m2, snap) == MEDGEM_ERR_ARG, "a second merge is refused");
        CHECK(strstr(medgem_model_last_error(m2), "merge") != NULL, "the model's error says why: %s",
              medgem_model_last_error(m2));
        /* a merged model cannot be trained */
        medgem_trainer *t2 = NULL;
        CHECK(medgem_trainer_create(m2, NULL, &t2) == MEDGEM_ERR_ARG && !t2, "training a merged model is refused");
    }
    /* the snapshot saves like the trainer did */
    snprintf(sub, sizeof sub, "%s/snapshot", dir);
    CHECK(medgem_adapter_save(snap, sub) == MEDGEM_OK, "save snapshot: %s", medgem_adapter_last_error(snap));
    medgem_adapter_free(a);
    medgem_adapter_free(snap);
    medgem_model_free(m2);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

/* ---- bad input -------------------------------------------------------------------------------- */

static void test_errors(medgem_model *m, const float *px) {
    medgem_model *none = (medgem_model *)1;
    medgem_status s = medgem_model_open("/nonexistent/model", NULL, &none);
    CHECK(s != MEDGEM_OK && none == NULL, "a missing directory fails (%s)", medgem_status_name(s));
    CHECK(strstr(medgem_last_error(), "/nonexistent/model") && strstr(medgem_last_error(), "HINT"),
          "the message names the directory and hints: %s", medgem_last_error());
    CHECK(medgem_model_open(NULL, NULL, &none) == MEDGEM_ERR_ARG, "NULL dir");
    medgem_model_options bad;
    memset(&bad, 0, sizeof bad);
    CHECK(medgem_model_open(MODEL, &bad, &none) == MEDGEM_ERR_ARG && strstr(medgem_last_error(), ".size"),
          "options without size: %s", medgem_last_error());

    const int S = medgem_model_image_size(m);
    float *one = malloc((size_t)3 * S * S * sizeof(float));
    s = medgem_image_load("tests/fixtures/classify/missing.png", S, one);
    CHECK(s == MEDGEM_ERR_IO && strstr(medgem_last_error(), "missing.png"), "a wrong image path: %s", medgem_last_error());
    s = medgem_image_load("tests/golden/tiny/config.json", S, one);
    CHECK(s == MEDGEM_ERR_FORMAT, "a file that is no image: %s", medgem_last_error());
    free(one);

    medgem_prediction p[2];
    CHECK(medgem_classify(NULL, px, 2, p) == MEDGEM_ERR_ARG && strstr(medgem_last_error(), "NULL"), "NULL model");
    CHECK(medgem_classify(m, NULL, 2, p) == MEDGEM_ERR_ARG, "NULL pixels");
    CHECK(medgem_classify(m, px, 0, p) == MEDGEM_ERR_ARG, "n = 0");
    CHECK(strstr(medgem_model_last_error(m), "n is 0") != NULL, "the model keeps its last error: %s",
          medgem_model_last_error(m));
    CHECK(medgem_generate(NULL, px, 1, 4, NULL, NULL) == MEDGEM_ERR_ARG, "generate on NULL");
    medgem_adapter *a = (medgem_adapter *)1;
    CHECK(medgem_adapter_load(m, "tests/golden/tiny", &a) != MEDGEM_OK && a == NULL,
          "a directory without an adapter: %s", medgem_model_last_error(m));
    CHECK(medgem_trainer_step(NULL, px, NULL, 1, NULL) == MEDGEM_ERR_ARG, "step on NULL");
    medgem_trainer *t = NULL;
    CHECK(medgem_trainer_create(m, NULL, &t) == MEDGEM_OK, "trainer with defaults");
    const int wrong[2] = { 0, 9 };
    CHECK(medgem_trainer_step(t, px, wrong, 2, NULL) == MEDGEM_ERR_ARG && strstr(medgem_trainer_last_error(t), "label 9"),
          "label 9: %s", medgem_trainer_last_error(t));
    medgem_trainer_free(t);
    medgem_trainer_options to;
    medgem_trainer_options_init(&to);
    to.lora_r = 0;
    CHECK(medgem_trainer_create(m, &to, &t) == MEDGEM_ERR_ARG && !t, "r = 0 refused");
    int label = -1;
    CHECK(medgem_breakhis_label("/x/benign/SOB/fibroadenoma/SOB_B_F_14-9133/40X/SOB_B_F-14-9133-40-001.png", &label) ==
                  MEDGEM_OK && label == 1,
          "BreakHis path label (%d): %s", label, medgem_last_error());
    CHECK(medgem_breakhis_label("/x/cat.png", &label) == MEDGEM_ERR_FORMAT, "not a BreakHis path");
    /* freeing NULL is fine */
    medgem_model_free(NULL), medgem_adapter_free(NULL), medgem_trainer_free(NULL), medgem_free(NULL);
}

int main(void) {
    CHECK(!strcmp(medgem_version(), MEDGEM_VERSION) && medgem_version_number() == MEDGEM_VERSION_NUMBER,
          "runtime version %s is the header's %s", medgem_version(), MEDGEM_VERSION);
    CHECK(medgem_class_name(0) && !strcmp(medgem_class_name(7), "malignant_papillary_carcinoma") && !medgem_class_name(8),
          "class names");
    medgem_model *m = open_cpu(MODEL);
    if (!m) return test_finish();
    CHECK(!strncmp(medgem_model_backend(m), "cpu", 3), "backend: %s", medgem_model_backend(m));
    const int S = medgem_model_image_size(m);
    float *px = load2(S);

    /* images from memory: a 5x4 RGB buffer with a padded stride equals the packed one */
    unsigned char rgb[4][5 * 3 + 7], packed[4 * 5 * 3];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 15; x++) rgb[y][x] = packed[y * 15 + x] = (unsigned char)(y * 40 + x * 11);
    float *a = malloc((size_t)3 * S * S * sizeof(float)), *b = malloc((size_t)3 * S * S * sizeof(float));
    CHECK(medgem_image_from_rgb(&rgb[0][0], 5, 4, sizeof rgb[0], S, a) == MEDGEM_OK &&
              medgem_image_from_rgb(packed, 5, 4, 0, S, b) == MEDGEM_OK && !memcmp(a, b, (size_t)3 * S * S * sizeof(float)),
          "an RGB buffer with a stride: %s", medgem_last_error());
    CHECK(medgem_image_from_rgb(packed, 5, 4, 10, S, b) == MEDGEM_ERR_ARG, "a stride shorter than a row is refused");
    free(a), free(b);

    medgem_prediction base[2];
    CHECK(medgem_classify(m, px, 2, base) == MEDGEM_OK, "classify: %s", medgem_model_last_error(m));
    compare_cli("", base, "base model");

    char *answers[2] = { 0 };
    int glabels[2] = { -2, -2 };
    CHECK(medgem_generate(m, px, 2, 4, answers, glabels) == MEDGEM_OK && answers[0] && answers[1],
          "generate: %s", medgem_model_last_error(m));
    CHECK(glabels[0] >= -1 && glabels[0] < 8 && glabels[1] >= -1 && glabels[1] < 8, "generated labels in -1..7");
    printf("     generated: \"%s\" (%d), \"%s\" (%d)\n", answers[0] ? answers[0] : "", glabels[0],
           answers[1] ? answers[1] : "", glabels[1]);
    medgem_free(answers[0]), medgem_free(answers[1]);

    /* an adapter merged through the API equals --adapter */
    medgem_model *ma = open_cpu(MODEL);
    medgem_adapter *ad = NULL;
    CHECK(ma && medgem_adapter_load(ma, ADAPTER, &ad) == MEDGEM_OK, "adapter: %s", medgem_model_last_error(ma));
    medgem_prediction adapted[2];
    if (ad && medgem_model_merge_adapter(ma, ad) == MEDGEM_OK && medgem_classify(ma, px, 2, adapted) == MEDGEM_OK)
        compare_cli("--adapter " ADAPTER, adapted, "adapter merged");
    else
        CHECK(0, "merge + classify: %s", medgem_model_last_error(ma));
    medgem_adapter_free(ad);

    /* two models, two threads, at the same time: the results of one alone */
    job j[2] = { { .m = m, .px = px, .reps = 3 }, { .m = ma, .px = px, .reps = 3 } };
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, classify_job, &j[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    const int same0 = same_preds(j[0].out, base, 2), same1 = same_preds(j[1].out, adapted, 2);
    printf("%s two models classifying concurrently from two threads: %s and %s as alone\n",
           same0 && same1 && !j[0].bad && !j[1].bad ? "ok  " : "FAIL", same0 ? "same" : "DIFFERENT",
           same1 ? "same" : "DIFFERENT");
    CHECK(!j[0].bad && !j[1].bad && same0 && same1, "concurrent results equal the single-thread ones bit for bit");
    medgem_model_free(ma);

    test_training(m, px, base);
    test_errors(m, px);
    medgem_model_free(m);
    free(px);
    return test_finish();
}
