/* medgem's forward from token ids and pixels, for tests/gpu/fullsize_compare.py (not a unit test):
 *   build/tests/gpu/fullsize_forward MODEL_DIR INPUTS.safetensors OUTPUT.safetensors [--cpu] [--batch N]
 * INPUTS (F32, as tests/golden's dumps): pixel_values [B,3,S,S], input_ids [B,T], token_type_ids
 * [B,T]; one image per row. OUTPUT (BF16 on the GPU backend, whose values are bf16; F32 on --cpu):
 *   vision_out [B,P,Cv], projector_out [B,mm,C], logits [B,V] at each row's last position.
 * Rows run N at a time (default 8), so a batch of 64 fits in memory. Prints the backend and the
 * time per chunk. Exit status 0 on success; errors print the library's message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/medgem_model.h"

/* Where the observer copies the two tower stages of the current chunk. */
typedef struct {
    const mg_backend *be;
    float *vision, *projector; /* (chunk, P, Cv), (chunk, mm, C) */
} capture;

static void on_stage(void *user, const char *stage, const void *x, int64_t n) {
    capture *c = user;
    if (!strcmp(stage, "vision_out")) c->be->download(c->be->ctx, c->vision, x, n);
    if (!strcmp(stage, "projector_out")) c->be->download(c->be->ctx, c->projector, x, n);
}

static int die(const char *what) {
    fprintf(stderr, "fullsize_forward: %s\n%s\n", what, mg_last_error());
    return 1;
}

static float *as_f32(const mg_st_tensor *t) {
    float *f = malloc((size_t)mg_st_numel(t) * sizeof(float));
    if (f) mg_to_f32(f, t->data, t->dtype, (size_t)mg_st_numel(t));
    return f;
}

/* Writes the outputs, as bf16 when the backend computed in bf16 (exact), else fp32. */
static mg_status write_outputs(const char *path, mg_dtype dtype, float *const data[3], const int64_t shapes[3][3]) {
    static const char *const names[3] = { "vision_out", "projector_out", "logits" };
    const int ndim[3] = { 3, 3, 2 };
    mg_st_entry e[3];
    uint16_t *half[3] = { NULL, NULL, NULL };
    mg_status s = MG_OK;
    for (int i = 0; i < 3; i++) {
        int64_t n = 1;
        for (int d = 0; d < ndim[i]; d++) n *= shapes[i][d];
        e[i] = (mg_st_entry){ .name = names[i], .dtype = dtype, .ndim = ndim[i], .shape = shapes[i], .data = data[i] };
        if (dtype != MG_BF16) continue;
        if (!(half[i] = malloc((size_t)n * sizeof(uint16_t)))) s = mg_fail(MG_ERR_OOM, NULL, "output %s", names[i]);
        for (int64_t k = 0; half[i] && k < n; k++) half[i][k] = mg_f32_to_bf16(data[i][k]);
        e[i].data = half[i];
    }
    if (s == MG_OK) s = mg_st_write(path, e, 3, NULL, 0);
    for (int i = 0; i < 3; i++) free(half[i]);
    return s;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR INPUTS.safetensors OUTPUT.safetensors [--cpu] [--batch N]\n", argv[0]);
        return 2;
    }
    bool force_cpu = false;
    int64_t chunk = 8;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--cpu")) force_cpu = true;
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc && atoi(argv[i + 1]) > 0) chunk = atoi(argv[++i]);
        else { fprintf(stderr, "fullsize_forward: bad option %s\n", argv[i]); return 2; }
    }
    const mg_backend *be;
    char desc[512];
    if (mg_backend_open(force_cpu, &be, desc, sizeof desc) != MG_OK) return die("no backend");
    fprintf(stderr, "medgem: using %s\n", desc);
    mg_model m = { 0 };
    mg_st_file in;
    if (mg_model_open(&m, be, argv[1]) != MG_OK) return die("cannot load the model");
    if (mg_st_open(argv[2], &in) != MG_OK) return die("cannot read the inputs");
    const mg_st_tensor *px = mg_st_find(&in, "pixel_values"), *idt = mg_st_find(&in, "input_ids"),
                       *ttt = mg_st_find(&in, "token_type_ids");
    const int S = m.cfg.image_size, G = S / m.cfg.patch_size, mm = m.cfg.mm_tokens_per_image;
    if (!px || !idt || !ttt || idt->ndim != 2 || px->ndim != 4 || px->shape[0] != idt->shape[0] ||
        px->shape[2] != S || px->shape[3] != S || mg_st_numel(ttt) != mg_st_numel(idt)) {
        mg_fail(MG_ERR_SHAPE, "write pixel_values [B,3,S,S], input_ids [B,T], token_type_ids [B,T], one image a row",
                "%s: missing or mismatched inputs", argv[2]);
        return die("bad inputs");
    }
    const int64_t B = idt->shape[0], T = idt->shape[1], V = m.cfg.vocab, Cv = m.cfg.v_hidden, C = m.cfg.hidden;
    const int64_t P = (int64_t)G * G, px_row = 3 * (int64_t)S * S;
    float *ids_f = as_f32(idt), *tt_f = as_f32(ttt), *pixels = as_f32(px);
    int32_t *ids = malloc((size_t)(B * T) * sizeof(int32_t)), *tt = malloc((size_t)(B * T) * sizeof(int32_t));
    int32_t *rows = malloc((size_t)chunk * sizeof(int32_t));
    float *vision = malloc((size_t)(B * P * Cv) * sizeof(float)), *proj = malloc((size_t)(B * mm * C) * sizeof(float));
    float *logits = malloc((size_t)(B * V) * sizeof(float));
    if (!ids_f || !tt_f || !pixels || !ids || !tt || !rows || !vision || !proj || !logits) {
        mg_fail(MG_ERR_OOM, NULL, "host buffers for %lld rows", (long long)B);
        return die("out of memory");
    }
    for (int64_t i = 0; i < B * T; i++) ids[i] = (int32_t)ids_f[i], tt[i] = (int32_t)tt_f[i];

    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
        const int64_t n = B - b0 < chunk ? B - b0 : chunk;
        for (int64_t r = 0; r < n; r++) rows[r] = (int32_t)(r * T + T - 1);
        capture cap = { .be = be, .vision = vision + b0 * P * Cv, .projector = proj + b0 * mm * C };
        const mg_observer obs = { on_stage, &cap };
        const mg_model_input inp = { .B = n, .T = T, .ids = ids + b0 * T, .token_type = tt + b0 * T,
                                     .pixels = pixels + b0 * px_row, .n_images = n };
        const mg_model_head head = { .rows = rows, .R = n, .logits = logits + b0 * V };
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (mg_model_forward(&m, &inp, &head, &obs) != MG_OK) return die("forward failed");
        clock_gettime(CLOCK_MONOTONIC, &t1);
        fprintf(stderr, "rows %lld..%lld (T=%lld): %.3f s\n", (long long)b0, (long long)(b0 + n - 1), (long long)T,
                (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    }
    float *const data[3] = { vision, proj, logits };
    const int64_t shapes[3][3] = { { B, P, Cv }, { B, mm, C }, { B, V, 0 } };
    if (write_outputs(argv[3], be->act_dtype, data, shapes) != MG_OK) return die("cannot write the outputs");
    free(ids_f), free(tt_f), free(pixels), free(ids), free(tt), free(rows), free(vision), free(proj), free(logits);
    mg_st_close(&in);
    mg_model_free(&m);
    mg_backend_close(be);
    return 0;
}
