/* `medgem bench` on the tiny golden model (CPU), and its prompt (engine/jobs/bench.h):
 * - the benchmark prompt has the layout of transformers' classify prompt: the sequence of token
 *   kinds (bos, <start_of_turn>, text, <start_of_image>, image ×M, <end_of_image>, text,
 *   <end_of_turn>, text, <start_of_turn>, text) equals that of apply_chat_template's generation-form
 *   ids in tests/golden/tokenizer/prompt_ids.json, with the tiny model's M image tokens, exactly T
 *   ids, and filler ids the tokenizer does not mark special; the 8 head ids are distinct, in range;
 * - `medgem bench --json --iters 1` prints one object with the keys tests/bench/bench_eval_hf.py
 *   reads, consistent numbers (images/s = batch / median seconds), the weight arena about the size
 *   of the fp32 checkpoint, and exit status 0;
 * - bad input: a prompt shorter than the image block, a missing model, a bad option fail with a
 *   message and a non-zero exit status. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "engine/json.h"
#include "engine/jobs/bench.h"
#include "tests/test.h"
#include "tokenizer/prompt.h"

#define MEDGEM "build/medgem "
#define MODEL "tests/golden/tiny"
#define PROMPT_IDS "tests/golden/tokenizer/prompt_ids.json"

enum { K_TEXT, K_BOS, K_SOT, K_EOT, K_BOI, K_EOI, K_IMAGE };

/* The kind of each id, runs of one kind collapsed: kinds[0..*n); returns the image-token count. */
static int kind_runs(const int *ids, int T, const int special[6], int *kinds, int *n) {
    int images = 0;
    *n = 0;
    for (int t = 0; t < T; t++) {
        int k = K_TEXT;
        for (int s = 0; s < 6; s++)
            if (ids[t] == special[s]) k = s + 1;
        images += k == K_IMAGE;
        if (*n == 0 || kinds[*n - 1] != k) kinds[(*n)++] = k;
    }
    return images;
}

static void check_prompt_layout(void) {
    mg_config cfg;
    mg_spm *spm = NULL;
    mg_chat_ids chat;
    mg_json *fx = NULL;
    CHECK(mg_config_load(MODEL, &cfg) == MG_OK, "config: %s", mg_last_error());
    CHECK(mg_spm_load(cfg.tokenizer_path, &spm) == MG_OK, "tokenizer: %s", mg_last_error());
    CHECK(spm && mg_chat_ids_init(&chat, &cfg, spm) == MG_OK, "chat ids: %s", mg_last_error());
    CHECK(mg_json_parse_file(PROMPT_IDS, &fx) == MG_OK, "%s: %s", PROMPT_IDS, mg_last_error());
    if (!spm || !fx) return;
    /* the reference: transformers' generation-form prompt */
    const mg_json *cases = mg_json_get(fx, "cases"), *ref = NULL;
    for (int i = 0; cases && i < cases->n; i++)
        if (!strcmp(mg_json_get_string(&cases->items[i], "name", ""), "generation/apply_chat_template_tokenize"))
            ref = mg_json_get(&cases->items[i], "input_ids");
    CHECK(ref && ref->n > 0, "fixture has generation/apply_chat_template_tokenize input_ids");
    if (!ref) { mg_json_free(fx), mg_spm_free(spm); return; }
    int ref_ids[1024], ref_kinds[1024], n_ref;
    for (int i = 0; i < ref->n && i < 1024; i++) ref_ids[i] = (int)ref->items[i].number;
    const int special[6] = { cfg.bos_token_id, chat.sot, chat.eot, cfg.boi_token_id, cfg.eoi_token_id,
                             cfg.image_token_id };
    const int ref_images = kind_runs(ref_ids, ref->n, special, ref_kinds, &n_ref);

    const int M = cfg.mm_tokens_per_image, Ts[3] = { M + MG_BENCH_TEMPLATE_TOKENS, M + 30, 200 };
    for (int c = 0; c < 3; c++) {
        const int T = Ts[c];
        int32_t ids[200];
        int as_int[200], kinds[200], n_kinds;
        for (int t = 0; t < T; t++) ids[t] = -7; /* poison: every position must be written */
        CHECK(mg_bench_prompt(&cfg, T, chat.sot, chat.eot, 42, ids) == MG_OK, "T=%d: %s", T, mg_last_error());
        int filler_ok = 1;
        for (int t = 0; t < T; t++) {
            as_int[t] = ids[t];
            const int is_template = ids[t] == special[0] || ids[t] == special[1] || ids[t] == special[2] ||
                                    ids[t] == special[3] || ids[t] == special[4] || ids[t] == special[5];
            if (!is_template && (ids[t] < 0 || ids[t] >= mg_spm_vocab_size(spm) || mg_spm_is_special(spm, ids[t])))
                filler_ok = 0;
        }
        const int images = kind_runs(as_int, T, special, kinds, &n_kinds);
        CHECK(images == M && ref_images == M, "T=%d: %d image tokens (transformers: %d), want %d", T, images,
              ref_images, M);
        CHECK(n_kinds == n_ref && !memcmp(kinds, ref_kinds, (size_t)n_ref * sizeof *kinds),
              "T=%d: token-kind layout differs from transformers' classify prompt (%d runs vs %d)", T, n_kinds, n_ref);
        CHECK(filler_ok, "T=%d: filler ids are ordinary pieces of the tokenizer", T);
        CHECK(ids[T - 1] >= 0 && ids[T - 1] != special[5], "T=%d: last position is text", T);
    }
    int32_t dummy[64];
    CHECK(mg_bench_prompt(&cfg, M + MG_BENCH_TEMPLATE_TOKENS - 1, chat.sot, chat.eot, 1, dummy) == MG_ERR_ARG,
          "a prompt one token too short for the template is refused");
    CHECK(strstr(mg_last_error(), "HINT:") != NULL, "the refusal says what to do: %s", mg_last_error());

    int32_t head[MG_BENCH_HEAD_IDS];
    CHECK(mg_bench_head_ids(&cfg, 42, head) == MG_OK, "head ids: %s", mg_last_error());
    int distinct = 1;
    for (int i = 0; i < MG_BENCH_HEAD_IDS; i++) {
        distinct &= head[i] >= 0 && head[i] < cfg.vocab && !mg_spm_is_special(spm, head[i]);
        for (int j = 0; j < i; j++) distinct &= head[i] != head[j];
    }
    CHECK(distinct, "8 distinct ordinary head ids");
    mg_json_free(fx);
    mg_spm_free(spm);
}

static void check_cli_json(void) {
    char *out;
    const int rc = test_run(MEDGEM "bench --model " MODEL " --cpu --batch 3 --tokens 40 --iters 1 --warmup 0 --json", &out);
    CHECK(rc == 0, "medgem bench --json exits 0 (got %d)", rc);
    mg_json *j = NULL;
    CHECK(mg_json_parse(out, strlen(out), "bench output", &j) == MG_OK, "output is one JSON object: %s", out);
    if (j) {
        static const char *const keys[] = { "model", "backend", "device", "dtype", "batch", "tokens", "image_tokens",
                                            "turn_ids", "iters", "warmup", "ms_per_batch", "ms_min", "ms_max",
                                            "images_per_s", "weight_bytes", "activation_bytes", "load_s",
                                            "logits_finite", "ms" };
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) CHECK(mg_json_get(j, keys[i]), "key %s", keys[i]);
        const double ms = mg_json_get_number(j, "ms_per_batch", -1), ips = mg_json_get_number(j, "images_per_s", -1);
        CHECK(mg_json_get_number(j, "batch", 0) == 3 && mg_json_get_number(j, "tokens", 0) == 40 &&
              mg_json_get_number(j, "iters", 0) == 1 && mg_json_get_number(j, "image_tokens", 0) == 16,
              "batch 3, 40 tokens, 1 iteration, 16 image tokens echoed");
        CHECK(ms > 0 && isfinite(ips) && fabs(ips - 3 / (ms * 1e-3)) <= 1e-3 * ips,
              "images/s %.4g = batch / median seconds (%.4g ms)", ips, ms);
        const mg_json *arr = mg_json_get(j, "ms"), *fin = mg_json_get(j, "logits_finite");
        CHECK(arr && arr->type == MG_JSON_ARRAY && arr->n == 1 && fabs(arr->items[0].number - ms) < 1e-3,
              "one timing, the median of one");
        CHECK(fin && fin->type == MG_JSON_BOOL && fin->boolean, "finite logits");
        CHECK(!strcmp(mg_json_get_string(j, "turn_ids", ""), "tokenizer"), "turn ids from tokenizer.model");
        CHECK(!strcmp(mg_json_get_string(j, "dtype", ""), "fp32"), "the CPU backend is fp32");
        struct stat st;
        const double wb = mg_json_get_number(j, "weight_bytes", 0);
        CHECK(stat(MODEL "/model.safetensors", &st) == 0 && wb > 0.9 * (double)st.st_size &&
              wb < 1.05 * (double)st.st_size, "weight arena %.0f bytes ~ the fp32 checkpoint's %lld", wb,
              (long long)st.st_size);
        CHECK(mg_json_get_number(j, "activation_bytes", 0) > 0, "activation bytes reported");
        mg_json_free(j);
    }
    free(out);

    /* the text form names the numbers a reader looks for */
    CHECK(test_run(MEDGEM "bench --model " MODEL " --cpu --batch 2 --tokens 30 --iters 2", &out) == 0, "text form exits 0");
    CHECK(strstr(out, "images/s") && strstr(out, "ms per batch") && strstr(out, "weights"), "text form: %s", out);
    free(out);
}

static void check_bad_input(void) {
    char *out;
    CHECK(test_run(MEDGEM "bench --model " MODEL " --cpu --tokens 20 --iters 1 2>&1", &out) == 1 &&
              strstr(out, "20 tokens") && strstr(out, "HINT:"),
          "a prompt shorter than the image block fails with a hint: %s", out);
    free(out);
    CHECK(test_run(MEDGEM "bench --model tests/no-such-model --cpu --iters 1 2>&1", &out) == 1 &&
              strstr(out, "no-such-model"), "a missing model directory is named: %s", out);
    free(out);
    CHECK(test_run(MEDGEM "bench --model " MODEL " --cpu --batch 0 2>&1", &out) == 2, "--batch 0 is a usage error");
    free(out);
    CHECK(test_run(MEDGEM "bench --model " MODEL " --frobnicate 1 2>&1", &out) == 2 && strstr(out, "frobnicate"),
          "an unknown option is named: %s", out);
    free(out);
}

int main(void) {
    check_prompt_layout();
    check_cli_json();
    check_bad_input();
    return test_finish();
}
