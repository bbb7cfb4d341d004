/* A seeded PRNG whose streams are identical on every platform (splitmix64: 64-bit state, one
 * multiply-xorshift chain per draw). Used for folds, balancing, shuffles and synthetic images;
 * rand() is avoided because its sequence differs between C libraries. */
#ifndef MG_RNG_H
#define MG_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
} mg_rng;

/* Streams for different purposes come from mixing a seed with a stream id. */
mg_rng mg_rng_seed(uint64_t seed, uint64_t stream);
uint64_t mg_rng_next(mg_rng *r);
/* Uniform in [0, n) without modulo bias (rejection); n > 0. */
uint64_t mg_rng_below(mg_rng *r, uint64_t n);
/* Uniform in [0, 1) with 53 random bits. */
double mg_rng_uniform(mg_rng *r);
/* Fisher-Yates shuffle of a[0..n). */
void mg_rng_shuffle(mg_rng *r, int64_t *a, int64_t n);

#endif
