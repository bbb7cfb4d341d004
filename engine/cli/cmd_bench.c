/* medgem bench: evaluation throughput of a model directory (engine/jobs/bench.h): score-mode forwards of
 * a synthetic batch (classify-layout prompt of --tokens ids, random pixels), timed after warm-ups,
 * reported as images/s and ms per batch with the weight and activation memory; text or one JSON
 * object. tests/bench/bench_eval_hf.py runs it beside transformers on the same GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cli/commands.h"
#include "engine/json.h"
#include "engine/jobs/bench.h"
#include "tokenizer/prompt.h"

static const char *USAGE =
    "usage: medgem bench --model DIR [options]\n"
    "  --model DIR     Hugging Face model directory (config.json + safetensors; tokenizer.model optional)\n"
    "  --batch N       images per forward (default 32)\n"
    "  --tokens T      prompt length: 256 image tokens + 12 template tokens + filler text (default 360)\n"
    "  --iters K       timed forwards; the median is reported (default 5)\n"
    "  --warmup W      untimed forwards first (default 1)\n"
    "  --json          print one JSON object\n"
    "  --cpu           run on the fp32 CPU reference backend even when a GPU is available\n"
    "Each forward is the eval score path: the whole prompt, logits at the last position over 8 ids.\n";

static int fail(const char *what) {
    fprintf(stderr, "medgem bench: %s\n%s\n", what, mg_last_error());
    return 1;
}

/* <start_of_turn>/<end_of_turn> from the model's tokenizer when it has one (else -1: stand-ins). */
static mg_status turn_ids(const mg_config *cfg, int *sot, int *eot) {
    *sot = *eot = -1;
    if (!cfg->tokenizer_path[0]) return MG_OK;
    mg_spm *spm;
    mg_chat_ids chat;
    MG_TRY(mg_spm_load(cfg->tokenizer_path, &spm));
    const mg_status s = mg_chat_ids_init(&chat, cfg, spm);
    mg_spm_free(spm);
    if (s == MG_OK) *sot = chat.sot, *eot = chat.eot;
    return s;
}

static double seconds_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

static void print_json(const char *dir, const char *be_desc, const mg_backend *be, const mg_model *m,
                       const mg_bench_result *r, bool tokenizer, double load_s) {
    printf("{\"model\": "), mg_json_write_string(stdout, dir);
    printf(", \"backend\": "), mg_json_write_string(stdout, be_desc);
    printf(", \"device\": "), mg_json_write_string(stdout, be->device);
    printf(", \"dtype\": \"%s\",\n", be->act_dtype == MG_BF16 ? "bf16" : "fp32");
    printf(" \"batch\": %lld, \"tokens\": %d, \"image_tokens\": %d, \"turn_ids\": \"%s\", \"iters\": %d, "
           "\"warmup\": %d,\n", (long long)r->batch, r->tokens, m->cfg.mm_tokens_per_image,
           tokenizer ? "tokenizer" : "stand-ins", r->iters, r->warmup);
    printf(" \"ms_per_batch\": %.4f, \"ms_min\": %.4f, \"ms_max\": %.4f, \"images_per_s\": %.4f,\n", r->ms_median,
           r->ms_min, r->ms_max, r->images_per_s);
    printf(" \"weight_bytes\": %zu, \"activation_bytes\": %zu, \"load_s\": %.3f, \"logits_finite\": %s,\n \"ms\": [",
           r->weight_bytes, r->activation_bytes, load_s, r->logits_finite ? "true" : "false");
    for (int i = 0; i < r->iters; i++) printf("%s%.4f", i ? ", " : "", r->ms[i]);
    printf("]}\n");
}

static void print_text(const char *dir, const char *be_desc, const mg_model *m, const mg_bench_result *r,
                       bool tokenizer, double load_s) {
    printf("model %s on %s (loaded in %.1f s)\n", dir, be_desc, load_s);
    printf("batch %lld, %d tokens (%d image tokens, turn ids: %s), %d iterations after %d warm-up(s)\n",
           (long long)r->batch, r->tokens, m->cfg.mm_tokens_per_image, tokenizer ? "tokenizer" : "stand-ins", r->iters,
           r->warmup);
    printf("ms per batch: median %.2f (min %.2f, max %.2f)\n", r->ms_median, r->ms_min, r->ms_max);
    printf("images/s:     %.3f\n", r->images_per_s);
    printf("memory:       weights %.1f MiB, activations %.1f MiB\n", (double)r->weight_bytes / (1 << 20),
           (double)r->activation_bytes / (1 << 20));
}

int cmd_bench(int argc, char **argv) {
    const char *dir = NULL;
    bool json = false, force_cpu = false;
    mg_bench_opts o = { .batch = 32, .tokens = 360, .iters = 5, .warmup = 1, .sot = -1, .eot = -1, .seed = 1234 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(USAGE, stdout); return 0; }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--cpu")) { force_cpu = true; continue; }
        if (!v) { fprintf(stderr, "medgem bench: %s needs a value (or is unknown)\n\n%s", a, USAGE); return 2; }
        i++;
        if (!strcmp(a, "--model")) dir = v;
        else if (!strcmp(a, "--batch")) o.batch = atoi(v);
        else if (!strcmp(a, "--tokens")) o.tokens = atoi(v);
        else if (!strcmp(a, "--iters")) o.iters = atoi(v);
        else if (!strcmp(a, "--warmup")) o.warmup = atoi(v);
        else { fprintf(stderr, "medgem bench: bad option '%s %s'\n\n%s", a, v, USAGE); return 2; }
    }
    if (!dir) { fprintf(stderr, "medgem bench: give --model DIR\n\n%s", USAGE); return 2; }
    if (o.batch < 1 || o.tokens < 1 || o.iters < 1 || o.warmup < 0) {
        fprintf(stderr, "medgem bench: --batch, --tokens and --iters take positive integers, --warmup >= 0\n");
        return 2;
    }

    int rc = 0;
    const mg_backend *be = NULL;
    char be_desc[512];
    mg_model m = { 0 };
    mg_bench_result r = { 0 };
    struct timespec t0;
    if (mg_backend_open(force_cpu, &be, be_desc, sizeof be_desc) != MG_OK) {
        rc = fail("cannot set up the GPU (--cpu runs without it)");
        goto done;
    }
    fprintf(stderr, "medgem: using %s\n", be_desc);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (mg_model_open(&m, be, dir) != MG_OK) { rc = fail("cannot load the model"); goto done; }
    const double load_s = seconds_since(&t0);
    if (turn_ids(&m.cfg, &o.sot, &o.eot) != MG_OK) { rc = fail("cannot read the model's tokenizer"); goto done; }
    if (mg_bench_eval(&m, &o, &r) != MG_OK) { rc = fail("benchmark failed"); goto done; }
    if (json) print_json(dir, be_desc, be, &m, &r, o.sot >= 0, load_s);
    else print_text(dir, be_desc, &m, &r, o.sot >= 0, load_s);
    if (!r.logits_finite) {
        fprintf(stderr, "medgem bench: the forward produced non-finite logits; its timing measures a broken run\n");
        rc = 1;
    }
done:
    mg_bench_result_free(&r);
    mg_model_free(&m);
    mg_backend_close(be);
    return rc;
}
