/* medgem train: LoRA fine-tuning on a BreakHis selection (engine/jobs/train.h), with a progress
 * bar on stderr, train_log.jsonl and the adapter in --out, checkpoints, --resume, and Ctrl-C
 * writing a checkpoint before exiting with status 130. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/splits.h"
#include "engine/cli/commands.h"
#include "engine/jobs/train.h"
#include "engine/jobs/train_ckpt.h"

static const char *USAGE =
    "usage: medgem train --model DIR --data PATH --out DIR [selection] [options]\n"
    "  --model DIR            Hugging Face model directory (config.json, safetensors, tokenizer.model)\n"
    "  --data PATH            BreakHis: the Kaggle folder (Folds.csv), BreaKHis_v1.tar.gz, or a folder tree\n"
    "  --out DIR              train_log.jsonl (updates, evaluations, each epoch's host/GPU memory),\n"
    "                         adapter/ (PEFT format), checkpoint-<step>/\n"
    "  selection              --fold 1-5, --mag 40|100|200|400|all, --balance binary|class|none, --seed N\n"
    "                         (default: the guide's: fold 1, 100X, binary balance, seed 42; trains on the\n"
    "                         train split, evaluates on the test split)\n"
    "  adapter                --adapter DIR (start from a PEFT adapter; default: a fresh one, PEFT's init)\n"
    "                         --lora-r 8, --lora-alpha 16, --lora-dropout 0.1,\n"
    "                         --lora-targets all-linear|text|vision|NAME,... (default all-linear)\n"
    "  optimisation           --epochs 5, --batch 1 (micro-batch), --grad-accum 8, --max-steps 0 (0: all epochs),\n"
    "                         --lr 5e-4, --weight-decay 0, --warmup-ratio 0.03, --max-grad-norm 0.3 (0: none),\n"
    "                         --schedule cosine|linear|constant, --loss-on seed|answer (seed: the guide's labels)\n"
    "  --recompute            recompute text layers in backward too (least memory)\n"
    "  --max-memory GB        device memory to use: the top vision layers keep their activations within it\n"
    "                         (faster), the others are recomputed in backward (default: the GPU's free memory)\n"
    "  --no-feature-cache     compute every image's soft tokens from its pixels at each step; by default, when\n"
    "                         the adapter has no vision module (--lora-targets text), they are computed once\n"
    "                         per image and reused by later epochs and evaluations (in GPU memory, when they fit)\n"
    "  --single-bos           one BOS and the final newline (TRL's path) instead of the guide's stripped text\n"
    "  --prompt-file F        the user text after the image (default: the guide's 8-class prompt)\n"
    "  --eval-every N         evaluate the test split every N epochs, score mode, adapter unmerged (1; 0: never)\n"
    "  --eval-batch N         images per evaluation forward (8)\n"
    "  --save-every N         checkpoint every N optimizer updates (0: only on Ctrl-C)\n"
    "  --resume DIR           continue from a checkpoint-<step> folder (same --batch, --grad-accum, --seed),\n"
    "                         or from the newest complete checkpoint of a run's --out folder; a damaged\n"
    "                         checkpoint (its files' sizes and CRC-32s in state.json) falls back to the\n"
    "                         previous complete one, with a message (the two newest are kept); the log's\n"
    "                         lines past the checkpoint are dropped first, so each update appears once.\n"
    "                         Without --resume, an --out that holds checkpoints is refused (they would\n"
    "                         mix with the new run's)\n"
    "  --on-nan stop|skip     a NaN/Inf loss or gradient norm stops the run naming the update and the last\n"
    "                         good checkpoint (default), or skips that update and counts it\n"
    "  --threads N            image decoding threads (2)\n"
    "  --on-bad-image skip|fail  an unreadable image is left out and counted (default), or stops the run\n"
    "  --json                 print the summary as one JSON object\n"
    "  --cpu                  run on the fp32 CPU reference backend even when a GPU is available\n";


static void print_note(void *user, const char *line) {
    (void)user;
    fprintf(stderr, "%smedgem train: %s\n", isatty(STDERR_FILENO) ? "\r\033[K" : "", line);
}

static int fail(const char *what) {
    fprintf(stderr, "\nmedgem train: %s\n%s\n", what, mg_last_error());
    return 1;
}

static bool train_bar_open; /* the training bar's line is not yet ended */

static void train_bar(void *user, const mg_train_progress *p) {
    cli_train_progress(user, p);
    train_bar_open = true;
}

/* The evaluation after an epoch: its bar starts under the training bar's line (print_eval ends it). */
static void eval_bar(void *user, int64_t done, int64_t total, double seconds) {
    if (train_bar_open) fputc('\n', stderr);
    train_bar_open = false;
    cli_eval_progress(user, done, total, seconds);
}

static void print_eval(void *user, int epoch, const mg_eval_result *r) {
    (void)user;
    fprintf(stderr, "\nepoch %d evaluation: %lld images, accuracy %.4f, F1 weighted %.4f, binary accuracy %.4f, "
                    "ROC-AUC %.4f\n",
            epoch, (long long)r->n, r->metrics.accuracy, r->metrics.f1_weighted, r->metrics.bin_accuracy,
            r->metrics.auc);
}

static void print_epoch(void *user, const mg_train_epoch *e) {
    (void)user;
    fprintf(stderr, "\nepoch %d/%d done: %d updates, %.1f s; host RSS %.2f GB (peak %.2f GB)", e->epoch, e->epochs,
            e->step, e->seconds, e->host_rss / 1e9, e->host_peak / 1e9);
    if (e->device_used >= 0) fprintf(stderr, ", GPU memory in use %.2f GB", e->device_used / 1e9);
    fputc('\n', stderr);
}

int cmd_train(int argc, char **argv) {
    const char *dir = NULL, *data = NULL, *prompt_file = NULL;
    bool json = false, force_cpu = false;
    mg_bh_selection sel = mg_bh_selection_default(MG_BH_SPLIT_TRAIN);
    mg_train_opts o = mg_train_defaults();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        mg_status st;
        int bad;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(USAGE, stdout); return 0; }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--cpu")) { force_cpu = true; continue; }
        if (!strcmp(a, "--single-bos")) { o.guide_path = false; continue; }
        if (!strcmp(a, "--recompute")) { o.recompute = true; continue; }
        if (!strcmp(a, "--no-feature-cache")) { o.no_feature_cache = true; continue; }
        if (!v) { fprintf(stderr, "medgem train: %s needs a value (or is unknown)\n\n%s", a, USAGE); return 2; }
        i++;
        if (!strcmp(a, "--seed")) o.seed = strtoull(v, NULL, 10); /* also the selection's, below */
        if (!strcmp(a, "--split")) { fprintf(stderr, "medgem train: trains on the train split and evaluates on the test split; --split does not apply\n"); return 2; }
        if (mg_bh_selection_option(a, v, &sel, &st)) {
            if (st != MG_OK) { fprintf(stderr, "medgem train: %s\n", mg_last_error()); return 2; }
        } else if (!strcmp(a, "--model")) dir = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--out")) o.out_dir = v;
        else if (cli_train_option(a, v, &o, &bad)) {
            if (!strcmp(a, "--prompt-file")) prompt_file = v, o.prompt_text = NULL;
            if (bad) { fprintf(stderr, "medgem train: bad value '%s' for %s\n\n%s", v, a, USAGE); return 2; }
        } else { fprintf(stderr, "medgem train: unknown option '%s'\n\n%s", a, USAGE); return 2; }
    }
    if (!dir || !data || !o.out_dir) {
        fprintf(stderr, "medgem train: give --model DIR, --data PATH and --out DIR\n\n%s", USAGE);
        return 2;
    }
    if (isatty(STDERR_FILENO)) {
        o.progress = train_bar;
        o.eval.progress = eval_bar, o.eval.progress_user = "evaluation";
    }
    o.on_eval = print_eval;
    o.on_note = print_note;
    o.on_epoch = print_epoch;
    o.stop = &cli_stop_requested;
    o.eval.threads = o.threads;

    int rc = 0;
    mg_bh_index *ix = NULL;
    int64_t *train = NULL, *test = NULL, n_train = 0, n_test = 0;
    const mg_backend *be = NULL;
    mg_model m = { 0 };
    char *qtext = NULL;
    mg_train_result r = { 0 };
    /* the data first: a bad path or an empty selection fails before the model loads */
    if (mg_bh_index_open(data, o.on_bad, &ix) != MG_OK) { rc = fail("cannot index the data"); goto done; }
    if (mg_bh_select(ix, &sel, &train, &n_train) != MG_OK) { rc = fail("no training images"); goto done; }
    sel.split = MG_BH_SPLIT_TEST;
    if (o.eval_every > 0 && mg_bh_select(ix, &sel, &test, &n_test) != MG_OK) { rc = fail("no test images"); goto done; }
    if (prompt_file && mg_prompt_read_file(prompt_file, &qtext) != MG_OK) { rc = fail("cannot read the prompt"); goto done; }
    o.prompt_text = qtext;
    if ((rc = cli_open_model("train", force_cpu, dir, NULL, &be, &m)) != 0) goto done;
    fprintf(stderr, "medgem train: %lld training images, %lld test images; weights %.1f MiB on %s\n",
            (long long)n_train, (long long)n_test, (double)m.arena_bytes / (1 << 20), be->name);
    char resume_dir[4096], note[4096];
    if (o.resume) {
        if (mg_ckpt_resolve(o.resume, resume_dir, sizeof resume_dir, note, sizeof note) != MG_OK) {
            rc = fail("cannot resume");
            goto done;
        }
        if (note[0]) fprintf(stderr, "medgem train: %s\n", note);
        fprintf(stderr, "medgem train: resuming from %s\n", resume_dir);
        o.resume = resume_dir;
    }
    cli_catch_sigint(true);
    const mg_status s = mg_train_run(&m, ix, train, n_train, test, n_test, &o, &r);
    cli_catch_sigint(false);
    if (o.progress) fputc('\n', stderr);
    if (s != MG_OK) { rc = fail(r.checkpoint[0] ? "training stopped (the last checkpoint is intact)" : "training failed"); goto done; }
    const double peak = (double)(m.arena_bytes + r.peak_bytes + r.lora_bytes) / (1 << 20);
    if (json)
        printf("{\"steps\": %d, \"interrupted\": %s, \"loss\": %.6f, \"seconds\": %.3f, \"images\": %lld, "
               "\"images_per_s\": %.3f, \"peak_mib\": %.1f, \"skipped\": %d, \"checkpoint\": \"%s\", "
               "\"feature_cache\": %s, \"features_computed\": %lld, \"features_reused\": %lld}\n",
               r.steps, r.interrupted ? "true" : "false", r.last_loss, r.seconds, (long long)r.images,
               r.seconds > 0 ? r.images / r.seconds : 0.0, peak, r.skipped, r.checkpoint,
               r.feature_cache ? "true" : "false", (long long)r.features_computed, (long long)r.features_reused);
    fprintf(stderr, "medgem train: %d updates, last loss %.4f, %lld images in %.1f s (%.2f images/s), "
                    "peak %.1f MiB on %s (weights %.1f + activations %.1f + LoRA state %.1f)\n",
            r.steps, r.last_loss, (long long)r.images, r.seconds, r.seconds > 0 ? r.images / r.seconds : 0.0, peak,
            be->name, (double)m.arena_bytes / (1 << 20), (double)r.peak_bytes / (1 << 20),
            (double)r.lora_bytes / (1 << 20));
    if (r.skipped) fprintf(stderr, "medgem train: %d updates skipped for a NaN/Inf (--on-nan skip)\n", r.skipped);
    if (r.interrupted) {
        fprintf(stderr, "medgem train: interrupted; resume with --resume %s\n", r.checkpoint);
        rc = 130;
    } else {
        fprintf(stderr, "medgem train: adapter written to %s/adapter\n", o.out_dir);
    }
done:
    mg_model_free(&m);
    mg_backend_close(be);
    free(qtext), free(train), free(test);
    if (ix) mg_bh_index_free(ix);
    return rc;
}
