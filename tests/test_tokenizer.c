/* The sentencepiece shim against transformers' GemmaTokenizer on the golden tiny tokenizer
 * (tests/golden/tokenizer/prompt_ids.json "encode" cases: ids, pieces, decoded text with and
 * without special tokens), piece <-> id lookups, and malformed tokenizer.model files. */
#include <stdlib.h>
#include <unistd.h>

#include "engine/config.h"
#include "engine/json.h"
#include "tests/test.h"
#include "tokenizer/prompt.h"
#include "tokenizer/spm.h"

#define GOLDEN "tests/golden/tokenizer/"

static int special(const mg_json *fx, const char *key) {
    return (int)mg_json_get_number(mg_json_get(fx, "special_ids"), key, -1);
}

/* Writes len bytes to a fresh temporary file and returns its path (static buffer). */
static const char *temp_file(const void *data, size_t len) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/mg_test_spm_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len) return NULL;
    close(fd);
    return path;
}

/* A malformed model must fail with MG_ERR_FORMAT, name the file, and give a HINT. */
static void check_malformed(const char *what, const void *data, size_t len) {
    const char *path = temp_file(data, len);
    CHECK(path != NULL, "cannot write a temporary file");
    if (!path) return;
    mg_spm *spm = NULL;
    mg_status st = mg_spm_load(path, &spm);
    CHECK(st == MG_ERR_FORMAT && spm == NULL, "%s: status %s", what, mg_status_name(st));
    CHECK(strstr(mg_last_error(), path) && strstr(mg_last_error(), "HINT"), "%s: message: %s", what, mg_last_error());
    printf("%s -> %s\n", what, mg_last_error());
    mg_spm_free(spm);
    unlink(path);
}

static void test_malformed(void) {
    mg_spm *spm = NULL;
    mg_status st = mg_spm_load("tests/golden/tokenizer/no-such.model", &spm);
    CHECK(st == MG_ERR_IO && spm == NULL && strstr(mg_last_error(), "no-such.model"), "missing file: %s",
          mg_last_error());

    check_malformed("empty file", "", 0);
    check_malformed("text file", "this is not a sentencepiece model\n", 34);
    /* the real model cut in half */
    FILE *f = fopen(GOLDEN "tokenizer.model", "rb");
    char buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    CHECK(n > 1000, "read tokenizer.model");
    check_malformed("truncated model", buf, n / 2);
    /* the real model with its first bytes overwritten */
    memset(buf, 0xff, 16);
    check_malformed("corrupted model", buf, n);
}

static int ids_equal(const int *got, int n, const mg_json *ref) {
    if (!ref || ref->type != MG_JSON_ARRAY || ref->n != n) return 0;
    for (int i = 0; i < n; i++)
        if (got[i] != (int)ref->items[i].number) return 0;
    return 1;
}

int main(void) {
    mg_json *fx = NULL;
    if (mg_json_parse_file(GOLDEN "prompt_ids.json", &fx) != MG_OK) {
        printf("FAIL: %s\n", mg_last_error());
        return 1;
    }
    mg_spm *spm = NULL;
    CHECK(mg_spm_load(GOLDEN "tokenizer.model", &spm) == MG_OK, "load: %s", mg_last_error());
    if (!spm) return test_finish();
    CHECK(mg_spm_vocab_size(spm) == (int)mg_json_get_number(fx, "spm_vocab_size", -1), "vocab size %d",
          mg_spm_vocab_size(spm));

    /* piece <-> id */
    CHECK(mg_spm_piece_to_id(spm, "<start_of_turn>") == special(fx, "start_of_turn"), "<start_of_turn>");
    CHECK(mg_spm_piece_to_id(spm, "<end_of_turn>") == special(fx, "end_of_turn"), "<end_of_turn>");
    CHECK(mg_spm_piece_to_id(spm, "<start_of_image>") == special(fx, "boi"), "<start_of_image>");
    CHECK(mg_spm_piece_to_id(spm, "<unk>") == special(fx, "unk"), "<unk> is a piece");
    CHECK(mg_spm_piece_to_id(spm, "<no_such_piece>") == -1, "unknown piece -> -1");
    CHECK(!strcmp(mg_spm_id_to_piece(spm, special(fx, "bos")), "<bos>"), "id -> <bos>");
    CHECK(mg_spm_id_to_piece(spm, -1) == NULL && mg_spm_id_to_piece(spm, special(fx, "image")) == NULL,
          "ids outside the vocabulary have no piece");
    CHECK(mg_spm_is_special(spm, special(fx, "eos")) && !mg_spm_is_special(spm, special(fx, "newline")),
          "control pieces");

    /* the chat ids the decoder skips, from the fixture's special ids */
    mg_config cfg = { .bos_token_id = special(fx, "bos"), .pad_token_id = special(fx, "pad"),
                      .boi_token_id = special(fx, "boi"), .eoi_token_id = special(fx, "eoi"),
                      .image_token_id = special(fx, "image"), .eos_ids = { special(fx, "eos") }, .n_eos = 1,
                      .mm_tokens_per_image = (int)mg_json_get_number(fx, "mm_tokens_per_image", -1) };
    mg_chat_ids chat;
    CHECK(mg_chat_ids_init(&chat, &cfg, spm) == MG_OK, "chat ids: %s", mg_last_error());

    const mg_json *cases = mg_json_get(fx, "encode");
    CHECK(cases && cases->n >= 10, "encode cases");
    for (int c = 0; cases && c < cases->n; c++) {
        const mg_json *e = &cases->items[c];
        const mg_json *text = mg_json_get(e, "text");
        int *ids = NULL, n = 0;
        CHECK(mg_spm_encode(spm, text->string, text->len, &ids, &n) == MG_OK, "encode: %s", mg_last_error());
        int ok = ids_equal(ids, n, mg_json_get(e, "ids"));
        CHECK(ok, "encode case %d (%s): ids differ from transformers'", c, text->string);
        const mg_json *pieces = mg_json_get(e, "pieces");
        int pieces_ok = pieces && pieces->n == n;
        for (int i = 0; pieces_ok && i < n; i++)
            pieces_ok = !strcmp(mg_spm_id_to_piece(spm, ids[i]), pieces->items[i].string);
        CHECK(pieces_ok, "encode case %d: pieces", c);
        char *dec = NULL, *dec_skip = NULL;
        CHECK(mg_spm_decode(spm, ids, n, false, &dec) == MG_OK, "decode: %s", mg_last_error());
        CHECK(dec && !strcmp(dec, mg_json_get_string(e, "decoded", "?")), "case %d decoded: got '%s'", c, dec);
        CHECK(mg_chat_decode(spm, &chat, ids, n, &dec_skip) == MG_OK, "decode: %s", mg_last_error());
        CHECK(dec_skip && !strcmp(dec_skip, mg_json_get_string(e, "decoded_skip_special", "?")),
              "case %d decoded without special tokens: got '%s'", c, dec_skip);
        printf("%s encode case %d: %d ids\n", ok ? "ok  " : "FAIL", c, n);
        free(ids);
        free(dec);
        free(dec_skip);
    }

    /* an id outside the vocabulary (the HF-added image token) is an error unless skipped */
    int outside[] = { special(fx, "image"), special(fx, "newline") };
    char *t = NULL;
    CHECK(mg_spm_decode(spm, outside, 2, false, &t) == MG_ERR_ARG && t == NULL, "decode of an out-of-vocab id");
    CHECK(mg_spm_decode(spm, outside, 2, true, &t) == MG_OK && t && !strcmp(t, "\n"), "skipped: '%s'", t);
    free(t);

    test_malformed();
    mg_spm_free(spm);
    mg_json_free(fx);
    return test_finish();
}
