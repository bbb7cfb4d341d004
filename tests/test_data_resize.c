/* Resize and normalisation against Pillow and transformers (tests/fixtures/data/make_resize_fixtures.py):
 * each committed small PNG is decoded by mg_image_decode, resized by mg_resize_bilinear and compared
 * with Pillow's Image.resize(BILINEAR) bytes (limit: max 1 grey level, mean < 0.05; expected exact),
 * then normalised and compared with Gemma3ImageProcessorPil's pixel_values. */
#include <stdint.h>

#include "data/image.h"
#include "data/resize.h"
#include "tests/test.h"

#define FIX "tests/fixtures/data/"

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) free(b), b = NULL;
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void run_case(const char *name, int w, int h, int ow, int oh) {
    char path[256];
    size_t n, nref, npv;
    snprintf(path, sizeof path, FIX "in_%s.png", name);
    unsigned char *png = read_all(path, &n);
    snprintf(path, sizeof path, FIX "out_%s.bin", name);
    unsigned char *ref = read_all(path, &nref);
    snprintf(path, sizeof path, FIX "pv_%s.bin", name);
    float *pv = (float *)read_all(path, &npv);
    CHECK(png && ref && pv, "%s: fixture files missing", name);
    if (!png || !ref || !pv) return;
    mg_image im;
    mg_status st = mg_image_decode(png, n, name, &im);
    CHECK(st == MG_OK && im.w == w && im.h == h, "%s: decode %s (%dx%d)", name, mg_last_error(), im.w, im.h);
    if (st != MG_OK) return;
    size_t m = (size_t)ow * oh * 3;
    CHECK(nref == m && npv == m * sizeof(float), "%s: reference sizes", name);
    unsigned char *out = malloc(m);
    st = mg_resize_bilinear(im.rgb, w, h, out, ow, oh);
    CHECK(st == MG_OK, "%s: resize failed: %s", name, mg_last_error());
    int maxd = 0;
    double sum = 0;
    for (size_t i = 0; i < m; i++) {
        int d = abs((int)out[i] - (int)ref[i]);
        maxd = d > maxd ? d : maxd;
        sum += d;
    }
    printf("%s %-20s %3dx%-3d -> %3dx%-3d max |diff| %d grey levels, mean %.4f (limits 1, 0.05)\n",
           maxd == 0 ? "ok  " : maxd <= 1 ? "near" : "FAIL", name, w, h, ow, oh, maxd, sum / (double)m);
    CHECK(maxd <= 1 && sum / (double)m < 0.05, "%s: resize differs from Pillow", name);

    float *chw = malloc(m * sizeof(float));
    double *pvd = malloc(m * sizeof(double));
    mg_normalize_chw(out, oh, ow, chw);
    for (size_t i = 0; i < m; i++) pvd[i] = pv[i];
    char what[192];
    snprintf(what, sizeof what, "%s pixel_values vs transformers", name);
    check_close(what, chw, pvd, m, 1e-6);
    free(chw), free(pvd), free(out), free(png), free(ref), free(pv);
    mg_image_free(&im);
}

int main(void) {
    FILE *f = fopen(FIX "cases.txt", "r");
    CHECK(f != NULL, "cannot open " FIX "cases.txt (run from the repository root)");
    if (!f) return test_finish();
    char line[256], name[128];
    int w, h, ow, oh, ncases = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') { printf("reference: %s", line + 2); continue; }
        if (sscanf(line, "%127s %d %d %d %d", name, &w, &h, &ow, &oh) == 5) run_case(name, w, h, ow, oh), ncases++;
    }
    fclose(f);
    CHECK(ncases >= 10, "only %d cases", ncases);

    /* normalisation of every grey level against x/127.5 - 1 in double: within a float32 ulp */
    unsigned char all[256 * 3];
    float got[256 * 3];
    double want[256 * 3];
    for (int i = 0; i < 256 * 3; i++) all[i] = (unsigned char)(i / 3), want[i] = (i / 3) / 127.5 - 1.0;
    mg_normalize_chw(all, 1, 256, got);
    double wchw[256 * 3];
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 256; i++) wchw[c * 256 + i] = want[3 * i + c];
    check_close("normalize all 256 grey levels vs x/127.5-1", got, wchw, 256 * 3, 1.2e-7);

    unsigned char px[3] = { 1, 2, 3 };
    CHECK(mg_resize_bilinear(px, 0, 1, px, 1, 1) == MG_ERR_SHAPE, "zero width must fail");
    return test_finish();
}
