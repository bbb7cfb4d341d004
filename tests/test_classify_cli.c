/* `medgem classify --cpu --json` end to end on the tiny golden model: runs the built binary on two
 * images and compares the 8 class-digit logits it prints with those transformers computed for the
 * same image files and prompt (tests/fixtures/classify/expected.json, made by
 * make_classify_fixture.py), within 1e-3; checks that probs are their softmax and pred its argmax.
 * The same with --adapter tests/golden/lora_adapter against PEFT's logits (adapter_logits).
 * Also checks that bad input (a missing image, a directory without an adapter) fails with a message
 * and a non-zero exit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "engine/json.h"
#include "tests/test.h"

#define DIR "tests/fixtures/classify/"
#define CMD "build/medgem classify --cpu --json --model tests/golden/tiny --image "
#define TOL 1e-3

static void check_line(const char *line, const mg_json *want, const char *ref_key) {
    mg_json *j = NULL;
    CHECK(mg_json_parse(line, strlen(line), "classify output", &j) == MG_OK, "output line is JSON: %s", line);
    if (!j) return;
    const mg_json *logits = mg_json_get(j, "logits"), *probs = mg_json_get(j, "probs");
    const mg_json *ref = mg_json_get(want, ref_key);
    CHECK(logits && probs && logits->n == 8 && probs->n == 8 && ref && ref->n == 8, "8 logits and 8 probs");
    if (logits && probs && logits->n == 8 && probs->n == 8 && ref && ref->n == 8) {
        double max_diff = 0, mx = -INFINITY, sum = 0, prob_diff = 0;
        int argmax = 0;
        for (int k = 0; k < 8; k++) {
            max_diff = fmax(max_diff, fabs(logits->items[k].number - ref->items[k].number));
            if (logits->items[k].number > logits->items[argmax].number) argmax = k;
            mx = fmax(mx, logits->items[k].number);
        }
        for (int k = 0; k < 8; k++) sum += exp(logits->items[k].number - mx);
        for (int k = 0; k < 8; k++)
            prob_diff = fmax(prob_diff, fabs(probs->items[k].number - exp(logits->items[k].number - mx) / sum));
        printf("%s %s: logits %+.5f %+.5f ... vs %s %+.5f %+.5f ..., max diff %.2g (%.1f%% of tol %g)\n",
               max_diff <= TOL ? "ok  " : "FAIL", mg_json_get_string(j, "image", "?"), logits->items[0].number,
               logits->items[1].number, ref_key, ref->items[0].number, ref->items[1].number, max_diff, 100 * max_diff / TOL,
               TOL);
        CHECK(max_diff <= TOL, "logits within %g of transformers", TOL);
        CHECK(prob_diff < 1e-6, "probs are the softmax of the logits (diff %g)", prob_diff);
        CHECK((int)mg_json_get_number(j, "pred", -1) == argmax, "pred is the argmax");
    }
    mg_json_free(j);
}

int main(void) {
    mg_json *exp_j = NULL;
    CHECK(mg_json_parse_file(DIR "expected.json", &exp_j) == MG_OK, "expected.json: %s", mg_last_error());
    const mg_json *images = exp_j ? mg_json_get(exp_j, "images") : NULL;
    CHECK(images && images->n == 2, "expected.json lists 2 images");
    if (!images || images->n != 2) return test_finish();

    /* without and with the adapter; the fixture's two sets of logits must differ far beyond TOL */
    double adapter_effect = 0;
    for (int i = 0; i < 2; i++) {
        const mg_json *a = mg_json_get(&images->items[i], "logits"), *b = mg_json_get(&images->items[i], "adapter_logits");
        for (int k = 0; a && b && k < a->n && k < b->n; k++)
            adapter_effect = fmax(adapter_effect, fabs(a->items[k].number - b->items[k].number));
    }
    CHECK(adapter_effect > 100 * TOL, "the adapter changes the fixture's logits by %g", adapter_effect);
    const char *adapter_opt[2] = { "", "--adapter tests/golden/lora_adapter " }, *ref_key[2] = { "logits", "adapter_logits" };
    for (int run = 0; run < 2; run++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, CMD DIR "%s " DIR "%s %s", mg_json_get_string(&images->items[0], "image", ""),
                 mg_json_get_string(&images->items[1], "image", ""), adapter_opt[run]);
        FILE *p = popen(cmd, "r");
        char line[4096];
        int n = 0;
        while (p && fgets(line, sizeof line, p))
            if (n < 2) check_line(line, &images->items[n++], ref_key[run]);
        int status = p ? pclose(p) : -1;
        CHECK(n == 2 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: %d lines, exit status %d", cmd, n, status);
    }

    /* a missing image: an error message naming it, exit status 1, nothing on stdout */
    FILE *p = popen(CMD DIR "no_such_image.png 2>&1", "r");
    char out[4096] = "";
    size_t got = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[got] = 0;
    int status = p ? pclose(p) : -1;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1 && strstr(out, "no_such_image.png") && strstr(out, "HINT"),
          "missing image reported: %s", out);
    /* a directory that holds no adapter: named, with a HINT, exit status 1 */
    p = popen(CMD DIR "noise_30x20.png --adapter tests/golden/tiny 2>&1", "r");
    got = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[got] = 0;
    status = p ? pclose(p) : -1;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1 && strstr(out, "tests/golden/tiny/adapter_config.json") &&
              strstr(out, "HINT"),
          "missing adapter reported: %s", out);
    mg_json_free(exp_j);
    return test_finish();
}
