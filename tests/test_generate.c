/* Greedy generation (model/generate.h, engine/jobs/classifier.h) against transformers' generate on the
 * tiny golden model (tests/fixtures/generate/expected.json, made by make_generate_fixture.py):
 * - the new token ids of both images, generated as one batch, equal transformers' exactly (a row
 *   stopping at an extra eos id gets pad after it while the other row goes on);
 * - each step's logits match transformers' KV-cache decoding within 1e-3 at the chosen token and the
 *   8 digits, both from medgem's KV cache (mg_model_prefill, then one mg_model_decode_step per token,
 *   the path mg_generate_greedy takes) and from recomputing the forward over the grown sequence
 *   (prompt with its image block mask, then causal text; positions T, T+1, ...);
 * - mg_classifier_generate's answer text and parsed class equal decode(skip_special_tokens=True)
 *   and the guide's regex. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/image.h"
#include "data/resize.h"
#include "engine/json.h"
#include "engine/jobs/classifier.h"
#include "model/generate.h"
#include "tests/test.h"

#define FIX "tests/fixtures/generate/expected.json"
#define IMAGES "tests/fixtures/classify/"
#define TOL 1e-3

/* The image as the guide's processor gives it: decode, Pillow bilinear resize, normalise. */
static int load_pixels(const char *name, int S, float *dst) {
    char path[256];
    snprintf(path, sizeof path, IMAGES "%s", name);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static unsigned char bytes[1 << 16];
    const size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    mg_image im;
    if (mg_image_decode(bytes, n, path, &im) != MG_OK) return 0;
    unsigned char *rgb = malloc((size_t)S * S * 3);
    const int ok = mg_resize_bilinear(im.rgb, im.w, im.h, rgb, S, S) == MG_OK;
    if (ok) mg_normalize_chw(rgb, S, S, dst);
    free(rgb);
    mg_image_free(&im);
    return ok;
}

/* Step s of image b: the forward over prompt + its first s new tokens, logits at the last position. */
static void check_steps(mg_model *m, const mg_classifier *c, const mg_json *im, const float *pixels,
                        const char *what) {
    const mg_json *tokens = mg_json_get(im, "tokens"), *steps = mg_json_get(im, "steps");
    const int T0 = c->prompt.n;
    double worst = 0;
    for (int s = 0; s < steps->n; s++) {
        const mg_json *ids_j = mg_json_get(&steps->items[s], "ids"), *ref = mg_json_get(&steps->items[s], "logits");
        const int T = T0 + s, nv = ids_j->n;
        int32_t ids[T], types[T], vocab[nv], row = T - 1;
        float got[nv];
        for (int t = 0; t < T; t++) {
            ids[t] = t < T0 ? c->prompt.ids[t] : (int32_t)tokens->items[t - T0].number;
            types[t] = t < T0 ? c->prompt.token_type_ids[t] : 0;
        }
        for (int k = 0; k < nv; k++) vocab[k] = (int32_t)ids_j->items[k].number;
        const mg_model_input in = { .B = 1, .T = T, .ids = ids, .token_type = types, .pixels = pixels, .n_images = 1 };
        const mg_model_head head = { .rows = &row, .R = 1, .vocab = vocab, .n_vocab = nv, .logits = got };
        CHECK(mg_model_forward(m, &in, &head, NULL) == MG_OK, "%s step %d: %s", what, s, mg_last_error());
        for (int k = 0; k < nv; k++) worst = fmax(worst, fabs(got[k] - ref->items[k].number));
    }
    printf("%s %s: %d steps, logits max diff %.2g vs transformers (%.1f%% of tol %g)\n", worst <= TOL ? "ok  " : "FAIL",
           what, steps->n, worst, 100 * worst / TOL, TOL);
    CHECK(worst <= TOL, "%s: step logits within %g", what, TOL);
}

/* The same steps through the KV cache: prefill the prompt, then decode transformers' tokens one by one. */
static void check_cached_steps(mg_model *m, const mg_classifier *c, const mg_json *im, const float *pixels,
                               const char *what) {
    const mg_json *tokens = mg_json_get(im, "tokens"), *steps = mg_json_get(im, "steps");
    const int T0 = c->prompt.n;
    double worst = 0;
    mg_status s = MG_OK;
    for (int st = 0; st < steps->n && s == MG_OK; st++) {
        const mg_json *ids_j = mg_json_get(&steps->items[st], "ids"), *ref = mg_json_get(&steps->items[st], "logits");
        const int nv = ids_j->n;
        int32_t vocab[nv], row = st == 0 ? T0 - 1 : 0;
        float got[nv];
        for (int k = 0; k < nv; k++) vocab[k] = (int32_t)ids_j->items[k].number;
        const mg_model_head head = { .rows = &row, .R = 1, .vocab = vocab, .n_vocab = nv, .logits = got };
        if (st == 0) {
            const mg_model_input in = { .B = 1, .T = T0, .ids = c->prompt.ids, .token_type = c->prompt.token_type_ids,
                                        .pixels = pixels, .n_images = 1 };
            s = mg_model_prefill(m, &in, &head, T0 + steps->n);
        } else {
            const int32_t id = (int32_t)tokens->items[st - 1].number;
            s = mg_model_decode_step(m, &id, &head);
        }
        CHECK(s == MG_OK, "%s cached step %d: %s", what, st, mg_last_error());
        for (int k = 0; s == MG_OK && k < nv; k++) worst = fmax(worst, fabs(got[k] - ref->items[k].number));
    }
    printf("%s %s: %d KV-cache steps, logits max diff %.2g vs transformers (%.1f%% of tol %g)\n",
           worst <= TOL ? "ok  " : "FAIL", what, steps->n, worst, 100 * worst / TOL, TOL);
    CHECK(worst <= TOL, "%s: cached step logits within %g", what, TOL);
}

static void check_case(mg_model *m, const char *name, const mg_json *c, const float *pixels, int S) {
    const char *text = mg_json_get_string(c, "text", NULL);
    const mg_json *eos_j = mg_json_get(c, "eos"), *images = mg_json_get(c, "images");
    const int N = (int)mg_json_get_number(c, "max_new_tokens", 0);
    mg_classifier cl;
    /* NULL text: the classifier's default prompt must be the guide's, which the fixture used */
    const mg_classifier_opts o = { .text = strcmp(name, "hello") ? NULL : text };
    if (mg_classifier_init(&cl, m, &o) != MG_OK) { CHECK(0, "%s: %s", name, mg_last_error()); return; }
    CHECK(cl.prompt.n == (int)mg_json_get_number(c, "prompt_tokens", -1), "%s: prompt of %d tokens", name, cl.prompt.n);

    int eos[8], n_eos = eos_j->n;
    for (int i = 0; i < n_eos; i++) eos[i] = (int)eos_j->items[i].number;
    int32_t tokens[2 * N];
    int n_new[2];
    const mg_generate_args a = { .prompt = cl.prompt.ids, .token_type = cl.prompt.token_type_ids, .T = cl.prompt.n,
                                 .pixels = pixels, .B = 2, .max_new_tokens = N, .eos = eos, .n_eos = n_eos,
                                 .pad = m->cfg.pad_token_id };
    CHECK(mg_generate_greedy(m, &a, tokens, n_new, NULL) == MG_OK, "%s: %s", name, mg_last_error());
    for (int b = 0; b < 2; b++) {
        const mg_json *im = &images->items[b], *want = mg_json_get(im, "tokens");
        int same = want->n == N, want_new = N; /* want_new: up to and including the first eos */
        for (int k = 0; k < N && same; k++) same = tokens[b * N + k] == (int32_t)want->items[k].number;
        for (int k = 0; k < want->n && want_new == N; k++)
            for (int e = 0; e < n_eos; e++)
                if ((int)want->items[k].number == eos[e]) want_new = k + 1;
        char what[96];
        snprintf(what, sizeof what, "%s/%s", name, mg_json_get_string(im, "image", "?"));
        printf("%s %s: tokens %d %d %d ... (%d new), transformers %d %d %d ...\n", same ? "ok  " : "FAIL", what,
               tokens[b * N], tokens[b * N + 1], tokens[b * N + 2], n_new[b], (int)want->items[0].number,
               (int)want->items[1].number, (int)want->items[2].number);
        CHECK(same, "%s: greedy tokens equal transformers'", what);
        CHECK(n_new[b] == want_new, "%s: %d new tokens, expected %d", what, n_new[b], want_new);
        check_steps(m, &cl, im, pixels + (size_t)b * 3 * S * S, what);
        check_cached_steps(m, &cl, im, pixels + (size_t)b * 3 * S * S, what);
    }

    /* the classifier's answers (config eos ids) */
    if (!strcmp(name, "guide") || !strcmp(name, "hello")) {
        int preds[2];
        char *answers[2];
        float logits[2 * 8];
        CHECK(mg_classifier_generate(&cl, pixels, 2, N, preds, answers, logits) == MG_OK, "%s: %s", name, mg_last_error());
        for (int b = 0; b < 2; b++) {
            const mg_json *im = &images->items[b];
            CHECK(answers[b] && !strcmp(answers[b], mg_json_get_string(im, "decoded", "?")), "%s: answer '%s' vs '%s'",
                  name, answers[b] ? answers[b] : "(null)", mg_json_get_string(im, "decoded", "?"));
            CHECK(preds[b] == (int)mg_json_get_number(im, "pred", -9), "%s: pred %d", name, preds[b]);
            free(answers[b]);
        }
    }
    mg_classifier_free(&cl);
}

int main(void) {
    mg_json *fx = NULL;
    mg_model m = { 0 };
    CHECK(mg_json_parse_file(FIX, &fx) == MG_OK, "%s", mg_last_error());
    CHECK(mg_model_open(&m, mg_backend_cpu(), "tests/golden/tiny") == MG_OK, "%s", mg_last_error());
    if (!fx || !m.arena) return test_finish();
    const int S = m.cfg.image_size;
    float *pixels = malloc((size_t)2 * 3 * S * S * sizeof(float));
    const mg_json *cases = mg_json_get(fx, "cases");
    CHECK(cases && cases->n == 3, "three cases");
    const mg_json *imgs = mg_json_get(&cases->items[0], "images");
    for (int b = 0; b < 2; b++)
        CHECK(load_pixels(mg_json_get_string(&imgs->items[b], "image", ""), S, pixels + (size_t)b * 3 * S * S), "image %d", b);
    for (int i = 0; cases && i < cases->n; i++) check_case(&m, cases->items[i].key, &cases->items[i], pixels, S);

    /* bad input: more new tokens than the model has positions */
    mg_classifier cl;
    const mg_classifier_opts o = { 0 };
    if (mg_classifier_init(&cl, &m, &o) == MG_OK) {
        int32_t tok[1];
        int n_new[1];
        const mg_generate_args a = { .prompt = cl.prompt.ids, .token_type = cl.prompt.token_type_ids, .T = cl.prompt.n,
                                     .pixels = pixels, .B = 1, .max_new_tokens = m.cfg.max_positions, .eos = m.cfg.eos_ids,
                                     .n_eos = m.cfg.n_eos };
        CHECK(mg_generate_greedy(&m, &a, tok, n_new, NULL) == MG_ERR_ARG && strstr(mg_last_error(), "positions"),
              "too many new tokens rejected: %s", mg_last_error());
        mg_classifier_free(&cl);
    }
    free(pixels);
    mg_model_free(&m);
    mg_json_free(fx);
    return test_finish();
}
