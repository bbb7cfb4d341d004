/* `medgem merge` (engine/jobs/merge.h): base checkpoint + PEFT adapter -> a merged model directory,
 * staged beside OUT and renamed into place when complete. */
#include "engine/jobs/merge.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/atomic_file.h"
#include "engine/config.h"
#include "engine/safetensors.h"
#include "model/lora.h"
#include "model/weights.h"

#define INDEX_NAME "model.safetensors.index.json"

/* ---- paths ----------------------------------------------------------------------------------- */

/* path without trailing slashes ("/" stays "/"); 0 when it does not fit. */
static int trim_path(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    if (n == 0 || n >= cap) return 0;
    memcpy(out, path, n);
    out[n] = '\0';
    return 1;
}

static int join(char *out, size_t cap, const char *dir, const char *name) {
    return snprintf(out, cap, "%s/%s", dir, name) < (int)cap;
}

/* 1 when inner is outer or lies under it (both canonical, from realpath). */
static int path_within(const char *outer, const char *inner) {
    const size_t n = strlen(outer);
    if (!strcmp(outer, "/")) return 1;
    return !strncmp(outer, inner, n) && (inner[n] == '\0' || inner[n] == '/');
}

/* 1: a directory with no entries; 0: a non-empty directory; -1: not a directory (errno set). */
static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return -1;
    int empty = 1;
    for (struct dirent *e; empty && (e = readdir(d));) empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

/* Deletes a tree without following symbolic links; 0 on success. */
static int remove_tree(const char *path) {
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) fsync(fd), close(fd);
}

/* ---- the output directory -------------------------------------------------------------------- */

typedef struct {
    char out[MG_PATH_MAX];     /* the final directory */
    char parent[MG_PATH_MAX];  /* its parent, fsynced after the rename */
    char stage[MG_PATH_MAX + 16]; /* OUT.tmp-XXXXXX while writing; "" when there is none */
    int replace;               /* out exists and is not empty (force) */
} output;

/* With force, OUT is replaced only when that cannot delete the inputs or the working directory. */
static mg_status check_replace(const mg_merge_opts *o, const char *out) {
    char real_out[PATH_MAX], real[PATH_MAX], cwd[PATH_MAX];
    if (!realpath(out, real_out))
        return mg_fail(MG_ERR_IO, NULL, "cannot resolve --out %s: %s", out, strerror(errno));
    const char *inputs[3] = { o->model_dir, o->adapter_dir, getcwd(cwd, sizeof cwd) };
    const char *what[3] = { "the model directory", "the adapter directory", "the working directory" };
    for (int i = 0; i < 3; i++)
        if (inputs[i] && realpath(inputs[i], real) && path_within(real_out, real))
            return mg_fail(MG_ERR_ARG, "write the merged model to a new directory",
                           "--out %s holds %s (%s); --force would delete it", out, what[i], inputs[i]);
    return MG_OK;
}

static mg_status output_prepare(const mg_merge_opts *o, output *d) {
    memset(d, 0, sizeof *d);
    if (!o->out_dir || !trim_path(o->out_dir, d->out, sizeof d->out))
        return mg_fail(MG_ERR_ARG, "give --out a new directory path", "--out '%s' is not a usable path",
                       o->out_dir ? o->out_dir : "");
    if (!strcmp(d->out, "/")) return mg_fail(MG_ERR_ARG, "give --out a new directory path", "--out is /");
    snprintf(d->parent, sizeof d->parent, "%s", d->out);
    char *slash = strrchr(d->parent, '/');
    if (!slash) snprintf(d->parent, sizeof d->parent, ".");
    else if (slash == d->parent) d->parent[1] = '\0';
    else *slash = '\0';

    struct stat st;
    if (stat(d->out, &st) == 0) {
        const int empty = dir_is_empty(d->out);
        if (empty < 0)
            return mg_fail(MG_ERR_ARG, "give --out a directory path (new, or empty)",
                           "--out %s exists and is not a readable directory: %s", d->out, strerror(errno));
        if (!empty && !o->force)
            return mg_fail(MG_ERR_ARG, "choose a new directory, or pass --force to replace it and delete its content",
                           "--out %s exists and is not empty", d->out);
        if (!empty) MG_TRY(check_replace(o, d->out));
        d->replace = !empty;
    } else if (errno != ENOENT) {
        return mg_fail(MG_ERR_IO, "check the path and the permissions", "cannot inspect --out %s: %s", d->out,
                       strerror(errno));
    }
    snprintf(d->stage, sizeof d->stage, "%s.tmp-XXXXXX", d->out);
    if (!mkdtemp(d->stage)) {
        const int err = errno;
        d->stage[0] = '\0';
        return mg_fail(MG_ERR_IO,
                       err == ENOENT ? "create the parent directory of --out first"
                                     : "check the free disk space and the permissions of the parent of --out",
                       "cannot create a directory beside %s: %s", d->out, strerror(err));
    }
    chmod(d->stage, 0755); /* mkdtemp makes 0700; the result is an ordinary shared directory */
    return MG_OK;
}

/* Removes the staging directory (after a failure). */
static void output_abandon(output *d) {
    if (d->stage[0]) remove_tree(d->stage);
    d->stage[0] = '\0';
}

/* Renames the complete staging directory to OUT. An empty OUT is replaced by the rename itself; a
 * non-empty one (force) is swapped with it atomically (RENAME_EXCHANGE) where the file system can,
 * else moved aside first, then deleted. */
static mg_status output_commit(output *d) {
    fsync_dir(d->stage);
    if (!d->replace) {
        if (rename(d->stage, d->out) != 0)
            return mg_fail(MG_ERR_IO, "check that nothing else writes --out meanwhile", "cannot rename %s to %s: %s",
                           d->stage, d->out, strerror(errno));
        d->stage[0] = '\0';
        fsync_dir(d->parent);
        return MG_OK;
    }
    char old[MG_PATH_MAX + 16];
    if (renameat2(AT_FDCWD, d->stage, AT_FDCWD, d->out, RENAME_EXCHANGE) == 0) {
        snprintf(old, sizeof old, "%s", d->stage); /* the stage name now holds the old content */
    } else {
        /* an empty placeholder, replaced by the old OUT (a rename onto an empty directory) */
        snprintf(old, sizeof old, "%s.old-XXXXXX", d->out);
        int moved = 0, err = 0;
        if (!mkdtemp(old)) err = errno, old[0] = '\0';
        else if (rename(d->out, old) != 0) err = errno;
        else if (moved = 1, rename(d->stage, d->out) != 0) err = errno;
        if (err) {
            if (moved) rename(old, d->out); /* put the old content back */
            else if (old[0]) rmdir(old);
            return mg_fail(MG_ERR_IO, "check the permissions of --out and its parent",
                           "cannot replace %s with the merged model: %s", d->out, strerror(err));
        }
    }
    d->stage[0] = '\0';
    fsync_dir(d->parent);
    if (remove_tree(old) != 0)
        return mg_fail(MG_ERR_IO, "delete it by hand; the merged model in --out is complete",
                       "merged into %s, but cannot delete its old content, now in %s: %s", d->out, old,
                       strerror(errno));
    return MG_OK;
}

/* ---- tensors --------------------------------------------------------------------------------- */

/* The checkpoint tensor of a module's Linear weight, as mg_weights_bind found it. */
static const mg_st_tensor *linear_tensor(const mg_weights *w, const mg_lora_module *mod) {
    if (mod->comp == MG_COMP_VISION) {
        const mg_vision_layer_weights *l = &w->vision[mod->layer];
        const mg_st_tensor *const t[MG_LORA_N_KINDS] = { l->q_w, l->k_w, l->v_w, l->o_w, NULL, NULL, NULL,
                                                         l->fc1_w, l->fc2_w };
        return t[mod->kind];
    }
    const mg_text_layer_weights *l = &w->text[mod->layer];
    const mg_st_tensor *const t[MG_LORA_N_KINDS] = { l->q_w, l->k_w, l->v_w, l->o_w, l->gate_w, l->up_w, l->down_w,
                                                     NULL, NULL };
    return t[mod->kind];
}

/* Every module adapts a weight of the checkpoint with its shape (mg_lora_load and mg_weights_bind
 * checked both against the config; this guards the link between them). */
static mg_status check_modules(const mg_weights *w, const mg_lora *lora) {
    for (int i = 0; i < lora->n; i++) {
        const mg_lora_module *mod = &lora->mods[i];
        const mg_st_tensor *t = linear_tensor(w, mod);
        if (!t || t->ndim != 2 || t->shape[0] != mod->out || t->shape[1] != mod->in)
            return mg_fail(MG_ERR_SHAPE, "merge the adapter into the model it was trained on",
                           "LoRA module %s layer %d %s (%d x %d) has no weight of that shape in the checkpoint",
                           mod->comp == MG_COMP_TEXT ? "text" : "vision", mod->layer,
                           mg_lora_module_name(mod->comp, mod->kind), mod->out, mod->in);
    }
    return MG_OK;
}

/* The module adapting checkpoint tensor t, or NULL (a few hundred modules: a plain search). */
static const mg_lora_module *module_of(const mg_weights *w, const mg_lora *lora, const mg_st_tensor *t) {
    for (int i = 0; i < lora->n; i++)
        if (linear_tensor(w, &lora->mods[i]) == t) return &lora->mods[i];
    return NULL;
}

/* W + (B·A)·scale in fp32, rounded once to W's dtype, in a new buffer (*out). */
static mg_status merged_tensor(const mg_st_tensor *t, const mg_lora_module *mod, void **out) {
    const size_t n = (size_t)mg_st_numel(t);
    float *w = malloc(n * sizeof(float));
    if (!w) return mg_fail(MG_ERR_OOM, NULL, "merge: %s (%zu values in fp32)", t->name, n);
    mg_to_f32(w, t->data, t->dtype, n);
    mg_lora_add_delta(mod, w);
    if (t->dtype == MG_F32) {
        *out = w;
        return MG_OK;
    }
    uint16_t *h = malloc(n * sizeof *h);
    if (!h) {
        free(w);
        return mg_fail(MG_ERR_OOM, NULL, "merge: %s (%zu values)", t->name, n);
    }
    if (t->dtype == MG_BF16) mg_to_bf16(h, w, MG_F32, n);
    else for (size_t i = 0; i < n; i++) h[i] = mg_f32_to_f16(w[i]);
    free(w);
    *out = h;
    return MG_OK;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* One safetensors file of the checkpoint, merged, under its own name in dir. */
static mg_status write_file(const mg_st_file *f, const mg_weights *w, const mg_lora *lora, const char *dir,
                            mg_merge_result *r) {
    mg_st_entry *e = calloc((size_t)f->n + 1, sizeof *e);
    void **owned = calloc((size_t)f->n + 1, sizeof *owned);
    mg_status s = e && owned ? MG_OK : mg_fail(MG_ERR_OOM, NULL, "merge: writing %s", f->path);
    for (int i = 0; s == MG_OK && i < f->n; i++) {
        const mg_st_tensor *t = &f->tensors[i];
        e[i] = (mg_st_entry){ .name = t->name, .dtype = t->dtype, .ndim = t->ndim, .shape = t->shape, .data = t->data };
        const mg_lora_module *mod = module_of(w, lora, t);
        if (mod && (s = merged_tensor(t, mod, &owned[i])) == MG_OK) e[i].data = owned[i];
        r->tensor_bytes += t->nbytes;
        r->dtypes |= 1u << t->dtype;
    }
    char path[MG_PATH_MAX];
    if (s == MG_OK && !join(path, sizeof path, dir, base_name(f->path)))
        s = mg_fail(MG_ERR_ARG, "use a shorter --out path", "merge: the path of %s is too long", base_name(f->path));
    static const char *const META[2] = { "format", "pt" }; /* what save_pretrained writes; from_pretrained checks it */
    if (s == MG_OK) s = mg_st_write(path, e, f->n, META, 1);
    if (s == MG_OK) r->n_tensors += f->n, r->n_files++;
    for (int i = 0; owned && i < f->n; i++) free(owned[i]);
    free(owned), free(e);
    return s;
}

/* ---- other files ----------------------------------------------------------------------------- */

/* The files of a model directory besides the weights that from_pretrained / AutoProcessor read. */
static int wanted(const char *name) {
    static const char *const NAMES[] = {
        "config.json",          "generation_config.json", "tokenizer.model",         "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",     "processor_config.json",
        "preprocessor_config.json",
    };
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++)
        if (!strcmp(name, NAMES[i])) return 1;
    return !strncmp(name, "chat_template", 13);
}

/* Copies src to dst atomically (the whole file in memory: these are at most tens of MB). */
static mg_status copy_file(const char *src, const char *dst) {
    char *buf;
    size_t n;
    MG_TRY(mg_read_file(src, &buf, &n));
    const mg_status s = mg_write_file_atomic(dst, buf, n);
    free(buf);
    return s;
}

static mg_status copy_side_files(const char *model_dir, const char *dir, mg_merge_result *r) {
    DIR *d = opendir(model_dir);
    if (!d) return mg_fail(MG_ERR_IO, "check the path and the permissions", "cannot list %s: %s", model_dir,
                           strerror(errno));
    mg_status s = MG_OK;
    for (struct dirent *e; s == MG_OK && (e = readdir(d));) {
        char src[MG_PATH_MAX], dst[MG_PATH_MAX];
        struct stat st;
        if (!wanted(e->d_name)) continue;
        if (!join(src, sizeof src, model_dir, e->d_name) || !join(dst, sizeof dst, dir, e->d_name)) {
            s = mg_fail(MG_ERR_ARG, "use shorter paths", "merge: the path of %s is too long", e->d_name);
            break;
        }
        if (stat(src, &st) != 0 || !S_ISREG(st.st_mode)) continue; /* follows the Hub cache's symlinks */
        if ((s = copy_file(src, dst)) == MG_OK) r->n_copied++;
    }
    closedir(d);
    return s;
}

/* ---- the job --------------------------------------------------------------------------------- */

mg_status mg_merge_run(const mg_merge_opts *o, mg_merge_result *r) {
    memset(r, 0, sizeof *r);
    if (!o->model_dir || !o->adapter_dir)
        return mg_fail(MG_ERR_ARG, "give --model DIR and --adapter DIR", "merge needs a model and an adapter");
    mg_config cfg;
    mg_checkpoint ck = { 0 };
    mg_weights w = { 0 };
    mg_lora lora = { 0 };
    output d = { 0 };

    /* everything is read and checked before anything is written */
    mg_status s = mg_config_load(o->model_dir, &cfg);
    if (s == MG_OK) s = mg_checkpoint_open(o->model_dir, &ck);
    if (s == MG_OK) s = mg_weights_bind(&ck, &cfg, &w);
    if (s == MG_OK) s = mg_lora_load(o->adapter_dir, &cfg, &lora);
    if (s == MG_OK) s = check_modules(&w, &lora);
    if (s == MG_OK) s = output_prepare(o, &d);
    if (s != MG_OK) goto done;
    r->n_modules = lora.n, r->r = lora.r, r->alpha = lora.alpha;

    char index_src[MG_PATH_MAX], index_dst[MG_PATH_MAX];
    r->sharded = join(index_src, sizeof index_src, o->model_dir, INDEX_NAME) && access(index_src, F_OK) == 0;
    for (int f = 0; s == MG_OK && f < ck.n_files; f++) {
        if (o->progress) o->progress(o->progress_user, base_name(ck.files[f].path), f, ck.n_files);
        s = write_file(&ck.files[f], &w, &lora, d.stage, r);
    }
    if (s == MG_OK) s = copy_side_files(o->model_dir, d.stage, r);
    /* the index last: the shards it names are all in place before it */
    if (s == MG_OK && r->sharded)
        s = join(index_dst, sizeof index_dst, d.stage, INDEX_NAME)
                ? copy_file(index_src, index_dst)
                : mg_fail(MG_ERR_ARG, "use a shorter --out path", "merge: the path of %s is too long", INDEX_NAME);
    if (s == MG_OK) s = output_commit(&d);
    if (s != MG_OK && d.stage[0]) {
        mg_fail_context(s, "writing the merged model to %s (left as it was): ", d.out);
        output_abandon(&d);
    }
done:
    mg_lora_free(&lora);
    mg_weights_free(&w);
    mg_checkpoint_close(&ck);
    return s;
}
