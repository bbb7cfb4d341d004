/* `medgem eval` end to end on the tiny golden model and a small synthetic BreakHis (mg_synth_breakhis
 * in a temporary folder):
 * - score and generate mode print one JSON object with the keys scripts depend on, over as many
 *   images as `medgem data` selects, with finite probabilities that sum to 1 in the CSV;
 * - the score-mode logits in the CSV (batches of 5, the last one short) equal what
 *   `medgem classify --json` prints for the same image files, also with --adapter (PEFT LoRA
 *   merged), and generate mode's first-step class-digit logits equal them too (the paths agree);
 * - the JSON's accuracy is the share of CSV rows with pred == label;
 * - bad input: a missing --data path and an empty selection fail with a message and exit status 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "data/synth.h"
#include "engine/json.h"
#include "tests/test.h"

#define MEDGEM "build/medgem "
#define MODEL "tests/golden/tiny"
#define ADAPTER "tests/golden/lora_adapter"
#define K 8
#define MAX_ROWS 64

typedef struct {
    char path[512];
    int label, pred;
    double probs[K], logits[K];
} csv_row;

static int read_csv(const char *path, csv_row *rows) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    if (!fgets(line, sizeof line, f)) { fclose(f); return -1; } /* header */
    while (n < MAX_ROWS && fgets(line, sizeof line, f)) {
        csv_row *r = &rows[n++];
        char *save, *tok = strtok_r(line, ",\n", &save);
        snprintf(r->path, sizeof r->path, "%s", tok ? tok : "");
        r->label = atoi(strtok_r(NULL, ",\n", &save));
        r->pred = atoi(strtok_r(NULL, ",\n", &save));
        for (int k = 0; k < K; k++) r->probs[k] = strtod(strtok_r(NULL, ",\n", &save), NULL);
        for (int k = 0; k < K; k++) r->logits[k] = strtod(strtok_r(NULL, ",\n", &save), NULL);
    }
    fclose(f);
    return n;
}

/* The required keys of the --json object, and the image count. */
static void check_json(const char *what, const char *out, int64_t want_images, const csv_row *rows, int n_rows) {
    const int failed_before = test_failed_;
    mg_json *j = NULL;
    CHECK(mg_json_parse(out, strlen(out), what, &j) == MG_OK, "%s: output is one JSON object: %s", what, out);
    if (!j) return;
    static const char *const keys[] = { "images", "accuracy", "f1_weighted", "f1_macro", "confusion", "binary",
                                        "patient_rate", "images_per_s", "per_class", "mode", "skipped", "selection" };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) CHECK(mg_json_get(j, keys[i]), "%s: key %s", what, keys[i]);
    static const char *const bkeys[] = { "accuracy", "f1_malignant", "sensitivity", "specificity", "auc" };
    for (size_t i = 0; i < sizeof bkeys / sizeof bkeys[0]; i++)
        CHECK(mg_json_get(mg_json_get(j, "binary"), bkeys[i]), "%s: key binary.%s", what, bkeys[i]);
    const mg_json *conf = mg_json_get(j, "confusion");
    CHECK(conf && conf->n == K && conf->items[0].n == K, "%s: 8x8 confusion matrix", what);
    const int64_t images = (int64_t)mg_json_get_number(j, "images", -1);
    CHECK(images == want_images, "%s: %lld images, `medgem data` selects %lld", what, (long long)images, (long long)want_images);
    CHECK(n_rows == images, "%s: %d CSV rows", what, n_rows);
    int correct = 0;
    for (int i = 0; i < n_rows; i++) correct += rows[i].pred == rows[i].label;
    const double acc = mg_json_get_number(j, "accuracy", -1);
    CHECK(n_rows > 0 && fabs(acc - (double)correct / n_rows) < 1e-9, "%s: accuracy %g is the CSV's share of correct rows", what, acc);
    printf("%s %s: %lld images, accuracy %.4f, auc %.4f, %.1f images/s\n", test_failed_ == failed_before ? "ok  " : "FAIL", what,
           (long long)images, acc, mg_json_get_number(mg_json_get(j, "binary"), "auc", NAN),
           mg_json_get_number(j, "images_per_s", NAN));
    mg_json_free(j);
}

static void check_probs(const char *what, const csv_row *rows, int n) {
    int ok = n > 0;
    for (int i = 0; i < n; i++) {
        double sum = 0;
        for (int k = 0; k < K; k++) ok &= isfinite(rows[i].probs[k]) && isfinite(rows[i].logits[k]), sum += rows[i].probs[k];
        ok &= fabs(sum - 1) < 1e-6;
    }
    CHECK(ok, "%s: probabilities finite and summing to 1", what);
}

/* `medgem classify [opt] --json` on the first 4 images of rows: the logits eval wrote. */
static void compare_with_classify(const char *opt, const csv_row *rows, int n_rows) {
    char cmd[4096], *out;
    const int n = n_rows < 4 ? n_rows : 4;
    int len = snprintf(cmd, sizeof cmd, MEDGEM "classify --json --model " MODEL " %s--image", opt);
    for (int i = 0; i < n; i++) len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %s", rows[i].path);
    CHECK(test_run(cmd, &out) == 0, "%s", cmd);
    double worst = 0;
    int lines = 0;
    for (char *save, *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save), lines++) {
        mg_json *j = NULL;
        if (lines >= n || mg_json_parse(line, strlen(line), "classify", &j) != MG_OK) { CHECK(0, "classify line %s", line); break; }
        const mg_json *l = mg_json_get(j, "logits");
        CHECK(!strcmp(mg_json_get_string(j, "image", ""), rows[lines].path), "classify image %d", lines);
        CHECK(l && l->n == K, "classify prints 8 logits");
        for (int k = 0; l && l->n == K && k < K; k++) worst = fmax(worst, fabs(l->items[k].number - rows[lines].logits[k]));
        mg_json_free(j);
    }
    printf("%s eval CSV logits vs classify %s--json: %d images, max diff %.2g\n", lines == n && worst <= 1e-6 ? "ok  " : "FAIL",
           opt, lines, worst);
    CHECK(lines == n && worst <= 1e-6, "eval and classify %slogits agree (max diff %g)", opt, worst);
    free(out);
}

int main(void) {
    char dir[] = "/tmp/medgem_test_eval_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temporary folder");
    char data[300], empty[300], cmd[2048];
    snprintf(data, sizeof data, "%s/bh", dir);
    snprintf(empty, sizeof empty, "%s/bh8", dir);
    mg_synth_opts o = mg_synth_defaults();
    o.patients = 16, o.images = 2, o.width = 40, o.height = 30;
    CHECK(mg_synth_breakhis(data, &o) == MG_OK, "synth: %s", mg_last_error());
    o.patients = 8, o.images = 1; /* one patient per class: every patient lands in train, the test split is empty */
    CHECK(mg_synth_breakhis(empty, &o) == MG_OK, "synth: %s", mg_last_error());

    /* what `medgem data` selects by default (the guide's selection, test split) */
    char *out;
    snprintf(cmd, sizeof cmd, MEDGEM "data --data %s --json", data);
    CHECK(test_run(cmd, &out) == 0, "%s", cmd);
    mg_json *dj = NULL;
    mg_json_parse(out, strlen(out), "medgem data", &dj);
    const int64_t selected = (int64_t)mg_json_get_number(mg_json_get(dj, "test"), "images", -1);
    CHECK(selected > 4, "medgem data selects %lld test images", (long long)selected);
    mg_json_free(dj);
    free(out);

    static csv_row score[MAX_ROWS], gen[MAX_ROWS];
    snprintf(cmd, sizeof cmd, MEDGEM "eval --cpu --model " MODEL " --data %s --batch 5 --json --csv %s/score.csv", data, dir);
    CHECK(test_run(cmd, &out) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd, "%s/score.csv", dir);
    const int n_score = read_csv(cmd, score);
    check_json("eval score", out, selected, score, n_score);
    check_probs("eval score", score, n_score);
    free(out);

    snprintf(cmd, sizeof cmd, MEDGEM "eval --model " MODEL " --data %s --mode generate --max-new-tokens 2 --json --csv %s/gen.csv",
             data, dir);
    CHECK(test_run(cmd, &out) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd, "%s/gen.csv", dir);
    const int n_gen = read_csv(cmd, gen);
    check_json("eval generate", out, selected, gen, n_gen);
    check_probs("eval generate", gen, n_gen);
    free(out);

    /* the same images through `medgem classify`: the same logits (also with a LoRA adapter merged) */
    double worst_gen = 0;
    for (int i = 0; i < n_score && i < n_gen; i++)
        for (int k = 0; k < K; k++) worst_gen = fmax(worst_gen, fabs(gen[i].logits[k] - score[i].logits[k]));
    printf("%s generate's first-step logits vs score's: max diff %.2g\n", worst_gen <= 1e-6 ? "ok  " : "FAIL", worst_gen);
    CHECK(n_gen == n_score && worst_gen <= 1e-6, "generate's first-step logits equal score's (max diff %g)", worst_gen);
    compare_with_classify("", score, n_score);
    static csv_row adapted[MAX_ROWS];
    snprintf(cmd, sizeof cmd, MEDGEM "eval --model " MODEL " --adapter " ADAPTER " --data %s --csv %s/adapted.csv", data, dir);
    CHECK(test_run(cmd, &out) == 0, "%s", cmd);
    free(out);
    snprintf(cmd, sizeof cmd, "%s/adapted.csv", dir);
    const int n_adapted = read_csv(cmd, adapted);
    double effect = 0;
    for (int i = 0; i < n_adapted && i < n_score; i++)
        for (int k = 0; k < K; k++) effect = fmax(effect, fabs(adapted[i].logits[k] - score[i].logits[k]));
    CHECK(n_adapted == n_score && effect > 1e-3, "--adapter changes the logits (by %g)", effect);
    compare_with_classify("--adapter " ADAPTER " ", adapted, n_adapted);

    /* bad input: exit status 1 and a message with a HINT */
    const char *bad[2][2] = { { "/nonexistent/breakhis", "cannot open" }, { empty, "is empty" } };
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, MEDGEM "eval --model " MODEL " --data %s --json 2>&1", bad[i][0]);
        const int rc = test_run(cmd, &out);
        CHECK(rc == 1 && strstr(out, bad[i][1]) && strstr(out, "HINT"), "%s: exit %d, %s", bad[i][0], rc, out);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
