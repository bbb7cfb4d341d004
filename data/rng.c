#include "data/rng.h"

uint64_t mg_rng_next(mg_rng *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

mg_rng mg_rng_seed(uint64_t seed, uint64_t stream) {
    mg_rng r = { seed };
    r.state = mg_rng_next(&r) ^ (stream * 0xD1B54A32D192ED03ull);
    return r;
}

uint64_t mg_rng_below(mg_rng *r, uint64_t n) {
    uint64_t threshold = (0 - n) % n; /* 2^64 mod n: draws below it would bias the modulo */
    for (;;) {
        uint64_t x = mg_rng_next(r);
        if (x >= threshold) return x % n;
    }
}

double mg_rng_uniform(mg_rng *r) { return (double)(mg_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

void mg_rng_shuffle(mg_rng *r, int64_t *a, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)mg_rng_below(r, (uint64_t)i + 1);
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}
