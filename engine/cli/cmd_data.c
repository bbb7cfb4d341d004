/* medgem data: index BreakHis in any of its three forms and report counts, patients and leakage;
 * `medgem data synth` writes a synthetic BreakHis; `medgem data bench` times decode+resize. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/clock.h"
#include "data/breakhis_index.h"
#include "data/leakage.h"
#include "data/prefetch.h"
#include "data/splits.h"
#include "data/synth.h"
#include "engine/cli/commands.h"
#include "engine/json.h"

static const char *USAGE =
    "usage: medgem data --data PATH [--fold 1-5] [--mag 40|100|200|400|all] [--balance binary|class|none]\n"
    "                   [--seed N] [--on-bad-image skip|fail] [--verify] [--json]\n"
    "       medgem data synth --out DIR [--patients N] [--images N | --real-counts] [--size WxH] [--seed N]\n"
    "       medgem data bench --data PATH [selection] [--split train|test] [--threads N] [--batch N] [--size S] [--limit N]\n"
    "\n"
    "PATH: the Kaggle download folder (Folds.csv + BreaKHis_v1/), BreaKHis_v1.tar.gz (read in place),\n"
    "or a folder tree holding histology_slides/ (medgem then builds 5 patient-disjoint 70/30 folds).\n"
    "The report covers both splits of the selection: images and patients per class, slide numbers\n"
    "found on both sides, and byte-identical images filed under different labels. --verify also\n"
    "decodes every selected image. Defaults: fold 1, 100X, binary balancing, seed 42 (the guide's).\n"
    "\n"
    "synth writes a synthetic BreakHis in the Kaggle layout (Folds.csv + tree), --patients (16) dealt over\n"
    "the 8 classes with --images (5) per patient and magnification, 700x460 by default. --real-counts: the\n"
    "real set's size instead: 82 patients and 7,909 images, per class and magnification as in BreakHis v1,\n"
    "and a fold 1 whose 100X split matches the Kaggle Folds.csv (train 383 benign / 938 malignant, test\n"
    "261 / 499), so the default selection gives the guide's 766 training and 522 test images.\n";

static int fail(void) {
    fprintf(stderr, "medgem data: %s\n", mg_last_error());
    return 1;
}

static int cmd_synth(int argc, char **argv) {
    mg_synth_opts o = mg_synth_defaults();
    const char *out = NULL;
    bool counts_given = false;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(USAGE, stdout); return 0; }
        if (!strcmp(argv[i], "--real-counts")) { o.real_counts = true; continue; }
        if (!v) { fprintf(stderr, "medgem data synth: %s needs a value\n%s", argv[i], USAGE); return 2; }
        counts_given |= !strcmp(argv[i], "--patients") || !strcmp(argv[i], "--images");
        if (!strcmp(argv[i], "--out")) out = v;
        else if (!strcmp(argv[i], "--patients")) o.patients = atoi(v);
        else if (!strcmp(argv[i], "--images")) o.images = atoi(v);
        else if (!strcmp(argv[i], "--seed")) o.seed = strtoull(v, NULL, 10);
        else if (!strcmp(argv[i], "--size")) {
            if (sscanf(v, "%dx%d", &o.width, &o.height) != 2) { fprintf(stderr, "medgem data synth: --size takes WxH, e.g. 700x460\n"); return 2; }
        } else { fprintf(stderr, "medgem data synth: unknown option %s\n%s", argv[i], USAGE); return 2; }
        i++;
    }
    if (!out) { fprintf(stderr, "medgem data synth: --out DIR is required\n%s", USAGE); return 2; }
    if (o.real_counts && counts_given) {
        fprintf(stderr, "medgem data synth: --real-counts sets the patients and images; drop --patients/--images\n");
        return 2;
    }
    double t0 = mg_now_s();
    if (mg_synth_breakhis(out, &o) != MG_OK) return fail();
    if (o.real_counts)
        printf("wrote %lld images (BreakHis v1's counts: 82 patients, 4 magnifications; fold 1 at 100X as in the Kaggle "
               "Folds.csv) of %dx%d and Folds.csv to %s in %.1f s\n",
               (long long)mg_synth_images(&o), o.width, o.height, out, mg_now_s() - t0);
    else
        printf("wrote %lld images (%d patients x 4 magnifications x %d) of %dx%d and Folds.csv to %s in %.1f s\n",
               (long long)mg_synth_images(&o), o.patients, o.images, o.width, o.height, out, mg_now_s() - t0);
    return 0;
}

typedef struct {
    int64_t images, patients, classes[MG_BREAKHIS_NCLASSES];
} split_counts;

static int cmp_slide_ptr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static split_counts count_split(const mg_bh_index *ix, const int64_t *idx, int64_t n) {
    split_counts c = { 0 };
    c.images = n;
    char **s = malloc(((size_t)n + 1) * sizeof *s);
    for (int64_t i = 0; i < n; i++) c.classes[ix->recs[idx[i]].label]++, s[i] = (char *)ix->recs[idx[i]].slide;
    qsort(s, (size_t)n, sizeof *s, cmp_slide_ptr);
    for (int64_t i = 0; i < n; i++) c.patients += i == 0 || strcmp(s[i - 1], s[i]);
    free(s);
    return c;
}

static void json_split(const char *name, const split_counts *c) {
    printf("  \"%s\": {\"images\": %lld, \"patients\": %lld, \"classes\": {", name, (long long)c->images, (long long)c->patients);
    for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++) printf("%s\"%s\": %lld", k ? ", " : "", MG_BREAKHIS_CLASSES[k], (long long)c->classes[k]);
    printf("}},\n");
}

/* --verify: decode every selected image; bad ones become skips (or fail). Returns the count of bad. */
static mg_status verify(mg_bh_index *ix, const int64_t *idx, int64_t n, mg_bad_policy on_bad, int64_t *bad) {
    *bad = 0;
    mg_status first = MG_OK;
    char err[1024] = "";
    unsigned char *badf = calloc((size_t)n + 1, 1);
    if (!badf) return mg_fail(MG_ERR_OOM, NULL, "out of memory");
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < n; i++) {
        unsigned char *rgb = malloc(3 * 16 * 16);
        mg_status st = rgb ? mg_bh_load_rgb(ix, idx[i], 16, rgb) : mg_fail(MG_ERR_OOM, NULL, "out of memory");
        free(rgb);
        if (st != MG_OK) {
            badf[i] = 1;
#pragma omp critical
            if (first == MG_OK) first = st, snprintf(err, sizeof err, "%s", mg_last_error());
        }
    }
    mg_status st = MG_OK;
    for (int64_t i = 0; i < n && st == MG_OK; i++) {
        if (!badf[i]) continue;
        (*bad)++;
        if (on_bad == MG_BAD_FAIL) { st = mg_fail(first, NULL, "%s", err); break; }
        unsigned char *rgb = malloc(3 * 16 * 16);
        mg_status e = mg_bh_load_rgb(ix, idx[i], 16, rgb); /* again on this thread, for its message */
        free(rgb);
        if (e != MG_OK) st = mg_bh_add_skip(ix, ix->recs[idx[i]].path);
    }
    free(badf);
    return st;
}

static int data_bench(mg_bh_index *ix, const mg_bh_selection *sel, int threads, int batch, int size, int64_t limit) {
    int64_t *idx, n;
    if (mg_bh_select(ix, sel, &idx, &n) != MG_OK) return fail();
    if (limit > 0 && n > limit) n = limit;
    mg_loader_opts o = { .batch = batch, .image_size = size, .threads = threads, .on_bad = MG_BAD_SKIP };
    mg_loader *ld;
    if (mg_loader_create(ix, idx, n, &o, &ld) != MG_OK) return free(idx), fail();
    double t0 = mg_now_s();
    int64_t done = 0;
    const mg_batch *b;
    mg_status st;
    while ((st = mg_loader_next(ld, &b)) == MG_OK && b->n > 0) done += b->n;
    double dt = mg_now_s() - t0;
    int64_t skipped = mg_loader_skipped(ld);
    mg_loader_free(ld);
    free(idx);
    if (st != MG_OK) return fail();
    printf("decode+resize+normalise: %lld images to %dx%d in %.2f s with %d worker thread(s), batch %d: %.1f images/s (%lld skipped)\n",
           (long long)done, size, size, dt, threads, batch, (double)done / dt, (long long)skipped);
    return 0;
}

int cmd_data(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "synth")) return cmd_synth(argc - 1, argv + 1);
    int bench = argc > 1 && !strcmp(argv[1], "bench");
    if (bench) argc--, argv++;
    mg_bh_selection sel = mg_bh_selection_default(MG_BH_SPLIT_TEST);
    const char *path = NULL;
    mg_bad_policy on_bad = MG_BAD_SKIP;
    int json = 0, do_verify = 0, threads = 2, batch = 8, size = 896;
    int64_t limit = 64;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        mg_status st;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(USAGE, stdout); return 0; }
        if (!strcmp(argv[i], "--json")) { json = 1; continue; }
        if (!strcmp(argv[i], "--verify")) { do_verify = 1; continue; }
        if (!v) { fprintf(stderr, "medgem data: %s needs a value (or is unknown)\n%s", argv[i], USAGE); return 2; }
        if (mg_bh_selection_option(argv[i], v, &sel, &st)) {
            if (st != MG_OK) { fprintf(stderr, "medgem data: %s\n", mg_last_error()); return 2; }
        } else if (!strcmp(argv[i], "--data")) path = v;
        else if (!strcmp(argv[i], "--on-bad-image")) {
            if (!strcmp(v, "skip")) on_bad = MG_BAD_SKIP;
            else if (!strcmp(v, "fail")) on_bad = MG_BAD_FAIL;
            else { fprintf(stderr, "medgem data: --on-bad-image takes skip or fail\n"); return 2; }
        } else if (bench && !strcmp(argv[i], "--threads")) threads = atoi(v);
        else if (bench && !strcmp(argv[i], "--batch")) batch = atoi(v);
        else if (bench && !strcmp(argv[i], "--size")) size = atoi(v);
        else if (bench && !strcmp(argv[i], "--limit")) limit = atoll(v);
        else { fprintf(stderr, "medgem data: unknown option %s\n%s", argv[i], USAGE); return 2; }
        i++;
    }
    if (!path) { fprintf(stderr, "medgem data: --data PATH is required\n%s", USAGE); return 2; }

    mg_bh_index *ix;
    double t0 = mg_now_s();
    if (mg_bh_index_open(path, on_bad, &ix) != MG_OK) return fail();
    double t_index = mg_now_s() - t0;
    if (bench) {
        int rc = data_bench(ix, &sel, threads, batch, size, limit);
        mg_bh_index_free(ix);
        return rc;
    }

    int64_t *idx[2] = { NULL, NULL }, n[2] = { 0, 0 };
    int rc = 1;
    mg_bh_leaks leaks = { 0 };
    for (int s = 0; s < 2; s++) {
        mg_bh_selection one = sel;
        one.split = s == 0 ? MG_BH_SPLIT_TRAIN : MG_BH_SPLIT_TEST;
        if (mg_bh_select(ix, &one, &idx[s], &n[s]) != MG_OK) goto done;
    }
    int64_t bad = 0;
    if (do_verify)
        for (int s = 0; s < 2; s++) {
            int64_t b;
            if (verify(ix, idx[s], n[s], on_bad, &b) != MG_OK) goto done;
            bad += b;
        }
    if (mg_bh_find_leaks(ix, idx[0], n[0], idx[1], n[1], &leaks) != MG_OK) goto done;
    split_counts c[2] = { count_split(ix, idx[0], n[0]), count_split(ix, idx[1], n[1]) };
    char mag[16];
    snprintf(mag, sizeof mag, sel.mag ? "%dX" : "all", sel.mag);

    if (json) {
        printf("{\n  \"source\": \"%s\", \"path\": ", mg_bh_source_name(ix->source));
        mg_json_write_string(stdout, ix->origin);
        printf(", \"indexed\": %lld,\n  \"selection\": {\"fold\": %d, \"mag\": \"%s\", \"balance\": \"%s\", \"seed\": %llu, \"verified\": %s},\n",
               (long long)ix->n, sel.fold, mag, mg_balance_name(sel.balance), (unsigned long long)sel.seed, do_verify ? "true" : "false");
        json_split("train", &c[0]);
        json_split("test", &c[1]);
        printf("  \"leaks\": {\"patients\": [");
        for (int64_t i = 0; i < leaks.n_patients; i++) printf("%s", i ? ", " : ""), mg_json_write_string(stdout, leaks.patients[i]);
        printf("], \"duplicates\": [");
        for (int64_t i = 0; i < leaks.n_duplicates; i++) {
            printf("%s[", i ? ", " : "");
            mg_json_write_string(stdout, ix->recs[leaks.duplicates[i][0]].path);
            printf(", ");
            mg_json_write_string(stdout, ix->recs[leaks.duplicates[i][1]].path);
            printf("]");
        }
        printf("]},\n  \"skipped\": [");
        for (int64_t i = 0; i < ix->n_skipped; i++) {
            printf("%s{\"path\": ", i ? ", " : "");
            mg_json_write_string(stdout, ix->skipped[i].path);
            printf(", \"reason\": ");
            mg_json_write_string(stdout, ix->skipped[i].reason);
            printf("}");
        }
        printf("]\n}\n");
    } else {
        printf("source: %s %s: %lld images indexed in %.2f s\n", mg_bh_source_name(ix->source), ix->origin, (long long)ix->n, t_index);
        printf("selection: fold %d, magnification %s, balance %s (seed %llu)%s\n\n", sel.fold, mag, mg_balance_name(sel.balance),
               (unsigned long long)sel.seed, do_verify ? ", every image decoded" : "");
        printf("%-32s %8s %8s\n", "class", "train", "test");
        for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++)
            printf("%d %-30s %8lld %8lld\n", k, MG_BREAKHIS_CLASSES[k], (long long)c[0].classes[k], (long long)c[1].classes[k]);
        printf("%-32s %8lld %8lld\n", "images", (long long)c[0].images, (long long)c[1].images);
        printf("%-32s %8lld %8lld\n\n", "patients (slide numbers)", (long long)c[0].patients, (long long)c[1].patients);
        printf("leakage: %lld slide number(s) in both train and test%s", (long long)leaks.n_patients, leaks.n_patients ? ":" : "");
        for (int64_t i = 0; i < leaks.n_patients; i++) printf(" %s", leaks.patients[i]);
        printf("\nleakage: %lld byte-identical image pair(s) under different labels\n", (long long)leaks.n_duplicates);
        for (int64_t i = 0; i < leaks.n_duplicates; i++)
            printf("  %s\n  = %s\n", ix->recs[leaks.duplicates[i][0]].path, ix->recs[leaks.duplicates[i][1]].path);
    }
    if (ix->n_skipped) {
        fprintf(stderr, "medgem data: skipped %lld bad file(s) (--on-bad-image skip):\n", (long long)ix->n_skipped);
        for (int64_t i = 0; i < ix->n_skipped && i < 20; i++) fprintf(stderr, "  %s\n", ix->skipped[i].reason);
    }
    rc = 0;
done:
    if (rc) fail();
    mg_bh_leaks_free(&leaks);
    free(idx[0]), free(idx[1]);
    mg_bh_index_free(ix);
    return rc;
}
