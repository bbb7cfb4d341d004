/* Image decoding (stb_image: PNG, JPEG, BMP) to 8-bit RGB, converting the way PIL's
 * convert("RGB") does before the Gemma 3 processor resizes: gray is replicated, alpha dropped. */
#ifndef MG_IMAGE_H
#define MG_IMAGE_H

#include <stddef.h>

#include "engine/status.h"

typedef struct {
    int w, h;
    unsigned char *rgb; /* (h, w, 3) */
} mg_image;

/* Decodes n bytes; `what` (a path) names the source in error messages. */
mg_status mg_image_decode(const unsigned char *bytes, size_t n, const char *what, mg_image *out);
void mg_image_free(mg_image *im);

/* Pixel normalisation of the Gemma 3 processor as in transformers 4.57 (the guide's):
 * v = float32(float64(x) * (1/255)), then (v - 0.5f) / 0.5f in float32. Equals x/127.5 - 1 to
 * within one float32 ulp. src (S, S, 3) uint8 HWC -> dst (3, S, S) float CHW. */
void mg_normalize_chw(const unsigned char *src, int h, int w, float *dst);

/* The processor's whole path for one image file: read, decode, resize to S x S (Pillow bilinear,
 * data/resize.h), normalise into dst (3, S, S). Errors name the path. */
mg_status mg_image_load_pixels(const char *path, int S, float *dst);
/* The same path from decoded 8-bit RGB rgb (h, w, 3): resize to S x S, normalise into dst
 * (3, S, S). Fails on bad sizes or out of memory. */
mg_status mg_image_rgb_pixels(const unsigned char *rgb, int w, int h, int S, float *dst);

#endif
