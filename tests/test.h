/* The tiny test harness every tests/test_*.c includes (each test is its own program).
 * CHECK(cond, fmt, ...) counts a pass or prints a FAIL line with file:line; check_close()
 * compares arrays and prints max abs/rel error and the share of the tolerance used;
 * test_finish() prints "RESULT <p> passed, <f> failed" and returns the exit code. */
#ifndef MG_TEST_H
#define MG_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "engine/dtype.h"
#include "engine/safetensors.h"

static int test_passed_, test_failed_;

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (cond) {                                               \
            test_passed_++;                                       \
        } else {                                                  \
            test_failed_++;                                       \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);           \
            printf(__VA_ARGS__);                                  \
            printf("\n");                                         \
        }                                                         \
    } while (0)

/* Passes when max |got-ref| / (|ref|_max over the tensor) <= rel_tol, i.e. an error relative to
 * the tensor's scale (elementwise relative error explodes near zeros). Prints one line. */
static inline int check_close_(const char *file, int line, const char *what, const float *got, const double *ref,
                               size_t n, double rel_tol) {
    double max_abs = 0, ref_max = 0;
    size_t worst = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (got[i] != got[i]) nan = 1;
        if (d > max_abs) { max_abs = d; worst = i; }
        if (fabs(ref[i]) > ref_max) ref_max = fabs(ref[i]);
    }
    double rel = max_abs / (ref_max > 0 ? ref_max : 1.0);
    int ok = !nan && rel <= rel_tol;
    printf("%s %s: n=%zu max_abs=%.3g rel=%.3g (%.1f%% of tol %.1g)%s\n", ok ? "ok  " : "FAIL", what, n, max_abs, rel,
           100.0 * rel / rel_tol, rel_tol, nan ? " NaN!" : "");
    if (!ok) printf("     at %s:%d, worst index %zu: got %.8g ref %.8g\n", file, line, worst, got[worst], ref[worst]);
    if (ok) test_passed_++; else test_failed_++;
    return ok;
}
#define check_close(what, got, ref, n, tol) check_close_(__FILE__, __LINE__, what, got, ref, n, tol)

/* Runs cmd; returns its exit status (-1 if it did not exit) and its stdout in *out (malloc'd). */
static inline int test_run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    size_t n = 0, cap = 1 << 16, got;
    char *buf = malloc(cap);
    while (p && (got = fread(buf + n, 1, cap - n - 1, p)) > 0)
        if ((n += got) + 1 == cap) buf = realloc(buf, cap *= 2);
    buf[n] = 0;
    int st = p ? pclose(p) : -1;
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A fixture tensor of small integers stored as floats (ids, labels, token types) as int32. */
static inline int32_t *test_fixture_ints(const mg_st_tensor *t) {
    const int64_t n = mg_st_numel(t);
    float *f = malloc((size_t)n * sizeof(float));
    int32_t *v = malloc((size_t)n * sizeof(int32_t));
    mg_to_f32(f, t->data, t->dtype, (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = (int32_t)f[i];
    free(f);
    return v;
}

/* The whole file at path, NUL-terminated, malloc'd (*n: its length; n may be NULL); NULL when it
 * cannot be read. */
static inline char *test_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)(len > 0 ? len : 0) + 1);
    const size_t got = fread(buf, 1, (size_t)(len > 0 ? len : 0), f);
    buf[got] = 0;
    if (n) *n = got;
    fclose(f);
    return buf;
}

/* 1 when both files can be read and hold the same bytes. */
static inline int test_same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *x = test_slurp(a, &na), *y = test_slurp(b, &nb);
    const int same = x && y && na == nb && !memcmp(x, y, na);
    free(x), free(y);
    return same;
}

static inline int test_finish(void) {
    printf("RESULT %d passed, %d failed\n", test_passed_, test_failed_);
    return test_failed_ ? 1 : 0;
}

#endif
