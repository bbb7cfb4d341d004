/* The parsers of untrusted files, one function per fuzz target: tests/fuzz/fuzz_<name>.c hands
 * libFuzzer's input to fz_<name>(), and tests/test_fuzz_regress.c replays tests/fuzz/corpus/ and
 * tests/fuzz/regress/ through the same functions under gcc (no libFuzzer). File-based parsers get
 * the bytes written into a per-process temp folder made once (removed at exit). Each function
 * returns 0 and never exits: a bug shows as a sanitizer report or a crash, not a status. */
#ifndef MG_FUZZ_TARGETS_H
#define MG_FUZZ_TARGETS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/breakhis_index.h"
#include "data/image.h"
#include "engine/config.h"
#include "engine/json.h"
#include "engine/safetensors.h"
#include "model/lora.h"
#include "tokenizer/spm.h"

#ifndef MG_FUZZ_ROOT
#define MG_FUZZ_ROOT "." /* the repository (tests/golden/...); the Makefile passes its path */
#endif

static char fz_dir_[64];

static inline void fz_cleanup_(void) {
    static const char *const names[] = { "st.safetensors", "config/config.json", "config",
                                         "lora/adapter_config.json", "lora/adapter_model.safetensors", "lora",
                                         "folds/Folds.csv", "folds", "data.tar.gz", "tokenizer.model", "" };
    char p[128];
    for (int i = 0; names[i][0]; i++) {
        snprintf(p, sizeof p, "%s/%s", fz_dir_, names[i]);
        if (unlink(p) != 0) rmdir(p);
    }
    rmdir(fz_dir_);
}

/* DIR/sub: the per-process temp folder (made on first use), or one of its subfolders. */
static inline const char *fz_path(const char *sub, char *buf, size_t cap) {
    if (!fz_dir_[0]) {
        snprintf(fz_dir_, sizeof fz_dir_, "/tmp/medgem-fuzz-XXXXXX");
        if (!mkdtemp(fz_dir_)) {
            perror("mkdtemp");
            abort(); /* harness setup, not the library: nothing can be tested without it */
        }
        atexit(fz_cleanup_);
        char d[128];
        snprintf(d, sizeof d, "%s/config", fz_dir_);
        mkdir(d, 0700);
        snprintf(d, sizeof d, "%s/lora", fz_dir_);
        mkdir(d, 0700);
        snprintf(d, sizeof d, "%s/folds", fz_dir_);
        mkdir(d, 0700);
    }
    snprintf(buf, cap, "%s/%s", fz_dir_, sub);
    return buf;
}

static inline void fz_write(const char *path, const uint8_t *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* JSON text: parsed from an exact-size copy, so reading past len is caught. */
static inline int fz_json(const uint8_t *d, size_t n) {
    char *text = malloc(n ? n : 1);
    if (!text) return 0;
    if (n) memcpy(text, d, n);
    mg_json *j = NULL;
    if (mg_json_parse(text, n, "fuzz.json", &j) == MG_OK) {
        (void)mg_json_get_number(j, "a", 0);
        (void)mg_json_get_string(j, "b", NULL);
        mg_json_free(j);
    }
    free(text);
    mg_clear_error();
    return 0;
}

/* A .safetensors file: header, offsets and shapes; every tensor's bytes are touched. */
static inline int fz_safetensors(const uint8_t *d, size_t n) {
    char p[128];
    fz_write(fz_path("st.safetensors", p, sizeof p), d, n);
    mg_st_file f;
    if (mg_st_open(p, &f) == MG_OK) {
        volatile unsigned char sink = 0;
        for (int i = 0; i < f.n; i++) {
            const mg_st_tensor *t = &f.tensors[i];
            (void)mg_st_numel(t);
            if (t->nbytes) sink ^= ((const unsigned char *)t->data)[0] ^ ((const unsigned char *)t->data)[t->nbytes - 1];
            (void)mg_st_find(&f, t->name);
        }
        (void)sink;
        mg_st_close(&f);
    }
    mg_clear_error();
    return 0;
}

/* DIR/config.json (no generation_config.json beside it). */
static inline int fz_config(const uint8_t *d, size_t n) {
    char p[128], dir[128];
    fz_write(fz_path("config/config.json", p, sizeof p), d, n);
    mg_config cfg;
    (void)mg_config_load(fz_path("config", dir, sizeof dir), &cfg);
    mg_clear_error();
    return 0;
}

/* DIR/adapter_config.json beside the golden adapter's tensors, against the tiny model's config. */
static inline int fz_lora(const uint8_t *d, size_t n) {
    static mg_config cfg;
    static int ready;
    char p[128], dir[128];
    if (!ready) {
        if (mg_config_load(MG_FUZZ_ROOT "/tests/golden/tiny", &cfg) != MG_OK) {
            fprintf(stderr, "fuzz_lora: %s\n", mg_last_error());
            abort();
        }
        char target[4096];
        fz_path("lora/adapter_model.safetensors", p, sizeof p);
        unlink(p); /* a forked replay (tests/test_fuzz_regress.c) may have made it already */
        if (!realpath(MG_FUZZ_ROOT "/tests/golden/lora_adapter/adapter_model.safetensors", target) ||
            symlink(target, fz_path("lora/adapter_model.safetensors", p, sizeof p)) != 0) {
            perror("fuzz_lora: adapter_model.safetensors");
            abort();
        }
        ready = 1;
    }
    fz_write(fz_path("lora/adapter_config.json", p, sizeof p), d, n);
    mg_lora lora;
    if (mg_lora_load(fz_path("lora", dir, sizeof dir), &cfg, &lora) == MG_OK) mg_lora_free(&lora);
    mg_clear_error();
    return 0;
}

/* A Kaggle root: DIR/Folds.csv; the image files it names are absent (skipped). */
static inline int fz_folds(const uint8_t *d, size_t n) {
    char p[128], dir[128];
    fz_write(fz_path("folds/Folds.csv", p, sizeof p), d, n);
    mg_bh_index *ix = NULL;
    if (mg_bh_index_open(fz_path("folds", dir, sizeof dir), MG_BAD_SKIP, &ix) == MG_OK) mg_bh_index_free(ix);
    mg_clear_error();
    return 0;
}

/* A BreaKHis .tar.gz: the index, then the first members' bytes through the archive reader. */
static inline int fz_targz(const uint8_t *d, size_t n) {
    char p[128];
    fz_write(fz_path("data.tar.gz", p, sizeof p), d, n);
    mg_bh_index *ix = NULL;
    if (mg_bh_index_open(p, MG_BAD_SKIP, &ix) == MG_OK) {
        for (int64_t i = 0; i < ix->n && i < 3; i++) {
            unsigned char *bytes = NULL;
            size_t nb = 0;
            if (mg_bh_read_bytes(ix, i, &bytes, &nb) == MG_OK) free(bytes);
        }
        mg_bh_index_free(ix);
    }
    mg_clear_error();
    return 0;
}

/* tokenizer.model (SentencePiece protobuf), then a round trip when it loads. */
static inline int fz_spm(const uint8_t *d, size_t n) {
    char p[128];
    fz_write(fz_path("tokenizer.model", p, sizeof p), d, n);
    mg_spm *spm = NULL;
    if (mg_spm_load(p, &spm) == MG_OK) {
        int *ids = NULL, nid = 0;
        if (mg_spm_encode(spm, "Benign or malignant? <b>x</b>", 29, &ids, &nid) == MG_OK) {
            char *text = NULL;
            if (mg_spm_decode(spm, ids, nid, 1, &text) == MG_OK) free(text);
            free(ids);
        }
        mg_spm_free(spm);
    }
    mg_clear_error();
    return 0;
}

/* PNG/JPEG/BMP bytes -> RGB, then the processor's resize + normalise to 16 x 16. */
static inline int fz_image(const uint8_t *d, size_t n) {
    unsigned char *bytes = malloc(n ? n : 1);
    if (!bytes) return 0;
    if (n) memcpy(bytes, d, n);
    mg_image im;
    if (mg_image_decode(bytes, n, "fuzz.png", &im) == MG_OK) {
        float px[3 * 16 * 16];
        (void)mg_image_rgb_pixels(im.rgb, im.w, im.h, 16, px);
        mg_image_free(&im);
    }
    free(bytes);
    mg_clear_error();
    return 0;
}

#endif
