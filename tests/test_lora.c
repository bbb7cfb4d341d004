/* LoRA adapters against PEFT (tests/golden/README.md, "LoRA"):
 * 1. the tiny model with tests/golden/lora_adapter merged gives PEFT's logits (fp32 eager,
 *    unmerged adapter, tests/golden/lora_fp32.safetensors) within 1e-4 of their max |value|, and
 *    its loss on the fixture's labels; without the merge the logits are far off (so the test
 *    proves the merge);
 * 2. save -> load round trip is exact, and the saved keys and target_modules are PEFT's (the saved
 *    adapter stays in build/lora_saved for tests/golden/check_adapter.py);
 * 3. transformers 4.57 key spelling (vision_model level) loads to the same adapter;
 * 4. bad adapters (wrong shape, missing B, unknown module, use_dora, ...) fail with one clear
 *    error naming every bad key; rank_pattern/alpha_pattern are honoured. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/json.h"
#include "model/lora.h"
#include "tests/test.h"

#define MODEL_DIR "tests/golden/tiny"
#define ADAPTER "tests/golden/lora_adapter"
#define FIXTURE "tests/golden/lora_fp32.safetensors"
#define SAVED "build/lora_saved" /* kept for tests/golden/check_adapter.py (PEFT loads it) */
#define TOL 1e-4

/* max |got - ref| / max |ref|, the measure check_close uses. */
static double rel_error(const float *got, const double *ref, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs(got[i] - ref[i])), m = fmax(m, fabs(ref[i]));
    return d / m;
}

/* transformers 5.17's causal-LM loss: logits at t predict labels at t+1, fp32 CE, mean over
 * targets != -100 (computed here in double). */
static double causal_lm_loss(const float *logits, const int32_t *labels, int64_t B, int64_t T, int V) {
    double sum = 0;
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t + 1 < T; t++) {
            const int32_t y = labels[b * T + t + 1];
            if (y == -100) continue;
            const float *l = logits + (b * T + t) * V;
            double mx = l[0], z = 0;
            for (int v = 1; v < V; v++) mx = fmax(mx, l[v]);
            for (int v = 0; v < V; v++) z += exp(l[v] - mx);
            sum += log(z) + mx - l[y];
            n++;
        }
    return sum / (double)n;
}

static void forward_all(mg_model *m, const mg_st_file *fx, float *logits) {
    const mg_st_tensor *px = mg_st_find(fx, "pixel_values"), *ids_t = mg_st_find(fx, "input_ids"),
                       *tt_t = mg_st_find(fx, "token_type_ids");
    const int64_t B = ids_t->shape[0], T = ids_t->shape[1];
    int32_t *ids = test_fixture_ints(ids_t), *tt = test_fixture_ints(tt_t), *rows = malloc((size_t)(B * T) * sizeof(int32_t));
    float *pixels = malloc((size_t)mg_st_numel(px) * sizeof(float));
    mg_to_f32(pixels, px->data, px->dtype, (size_t)mg_st_numel(px));
    for (int64_t i = 0; i < B * T; i++) rows[i] = (int32_t)i;
    const mg_model_input in = { .B = B, .T = T, .ids = ids, .token_type = tt, .pixels = pixels, .n_images = px->shape[0] };
    const mg_model_head head = { .rows = rows, .R = B * T, .logits = logits };
    mg_status s = mg_model_forward(m, &in, &head, NULL);
    CHECK(s == MG_OK, "forward: %s", mg_last_error());
    free(ids), free(tt), free(rows), free(pixels);
}

/* 1. merged forward against PEFT's unmerged fp32 logits and loss */
static void test_against_peft(mg_model *m, const mg_st_file *fx) {
    const mg_st_tensor *lt = mg_st_find(fx, "logits"), *ids_t = mg_st_find(fx, "input_ids"),
                       *lab_t = mg_st_find(fx, "labels"), *loss_t = mg_st_find(fx, "loss");
    CHECK(lt && ids_t && lab_t && loss_t && mg_st_find(fx, "pixel_values") && mg_st_find(fx, "token_type_ids"),
          "%s has logits, loss, labels and the inputs", FIXTURE);
    if (!(lt && ids_t && lab_t && loss_t)) return;
    const int64_t B = ids_t->shape[0], T = ids_t->shape[1], V = m->cfg.vocab, n = B * T * V;
    CHECK(mg_st_numel(lt) == n, "fixture logits are (%lld, %lld, %lld)", (long long)B, (long long)T, (long long)V);
    if (mg_st_numel(lt) != n) return;
    float *ref32 = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float)), ref_loss;
    double *ref = malloc((size_t)n * sizeof(double));
    mg_to_f32(ref32, lt->data, lt->dtype, (size_t)n);
    mg_to_f32(&ref_loss, loss_t->data, loss_t->dtype, 1);
    for (int64_t i = 0; i < n; i++) ref[i] = ref32[i];
    int32_t *labels = test_fixture_ints(lab_t);

    forward_all(m, fx, got);
    const double base_err = rel_error(got, ref, n);
    printf("     base model (no adapter) vs PEFT logits: rel %.3g\n", base_err);
    CHECK(base_err > 1e-2, "the adapter must change the logits a lot for this test to prove the merge (rel %.3g)",
          base_err);

    mg_lora lora;
    mg_status s = mg_lora_load(ADAPTER, &m->cfg, &lora);
    CHECK(s == MG_OK, "loading %s: %s", ADAPTER, mg_last_error());
    if (s != MG_OK) goto done;
    int n_text = 0, n_vision = 0;
    for (int i = 0; i < lora.n; i++) *(lora.mods[i].comp == MG_COMP_TEXT ? &n_text : &n_vision) += 1;
    printf("     adapter: %d modules (%d text, %d vision), %lld parameters, r=%d alpha=%g scale=%g\n", lora.n, n_text,
           n_vision, (long long)lora.n_params, lora.r, lora.alpha, lora.mods[0].scale);
    CHECK(lora.n == 47 && n_text == 35 && n_vision == 12, "47 adapted modules (35 text, 12 vision) as PEFT lists");
    CHECK(lora.mods[0].scale == 2.0f, "scaling alpha/r = 2");
    s = mg_model_merge_lora(m, &lora);
    CHECK(s == MG_OK, "merge: %s", mg_last_error());
    CHECK(m->adapter_merged && mg_model_merge_lora(m, &lora) == MG_ERR_ARG && strstr(mg_last_error(), "already"),
          "the model knows its adapter is merged and refuses a second merge: %s", mg_last_error());
    mg_lora_free(&lora);

    forward_all(m, fx, got);
    printf("     merged logits got %+.6f %+.6f %+.6f  ref %+.6f %+.6f %+.6f\n", got[0], got[1], got[2], ref[0], ref[1],
           ref[2]);
    check_close("logits with the merged adapter vs PEFT", got, ref, (size_t)n, TOL);
    const double loss = causal_lm_loss(got, labels, B, T, (int)V);
    printf("     loss %.7f vs PEFT %.7f (rel diff %.2g)\n", loss, ref_loss, fabs(loss - ref_loss) / ref_loss);
    CHECK(fabs(loss - ref_loss) <= TOL * ref_loss, "loss within %g of PEFT's", TOL);
done:
    free(ref32), free(got), free(ref), free(labels);
}

/* ---- adapters written by the test ------------------------------------------------------------ */

typedef struct {
    char name[320];
    int64_t shape[2];
    const void *data;
} tensor_copy;

typedef struct {
    tensor_copy t[256];
    int n;
} tensor_list;

static void list_from(tensor_list *l, const mg_st_file *f) {
    l->n = 0;
    for (int i = 0; i < f->n && i < 256; i++) {
        tensor_copy *c = &l->t[l->n++];
        snprintf(c->name, sizeof c->name, "%s", f->tensors[i].name);
        c->shape[0] = f->tensors[i].shape[0], c->shape[1] = f->tensors[i].shape[1];
        c->data = f->tensors[i].data;
    }
}

static tensor_copy *find(tensor_list *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->t[i].name, name)) return &l->t[i];
    return NULL;
}

static void drop(tensor_list *l, const char *name) {
    tensor_copy *c = find(l, name);
    CHECK(c != NULL, "test setup: %s exists", name);
    if (c) *c = l->t[--l->n];
}

/* s with the first occurrence of from replaced by to (the caller frees). */
static char *replace(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    CHECK(at != NULL, "test setup: '%s' occurs in the config", from);
    if (!at) return strdup(s);
    char *out = malloc(strlen(s) + strlen(to) + 1);
    sprintf(out, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return out;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    s[fread(s, 1, (size_t)n, f)] = 0;
    fclose(f);
    return s;
}

static void write_adapter(const char *dir, const char *config, const tensor_list *l) {
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    FILE *f = fopen(path, "w");
    fputs(config, f);
    fclose(f);
    mg_st_entry e[256];
    for (int i = 0; i < l->n; i++)
        e[i] = (mg_st_entry){ .name = l->t[i].name, .dtype = MG_F32, .ndim = 2, .shape = l->t[i].shape, .data = l->t[i].data };
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    CHECK(mg_st_write(path, e, l->n, NULL, 0) == MG_OK, "test setup: writing %s: %s", path, mg_last_error());
}

static void remove_adapter(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

static int same_adapter(const mg_lora *a, const mg_lora *b) {
    if (a->n != b->n || a->n_params != b->n_params || a->r != b->r || a->alpha != b->alpha) return 0;
    for (int i = 0; i < a->n; i++) {
        const mg_lora_module *x = &a->mods[i], *y = &b->mods[i];
        if (x->comp != y->comp || x->layer != y->layer || x->kind != y->kind || x->r != y->r || x->scale != y->scale ||
            x->A - a->params != y->A - b->params || x->B - a->params != y->B - b->params)
            return 0;
    }
    return !memcmp(a->params, b->params, (size_t)a->n_params * sizeof(float));
}

/* Loads an adapter that must fail with code; every string in needles must be in the message. */
static void expect_error(const char *what, const char *dir, const mg_config *cfg, mg_status code,
                         const char *const *needles, int n_needles) {
    mg_lora l;
    mg_status s = mg_lora_load(dir, cfg, &l);
    int has_all = strstr(mg_last_error(), "HINT:") != NULL;
    for (int i = 0; i < n_needles; i++) has_all &= strstr(mg_last_error(), needles[i]) != NULL;
    printf("     %s -> %s: %s\n", what, mg_status_name(s), mg_last_error());
    CHECK(s == code && has_all, "%s: want %s with the bad keys named and a HINT", what, mg_status_name(code));
    if (s == MG_OK) mg_lora_free(&l);
}

#define TQ "base_model.model.model.language_model.layers.0.self_attn.q_proj"
#define TV1 "base_model.model.model.language_model.layers.1.self_attn.v_proj"

/* 2. save -> load round trip; saved names and target_modules equal what PEFT wrote */
static void test_round_trip(const mg_config *cfg, const mg_lora *golden, const mg_st_file *gf) {
    const char *dir = SAVED;
    mkdir("build", 0777), mkdir(dir, 0777);
    CHECK(mg_lora_save(dir, golden, cfg) == MG_OK, "save: %s", mg_last_error());
    mg_lora back;
    mg_status s = mg_lora_load(dir, cfg, &back);
    CHECK(s == MG_OK, "reload of the saved adapter: %s", mg_last_error());
    if (s == MG_OK) {
        CHECK(same_adapter(golden, &back), "save -> load gives back the same modules and bit-identical A, B");
        mg_lora_free(&back);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    mg_st_file sf;
    if (mg_st_open(path, &sf) == MG_OK) {
        int named_like_peft = sf.n == gf->n;
        for (int i = 0; i < sf.n; i++) named_like_peft &= mg_st_find(gf, sf.tensors[i].name) != NULL &&
                                                          sf.tensors[i].dtype == MG_F32;
        CHECK(named_like_peft, "the %d saved keys are exactly PEFT's %d keys, all F32", sf.n, gf->n);
        mg_st_close(&sf);
    }
    mg_json *saved = NULL, *peft = NULL;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    CHECK(mg_json_parse_file(path, &saved) == MG_OK, "saved config parses: %s", mg_last_error());
    CHECK(mg_json_parse_file(ADAPTER "/adapter_config.json", &peft) == MG_OK, "PEFT config parses");
    if (saved && peft) {
        const mg_json *a = mg_json_get(saved, "target_modules"), *b = mg_json_get(peft, "target_modules");
        int same = a && b && a->n == b->n;
        for (int i = 0; same && i < a->n; i++) same = !strcmp(a->items[i].string, b->items[i].string);
        CHECK(same, "saved target_modules equal PEFT's sorted all-linear list");
        const char *keys[] = { "r", "lora_alpha", "lora_dropout" };
        for (int i = 0; i < 3; i++)
            CHECK(mg_json_get_number(saved, keys[i], -1) == mg_json_get_number(peft, keys[i], -2), "%s as PEFT's",
                  keys[i]);
        const char *skeys[] = { "peft_type", "task_type", "bias", "base_model_name_or_path" };
        for (int i = 0; i < 4; i++)
            CHECK(!strcmp(mg_json_get_string(saved, skeys[i], "?"), mg_json_get_string(peft, skeys[i], "!")),
                  "%s as PEFT's", skeys[i]);
    }
    mg_json_free(saved), mg_json_free(peft);

    /* a partial adapter (one module) is saved with its full module path as target */
    char tmp[] = "/tmp/medgem_lora_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    dir = tmp;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    mg_lora one = *golden;
    one.n = 1;
    CHECK(mg_lora_save(dir, &one, cfg) == MG_OK, "save of a one-module adapter: %s", mg_last_error());
    char *text = read_text(path);
    CHECK(text && strstr(text, "\"model.language_model.layers.0.self_attn.q_proj\"") && !strstr(text, "\"k_proj\""),
          "a one-module adapter targets its full path: %s", text ? text : "(unreadable)");
    free(text);
    s = mg_lora_load(dir, cfg, &back);
    CHECK(s == MG_OK && back.n == 1, "reload of the one-module adapter: %s", mg_last_error());
    if (s == MG_OK) mg_lora_free(&back);
    remove_adapter(dir);
}

/* 3 and 4: other spellings, bad adapters, patterns */
static void test_variants(const mg_config *cfg, const mg_lora *golden, const mg_st_file *gf) {
    char dir[] = "/tmp/medgem_lora_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char *config = read_text(ADAPTER "/adapter_config.json");
    CHECK(config != NULL, "read %s/adapter_config.json", ADAPTER);
    if (!config) return;
    tensor_list *l = malloc(sizeof *l);
    static float zeros[128 * 8];

    /* transformers 4.57 spelling of the vision tower */
    list_from(l, gf);
    for (int i = 0; i < l->n; i++) {
        char *v = strstr(l->t[i].name, "vision_tower.encoder.");
        if (!v) continue;
        char rest[320];
        snprintf(rest, sizeof rest, "%s", v + strlen("vision_tower."));
        snprintf(v, sizeof l->t[i].name - (size_t)(v - l->t[i].name), "vision_tower.vision_model.%s", rest);
    }
    write_adapter(dir, config, l);
    mg_lora old;
    mg_status s = mg_lora_load(dir, cfg, &old);
    CHECK(s == MG_OK, "4.57 spelling loads: %s", mg_last_error());
    if (s == MG_OK) {
        CHECK(same_adapter(golden, &old), "4.57 spelling gives the same adapter as 5.17's");
        mg_lora_free(&old);
    }
    /* both spellings at once: the same module twice */
    tensor_list *both = malloc(sizeof *both);
    list_from(both, gf);
    for (int i = 0; i < l->n && both->n < 256; i++)
        if (strstr(l->t[i].name, "vision_model")) both->t[both->n++] = l->t[i];
    write_adapter(dir, config, both);
    free(both);
    const char *dup[] = { "duplicated", "vision_model.encoder.layers.0" };
    expect_error("both spellings", dir, cfg, MG_ERR_FORMAT, dup, 2);

    /* wrong shape, missing B and unknown modules, all listed in one error */
    list_from(l, gf);
    tensor_copy *q = find(l, TQ ".lora_B.weight");
    q->shape[0] = 65, q->data = zeros;
    drop(l, TV1 ".lora_B.weight");
    l->t[l->n] = (tensor_copy){ "base_model.model.model.language_model.layers.0.self_attn.qq_proj.lora_A.weight",
                                { 8, 40 }, zeros };
    l->n++;
    l->t[l->n] = (tensor_copy){ "base_model.model.model.language_model.layers.7.mlp.up_proj.lora_A.weight", { 8, 40 },
                                zeros };
    l->n++;
    write_adapter(dir, config, l);
    const char *all[] = { "1 missing, 0 duplicated, 2 unexpected, 1 wrong shape", TQ ".lora_B.weight (65, 8)",
                          "want (64, 8)", TV1 ".lora_B.weight", "qq_proj", "layers.7.mlp.up_proj" };
    expect_error("wrong shape + missing B + unknown modules", dir, cfg, MG_ERR_MISSING, all, 6);

    /* each alone */
    list_from(l, gf);
    q = find(l, TQ ".lora_A.weight");
    q->shape[1] = 41, q->data = zeros;
    write_adapter(dir, config, l);
    const char *shape[] = { "wrong shape " TQ ".lora_A.weight (8, 41), want (8, 40)" };
    expect_error("wrong shape", dir, cfg, MG_ERR_SHAPE, shape, 1);
    list_from(l, gf);
    drop(l, TV1 ".lora_B.weight");
    write_adapter(dir, config, l);
    const char *missing[] = { "missing     " TV1 ".lora_B.weight" };
    expect_error("missing B", dir, cfg, MG_ERR_MISSING, missing, 1);

    /* settings that change the math */
    list_from(l, gf);
    const struct {
        const char *from, *to, *needle;
    } bad[] = {
        { "\"use_dora\": false", "\"use_dora\": true", "use_dora" },
        { "\"lora_bias\": false", "\"lora_bias\": true", "lora_bias" },
        { "\"bias\": \"none\"", "\"bias\": \"lora_only\"", "\"bias\" is \"lora_only\"" },
        { "\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]", "modules_to_save" },
        { "\"peft_type\": \"LORA\"", "\"peft_type\": \"LOHA\"", "peft_type is \"LOHA\"" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *c = replace(config, bad[i].from, bad[i].to);
        write_adapter(dir, c, l);
        const char *needle[] = { bad[i].needle, "adapter_config.json" };
        expect_error(bad[i].to, dir, cfg, MG_ERR_UNSUPPORTED, needle, 2);
        free(c);
    }
    /* tensors of modules the config does not target: PEFT would ignore them, so they are errors */
    char *c = replace(config, "\"fc2\",", "");
    write_adapter(dir, c, l);
    free(c);
    const char *untargeted[] = { "2 unexpected", "mlp.fc2.lora_A.weight (module not selected by target_modules" };
    expect_error("fc2 tensors without fc2 in target_modules", dir, cfg, MG_ERR_FORMAT, untargeted, 2);

    /* target_modules as a regex (re.fullmatch), exclude_modules, a bad regex, use_rslora */
    c = replace(config, "\"target_modules\": [", "\"target_modules\": \"model\\\\.language_model\\\\..*\", \"old\": [");
    write_adapter(dir, c, l);
    free(c);
    const char *text_only[] = { "12 unexpected", "vision_tower.encoder.layers.1.mlp.fc2.lora_A.weight (module not selected" };
    expect_error("target_modules regex selecting the text decoder only", dir, cfg, MG_ERR_FORMAT, text_only, 2);
    c = replace(config, "\"exclude_modules\": null", "\"exclude_modules\": [\"fc1\"]");
    write_adapter(dir, c, l);
    free(c);
    const char *excluded[] = { "2 unexpected", "mlp.fc1.lora_A.weight (module not selected by target_modules/exclude_modules)" };
    expect_error("exclude_modules fc1", dir, cfg, MG_ERR_FORMAT, excluded, 2);
    c = replace(config, "\"alpha_pattern\": {}", "\"alpha_pattern\": {\"q_proj(\": 4}");
    write_adapter(dir, c, l);
    free(c);
    const char *regex[] = { "pattern \"q_proj(\" does not compile" };
    expect_error("bad regex", dir, cfg, MG_ERR_FORMAT, regex, 1);
    c = replace(config, "\"use_rslora\": false", "\"use_rslora\": true");
    write_adapter(dir, c, l);
    free(c);
    mg_lora rs;
    s = mg_lora_load(dir, cfg, &rs);
    CHECK(s == MG_OK && rs.mods[0].scale == (float)(16 / sqrt(8.0)), "use_rslora: scale alpha/sqrt(r) = %.7g",
          s == MG_OK ? rs.mods[0].scale : 0.0f);
    if (s == MG_OK) mg_lora_free(&rs);

    /* rank_pattern / alpha_pattern: layer 0 q_proj with r = 4 (A, B cut to 4), alpha 32 for every fc1 */
    list_from(l, gf);
    q = find(l, TQ ".lora_A.weight");
    q->shape[0] = 4; /* the first 4 rows of A (4, 40) */
    q = find(l, TQ ".lora_B.weight");
    float *b4 = malloc(64 * 4 * sizeof(float));
    for (int o = 0; o < 64; o++)
        for (int k = 0; k < 4; k++) b4[o * 4 + k] = ((const float *)q->data)[o * 8 + k];
    q->shape[1] = 4, q->data = b4;
    c = replace(config, "\"rank_pattern\": {}", "\"rank_pattern\": {\"language_model.layers.0.self_attn.q_proj\": 4}");
    char *c2 = replace(c, "\"alpha_pattern\": {}", "\"alpha_pattern\": {\"fc1\": 32}");
    write_adapter(dir, c2, l);
    mg_lora pat;
    s = mg_lora_load(dir, cfg, &pat);
    CHECK(s == MG_OK, "rank_pattern/alpha_pattern adapter loads: %s", mg_last_error());
    if (s == MG_OK) {
        int ok = 1, n_fc1 = 0;
        for (int i = 0; i < pat.n; i++) {
            const mg_lora_module *m = &pat.mods[i];
            const int q0 = m->comp == MG_COMP_TEXT && m->layer == 0 && m->kind == MG_LORA_Q;
            const int fc1 = m->kind == MG_LORA_FC1;
            n_fc1 += fc1;
            ok &= m->r == (q0 ? 4 : 8) && m->scale == (q0 ? 4.0f : fc1 ? 4.0f : 2.0f);
            if (q0) ok &= !memcmp(m->B, b4, 64 * 4 * sizeof(float));
        }
        CHECK(ok && n_fc1 == 2, "layer 0 q_proj has r 4 and scale 16/4, fc1 scale 32/8, the rest r 8 scale 2");
        /* and it saves with the patterns, and reloads the same */
        CHECK(mg_lora_save(dir, &pat, cfg) == MG_OK, "save with patterns: %s", mg_last_error());
        mg_lora back;
        s = mg_lora_load(dir, cfg, &back);
        CHECK(s == MG_OK && same_adapter(&pat, &back), "patterns survive save -> load: %s", mg_last_error());
        if (s == MG_OK) mg_lora_free(&back);
        mg_lora_free(&pat);
    }
    free(c), free(c2);
    /* the same tensors without rank_pattern: wrong shape for r = 8 */
    write_adapter(dir, config, l);
    const char *rank[] = { "2 wrong shape", "(r=8" };
    expect_error("r=4 tensors without rank_pattern", dir, cfg, MG_ERR_SHAPE, rank, 2);
    free(b4);

    remove_adapter(dir);
    const char *nodir[] = { "/no/such/adapter/adapter_config.json" };
    expect_error("missing directory", "/no/such/adapter", cfg, MG_ERR_MISSING, nodir, 1);
    free(l), free(config);
}

/* The merge's delta W += (B·A)·scale against a float64 loop, at widths the tiny model lacks: in = 700
 * spans three of mg_lora_add_delta's 256-column blocks, the last one partial (the full-size
 * model's in = 1152..10240; a block once landed on the first columns, and tiny's in <= 256 hid it). */
static void test_add_delta_wide(void) {
    enum { OUT = 5, IN = 700, R = 3 };
    static float A[R * IN], B[OUT * R], w[OUT * IN];
    static double want[OUT * IN];
    for (int i = 0; i < R * IN; i++) A[i] = (float)sin(0.37 * i);
    for (int i = 0; i < OUT * R; i++) B[i] = (float)cos(1.3 * i);
    for (int i = 0; i < OUT * IN; i++) w[i] = (float)(0.001 * (i % 97));
    const float scale = 2.0f;
    for (int o = 0; o < OUT; o++)
        for (int c = 0; c < IN; c++) {
            double ba = 0.0;
            for (int k = 0; k < R; k++) ba += (double)B[o * R + k] * A[k * IN + c];
            want[o * IN + c] = w[o * IN + c] + ba * scale;
        }
    const mg_lora_module mod = { .r = R, .in = IN, .out = OUT, .scale = scale, .A = A, .B = B };
    mg_lora_add_delta(&mod, w);
    double worst = 0.0;
    for (int i = 0; i < OUT * IN; i++) worst = fmax(worst, fabs(w[i] - want[i]));
    CHECK(worst < 1e-5, "mg_lora_add_delta at in=%d (three column blocks) vs float64: max error %.3g", IN, worst);
}

int main(void) {
    test_add_delta_wide();
    mg_model m;
    mg_st_file fx, gf;
    mg_status s = mg_model_open(&m, mg_backend_cpu(), MODEL_DIR);
    CHECK(s == MG_OK, "loading %s: %s", MODEL_DIR, mg_last_error());
    if (s != MG_OK) return test_finish();
    s = mg_st_open(FIXTURE, &fx);
    CHECK(s == MG_OK, "opening %s: %s", FIXTURE, mg_last_error());
    if (s != MG_OK) return test_finish();
    s = mg_st_open(ADAPTER "/adapter_model.safetensors", &gf);
    CHECK(s == MG_OK, "opening the adapter: %s", mg_last_error());
    if (s != MG_OK) return test_finish();

    test_against_peft(&m, &fx);
    mg_lora golden;
    s = mg_lora_load(ADAPTER, &m.cfg, &golden);
    CHECK(s == MG_OK, "loading %s: %s", ADAPTER, mg_last_error());
    if (s == MG_OK) {
        test_round_trip(&m.cfg, &golden, &gf);
        test_variants(&m.cfg, &golden, &gf);
        mg_lora_free(&golden);
    }
    mg_st_close(&gf);
    mg_st_close(&fx);
    mg_model_free(&m);
    int rc = test_finish();
    printf("%s\n", rc ? "LoRA vs PEFT: FAIL" : "LoRA vs PEFT: OK");
    return rc;
}
