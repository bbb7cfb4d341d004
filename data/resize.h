/* Pillow's Image.resize(size, Image.BILINEAR) on 8-bit RGB, reproduced exactly
 * (Pillow src/libImaging/Resample.c, unchanged from Pillow 9 to 13): a separable convolution with
 * the triangle filter, support widened by the scale when downscaling, coefficients normalised then
 * turned into 22-bit fixed point, rounded and clipped to uint8 between the two passes (horizontal
 * first, except when the width grows and the height shrinks: see resize.c).
 * This is what the guide's transformers 4.57 Gemma 3 processor does (spec/model.md §7.1). */
#ifndef MG_RESIZE_H
#define MG_RESIZE_H

#include "engine/status.h"

/* src (h, w, 3) -> dst (oh, ow, 3). Fails only on bad sizes or out of memory. */
mg_status mg_resize_bilinear(const unsigned char *src, int w, int h, unsigned char *dst, int ow, int oh);

#endif
