/* Checkpoint integrity and choice (engine/jobs/train_ckpt.h). */
#include "engine/jobs/train_ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "engine/json.h"

/* Size and CRC-32 of a file, read in 1 MiB pieces. */
static mg_status file_crc(const char *path, long long *bytes, unsigned long *crc) {
    FILE *f = fopen(path, "rb");
    if (!f) return mg_fail(errno == ENOENT ? MG_ERR_MISSING : MG_ERR_IO, NULL, "cannot read %s: %s", path, strerror(errno));
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf) {
        fclose(f);
        return mg_fail(MG_ERR_OOM, NULL, "reading %s", path);
    }
    uLong c = crc32(0L, Z_NULL, 0);
    long long n = 0;
    for (size_t got; (got = fread(buf, 1, CHUNK, f)) > 0;) c = crc32(c, buf, (uInt)got), n += (long long)got;
    const int err = ferror(f);
    free(buf);
    fclose(f);
    if (err) return mg_fail(MG_ERR_IO, NULL, "error reading %s", path);
    *bytes = n, *crc = c;
    return MG_OK;
}

/* checkpoint-<digits> -> the step; anything else -> -1 */
static int ckpt_step(const char *name) {
    if (strncmp(name, "checkpoint-", 11) || !name[11]) return -1;
    long v = 0;
    for (const char *p = name + 11; *p; p++) {
        if (*p < '0' || *p > '9' || v > INT_MAX / 10) return -1;
        v = v * 10 + (*p - '0');
    }
    return (int)v;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_desc(const void *a, const void *b) {
    const int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

mg_status mg_ckpt_manifest(const char *dir, char **json) {
    *json = NULL;
    DIR *d = opendir(dir);
    if (!d) return mg_fail(MG_ERR_IO, NULL, "cannot list %s: %s", dir, strerror(errno));
    char **names = NULL, path[4352];
    int n = 0, cap = 0;
    mg_status s = MG_OK;
    for (struct dirent *e; s == MG_OK && (e = readdir(d));) {
        const char *nm = e->d_name;
        if (nm[0] == '.' || !strcmp(nm, "state.json") || strstr(nm, ".tmp.") || strpbrk(nm, "\"\\")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, nm);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (n == cap) {
            char **g = realloc(names, (size_t)(cap = cap ? 2 * cap : 8) * sizeof *names);
            if (!g) { s = mg_fail(MG_ERR_OOM, NULL, "listing %s", dir); break; }
            names = g;
        }
        if (!(names[n] = strdup(nm))) s = mg_fail(MG_ERR_OOM, NULL, "listing %s", dir);
        else n++;
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_str);
    size_t len = 2, used = 0;
    for (int i = 0; i < n; i++) len += strlen(names[i]) + 64;
    char *out = s == MG_OK ? malloc(len) : NULL;
    if (s == MG_OK && !out) s = mg_fail(MG_ERR_OOM, NULL, "manifest of %s", dir);
    if (out) used += (size_t)snprintf(out, len, "{");
    for (int i = 0; s == MG_OK && i < n; i++) {
        long long bytes;
        unsigned long crc;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if ((s = file_crc(path, &bytes, &crc)) != MG_OK) break;
        used += (size_t)snprintf(out + used, len - used, "%s\"%s\": {\"bytes\": %lld, \"crc32\": \"%08lx\"}", i ? ", " : "",
                                 names[i], bytes, crc);
    }
    if (out && s == MG_OK) snprintf(out + used, len - used, "}");
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (s != MG_OK) {
        free(out);
        return s;
    }
    *json = out;
    return MG_OK;
}

mg_status mg_ckpt_verify(const char *dir) {
    char path[4352];
    snprintf(path, sizeof path, "%s/state.json", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return mg_fail(MG_ERR_MISSING, NULL, "%s has no state.json (a checkpoint is complete once it is written, last)", dir);
    mg_json *j;
    MG_TRY(mg_json_parse_file(path, &j));
    const mg_json *files = mg_json_get(j, "files");
    mg_status s = MG_OK;
    if (files && files->type != MG_JSON_OBJECT) s = mg_fail(MG_ERR_FORMAT, NULL, "%s: \"files\" is not an object", path);
    for (int i = 0; s == MG_OK && files && i < files->n; i++) {
        const mg_json *f = &files->items[i];
        const double want_bytes = mg_json_get_number(f, "bytes", -1);
        const char *want_crc = mg_json_get_string(f, "crc32", NULL);
        if (want_bytes < 0 || !want_crc || strchr(f->key, '/')) {
            s = mg_fail(MG_ERR_FORMAT, NULL, "%s: entry \"%s\" lacks bytes/crc32", path, f->key);
            break;
        }
        char fp[4352];
        snprintf(fp, sizeof fp, "%s/%s", dir, f->key);
        long long bytes;
        unsigned long crc;
        if ((s = file_crc(fp, &bytes, &crc)) != MG_OK) break;
        char got[16];
        snprintf(got, sizeof got, "%08lx", crc);
        if ((double)bytes != want_bytes)
            s = mg_fail(MG_ERR_FORMAT, NULL, "%s has %lld bytes, state.json says %.0f (truncated or overwritten)", fp, bytes,
                        want_bytes);
        else if (strcmp(got, want_crc))
            s = mg_fail(MG_ERR_FORMAT, NULL, "%s has CRC-32 %s, state.json says %s (corrupted)", fp, got, want_crc);
    }
    mg_json_free(j);
    return s;
}

/* The checkpoint steps in dir, newest first; *n of them (malloc'd array, NULL when none). */
static int *list_steps(const char *dir, int *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int *v = NULL, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const int s = ckpt_step(e->d_name);
        if (s < 0) continue;
        if (*n == cap) {
            int *g = realloc(v, (size_t)(cap = cap ? 2 * cap : 8) * sizeof *v);
            if (!g) break;
            v = g;
        }
        v[(*n)++] = s;
    }
    closedir(d);
    if (*n) qsort(v, (size_t)*n, sizeof *v, cmp_desc);
    return v;
}

int mg_ckpt_newest_step(const char *out_dir) {
    int n;
    int *steps = list_steps(out_dir, &n);
    const int newest = n > 0 ? steps[0] : -1; /* sorted newest first */
    free(steps);
    return newest;
}

/* The newest checkpoint of run_dir with step < below that verifies; its path in dir. Appends the
 * damaged ones skipped to skipped. Returns its step or -1. */
static int newest_complete(const char *run_dir, int below, char *dir, size_t cap, char *skipped, size_t skipped_cap) {
    int n, found = -1;
    int *steps = list_steps(run_dir, &n);
    for (int i = 0; i < n && found < 0; i++) {
        if (steps[i] >= below) continue;
        snprintf(dir, cap, "%s/checkpoint-%d", run_dir, steps[i]);
        if (mg_ckpt_verify(dir) == MG_OK) found = steps[i];
        else if (skipped) {
            const size_t u = strlen(skipped);
            snprintf(skipped + u, skipped_cap - u, "%s%s", u ? "; " : "", mg_last_error());
        }
    }
    free(steps);
    mg_clear_error();
    return found;
}

mg_status mg_ckpt_resolve(const char *path, char *dir, size_t dir_cap, char *note, size_t note_cap) {
    if (note && note_cap) note[0] = 0;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return mg_fail(MG_ERR_MISSING, "give a checkpoint-<step> folder or the --out folder of the run",
                       "--resume %s is not a complete checkpoint: no such folder", path);
    char sp[4352], parent[4096], why[2048] = "";
    snprintf(sp, sizeof sp, "%s/state.json", path);
    snprintf(parent, sizeof parent, "%s", path);
    size_t pl = strlen(parent);
    while (pl > 1 && parent[pl - 1] == '/') parent[--pl] = 0;
    char *slash = strrchr(parent, '/');
    const char *base = slash ? slash + 1 : parent;
    const int step = ckpt_step(base);
    if (step >= 0 || stat(sp, &st) == 0) {
        /* a checkpoint folder */
        if (mg_ckpt_verify(path) == MG_OK) {
            snprintf(dir, dir_cap, "%s", path);
            return MG_OK;
        }
        snprintf(why, sizeof why, "%s", mg_last_error());
        if (slash == parent) parent[1] = 0;
        else if (slash) *slash = 0;
        else snprintf(parent, sizeof parent, ".");
        const int prev = step >= 0 ? newest_complete(parent, step, dir, dir_cap, NULL, 0) : -1;
        if (prev < 0)
            return mg_fail(MG_ERR_FORMAT, "start the run again without --resume",
                           "--resume %s is not a complete checkpoint (%s), and %s holds no earlier complete one", path,
                           why, parent);
        if (note)
            snprintf(note, note_cap, "%s is damaged or incomplete (%s); resuming from the previous complete checkpoint %s",
                     path, why, dir);
        return MG_OK;
    }
    /* a run folder: its newest complete checkpoint */
    if (newest_complete(parent, INT_MAX, dir, dir_cap, why, sizeof why) < 0)
        return mg_fail(MG_ERR_MISSING, "give a checkpoint-<step> folder or the --out folder of the run",
                       "--resume %s is not a complete checkpoint and holds no complete checkpoint-<step> folder%s%s", path,
                       why[0] ? ": " : "", why);
    if (note && why[0]) snprintf(note, note_cap, "skipped damaged or incomplete checkpoints (%s); resuming from %s", why, dir);
    return MG_OK;
}

void mg_ckpt_remove(const char *dir) {
    char path[4352];
    snprintf(path, sizeof path, "%s/state.json", dir);
    unlink(path);
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

void mg_ckpt_prune(const char *out_dir, int keep_step) {
    int n, kept = 0;
    int *steps = list_steps(out_dir, &n);
    char dir[4352];
    for (int i = 0; i < n; i++) {
        if (steps[i] >= keep_step) continue;
        snprintf(dir, sizeof dir, "%s/checkpoint-%d", out_dir, steps[i]);
        if (!kept && mg_ckpt_verify(dir) == MG_OK) kept = 1;
        else mg_ckpt_remove(dir);
    }
    free(steps);
    mg_clear_error();
}
