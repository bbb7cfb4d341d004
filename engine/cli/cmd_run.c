/* medgem run: the guide's whole workflow in one command (engine/jobs/run.h): baseline evaluation,
 * LoRA training with an evaluation per epoch, merge, final evaluation; the table on stdout, the run
 * directory with metrics.json, train_log.jsonl, the adapter, predictions and report.html. With no
 * --model/--data it runs the embedded tiny model on synthetic data. Options are train's and
 * eval's (engine/cli/cli_options.c), under the same names. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/cli/commands.h"
#include "engine/jobs/run.h"

static const char *USAGE =
    "usage: medgem run [--model DIR] [--data PATH] [--out DIR] [selection] [train and eval options]\n"
    "The guide's workflow: baseline evaluation of the untouched model on the test split, LoRA training\n"
    "(an evaluation of the test split after each epoch, adapter unmerged), the adapter merged into the\n"
    "weights (merge_and_unload, in memory), the final evaluation; then the table (8-class and binary:\n"
    "accuracy, F1, patient-level rate, ROC-AUC; the guide's published numbers beside them on its selection).\n"
    "\n"
    "  --model DIR            Hugging Face model directory (default: the embedded tiny MedGemma,\n"
    "                         tests/golden/tiny beside the binary)\n"
    "  --data PATH            BreakHis: the Kaggle folder (Folds.csv), BreaKHis_v1.tar.gz, or a folder tree\n"
    "                         (default: synthetic BreakHis-format data written into OUT/synth)\n"
    "  --out DIR              the run directory (default runs/<date>-<time>): metrics.json, train_log.jsonl,\n"
    "                         adapter/, predictions_baseline.csv, predictions_finetuned.csv, report.html\n"
    "                         (--fold all: fold-<k>/ for each fold, metrics.json and report.html on top)\n"
    "  selection              --fold 1-5|all (1; all: each fold in turn, mean ± sd per row), --mag 40|100|200|400|all\n"
    "                         (100; all: magnification-independent), --balance binary|class|none (binary), --seed N (42)\n"
    "  --save-merged          also write the merged model directory (OUT/merged, loads with from_pretrained)\n"
    "  --resume               continue an interrupted run in --out with the same options: the baseline is\n"
    "                         evaluated again, training continues from each fold's newest checkpoint (Ctrl-C\n"
    "                         or --save-every writes them), a fold whose training finished is not trained again\n"
    "evaluation (baseline and final; eval's flags):\n"
    "  --mode score|generate  score: argmax of the class-digit logits (default); generate: greedy answer, first\n"
    "                         standalone digit 0-7 (the guide's evaluation)\n"
    "  --max-new-tokens N     generate mode: at most N new tokens per image (40)\n"
    "  --eval-batch N         images per evaluation forward (8; eval calls it --batch)\n"
    "  --double-bos           two BOS tokens, the guide's processor path (the default here, as in train)\n"
    "training (train's flags; defaults are the guide's settings, except the embedded tiny run, below):\n"
    "  adapter                --adapter DIR (start from a PEFT adapter; default: a fresh one), --lora-r 8,\n"
    "                         --lora-alpha 16, --lora-dropout 0.1, --lora-targets all-linear|text|vision|NAME,...\n"
    "  optimisation           --epochs 5, --batch 1 (micro-batch), --grad-accum 8, --max-steps 0 (0: all epochs),\n"
    "                         --lr 5e-4, --weight-decay 0, --warmup-ratio 0.03, --max-grad-norm 0.3 (0: none),\n"
    "                         --schedule cosine|linear|constant (cosine), --loss-on seed|answer (seed: the guide's labels)\n"
    "  --eval-every N         evaluate the test split every N epochs during training, score mode (1; 0: never)\n"
    "  --save-every N         checkpoint every N optimizer updates (0: only on Ctrl-C)\n"
    "  --recompute            recompute text layers in backward too (least memory)\n"
    "  --max-memory GB        device memory to use: the top vision layers keep their activations within it\n"
    "                         (faster), the others are recomputed in backward (default: the GPU's free memory)\n"
    "  --no-feature-cache     compute the soft tokens from pixels at every step (default: once per image\n"
    "                         when the adapter has no vision module, reused across epochs and evaluations)\n"
    "  --single-bos           one BOS and the final newline (TRL's path) for training and evaluation\n"
    "  --prompt-file F        the user text after the image (default: the guide's 8-class prompt)\n"
    "  --threads N            image decoding threads (2)\n"
    "  --on-bad-image skip|fail  an unreadable image is left out and counted (default), or stops the run\n"
    "  --cpu                  run on the fp32 CPU reference backend even when a GPU is available\n"
    "\n"
    "Embedded run (no --model): the tiny model learns with --loss-on answer --lr 5e-3 --epochs 3 --batch 4\n"
    "--grad-accum 1 --max-grad-norm 1 --warmup-ratio 0 unless given; the guide's settings need far more steps.\n";


static char eval_label[64], epoch_eval_label[64]; /* "baseline"/"final"; "epoch N evaluation" */
static bool bars, bar_open; /* progress bars on; a training bar's line is not yet ended */

static void end_bar(void) {
    if (bar_open) fputc('\n', stderr);
    bar_open = false;
}

static void train_bar(void *user, const mg_train_progress *p) {
    cli_train_progress(user, p);
    snprintf(epoch_eval_label, sizeof epoch_eval_label, "epoch %d evaluation", p->epoch);
    bar_open = true;
}

static void on_stage(void *user, int fold, mg_run_stage s, const char *what) {
    const mg_run_opts *o = user;
    char where[32] = "";
    end_bar();
    if (o->all_folds && fold) snprintf(where, sizeof where, "[fold %d] ", fold);
    switch (s) {
    case MG_RUN_DATA: fprintf(stderr, "medgem run: data: %s\n", what); break;
    case MG_RUN_LOAD: fprintf(stderr, "medgem run: %sloading the model %s\n", where, what); break;
    case MG_RUN_BASELINE:
    case MG_RUN_FINAL:
        snprintf(eval_label, sizeof eval_label, "%s", s == MG_RUN_BASELINE ? "baseline" : "final");
        fprintf(stderr, "medgem run: %s%s\n", where, what);
        break;
    default: fprintf(stderr, "medgem run: %s%s\n", where, what); break;
    }
}

static void on_eval_done(void *user, int epoch, const mg_eval_result *r) {
    (void)user;
    end_bar();
    fprintf(stderr, "epoch %d evaluation: accuracy %.4f, F1 weighted %.4f, binary accuracy %.4f, ROC-AUC %.4f\n", epoch, r->metrics.accuracy, r->metrics.f1_weighted, r->metrics.bin_accuracy, r->metrics.auc);
}

static void on_epoch_done(void *user, const mg_train_epoch *e) {
    (void)user;
    end_bar();
    fprintf(stderr, "epoch %d/%d done: %d updates, %.1f s; host RSS %.2f GB (peak %.2f GB)", e->epoch, e->epochs,
            e->step, e->seconds, e->host_rss / 1e9, e->host_peak / 1e9);
    if (e->device_used >= 0) fprintf(stderr, ", GPU memory in use %.2f GB", e->device_used / 1e9);
    fputc('\n', stderr);
}

static void eval_bar(void *user, int64_t done, int64_t total, double seconds) {
    cli_eval_progress(user, done, total, seconds);
    if (done == total) fputc('\n', stderr);
}

/* The evaluation after an epoch: its bar starts under the training bar's line. */
static void epoch_eval_bar(void *user, int64_t done, int64_t total, double seconds) {
    end_bar();
    eval_bar(user, done, total, seconds);
}

int cmd_run(int argc, char **argv) {
    /* the embedded run's training defaults unless a model is given */
    bool has_model = false;
    for (int i = 1; i + 1 < argc; i++) has_model |= !strcmp(argv[i], "--model");
    mg_run_opts o = mg_run_defaults(!has_model);
    const char *prompt_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        mg_status st;
        int bad;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(USAGE, stdout); return 0; }
        if (!strcmp(a, "--cpu")) { o.force_cpu = true; continue; }
        if (!strcmp(a, "--save-merged")) { o.save_merged = true; continue; }
        if (!strcmp(a, "--single-bos")) { o.train.guide_path = false; continue; }
        if (!strcmp(a, "--double-bos")) { o.train.guide_path = true; continue; }
        if (!strcmp(a, "--recompute")) { o.train.recompute = true; continue; }
        if (!strcmp(a, "--no-feature-cache")) { o.train.no_feature_cache = true; continue; }
        if (!strcmp(a, "--resume")) { o.resume = true; continue; }
        if (!v) { fprintf(stderr, "medgem run: %s needs a value (or is unknown)\n\n%s", a, USAGE); return 2; }
        i++;
        if (!strcmp(a, "--seed")) o.train.seed = strtoull(v, NULL, 10); /* also the selection's, below */
        if (!strcmp(a, "--fold") && !strcmp(v, "all")) { o.all_folds = true; continue; }
        if (!strcmp(a, "--fold")) o.all_folds = false;
        if (!strcmp(a, "--split")) { fprintf(stderr, "medgem run: trains on the train split and evaluates on the test split; --split does not apply\n"); return 2; }
        if (!strcmp(a, "--csv")) {
            fprintf(stderr, "medgem run: --csv does not apply (the run writes its CSVs into --out)\n");
            return 2;
        }
        if (mg_bh_selection_option(a, v, &o.sel, &st)) {
            if (st != MG_OK) { fprintf(stderr, "medgem run: %s\n", mg_last_error()); return 2; }
        } else if (!strcmp(a, "--model")) o.model_dir = v;
        else if (!strcmp(a, "--data")) o.data = v;
        else if (!strcmp(a, "--out")) o.out_dir = v;
        else if (cli_train_option(a, v, &o.train, &bad) || cli_eval_option(a, v, &o.eval, &bad)) {
            if (!strcmp(a, "--prompt-file")) prompt_file = v, o.train.prompt_text = NULL;
            if (bad) { fprintf(stderr, "medgem run: bad value '%s' for %s\n\n%s", v, a, USAGE); return 2; }
        } else { fprintf(stderr, "medgem run: unknown option '%s'\n\n%s", a, USAGE); return 2; }
    }
    /* one batch, thread count and bad-image policy for every evaluation */
    o.eval.batch = o.train.eval.batch;
    o.eval.threads = o.train.eval.threads = o.train.threads;
    o.eval.on_bad = o.train.on_bad;
    if (o.eval.batch < 1 || o.train.threads < 1) { fprintf(stderr, "medgem run: --eval-batch and --threads take positive integers\n"); return 2; }

    if (o.resume && !o.out_dir) {
        fprintf(stderr, "medgem run: --resume continues the run in --out DIR: give that DIR\n");
        return 2;
    }
    char out[256];
    if (!o.out_dir) {
        const time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(out, sizeof out, "runs/%Y%m%d-%H%M%S", &tm);
        o.out_dir = out;
    }
    char *qtext = NULL;
    if (prompt_file && mg_prompt_read_file(prompt_file, &qtext) != MG_OK) {
        fprintf(stderr, "medgem run: cannot read the prompt\n%s\n", mg_last_error());
        return 1;
    }
    o.prompt_text = qtext;
    char cmdline[2048] = "medgem";
    for (int i = 0; i < argc; i++) {
        const size_t n = strlen(cmdline);
        snprintf(cmdline + n, sizeof cmdline - n, " %s", argv[i]);
    }
    o.command = cmdline;
    bars = isatty(STDERR_FILENO);
    if (bars) {
        o.train.progress = train_bar;
        o.eval.progress = eval_bar, o.eval.progress_user = eval_label;
        o.train.eval.progress = epoch_eval_bar, o.train.eval.progress_user = epoch_eval_label;
    }
    o.train.on_eval = on_eval_done;
    o.train.on_epoch = on_epoch_done;
    o.train.stop = &cli_stop_requested;
    o.stage = on_stage, o.user = &o;
    if (!o.model_dir)
        fprintf(stderr, "medgem run: no --model: the embedded tiny MedGemma%s, trained with settings for it "
                        "(loss on the answer, lr %g, %d epochs of batch %d, grad norm %g); --model runs the guide's\n",
                o.data ? "" : " on synthetic data", o.train.lr, o.train.epochs, o.train.batch, o.train.max_grad_norm);

    cli_catch_sigint(true);
    mg_run_result r;
    const mg_status s = mg_run(&o, &r);
    cli_catch_sigint(false);
    int rc = 0;
    if (s != MG_OK) {
        end_bar();
        fprintf(stderr, "medgem run: failed (what was written so far is in %s)\n%s\n", o.out_dir,
                mg_last_error());
        rc = cli_stop_requested ? 130 : 1;
    } else {
        char mag[16];
        snprintf(mag, sizeof mag, o.sel.mag ? "%dX" : "all magnifications", o.sel.mag);
        printf("\nmedgem run: %s%s, %s, %s balancing: %lld training and %lld test images%s\n",
               o.all_folds ? "folds 1-5" : "fold ", o.all_folds ? "" : (char[2]){ (char)('0' + o.sel.fold), 0 }, mag,
               mg_balance_name(o.sel.balance), (long long)r.folds[0].n_train, (long long)r.folds[0].n_test,
               o.all_folds ? " (fold 1)" : "");
        printf("model %s%s; %s mode; fine-tuned = adapter merged into the weights\n\n", r.model_dir,
               r.embedded_model ? " (embedded tiny)" : "", o.eval.mode == MG_EVAL_GENERATE ? "generate" : "score");
        mg_run_print_table(stdout, &o, &r);
        if (mg_run_is_guide_selection(&o) && (r.embedded_model || r.embedded_data))
            printf("(the guide's numbers: MedGemma-4B on the real BreakHis; a reference only for this embedded run)\n");
        printf("\nwrote %s/: report.html, metrics.json, train_log.jsonl, adapter/, predictions_baseline.csv, "
               "predictions_finetuned.csv%s%s in %.1f s\n",
               o.out_dir, o.save_merged ? ", merged/" : "", o.all_folds ? " (per fold in fold-<k>/)" : "", r.t_total);
    }
    mg_run_result_free(&r);
    free(qtext);
    return rc;
}
