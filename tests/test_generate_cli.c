/* `medgem generate --cpu --json` end to end on the tiny golden model: the answers it prints for the
 * two classify fixture images equal the text transformers' generate(do_sample=False) decoded for the
 * same images and prompts (tests/fixtures/generate/expected.json, cases "guide" (the default prompt)
 * and "hello" (--prompt hello), 12 new tokens), and pred is the guide's parse of that text.
 * Bad input (no image) fails with exit status 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "engine/json.h"
#include "tests/test.h"

#define IMAGES "tests/fixtures/classify/stripes_70x46.png tests/fixtures/classify/noise_30x20.png"
#define CMD "build/medgem generate --cpu --json --max-new-tokens 12 --model tests/golden/tiny --image " IMAGES

static void check_case(const mg_json *cases, const char *name, const char *extra_args) {
    const mg_json *want = mg_json_get(mg_json_get(cases, name), "images");
    CHECK(want && want->type == MG_JSON_ARRAY && want->n == 2, "%s: the fixture has 2 images", name);
    if (!want || want->n != 2) return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, CMD " %s 2>/dev/null", extra_args);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL, "run %s", cmd);
    if (!p) return;
    char line[8192];
    int i = 0;
    while (fgets(line, sizeof line, p) && i < 2) {
        mg_json *j = NULL;
        CHECK(mg_json_parse(line, strlen(line), "generate output", &j) == MG_OK, "%s: output line is JSON", name);
        if (!j) continue;
        const char *got = mg_json_get_string(j, "answer", "?"), *ref = mg_json_get_string(&want->items[i], "decoded", "!");
        const int ok = !strcmp(got, ref);
        printf("%s %s image %d: medgem \"%s\" | transformers \"%s\"\n", ok ? "ok  " : "FAIL", name, i, got, ref);
        CHECK(ok, "%s image %d: the answer equals transformers' decoded text", name, i);
        CHECK(mg_json_get_number(j, "pred", -9) == mg_json_get_number(&want->items[i], "pred", -8),
              "%s image %d: pred is the guide's parse", name, i);
        mg_json_free(j);
        i++;
    }
    const int status = pclose(p);
    CHECK(i == 2 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: two answers and exit 0 (got %d lines)", name, i);
}

int main(void) {
    mg_json *exp_j = NULL;
    CHECK(mg_json_parse_file("tests/fixtures/generate/expected.json", &exp_j) == MG_OK, "expected.json: %s", mg_last_error());
    const mg_json *cases = mg_json_get(exp_j, "cases");
    CHECK(cases != NULL, "expected.json has cases");
    if (cases) {
        check_case(cases, "guide", "");
        check_case(cases, "hello", "--prompt hello");
    }
    mg_json_free(exp_j);
    const int status = system("build/medgem generate --cpu --model tests/golden/tiny > /dev/null 2>&1");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2, "no --image: exit status 2");
    return test_finish();
}
