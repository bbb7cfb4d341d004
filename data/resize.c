#include "data/resize.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { PRECISION_BITS = 32 - 8 - 2 }; /* Pillow's fixed-point precision for 8-bit images */

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis: output pixel i reads input
 * pixels bounds[2i] .. bounds[2i]+bounds[2i+1]-1 with integer weights kk[i*ksize + k].
 * Returns ksize, or 0 on out of memory. */
static int axis_coeffs(int in_size, int out_size, int **bounds_out, int32_t **kk_out) {
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale; /* the bilinear filter's support is 1 */
    int ksize = (int)ceil(support) * 2 + 1;
    double *k = malloc((size_t)out_size * (size_t)ksize * sizeof *k);
    int32_t *kk = malloc((size_t)out_size * (size_t)ksize * sizeof *kk);
    int *bounds = malloc((size_t)out_size * 2 * sizeof *bounds);
    if (!k || !kk || !bounds) return free(k), free(kk), free(bounds), 0;
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *kr = &k[(size_t)xx * ksize];
        int x = 0;
        for (; x < xmax; x++) {
            double w = bilinear_filter((x + xmin - center + 0.5) * ss);
            kr[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) kr[x] /= ww;
        for (; x < ksize; x++) kr[x] = 0;
        bounds[2 * xx] = xmin, bounds[2 * xx + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)out_size * (size_t)ksize; i++) /* round half away from zero */
        kk[i] = (int32_t)(k[i] < 0 ? -0.5 + k[i] * (1 << PRECISION_BITS) : 0.5 + k[i] * (1 << PRECISION_BITS));
    free(k);
    *bounds_out = bounds, *kk_out = kk;
    return ksize;
}

static inline unsigned char clip8(int32_t v) {
    if (v >= (1 << PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (unsigned char)(v >> PRECISION_BITS);
}

mg_status mg_resize_bilinear(const unsigned char *src, int w, int h, unsigned char *dst, int ow, int oh) {
    if (w <= 0 || h <= 0 || ow <= 0 || oh <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "resize %dx%d -> %dx%d: sizes must be positive", w, h, ow, oh);
    int *hb = NULL, *vb = NULL;
    int32_t *hk = NULL, *vk = NULL;
    int hks = axis_coeffs(w, ow, &hb, &hk), vks = hks ? axis_coeffs(h, oh, &vb, &vk) : 0;
    unsigned char *tmp = malloc((size_t)h * (size_t)ow * 3); /* (h, ow, 3) after the horizontal pass */
    if (!hks || !vks || !tmp) {
        free(hb), free(hk), free(vb), free(vk), free(tmp);
        return mg_fail(MG_ERR_OOM, NULL, "out of memory resizing %dx%d -> %dx%d", w, h, ow, oh);
    }
    /* horizontal pass (Pillow skips it when the width is unchanged; its identity kernel gives the same pixels) */
    for (int y = 0; y < h; y++) {
        const unsigned char *row = src + (size_t)y * w * 3;
        unsigned char *out = tmp + (size_t)y * ow * 3;
        for (int xx = 0; xx < ow; xx++) {
            const int32_t *k = &hk[(size_t)xx * hks];
            int xmin = hb[2 * xx], xn = hb[2 * xx + 1];
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xn; x++) {
                const unsigned char *p = row + (size_t)(x + xmin) * 3;
                s0 += p[0] * k[x], s1 += p[1] * k[x], s2 += p[2] * k[x];
            }
            out[3 * xx] = clip8(s0), out[3 * xx + 1] = clip8(s1), out[3 * xx + 2] = clip8(s2);
        }
    }
    /* vertical pass */
    for (int yy = 0; yy < oh; yy++) {
        const int32_t *k = &vk[(size_t)yy * vks];
        int ymin = vb[2 * yy], yn = vb[2 * yy + 1];
        unsigned char *out = dst + (size_t)yy * ow * 3;
        for (int i = 0; i < ow * 3; i++) {
            int32_t s = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < yn; y++) s += tmp[(size_t)(y + ymin) * ow * 3 + i] * k[y];
            out[i] = clip8(s);
        }
    }
    free(hb), free(hk), free(vb), free(vk), free(tmp);
    return MG_OK;
}
