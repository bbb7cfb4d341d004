/* im2col for the SigLIP patch embedding (Conv2d 3->Cv, kernel p, stride p, no padding, as a GEMM):
 *   cols[B*P, 3*p*p] from pixels[B, 3, S, S],  P = (S/p)², G = S/p
 *   cols[b*P + r*G + c, ch*p*p + kh*p + kw] = pixels[b, ch, r*p + kh, c*p + kw]
 * Patch index r*G + c is row-major (conv output flatten(2)), the column order is that of the conv
 * weight [Cv, 3, p, p] viewed as [Cv, 3*p*p], so linear(cols, W, bias) is the conv.
 * Written with `=`. */
#include "kernels/cpu/ops.h"

void mg_cpu_im2col_forward(void *ctx, void *cols_, const void *pixels_, int64_t B, int S, int p) {
    (void)ctx;
    float *cols = cols_;
    const float *pixels = pixels_;
    const int G = S / p;
    const int64_t P = (int64_t)G * G, width = 3 * (int64_t)p * p;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t patch = 0; patch < P; patch++) {
            const int r = (int)(patch / G), c = (int)(patch % G);
            float *row = cols + (b * P + patch) * width;
            for (int ch = 0; ch < 3; ch++)
                for (int kh = 0; kh < p; kh++)
                    for (int kw = 0; kw < p; kw++)
                        row[(ch * p + kh) * p + kw] =
                            pixels[((b * 3 + ch) * S + (int64_t)r * p + kh) * S + (int64_t)c * p + kw];
        }
    }
}
