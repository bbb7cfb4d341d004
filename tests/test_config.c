/* config.json parsing against configs serialised by transformers 5.17 (tests/fixtures/config/,
 * made by make_configs.py): the 5.x form, its hand conversion to the 4.5x form and the sparse Hub
 * form must all give the MedGemma-4B numbers of spec/model.md §1; Gemma3Config() must give
 * transformers' defaults; unsupported settings must be refused with the key named. The
 * parameter counts of the 4B config must equal the published ones (spec/model.md §1). */
#include <ftw.h>
#include <unistd.h>

#include "engine/config.h"
#include "model/weights.h"
#include "tests/test.h"

#define FIX "tests/fixtures/config/"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { printf("cannot open %s (run the tests from the repository root)\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = calloc((size_t)n + 1, 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { printf("cannot read %s\n", path); exit(1); }
    fclose(f);
    return buf;
}

static mg_status parse_file(const char *name, const char *gen, mg_config *c) {
    char *text = slurp(name);
    char *gtext = gen ? slurp(gen) : NULL;
    mg_status s = mg_config_parse(text, gtext, name, c);
    free(text);
    free(gtext);
    return s;
}

static void check_4b(const char *what, const mg_config *c) {
    CHECK(c->hidden == 2560 && c->n_layers == 34 && c->n_heads == 8 && c->n_kv_heads == 4 && c->head_dim == 256,
          "%s: text dims %d %d %d %d %d", what, c->hidden, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim);
    CHECK(c->intermediate == 10240 && c->vocab == 262208 && c->sliding_window == 1024, "%s: F V window", what);
    CHECK(c->rms_eps == 1e-6f && c->query_pre_attn_scalar == 256.0f, "%s: eps, query scalar", what);
    CHECK(c->rope_theta_global == 1e6f && c->rope_factor_global == 8.0f && c->rope_theta_local == 1e4f &&
              c->rope_factor_local == 1.0f,
          "%s: rope %g/%g %g/%g", what, c->rope_theta_global, c->rope_factor_global, c->rope_theta_local,
          c->rope_factor_local);
    int n_global = 0, ok = 1;
    for (int i = 0; i < c->n_layers; i++) {
        n_global += c->layer_is_global[i];
        ok &= c->layer_is_global[i] == (i == 5 || i == 11 || i == 17 || i == 23 || i == 29);
    }
    CHECK(ok && n_global == 5, "%s: global layers must be {5,11,17,23,29}", what);
    CHECK(c->v_hidden == 1152 && c->v_layers == 27 && c->v_heads == 16 && c->v_head_dim == 72 &&
              c->v_intermediate == 4304 && c->image_size == 896 && c->patch_size == 14 && c->v_eps == 1e-6f &&
              !c->v_has_head,
          "%s: vision dims", what);
    CHECK(c->mm_tokens_per_image == 256 && c->image_token_id == 262144 && c->boi_token_id == 255999 &&
              c->eoi_token_id == 256000 && c->pad_token_id == 0 && c->bos_token_id == 2,
          "%s: special ids", what);
    CHECK(c->n_eos == 2 && c->eos_ids[0] == 1 && c->eos_ids[1] == 106, "%s: eos [1, 106], got %d ids", what, c->n_eos);
}

static void test_forms(void) {
    mg_config c5, c45, hub, gen;
    CHECK(parse_file(FIX "medgemma4b_5x.json", NULL, &c5) == MG_OK, "5.x form: %s", mg_last_error());
    CHECK(parse_file(FIX "medgemma4b_45x.json", NULL, &c45) == MG_OK, "4.5x form: %s", mg_last_error());
    CHECK(parse_file(FIX "medgemma4b_hub.json", NULL, &hub) == MG_OK, "Hub form: %s", mg_last_error());
    CHECK(parse_file(FIX "medgemma4b_hub.json", FIX "generation_config.json", &gen) == MG_OK, "with gen: %s",
          mg_last_error());
    check_4b("5.x", &c5);
    check_4b("4.5x", &c45);
    check_4b("hub", &hub);
    check_4b("hub + generation_config", &gen);
    CHECK(!memcmp(&c5, &c45, sizeof c5) && !memcmp(&c5, &hub, sizeof c5), "the three forms parse identically");

    /* transformers' own defaults (Gemma3Config()) pair 256 soft tokens with a 14x14 patch grid,
     * which the projector cannot pool (kernel 14 // 16 = 0): refused. With 196 = 14^2 tokens they
     * parse, and must equal what an empty config gives (every key absent). */
    mg_config d, e;
    CHECK(parse_file(FIX "gemma3_default_5x.json", NULL, &d) == MG_ERR_FORMAT &&
              strstr(mg_last_error(), "mm_tokens_per_image 256") && strstr(mg_last_error(), "14-patch"),
          "Gemma3Config() refused: %s", mg_last_error());
    char *text = slurp(FIX "gemma3_default_5x.json");
    char *mm = strstr(text, "\"mm_tokens_per_image\": 256");
    CHECK(mm != NULL, "fixture has mm_tokens_per_image");
    if (mm) memcpy(mm + strlen("\"mm_tokens_per_image\": "), "196", 3);
    CHECK(mg_config_parse(text, NULL, "defaults", &d) == MG_OK, "defaults: %s", mg_last_error());
    free(text);
    CHECK(d.hidden == 2304 && d.n_layers == 26 && d.intermediate == 9216 && d.sliding_window == 4096 &&
              d.rope_factor_global == 1.0f && d.rope_theta_global == 1e6f && d.rope_theta_local == 1e4f,
          "default text");
    CHECK(d.v_hidden == 768 && d.v_layers == 12 && d.v_heads == 12 && d.v_head_dim == 64 && d.image_size == 224 &&
              d.patch_size == 16 && d.v_intermediate == 3072 && d.v_has_head,
          "default vision");
    CHECK(d.n_eos == 1 && d.eos_ids[0] == 1, "eos from text_config");
    CHECK(d.layer_is_global[5] && d.layer_is_global[23] && !d.layer_is_global[25] && !d.layer_is_global[0],
          "default pattern");
    CHECK(mg_config_parse("{\"mm_tokens_per_image\": 196}", NULL, "empty", &e) == MG_OK, "empty config: %s",
          mg_last_error());
    CHECK(!memcmp(&d, &e, sizeof d), "absent keys take Gemma3Config()'s values");
    /* generation_config eos as a single int overrides config.json's list */
    CHECK(mg_config_parse("{\"mm_tokens_per_image\": 196, \"eos_token_id\": [1, 106]}", "{\"eos_token_id\": 106}", "x", &e) == MG_OK &&
              e.n_eos == 1 && e.eos_ids[0] == 106,
          "gen eos int");
}

static void test_load_dir(void) {
    mg_config c;
    mg_status s = mg_config_load(FIX "tiny", &c);
    CHECK(s == MG_OK, "load tiny: %s", mg_last_error());
    CHECK(c.n_layers == 3 && !c.layer_is_global[0] && !c.layer_is_global[1] && c.layer_is_global[2], "tiny layers");
    CHECK(c.head_dim == 16 && c.v_head_dim == 12 && c.mm_tokens_per_image == 4 && c.image_token_id == 127, "tiny dims");
    CHECK(!strcmp(c.dir, FIX "tiny") && c.tokenizer_path[0] == '\0', "dir set, no tokenizer.model");
    CHECK(c.n_eos == 2 && c.eos_ids[1] == 106, "tiny eos from generation_config.json");

    s = mg_config_load("/nonexistent_mg_dir", &c);
    CHECK(s == MG_ERR_MISSING && strstr(mg_last_error(), "/nonexistent_mg_dir/config.json") &&
              strstr(mg_last_error(), "HINT:"),
          "missing dir: %s", mg_last_error());

    char dir[] = "/tmp/mg_test_cfg_XXXXXX", path[128];
    if (!mkdtemp(dir)) return;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"mm_tokens_per_image\": 196}", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    f = fopen(path, "w");
    fclose(f);
    CHECK(mg_config_load(dir, &c) == MG_OK && !strcmp(c.tokenizer_path, path), "tokenizer path: '%s'",
          c.tokenizer_path);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
}

/* Each config must be refused with `code` and a message containing `needle`. */
static void expect_bad(const char *text, mg_status code, const char *needle) {
    mg_config c;
    mg_status s = mg_config_parse(text, NULL, "cfg.json", &c);
    CHECK(s == code && strstr(mg_last_error(), needle) && strstr(mg_last_error(), "cfg.json") &&
              strstr(mg_last_error(), "HINT:"),
          "%s -> %s: %s", text, mg_status_name(s), mg_last_error());
}

static void test_rejects(void) {
    expect_bad("{\"text_config\": {\"attn_logit_softcapping\": 50.0}}", MG_ERR_UNSUPPORTED, "attn_logit_softcapping");
    expect_bad("{\"text_config\": {\"hidden_activation\": \"gelu\"}}", MG_ERR_UNSUPPORTED, "hidden_activation");
    expect_bad("{\"vision_config\": {\"hidden_act\": \"relu\"}}", MG_ERR_UNSUPPORTED, "vision_config.hidden_act");
    expect_bad("{\"text_config\": {\"attention_bias\": true}}", MG_ERR_UNSUPPORTED, "attention_bias");
    expect_bad("{\"model_type\": \"gemma3_text\"}", MG_ERR_UNSUPPORTED, "model_type");
    expect_bad("{\"text_config\": {\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 8}}}", MG_ERR_UNSUPPORTED,
               "rope_type \"yarn\"");
    expect_bad("{\"text_config\": {\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"linear\"}, "
               "\"sliding_attention\": {}}}}", MG_ERR_FORMAT, "needs a factor");
    expect_bad("{\"text_config\": {\"num_hidden_layers\": 2, \"layer_types\": [\"full_attention\"]}}", MG_ERR_FORMAT,
               "layer_types must list 2");
    expect_bad("{\"text_config\": {\"num_hidden_layers\": 1, \"layer_types\": [\"chunked_attention\"]}}",
               MG_ERR_UNSUPPORTED, "layer_types[0]");
    expect_bad("{\"text_config\": {\"num_hidden_layers\": \"34\"}}", MG_ERR_FORMAT, "text_config.num_hidden_layers");
    expect_bad("{\"text_config\": {\"num_attention_heads\": 6, \"num_key_value_heads\": 4}}", MG_ERR_FORMAT,
               "not a multiple");
    expect_bad("{\"text_config\": {\"num_hidden_layers\": 300}}", MG_ERR_UNSUPPORTED, "300 text layers");
    expect_bad("{\"vision_config\": {\"image_size\": 900, \"patch_size\": 14}}", MG_ERR_FORMAT, "image_size 900");
    expect_bad("{\"mm_tokens_per_image\": 200}", MG_ERR_FORMAT, "mm_tokens_per_image 200");
    expect_bad("{\"vision_config\": {\"vision_use_head\": \"no\"}}", MG_ERR_FORMAT, "vision_use_head");
    expect_bad("{\"mm_tokens_per_image\": 196, \"eos_token_id\": [1, 999999]}", MG_ERR_FORMAT, "eos_token_id");
    expect_bad("{\"mm_tokens_per_image\": 196, \"text_config\": {\"vocab_size\": 1000}}", MG_ERR_FORMAT, "image_token_index 262144 is outside");
    expect_bad("{\"text_config\": [1]}", MG_ERR_FORMAT, "must be JSON objects");
    expect_bad("{\"text_config\": ", MG_ERR_FORMAT, "invalid JSON");
    expect_bad("{\"text_config\": {\"sliding_window\": null}}", MG_ERR_FORMAT, "sliding_window");
}

static void test_param_counts(void) {
    mg_config c;
    CHECK(parse_file(FIX "medgemma4b_hub.json", NULL, &c) == MG_OK, "hub: %s", mg_last_error());
    mg_param_count n;
    mg_param_counts(&c, &n);
    /* spec/model.md §1 */
    CHECK(n.text == 3880263168LL, "text params %lld", (long long)n.text);
    CHECK(n.vision == 416866032LL, "vision params %lld", (long long)n.vision);
    CHECK(n.projector == 2950272LL, "projector params %lld", (long long)n.projector);
    CHECK(n.total == 4300079472LL, "total params %lld", (long long)n.total);
}

int main(void) {
    test_forms();
    test_load_dir();
    test_rejects();
    test_param_counts();
    return test_finish();
}
