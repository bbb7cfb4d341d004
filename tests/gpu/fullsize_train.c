/* medgem's LoRA training steps on given batches, for tests/gpu/train_compare.py and the training
 * benchmark (not a unit test):
 *   build/tests/gpu/fullsize_train MODEL_DIR ADAPTER_DIR INPUTS.safetensors OUTPUT.safetensors
 *       [--steps N] [--batch B] [--lr X] [--clip X] [--dropout P] [--recompute] [--max-memory GB] [--cpu]
 * INPUTS (F32): pixel_values [n,3,S,S], input_ids [n,T], token_type_ids [n,T], labels [n,T]
 * (-100 = ignored). Update k (0-based) trains on rows (k*B .. k*B+B-1) mod n, one micro-batch,
 * AdamW (0.9, 0.999, 1e-8, no weight decay) at a constant lr with global-norm clipping. OUTPUT:
 * losses [N] (mean CE over the update's labelled tokens, before the update), grad_norms [N],
 * seconds [N] (wall time of each update, forward + backward + optimizer). Prints the time per
 * update, images/s over the updates after the first two, and the memory medgem allocated and
 * the device's used memory at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/device.h"
#include "engine/optim.h"
#include "model/train_step.h"
#include "tests/test.h"

static int die(const char *what) {
    fprintf(stderr, "fullsize_train: %s\n%s\n", what, mg_last_error());
    return 1;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL_DIR ADAPTER_DIR INPUTS.safetensors OUTPUT.safetensors [--steps N] [--batch B] "
                        "[--lr X] [--clip X] [--dropout P] [--recompute] [--max-memory GB] [--cpu]\n", argv[0]);
        return 2;
    }
    int steps = 20, B = 4;
    double lr = 1e-4, clip = 0, dropout = 0, max_gb = 0;
    bool force_cpu = false, recompute = false;
    for (int i = 5; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--cpu")) force_cpu = true;
        else if (!strcmp(a, "--recompute")) recompute = true;
        else if (!strcmp(a, "--max-memory")) max_gb = atof(v), i++;
        else if (!strcmp(a, "--steps")) steps = atoi(v), i++;
        else if (!strcmp(a, "--batch")) B = atoi(v), i++;
        else if (!strcmp(a, "--lr")) lr = atof(v), i++;
        else if (!strcmp(a, "--clip")) clip = atof(v), i++;
        else if (!strcmp(a, "--dropout")) dropout = atof(v), i++;
        else { fprintf(stderr, "fullsize_train: bad option %s\n", a); return 2; }
    }
    const mg_backend *be;
    char desc[512];
    if (mg_backend_open(force_cpu, &be, desc, sizeof desc) != MG_OK) return die("no backend");
    fprintf(stderr, "medgem: using %s\n", desc);
    mg_model m = { 0 };
    mg_lora lora;
    mg_lora_device dev;
    mg_trainer tr;
    mg_st_file in;
    double t = now_s();
    if (mg_model_open(&m, be, argv[1]) != MG_OK) return die("cannot load the model");
    fprintf(stderr, "model loaded in %.1f s (%.1f MiB of weights)\n", now_s() - t, (double)m.arena_bytes / (1 << 20));
    if (mg_lora_load(argv[2], &m.cfg, &lora) != MG_OK) return die("cannot load the adapter");
    if (mg_lora_device_create(&dev, be, &m.cfg, &lora, true) != MG_OK) return die("adapter on the backend");
    if (mg_trainer_create(&tr, &m, &dev) != MG_OK) return die("trainer");
    tr.recompute = recompute;
    tr.memory_budget = mg_memory_budget(be, &m, max_gb);
    if (mg_st_open(argv[3], &in) != MG_OK) return die("cannot read the inputs");
    const mg_st_tensor *px = mg_st_find(&in, "pixel_values"), *idt = mg_st_find(&in, "input_ids"),
                       *ttt = mg_st_find(&in, "token_type_ids"), *lbt = mg_st_find(&in, "labels");
    if (!px || !idt || !ttt || !lbt || idt->ndim != 2 || px->shape[0] != idt->shape[0]) {
        mg_fail(MG_ERR_SHAPE, NULL, "%s: pixel_values, input_ids, token_type_ids, labels expected", argv[3]);
        return die("bad inputs");
    }
    const int64_t n = idt->shape[0], T = idt->shape[1], px_row = mg_st_numel(px) / n;
    int32_t *ids = test_fixture_ints(idt), *tt = test_fixture_ints(ttt), *labels = test_fixture_ints(lbt);
    float *pixels = malloc((size_t)mg_st_numel(px) * sizeof(float));
    mg_to_f32(pixels, px->data, px->dtype, (size_t)mg_st_numel(px));
    int32_t *bids = malloc((size_t)(B * T) * sizeof(int32_t)), *btt = malloc((size_t)(B * T) * sizeof(int32_t)),
            *blab = malloc((size_t)(B * T) * sizeof(int32_t));
    float *bpx = malloc((size_t)(B * px_row) * sizeof(float));
    float *losses = calloc((size_t)steps, sizeof(float)), *norms = calloc((size_t)steps, sizeof(float)),
          *secs = calloc((size_t)steps, sizeof(float));

    const mg_adamw_config adam = { .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0, .max_grad_norm = clip };
    double timed = 0;
    for (int k = 0; k < steps; k++) {
        for (int64_t j = 0; j < B; j++) {
            const int64_t r = (k * B + j) % n;
            memcpy(bids + j * T, ids + r * T, (size_t)T * sizeof(int32_t));
            memcpy(btt + j * T, tt + r * T, (size_t)T * sizeof(int32_t));
            memcpy(blab + j * T, labels + r * T, (size_t)T * sizeof(int32_t));
            memcpy(bpx + j * px_row, pixels + r * px_row, (size_t)px_row * sizeof(float));
        }
        const mg_model_input inp = { .B = B, .T = T, .ids = bids, .token_type = btt, .pixels = bpx, .n_images = B };
        const int64_t targets = mg_count_targets(blab, B, T);
        double sum = 0, norm = 0;
        t = now_s();
        dev.dropout = (float)dropout, dev.seed = (uint64_t)k + 1;
        if (mg_train_step(&tr, &inp, blab, 1.0f, &sum) != MG_OK) return die("train step");
        dev.dropout = 0;
        if (mg_adamw_update(be, dev.params, dev.grads, dev.m, dev.v, dev.act, dev.n_params, dev.scratch,
                            1.0 / (double)targets, &adam, lr, k + 1, &norm) != MG_OK)
            return die("optimizer update");
        secs[k] = (float)(now_s() - t);
        if (k >= 2) timed += secs[k];
        losses[k] = (float)(sum / (double)targets), norms[k] = (float)norm;
        fprintf(stderr, "update %2d: loss %.6f grad norm %.6f  %.3f s  (%d vision layers kept)\n", k + 1, losses[k],
                norms[k], secs[k], tr.vision_keep);
    }
    if (steps > 2)
        fprintf(stderr, "medgem train: %.3f images/s over updates 3..%d (batch %d, T %lld)\n",
                (double)(steps - 2) * B / timed, steps, B, (long long)T);
    mg_gpu_info gi;
    mg_gpu_query(&gi);
    const double arena = (double)mg_tape_arena_bytes(tr.tape);
    fprintf(stderr, "medgem memory: weights %.2f GB + activations %.2f GB + gradients %.2f GB + LoRA state %.2f GB = %.2f GB; device used %.2f GB\n",
            m.arena_bytes / 1e9, tr.peak_bytes / 1e9, arena / 1e9, dev.n_params * 18.0 / 1e9,
            (m.arena_bytes + tr.peak_bytes + arena + dev.n_params * 18.0) / 1e9,
            gi.available ? (double)(gi.total_mem - gi.free_mem) / 1e9 : 0.0);
    const int64_t shape[1] = { steps };
    const mg_st_entry e[3] = { { "losses", MG_F32, 1, shape, losses }, { "grad_norms", MG_F32, 1, shape, norms },
                               { "seconds", MG_F32, 1, shape, secs } };
    if (mg_st_write(argv[4], e, 3, NULL, 0) != MG_OK) return die("cannot write the outputs");
    free(ids), free(tt), free(labels), free(pixels), free(bids), free(btt), free(blab), free(bpx);
    free(losses), free(norms), free(secs);
    mg_st_close(&in);
    mg_trainer_free(&tr);
    mg_lora_device_free(&dev);
    mg_lora_free(&lora);
    mg_model_free(&m);
    mg_backend_close(be);
    return 0;
}
