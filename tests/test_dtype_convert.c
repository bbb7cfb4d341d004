/* mg_to_bf16 (engine/dtype.h), the conversion behind every CUDA upload of fp32/f16 data, against a
 * reference written here in double arithmetic: a value m·2^e (m in [0.5, 1)) keeps 8 significant
 * bits (bf16's), or fewer below 2^-126 where bf16's step is 2^-133 like fp32's subnormals;
 * nearbyint rounds half to even; magnitudes that round to 2^128 or more are infinities; NaN stays
 * NaN. Inputs: random bit patterns (every class: NaN, inf, subnormal, zero), long enough to take
 * the OpenMP path, at an odd byte offset (mmap'd checkpoints give no alignment). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dtype.h"
#include "tests/test.h"

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint32_t rand32(void) { /* xorshift64*, reproducible */
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

/* The bf16 value of x (a finite double, or inf/NaN passed through) as a float. */
static float ref_bf16(double x) {
    if (isnan(x) || isinf(x) || x == 0) return (float)x;
    int e;
    frexp(x, &e);
    const double step = e - 8 > -133 ? ldexp(1.0, e - 8) : ldexp(1.0, -133);
    const double r = nearbyint(x / step) * step;
    return fabs(r) >= ldexp(1.0, 128) ? (float)copysign(INFINITY, x) : (float)r;
}

/* f16 bits decoded by the IEEE formula. */
static double f16_value(uint16_t h) {
    const int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return sign ? -v : v;
}

static int same(float got, float want) {
    if (isnan(want)) return isnan(got);
    return memcmp(&got, &want, sizeof got) == 0; /* bit-exact, the sign of zero included */
}

static void case_convert(mg_dtype from, size_t n) {
    const size_t es = mg_dtype_size(from);
    unsigned char *raw = malloc(n * es + 1), *src = raw + 1; /* odd address */
    uint16_t *got = malloc(n * sizeof *got);
    for (size_t i = 0; i < n; i++) {
        const uint32_t bits = rand32();
        memcpy(src + i * es, from == MG_F32 ? (const void *)&bits : (const void *)&(uint16_t){ (uint16_t)bits }, es);
    }
    /* a few values at the edges: a tie rounding down to even, one rounding up, the largest float
     * (rounds to inf), the smallest subnormal (rounds to 0) */
    const uint32_t edges[4] = { 0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x00000001u };
    if (from == MG_F32) memcpy(src, edges, sizeof edges);
    mg_to_bf16(got, src, from, n);
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double x;
        if (from == MG_F32) {
            float f;
            memcpy(&f, src + i * 4, 4);
            x = f;
        } else {
            uint16_t h;
            memcpy(&h, src + i * 2, 2);
            x = f16_value(h);
        }
        if (!same(mg_bf16_to_f32(got[i]), ref_bf16(x)) && bad++ == 0) first_bad = i;
    }
    CHECK(bad == 0, "mg_to_bf16(from=%s, n=%zu): %zu of %zu differ from the reference, first at %zu",
          mg_dtype_name(from), n, bad, n, first_bad);
    printf("%s mg_to_bf16(from=%s, n=%zu, odd address): %zu mismatches\n", bad ? "FAIL" : "ok  ",
           mg_dtype_name(from), n, bad);
    free(raw), free(got);
}

int main(void) {
    case_convert(MG_F32, 7);
    case_convert(MG_F32, 300001);
    case_convert(MG_F16, 5);
    case_convert(MG_F16, 200003);
    return test_finish();
}
