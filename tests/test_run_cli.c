/* `medgem run` end to end on the CPU:
 * 1. a reduced run (a few updates) on the embedded defaults: every output exists and parses:
 *    metrics.json (both evaluations with every key `medgem eval --json` prints, the summary rows),
 *    the two prediction CSVs, train_log.jsonl, the adapter, report.html holding each chart;
 * 2. --fold all (reduced): one folder per fold and mean ± sd in the table;
 * 3. the default `medgem run` (no options but --out): prints the table, finishes in under two
 *    minutes, and the fine-tuned accuracy ends at least 40 points above the baseline;
 * 4. bad input: unknown options and bad values exit 2, a missing model exits 1 naming it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "engine/json.h"
#include "tests/test.h"

#define MEDGEM "build/medgem"
#define WORK "build/test_run"

static mg_json *parse_file(const char *path) {
    size_t n;
    char *s = test_slurp(path, &n);
    mg_json *j = NULL;
    if (s && mg_json_parse(s, n, path, &j) != MG_OK) j = NULL;
    free(s);
    return j;
}

static int lines_of(const char *path) {
    size_t n;
    char *s = test_slurp(path, &n);
    int c = 0;
    for (size_t i = 0; s && i < n; i++) c += s[i] == '\n';
    free(s);
    return c;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Every key of eval's JSON object (from `medgem eval --json` itself) is in obj */
static int has_eval_keys(const mg_json *eval_json, const mg_json *obj, const char *what) {
    int ok = obj != NULL;
    for (int i = 0; ok && i < eval_json->n; i++)
        if (!mg_json_get(obj, eval_json->items[i].key)) {
            printf("     %s lacks eval's key \"%s\"\n", what, eval_json->items[i].key);
            ok = 0;
        }
    return ok;
}

/* 1. a reduced run */
static void test_reduced(void) {
    char *out;
    const int rc = test_run(MEDGEM " run --cpu --out " WORK "/small --max-steps 4 --epochs 1 2>&1", &out);
    CHECK(rc == 0, "the reduced run exits 0 (%d): %s", rc, out);
    CHECK(strstr(out, "8-class   baseline") && strstr(out, "binary    fine-tuned") && strstr(out, "ROC-AUC"),
          "the table is printed: %s", out);
    free(out);

    /* metrics.json against eval's own JSON on the same data and selection */
    mg_json *m = parse_file(WORK "/small/metrics.json");
    CHECK(m != NULL, "metrics.json parses: %s", mg_last_error());
    char *ej = NULL;
    mg_json *e = NULL;
    if (test_run(MEDGEM " eval --cpu --model tests/golden/tiny --data " WORK "/small/synth --json 2>/dev/null", &ej) == 0)
        mg_json_parse(ej, strlen(ej), "eval --json", &e);
    free(ej);
    CHECK(e && e->type == MG_JSON_OBJECT && e->n >= 10, "medgem eval --json gives an object");
    if (m && e) {
        static const char *const top[] = { "medgem", "model", "data", "backend", "settings", "folds", "summary", "seconds" };
        for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) CHECK(mg_json_get(m, top[i]), "metrics.json has \"%s\"", top[i]);
        const mg_json *folds = mg_json_get(m, "folds");
        CHECK(folds && folds->type == MG_JSON_ARRAY && folds->n == 1, "one fold");
        if (folds && folds->n == 1) {
            const mg_json *f = &folds->items[0];
            CHECK(has_eval_keys(e, mg_json_get(f, "baseline"), "baseline"), "the baseline has every key of eval --json");
            CHECK(has_eval_keys(e, mg_json_get(f, "fine_tuned"), "fine_tuned"), "the fine-tuned evaluation has every key of eval --json");
            /* the baseline is exactly what `medgem eval` says of the untouched model */
            CHECK(mg_json_get_number(mg_json_get(f, "baseline"), "accuracy", -1) == mg_json_get_number(e, "accuracy", -2),
                  "the baseline accuracy is eval's");
            CHECK(mg_json_get(f, "data") && mg_json_get(f, "train") && mg_json_get(f, "timings"), "fold data, train, timings");
        }
        const mg_json *sum = mg_json_get(m, "summary");
        CHECK(sum && sum->n == 4 && mg_json_get(&sum->items[3], "auc") && mg_json_get(&sum->items[0], "guide_accuracy"),
              "four summary rows with the guide's numbers");
    }
    mg_json_free(m);
    /* the CSVs: a header and one line per test image */
    const int64_t n_test = e ? (int64_t)mg_json_get_number(e, "images", -1) : -1;
    mg_json_free(e);
    static const char *const csv[] = { WORK "/small/predictions_baseline.csv", WORK "/small/predictions_finetuned.csv" };
    for (int i = 0; i < 2; i++) {
        size_t n;
        char *s = test_slurp(csv[i], &n);
        CHECK(s && !strncmp(s, "path,label,pred,prob_0", 22) && lines_of(csv[i]) == n_test + 1,
              "%s: header and %lld rows (%d lines)", csv[i], (long long)n_test, lines_of(csv[i]));
        free(s);
    }
    /* train_log.jsonl: every line parses; 4 updates and one evaluation */
    size_t n;
    char *log = test_slurp(WORK "/small/train_log.jsonl", &n);
    int steps = 0, evals = 0, bad = 0;
    for (char *p = log, *nl; p && (nl = strchr(p, '\n')); p = nl + 1) {
        *nl = 0;
        mg_json *j = NULL;
        if (mg_json_parse(p, strlen(p), "train_log", &j) != MG_OK) { bad++; continue; }
        steps += mg_json_get(j, "loss") != NULL, evals += mg_json_get(j, "eval") != NULL;
        mg_json_free(j);
    }
    free(log);
    CHECK(bad == 0 && steps == 4 && evals == 1, "train_log.jsonl: %d updates, %d evaluations, %d bad lines", steps, evals, bad);
    struct stat sb;
    CHECK(stat(WORK "/small/adapter/adapter_model.safetensors", &sb) == 0 &&
              stat(WORK "/small/adapter/adapter_config.json", &sb) == 0,
          "the adapter is saved");
    /* report.html: one self-contained page with each chart */
    char *html = test_slurp(WORK "/small/report.html", &n);
    CHECK(html && !strncmp(html, "<!DOCTYPE html>", 15) && strstr(html, "</html>"), "report.html is a complete page");
    if (html) {
        static const char *const charts[] = { "chart-loss-1", "chart-lr-1", "chart-accuracy-1", "chart-confusion-baseline-1",
                                              "chart-confusion-finetuned-1", "chart-roc-1" };
        for (size_t i = 0; i < sizeof charts / sizeof charts[0]; i++) {
            char id[64];
            snprintf(id, sizeof id, "<svg id=\"%s\"", charts[i]);
            CHECK(strstr(html, id) != NULL, "report.html holds %s", charts[i]);
        }
        CHECK(!strstr(html, "<script") && !strstr(html, "src=\"http") && !strstr(html, "href=\"http"),
              "no scripts and no network");
        CHECK(strstr(html, "<polyline") && strstr(html, "Leakage") && strstr(html, "Timings") && strstr(html, "32.6%"),
              "curves, leakage, timings and the guide's numbers are in the report");
    }
    free(html);
}

/* 2. --fold all */
static void test_all_folds(void) {
    char *out;
    const int rc = test_run(MEDGEM " run --cpu --fold all --out " WORK "/folds --max-steps 2 --eval-every 0 2>&1", &out);
    CHECK(rc == 0 && strstr(out, " ± "), "--fold all exits 0 and prints mean ± sd (%d): %s", rc, out);
    free(out);
    struct stat sb;
    for (int k = 1; k <= 5; k++) {
        char p[256];
        snprintf(p, sizeof p, WORK "/folds/fold-%d/predictions_finetuned.csv", k);
        CHECK(stat(p, &sb) == 0, "%s exists", p);
    }
    mg_json *m = parse_file(WORK "/folds/metrics.json");
    const mg_json *folds = m ? mg_json_get(m, "folds") : NULL;
    CHECK(folds && folds->n == 5, "metrics.json holds 5 folds");
    mg_json_free(m);
    size_t n;
    char *html = test_slurp(WORK "/folds/report.html", &n);
    CHECK(html && strstr(html, "chart-roc-5") && strstr(html, " ± "), "the report has each fold and mean ± sd");
    free(html);
}

/* 3. the default run */
static void test_default(void) {
    char *out;
    const double t0 = now_s();
    const int rc = test_run(MEDGEM " run --out " WORK "/default 2>&1", &out);
    const double secs = now_s() - t0;
    CHECK(rc == 0 && strstr(out, "8-class   fine-tuned") && strstr(out, "report.html"), "the default run prints the table (%d): %s",
          rc, out);
    free(out);
    mg_json *m = parse_file(WORK "/default/metrics.json");
    const mg_json *f = m && mg_json_get(m, "folds") ? &mg_json_get(m, "folds")->items[0] : NULL;
    const double base = f ? mg_json_get_number(mg_json_get(f, "baseline"), "accuracy", -1) : -1;
    const double tuned = f ? mg_json_get_number(mg_json_get(f, "fine_tuned"), "accuracy", -1) : -1;
    printf("     default run: %.1f s, accuracy %.4f -> %.4f\n", secs, base, tuned);
    CHECK(tuned >= base + 0.40, "the fine-tuned accuracy is at least 40 points above the baseline (%.4f -> %.4f)", base, tuned);
    CHECK(secs < 120, "the default run takes under 2 minutes (%.1f s)", secs);
    mg_json_free(m);
}

/* 4. bad input */
static void test_bad_input(void) {
    static const struct {
        const char *args, *expect;
        int rc;
    } cases[] = {
        { "--frobnicate 1", "unknown option", 2 },
        { "--mode guess", "--mode", 2 },
        { "--lr fast", "--lr", 2 },
        { "--fold 9", "fold", 2 },
        { "--model " WORK "/no-model --out " WORK "/bad", "no-model", 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[512], *out;
        snprintf(cmd, sizeof cmd, MEDGEM " run --cpu %s 2>&1", cases[i].args);
        const int rc = test_run(cmd, &out);
        CHECK(rc == cases[i].rc && strstr(out, cases[i].expect), "`run %s` fails (%d) naming '%s': %s", cases[i].args, rc,
              cases[i].expect, out);
        free(out);
    }
    char *out;
    CHECK(test_run(MEDGEM " run --help", &out) == 0 && strstr(out, "--save-merged") && strstr(out, "--mode score|generate"),
          "run --help lists the flags");
    free(out);
    /* docs/cli.md documents every command: each one's usage line is there */
    size_t n;
    char *doc = test_slurp("docs/cli.md", &n);
    static const char *const cmds[] = { "run", "data", "info", "classify", "generate", "eval", "train", "bench", "merge", "tokenize" };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, MEDGEM " %s --help", cmds[i]);
        test_run(cmd, &out);
        char *nl = strchr(out, '\n');
        if (nl) *nl = 0;
        CHECK(doc && strstr(doc, out), "docs/cli.md holds `%s`", out);
        free(out);
    }
    free(doc);
}

int main(void) {
    char *out;
    test_run("rm -rf " WORK " && mkdir -p " WORK, &out);
    free(out);
    test_reduced();
    test_all_folds();
    test_default();
    test_bad_input();
    return test_finish();
}
