/* The chat-template prompt builder against Gemma3Processor's output on the golden tiny tokenizer
 * (tests/golden/tokenizer/prompt_ids.json "cases"): input_ids and token_type_ids of the seed
 * prompt in generation and training forms, single BOS and the guide's double BOS; the labels of
 * both loss modes; the default prompt text; the context-length and bad-input errors. */
#include <stdlib.h>
#include <unistd.h>

#include "engine/config.h"
#include "engine/json.h"
#include "tests/test.h"
#include "tokenizer/prompt.h"
#include "tokenizer/spm.h"

#define GOLDEN "tests/golden/tokenizer/"

/* The seed's class names (spec/seed-pipeline.md step 3), as the data side passes them. */
static const char *const CLASSES[] = {
    "benign_adenosis",           "benign_fibroadenoma",         "benign_phyllodes_tumor",
    "benign_tubular_adenoma",    "malignant_ductal_carcinoma",  "malignant_lobular_carcinoma",
    "malignant_mucinous_carcinoma", "malignant_papillary_carcinoma",
};

static const mg_json *fx_special;
static int special(const char *key) { return (int)mg_json_get_number(fx_special, key, -1); }

static int ints_equal(const int *got, int n, const mg_json *ref, int *first_diff) {
    *first_diff = -1;
    if (!ref || ref->type != MG_JSON_ARRAY) return 0;
    for (int i = 0; i < n || i < ref->n; i++)
        if (i >= n || i >= ref->n || got[i] != (int)ref->items[i].number) {
            *first_diff = i;
            return 0;
        }
    return 1;
}

/* Which fixture cases medgem reproduces, and how. The two left out are nobody's path: the guide
 * strips only its training text, and processor(text) without strip is only its eval path. */
static const struct {
    const char *name;
    bool guide_path;
} REPRODUCED[] = {
    { "generation/apply_chat_template_tokenize", false }, { "generation/processor_no_special", false },
    { "generation/processor_default", true },             { "training/apply_chat_template_tokenize", false },
    { "training/processor_no_special", false },           { "training/guide_stripped", true },
};

/* Labels, restated from spec/model.md §8.2 on the fixture's ids: seed = every id but pad, boi and
 * image soft tokens; answer = the answer tokens (after the last "\n" before the final
 * <end_of_turn>) and that <end_of_turn>. */
static void check_labels(const char *name, const mg_prompt *p, mg_loss_on loss_on, bool training) {
    int last_eot = -1, answer_start = p->n;
    for (int i = 0; i < p->n; i++)
        if (p->ids[i] == special("end_of_turn")) last_eot = i;
    for (int i = last_eot - 1; training && i >= 0; i--)
        if (p->ids[i] == special("newline")) { answer_start = i + 1; break; }
    int bad = -1;
    for (int i = 0; i < p->n && bad < 0; i++) {
        int want;
        if (loss_on == MG_LOSS_ON_SEED)
            want = (p->ids[i] == special("pad") || p->ids[i] == special("boi") || p->ids[i] == special("image"))
                       ? MG_IGNORE_LABEL : p->ids[i];
        else
            want = training && i >= answer_start && i <= last_eot ? p->ids[i] : MG_IGNORE_LABEL;
        if (p->labels[i] != want) bad = i;
    }
    CHECK(bad < 0, "%s labels (%s): position %d is %d", name, loss_on == MG_LOSS_ON_SEED ? "seed" : "answer", bad,
          bad >= 0 ? p->labels[bad] : 0);
    if (loss_on == MG_LOSS_ON_ANSWER && training)
        CHECK(last_eot - answer_start == 1, "%s: one answer token ('4') then <end_of_turn>", name);
}

static void test_cases(const mg_spm *spm, const mg_chat_ids *chat, const mg_json *fx, const char *seed_text) {
    const mg_json *cases = mg_json_get(fx, "cases");
    int reproduced = 0;
    for (int c = 0; cases && c < cases->n; c++) {
        const mg_json *k = &cases->items[c];
        const char *name = mg_json_get_string(k, "name", "?");
        int which = -1;
        for (size_t r = 0; r < sizeof REPRODUCED / sizeof REPRODUCED[0]; r++)
            if (!strcmp(name, REPRODUCED[r].name)) which = (int)r;
        if (which < 0) {
            printf("skip %s (not a path medgem takes)\n", name);
            continue;
        }
        reproduced++;
        const mg_json *answer = mg_json_get(k, "answer");
        const bool training = answer && answer->type == MG_JSON_STRING;
        for (int mode = 0; mode < 2; mode++) {
            mg_prompt_opts o = { .text = seed_text, .answer = training ? answer->string : NULL,
                                 .guide_path = REPRODUCED[which].guide_path,
                                 .loss_on = mode ? MG_LOSS_ON_ANSWER : MG_LOSS_ON_SEED, .max_tokens = 8192 };
            mg_prompt p;
            if (mg_prompt_build(spm, chat, &o, &p) != MG_OK) {
                CHECK(0, "%s: %s", name, mg_last_error());
                continue;
            }
            int d1, d2;
            int ok_ids = ints_equal(p.ids, p.n, mg_json_get(k, "input_ids"), &d1);
            int ok_tt = ints_equal(p.token_type_ids, p.n, mg_json_get(k, "token_type_ids"), &d2);
            CHECK(ok_ids, "%s input_ids differ at %d (of %d)", name, d1, p.n);
            CHECK(ok_tt, "%s token_type_ids differ at %d", name, d2);
            if (mode == 0)
                printf("%s %s: %d ids, %s, first ids %d %d %d, last %d\n", ok_ids && ok_tt ? "ok  " : "FAIL", name,
                       p.n, REPRODUCED[which].guide_path ? "guide path" : "single BOS", p.ids[0], p.ids[1], p.ids[2],
                       p.ids[p.n - 1]);
            check_labels(name, &p, o.loss_on, training);
            mg_prompt_free(&p);
        }
    }
    CHECK(reproduced == (int)(sizeof REPRODUCED / sizeof REPRODUCED[0]), "found %d of the reproduced cases", reproduced);
}

static void test_errors(const mg_spm *spm, const mg_chat_ids *chat, const char *seed_text) {
    mg_prompt p;
    mg_prompt_opts o = { .text = seed_text, .max_tokens = 8192 };
    CHECK(mg_prompt_build(spm, chat, &o, &p) == MG_OK, "build: %s", mg_last_error());
    const int n = p.n;
    mg_prompt_free(&p);

    /* exactly the context fits; one token less is an error naming both numbers */
    o.max_tokens = n;
    CHECK(mg_prompt_build(spm, chat, &o, &p) == MG_OK && p.n == n, "prompt of exactly max_tokens");
    mg_prompt_free(&p);
    o.max_tokens = n - 1;
    mg_status st = mg_prompt_build(spm, chat, &o, &p);
    char want[64];
    snprintf(want, sizeof want, "%d tokens", n);
    CHECK(st == MG_ERR_ARG && p.ids == NULL && strstr(mg_last_error(), want) && strstr(mg_last_error(), "HINT"),
          "too long: %s", mg_last_error());
    printf("too long -> %s\n", mg_last_error());

    /* surrounding whitespace is trimmed as the template's |trim does */
    char padded[4096];
    snprintf(padded, sizeof padded, " \n\t%s\n\n  ", seed_text);
    mg_prompt q;
    o.max_tokens = 8192;
    o.text = padded;
    CHECK(mg_prompt_build(spm, chat, &o, &q) == MG_OK && q.n == n, "trimmed prompt has %d ids, want %d", q.n, n);
    mg_prompt_free(&q);

    o.text = "caf\xc3 au lait";
    CHECK(mg_prompt_build(spm, chat, &o, &q) == MG_ERR_ARG && strstr(mg_last_error(), "UTF-8"), "invalid UTF-8: %s",
          mg_last_error());

    /* a config and tokenizer that disagree on <start_of_image> */
    mg_config cfg = { .boi_token_id = special("eoi"), .eoi_token_id = special("eoi"), .mm_tokens_per_image = 16 };
    mg_chat_ids bad;
    CHECK(mg_chat_ids_init(&bad, &cfg, spm) == MG_ERR_FORMAT && strstr(mg_last_error(), "boi_token_id"),
          "mismatched boi id: %s", mg_last_error());

    /* prompt files */
    char path[] = "/tmp/mg_test_prompt_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, seed_text, strlen(seed_text)) == (ssize_t)strlen(seed_text), "write prompt file");
    if (fd >= 0) close(fd);
    char *text = NULL;
    CHECK(mg_prompt_read_file(path, &text) == MG_OK && text && !strcmp(text, seed_text), "read prompt file");
    free(text);
    unlink(path);
    CHECK(mg_prompt_read_file(path, &text) == MG_ERR_IO && strstr(mg_last_error(), path), "missing prompt file: %s",
          mg_last_error());
    CHECK(mg_prompt_default_text(CLASSES, 11, &text) == MG_ERR_ARG && text == NULL, "11 classes");
}

int main(void) {
    mg_json *fx = NULL;
    if (mg_json_parse_file(GOLDEN "prompt_ids.json", &fx) != MG_OK) {
        printf("FAIL: %s\n", mg_last_error());
        return 1;
    }
    fx_special = mg_json_get(fx, "special_ids");
    mg_spm *spm = NULL;
    CHECK(mg_spm_load(GOLDEN "tokenizer.model", &spm) == MG_OK, "load: %s", mg_last_error());
    if (!spm) return test_finish();

    /* ids from the "config" (the fixture's special ids); turn markers from the tokenizer */
    mg_config cfg = { .bos_token_id = special("bos"), .pad_token_id = special("pad"), .boi_token_id = special("boi"),
                      .eoi_token_id = special("eoi"), .image_token_id = special("image"),
                      .eos_ids = { special("eos") }, .n_eos = 1,
                      .mm_tokens_per_image = (int)mg_json_get_number(fx, "mm_tokens_per_image", -1) };
    mg_chat_ids chat;
    CHECK(mg_chat_ids_init(&chat, &cfg, spm) == MG_OK, "chat ids: %s", mg_last_error());
    CHECK(chat.sot == special("start_of_turn") && chat.eot == special("end_of_turn"), "turn ids %d %d", chat.sot,
          chat.eot);

    /* the default prompt, built from the class names, is the guide's text */
    char *seed_text = NULL;
    CHECK(mg_prompt_default_text(CLASSES, 8, &seed_text) == MG_OK, "default text");
    CHECK(seed_text && !strcmp(seed_text, mg_json_get_string(fx, "seed_prompt", "?")), "default text differs: %s",
          seed_text);

    if (seed_text) {
        test_cases(spm, &chat, fx, seed_text);
        test_errors(spm, &chat, seed_text);
    }
    free(seed_text);
    mg_spm_free(spm);
    mg_json_free(fx);
    return test_finish();
}
