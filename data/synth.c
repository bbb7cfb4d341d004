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

/* BreakHis v1 (spec/breakhis.md §1.4): patients per class, images per class and magnification
 * (40X, 100X, 200X, 400X); and fold 1 at 100X of the Kaggle Folds.csv (§2.3): test images of the
 * benign and the malignant classes (261 of 644, 499 of 1,437; train 383 and 938) */
static const int REAL_PATIENTS[MG_BREAKHIS_NCLASSES] = { 4, 10, 3, 7, 38, 5, 9, 6 };
static const int REAL_IMAGES[MG_BREAKHIS_NCLASSES][4] = {
    { 114, 113, 111, 106 }, { 253, 260, 253, 248 }, { 109, 121, 121, 102 }, { 149, 150, 138, 132 },
    { 864, 903, 883, 801 }, { 156, 170, 156, 144 }, { 205, 222, 211, 154 }, { 145, 142, 140, 133 },
};
static const int REAL_TEST_100X[2] = { 261, 499 };

typedef struct {
    int label, slide;
    const char *suffix;
    int count[4]; /* images per magnification */
    int fold1;    /* real counts: MG_BH_SPLIT_TRAIN or _TEST in fold 1; 0: the folds medgem builds */
    char id[64];  /* "SOB_M_DC-14-17838F", the index's patient id */
} synth_patient;

/* Magnification m's images of a class's n patients, t of them test in fold 1: `total` in all, `test`
 * of them on the test patients, each side dealt evenly. */
static void deal(synth_patient *p, int n, int t, int m, int total, int test) {
    int k[2] = { 0, 0 };
    for (int q = 0; q < n; q++) {
        const int g = p[q].fold1 == MG_BH_SPLIT_TEST, nk = g ? t : n - t, sum = g ? test : total - test;
        p[q].count[m] = sum / nk + (k[g]++ < sum % nk);
    }
}

/* Test images per class at 100X: each binary group's fold-1 total shared by class size, largest
 * remainders rounded up. */
static void real_test_images(int *test) {
    for (int b = 0; b < 2; b++) {
        int total = 0, given = 0;
        for (int c = 4 * b; c < 4 * b + 4; c++) total += REAL_IMAGES[c][1];
        double rem[MG_BREAKHIS_NCLASSES] = { 0 };
        for (int c = 4 * b; c < 4 * b + 4; c++) {
            const double share = (double)REAL_TEST_100X[b] * REAL_IMAGES[c][1] / total;
            test[c] = (int)share, rem[c] = share - test[c], given += test[c];
        }
        for (; given < REAL_TEST_100X[b]; given++) {
            int best = 4 * b;
            for (int c = 4 * b; c < 4 * b + 4; c++) best = rem[c] > rem[best] ? c : best;
            test[best]++, rem[best] = -1;
        }
    }
}

/* The patients to write, with their ids and image counts. Default: o->patients dealt round-robin
 * over the classes, o->images each. Real counts: the real set's patients and images per class; in
 * fold 1 the first 30% of a class's patients (DC: the last) are test, with the class's share of
 * the real test images at 100X, so fold 1's DC/LC pair sits on both sides, as 14-13412 does. */
static mg_status plan(const mg_synth_opts *o, synth_patient **out, int *n_out) {
    int n = 0, first[MG_BREAKHIS_NCLASSES];
    for (int c = 0; c < MG_BREAKHIS_NCLASSES; c++) first[c] = o->real_counts ? n : c, n += REAL_PATIENTS[c];
    if (!o->real_counts) n = o->patients;
    synth_patient *p = calloc((size_t)n, sizeof *p);
    if (!p) return mg_fail(MG_ERR_OOM, NULL, "out of memory");
    int test100[MG_BREAKHIS_NCLASSES];
    real_test_images(test100);
    for (int i = 0; i < n; i++) {
        int label = i % MG_BREAKHIS_NCLASSES, q = i / MG_BREAKHIS_NCLASSES;
        if (o->real_counts) { /* class-major */
            for (label = MG_BREAKHIS_NCLASSES - 1; first[label] > i; label--) {}
            q = i - first[label];
        }
        int owner = i;
        if (label == 5 && q == 0) owner = first[4]; /* LC's first patient shares DC's first slide (like 14-13412) */
        if (label == 1 && q == 0) owner = first[0]; /* F's first patient shares A's first slide number, other suffix */
        p[i].label = label;
        p[i].slide = 10000 + (owner * 7919) % 80000;
        p[i].suffix = label == 5 && q == 0 ? SUFFIX[4 % 8] : SUFFIX[i % 8];
        for (int m = 0; m < 4; m++) p[i].count[m] = o->images;
        snprintf(p[i].id, sizeof p[i].id, "SOB_%c_%s-14-%d%s", label < 4 ? 'B' : 'M', MG_BREAKHIS_TYPE_CODES[label],
                 p[i].slide, p[i].suffix);
    }
    for (int c = 0; o->real_counts && c < MG_BREAKHIS_NCLASSES; c++) {
        const int np = REAL_PATIENTS[c], t = (3 * np + 5) / 10; /* 30%, rounded */
        synth_patient *cls = p + first[c];
        for (int q = 0; q < np; q++) cls[q].fold1 = (c == 4 ? q >= np - t : q < t) ? MG_BH_SPLIT_TEST : MG_BH_SPLIT_TRAIN;
        for (int m = 0; m < 4; m++)
            deal(cls, np, t, m, REAL_IMAGES[c][m], m == 1 ? test100[c] : REAL_IMAGES[c][m] * t / np);
    }
    *out = p, *n_out = n;
    return MG_OK;
}

int64_t mg_synth_images(const mg_synth_opts *o) {
    if (!o->real_counts) return (int64_t)o->patients * 4 * o->images;
    int64_t n = 0;
    for (int c = 0; c < MG_BREAKHIS_NCLASSES; c++)
        for (int m = 0; m < 4; m++) n += REAL_IMAGES[c][m];
    return n;
}

static void patient_dir(char *buf, size_t cap, const char *root, const synth_patient *p, int m) {
    snprintf(buf, cap, "%s/histology_slides/breast/%s/SOB/%s/SOB_%c_%s_14-%d%s/%dX", root,
             p->label < 4 ? "benign" : "malignant", MG_BREAKHIS_CLASS_FOLDERS[p->label], p->label < 4 ? 'B' : 'M',
             MG_BREAKHIS_TYPE_CODES[p->label], p->slide, p->suffix, MAGS[m]);
}

/* Folds.csv from the folds medgem builds for the tree (fold 1 as planned for real counts) */
static mg_status write_folds_csv(const char *out_dir, const char *root, const synth_patient *pats, int n_pats,
                                 bool real_counts) {
    mg_bh_index *ix;
    MG_TRY(mg_bh_index_open(root, MG_BAD_FAIL, &ix));
    for (int64_t i = 0; real_counts && i < ix->n; i++)
        for (int k = 0; k < n_pats; k++)
            if (!strcmp(ix->recs[i].patient, pats[k].id)) ix->recs[i].split[0] = (unsigned char)pats[k].fold1;
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
    const mg_status st = mg_write_file_atomic(path, csv, len);
    free(csv);
    return st;
}

mg_status mg_synth_breakhis(const char *out_dir, const mg_synth_opts *o) {
    if ((!o->real_counts && (o->patients < MG_BREAKHIS_NCLASSES || o->images < 1)) || o->width < 1 || o->height < 1 ||
        o->width > 8192 || o->height > 8192)
        return mg_fail(MG_ERR_ARG, "--patients >= 8, --images >= 1, --size between 1x1 and 8192x8192",
                       "synthetic BreakHis: bad options (patients %d, images %d, size %dx%d)", o->patients, o->images, o->width, o->height);
    char root[4096];
    snprintf(root, sizeof root, "%s/BreaKHis_v1/BreaKHis_v1", out_dir);
    synth_patient *pats = NULL;
    int n_pats = 0;
    MG_TRY(plan(o, &pats, &n_pats));
    /* one job per image: (patient, magnification, sequence number) */
    const int64_t total = mg_synth_images(o);
    int (*job)[3] = malloc((size_t)total * sizeof *job);
    mg_status st = job ? MG_OK : mg_fail(MG_ERR_OOM, NULL, "out of memory");
    int64_t nj = 0;
    for (int p = 0; p < n_pats && st == MG_OK; p++)
        for (int m = 0; m < 4; m++)
            for (int s = 1; s <= pats[p].count[m]; s++) job[nj][0] = p, job[nj][1] = m, job[nj++][2] = s;
    /* folders first (one thread), then images in parallel: each image's bytes depend only on its ids */
    for (int p = 0; p < n_pats && st == MG_OK; p++)
        for (int m = 0; m < 4 && st == MG_OK; m++) {
            char dir[4600];
            patient_dir(dir, sizeof dir, root, &pats[p], m);
            st = mg_make_dirs(dir);
        }
    char err[1024] = "";
    mg_status first = MG_OK;
    const int64_t todo = st == MG_OK ? total : 0;
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < todo; i++) {
        const int p = job[i][0], m = job[i][1], seq = job[i][2];
        const synth_patient *pt = &pats[p];
        const int label = pt->label, h = p % 5 == 3 && o->height > 8 ? o->height - 4 : o->height;
        char dir[4600], path[4800];
        patient_dir(dir, sizeof dir, root, pt, m);
        snprintf(path, sizeof path, "%s/SOB_%c_%s-14-%d%s-%d-%03d.png", dir, label < 4 ? 'B' : 'M',
                 MG_BREAKHIS_TYPE_CODES[label], pt->slide, pt->suffix, MAGS[m], seq);
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
    free(job);
    if (st == MG_OK && first != MG_OK) st = mg_fail(first, NULL, "%s", err);
    /* Folds.csv comes last and marks a complete tree: the images reach the disk first */
    int dfd = st == MG_OK ? open(out_dir, O_RDONLY) : -1;
    if (st == MG_OK && (dfd < 0 || syncfs(dfd)))
        st = mg_fail(MG_ERR_IO, "check the free disk space", "cannot sync %s: %s", out_dir, strerror(errno));
    if (dfd >= 0) close(dfd);
    if (st == MG_OK) st = write_folds_csv(out_dir, root, pats, n_pats, o->real_counts);
    free(pats);
    return st;
}
