#include "engine/dtype.h"

#include <string.h>

size_t mg_dtype_size(mg_dtype t) { return t == MG_F32 ? 4 : 2; }

const char *mg_dtype_name(mg_dtype t) {
    switch (t) {
    case MG_F32: return "F32";
    case MG_BF16: return "BF16";
    case MG_F16: return "F16";
    }
    return "?";
}

uint16_t mg_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* nearest even */
    return (uint16_t)(u >> 16);
}

float mg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            u = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t mg_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffff;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) { /* subnormal or zero, round to nearest even */
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = 1u << (shift - 1), rest = man & ((1u << shift) - 1);
        uint32_t r = man >> shift;
        if (rest > half || (rest == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)exp << 10) | (man >> 13), rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

void mg_to_f32(float *dst, const void *src, mg_dtype from, size_t n) {
    if (from == MG_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) dst[i] = from == MG_BF16 ? mg_bf16_to_f32(s[i]) : mg_f16_to_f32(s[i]);
}

/* Below this many elements a conversion is too short to pay for waking the OpenMP threads. */
enum { BF16_PARALLEL_MIN = 1 << 16 };

void mg_to_bf16(uint16_t *dst, const void *src, mg_dtype from, size_t n) {
    if (from == MG_BF16) {
        memcpy(dst, src, n * 2);
        return;
    }
    const char *s = src;
    const int64_t count = (int64_t)n, es = from == MG_F32 ? 4 : 2;
#pragma omp parallel for schedule(static) if (count >= BF16_PARALLEL_MIN)
    for (int64_t i = 0; i < count; i++) {
        float f;
        if (from == MG_F32) {
            memcpy(&f, s + i * es, 4);
        } else {
            uint16_t h;
            memcpy(&h, s + i * es, 2);
            f = mg_f16_to_f32(h);
        }
        dst[i] = mg_f32_to_bf16(f);
    }
}
