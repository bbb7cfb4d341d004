/* LoRA training on the CPU backend against PEFT (tests/golden/README.md, "LoRA"): the tiny model,
 * tests/golden/lora_adapter (B != 0) and the fixture's training batch (two samples, images, the
 * guide's label masking) through mg_train_step and the AdamW update.
 * 1. the loss equals transformers' (mean CE over the labelled targets) within 1e-4 relative;
 * 2. every one of the 94 LoRA gradients (47 modules x A, B) matches PEFT's fp32 autograd within
 *    1e-3 of its max |value| (the bound; fp32 on both sides, so it is met by far);
 * 3. five AdamW updates (lr 1e-3, no clipping) give PEFT's five losses within 1e-4 relative and
 *    its final weights within 1e-3. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/optim.h"
#include "model/train_step.h"
#include "tests/train_fixture.h"

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
    compare_modules(fx, &lora, grads, "grad.", 1e-3, false);
    /* keeping or recomputing layers changes where activations live, never a bit of the result; with
     * dropout too (each LoRA's mask is drawn again from its seed wherever its layer is replayed).
     * The tape's gradient arena stays within what the memory plan counts for it (one layer's
     * activations, vision or text, whichever is larger). */
    static const struct {
        bool recompute;
        size_t budget;
        const char *what;
    } plans[] = { { false, 0, "text kept, vision recomputed" },
                  { true, 0, "text and vision layers recomputed" },
                  { false, SIZE_MAX, "every layer kept" },
                  { true, SIZE_MAX, "text recomputed, vision kept" } };
    const size_t es = mg_dtype_size(m.be->act_dtype);
    for (int drop = 0; drop < 2; drop++) {
        double ref_sum = sum;
        float *ref_g = grads, *drop_g = NULL;
        for (size_t i = drop ? 0 : 1; i < sizeof plans / sizeof plans[0]; i++) {
            mg_lora_device dev2;
            mg_trainer tr2;
            double sum2 = 0;
            s = mg_lora_device_create(&dev2, m.be, &m.cfg, &lora, true);
            if (s == MG_OK) s = mg_trainer_create(&tr2, &m, &dev2);
            tr2.recompute = plans[i].recompute, tr2.memory_budget = plans[i].budget;
            dev2.dropout = drop ? 0.1f : 0.0f, dev2.seed = 7;
            if (s == MG_OK) s = mg_train_step(&tr2, &b.in, b.labels, scale, &sum2);
            float *g2 = malloc((size_t)lora.n_params * sizeof(float));
            m.be->copy_out(m.be->ctx, g2, dev2.grads, (size_t)lora.n_params * sizeof(float));
            const size_t arena = mg_tape_arena_bytes(tr2.tape),
                         vis = mg_siglip_layer_train_bytes(&m.cfg, &dev2, b.in.n_images, es),
                         text = mg_gemma3_layer_train_bytes(&m.cfg, &dev2, b.in.B * b.in.T, es);
            printf("     %s%s: %d of %d vision layers kept, %zu bytes of step buffers, %zu of gradients (plan %zu)\n",
                   plans[i].what, drop ? ", dropout 0.1" : "", tr2.vision_keep, m.cfg.v_layers, tr2.work_bytes, arena,
                   vis > text ? vis : text);
            CHECK(s == MG_OK && arena <= (vis > text ? vis : text), "%s: the gradient arena (%zu bytes) within the "
                  "plan's %zu: %s", plans[i].what, arena, vis > text ? vis : text, mg_last_error());
            if (drop && i == 0) {
                CHECK(s == MG_OK && sum2 != sum, "dropout changes the loss (%.9g, %.9g without)", sum2, sum);
                ref_sum = sum2, ref_g = drop_g = g2;
            } else {
                CHECK(s == MG_OK && sum2 == ref_sum && !memcmp(g2, ref_g, (size_t)lora.n_params * sizeof(float)),
                      "%s%s (%d vision layers kept): the same loss and gradients, bit for bit: %s", plans[i].what,
                      drop ? ", dropout 0.1" : "", tr2.vision_keep, mg_last_error());
                free(g2);
            }
            mg_trainer_free(&tr2);
            mg_lora_device_free(&dev2);
        }
        free(drop_g);
    }

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
    compare_modules(fx, &lora, params, "final.", 1e-3, false);

    free(grads), free(params), free(b.ids), free(b.tt), free(b.labels), free(b.pixels);
    mg_trainer_free(&tr);
    mg_lora_device_free(&dev);
    mg_lora_free(&lora);
    mg_st_close(fx);
    mg_model_free(&m);
    return test_finish();
}
