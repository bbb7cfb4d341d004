/* safetensors: reading a file written by the reference library (tests/fixtures/config/
 * reference.safetensors, made by make_configs.py), the writer's round trip and header padding,
 * sharded checkpoints, and every kind of malformed file, each of which must fail with a message
 * naming the problem. The malformed files are written here into a temp dir under /tmp.
 * Memory checks (run from the repository root):
 *   valgrind --error-exitcode=1 --leak-check=full build/tests/test_safetensors
 *   make SANITIZE=address,undefined test        (objects go to build/san-address-undefined/)
 *   without make: cc -std=c11 -D_GNU_SOURCE -I. -g -fsanitize=address,undefined tests/test_safetensors.c \
 *     engine/safetensors.c engine/checkpoint.c engine/json.c engine/status.c engine/dtype.c -lm -o /tmp/t && /tmp/t */
#include <ftw.h>
#include <stdint.h>
#include <unistd.h>

#include "engine/safetensors.h"
#include "tests/test.h"

static char g_dir[64];

static void path_in(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

/* Writes a raw file: u64 `hlen` (normally strlen(header)), the header, then `data_len` zero bytes. */
static void write_raw(const char *name, uint64_t hlen, const char *header, size_t data_len) {
    char path[256];
    path_in(path, sizeof path, name);
    FILE *f = fopen(path, "wb");
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(hlen >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_len; i++) fputc(0, f);
    fclose(f);
}

/* Opens `name` from the temp dir; expects failure with code `want` and `needle` in the message. */
static void expect_bad(const char *name, mg_status want, const char *needle) {
    char path[256];
    path_in(path, sizeof path, name);
    mg_st_file f;
    mg_status s = mg_st_open(path, &f);
    CHECK(s == want, "%s: status %s, want %s (%s)", name, mg_status_name(s), mg_status_name(want), mg_last_error());
    CHECK(strstr(mg_last_error(), needle) != NULL, "%s: message lacks '%s': %s", name, needle, mg_last_error());
    CHECK(strstr(mg_last_error(), "HINT:") != NULL, "%s: message has no HINT: %s", name, mg_last_error());
    if (s == MG_OK) mg_st_close(&f);
}

static void test_malformed(void) {
    write_raw("empty.safetensors", 0, "", 0);
    /* an empty file has no length field at all: truncate the 8 bytes written above */
    char path[256];
    path_in(path, sizeof path, "empty.safetensors");
    CHECK(truncate(path, 0) == 0, "truncate");
    expect_bad("empty.safetensors", MG_ERR_FORMAT, "0 bytes, shorter than the 8-byte");
    path_in(path, sizeof path, "short.safetensors");
    FILE *f = fopen(path, "wb");
    fwrite("\x10\0\0\0\0", 1, 5, f);
    fclose(f);
    expect_bad("short.safetensors", MG_ERR_FORMAT, "5 bytes, shorter than the 8-byte");

    const char *ok_a = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    write_raw("truncated_header.safetensors", strlen(ok_a) + 40, ok_a, 0);
    expect_bad("truncated_header.safetensors", MG_ERR_FORMAT, "runs past the end of the file");
    write_raw("huge_header.safetensors", (uint64_t)1 << 62, ok_a, 8);
    expect_bad("huge_header.safetensors", MG_ERR_FORMAT, "runs past the end of the file");

    const char *bad_json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],";
    write_raw("bad_json.safetensors", strlen(bad_json), bad_json, 8);
    expect_bad("bad_json.safetensors", MG_ERR_FORMAT, "invalid JSON");
    const char *not_obj = "[1,2,3]";
    write_raw("not_object.safetensors", strlen(not_obj), not_obj, 0);
    expect_bad("not_object.safetensors", MG_ERR_FORMAT, "not a JSON object");

    const char *i64 = "{\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}";
    write_raw("i64.safetensors", strlen(i64), i64, 8);
    expect_bad("i64.safetensors", MG_ERR_UNSUPPORTED, "tensor 'ids' has dtype I64");
    const char *foo = "{\"w\":{\"dtype\":\"FOO\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    write_raw("foo.safetensors", strlen(foo), foo, 4);
    expect_bad("foo.safetensors", MG_ERR_UNSUPPORTED, "tensor 'w' has dtype FOO");

    const char *oob = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    write_raw("out_of_bounds.safetensors", strlen(oob), oob, 8);
    expect_bad("out_of_bounds.safetensors", MG_ERR_FORMAT, "tensor 'w': data_offsets [0, 16] run past the data block");

    const char *overlap = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
    write_raw("overlap.safetensors", strlen(overlap), overlap, 12);
    expect_bad("overlap.safetensors", MG_ERR_FORMAT, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    /* an empty tensor between two overlapping ones must not hide the overlap */
    const char *overlap2 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                           "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
    write_raw("overlap2.safetensors", strlen(overlap2), overlap2, 12);
    expect_bad("overlap2.safetensors", MG_ERR_FORMAT, "overlap");

    const char *size = "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}";
    write_raw("size_mismatch.safetensors", strlen(size), size, 8);
    expect_bad("size_mismatch.safetensors", MG_ERR_FORMAT, "tensor 'w': 3 elements of F32 need 12 bytes but data_offsets span 8");
    const char *neg = "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}";
    write_raw("negative_dim.safetensors", strlen(neg), neg, 8);
    expect_bad("negative_dim.safetensors", MG_ERR_FORMAT, "tensor 'w': shape entry 0 is not a non-negative integer");
    const char *frac = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}";
    write_raw("fractional_dim.safetensors", strlen(frac), frac, 8);
    expect_bad("fractional_dim.safetensors", MG_ERR_FORMAT, "shape entry 0");
    const char *backwards = "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}";
    write_raw("backwards.safetensors", strlen(backwards), backwards, 8);
    expect_bad("backwards.safetensors", MG_ERR_FORMAT, "0 <= begin <= end");
    const char *overflow = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}";
    write_raw("overflow.safetensors", strlen(overflow), overflow, 8);
    expect_bad("overflow.safetensors", MG_ERR_FORMAT, "tensor 'w'");
    const char *twice = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    write_raw("twice.safetensors", strlen(twice), twice, 8);
    expect_bad("twice.safetensors", MG_ERR_FORMAT, "tensor 'w' appears twice");
    expect_bad("does_not_exist.safetensors", MG_ERR_MISSING, "cannot open");
    expect_bad(".", MG_ERR_IO, "is not a regular file");
}

/* The file written by the reference library reads back with the right dtypes, shapes and bytes. */
static void test_reference_file(void) {
    mg_st_file f;
    mg_status s = mg_st_open("tests/fixtures/config/reference.safetensors", &f);
    CHECK(s == MG_OK, "open reference.safetensors: %s", mg_last_error());
    if (s != MG_OK) return;
    CHECK(f.n == 4, "4 tensors (metadata skipped), got %d", f.n);
    const mg_st_tensor *a = mg_st_find(&f, "a_f32"), *b = mg_st_find(&f, "b_bf16"), *c = mg_st_find(&f, "c_f16"),
                       *e = mg_st_find(&f, "d_empty");
    CHECK(a && b && c && e && !mg_st_find(&f, "__metadata__") && !mg_st_find(&f, "zzz"), "lookups");
    if (a && b && c && e) {
        CHECK(a->dtype == MG_F32 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->nbytes == 24, "a meta");
        const float want_a[6] = { -2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f };
        CHECK(!memcmp(a->data, want_a, sizeof want_a), "a values");
        float got[4];
        mg_to_f32(got, b->data, b->dtype, 4);
        CHECK(b->dtype == MG_BF16 && got[0] == 1.5f && got[1] == -2.0f && got[2] == 0.25f &&
                  ((const uint16_t *)b->data)[3] == 32610,  /* torch's bf16(3e38) bits */
              "b values");
        mg_to_f32(got, c->data, c->dtype, 4);
        CHECK(c->dtype == MG_F16 && got[0] == 0.5f && got[1] == -65504.0f && got[2] == 6.103515625e-05f && got[3] == 1.0f,
              "c values");
        CHECK(e->ndim == 2 && e->shape[0] == 0 && e->shape[1] == 4 && mg_st_numel(e) == 0 && e->nbytes == 0, "empty");
        CHECK(!strcmp(a->file, "tests/fixtures/config/reference.safetensors"), "file recorded");
    }
    mg_st_close(&f);
}

static void test_write_roundtrip(void) {
    char path[256];
    path_in(path, sizeof path, "rt.safetensors");
    const float x[6] = { 1, 2, 3, 4, 5, 6 };
    const uint16_t y[3] = { 0x3f80, 0xc000, 0x7fc0 };
    const int64_t sx[2] = { 2, 3 }, sy[1] = { 3 }, sz[2] = { 0, 5 };
    const mg_st_entry es[3] = { { "x.weight", MG_F32, 2, sx, x }, { "y \"quoted\"", MG_BF16, 1, sy, y },
                                { "z", MG_F16, 2, sz, NULL } };
    const char *meta[4] = { "format", "pt", "step", "12" };
    mg_status s = mg_st_write(path, es, 3, meta, 2);
    CHECK(s == MG_OK, "write: %s", mg_last_error());
    FILE *f = fopen(path, "rb");
    uint8_t len8[8] = { 0 };
    CHECK(f && fread(len8, 1, 8, f) == 8, "read length");
    if (f) fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | len8[i];
    CHECK(hlen % 8 == 0, "header padded to 8 bytes (%llu)", (unsigned long long)hlen);
    mg_st_file r;
    s = mg_st_open(path, &r);
    CHECK(s == MG_OK, "reopen: %s", mg_last_error());
    if (s != MG_OK) return;
    CHECK(r.n == 3, "3 tensors");
    const mg_st_tensor *tx = mg_st_find(&r, "x.weight"), *ty = mg_st_find(&r, "y \"quoted\""), *tz = mg_st_find(&r, "z");
    CHECK(tx && tx->shape[1] == 3 && !memcmp(tx->data, x, sizeof x), "x back");
    CHECK(ty && ty->dtype == MG_BF16 && !memcmp(ty->data, y, sizeof y), "y back (escaped name)");
    CHECK(tz && tz->dtype == MG_F16 && tz->nbytes == 0 && tz->shape[1] == 5, "z back");
    CHECK(((uintptr_t)tx->data - (uintptr_t)r.map) % 8 == 0, "data block 8-byte aligned");
    mg_st_close(&r);
    /* overwrite in place: the rename replaces the old file, no temp file stays behind */
    s = mg_st_write(path, es, 1, NULL, 0);
    CHECK(s == MG_OK && mg_st_open(path, &r) == MG_OK && r.n == 1, "rewrite");
    mg_st_close(&r);
    CHECK(mg_st_write("/nonexistent_dir_mg/x.safetensors", es, 1, NULL, 0) == MG_ERR_IO &&
              strstr(mg_last_error(), "/nonexistent_dir_mg/x.safetensors") != NULL,
          "write into a missing dir: %s", mg_last_error());
}

static void write_text(const char *name, const char *text) {
    char path[256];
    path_in(path, sizeof path, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_checkpoints(void) {
    mg_checkpoint ck;
    /* an empty directory */
    mg_status s = mg_checkpoint_open(g_dir, &ck);
    CHECK(s == MG_ERR_MISSING && strstr(mg_last_error(), "neither model.safetensors nor"), "empty dir: %s",
          mg_last_error());
    /* two shards and an index */
    const float v[2] = { 1, 2 };
    const int64_t sh[1] = { 2 };
    char p1[256], p2[256];
    path_in(p1, sizeof p1, "model-00001-of-00002.safetensors");
    path_in(p2, sizeof p2, "model-00002-of-00002.safetensors");
    const mg_st_entry e1[2] = { { "a", MG_F32, 1, sh, v }, { "b", MG_F32, 1, sh, v } };
    const mg_st_entry e2[1] = { { "c", MG_F32, 1, sh, v } };
    CHECK(mg_st_write(p1, e1, 2, NULL, 0) == MG_OK && mg_st_write(p2, e2, 1, NULL, 0) == MG_OK, "write shards");
    write_text("model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":24},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
               "\"c\":\"model-00002-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\"}}");
    s = mg_checkpoint_open(g_dir, &ck);
    CHECK(s == MG_OK && ck.n_files == 2, "sharded open: %s", mg_last_error());
    if (s == MG_OK) mg_checkpoint_close(&ck);
    /* the index maps a tensor to a shard that does not hold it */
    write_text("model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00001-of-00002.safetensors\"}}");
    s = mg_checkpoint_open(g_dir, &ck);
    CHECK(s == MG_ERR_MISSING && strstr(mg_last_error(), "maps tensor 'c' to model-00001-of-00002.safetensors"),
          "wrong shard: %s", mg_last_error());
    /* a shard listed but absent */
    write_text("model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"z\":\"model-00003-of-00003.safetensors\"}}");
    s = mg_checkpoint_open(g_dir, &ck);
    CHECK(s == MG_ERR_MISSING && strstr(mg_last_error(), "lists shard model-00003-of-00003.safetensors, which is missing") &&
              strstr(mg_last_error(), "HINT:"),
          "missing shard: %s", mg_last_error());
    /* a shard name that escapes the directory */
    write_text("model.safetensors.index.json", "{\"weight_map\":{\"a\":\"../model-00001-of-00002.safetensors\"}}");
    s = mg_checkpoint_open(g_dir, &ck);
    CHECK(s == MG_ERR_FORMAT && strstr(mg_last_error(), "weight_map['a']"), "path in index: %s", mg_last_error());
    write_text("model.safetensors.index.json", "{\"weight_map\": 3}");
    s = mg_checkpoint_open(g_dir, &ck);
    CHECK(s == MG_ERR_FORMAT && strstr(mg_last_error(), "weight_map"), "bad index: %s", mg_last_error());
    /* a corrupt shard is named in the message */
    write_text("model.safetensors.index.json", "{\"weight_map\":{\"w\":\"overlap.safetensors\"}}");
    s = mg_checkpoint_open(g_dir, &ck);
    CHECK(s == MG_ERR_FORMAT && strstr(mg_last_error(), "lists shard overlap.safetensors") &&
              strstr(mg_last_error(), "overlap"),
          "corrupt shard: %s", mg_last_error());
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/mg_test_st_XXXXXX");
    if (!mkdtemp(g_dir)) { printf("cannot create a temp dir\n"); return 1; }
    test_reference_file();
    test_write_roundtrip();
    test_malformed();
    test_checkpoints();  /* after test_malformed: reuses its overlap.safetensors as a corrupt shard */
    nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return test_finish();
}
