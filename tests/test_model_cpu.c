/* The CPU forward of the tiny random Gemma3ForConditionalGeneration (tests/golden/tiny/) against
 * transformers' fp32 eager dumps (tests/golden/tiny_fp32.safetensors) at every stage: vision_out,
 * projector_out, embeds, hidden_0..hidden_{L-1}, final_norm_out, logits. Each stage must exist in
 * the fixture and be produced by the forward, and match within 1e-4 of the reference's max |value|.
 * Prints, per stage, the first values beside the reference and the error (STYLE habit 9). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/medgem_model.h"
#include "tests/test.h"

#define MODEL_DIR "tests/golden/tiny"
#define FIXTURE "tests/golden/tiny_fp32.safetensors"
#define TOL 1e-4

typedef struct {
    const mg_st_file *fx;
    const mg_backend *be;
    char seen[MG_MAX_LAYERS + 8][32]; /* stages the forward reported */
    int n_seen;
} stage_check;

static void check_stage(void *user, const char *stage, const void *x, int64_t n) {
    stage_check *sc = user;
    snprintf(sc->seen[sc->n_seen++], sizeof sc->seen[0], "%s", stage);
    const mg_st_tensor *t = mg_st_find(sc->fx, stage);
    CHECK(t != NULL, "stage %s is missing from %s", stage, FIXTURE);
    if (!t) return;
    CHECK(mg_st_numel(t) == n, "stage %s: %lld values, fixture has %lld", stage, (long long)n,
          (long long)mg_st_numel(t));
    if (mg_st_numel(t) != n) return;
    float *got = malloc((size_t)n * sizeof(float)), *ref32 = malloc((size_t)n * sizeof(float));
    double *ref = malloc((size_t)n * sizeof(double));
    sc->be->download(sc->be->ctx, got, x, n);
    mg_to_f32(ref32, t->data, t->dtype, (size_t)n);
    for (int64_t i = 0; i < n; i++) ref[i] = ref32[i];
    printf("     %-15s got", stage);
    for (int i = 0; i < 4 && i < n; i++) printf(" %+.6f", got[i]);
    printf("  ref");
    for (int i = 0; i < 4 && i < n; i++) printf(" %+.6f", ref[i]);
    printf("\n");
    check_close(stage, got, ref, (size_t)n, TOL);
    free(got), free(ref32), free(ref);
}

int main(void) {
    mg_model m;
    mg_st_file fx;
    mg_status s = mg_model_open(&m, mg_backend_cpu(), MODEL_DIR);
    CHECK(s == MG_OK, "loading %s: %s", MODEL_DIR, mg_last_error());
    if (s != MG_OK) return test_finish();
    s = mg_st_open(FIXTURE, &fx);
    CHECK(s == MG_OK, "opening %s: %s", FIXTURE, mg_last_error());
    if (s != MG_OK) return test_finish();
    const mg_st_tensor *px = mg_st_find(&fx, "pixel_values"), *ids_t = mg_st_find(&fx, "input_ids"),
                       *tt_t = mg_st_find(&fx, "token_type_ids");
    CHECK(px && ids_t && tt_t && ids_t->ndim == 2, "%s needs pixel_values, input_ids [B,T], token_type_ids", FIXTURE);
    if (!(px && ids_t && tt_t && ids_t->ndim == 2)) return test_finish();

    const int64_t B = ids_t->shape[0], T = ids_t->shape[1], N = px->shape[0], V = m.cfg.vocab;
    int32_t *ids = test_fixture_ints(ids_t), *tt = test_fixture_ints(tt_t), *rows = malloc((size_t)(B * T) * sizeof(int32_t));
    float *pixels = malloc((size_t)mg_st_numel(px) * sizeof(float)), *logits = malloc((size_t)(B * T * V) * sizeof(float));
    mg_to_f32(pixels, px->data, px->dtype, (size_t)mg_st_numel(px));
    for (int64_t i = 0; i < B * T; i++) rows[i] = (int32_t)i;
    printf("model %s: L=%d C=%d V=%d, vision Lv=%d Cv=%d S=%d p=%d; batch B=%lld T=%lld images=%lld\n", MODEL_DIR,
           m.cfg.n_layers, m.cfg.hidden, m.cfg.vocab, m.cfg.v_layers, m.cfg.v_hidden, m.cfg.image_size,
           m.cfg.patch_size, (long long)B, (long long)T, (long long)N);

    stage_check sc = { .fx = &fx, .be = m.be };
    const mg_observer obs = { check_stage, &sc };
    const mg_model_input in = { .B = B, .T = T, .ids = ids, .token_type = tt, .pixels = pixels, .n_images = N };
    const mg_model_head head = { .rows = rows, .R = B * T, .logits = logits };
    s = mg_model_forward(&m, &in, &head, &obs);
    CHECK(s == MG_OK, "forward: %s", mg_last_error());

    /* every stage of the list must have been both dumped and computed */
    char expected[MG_MAX_LAYERS + 8][32];
    int n_exp = 0;
    snprintf(expected[n_exp++], 32, "vision_out");
    snprintf(expected[n_exp++], 32, "projector_out");
    snprintf(expected[n_exp++], 32, "embeds");
    for (int l = 0; l < m.cfg.n_layers; l++) snprintf(expected[n_exp++], 32, "hidden_%d", l);
    snprintf(expected[n_exp++], 32, "final_norm_out");
    snprintf(expected[n_exp++], 32, "logits");
    for (int e = 0; e < n_exp; e++) {
        int found = 0;
        for (int i = 0; i < sc.n_seen; i++) found |= !strcmp(sc.seen[i], expected[e]);
        CHECK(found, "stage %s was not produced by the forward", expected[e]);
        CHECK(mg_st_find(&fx, expected[e]) != NULL, "stage %s is missing from %s", expected[e], FIXTURE);
    }
    /* the logits handed back to the host equal the device ones the observer checked */
    const mg_st_tensor *lt = mg_st_find(&fx, "logits");
    if (lt && mg_st_numel(lt) == B * T * V) {
        float *ref32 = malloc((size_t)(B * T * V) * sizeof(float));
        double *ref = malloc((size_t)(B * T * V) * sizeof(double));
        mg_to_f32(ref32, lt->data, lt->dtype, (size_t)(B * T * V));
        for (int64_t i = 0; i < B * T * V; i++) ref[i] = ref32[i];
        check_close("logits returned to the host", logits, ref, (size_t)(B * T * V), TOL);
        free(ref32), free(ref);
    }
    /* precomputed soft tokens (mg_model_image_features) give the pixel path's logits bit for bit */
    {
        const int64_t per = (int64_t)m.cfg.mm_tokens_per_image * m.cfg.hidden;
        void *feats = m.be->alloc(m.be->ctx, (size_t)(N * per) * mg_dtype_size(m.be->act_dtype));
        void **out = malloc((size_t)N * sizeof *out);
        float *logits2 = malloc((size_t)(B * T * V) * sizeof(float));
        /* image k into slot N-1-k: the pointers, not the layout, say which image is which */
        for (int64_t k = 0; k < N; k++) out[k] = (char *)feats + (size_t)((N - 1 - k) * per) * mg_dtype_size(m.be->act_dtype);
        s = mg_model_image_features(&m, pixels, N, out);
        CHECK(s == MG_OK, "mg_model_image_features: %s", mg_last_error());
        mg_model_input in2 = in;
        in2.pixels = NULL, in2.soft_tokens = (const void *const *)out;
        const mg_model_head head2 = { .rows = rows, .R = B * T, .logits = logits2 };
        if (s == MG_OK) s = mg_model_forward(&m, &in2, &head2, NULL);
        CHECK(s == MG_OK, "forward from soft tokens: %s", mg_last_error());
        int64_t diff = 0;
        for (int64_t i = 0; s == MG_OK && i < B * T * V; i++) diff += logits2[i] != logits[i];
        CHECK(s == MG_OK && diff == 0, "logits from soft tokens equal the pixel path's exactly (%lld of %lld differ)",
              (long long)diff, (long long)(B * T * V));
        m.be->free(m.be->ctx, feats);
        free(out), free(logits2);
    }
    free(ids), free(tt), free(rows), free(pixels), free(logits);
    mg_st_close(&fx);
    mg_model_free(&m);
    int rc = test_finish();
    printf("%s\n", rc ? "golden CPU forward: FAIL" : "golden CPU forward: OK");
    return rc;
}
