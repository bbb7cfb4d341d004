/* The op-test harness of the GPU op tests (tests/gpu/test_cuda_ops.c for the forwards,
 * tests/gpu/test_cuda_backward.c for the training ops; ggml's test-backend-ops idea, STYLE habit 7):
 * random bf16 inputs from a seeded generator, device outputs between guard regions of sentinel values
 * and poisoned with NaN, and one verdict line per compared output:
 *   nmse  = Σ(got − ref)² / Σ ref²  over the compared elements;
 *   match = share of elements bit-identical to the reference.
 * Each program includes it once; the functions are static inline, so a program uses any subset. */
#ifndef MG_TESTS_GPU_OP_HARNESS_H
#define MG_TESTS_GPU_OP_HARNESS_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "engine/dtype.h"
#include "kernels/cuda/cuda_context.h"
#include "tests/test.h"

enum { GUARD = 64 };                      /* bf16 sentinels on each side of every output */
static const uint16_t SENTINEL = 0x7F81;  /* a NaN pattern no kernel writes */
static const uint16_t POISON = 0xFFC1;    /* NaN: any element still holding it was not written */

/* ---- random inputs ------------------------------------------------------------------------- */

static uint64_t rng_state;

static inline uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double rng_uniform(void) { return (double)(rng_next() >> 11) * 0x1.0p-53 * 2.0 - 1.0; } /* [-1, 1) */
static inline int rng_int(int n) { return (int)(rng_next() % (uint64_t)n); }

/* The start of an op-test program: seeds the generator (MG_TEST_SEED, else the clock) and creates
 * the CUDA context; 0 (a failure counted) when there is no GPU. MG_TEST_ONLY=text (tc_begin) keeps
 * the cases whose name holds text, MG_TEST_SKIP=text leaves them out. */
static inline int op_test_start(const char *name, mg_cuda_ctx *ctx) {
    const char *seed_env = getenv("MG_TEST_SEED");
    const uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    rng_state = seed;
    if (mg_cuda_ctx_create(ctx, 0) != MG_OK) {
        printf("no GPU: cannot run %s: %s\n", name, mg_last_error());
        test_failed_++;
        return 0;
    }
    printf("%s: %s (sm_%d%d, %d SMs), seed %llu (MG_TEST_SEED=%llu repeats this run)\n", name, ctx->name,
           ctx->cc_major, ctx->cc_minor, ctx->sm_count, (unsigned long long)seed, (unsigned long long)seed);
    return 1;
}

static inline void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "op test: out of host memory (%zu bytes)\n", bytes);
        exit(2); /* a test program, not the library */
    }
    return p;
}

/* n bf16 values uniform in [-scale, scale). */
static inline uint16_t *rand_bf16(size_t n, double scale) {
    uint16_t *h = xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = mg_f32_to_bf16((float)(rng_uniform() * scale));
    return h;
}
static inline double bf(uint16_t h) { return mg_bf16_to_f32(h); }
/* The value x takes once stored as bf16 (through fp32, as the kernels do). */
static inline double rb(double x) { return mg_bf16_to_f32(mg_f32_to_bf16((float)x)); }

/* ---- one case: device buffers, guarded outputs, the verdict -------------------------------- */

typedef struct {
    mg_cuda_ctx *ctx;
    char name[200];  /* "rmsnorm_forward(shape=[360,2560])" */
    void *dev[16];   /* everything allocated for the case */
    int n_dev;
    int broken;      /* a CUDA call or an op returned an error */
    int skipped;     /* left out by MG_TEST_ONLY (then also broken, so nothing runs; not counted) */
    char err[600];
} tcase;

static inline void tc_begin(tcase *tc, mg_cuda_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline void tc_begin(tcase *tc, mg_cuda_ctx *ctx, const char *fmt, ...) {
    memset(tc, 0, sizeof *tc);
    tc->ctx = ctx;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tc->name, sizeof tc->name, fmt, ap);
    va_end(ap);
    /* MG_TEST_ONLY=text runs only the cases whose name holds it (e.g. `attention` under racecheck);
     * MG_TEST_SKIP=text leaves out those whose name holds it (e.g. the largest shapes there) */
    const char *only = getenv("MG_TEST_ONLY"), *skip = getenv("MG_TEST_SKIP");
    if ((only && *only && !strstr(tc->name, only)) || (skip && *skip && strstr(tc->name, skip)))
        tc->skipped = tc->broken = 1;
}

/* Records the first failure of a CUDA helper or an op. */
static inline void tc_status(tcase *tc, mg_status s, const char *what) {
    if (s == MG_OK || tc->broken) return;
    tc->broken = 1;
    snprintf(tc->err, sizeof tc->err, "%s: %s: %s", what, mg_status_name(s), mg_last_error());
}

static inline void *dev_alloc(tcase *tc, size_t bytes) {
    void *p = NULL;
    if (tc->broken || tc->n_dev == (int)(sizeof tc->dev / sizeof tc->dev[0])) return NULL;
    tc_status(tc, mg_cuda_alloc(tc->ctx, &p, bytes), "cudaMalloc");
    if (p) tc->dev[tc->n_dev++] = p;
    return p;
}

/* A device copy of host[bytes]. */
static inline void *dev_from(tcase *tc, const void *host, size_t bytes) {
    void *p = dev_alloc(tc, bytes);
    if (p) tc_status(tc, mg_cuda_upload(tc->ctx, p, host, bytes), "upload");
    return p;
}

/* A guarded bf16 output of n elements: GUARD sentinels, the n elements (init, or POISON when init
 * is NULL), GUARD sentinels. Returns the device pointer to the first of the n elements. */
static inline uint16_t *dev_out(tcase *tc, size_t n, const uint16_t *init) {
    const size_t total = n + 2 * GUARD;
    uint16_t *h = xmalloc(total * sizeof *h);
    for (size_t i = 0; i < total; i++) h[i] = SENTINEL;
    for (size_t i = 0; i < n; i++) h[GUARD + i] = init ? init[i] : POISON;
    uint16_t *d = dev_from(tc, h, total * sizeof *h);
    free(h);
    return d ? d + GUARD : NULL;
}

/* Waits for the op, downloads the n outputs into host[n]; counts corrupted guards and NaNs. */
static inline void out_fetch(tcase *tc, const uint16_t *out, size_t n, uint16_t *host, int *guard_bad, size_t *nan_count) {
    *guard_bad = 0;
    *nan_count = 0;
    if (tc->broken) return;
    tc_status(tc, mg_cuda_sync(tc->ctx), "kernel execution");
    const size_t total = n + 2 * GUARD;
    uint16_t *h = xmalloc(total * sizeof *h);
    tc_status(tc, mg_cuda_download(tc->ctx, h, out - GUARD, total * sizeof *h), "download");
    if (!tc->broken) {
        for (size_t i = 0; i < GUARD; i++) *guard_bad += (h[i] != SENTINEL) + (h[GUARD + n + i] != SENTINEL);
        for (size_t i = 0; i < n; i++) *nan_count += isnan(bf(h[GUARD + i]));
        memcpy(host, h + GUARD, n * sizeof *host);
    }
    free(h);
}

/* Frees the case's device buffers. */
static inline void tc_free(tcase *tc) {
    for (int i = 0; i < tc->n_dev; i++) mg_cuda_free(tc->dev[i]);
    tc->n_dev = 0;
}

/* Compares got[n] with ref[n] and prints one line, `<name><label>: OK nmse=… (limit …) match=… (min …)`
 * or FAIL with the limits missed marked; counts the verdict. A broken case prints its error instead (got unread). */
static inline int tc_check(const tcase *tc, const char *label, const double *got, const double *ref, size_t n,
                           int guard_bad, size_t nan_count, double tol, double min_match) {
    if (tc->skipped) return 1;
    if (tc->broken) {
        printf("%s%s: FAIL error %s\n", tc->name, label, tc->err);
        test_failed_++;
        return 0;
    }
    double num = 0, den = 0;
    size_t same = 0;
    for (size_t i = 0; i < n; i++) {
        const double g = got[i], d = g - ref[i];
        if (!isnan(g)) num += d * d;
        den += ref[i] * ref[i];
        same += g == ref[i];
    }
    const double nmse = num / (den > 0 ? den : 1.0), match = n ? (double)same / (double)n : 1.0;
    /* below 1.0 the match bound is a rate of rounding flips: on a handful of outputs one flip moves
     * it by several percent (15 outputs: 6.7%), so it is lowered by two standard errors of a
     * proportion, sqrt(0.25/n) each: 0.26 at n = 15, 0.006 at n = 10^5 */
    if (min_match < 1.0 && n > 0) min_match -= 2.0 * sqrt(0.25 / (double)n);
    const int ok = guard_bad == 0 && nan_count == 0 && nmse <= tol && match >= min_match;
    printf("%s%s: %s nmse=%.2e (limit %.1e) match=%.4f (min %.2f)", tc->name, label, ok ? "OK" : "FAIL", nmse, tol,
           match, min_match);
    if (nmse > tol) printf(" [nmse > %.1e]", tol);
    if (match < min_match) printf(" [match < %.2f]", min_match);
    if (nan_count) printf(" [%zu outputs NaN/unwritten]", nan_count);
    if (guard_bad) printf(" [%d guard elements overwritten]", guard_bad);
    printf("\n");
    if (ok) test_passed_++; else test_failed_++;
    return ok;
}

/* Compares the bf16 got[n] with ref[n] and prints the case's line; frees its device buffers. */
static inline void tc_finish(tcase *tc, const uint16_t *got, const double *ref, size_t n, int guard_bad,
                             size_t nan_count, double tol, double min_match) {
    tc_free(tc);
    double *g = NULL;
    if (!tc->broken) {
        g = xmalloc(n * sizeof *g);
        for (size_t i = 0; i < n; i++) g[i] = bf(got[i]);
    }
    tc_check(tc, "", g, ref, n, guard_bad, nan_count, tol, min_match);
    free(g);
}

/* fp32 outputs (LoRA gradients, the loss, optimizer state): the same guards and poison in fp32. */
static const uint32_t SENTINEL_F32 = 0x7FC0BEEFu; /* a NaN payload no kernel writes */
static const uint32_t POISON_F32 = 0xFFC0DEADu;   /* NaN: an element still holding it was not written */

static inline float f32_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint32_t bits_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* A guarded fp32 output of n elements (init, or POISON_F32 when init is NULL). */
static inline float *dev_out_f32(tcase *tc, size_t n, const float *init) {
    const size_t total = n + 2 * GUARD;
    float *h = xmalloc(total * sizeof *h);
    for (size_t i = 0; i < total; i++) h[i] = f32_bits(SENTINEL_F32);
    for (size_t i = 0; i < n; i++) h[GUARD + i] = init ? init[i] : f32_bits(POISON_F32);
    float *d = dev_from(tc, h, total * sizeof *h);
    free(h);
    return d ? d + GUARD : NULL;
}

/* Waits for the op, downloads the n fp32 outputs into host[n]; counts corrupted guards and NaNs. */
static inline void out_fetch_f32(tcase *tc, const float *out, size_t n, float *host, int *guard_bad,
                                 size_t *nan_count) {
    *guard_bad = 0;
    *nan_count = 0;
    if (tc->broken) return;
    tc_status(tc, mg_cuda_sync(tc->ctx), "kernel execution");
    const size_t total = n + 2 * GUARD;
    float *h = xmalloc(total * sizeof *h);
    tc_status(tc, mg_cuda_download(tc->ctx, h, out - GUARD, total * sizeof *h), "download");
    if (!tc->broken) {
        for (size_t i = 0; i < GUARD; i++)
            *guard_bad += (bits_f32(h[i]) != SENTINEL_F32) + (bits_f32(h[GUARD + n + i]) != SENTINEL_F32);
        for (size_t i = 0; i < n; i++) *nan_count += isnan(h[GUARD + i]);
        memcpy(host, h + GUARD, n * sizeof *host);
    }
    free(h);
}

/* Rows to compare when a full float64 reference would be slow: about `want` rows spread over M,
 * always the first and the last. Returns the count written to idx. */
static inline int64_t sample_rows(int64_t M, int64_t want, int64_t *idx) {
    const int64_t stride = M <= want ? 1 : (M + want - 1) / want;
    int64_t n = 0;
    for (int64_t r = 0; r < M; r += stride) idx[n++] = r;
    if (idx[n - 1] != M - 1) idx[n++] = M - 1;
    return n;
}


#endif
