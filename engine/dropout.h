/* The dropout mask, one pure function of (seed, element index) so that the CPU and CUDA twins draw
 * the same mask and a recomputed layer draws it again without storing it (counter-based, like
 * Philox in torch; not torch's stream, so masks differ from PEFT's while the distribution is the
 * same). */
#ifndef MG_DROPOUT_H
#define MG_DROPOUT_H

#include <math.h>
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

/* Elements 4q..4q+3 of a dropout(p) input: bit e of the result is set iff element 4q+e is kept
 * (kept elements are scaled by 1/(1-p)). One splitmix64 output per 4 elements (counter q from the
 * seed), 16 bits each as a uniform v/65536 in [0, 1), kept iff v/65536 >= p: a GPU kernel draws a
 * vector of 8 elements with two hashes (a hash of 64-bit multiplies per element cost as much GPU
 * time as reading the input). The test is v >= ceil(p·65536) on integers, the same for every v and
 * p (p·65536 is exact in fp32), without an int-to-float conversion per element, which the GPU runs
 * on a slow pipe. */
static inline MG_HOST_DEVICE unsigned mg_dropout_keep4(uint64_t seed, int64_t q, float p) {
    const uint64_t h = mg_hash64(seed + (uint64_t)q * 0x9e3779b97f4a7c15ull);
    const uint32_t t = (uint32_t)ceilf(p * 65536.0f), lo = (uint32_t)h, hi = (uint32_t)(h >> 32);
    return (unsigned)((lo & 0xffffu) >= t) | (unsigned)((lo >> 16) >= t) << 1 | (unsigned)((hi & 0xffffu) >= t) << 2 |
           (unsigned)((hi >> 16) >= t) << 3;
}

/* Element i of a dropout(p) input is kept iff this is true. */
static inline MG_HOST_DEVICE bool mg_dropout_keep(uint64_t seed, int64_t i, float p) {
    return (mg_dropout_keep4(seed, i >> 2, p) >> (i & 3)) & 1u;
}

#endif
