/* Storage types of tensors and conversions between them. bf16 is the upper half of an fp32;
 * conversion to bf16 rounds to nearest even, as torch does. */
#ifndef MG_DTYPE_H
#define MG_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MG_F32 = 0, MG_BF16 = 1, MG_F16 = 2 } mg_dtype;

size_t mg_dtype_size(mg_dtype t);       /* bytes per element */
const char *mg_dtype_name(mg_dtype t);  /* "F32", "BF16", "F16" as safetensors spells them */

static inline float mg_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}
uint16_t mg_f32_to_bf16(float f);  /* round to nearest even; NaN stays NaN */
float mg_f16_to_f32(uint16_t h);
uint16_t mg_f32_to_f16(float f);
static inline float mg_round_bf16(float f) { return mg_bf16_to_f32(mg_f32_to_bf16(f)); }

/* Converts n elements of type `from` at src to fp32 at dst. */
void mg_to_f32(float *dst, const void *src, mg_dtype from, size_t n);
/* Converts n elements of type `from` at src (any alignment) to bf16 at dst, rounding to nearest
 * even; large n are split over OpenMP threads (the CUDA backend's uploads of pixels and weights). */
void mg_to_bf16(uint16_t *dst, const void *src, mg_dtype from, size_t n);

#endif
