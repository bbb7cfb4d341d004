#include "data/synth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/breakhis_index.h"
#include "data/rng.h"
#include "engine/atomic_file.h"

/* stb_image_write's PNG writer with zlib doing the compression (level 1: fast, and the output is
 * still an ordinary PNG); the one translation unit holding the implementation. */
static unsigned char *zlib_compress(unsigned char *data, int data_len, int *out_len, int quality) {
    (void)quality;
    uLongf n = compressBound((uLong)data_len);
    unsigned char *out = malloc(n);
    if (!out || compress2(out, &n, data, (uLong)data_len, 1) != Z_OK) return free(out), NULL;
    *out_len = (int)n;
    return out;
}
#define STBIW_ZLIB_COMPRESS zlib_compress
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#include "stb_image_write.h"
#pragma GCC diagnostic pop

mg_synth_opts mg_synth_defaults(void) { return (mg_synth_opts){ .patients = 16, .images = 5, .width = 700, .height = 460, .seed = 1 }; }

/* per class: base colour, stripe direction (kx, ky: period 256/|k| px), nucleus radius and count per 100k px */
static const struct {
    unsigned char rgb[3];
    int kx, ky, radius, density;
} STYLE[MG_BREAKHIS_NCLASSES] = {
    { { 236, 178, 206 }, 8, 0, 3, 20 },   /* adenosis: pink, vertical stripes */
    { { 206, 168, 236 }, 0, 8, 5, 12 },   /* fibroadenoma: lilac, horizontal */
    { { 240, 200, 150 }, 6, 6, 4, 30 },   /* phyllodes tumour: tan, diagonal */
    { { 170, 205, 240 }, 6, -6, 6, 8 },   /* tubular adenoma: light blue, other diagonal */
    { { 140, 80, 165 }, 3, 12, 3, 60 },   /* ductal carcinoma: deep purple, dense small nuclei */
    { { 100, 175, 170 }, 12, 3, 7, 25 },  /* lobular carcinoma: teal, large nuclei */
    { { 195, 215, 225 }, 16, 16, 5, 15 }, /* mucinous carcinoma: grey-blue, fine diagonal */
    { { 175, 70, 95 }, 2, 4, 4, 45 },     /* papillary carcinoma: dark red, broad stripes */
};

void mg_synth_render(int label, int patient, int mag, int seq, uint64_t seed, int w, int h, unsigned char *rgb) {
    mg_rng rng = mg_rng_seed(seed, ((uint64_t)patient << 32) ^ ((uint64_t)mag << 16) ^ (uint64_t)seq);
    int phase = (int)mg_rng_below(&rng, 256), tint = (int)mg_rng_below(&rng, 21) - 10;
    const int kx = STYLE[label].kx, ky = STYLE[label].ky;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int u = (x * kx + y * ky + phase) & 255;
            int tri = (u < 128 ? u : 255 - u) * 40 / 127 - 20; /* triangle wave in [-20, 20] */
            for (int c = 0; c < 3; c++) {
                int v = STYLE[label].rgb[c] + tri + tint;
                rgb[((size_t)y * w + x) * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    /* nuclei: dark purple discs */
    int64_t count = (int64_t)w * h * STYLE[label].density / 100000 + 1;
    int rad = STYLE[label].radius;
    for (int64_t k = 0; k < count; k++) {
        int cx = (int)mg_rng_below(&rng, (uint64_t)w), cy = (int)mg_rng_below(&rng, (uint64_t)h);
        for (int y = cy - rad; y <= cy + rad; y++)
            for (int x = cx - rad; x <= cx + rad; x++) {
                if (x < 0 || y < 0 || x >= w || y >= h || (x - cx) * (x - cx) + (y - cy) * (y - cy) > rad * rad) continue;
                unsigned char *p = &rgb[((size_t)y * w + x) * 3];
                p[0] = 70, p[1] = 40, p[2] = 100;
            }
    }
}

static void write_cb(void *ctx, void *data, int size) {
    struct { unsigned char *b; size_t n, cap; int oom; } *s = ctx;
    if (s->oom) return;
    if (s->n + (size_t)size > s->cap) {
        size_t c = (s->n + (size_t)size) * 2;
        unsigned char *b = realloc(s->b, c);
        if (!b) { s->oom = 1; return; }
        s->b = b, s->cap = c;
    }
    memcpy(s->b + s->n, data, (size_t)size);
    s->n += (size_t)size;
}

mg_status mg_png_encode(const unsigned char *rgb, int w, int h, unsigned char **png, size_t *n) {
    struct { unsigned char *b; size_t n, cap; int oom; } s = { 0 };
    int ok = stbi_write_png_to_func(write_cb, &s, w, h, 3, rgb, w * 3);
    if (!ok || s.oom) return free(s.b), mg_fail(MG_ERR_OOM, NULL, "PNG encoding of a %dx%d image failed", w, h);
    *png = s.b, *n = s.n;
    return MG_OK;
}

static const int MAGS[4] = { 40, 100, 200, 400 };
static const char *const SUFFIX[8] = { "", "AB", "CD", "B", "F", "DE", "EF", "G" };

/* patient p's class, slide number and suffix, with the real set's sharing quirks */
static void patient_ids(int p, int *label, int *slide, const char **suffix) {
    *label = p % MG_BREAKHIS_NCLASSES;
    int q = p / MG_BREAKHIS_NCLASSES;
    int owner = p;
    if (*label == 5 && q == 0) owner = 4; /* LC's first patient shares DC's first slide (like 14-13412) */
    if (*label == 1 && q == 0) owner = 0; /* F's first patient shares A's first slide number, other suffix */
    *slide = 10000 + (owner * 7919) % 80000;
    *suffix = *label == 5 && q == 0 ? SUFFIX[4 % 8] : SUFFIX[p % 8];
}

mg_status mg_synth_breakhis(const char *out_dir, const mg_synth_opts *o) {
    if (o->patients < MG_BREAKHIS_NCLASSES || o->images < 1 || o->width < 1 || o->height < 1 || o->width > 8192 || o->height > 8192)
        return mg_fail(MG_ERR_ARG, "--patients >= 8, --images >= 1, --size between 1x1 and 8192x8192",
                       "synthetic BreakHis: bad options (patients %d, images %d, size %dx%d)", o->patients, o->images, o->width, o->height);
    char root[4096];
    snprintf(root, sizeof root, "%s/BreaKHis_v1/BreaKHis_v1", out_dir);
    int64_t total = (int64_t)o->patients * 4 * o->images;
    mg_status st = MG_OK;
    /* folders first (one thread), then images in parallel: each image's bytes depend only on its ids */
    for (int p = 0; p < o->patients && st == MG_OK; p++) {
        int label, slide;
        const char *suf;
        patient_ids(p, &label, &slide, &suf);
        for (int m = 0; m < 4 && st == MG_OK; m++) {
            char dir[4600];
            snprintf(dir, sizeof dir, "%s/histology_slides/breast/%s/SOB/%s/SOB_%c_%s_14-%d%s/%dX", root,
                     label < 4 ? "benign" : "malignant", MG_BREAKHIS_CLASS_FOLDERS[label], label < 4 ? 'B' : 'M',
                     MG_BREAKHIS_TYPE_CODES[label], slide, suf, MAGS[m]);
            st = mg_make_dirs(dir);
        }
    }
    char err[1024] = "";
    mg_status first = MG_OK;
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < total; i++) {
        int p = (int)(i / (4 * o->images)), m = (int)(i / o->images % 4), seq = (int)(i % o->images) + 1;
        int label, slide;
        const char *suf;
        patient_ids(p, &label, &slide, &suf);
        int h = p % 5 == 3 && o->height > 8 ? o->height - 4 : o->height;
        char path[4800];
        snprintf(path, sizeof path, "%s/histology_slides/breast/%s/SOB/%s/SOB_%c_%s_14-%d%s/%dX/SOB_%c_%s-14-%d%s-%d-%03d.png", root,
                 label < 4 ? "benign" : "malignant", MG_BREAKHIS_CLASS_FOLDERS[label], label < 4 ? 'B' : 'M',
                 MG_BREAKHIS_TYPE_CODES[label], slide, suf, MAGS[m], label < 4 ? 'B' : 'M', MG_BREAKHIS_TYPE_CODES[label],
                 slide, suf, MAGS[m], seq);
        unsigned char *rgb = malloc((size_t)o->width * h * 3), *png = NULL;
        size_t n = 0;
        mg_status s = rgb ? MG_OK : mg_fail(MG_ERR_OOM, NULL, "out of memory");
        if (s == MG_OK) mg_synth_render(label, p, MAGS[m], seq, o->seed, o->width, h, rgb);
        if (s == MG_OK) s = mg_png_encode(rgb, o->width, h, &png, &n);
        if (s == MG_OK) s = mg_write_parts_atomic(path, (const void *const *)&png, &n, 1, false); /* one syncfs below */
        free(rgb), free(png);
        if (s != MG_OK) {
#pragma omp critical
            if (first == MG_OK) first = s, snprintf(err, sizeof err, "%s", mg_last_error());
        }
    }
    if (st != MG_OK) return st;
    if (first != MG_OK) return mg_fail(first, NULL, "%s", err);

    /* Folds.csv comes last and marks a complete tree: the images reach the disk first */
    int dfd = open(out_dir, O_RDONLY);
    if (dfd < 0 || syncfs(dfd)) {
        if (dfd >= 0) close(dfd);
        return mg_fail(MG_ERR_IO, "check the free disk space", "cannot sync %s: %s", out_dir, strerror(errno));
    }
    close(dfd);
    /* Folds.csv from the folds medgem builds for the tree */
    mg_bh_index *ix;
    MG_TRY(mg_bh_index_open(root, MG_BAD_FAIL, &ix));
    size_t cap = (size_t)ix->n * MG_BH_NFOLDS * 160 + 64, len = 0;
    char *csv = malloc(cap);
    if (!csv) return mg_bh_index_free(ix), mg_fail(MG_ERR_OOM, NULL, "out of memory");
    len += (size_t)snprintf(csv, cap, "fold,mag,grp,filename\n");
    for (int f = 0; f < MG_BH_NFOLDS; f++)
        for (int64_t i = 0; i < ix->n; i++) {
            const mg_bh_record *r = &ix->recs[i];
            len += (size_t)snprintf(csv + len, cap - len, "%d,%d,%s,%s\n", f + 1, r->mag,
                                    r->split[f] == MG_BH_SPLIT_TEST ? "test" : "train", r->key);
        }
    mg_bh_index_free(ix);
    char path[4200];
    snprintf(path, sizeof path, "%s/Folds.csv", out_dir);
    st = mg_write_file_atomic(path, csv, len);
    free(csv);
    return st;
}
