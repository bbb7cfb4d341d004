/* medgem eval: evaluate a model on a BreakHis selection (engine/jobs/eval.h) and report the metrics
 * (engine/metrics.h) as text or one JSON object; optionally the per-image predictions as CSV.
 * Progress (images/s) goes to stderr while stderr is a terminal; a summary line always does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/splits.h"
#include "engine/cli/commands.h"
#include "engine/json.h"
#include "engine/jobs/eval.h"

static const char *USAGE =
    "usage: medgem eval --model DIR [--adapter DIR] --data PATH [selection] [options]\n"
    "  --model DIR            Hugging Face model directory (config.json, safetensors, tokenizer.model)\n"
    "  --adapter DIR          a PEFT LoRA adapter, merged into the weights after loading (merge_and_unload),\n"
    "                         as the guide evaluates the fine-tuned model\n"
    "  --data PATH            BreakHis: the Kaggle folder (Folds.csv), BreaKHis_v1.tar.gz, or a folder tree\n"
    "  selection              --fold 1-5, --mag 40|100|200|400|all, --split train|test,\n"
    "                         --balance binary|class|none, --seed N\n"
    "                         (default: the guide's: fold 1, 100X, test split, binary balance, seed 42)\n"
    "  --mode score|generate  score: one forward per batch, argmax of the class-digit logits (default);\n"
    "                         generate: greedy answer, first standalone digit 0-7 (the guide's evaluation)\n"
    "  --max-new-tokens N     generate mode: at most N new tokens per image (default 40)\n"
    "  --batch N              images per forward (default 8)\n"
    "  --threads N            image decoding threads (default 2)\n"
    "  --on-bad-image skip|fail  an unreadable image is left out and counted (default), or stops the run\n"
    "  --prompt-file F        the user text after the image (default: the guide's 8-class prompt)\n"
    "  --double-bos           the guide's processor path: two BOS tokens (spec/model.md §7.5)\n"
    "  --csv FILE             per-image predictions: path,label,pred,prob_0..7,logit_0..7[,answer]\n"
    "  --json                 print the metrics as one JSON object\n"
    "  --cpu                  run on the fp32 CPU reference backend even when a GPU is available\n";

static int fail(const char *what) {
    fprintf(stderr, "medgem eval: %s\n%s\n", what, mg_last_error());
    return 1;
}

static void print_text(const mg_eval_result *r, mg_eval_mode mode) {
    const mg_metrics *m = &r->metrics;
    const int K = m->n_classes;
    printf("%lld images (%s mode)%s\n\n", (long long)r->n, mode == MG_EVAL_SCORE ? "score" : "generate",
           m->no_answer ? ", some answers name no class (counted wrong)" : "");
    printf("8-class: accuracy %.4f  F1 weighted %.4f  F1 macro %.4f  no answer %lld\n", m->accuracy, m->f1_weighted,
           m->f1_macro, (long long)m->no_answer);
    printf("binary:  accuracy %.4f  F1 malignant %.4f  sensitivity %.4f  specificity %.4f  ROC-AUC %.4f\n",
           m->bin_accuracy, m->bin_f1_positive, m->sensitivity, m->specificity, m->auc);
    printf("patient-level recognition rate %.4f over %lld patients\n\n", m->patient_rate, (long long)m->n_patients);
    printf("%-32s %9s %9s %9s %8s\n", "class", "precision", "recall", "F1", "support");
    for (int k = 0; k < K; k++)
        printf("%d %-30s %9.4f %9.4f %9.4f %8lld\n", k, MG_BREAKHIS_CLASSES[k], m->precision[k], m->recall[k], m->f1[k],
               (long long)m->support[k]);
    printf("\nconfusion (rows: true class, columns: predicted)\n   ");
    for (int p = 0; p < K; p++) printf(" %5d", p);
    printf("\n");
    for (int y = 0; y < K; y++) {
        printf("%d: ", y);
        for (int p = 0; p < K; p++) printf(" %5lld", (long long)m->confusion[y][p]);
        printf("\n");
    }
}

int cmd_eval(int argc, char **argv) {
    const char *dir = NULL, *adapter = NULL, *data = NULL, *csv = NULL, *prompt_file = NULL;
    bool json = false, force_cpu = false;
    mg_bh_selection sel = mg_bh_selection_default(MG_BH_SPLIT_TEST);
    mg_eval_opts eo = mg_eval_defaults();
    mg_classifier_opts co = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        mg_status st;
        int bad;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(USAGE, stdout); return 0; }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--cpu")) { force_cpu = true; continue; }
        if (!strcmp(a, "--double-bos")) { co.guide_path = true; continue; }
        if (!v) { fprintf(stderr, "medgem eval: %s needs a value (or is unknown)\n\n%s", a, USAGE); return 2; }
        i++;
        if (mg_bh_selection_option(a, v, &sel, &st)) {
            if (st != MG_OK) { fprintf(stderr, "medgem eval: %s\n", mg_last_error()); return 2; }
        } else if (!strcmp(a, "--model")) dir = v;
        else if (!strcmp(a, "--adapter")) adapter = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--csv")) csv = v;
        else if (!strcmp(a, "--prompt-file")) prompt_file = v;
        else if (cli_eval_option(a, v, &eo, &bad)) {
            if (bad) { fprintf(stderr, "medgem eval: bad value '%s' for %s\n\n%s", v, a, USAGE); return 2; }
        } else { fprintf(stderr, "medgem eval: unknown option '%s'\n\n%s", a, USAGE); return 2; }
    }
    if (!dir || !data) { fprintf(stderr, "medgem eval: give --model DIR and --data PATH\n\n%s", USAGE); return 2; }
    if (eo.batch < 1 || eo.threads < 1 || eo.max_new_tokens < 1) {
        fprintf(stderr, "medgem eval: --batch, --threads and --max-new-tokens take positive integers\n");
        return 2;
    }
    if (isatty(STDERR_FILENO)) eo.progress = cli_eval_progress;

    int rc = 0;
    mg_bh_index *ix = NULL;
    int64_t *idx = NULL, n = 0;
    const mg_backend *be = NULL;
    mg_model m = { 0 };
    mg_classifier cl = { 0 };
    mg_eval_result r = { 0 };
    char *qtext = NULL;
    /* the data first: a bad path or an empty selection fails before the model loads */
    if (mg_bh_index_open(data, eo.on_bad, &ix) != MG_OK) { rc = fail("cannot index the data"); goto done; }
    if (mg_bh_select(ix, &sel, &idx, &n) != MG_OK) { rc = fail("empty selection"); goto done; }
    if ((rc = cli_open_model("eval", force_cpu, dir, adapter, &be, &m)) != 0) goto done;
    if (prompt_file && mg_prompt_read_file(prompt_file, &qtext) != MG_OK) { rc = fail("cannot read the prompt"); goto done; }
    co.text = qtext;
    if (mg_classifier_init(&cl, &m, &co) != MG_OK) { rc = fail("cannot load the tokenizer or build the prompt"); goto done; }
    if (mg_eval_run(&cl, ix, idx, n, &eo, &r) != MG_OK) {
        if (eo.progress) fputc('\n', stderr);
        rc = fail("evaluation failed");
        goto done;
    }
    if (eo.progress) fputc('\n', stderr);
    if (csv && mg_eval_write_csv(csv, ix, &r) != MG_OK) { rc = fail("cannot write the CSV"); goto done; }
    if (json) mg_eval_write_json(stdout, &r, &sel, eo.mode, n);
    else print_text(&r, eo.mode);
    fprintf(stderr, "medgem eval: %lld images (%lld skipped) in %.1f s, %.2f images/s: accuracy %.4f, binary accuracy %.4f\n",
            (long long)r.n, (long long)r.skipped, r.seconds, r.seconds > 0 ? (double)r.n / r.seconds : 0.0,
            r.metrics.accuracy, r.metrics.bin_accuracy);
done:
    mg_eval_result_free(&r);
    mg_classifier_free(&cl);
    mg_model_free(&m);
    mg_backend_close(be);
    free(qtext), free(idx);
    if (ix) mg_bh_index_free(ix);
    return rc;
}
