/* Pillow's Image.resize(size, Image.BILINEAR) on 8-bit RGB, reproduced exactly
 * (Pillow src/libImaging/Resample.c as in Pillow 9 to 12.3: the guide's and the GPU machine's): a
 * separable convolution with
 * the triangle filter, support widened by the scale when downscaling, coefficients normalised then
 * turned into 22-bit fixed point, horizontal pass first, rounded and clipped to uint8 in between.
 * This is what the guide's transformers 4.57 Gemma 3 processor does (spec/model.md §7.1).
 * Pillow 13 runs the vertical pass first when the width grows and the height shrinks, which moves
 * some pixels by one grey level in that case only; BreakHis (700x460 -> 896x896 grows both) is
 * unaffected, and medgem follows the 12.3 order of the GPU machine's transformers 5.17 stack. */
#ifndef MG_RESIZE_H
#define MG_RESIZE_H

#include "engine/status.h"

/* src (h, w, 3) -> dst (oh, ow, 3). Fails only on bad sizes or out of memory. */
mg_status mg_resize_bilinear(const unsigned char *src, int w, int h, unsigned char *dst, int ow, int oh);

#endif
