/* BreakHis index, folds, selection and leakage on a synthetic tree in all three source forms:
 * Folds.csv (Kaggle layout), the plain folder tree, and a tar.gz made by the system `tar czf`.
 * Expected counts come from the generator's parameters and labels from the guide's substring rule
 * ('/adenosis/' ... in the path), not from the indexer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/breakhis_index.h"
#include "data/image.h"
#include "data/leakage.h"
#include "data/prefetch.h"
#include "data/splits.h"
#include "data/synth.h"
#include "engine/json.h"
#include "tests/test.h"

enum { PATIENTS = 16, IMAGES = 2, W = 24, H = 20 };

static int same_record(const mg_bh_record *a, const mg_bh_record *b) {
    return !strcmp(a->key, b->key) && a->label == b->label && a->binary == b->binary && a->mag == b->mag &&
           !strcmp(a->patient, b->patient) && !strcmp(a->slide, b->slide) && !memcmp(a->split, b->split, sizeof a->split);
}

/* the guide's labelling: class folder name as a path substring */
static int guide_label(const char *path) {
    for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++) {
        char pat[64];
        snprintf(pat, sizeof pat, "/%s/", MG_BREAKHIS_CLASS_FOLDERS[k]);
        if (strstr(path, pat)) return k;
    }
    return -1;
}

static void test_grammar(void) {
    mg_bh_path_info p;
    const char *ex = "BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A_14-22549AB/100X/SOB_B_A-14-22549AB-100-001.png";
    CHECK(mg_bh_parse_path(ex, &p) == MG_OK, "spec example: %s", mg_last_error());
    CHECK(p.label == 0 && p.binary == 0 && p.mag == 100 && p.seq == 1, "labels of the spec example");
    CHECK(!strcmp(p.patient, "SOB_B_A-14-22549AB") && !strcmp(p.slide, "14-22549"), "ids %s %s", p.patient, p.slide);
    CHECK(!strcmp(p.key, ex), "key %s", p.key);
    const char *dc = "/x/y/BreaKHis_v1/BreaKHis_v1/histology_slides/breast/malignant/SOB/ductal_carcinoma/SOB_M_DC_14-13412/400X/SOB_M_DC-14-13412-400-017.png";
    const char *lc = "BreaKHis_v1/histology_slides/breast/malignant/SOB/lobular_carcinoma/SOB_M_LC_14-13412/40X/SOB_M_LC-14-13412-40-001.png";
    mg_bh_path_info q;
    CHECK(mg_bh_parse_path(dc, &p) == MG_OK && mg_bh_parse_path(lc, &q) == MG_OK, "DC/LC paths");
    CHECK(p.label == 4 && q.label == 5 && p.binary == 1 && p.mag == 400 && q.mag == 40 && p.seq == 17, "DC/LC labels");
    CHECK(!strcmp(p.slide, q.slide) && strcmp(p.patient, q.patient), "DC/LC share slide 14-13412, not patient");
    CHECK(!strncmp(p.key, "BreaKHis_v1/histology_slides/", 29), "key drops Kaggle's outer folders: %s", p.key);
    const struct { const char *path, *needle; } bad[] = {
        { "b/breast/benign/SOB/adenosiss/SOB_B_A_14-1/100X/SOB_B_A-14-1-100-001.png", "unknown class folder" },
        { "b/breast/benign/SOB/adenosis/SOB_B_A_14-1/100X/SOB_B_F-14-1-100-001.png", "contradicts its folder (subtype" },
        { "b/breast/benign/SOB/adenosis/SOB_B_A_14-1/100X/SOB_B_A-14-1-40-001.png", "contradicts its folder (magnification" },
        { "b/breast/benign/SOB/adenosis/SOB_B_A_14-1/100X/SOB_B_A-14-2-100-001.png", "contradicts its folder (patient" },
        { "b/breast/malignant/SOB/adenosis/SOB_B_A_14-1/100X/SOB_B_A-14-1-100-001.png", "sits under 'malignant'" },
        { "b/breast/benign/SOB/adenosis/SOB_B_A_14-1/100X/SOB_M_A-14-1-100-001.png", "contradicts its folder (benign/malignant" },
        { "b/breast/benign/SOB/adenosis/SOB_B_A_14-1/120X/SOB_B_A-14-1-120-001.png", "unknown magnification" },
        { "b/breast/benign/SOB/adenosis/SOB_B_A_14-1/100X/img001.png", "does not match" },
        { "adenosis/x.png", "too few folders" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mg_status st = mg_bh_parse_path(bad[i].path, &p);
        CHECK(st == MG_ERR_FORMAT && strstr(mg_last_error(), bad[i].needle) && strstr(mg_last_error(), bad[i].path) &&
                  strstr(mg_last_error(), "HINT:"),
              "bad path %zu: got '%s'", i, mg_last_error());
    }
}

static void check_counts(const mg_bh_index *ix, const char *form) {
    int64_t per_class[8] = { 0 }, per_mag[4] = { 0 }, wrong = 0;
    for (int64_t i = 0; i < ix->n; i++) {
        const mg_bh_record *r = &ix->recs[i];
        per_class[r->label]++;
        per_mag[r->mag == 40 ? 0 : r->mag == 100 ? 1 : r->mag == 200 ? 2 : 3]++;
        wrong += guide_label(r->key) != r->label || guide_label(r->path) != r->label || r->binary != (r->label >= 4) ||
                 !strstr(r->key, r->binary ? "/malignant/" : "/benign/");
    }
    CHECK(ix->n == PATIENTS * 4 * IMAGES, "%s: %lld images, want %d", form, (long long)ix->n, PATIENTS * 4 * IMAGES);
    for (int k = 0; k < 8; k++) CHECK(per_class[k] == PATIENTS / 8 * 4 * IMAGES, "%s: class %d has %lld", form, k, (long long)per_class[k]);
    for (int m = 0; m < 4; m++) CHECK(per_mag[m] == PATIENTS * IMAGES, "%s: mag %d has %lld", form, m, (long long)per_mag[m]);
    CHECK(wrong == 0, "%s: %lld labels disagree with the path", form, (long long)wrong);
}

static void test_folds(const mg_bh_index *ix) {
    for (int f = 0; f < MG_BH_NFOLDS; f++) {
        int64_t ntest = 0, leaks = 0, unset = 0;
        for (int64_t i = 0; i < ix->n; i++) {
            unset += ix->recs[i].split[f] == MG_BH_SPLIT_NONE;
            ntest += ix->recs[i].split[f] == MG_BH_SPLIT_TEST;
            for (int64_t j = 0; j < ix->n; j++)
                leaks += !strcmp(ix->recs[i].slide, ix->recs[j].slide) && ix->recs[i].split[f] != ix->recs[j].split[f];
        }
        CHECK(unset == 0 && leaks == 0, "fold %d: %lld unset, %lld cross-split slide pairs", f + 1, (long long)unset, (long long)leaks);
        CHECK(ntest > ix->n / 5 && ntest < ix->n * 3 / 5, "fold %d: %lld of %lld in test", f + 1, (long long)ntest, (long long)ix->n);
    }
    int differ = 0;
    for (int64_t i = 0; i < ix->n; i++) differ |= ix->recs[i].split[0] != ix->recs[i].split[1];
    CHECK(differ, "folds 1 and 2 are different random splits");
}

static void test_selection(const mg_bh_index *ix) {
    mg_bh_selection sel = { .fold = 1, .mag = 100, .split = MG_BH_SPLIT_TRAIN, .balance = MG_BALANCE_NONE, .seed = 42 };
    int64_t *all, nall, *bal, nbal, *bal2, nbal2, *cls, ncls;
    CHECK(mg_bh_select(ix, &sel, &all, &nall) == MG_OK, "select none: %s", mg_last_error());
    int64_t want = 0;
    for (int64_t i = 0; i < ix->n; i++) want += ix->recs[i].mag == 100 && ix->recs[i].split[0] == MG_BH_SPLIT_TRAIN;
    CHECK(nall == want, "none keeps all %lld (got %lld)", (long long)want, (long long)nall);
    sel.balance = MG_BALANCE_BINARY;
    CHECK(mg_bh_select(ix, &sel, &bal, &nbal) == MG_OK && mg_bh_select(ix, &sel, &bal2, &nbal2) == MG_OK, "select binary");
    int64_t nb = 0, nm = 0, sorted = 1;
    for (int64_t i = 0; i < nbal; i++) {
        nb += !ix->recs[bal[i]].binary, nm += ix->recs[bal[i]].binary;
        if (i) sorted &= bal[i] > bal[i - 1];
    }
    CHECK(nb == nm && nb > 0 && sorted, "binary balance: %lld benign, %lld malignant", (long long)nb, (long long)nm);
    CHECK(nbal == nbal2 && !memcmp(bal, bal2, (size_t)nbal * sizeof *bal), "balancing is deterministic");
    sel.balance = MG_BALANCE_CLASS;
    CHECK(mg_bh_select(ix, &sel, &cls, &ncls) == MG_OK, "select class");
    int64_t pc[8] = { 0 };
    for (int64_t i = 0; i < ncls; i++) pc[ix->recs[cls[i]].label]++;
    int64_t lo = -1, hi = 0;
    for (int k = 0; k < 8; k++)
        if (pc[k]) lo = lo < 0 || pc[k] < lo ? pc[k] : lo, hi = pc[k] > hi ? pc[k] : hi;
    CHECK(lo == hi && lo > 0, "class balance: counts %lld..%lld", (long long)lo, (long long)hi);
    free(all), free(bal), free(bal2), free(cls);
}

static void test_json(const char *root) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "./build/medgem data --data %s --balance none --json", root);
    FILE *p = popen(cmd, "r");
    char *buf = calloc(1 << 20, 1);
    size_t n = p ? fread(buf, 1, (1 << 20) - 1, p) : 0;
    int rc = p ? pclose(p) : -1;
    mg_json *j = NULL;
    CHECK(rc == 0 && mg_json_parse(buf, n, "medgem data --json", &j) == MG_OK, "medgem data --json: rc %d, %s", rc, mg_last_error());
    if (j) {
        const mg_json *tr = mg_json_get(j, "train"), *te = mg_json_get(j, "test"), *lk = mg_json_get(j, "leaks");
        double sum = mg_json_get_number(tr, "images", -1) + mg_json_get_number(te, "images", -1);
        CHECK(sum == PATIENTS * IMAGES, "train+test at 100X = %g", sum);
        CHECK(mg_json_get_number(mg_json_get(tr, "classes"), "benign_adenosis", -1) >= 0 && mg_json_get_number(te, "patients", -1) > 0,
              "class and patient keys");
        CHECK(lk && mg_json_get(lk, "patients") && mg_json_get(lk, "duplicates") && mg_json_get(j, "skipped"), "leak keys");
        mg_json_free(j);
    }
    free(buf);
}

/* plants a duplicate under another label and moves one training image of a patient to test */
static void test_leakage(const char *root) {
    mg_bh_index *ix;
    CHECK(mg_bh_index_open(root, MG_BAD_FAIL, &ix) == MG_OK, "reopen: %s", mg_last_error());
    mg_bh_selection sel = { .fold = 1, .mag = 100, .split = MG_BH_SPLIT_TRAIN, .balance = MG_BALANCE_NONE, .seed = 1 };
    int64_t *tr, ntr, *te, nte;
    mg_bh_select(ix, &sel, &tr, &ntr);
    sel.split = MG_BH_SPLIT_TEST;
    mg_bh_select(ix, &sel, &te, &nte);
    mg_bh_leaks l;
    CHECK(mg_bh_find_leaks(ix, tr, ntr, te, nte, &l) == MG_OK && l.n_patients == 0 && l.n_duplicates == 0,
          "clean synthetic set has no leaks (%lld, %lld)", (long long)l.n_patients, (long long)l.n_duplicates);
    mg_bh_leaks_free(&l);
    /* duplicate: a training DC image copied under an LC patient's 100X folder with an LC name */
    const mg_bh_record *dc = NULL, *lc = NULL;
    for (int64_t i = 0; i < ntr; i++) if (ix->recs[tr[i]].label == 4) { dc = &ix->recs[tr[i]]; break; }
    for (int64_t i = 0; i < ix->n; i++) if (ix->recs[i].label == 5 && ix->recs[i].mag == 100) { lc = &ix->recs[i]; break; }
    char lcdir[4096], cmd[9000], leak_slide[32] = "";
    snprintf(lcdir, sizeof lcdir, "%s", lc->path);
    *strrchr(lcdir, '/') = '\0';
    const char *pdir = strrchr(lcdir, '/') - 1;
    while (*pdir != '/') pdir--;
    char pat[128]; /* SOB_M_LC_14-<slide> -> file name stem SOB_M_LC-14-<slide> */
    snprintf(pat, sizeof pat, "%.*s", (int)(strrchr(lcdir, '/') - pdir - 1), pdir + 1);
    pat[8] = '-';
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/%s-100-099.png'", dc->path, lcdir, pat);
    CHECK(system(cmd) == 0, "plant duplicate: %s", cmd);
    /* cross-split patient: fold 1's first 100X test row of another slide becomes train in Folds.csv */
    int64_t moved = -1;
    for (int64_t i = 0; i < nte && moved < 0; i++)
        if (ix->recs[te[i]].label != 5 && ix->recs[te[i]].label != 4) moved = te[i];
    snprintf(leak_slide, sizeof leak_slide, "%s", ix->recs[moved].slide);
    snprintf(cmd, sizeof cmd, "sed -i 's#^1,100,test,%s$#1,100,train,%s#' '%s/Folds.csv' && grep -q '^1,100,train,%s$' '%s/Folds.csv'",
             ix->recs[moved].key, ix->recs[moved].key, root, ix->recs[moved].key, root);
    CHECK(system(cmd) == 0, "plant cross-split patient");
    char dup_key[600];
    snprintf(dup_key, sizeof dup_key, "%s", dc->key);
    free(tr), free(te);
    mg_bh_index_free(ix);

    /* the planted file is not in Folds.csv: the tree form sees it; Folds.csv form sees the moved row */
    char tree[4096];
    snprintf(tree, sizeof tree, "%s/BreaKHis_v1", root);
    CHECK(mg_bh_index_open(tree, MG_BAD_FAIL, &ix) == MG_OK, "tree with duplicate: %s", mg_last_error());
    sel.split = MG_BH_SPLIT_TRAIN;
    mg_bh_select(ix, &sel, &tr, &ntr);
    sel.split = MG_BH_SPLIT_TEST;
    mg_bh_select(ix, &sel, &te, &nte);
    CHECK(mg_bh_find_leaks(ix, tr, ntr, te, nte, &l) == MG_OK && l.n_duplicates == 1, "found %lld duplicates", (long long)l.n_duplicates);
    if (l.n_duplicates == 1) {
        const mg_bh_record *a = &ix->recs[l.duplicates[0][0]], *b = &ix->recs[l.duplicates[0][1]];
        CHECK((!strcmp(a->key, dup_key) && strstr(b->path, "-100-099.png")) || (!strcmp(b->key, dup_key) && strstr(a->path, "-100-099.png")),
              "duplicate pair %s / %s", a->path, b->path);
    }
    mg_bh_leaks_free(&l);
    free(tr), free(te);
    mg_bh_index_free(ix);
    CHECK(mg_bh_index_open(root, MG_BAD_FAIL, &ix) == MG_OK, "csv with moved row: %s", mg_last_error());
    sel.split = MG_BH_SPLIT_TRAIN;
    mg_bh_select(ix, &sel, &tr, &ntr);
    sel.split = MG_BH_SPLIT_TEST;
    mg_bh_select(ix, &sel, &te, &nte);
    CHECK(mg_bh_find_leaks(ix, tr, ntr, te, nte, &l) == MG_OK && l.n_patients == 1 && !strcmp(l.patients[0], leak_slide),
          "cross-split patient %s found (%lld: %s)", leak_slide, (long long)l.n_patients, l.n_patients ? l.patients[0] : "");
    mg_bh_leaks_free(&l);
    free(tr), free(te);
    mg_bh_index_free(ix);
}

/* --real-counts: the real set's numbers, typed from spec/breakhis.md §1.4 and §2.3 (not from the
 * generator's tables): images per class and magnification, 82 patient folders (on 80 slide numbers:
 * the synthetic DC/LC and A/F pairs share theirs),
 * fold 1 at 100X 1,321 / 760 (benign 383 / 261), so binary balancing gives the guide's 766 / 522;
 * fold 1 has the DC/LC slide on both sides, folds 2-5 none. */
static void test_real_counts(void) {
    static const int want[8][4] = { { 114, 113, 111, 106 }, { 253, 260, 253, 248 }, { 109, 121, 121, 102 },
                                    { 149, 150, 138, 132 }, { 864, 903, 883, 801 }, { 156, 170, 156, 144 },
                                    { 205, 222, 211, 154 }, { 145, 142, 140, 133 } };
    char root[] = "/tmp/mg_test_real_XXXXXX", cmd[600];
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    const mg_synth_opts o = { .real_counts = true, .width = 8, .height = 6, .seed = 3 };
    CHECK(mg_synth_images(&o) == 7909, "7,909 images planned");
    CHECK(mg_synth_breakhis(root, &o) == MG_OK, "synth --real-counts: %s", mg_last_error());
    mg_bh_index *ix;
    if (mg_bh_index_open(root, MG_BAD_FAIL, &ix) != MG_OK) {
        CHECK(0, "open: %s", mg_last_error());
        return;
    }
    int got[8][4] = { { 0 } }, bad_label = 0;
    int64_t split100[2][2] = { { 0 } }; /* [train/test][benign/malignant] at 100X in fold 1 */
    char (*ids)[64] = calloc((size_t)ix->n, 64), (*slides)[32] = calloc((size_t)ix->n, 32);
    int n_ids = 0, n_slides = 0;
    for (int64_t i = 0; i < ix->n; i++) {
        const mg_bh_record *r = &ix->recs[i];
        const int m = r->mag == 40 ? 0 : r->mag == 100 ? 1 : r->mag == 200 ? 2 : 3;
        got[r->label][m]++;
        bad_label += guide_label(r->key) != r->label;
        if (r->mag == 100) split100[r->split[0] == MG_BH_SPLIT_TEST][r->binary]++;
        int k = 0;
        while (k < n_ids && strcmp(ids[k], r->patient)) k++;
        if (k == n_ids) snprintf(ids[n_ids++], 64, "%s", r->patient);
        for (k = 0; k < n_slides && strcmp(slides[k], r->slide); k++) {}
        if (k == n_slides) snprintf(slides[n_slides++], 32, "%s", r->slide);
    }
    CHECK(ix->n == 7909 && !memcmp(got, want, sizeof got) && !bad_label, "%lld images, per class and magnification as in "
          "BreakHis v1, labels from the path", (long long)ix->n);
    CHECK(n_ids == 82 && n_slides == 80, "82 patient folders on 80 slide numbers (got %d, %d)", n_ids, n_slides);
    CHECK(split100[0][0] == 383 && split100[0][1] == 938 && split100[1][0] == 261 && split100[1][1] == 499,
          "fold 1, 100X: train %lld/%lld, test %lld/%lld benign/malignant (want 383/938, 261/499)",
          (long long)split100[0][0], (long long)split100[0][1], (long long)split100[1][0], (long long)split100[1][1]);
    free(ids), free(slides);
    for (int f = 1; f <= 2; f++) {
        mg_bh_selection sel = mg_bh_selection_default(MG_BH_SPLIT_TRAIN);
        sel.fold = f;
        int64_t *tr, ntr, *te, nte;
        mg_bh_leaks l = { 0 };
        const int ok = mg_bh_select(ix, &sel, &tr, &ntr) == MG_OK && (sel.split = MG_BH_SPLIT_TEST,
                       mg_bh_select(ix, &sel, &te, &nte) == MG_OK) && mg_bh_find_leaks(ix, tr, ntr, te, nte, &l) == MG_OK;
        if (f == 1)
            CHECK(ok && ntr == 766 && nte == 522 && l.n_patients == 1, "fold 1 balanced: %lld training, %lld test images "
                  "(the guide's 766, 522), %lld slide on both sides", (long long)ntr, (long long)nte, (long long)l.n_patients);
        else
            CHECK(ok && l.n_patients == 0, "fold 2 (medgem's folds) is patient-disjoint");
        if (ok) free(tr), free(te);
        mg_bh_leaks_free(&l);
    }
    mg_bh_index_free(ix);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0, "cleanup");
}

int main(void) {
    test_grammar();
    char root[] = "/tmp/mg_test_data_XXXXXX";
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    mg_synth_opts o = { .patients = PATIENTS, .images = IMAGES, .width = W, .height = H, .seed = 7 };
    CHECK(mg_synth_breakhis(root, &o) == MG_OK, "synth: %s", mg_last_error());

    char tree[4096], tgz[4096], cmd[9000];
    snprintf(tree, sizeof tree, "%s/BreaKHis_v1", root); /* no Folds.csv here: medgem makes folds */
    snprintf(tgz, sizeof tgz, "%s/BreaKHis_v1.tar.gz", root);
    snprintf(cmd, sizeof cmd, "tar czf '%s' -C '%s/BreaKHis_v1' BreaKHis_v1", tgz, root);
    CHECK(system(cmd) == 0, "tar czf");

    mg_bh_index *ix[3] = { 0 };
    const char *src[3] = { root, tree, tgz }, *names[3] = { "Folds.csv", "tree", "tar.gz" };
    for (int s = 0; s < 3; s++) {
        mg_status st = mg_bh_index_open(src[s], MG_BAD_FAIL, &ix[s]);
        CHECK(st == MG_OK, "open %s: %s", names[s], mg_last_error());
        if (st != MG_OK) return test_finish();
        CHECK((int)ix[s]->source == s, "%s detected as %s", names[s], mg_bh_source_name(ix[s]->source));
        check_counts(ix[s], names[s]);
    }
    int long_name = 0;
    for (int64_t i = 0; i < ix[2]->n; i++) long_name |= strlen(ix[2]->recs[i].path) > 100;
    CHECK(long_name, "the tar holds names over 100 bytes (GNU long-name entries)");
    for (int s = 1; s < 3; s++) {
        int64_t diff = ix[s]->n == ix[0]->n ? 0 : 1;
        for (int64_t i = 0; i < ix[0]->n && !diff; i++) diff += !same_record(&ix[0]->recs[i], &ix[s]->recs[i]);
        CHECK(diff == 0, "%s index equals the Folds.csv index (%lld records differ)", names[s], (long long)diff);
    }
    /* the bytes and the loaded pixels agree between a file and its tar member */
    int64_t order[5] = { 0, 7, ix[0]->n / 2, ix[0]->n - 1, 3 };
    int bytes_same = 1;
    for (int k = 0; k < 5; k++) {
        unsigned char *a, *b;
        size_t na, nb;
        if (mg_bh_read_bytes(ix[1], order[k], &a, &na) || mg_bh_read_bytes(ix[2], order[k], &b, &nb)) { bytes_same = 0; break; }
        bytes_same &= na == nb && !memcmp(a, b, na);
        free(a), free(b);
    }
    CHECK(bytes_same, "file bytes equal tar member bytes");
    mg_loader_opts lo = { .batch = 2, .image_size = 16, .threads = 2, .on_bad = MG_BAD_FAIL };
    mg_loader *l1, *l2;
    CHECK(mg_loader_create(ix[1], order, 5, &lo, &l1) == MG_OK && mg_loader_create(ix[2], order, 5, &lo, &l2) == MG_OK, "loaders");
    const mg_batch *b1, *b2;
    int64_t seen = 0, nb = 0, pix_same = 1;
    unsigned char rgb[16 * 16 * 3];
    float ref[3 * 16 * 16];
    while (mg_loader_next(l1, &b1) == MG_OK && b1->n > 0) {
        CHECK(mg_loader_next(l2, &b2) == MG_OK && b2->n == b1->n, "tar loader batch");
        for (int64_t j = 0; j < b1->n; j++) {
            int64_t r = order[seen + j];
            CHECK(b1->records[j] == r && b1->labels[j] == ix[1]->recs[r].label && b1->binary[j] == ix[1]->recs[r].binary, "batch order/labels");
            mg_bh_load_rgb(ix[1], r, 16, rgb);
            mg_normalize_chw(rgb, 16, 16, ref);
            pix_same &= !memcmp(ref, b1->pixels + j * 3 * 16 * 16, sizeof ref) && !memcmp(ref, b2->pixels + j * 3 * 16 * 16, sizeof ref);
        }
        seen += b1->n, nb++;
    }
    CHECK(seen == 5 && nb == 3 && pix_same, "loader: %lld images in %lld batches, pixels equal: %lld", (long long)seen, (long long)nb,
          (long long)pix_same);
    mg_loader_free(l1), mg_loader_free(l2);

    test_folds(ix[1]);
    test_selection(ix[0]);
    for (int s = 0; s < 3; s++) mg_bh_index_free(ix[s]);
    test_json(root);
    test_leakage(root);
    test_real_counts();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
