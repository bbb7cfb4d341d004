/* The C API (engine/medgem.h) on CUDA, the tiny model:
 *  - MEDGEM_BACKEND_CUDA classifies like the CPU (same classes; logits within bf16's error);
 *  - two CUDA models (devices 0 and 1 when there are two GPUs, else both on 0), created on the
 *    main thread and driven concurrently from two other threads, 4 rounds each: every round gives
 *    the results of each model alone, bit for bit (each call binds its model's device to the
 *    calling thread; context, stream, plan cache and error record are per model);
 *  - a trainer on CUDA lowers the loss in 8 steps;
 *  - out of memory (issue 13): with the GPU filled by this program's own cudaMalloc calls, a
 *    classify of 64 images and a trainer step of 32 fail with MEDGEM_ERR_OOM (never a CUDA error),
 *    the classify's message names the bytes it needed, the GPU's free and total memory, and the
 *    call's hint; once the memory is freed the same classify works (nothing sticky is left).
 * Without a GPU it prints "no GPU" and fails. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "engine/medgem.h"
#include "tests/test.h"

#define MODEL "tests/golden/tiny"

static medgem_model *open_on(medgem_backend_kind kind, int device, medgem_status *st) {
    medgem_model_options o;
    medgem_model_options_init(&o);
    o.backend = kind, o.device = device;
    medgem_model *m = NULL;
    *st = medgem_model_open(MODEL, &o, &m);
    return m;
}

static int same(const medgem_prediction *a, const medgem_prediction *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i].label != b[i].label || memcmp(a[i].logits, b[i].logits, sizeof a[i].logits)) return 0;
    return 1;
}

typedef struct {
    medgem_model *m;
    const float *px;
    const medgem_prediction *alone;
    int rounds_same, failures;
} job;

static void *run(void *arg) {
    job *j = arg;
    for (int r = 0; r < 4; r++) {
        medgem_prediction p[2];
        if (medgem_classify(j->m, j->px, 2, p) != MEDGEM_OK) j->failures++;
        else j->rounds_same += same(p, j->alone, 2);
    }
    return NULL;
}

/* Fills GPU 0 with cudaMalloc blocks, halving down to 64 KiB, until nothing more fits; returns the count. */
enum { HOG_MAX = 4096 };
static int hog_gpu(void *hog[HOG_MAX]) {
    int n = 0;
    cudaSetDevice(0);
    for (size_t chunk = (size_t)1 << 30; chunk >= (size_t)64 << 10; chunk /= 4)
        while (n < HOG_MAX && cudaMalloc(&hog[n], chunk) == cudaSuccess) n++;
    cudaGetLastError(); /* the last refusal */
    return n;
}

static void oom_case(const float *px2, int S) {
    medgem_status st;
    medgem_model *m = open_on(MEDGEM_BACKEND_CUDA, 0, &st);
    CHECK(m != NULL, "model for the OOM case: %s", medgem_last_error());
    if (!m) return;
    enum { N = 64 };
    const size_t per = (size_t)3 * S * S;
    float *px = malloc(N * per * sizeof *px);
    for (int b = 0; b < N; b++) memcpy(px + b * per, px2 + (b % 2) * per, per * sizeof *px);
    medgem_prediction *p = malloc(N * sizeof *p);
    medgem_trainer_options o;
    medgem_trainer_options_init(&o);
    medgem_trainer *t = NULL;
    int labels[N] = { 0 };
    /* one image first: the kernels are loaded and the trainer exists before the GPU is full */
    CHECK(medgem_classify(m, px, 1, p) == MEDGEM_OK, "warm-up classify: %s", medgem_model_last_error(m));
    CHECK(medgem_trainer_create(m, &o, &t) == MEDGEM_OK, "trainer: %s", medgem_model_last_error(m));

    void *hog[HOG_MAX];
    const int n_hog = hog_gpu(hog);
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    printf("     GPU 0 filled: %d blocks, %zu bytes free of %zu\n", n_hog, free_b, total_b);

    st = medgem_classify(m, px, N, p);
    const char *e = medgem_model_last_error(m);
    printf("     classify of %d images on a full GPU: %s\n     %s\n", N, medgem_status_name(st), e);
    CHECK(st == MEDGEM_ERR_OOM, "a full GPU is MEDGEM_ERR_OOM, not %s", medgem_status_name(st));
    CHECK(strstr(e, "allocating ") && strstr(e, " on GPU 0 failed: ") && strstr(e, " free of "),
          "the message names the bytes needed and the free memory: %s", e);
    CHECK(strstr(e, "\nHINT: pass fewer images per call") != NULL, "the classify hint: %s", e);
    if (t) {
        st = medgem_trainer_step(t, px, labels, 32, NULL);
        e = medgem_trainer_last_error(t);
        printf("     trainer step of 32 images on a full GPU: %s\n     %s\n", medgem_status_name(st), e);
        CHECK(st == MEDGEM_ERR_OOM && strstr(e, " free") && strstr(e, "\nHINT: pass fewer images per medgem_trainer_step"),
              "the trainer step: MEDGEM_ERR_OOM, the free memory and its hint: %s (%s)", medgem_status_name(st), e);
    }
    for (int i = 0; i < n_hog; i++) cudaFree(hog[i]);
    st = medgem_classify(m, px, N, p);
    CHECK(st == MEDGEM_OK, "the same classify once the memory is back: %s", medgem_model_last_error(m));
    printf("%s out of memory on the GPU: OOM status, needed and free bytes, the call's hint, recovery\n",
           st == MEDGEM_OK ? "ok  " : "FAIL");
    medgem_trainer_free(t);
    medgem_model_free(m);
    free(px), free(p);
}

int main(void) {
    medgem_status st;
    medgem_model *g0 = open_on(MEDGEM_BACKEND_CUDA, 0, &st);
    if (!g0) {
        printf("no GPU: %s\n", medgem_last_error());
        CHECK(0, "a CUDA device");
        return test_finish();
    }
    medgem_model *g1 = open_on(MEDGEM_BACKEND_CUDA, 1, &st);
    const int two_gpus = g1 != NULL;
    if (!g1) g1 = open_on(MEDGEM_BACKEND_CUDA, 0, &st);
    medgem_model *cpu = open_on(MEDGEM_BACKEND_CPU, 0, &st);
    CHECK(g1 && cpu, "models: %s", medgem_last_error());
    if (!g1 || !cpu) return test_finish();
    printf("models on %s and %s (%s)\n", medgem_model_backend(g0), medgem_model_backend(g1),
           two_gpus ? "two GPUs" : "one GPU, two contexts");

    const int S = medgem_model_image_size(g0);
    float *px = malloc((size_t)2 * 3 * S * S * sizeof *px);
    CHECK(medgem_image_load("tests/fixtures/classify/noise_30x20.png", S, px) == MEDGEM_OK &&
              medgem_image_load("tests/fixtures/classify/stripes_70x46.png", S, px + (size_t)3 * S * S) == MEDGEM_OK,
          "images");
    medgem_prediction pc[2], p0[2], p1[2];
    CHECK(medgem_classify(cpu, px, 2, pc) == MEDGEM_OK && medgem_classify(g0, px, 2, p0) == MEDGEM_OK &&
              medgem_classify(g1, px, 2, p1) == MEDGEM_OK,
          "classify: %s", medgem_last_error());
    double worst = 0, scale = 0;
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 8; k++)
            worst = fmax(worst, fabs(p0[b].logits[k] - pc[b].logits[k])), scale = fmax(scale, fabs(pc[b].logits[k]));
    printf("%s CUDA vs CPU logits: max |diff| %.3g of max |logit| %.3g; classes %d %d vs %d %d\n",
           worst <= 0.05 * scale ? "ok  " : "FAIL", worst, scale, p0[0].label, p0[1].label, pc[0].label, pc[1].label);
    CHECK(worst <= 0.05 * scale && p0[0].label == pc[0].label && p0[1].label == pc[1].label, "CUDA classifies like the CPU");

    job j[2] = { { .m = g0, .px = px, .alone = p0 }, { .m = g1, .px = px, .alone = p1 } };
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, run, &j[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    printf("%s two CUDA models from two threads: %d/4 and %d/4 rounds equal to alone, %d failures\n",
           j[0].rounds_same == 4 && j[1].rounds_same == 4 ? "ok  " : "FAIL", j[0].rounds_same, j[1].rounds_same,
           j[0].failures + j[1].failures);
    CHECK(j[0].rounds_same == 4 && j[1].rounds_same == 4 && !j[0].failures && !j[1].failures,
          "concurrent CUDA models give their single-thread results: %s", medgem_last_error());

    medgem_trainer_options o;
    medgem_trainer_options_init(&o);
    o.lr = 5e-3, o.lora_dropout = 0, o.loss_on = MEDGEM_LOSS_ON_ANSWER;
    medgem_trainer *t = NULL;
    CHECK(medgem_trainer_create(g1, &o, &t) == MEDGEM_OK, "trainer: %s", medgem_model_last_error(g1));
    const int labels[2] = { 3, 6 };
    double first = 0, last = 0;
    for (int i = 0; t && i < 8; i++) {
        medgem_step_info info;
        CHECK(medgem_trainer_step(t, px, labels, 2, &info) == MEDGEM_OK, "step: %s", medgem_trainer_last_error(t));
        if (i == 0) first = info.loss;
        last = info.loss;
    }
    printf("%s CUDA trainer: loss %.4f -> %.4f\n", last < first ? "ok  " : "FAIL", first, last);
    CHECK(last < first, "the loss falls on CUDA");
    medgem_trainer_free(t);
    medgem_model_free(g0), medgem_model_free(g1), medgem_model_free(cpu);
    oom_case(px, S);
    free(px);
    return test_finish();
}
