/* `medgem merge` (engine/jobs/merge.h) on the golden fixtures (tests/golden/README.md), CPU only:
 * a. tests/golden/tiny (fp32) + tests/golden/lora_adapter: the merged directory loads with
 *    mg_model_open and its logits equal, bit for bit, those of the base model with the adapter
 *    merged in memory (mg_model_apply_adapter, which test_lora checks against PEFT); the tensors
 *    keep the base's names, dtypes and shapes, exactly the 47 adapted weights change, and the
 *    config/tokenizer/processor files are copied unchanged;
 * b. tests/golden/tiny-sharded (bf16, 3 shards): the same shard names, the base's index, the same
 *    tensor names and dtypes in each shard; every adapted weight equals bf16(fp32(W) + (B·A)·scale)
 *    (one rounding), every other tensor is byte-identical; the merged shards load;
 * c. bad input: a missing adapter, an adapter that does not fit the model (rank, targets), --out
 *    not empty (refused without --force and left untouched; replaced with it), --force on a
 *    directory holding the model (refused), a failed write (file size limit): each exits non-zero
 *    with a HINT and leaves no output or staging directory behind.
 * The fixture tests/gpu/check_merged.py compares a medgem-merged directory with PEFT's
 * merge_and_unload in transformers. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/safetensors.h"
#include "model/lora.h"
#include "tests/test.h"

#define MEDGEM "build/medgem merge"
#define TINY "tests/golden/tiny"
#define SHARDED "tests/golden/tiny-sharded"
#define ADAPTER "tests/golden/lora_adapter"
#define FIXTURE "tests/golden/lora_fp32.safetensors"

static char tmp[] = "/tmp/medgem_merge_XXXXXX";

/* Runs `medgem merge ARGS` with stderr in *out; returns the exit status. */
static int merge(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int merge(char **out, const char *fmt, ...) {
    char args[2048], cmd[2300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, MEDGEM " %s 2>&1", args);
    return test_run(cmd, out);
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Entries of dir whose name contains needle (all when NULL). */
static int count_entries(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && (!needle || strstr(e->d_name, needle))) n++;
    if (d) closedir(d);
    return n;
}

/* Logits at every position of the fixture's batch (B*T, V). */
static float *forward_all(mg_model *m, const mg_st_file *fx, int64_t *n_out) {
    const mg_st_tensor *px = mg_st_find(fx, "pixel_values"), *ids_t = mg_st_find(fx, "input_ids"),
                       *tt_t = mg_st_find(fx, "token_type_ids");
    const int64_t B = ids_t->shape[0], T = ids_t->shape[1], n = B * T * m->cfg.vocab;
    int32_t *ids = test_fixture_ints(ids_t), *tt = test_fixture_ints(tt_t), *rows = malloc((size_t)(B * T) * 4);
    float *pixels = malloc((size_t)mg_st_numel(px) * sizeof(float)), *logits = malloc((size_t)n * sizeof(float));
    mg_to_f32(pixels, px->data, px->dtype, (size_t)mg_st_numel(px));
    for (int64_t i = 0; i < B * T; i++) rows[i] = (int32_t)i;
    const mg_model_input in = { .B = B, .T = T, .ids = ids, .token_type = tt, .pixels = pixels, .n_images = px->shape[0] };
    const mg_model_head head = { .rows = rows, .R = B * T, .logits = logits };
    const mg_status s = mg_model_forward(m, &in, &head, NULL);
    CHECK(s == MG_OK, "forward: %s", mg_last_error());
    free(ids), free(tt), free(rows), free(pixels);
    *n_out = n;
    return logits;
}

/* Logits of the model in dir (CPU), with adapter merged in memory when not NULL. */
static float *logits_of(const char *dir, const char *adapter, const mg_st_file *fx, int64_t *n) {
    mg_model m;
    mg_status s = mg_model_open(&m, mg_backend_cpu(), dir);
    CHECK(s == MG_OK, "mg_model_open(%s): %s", dir, mg_last_error());
    if (s != MG_OK) return NULL;
    if (adapter) {
        s = mg_model_apply_adapter(&m, adapter);
        CHECK(s == MG_OK, "mg_model_apply_adapter(%s): %s", adapter, mg_last_error());
    }
    float *l = s == MG_OK ? forward_all(&m, fx, n) : NULL;
    mg_model_free(&m);
    return l;
}

static double rel_diff(const float *a, const float *b, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i])), m = fmax(m, fabs((double)b[i]));
    return d / m;
}

/* The checkpoint tensor a module adapts is named <prefix>layers.N.<module>.weight. */
static const mg_lora_module *module_for(const mg_lora *lora, const char *name) {
    mg_component comp;
    int layer;
    char module[160];
    if (!mg_parse_tensor_name(name, &comp, &layer, module, sizeof module)) return NULL;
    for (int i = 0; i < lora->n; i++) {
        const mg_lora_module *m = &lora->mods[i];
        const char *mn = mg_lora_module_name(m->comp, m->kind);
        if (m->comp == comp && m->layer == layer && !strncmp(module, mn, strlen(mn)) &&
            !strcmp(module + strlen(mn), ".weight"))
            return m;
    }
    return NULL;
}

/* Compares every file of base with its merged twin: same names, dtypes, shapes; adapted tensors
 * equal to round(fp32(W) + delta) in W's dtype, the rest byte-identical. Returns tensors changed. */
static int check_tensors(const mg_checkpoint *base, const char *merged_dir, const mg_lora *lora) {
    int changed = 0, all_same_layout = 1, all_exact = 1, n_files = 0;
    for (int f = 0; f < base->n_files; f++) {
        const mg_st_file *b = &base->files[f];
        const char *name = strrchr(b->path, '/') + 1;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", merged_dir, name);
        mg_st_file m;
        mg_status s = mg_st_open(path, &m);
        CHECK(s == MG_OK, "merged file %s: %s", path, mg_last_error());
        if (s != MG_OK) continue;
        n_files++;
        all_same_layout &= m.n == b->n;
        for (int i = 0; i < b->n && i < m.n; i++) {
            const mg_st_tensor *x = &b->tensors[i], *y = &m.tensors[i];
            int same = !strcmp(x->name, y->name) && x->dtype == y->dtype && x->ndim == y->ndim;
            for (int d = 0; same && d < x->ndim; d++) same = x->shape[d] == y->shape[d];
            all_same_layout &= same;
            if (!same) { printf("     layout differs: %s vs %s\n", x->name, y->name); continue; }
            const mg_lora_module *mod = module_for(lora, x->name);
            if (!mod) {
                all_exact &= !memcmp(x->data, y->data, x->nbytes);
                continue;
            }
            const size_t n = (size_t)mg_st_numel(x);
            float *w = malloc(n * sizeof(float));
            uint16_t *h = malloc(n * 2);
            mg_to_f32(w, x->data, x->dtype, n);
            mg_lora_add_delta(mod, w);
            const void *want = w;
            if (x->dtype == MG_BF16) {
                for (size_t k = 0; k < n; k++) h[k] = mg_f32_to_bf16(w[k]);
                want = h;
            }
            all_exact &= !memcmp(want, y->data, x->nbytes);
            changed += memcmp(x->data, y->data, x->nbytes) != 0;
            free(w), free(h);
        }
        mg_st_close(&m);
    }
    CHECK(n_files == base->n_files, "%d of %d safetensors files written", n_files, base->n_files);
    CHECK(all_same_layout, "every file holds the base's tensor names, dtypes and shapes");
    CHECK(all_exact, "adapted weights equal W + (B·A)·scale rounded once to the stored dtype; the rest byte-identical");
    return changed;
}

/* a. fp32: merged directory vs in-memory merge */
static void test_fp32(const mg_st_file *fx, const mg_lora *lora) {
    char out[256], *log;
    snprintf(out, sizeof out, "%s/fp32", tmp);
    int rc = merge(&log, "--model " TINY " --adapter " ADAPTER " --out %s", out);
    printf("     %s", log);
    CHECK(rc == 0 && strstr(log, "merged 47 LoRA modules") && strstr(log, "1 safetensors file"),
          "merge of the fp32 tiny model: exit %d", rc);
    free(log);
    static const char *const copied[] = { "config.json", "generation_config.json", "tokenizer.model", "tokenizer.json",
                                          "tokenizer_config.json", "processor_config.json", "chat_template.jinja" };
    int same = 1;
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++) {
        char a[512], b[512];
        snprintf(a, sizeof a, TINY "/%s", copied[i]), snprintf(b, sizeof b, "%s/%s", out, copied[i]);
        if (!test_same_file(a, b)) printf("     not copied unchanged: %s\n", copied[i]), same = 0;
    }
    CHECK(same, "config, generation config, tokenizer, processor and chat template copied unchanged");
    CHECK(count_entries(out, NULL) == 8, "the merged directory holds model.safetensors and the 7 copied files (%d entries)",
          count_entries(out, NULL));
    CHECK(count_entries(tmp, ".tmp-") == 0, "no staging directory left beside it");

    mg_checkpoint ck;
    if (mg_checkpoint_open(TINY, &ck) == MG_OK) {
        const int changed = check_tensors(&ck, out, lora);
        CHECK(changed == 47, "the 47 adapted weights changed (%d)", changed);
        mg_checkpoint_close(&ck);
    }

    int64_t n1 = 0, n2 = 0, n3 = 0;
    float *merged = logits_of(out, NULL, fx, &n1), *in_memory = logits_of(TINY, ADAPTER, fx, &n2),
          *base = logits_of(TINY, NULL, fx, &n3);
    if (merged && in_memory && base && n1 == n2) {
        const int exact = !memcmp(merged, in_memory, (size_t)n1 * sizeof(float));
        printf("     merged dir vs in-memory merge: rel %.3g (%s); base vs in-memory merge: rel %.3g\n",
               rel_diff(merged, in_memory, n1), exact ? "bit-identical" : "DIFFERENT", rel_diff(base, in_memory, n1));
        CHECK(exact, "logits of the merged directory equal the in-memory merge's exactly (CPU, fp32)");
        CHECK(rel_diff(base, in_memory, n1) > 1e-2, "the adapter changes the logits (so the test proves the merge)");
    }
    free(merged), free(in_memory), free(base);
}

/* b. bf16, 3 shards */
static void test_sharded(const mg_st_file *fx, const mg_lora *lora) {
    char out[256], a[512], b[512], *log;
    snprintf(out, sizeof out, "%s/sharded", tmp);
    int rc = merge(&log, "--model " SHARDED " --adapter " ADAPTER " --out %s --json", out);
    printf("     %s", log);
    CHECK(rc == 0 && strstr(log, "\"safetensors_files\": 3") && strstr(log, "\"sharded\": true") &&
              strstr(log, "\"dtypes\": \"BF16\""),
          "merge of the sharded bf16 model: exit %d", rc);
    free(log);
    snprintf(a, sizeof a, SHARDED "/model.safetensors.index.json"), snprintf(b, sizeof b, "%s/model.safetensors.index.json", out);
    CHECK(test_same_file(a, b), "model.safetensors.index.json is the base's");
    snprintf(b, sizeof b, "%s/model.safetensors", out);
    CHECK(!exists(b), "no single model.safetensors beside the shards");
    CHECK(count_entries(out, "-of-00003.safetensors") == 3 && count_entries(out, NULL) == 5,
          "the 3 shards under the base's names, the index and config.json (%d entries)", count_entries(out, NULL));
    mg_checkpoint ck;
    if (mg_checkpoint_open(SHARDED, &ck) == MG_OK) {
        const int changed = check_tensors(&ck, out, lora);
        CHECK(changed == 47, "the 47 adapted weights changed (%d)", changed);
        mg_checkpoint_close(&ck);
    }
    /* it loads; its logits are the fp32 in-memory merge's up to bf16 weights */
    int64_t n1 = 0, n2 = 0;
    float *merged = logits_of(out, NULL, fx, &n1), *ref = logits_of(SHARDED, ADAPTER, fx, &n2);
    if (merged && ref && n1 == n2) {
        const double rel = rel_diff(merged, ref, n1);
        printf("     merged bf16 shards vs bf16 base + in-memory fp32 merge: rel %.3g\n", rel);
        CHECK(rel < 5e-2, "merged shards load and give the in-memory merge's logits up to bf16 rounding (rel %.3g)", rel);
    }
    free(merged), free(ref);
}

/* c. bad input */
static void expect_fail(const char *what, int rc, const char *log, const char *needle, const char *out) {
    printf("     %s -> exit %d: %s", what, rc, log);
    CHECK(rc == 1 && strstr(log, "HINT:") && strstr(log, needle), "%s: exit 1 with '%s' and a HINT", what, needle);
    if (out) CHECK(!exists(out), "%s: %s not created", what, out);
    CHECK(count_entries(tmp, ".tmp-") == 0 && count_entries(tmp, ".old-") == 0, "%s: no staging directory left", what);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
}

/* An adapter directory in tmp: the golden tensors with the config edited (from -> to). */
static void edited_adapter(const char *dir, const char *from, const char *to) {
    char cwd[1024], path[1024], link[1100];
    size_t n;
    mkdir(dir, 0755);
    char *config = test_slurp(ADAPTER "/adapter_config.json", &n), *at = config ? strstr(config, from) : NULL;
    CHECK(at != NULL, "test setup: '%s' in the adapter config", from);
    if (!at) { free(config); return; }
    char *edited = malloc(n + strlen(to) + 1);
    sprintf(edited, "%.*s%s%s", (int)(at - config), config, to, at + strlen(from));
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    write_text(path, edited);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    snprintf(link, sizeof link, "%s/" ADAPTER "/adapter_model.safetensors", getcwd(cwd, sizeof cwd));
    CHECK(symlink(link, path) == 0, "test setup: symlink %s", path);
    free(config), free(edited);
}

static void test_bad_input(void) {
    char out[256], dir[256], path[512], *log;
    int rc;
    snprintf(out, sizeof out, "%s/bad", tmp);

    rc = merge(&log, "--model " TINY " --adapter %s/no_adapter --out %s", tmp, out);
    expect_fail("missing adapter", rc, log, "adapter_config.json", out);
    free(log);
    rc = merge(&log, "--model %s/no_model --adapter " ADAPTER " --out %s", tmp, out);
    expect_fail("missing model", rc, log, "config.json", out);
    free(log);

    snprintf(dir, sizeof dir, "%s/adapter_r4", tmp);
    edited_adapter(dir, "\"r\": 8", "\"r\": 4");
    rc = merge(&log, "--model " TINY " --adapter %s --out %s", dir, out);
    expect_fail("adapter with r=4 but rank-8 tensors", rc, log, "wrong shape", out);
    free(log);
    snprintf(dir, sizeof dir, "%s/adapter_no_fc2", tmp);
    edited_adapter(dir, "\"fc2\",", "");
    rc = merge(&log, "--model " TINY " --adapter %s --out %s", dir, out);
    expect_fail("adapter whose targets leave out fc2", rc, log, "not selected by target_modules", out);
    free(log);
    /* a model whose config.json does not fit its weights (a wider MLP) */
    snprintf(dir, sizeof dir, "%s/wide", tmp);
    mkdir(dir, 0755);
    size_t n;
    char *config = test_slurp(TINY "/config.json", &n), *at = config ? strstr(config, "\"intermediate_size\": 88") : NULL;
    CHECK(at != NULL, "test setup: intermediate_size 88 in the tiny config");
    if (at) {
        char *wide = malloc(n + 2);
        sprintf(wide, "%.*s\"intermediate_size\": 96%s", (int)(at - config), config, at + strlen("\"intermediate_size\": 88"));
        snprintf(path, sizeof path, "%s/config.json", dir);
        write_text(path, wide);
        free(wide);
        snprintf(path, sizeof path, "cp " TINY "/model.safetensors %s/", dir);
        CHECK(system(path) == 0, "test setup: %s", path);
        rc = merge(&log, "--model %s --adapter " ADAPTER " --out %s", dir, out);
        expect_fail("model whose config does not fit its weights", rc, log, "wrong shape", out);
        free(log);
    }
    free(config);

    /* --out not empty: refused and untouched; with --force replaced */
    mkdir(out, 0755);
    snprintf(path, sizeof path, "%s/keep.txt", out);
    write_text(path, "user data\n");
    rc = merge(&log, "--model " TINY " --adapter " ADAPTER " --out %s", out);
    expect_fail("--out not empty", rc, log, "--force", NULL);
    free(log);
    CHECK(exists(path) && count_entries(out, NULL) == 1, "a refused --out is left untouched");
    rc = merge(&log, "--model " TINY " --adapter " ADAPTER " --out %s/ --force", out);
    CHECK(rc == 0, "--force replaces a non-empty --out: exit %d: %s", rc, log);
    free(log);
    CHECK(!exists(path) && count_entries(out, NULL) == 8, "--force: the old content is gone, the merged model is there");
    CHECK(count_entries(tmp, ".tmp-") == 0 && count_entries(tmp, ".old-") == 0, "--force: nothing left beside --out");
    /* an existing empty --out is filled without --force */
    snprintf(dir, sizeof dir, "%s/empty", tmp);
    mkdir(dir, 0755);
    rc = merge(&log, "--model " TINY " --adapter " ADAPTER " --out %s", dir);
    CHECK(rc == 0 && count_entries(dir, NULL) == 8, "an empty --out is used: exit %d", rc);
    free(log);

    /* --force never deletes the inputs: a model directory inside --out (symlinked weights) */
    char cwd[1024], link[1100];
    snprintf(dir, sizeof dir, "%s/outer", tmp);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/model", dir);
    mkdir(path, 0755);
    const char *names[] = { "config.json", "model.safetensors" };
    for (int i = 0; i < 2; i++) {
        char dst[600];
        snprintf(link, sizeof link, "%s/" TINY "/%s", getcwd(cwd, sizeof cwd), names[i]);
        snprintf(dst, sizeof dst, "%s/%s", path, names[i]);
        CHECK(symlink(link, dst) == 0, "test setup: symlink %s", dst);
    }
    rc = merge(&log, "--model %s --adapter " ADAPTER " --out %s --force", path, dir);
    expect_fail("--force on a directory holding the model", rc, log, "would delete it", NULL);
    free(log);
    snprintf(link, sizeof link, "%s/config.json", path);
    CHECK(exists(link), "the model inside --out is untouched");

    /* a failed write: the file size limit stops model.safetensors (673920 bytes) half way */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "sh -c 'ulimit -f 200; trap \"\" XFSZ; exec " MEDGEM " --model " TINY " --adapter " ADAPTER
             " --out %s/full' 2>&1", tmp);
    rc = test_run(cmd, &log);
    snprintf(out, sizeof out, "%s/full", tmp);
    expect_fail("a write failing half way (ulimit -f)", rc, log, "cannot write", out);
    free(log);

    rc = merge(&log, "--model " TINY " --adapter " ADAPTER);
    CHECK(rc == 2 && strstr(log, "--out"), "missing --out: usage, exit 2 (got %d)", rc);
    free(log);
}

int main(void) {
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    mg_st_file fx;
    mg_config cfg;
    mg_lora lora;
    mg_status s = mg_st_open(FIXTURE, &fx);
    CHECK(s == MG_OK, "%s: %s", FIXTURE, mg_last_error());
    if (s == MG_OK) s = mg_config_load(TINY, &cfg);
    if (s == MG_OK) s = mg_lora_load(ADAPTER, &cfg, &lora);
    CHECK(s == MG_OK, "fixtures: %s", mg_last_error());
    if (s != MG_OK) return test_finish();
    test_fp32(&fx, &lora);
    test_sharded(&fx, &lora);
    test_bad_input();
    mg_lora_free(&lora);
    mg_st_close(&fx);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK(system(cmd) == 0, "removing %s", tmp);
    return test_finish();
}
