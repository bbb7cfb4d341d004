#include "data/image.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "data/resize.h"

/* the one translation unit holding stb_image's implementation */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
#define STBI_NO_STDIO
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#include "stb_image.h"
#pragma GCC diagnostic pop

mg_status mg_image_decode(const unsigned char *bytes, size_t n, const char *what, mg_image *out) {
    out->w = out->h = 0, out->rgb = NULL;
    if (n > INT32_MAX) return mg_fail(MG_ERR_FORMAT, NULL, "%s: image file too large", what);
    int w, h, comp;
    /* req_comp 3: stb replicates gray and drops alpha, like PIL convert("RGB") */
    unsigned char *p = stbi_load_from_memory(bytes, (int)n, &w, &h, &comp, 3);
    if (!p)
        return mg_fail(MG_ERR_FORMAT, "re-download the file, or pass --on-bad-image skip to leave it out",
                       "%s: cannot decode image (%s)", what, stbi_failure_reason());
    out->w = w, out->h = h, out->rgb = p;
    return MG_OK;
}

void mg_image_free(mg_image *im) {
    stbi_image_free(im->rgb);
    im->rgb = NULL;
}

void mg_normalize_chw(const unsigned char *src, int h, int w, float *dst) {
    float lut[256];
    for (int x = 0; x < 256; x++) {
        float v = (float)((double)x * (1.0 / 255.0));
        lut[x] = (v - 0.5f) / 0.5f;
    }
    size_t plane = (size_t)h * (size_t)w;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) dst[(size_t)c * plane + i] = lut[src[3 * i + c]];
}

mg_status mg_image_load_pixels(const char *path, int S, float *dst) {
    FILE *f = fopen(path, "rb");
    if (!f) return mg_fail(MG_ERR_IO, "check the image path", "cannot open image %s", path);
    unsigned char *bytes = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (n == cap) {
            unsigned char *grown = realloc(bytes, cap = cap ? 2 * cap : 1 << 16);
            if (!grown) { free(bytes); fclose(f); return mg_fail(MG_ERR_OOM, NULL, "reading %s", path); }
            bytes = grown;
        }
        got = fread(bytes + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    mg_image im;
    mg_status s = mg_image_decode(bytes, n, path, &im);
    free(bytes);
    if (s != MG_OK) return s;
    s = mg_image_rgb_pixels(im.rgb, im.w, im.h, S, dst);
    mg_image_free(&im);
    return s != MG_OK ? mg_fail_context(s, "%s: ", path) : MG_OK;
}

mg_status mg_image_rgb_pixels(const unsigned char *rgb, int w, int h, int S, float *dst) {
    if (S < 1 || S > 65536)
        return mg_fail(MG_ERR_ARG, "pass the model's image size", "image size %d is out of range", S);
    unsigned char *resized = malloc((size_t)S * S * 3);
    if (!resized) return mg_fail(MG_ERR_OOM, NULL, "resizing an image to %dx%d", S, S);
    mg_status s = mg_resize_bilinear(rgb, w, h, resized, S, S);
    if (s == MG_OK) mg_normalize_chw(resized, S, S, dst);
    free(resized);
    return s;
}
