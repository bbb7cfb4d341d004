/* The dropout mask, one pure function of (seed, element index) so that the CPU and CUDA twins draw
 * the same mask and a recomputed layer draws it again without storing it (counter-based, like
 * Philox in torch; not torch's stream, so masks differ from PEFT's while the distribution is the
 * same). The hash is splitmix64's finaliser; the top 24 bits give a uniform in [0, 1). */
#ifndef MG_DROPOUT_H
#define MG_DROPOUT_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __CUDACC__
#define MG_HOST_DEVICE __host__ __device__
#else
#define MG_HOST_DEVICE
#endif

static inline MG_HOST_DEVICE uint64_t mg_hash64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Element i of a dropout(p) input is kept iff this is true; kept elements are scaled by 1/(1-p). */
static inline MG_HOST_DEVICE bool mg_dropout_keep(uint64_t seed, int64_t i, float p) {
    const uint64_t h = mg_hash64(seed ^ mg_hash64((uint64_t)i));
    return (float)(h >> 40) * (1.0f / 16777216.0f) >= p;
}

#endif
