/* The small synthetic BreakHis the training tests share: 32 patients, 4 images each, 140x92 (fast on
 * the CPU, enough for the tiny model to learn), written fresh into data under an emptied work folder. */
#ifndef MG_TEST_SYNTH_FIXTURE_H
#define MG_TEST_SYNTH_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "data/synth.h"
#include "tests/test.h"

static inline void test_fresh_synth(const char *work, const char *data) {
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", work, work);
    test_run(cmd, &out);
    free(out);
    mg_synth_opts so = mg_synth_defaults();
    so.patients = 32, so.images = 4, so.width = 140, so.height = 92;
    CHECK(mg_synth_breakhis(data, &so) == MG_OK, "synthetic data: %s", mg_last_error());
}

#endif
