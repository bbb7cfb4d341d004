/* The PEFT training fixture (tests/golden/lora_fp32.safetensors) for the CPU and GPU training
 * tests: its batch, PEFT's key of each adapter tensor, and a per-tensor comparison. */
#ifndef MG_TEST_TRAIN_FIXTURE_H
#define MG_TEST_TRAIN_FIXTURE_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/lora.h"
#include "tests/test.h"

#define MODEL_DIR "tests/golden/tiny"
#define ADAPTER "tests/golden/lora_adapter"
#define FIXTURE "tests/golden/lora_fp32.safetensors"

typedef struct {
    mg_model_input in;
    int32_t *ids, *tt, *labels;
    float *pixels;
} batch;

static inline int load_batch(const mg_st_file *fx, batch *b) {
    const mg_st_tensor *px = mg_st_find(fx, "pixel_values"), *ids = mg_st_find(fx, "input_ids"),
                       *tt = mg_st_find(fx, "token_type_ids"), *lab = mg_st_find(fx, "labels");
    CHECK(px && ids && tt && lab, "%s has the training batch", FIXTURE);
    if (!(px && ids && tt && lab)) return 0;
    b->ids = test_fixture_ints(ids), b->tt = test_fixture_ints(tt), b->labels = test_fixture_ints(lab);
    b->pixels = malloc((size_t)mg_st_numel(px) * sizeof(float));
    mg_to_f32(b->pixels, px->data, px->dtype, (size_t)mg_st_numel(px));
    b->in = (mg_model_input){ .B = ids->shape[0], .T = ids->shape[1], .ids = b->ids, .token_type = b->tt,
                              .pixels = b->pixels, .n_images = px->shape[0] };
    return 1;
}

/* PEFT's adapter key of a module's A (which 0) or B (1), with prefix "grad." or "final.". */
static inline void key_of(const mg_lora_module *mod, int which, const char *prefix, char *out, size_t cap) {
    snprintf(out, cap, "%sbase_model.model.model.%s.layers.%d.%s.lora_%c.weight", prefix,
             mod->comp == MG_COMP_TEXT ? "language_model" : "vision_tower.encoder", mod->layer,
             mg_lora_module_name(mod->comp, mod->kind), which ? 'B' : 'A');
}

/* ‖got - ref‖₂ / ‖ref‖₂ */
static inline double rel_l2(const float *got, const float *ref, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) d += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]), m += (double)ref[i] * ref[i];
    return m > 0 ? sqrt(d / m) : sqrt(d);
}

/* max |got - ref| / max |ref| */
static inline double rel_err(const float *got, const float *ref, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)got[i] - ref[i])), m = fmax(m, fabs((double)ref[i]));
    return m > 0 ? d / m : d;
}

/* Compares every module's A and B (or their gradients) with the fixture's "prefix" tensors, by
 * max-relative error (l2 false) or relative L2 error (l2 true). */
static inline void compare_modules(const mg_st_file *fx, const mg_lora *lora, const float *values, const char *prefix,
                                   double tol, bool l2) {
    int n_checked = 0, n_bad = 0;
    double worst = 0;
    char worst_key[256] = "", key[256];
    for (int i = 0; i < lora->n; i++) {
        const mg_lora_module *mod = &lora->mods[i];
        for (int which = 0; which < 2; which++) {
            key_of(mod, which, prefix, key, sizeof key);
            const mg_st_tensor *t = mg_st_find(fx, key);
            const int64_t n = (int64_t)mod->r * (which ? mod->out : mod->in);
            if (!t || mg_st_numel(t) != n) {
                CHECK(0, "%s is in the fixture with %lld elements", key, (long long)n);
                continue;
            }
            float *ref = malloc((size_t)n * sizeof(float));
            mg_to_f32(ref, t->data, t->dtype, (size_t)n);
            const float *got = values + ((which ? mod->B : mod->A) - lora->params);
            const double e = l2 ? rel_l2(got, ref, n) : rel_err(got, ref, n);
            if (n_checked == 0)
                printf("     %s: got %+.6e %+.6e  ref %+.6e %+.6e\n", key, got[0], got[1], ref[0], ref[1]);
            if (e > worst) worst = e, snprintf(worst_key, sizeof worst_key, "%s", key);
            n_bad += e > tol;
            n_checked++;
            free(ref);
        }
    }
    printf("     %d %s tensors, worst %s error %.3g (%s), %.1f%% of the %.0e bound\n", n_checked, prefix,
           l2 ? "relative L2" : "max-rel", worst, worst_key, 100 * worst / tol, tol);
    CHECK(n_checked == 2 * lora->n && n_bad == 0, "%d of %d %s tensors within %g of PEFT", n_checked - n_bad,
          2 * lora->n, prefix, tol);
}

#endif
