/* Bad input, each case under --on-bad-image skip and fail: a Folds.csv row whose file is missing,
 * an undecodable image, an unknown class folder, a file name contradicting its folder, an empty
 * selection, a malformed Folds.csv, and archives that are not gzip, not tar, or truncated. Also
 * checks the tar.gz reader's checkpoints (zran) on an archive of several MiB made by `tar czf`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/breakhis_index.h"
#include "engine/atomic_file.h"
#include "data/prefetch.h"
#include "data/rng.h"
#include "data/splits.h"
#include "data/synth.h"
#include "data/targz.h"
#include "tests/test.h"

static char root[] = "/tmp/mg_test_bad_XXXXXX";
static char cmd[9000];

static int sh(const char *fmt, const char *a, const char *b) {
    snprintf(cmd, sizeof cmd, fmt, a, b);
    return system(cmd);
}

/* opens path under both policies; skip must list one file whose reason holds `needle` */
static void expect_bad(const char *what, const char *path, const char *needle, int64_t want_n) {
    mg_bh_index *ix = NULL;
    mg_status st = mg_bh_index_open(path, MG_BAD_FAIL, &ix);
    CHECK(st != MG_OK && strstr(mg_last_error(), needle) && strstr(mg_last_error(), "HINT:"), "%s, fail: got '%s'", what, mg_last_error());
    mg_bh_index_free(ix);
    st = mg_bh_index_open(path, MG_BAD_SKIP, &ix);
    CHECK(st == MG_OK && ix->n_skipped == 1 && strstr(ix->skipped[0].reason, needle) && ix->n == want_n, "%s, skip: %s %lld skipped, %lld kept",
          what, st ? mg_last_error() : "", ix ? (long long)ix->n_skipped : -1, ix ? (long long)ix->n : -1);
    if (st == MG_OK) printf("ok   %s: skipped %s (%s)\n", what, ix->skipped[0].path, ix->skipped[0].reason);
    mg_bh_index_free(ix);
}

static const char *SLIDES = "BreaKHis_v1/BreaKHis_v1/histology_slides/breast";

static void test_targz_checkpoints(void) {
    /* 4 members of 3 MiB drawn from a 16-letter alphabet: dynamic-Huffman blocks at odd bit positions */
    char dir[4096], tgz[4096];
    snprintf(dir, sizeof dir, "%s/big", root);
    snprintf(tgz, sizeof tgz, "%s/big.tar.gz", root);
    sh("mkdir -p '%s'%s", dir, "");
    enum { N = 4, SZ = 3 << 20 };
    unsigned char *data[N];
    mg_rng rng = mg_rng_seed(99, 0);
    for (int f = 0; f < N; f++) {
        data[f] = malloc(SZ);
        for (size_t i = 0; i < SZ; i++) data[f][i] = (unsigned char)('a' + mg_rng_below(&rng, 16));
        char p[4200];
        snprintf(p, sizeof p, "%s/m%d.bin", dir, f);
        CHECK(mg_write_file_atomic(p, data[f], SZ) == MG_OK, "write member");
    }
    CHECK(sh("tar czf '%s' -C '%s' m0.bin m1.bin m2.bin m3.bin", tgz, dir) == 0, "tar czf");
    mg_targz *t;
    mg_tar_member *m;
    int64_t n;
    CHECK(mg_targz_open(tgz, &t, &m, &n) == MG_OK && n == N, "open big tar: %s", mg_last_error());
    if (n != N) return;
    unsigned char *buf = malloc(SZ);
    int ok = 1;
    for (int f = 0; f < N; f++) {
        ok &= m[f].size == SZ && mg_targz_read(t, m[f].offset, SZ, buf) == MG_OK && !memcmp(buf, data[f], SZ);
        for (int k = 0; k < 20; k++) { /* random slices */
            int64_t off = (int64_t)mg_rng_below(&rng, SZ - 1000), len = 1 + (int64_t)mg_rng_below(&rng, 1000);
            ok &= mg_targz_read(t, m[f].offset + off, len, buf) == MG_OK && !memcmp(buf, data[f] + off, (size_t)len);
        }
        free(m[f].name), free(data[f]);
    }
    CHECK(ok, "every member and 80 random slices of a 12 MiB tar.gz read back exactly");
    free(m), free(buf);
    mg_targz_close(t);
    /* truncated and non-gzip archives */
    char cut[4200];
    snprintf(cut, sizeof cut, "%s/cut.tar.gz", root);
    CHECK(sh("head -c 300000 '%s' > '%s'", tgz, cut) == 0, "truncate");
    CHECK(mg_targz_open(cut, &t, &m, &n) == MG_ERR_FORMAT && strstr(mg_last_error(), "cut.tar.gz"), "truncated: %s", mg_last_error());
    snprintf(cut, sizeof cut, "%s/big/m0.bin", root);
    CHECK(sh("cp '%s' '%s/notgz.tar.gz'", cut, root) == 0, "copy");
    snprintf(cut, sizeof cut, "%s/notgz.tar.gz", root);
    CHECK(mg_targz_open(cut, &t, &m, &n) == MG_ERR_FORMAT && strstr(mg_last_error(), "not valid gzip"), "not gzip: %s", mg_last_error());
    CHECK(sh("gzip -c '%s/big/m0.bin' > '%s/nottar.tar.gz'", root, root) == 0, "gzip");
    snprintf(cut, sizeof cut, "%s/nottar.tar.gz", root);
    CHECK(mg_targz_open(cut, &t, &m, &n) == MG_ERR_FORMAT && strstr(mg_last_error(), "not a tar"), "not tar: %s", mg_last_error());
    sh("rm -rf '%s' %s", dir, "");
}

int main(void) {
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    mg_synth_opts o = { .patients = 8, .images = 1, .width = 12, .height = 10, .seed = 3 };
    CHECK(mg_synth_breakhis(root, &o) == MG_OK, "synth: %s", mg_last_error());
    const int64_t N = 8 * 4;
    char path[4200], tree[4200];
    snprintf(tree, sizeof tree, "%s/BreaKHis_v1", root);

    /* a Folds.csv row naming a missing file */
    CHECK(sh("cp '%s/Folds.csv' '%s/Folds.orig'", root, root) == 0, "backup csv");
    snprintf(path, sizeof path, "%s/Folds.csv", root);
    CHECK(sh("echo '1,100,test,BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A_14-99999/100X/SOB_B_A-14-99999-100-001.png' >> '%s'%s",
             path, "") == 0, "append row");
    expect_bad("Folds.csv row with a missing file", root, "file missing", N);
    CHECK(strstr(mg_last_error(), "SOB_B_A-14-99999-100-001.png") != NULL, "path named");
    /* a malformed row fails under both policies */
    CHECK(sh("cp '%s/Folds.orig' '%s/Folds.csv'", root, root) == 0, "restore");
    CHECK(sh("echo '9,100,train,x.png' >> '%s/Folds.csv'%s", root, "") == 0, "bad row");
    mg_bh_index *ix = NULL;
    CHECK(mg_bh_index_open(root, MG_BAD_SKIP, &ix) == MG_ERR_FORMAT && strstr(mg_last_error(), "line 162") &&
              strstr(mg_last_error(), "malformed row"), "malformed row: %s", mg_last_error());
    CHECK(sh("cp '%s/Folds.orig' '%s/Folds.csv'", root, root) == 0, "restore");
    CHECK(sh("sed -i '1s/.*/fold,magnification,grp,filename/' '%s/Folds.csv'%s", root, "") == 0, "bad header");
    CHECK(mg_bh_index_open(root, MG_BAD_SKIP, &ix) == MG_ERR_FORMAT && strstr(mg_last_error(), "header"), "bad header: %s", mg_last_error());
    CHECK(sh("cp '%s/Folds.orig' '%s/Folds.csv'", root, root) == 0, "restore");

    /* an unknown class folder in the tree */
    CHECK(sh("mkdir -p '%s/%s/benign/SOB/fibroadenomas/SOB_B_F_14-1/100X'", root, SLIDES) == 0, "mkdir");
    snprintf(path, sizeof path, "%s/%s/benign/SOB/fibroadenomas/SOB_B_F_14-1/100X/SOB_B_F-14-1-100-001.png", root, SLIDES);
    CHECK(sh("printf x > '%s'%s", path, "") == 0, "plant unknown class");
    expect_bad("unknown class folder", tree, "unknown class folder 'fibroadenomas'", N);
    CHECK(sh("rm -rf '%s/%s/benign/SOB/fibroadenomas'", root, SLIDES) == 0, "clean");

    /* a file name contradicting its folder (a DC name in an adenosis folder) */
    snprintf(path, sizeof path, "%s/%s/benign/SOB/adenosis", root, SLIDES);
    CHECK(sh("d=$(ls -d '%s'/*/100X | head -1); printf x > \"$d/SOB_M_DC-14-12345-100-001.png\"%s", path, "") == 0, "plant misnamed");
    expect_bad("file name contradicting its folder", tree, "contradicts its folder", N);
    CHECK(sh("rm -f '%s'/*/100X/SOB_M_DC-14-12345-100-001.png%s", path, "") == 0, "clean");

    /* an undecodable image: indexed fine, then skipped (counted) or failing in the loader */
    CHECK(mg_bh_index_open(tree, MG_BAD_FAIL, &ix) == MG_OK && ix->n == N, "clean tree: %s", mg_last_error());
    int64_t victim = 5;
    CHECK(sh("printf 'not a png' > '%s'%s", ix->recs[victim].path, "") == 0, "corrupt image");
    int64_t order[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
    for (int pol = 0; pol < 2; pol++) {
        mg_loader_opts lo = { .batch = 3, .image_size = 8, .threads = 2, .on_bad = pol ? MG_BAD_FAIL : MG_BAD_SKIP };
        mg_loader *ld;
        CHECK(mg_loader_create(ix, order, 8, &lo, &ld) == MG_OK, "loader");
        const mg_batch *b;
        mg_status st;
        int64_t got = 0, victim_seen = 0;
        while ((st = mg_loader_next(ld, &b)) == MG_OK && b->n > 0) {
            for (int64_t j = 0; j < b->n; j++) victim_seen |= b->records[j] == victim;
            got += b->n;
        }
        if (pol == 0)
            CHECK(st == MG_OK && got == 7 && !victim_seen && mg_loader_skipped(ld) == 1, "undecodable, skip: %lld loaded, %lld skipped",
                  (long long)got, (long long)mg_loader_skipped(ld));
        else
            CHECK(st == MG_ERR_FORMAT && strstr(mg_last_error(), ix->recs[victim].path) && strstr(mg_last_error(), "cannot decode"),
                  "undecodable, fail: %s", mg_last_error());
        mg_loader_free(ld);
    }
    printf("ok   undecodable image: %s\n", mg_last_error());
    /* an empty selection */
    for (int64_t i = 0; i < ix->n; i++) ix->recs[i].split[0] = MG_BH_SPLIT_TRAIN;
    mg_bh_selection sel = mg_bh_selection_default(MG_BH_SPLIT_TEST);
    int64_t *idx, n;
    CHECK(mg_bh_select(ix, &sel, &idx, &n) == MG_ERR_MISSING && strstr(mg_last_error(), "is empty") && strstr(mg_last_error(), tree),
          "empty selection: %s", mg_last_error());
    printf("ok   empty selection: %s\n", mg_last_error());
    mg_bh_index_free(ix);
    /* no images at all, and a path that does not exist */
    CHECK(mg_bh_index_open("/nonexistent/BreaKHis_v1", MG_BAD_SKIP, &ix) == MG_ERR_IO && strstr(mg_last_error(), "/nonexistent"), "missing path");
    snprintf(path, sizeof path, "%s/empty", root);
    sh("mkdir -p '%s'%s", path, "");
    CHECK(mg_bh_index_open(path, MG_BAD_SKIP, &ix) == MG_ERR_MISSING && strstr(mg_last_error(), "no BreakHis images"), "empty folder");

    test_targz_checkpoints();
    sh("rm -rf '%s'%s", root, "");
    return test_finish();
}
