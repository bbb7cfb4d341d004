/* The examples (make examples) on the tiny model, CPU: classify (against libmedgem.so and
 * libmedgem.a) prints each image's class, the one `medgem classify --cpu` finds, and 8
 * probabilities summing to 1; train_loop trains on a synthetic BreakHis tree (medgem data synth)
 * through the API, its loss falls and it writes a PEFT adapter that `medgem classify --adapter` loads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test.h"

#define IMGS "tests/fixtures/classify/noise_30x20.png tests/fixtures/classify/stripes_70x46.png"

static void check_classify(const char *bin) {
    char cmd[512], *out = NULL, *ref = NULL;
    snprintf(cmd, sizeof cmd, "MEDGEM_BACKEND=cpu build/examples/%s tests/golden/tiny " IMGS " 2>/dev/null", bin);
    CHECK(test_run(cmd, &out) == 0, "%s ran", bin);
    CHECK(test_run("build/medgem classify --cpu --json --model tests/golden/tiny --image " IMGS " 2>/dev/null", &ref) == 0,
          "the CLI ran");
    /* "path: K name" then 8 "  k name prob" lines per image */
    const char *p = out, *r = ref;
    for (int b = 0; b < 2; b++) {
        const char *colon = strstr(p, ": ");
        const char *pred = strstr(r, "\"pred\": ");
        CHECK(colon && pred && atoi(colon + 2) == atoi(pred + 8), "%s image %d: the CLI's class", bin, b);
        if (!colon || !pred) break;
        double sum = 0;
        const char *line = strchr(colon, '\n');
        for (int k = 0; k < 8 && line; k++) {
            const char *last = strrchr(line, ' '); /* the probability ends the line */
            const char *nl = strchr(line + 1, '\n');
            for (const char *q = line + 1; nl && q < nl; q++) if (*q == ' ') last = q;
            sum += atof(last + 1);
            line = nl;
        }
        CHECK(sum > 0.9999 && sum < 1.0001, "%s image %d: the 8 probabilities sum to 1 (%g)", bin, b, sum);
        p = line ? line : p, r = pred + 8;
    }
    printf("ok   %s:\n%s", bin, out);
    free(out), free(ref);
}

int main(void) {
    check_classify("classify");
    check_classify("classify_static");
    char *usage = NULL;
    CHECK(test_run("build/examples/classify 2>/dev/null", &usage) == 2, "usage without arguments");
    free(usage);
    char *o = NULL;
    CHECK(test_run("MEDGEM_BACKEND=cpu build/examples/classify /nonexistent tests/fixtures/classify/noise_30x20.png 2>&1", &o) == 1 &&
              strstr(o, "/nonexistent"),
          "a missing model fails with its message");
    free(o);

    char dir[] = "/tmp/medgem_examples_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temp dir");
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "build/medgem data synth --out %s/data --patients 8 --images 1 --size 140x92 >/dev/null 2>&1", dir);
    CHECK(test_run(cmd, &out) == 0, "synthetic data");
    free(out);
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=2 build/examples/train_loop tests/golden/tiny %s/data %s/adapter --epochs 2 --batch 4 --lr 5e-3 "
             "--answer-loss 1 2>&1", dir, dir);
    const int rc = test_run(cmd, &out);
    CHECK(rc == 0, "train_loop ran (rc %d):\n%s", rc, out);
    const char *first = strstr(out, "update 1: loss "), *last = NULL;
    for (const char *q = out; (q = strstr(q, "update ")); q++) last = q;
    const double l0 = first ? atof(first + 15) : 0, l1 = last ? atof(strstr(last, "loss ") + 5) : 0;
    printf("%s train_loop: %s", l1 < l0 ? "ok  " : "FAIL", out);
    CHECK(first && last && l1 < l0, "the loss falls (%g -> %g)", l0, l1);
    CHECK(strstr(out, "held-out accuracy") && strstr(out, "adapter written"), "evaluations and the adapter");
    free(out);
    snprintf(cmd, sizeof cmd,
             "build/medgem classify --cpu --model tests/golden/tiny --adapter %s/adapter --image "
             "tests/fixtures/classify/noise_30x20.png >/dev/null 2>&1", dir);
    CHECK(test_run(cmd, &out) == 0, "the CLI loads the adapter train_loop wrote");
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
