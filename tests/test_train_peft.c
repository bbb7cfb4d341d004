/* LoRA training on the CPU backend against PEFT (tests/golden/README.md, "LoRA"): the tiny model,
 * tests/golden/lora_adapter (B != 0) and the fixture's training batch (two samples, images, the
 * guide's label masking) through mg_train_step and the AdamW update.
 * 1. the loss equals transformers' (mean CE over the labelled targets) within 1e-4 relative;
 * 2. every one of the 94 LoRA gradients (47 modules x A, B) matches PEFT's fp32 autograd within
 *    1e-3 of its max |value| (the bound; fp32 on both sides, so it is met by far);
 * 3. five AdamW updates (lr 1e-3, no clipping) give PEFT's five losses within 1e-4 relative and
 *    its final weights within 1e-3. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/optim.h"
#include "model/train_step.h"
#include "tests/test.h"

#define MODEL_DIR "tests/golden/tiny"
#define ADAPTER "tests/golden/lora_adapter"
#define FIXTURE "tests/golden/lora_fp32.safetensors"

typedef struct {
    mg_model_input in;
    int32_t *ids, *tt, *labels;
    float *pixels;
} batch;

static int load_batch(const mg_st_file *fx, batch *b) {
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
static void key_of(const mg_lora_module *mod, int which, const char *prefix, char *out, size_t cap) {
    snprintf(out, cap, "%sbase_model.model.model.%s.layers.%d.%s.lora_%c.weight", prefix,
             mod->comp == MG_COMP_TEXT ? "language_model" : "vision_tower.encoder", mod->layer,
             mg_lora_module_name(mod->comp, mod->kind), which ? 'B' : 'A');
}

/* max |got - ref| / max |ref| */
static double rel_err(const float *got, const float *ref, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)got[i] - ref[i])), m = fmax(m, fabs((double)ref[i]));
    return m > 0 ? d / m : d;
}

/* Compares every module's A and B (or their gradients) with the fixture's "prefix" tensors. */
static void compare_modules(const mg_st_file *fx, const mg_lora *lora, const float *values, const char *prefix,
                            double tol) {
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
            const double e = rel_err(got, ref, n);
            if (n_checked == 0)
                printf("     %s: got %+.6e %+.6e  ref %+.6e %+.6e\n", key, got[0], got[1], ref[0], ref[1]);
            if (e > worst) worst = e, snprintf(worst_key, sizeof worst_key, "%s", key);
            n_bad += e > tol;
            n_checked++;
            free(ref);
        }
    }
    printf("     %d %s tensors, worst max-rel error %.3g (%s), %.1f%% of the %.0e bound\n", n_checked, prefix, worst,
           worst_key, 100 * worst / tol, tol);
    CHECK(n_checked == 2 * lora->n && n_bad == 0, "%d of %d %s tensors within %g of PEFT", n_checked - n_bad,
          2 * lora->n, prefix, tol);
}

int main(void) {
    mg_model m;
    mg_status s = mg_model_open(&m, mg_backend_cpu(), MODEL_DIR);
    CHECK(s == MG_OK, "open %s: %s", MODEL_DIR, mg_last_error());
    mg_st_file fxf, *fx = &fxf;
    s = mg_st_open(FIXTURE, fx);
    CHECK(s == MG_OK, "open %s: %s", FIXTURE, mg_last_error());
    mg_lora lora;
    s = mg_lora_load(ADAPTER, &m.cfg, &lora);
    CHECK(s == MG_OK, "load %s: %s", ADAPTER, mg_last_error());
    if (s != MG_OK) return test_finish();
    batch b;
    if (!load_batch(fx, &b)) return test_finish();

    mg_lora_device dev;
    mg_trainer tr;
    CHECK(mg_lora_device_create(&dev, m.be, &m.cfg, &lora, true) == MG_OK, "adapter on the backend: %s",
          mg_last_error());
    CHECK(mg_trainer_create(&tr, &m, &dev) == MG_OK, "trainer: %s", mg_last_error());
    const int64_t n_targets = mg_count_targets(b.labels, b.in.B, b.in.T);
    const float scale = 1.0f / (float)n_targets;

    /* 1-2: loss and gradients of the first step */
    float ref_loss, ref_losses[5];
    mg_to_f32(&ref_loss, mg_st_find(fx, "loss")->data, MG_F32, 1);
    mg_to_f32(ref_losses, mg_st_find(fx, "adamw_losses")->data, MG_F32, 5);
    double sum = 0;
    s = mg_train_step(&tr, &b.in, b.labels, scale, &sum);
    CHECK(s == MG_OK, "train step: %s", mg_last_error());
    const double loss = sum / (double)n_targets;
    printf("     loss %.7f vs PEFT %.7f (rel %.2g) over %lld targets\n", loss, ref_loss,
           fabs(loss - ref_loss) / ref_loss, (long long)n_targets);
    CHECK(fabs(loss - ref_loss) <= 1e-4 * ref_loss, "loss within 1e-4 of PEFT's");
    float *grads = malloc((size_t)lora.n_params * sizeof(float));
    m.be->copy_out(m.be->ctx, grads, dev.grads, (size_t)lora.n_params * sizeof(float));
    compare_modules(fx, &lora, grads, "grad.", 1e-3);

    /* 3: five AdamW updates on the same batch (the first uses the gradients above) */
    const mg_adamw_config adam = { .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0, .max_grad_norm = 0 };
    double losses[5] = { loss };
    for (int step = 1; step <= 5 && s == MG_OK; step++) {
        if (step > 1) {
            sum = 0;
            s = mg_train_step(&tr, &b.in, b.labels, scale, &sum);
            losses[step - 1] = sum / (double)n_targets;
        }
        double norm;
        if (s == MG_OK)
            s = mg_adamw_update(m.be, dev.params, dev.grads, dev.m, dev.v, dev.act, dev.n_params, dev.scratch, 1.0, &adam,
                                1e-3, step, &norm);
    }
    CHECK(s == MG_OK, "five AdamW steps: %s", mg_last_error());
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        const double e = fabs(losses[i] - ref_losses[i]) / ref_losses[i];
        printf("     AdamW loss %d: %.6f vs PEFT %.6f (rel %.2g)\n", i, losses[i], ref_losses[i], e);
        worst = fmax(worst, e);
    }
    CHECK(worst <= 1e-4, "the 5 AdamW losses within 1e-4 of PEFT's (worst %.2g)", worst);
    float *params = malloc((size_t)lora.n_params * sizeof(float));
    CHECK(mg_lora_device_download(&dev, params, NULL, NULL) == MG_OK, "download: %s", mg_last_error());
    compare_modules(fx, &lora, params, "final.", 1e-3);

    free(grads), free(params), free(b.ids), free(b.tt), free(b.labels), free(b.pixels);
    mg_trainer_free(&tr);
    mg_lora_device_free(&dev);
    mg_lora_free(&lora);
    mg_st_close(fx);
    mg_model_free(&m);
    return test_finish();
}
