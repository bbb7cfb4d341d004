/* What the CPU op tests share (tests/test_cpu_ops.c, tests/test_cpu_backward.c): a reproducible
 * uniform generator, output buffers between guard sentinels that must survive (out-of-bounds
 * writes), and float64 reference buffers. */
#ifndef MG_TEST_CPU_OP_HARNESS_H
#define MG_TEST_CPU_OP_HARNESS_H

#include <stdint.h>
#include <stdlib.h>

#include "tests/test.h"

#define GUARD 16
#define SENTINEL 12345.678f

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static inline float uniform(float lo, float hi) { /* xorshift64*, reproducible */
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return lo + (hi - lo) * (float)((rng_state * 0x2545f4914f6cdd1dull) >> 40) / (float)(1 << 24);
}
static inline float *rand_vec(int64_t n, float lo, float hi) {
    float *x = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = uniform(lo, hi);
    return x;
}
/* An output buffer of n floats with GUARD sentinels on each side. */
static inline float *out_new(int64_t n) {
    float *p = malloc((size_t)(n + 2 * GUARD) * sizeof(float));
    for (int64_t i = 0; i < n + 2 * GUARD; i++) p[i] = SENTINEL;
    return p + GUARD;
}
static inline void out_free(const char *what, float *p, int64_t n) {
    int ok = 1;
    for (int i = 0; i < GUARD; i++) ok &= p[-1 - i] == SENTINEL && p[n + i] == SENTINEL;
    CHECK(ok, "%s wrote outside its output", what);
    free(p - GUARD);
}
static inline double *ref_new(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(double)); }

#endif
