/* Weight binding with real tensor names: the tiny random Gemma3ForConditionalGeneration that
 * transformers 5.17 saved (tests/fixtures/config/tiny/, by make_configs.py) under its own
 * save_pretrained spelling (vision_tower.encoder.* without vision_model), its in-memory
 * state_dict names (model.language_model.*, with the tied lm_head.weight), and the Hub / 4.52-4.57
 * spellings obtained from those by adding the vision_model level (spec/model.md §2). Then broken
 * variants written here: each problem must be listed by name in one error. */
#include <ftw.h>
#include <unistd.h>

#include "engine/config.h"
#include "engine/json.h"
#include "model/weights.h"
#include "tests/test.h"

#define TINY "tests/fixtures/config/tiny"
#define MAXN 256

typedef struct {
    char *name[MAXN];
    int ndim[MAXN];
    int64_t shape[MAXN][MG_MAX_DIMS];
    int n;
} name_list;

static char g_dir[64];
static mg_config g_cfg;

static void add_name(name_list *l, const char *name, int ndim, const int64_t *shape) {
    l->name[l->n] = strdup(name);
    l->ndim[l->n] = ndim;
    memcpy(l->shape[l->n], shape, sizeof(int64_t) * (size_t)ndim);
    l->n++;
}

static void free_names(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->name[i]);
    l->n = 0;
}

/* Replaces the first `from` prefix of every name starting with it by `to`. */
static void rename_prefix(name_list *l, const char *from, const char *to) {
    for (int i = 0; i < l->n; i++) {
        size_t n = strlen(from);
        if (strncmp(l->name[i], from, n)) continue;
        char *nn = malloc(strlen(to) + strlen(l->name[i] + n) + 1);
        sprintf(nn, "%s%s", to, l->name[i] + n);
        free(l->name[i]);
        l->name[i] = nn;
    }
}

static int find_name(const name_list *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->name[i], name)) return i;
    return -1;
}

static void drop_name(name_list *l, const char *name) {
    int i = find_name(l, name);
    if (i < 0) return;
    free(l->name[i]);
    l->n--;
    l->name[i] = l->name[l->n];
    l->ndim[i] = l->ndim[l->n];
    memcpy(l->shape[i], l->shape[l->n], sizeof l->shape[i]);
}

/* Writes the names as a zero-filled bf16 model.safetensors in the temp dir and binds it. */
static mg_status bind_names(const name_list *l, mg_weights *w) {
    mg_st_entry *e = calloc((size_t)l->n, sizeof *e);
    static uint16_t zeros[1 << 16];
    for (int i = 0; i < l->n; i++) e[i] = (mg_st_entry){ l->name[i], MG_BF16, l->ndim[i], l->shape[i], zeros };
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", g_dir);
    mg_status s = mg_st_write(path, e, l->n, NULL, 0);
    free(e);
    if (s != MG_OK) return s;
    mg_checkpoint ck;
    MG_TRY(mg_checkpoint_open(g_dir, &ck));
    s = mg_weights_bind(&ck, &g_cfg, w);
    mg_checkpoint_close(&ck);
    return s;
}

static void expect_ok(const char *what, const name_list *l) {
    mg_weights w;
    mg_status s = bind_names(l, &w);
    CHECK(s == MG_OK, "%s binds: %s", what, mg_last_error());
    if (s == MG_OK) mg_weights_free(&w);
}

/* Binding must fail with `code` and every needle in the message. */
static void expect_bad(const char *what, const name_list *l, mg_status code, const char *const *needles, int n) {
    mg_weights w;
    mg_status s = bind_names(l, &w);
    CHECK(s == code, "%s: status %s, want %s: %s", what, mg_status_name(s), mg_status_name(code), mg_last_error());
    for (int i = 0; i < n; i++)
        CHECK(strstr(mg_last_error(), needles[i]) != NULL, "%s: message lacks '%s':\n%s", what, needles[i],
              mg_last_error());
    CHECK(strstr(mg_last_error(), "HINT:") != NULL, "%s: no HINT", what);
    CHECK(w.text == NULL && w.vision == NULL, "%s: nothing left allocated", what);
}

static void load_saved_names(const mg_checkpoint *ck, name_list *l) {
    for (int i = 0; i < ck->files[0].n; i++) {
        const mg_st_tensor *t = &ck->files[0].tensors[i];
        add_name(l, t->name, t->ndim, t->shape);
    }
}

static void load_state_dict_names(name_list *l) {
    mg_json *j = NULL;
    CHECK(mg_json_parse_file(TINY "/state_dict_names.json", &j) == MG_OK, "state_dict_names.json: %s", mg_last_error());
    if (!j) return;
    for (int i = 0; i < j->n; i++) {
        int64_t shape[MG_MAX_DIMS];
        for (int d = 0; d < j->items[i].n; d++) shape[d] = (int64_t)j->items[i].items[d].number;
        add_name(l, j->items[i].key, j->items[i].n, shape);
    }
    mg_json_free(j);
}

static void test_parse_names(void) {
    mg_component c;
    int layer;
    char m[128];
    CHECK(mg_parse_tensor_name("language_model.model.layers.33.mlp.down_proj.weight", &c, &layer, m, sizeof m) &&
              c == MG_COMP_TEXT && layer == 33 && !strcmp(m, "mlp.down_proj.weight"),
          "hub text");
    CHECK(mg_parse_tensor_name("vision_tower.vision_model.encoder.layers.26.self_attn.out_proj.bias", &c, &layer, m,
                               sizeof m) && c == MG_COMP_VISION && layer == 26 && !strcmp(m, "self_attn.out_proj.bias"),
          "hub vision");
    CHECK(mg_parse_tensor_name("model.vision_tower.embeddings.patch_embedding.weight", &c, &layer, m, sizeof m) &&
              c == MG_COMP_VISION && layer == -1 && !strcmp(m, "embeddings.patch_embedding.weight"),
          "5.x in-memory vision");
    CHECK(mg_parse_tensor_name("model.multi_modal_projector.mm_input_projection_weight", &c, &layer, m, sizeof m) &&
              c == MG_COMP_PROJECTOR && layer == -1 && !strcmp(m, "mm_input_projection_weight"),
          "projector");
    /* PEFT adapter keys (5.17: base_model.model. + the in-memory name) */
    CHECK(mg_parse_tensor_name("base_model.model.model.language_model.layers.3.self_attn.q_proj.lora_A.weight", &c,
                               &layer, m, sizeof m) &&
              c == MG_COMP_TEXT && layer == 3 && !strcmp(m, "self_attn.q_proj.lora_A.weight"),
          "peft key");
    CHECK(mg_parse_tensor_name("language_model.lm_head.weight", &c, &layer, m, sizeof m) && layer == -1 &&
              !strcmp(m, "lm_head.weight"),
          "4.50 lm_head");
    CHECK(!mg_parse_tensor_name("model.layers.0.mlp.up_proj.weight", &c, &layer, m, sizeof m), "a Llama name");
    CHECK(!mg_parse_tensor_name("language_model.model.layers.x.mlp.up_proj.weight", &c, &layer, m, sizeof m),
          "non-numeric layer");
    CHECK(!mg_parse_tensor_name("language_model.model.layers.1", &c, &layer, m, sizeof m), "no module");
    CHECK(!mg_parse_tensor_name("language_model.model.embed_tokens.weight", &c, &layer, m, 8), "module too long");
}

static void test_spellings(const mg_checkpoint *ck) {
    mg_weights w;
    mg_status s = mg_weights_bind(ck, &g_cfg, &w);
    CHECK(s == MG_OK, "5.17 save_pretrained names bind: %s", mg_last_error());
    if (s == MG_OK) {
        CHECK(w.embed->shape[0] == 128 && w.embed->shape[1] == 32 &&
                  !strcmp(w.embed->name, "language_model.model.embed_tokens.weight"),
              "embed");
        CHECK(!strcmp(w.text[2].q_w->name, "language_model.model.layers.2.self_attn.q_proj.weight") &&
                  w.text[2].k_w->shape[0] == 16 && w.text[2].down_w->shape[1] == 64,
              "text layer 2");
        CHECK(!strcmp(w.vision[1].fc2_b->name, "vision_tower.encoder.layers.1.mlp.fc2.bias") &&
                  w.vision[1].fc1_w->shape[0] == 48,
              "vision layer 1");
        CHECK(w.patch_w->ndim == 4 && w.patch_w->shape[3] == 7 && w.pos_emb->shape[0] == 16, "patch/pos");
        CHECK(w.mm_proj->shape[0] == 24 && w.mm_proj->shape[1] == 32 && w.final_norm->shape[0] == 32 &&
                  w.post_ln_b && w.mm_norm,
              "projector, norms");
        mg_weights_free(&w);
    }

    name_list l = { 0 };
    load_saved_names(ck, &l);
    rename_prefix(&l, "vision_tower.", "vision_tower.vision_model.");
    expect_ok("Hub names (vision_tower.vision_model.*)", &l);
    free_names(&l);

    load_state_dict_names(&l);
    CHECK(find_name(&l, "lm_head.weight") >= 0 && find_name(&l, "model.language_model.norm.weight") >= 0,
          "state_dict has the tied lm_head and model.language_model.*");
    expect_ok("5.17 in-memory names (+ tied lm_head)", &l);
    rename_prefix(&l, "model.vision_tower.", "model.vision_tower.vision_model.");
    expect_ok("4.52-4.57 in-memory names", &l);
    free_names(&l);
}

static void test_problems(const mg_checkpoint *ck) {
    name_list l = { 0 };
    load_saved_names(ck, &l);
    const int64_t bad_q[2] = { 32, 16 }, head[2] = { 128, 32 }, bad_head[2] = { 127, 32 }, v[1] = { 24 };

    drop_name(&l, "language_model.model.layers.1.mlp.up_proj.weight");
    drop_name(&l, "vision_tower.post_layernorm.bias");
    const char *missing[] = { "2 missing", "missing     language_model.model.layers.1.mlp.up_proj.weight (64, 32)",
                              "missing     vision_tower.vision_model.post_layernorm.bias (24)" };
    expect_bad("missing", &l, MG_ERR_MISSING, missing, 3);
    free_names(&l);

    load_saved_names(ck, &l);
    add_name(&l, "model.language_model.layers.0.input_layernorm.weight", 1, head + 1);
    const char *dup[] = { "1 duplicated", "language_model.model.layers.0.input_layernorm.weight and "
                                          "model.language_model.layers.0.input_layernorm.weight" };
    expect_bad("duplicated", &l, MG_ERR_FORMAT, dup, 2);
    free_names(&l);

    load_saved_names(ck, &l);
    add_name(&l, "language_model.model.layers.0.self_attn.rotary.weight", 1, v);
    add_name(&l, "foo.bar", 1, v);
    add_name(&l, "language_model.model.layers.7.input_layernorm.weight", 1, head + 1);  /* layer past L */
    const char *unexp[] = { "3 unexpected", "unexpected  language_model.model.layers.0.self_attn.rotary.weight (24)",
                            "unexpected  foo.bar (24)", "layers.7.input_layernorm.weight" };
    expect_bad("unexpected", &l, MG_ERR_FORMAT, unexp, 4);
    free_names(&l);

    load_saved_names(ck, &l);
    int q = find_name(&l, "language_model.model.layers.0.self_attn.q_proj.weight");
    memcpy(l.shape[q], bad_q, sizeof bad_q);
    add_name(&l, "lm_head.weight", 2, bad_head);
    const char *shape[] = { "2 wrong shape",
                            "wrong shape language_model.model.layers.0.self_attn.q_proj.weight (32, 16), want (32, 32)",
                            "wrong shape lm_head.weight (127, 32), want (128, 32) (tied head)" };
    expect_bad("wrong shape", &l, MG_ERR_SHAPE, shape, 3);
    free_names(&l);

    /* lm_head of the right shape is accepted and ignored (tied to embed_tokens) */
    load_saved_names(ck, &l);
    add_name(&l, "lm_head.weight", 2, head);
    expect_ok("tied lm_head of shape (V, C)", &l);

    /* SigLIP pooling-head tensors: skipped when vision_use_head, unexpected otherwise */
    add_name(&l, "vision_tower.head.probe", 1, v);
    const char *vh[] = { "unexpected  vision_tower.head.probe" };
    expect_bad("vision head with vision_use_head false", &l, MG_ERR_FORMAT, vh, 1);
    g_cfg.v_has_head = true;
    expect_ok("vision head with vision_use_head true", &l);
    g_cfg.v_has_head = false;
    free_names(&l);

    /* a long list is capped at MG_REPORT_LINES (12) lines */
    load_saved_names(ck, &l);
    for (int i = l.n - 1; i >= 0; i--)
        if (strstr(l.name[i], "language_model.model.layers.")) drop_name(&l, l.name[i]);
    const char *many[] = { "39 missing", "... and 27 more" };
    expect_bad("many missing", &l, MG_ERR_MISSING, many, 2);
    free_names(&l);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

int main(void) {
    test_parse_names();
    mg_checkpoint ck;
    CHECK(mg_config_load(TINY, &g_cfg) == MG_OK, "tiny config: %s", mg_last_error());
    mg_status s = mg_checkpoint_open(TINY, &ck);
    CHECK(s == MG_OK && ck.n_files == 1 && ck.files[0].n == 80, "tiny checkpoint: %s", mg_last_error());
    snprintf(g_dir, sizeof g_dir, "/tmp/mg_test_w_XXXXXX");
    if (s == MG_OK && mkdtemp(g_dir)) {
        test_spellings(&ck);
        test_problems(&ck);
        nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    }
    if (s == MG_OK) mg_checkpoint_close(&ck);
    return test_finish();
}
