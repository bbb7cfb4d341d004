#include "data/breakhis_index.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/splits.h"
#include "data/targz.h"

const char *mg_bh_source_name(mg_bh_source s) {
    return s == MG_BH_FOLDS_CSV ? "Folds.csv" : s == MG_BH_TARGZ ? "tar.gz" : "folder tree";
}

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *r = malloc(n);
    if (r) memcpy(r, s, n);
    return r;
}

void mg_bh_index_free(mg_bh_index *ix) {
    if (!ix) return;
    for (int64_t i = 0; i < ix->n; i++) free(ix->recs[i].key), free(ix->recs[i].path);
    for (int64_t i = 0; i < ix->n_skipped; i++) free(ix->skipped[i].path), free(ix->skipped[i].reason);
    free(ix->recs), free(ix->skipped), free(ix->origin);
    mg_targz_close(ix->tar);
    free(ix);
}

mg_status mg_bh_add_skip(mg_bh_index *ix, const char *path) {
    if (ix->n_skipped == ix->cap_skipped) {
        int64_t c = ix->cap_skipped ? 2 * ix->cap_skipped : 16;
        mg_bh_skip *s = realloc(ix->skipped, (size_t)c * sizeof *s);
        if (!s) return mg_fail(MG_ERR_OOM, NULL, "out of memory");
        ix->skipped = s, ix->cap_skipped = c;
    }
    const char *msg = mg_last_error();
    size_t line = strcspn(msg, "\n");
    char *reason = malloc(line + 1), *p = dupstr(path);
    if (!reason || !p) return free(reason), free(p), mg_fail(MG_ERR_OOM, NULL, "out of memory");
    memcpy(reason, msg, line), reason[line] = '\0';
    ix->skipped[ix->n_skipped++] = (mg_bh_skip){ p, reason };
    return MG_OK;
}

/* A bad file: recorded under MG_BAD_SKIP (returns MG_OK), passed on under MG_BAD_FAIL. */
static mg_status bad_file(mg_bh_index *ix, mg_bad_policy on_bad, mg_status code, const char *path) {
    if (on_bad == MG_BAD_FAIL) return code;
    return mg_bh_add_skip(ix, path);
}

static mg_status add_record(mg_bh_index *ix, int64_t *cap, const mg_bh_path_info *info, const char *path,
                            int64_t tar_offset, int64_t size) {
    if (ix->n == *cap) {
        int64_t c = *cap ? 2 * *cap : 1024;
        mg_bh_record *r = realloc(ix->recs, (size_t)c * sizeof *r);
        if (!r) return mg_fail(MG_ERR_OOM, NULL, "out of memory indexing %s", ix->origin);
        ix->recs = r, *cap = c;
    }
    mg_bh_record *r = &ix->recs[ix->n];
    memset(r, 0, sizeof *r);
    r->key = dupstr(info->key), r->path = dupstr(path);
    if (!r->key || !r->path) return free(r->key), free(r->path), mg_fail(MG_ERR_OOM, NULL, "out of memory");
    r->tar_offset = tar_offset, r->size = size;
    r->label = info->label, r->binary = info->binary, r->mag = info->mag;
    memcpy(r->patient, info->patient, sizeof r->patient);
    memcpy(r->slide, info->slide, sizeof r->slide);
    ix->n++;
    return MG_OK;
}

static int cmp_key(const void *a, const void *b) {
    return strcmp(((const mg_bh_record *)a)->key, ((const mg_bh_record *)b)->key);
}

/* Sorts by key and drops later copies of a key (e.g. a tree holding the images twice). */
static mg_status sort_and_dedupe(mg_bh_index *ix, mg_bad_policy on_bad) {
    if (ix->n) qsort(ix->recs, (size_t)ix->n, sizeof *ix->recs, cmp_key); /* recs may be NULL when empty */
    int64_t w = 0;
    for (int64_t i = 0; i < ix->n; i++) {
        if (w > 0 && !strcmp(ix->recs[w - 1].key, ix->recs[i].key)) {
            mg_status st = mg_fail(MG_ERR_FORMAT, "keep one copy of the image tree", "%s: second copy of %s (first: %s)",
                                   ix->recs[i].path, ix->recs[i].key, ix->recs[w - 1].path);
            st = bad_file(ix, on_bad, st, ix->recs[i].path);
            free(ix->recs[i].key), free(ix->recs[i].path);
            if (st != MG_OK) {
                for (int64_t j = i + 1; j < ix->n; j++) ix->recs[w++] = ix->recs[j];
                ix->n = w;
                return st;
            }
            continue;
        }
        ix->recs[w++] = ix->recs[i];
    }
    ix->n = w;
    return MG_OK;
}

/* ---- form 3: a folder tree ------------------------------------------------------------------ */

static mg_status walk(mg_bh_index *ix, int64_t *cap, const char *dir, mg_bad_policy on_bad, int depth) {
    if (depth > 16) return MG_OK; /* symlink loops */
    DIR *d = opendir(dir);
    if (!d) return mg_fail(MG_ERR_IO, "check the --data path and its permissions", "cannot open folder %s", dir);
    struct dirent *e;
    mg_status st = MG_OK;
    char path[4096];
    while (st == MG_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path) continue;
        struct stat sb;
        if (stat(path, &sb)) continue;
        if (S_ISDIR(sb.st_mode)) {
            st = walk(ix, cap, path, on_bad, depth + 1);
        } else if (S_ISREG(sb.st_mode) && mg_bh_is_image_name(e->d_name)) {
            mg_bh_path_info info;
            st = mg_bh_parse_path(path, &info);
            if (st == MG_OK) st = add_record(ix, cap, &info, path, -1, (int64_t)sb.st_size);
            else st = bad_file(ix, on_bad, st, path);
        }
    }
    closedir(d);
    return st;
}

/* ---- form 2: the tar.gz --------------------------------------------------------------------- */

static mg_status index_tar(mg_bh_index *ix, int64_t *cap, mg_bad_policy on_bad) {
    mg_tar_member *m;
    int64_t nm;
    MG_TRY(mg_targz_open(ix->origin, &ix->tar, &m, &nm));
    mg_status st = MG_OK;
    for (int64_t i = 0; i < nm; i++) {
        const char *base = strrchr(m[i].name, '/');
        base = base ? base + 1 : m[i].name;
        if (st == MG_OK && base[0] != '.' && mg_bh_is_image_name(base)) {
            mg_bh_path_info info;
            st = mg_bh_parse_path(m[i].name, &info);
            if (st == MG_OK) st = add_record(ix, cap, &info, m[i].name, m[i].offset, m[i].size);
            else st = bad_file(ix, on_bad, st, m[i].name);
        }
        free(m[i].name);
    }
    free(m);
    return st;
}

/* ---- form 1: Folds.csv ---------------------------------------------------------------------- */

/* Splits one CSV line in place into at most `max` fields (double quotes honoured). */
static int csv_fields(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    while (n < max) {
        char *w = p;
        f[n++] = w;
        int quoted = *p == '"';
        if (quoted) p++;
        while (*p) {
            if (quoted && *p == '"') {
                if (p[1] == '"') { *w++ = '"'; p += 2; continue; }
                quoted = 0, p++;
                continue;
            }
            if (!quoted && *p == ',') break;
            *w++ = *p++;
        }
        int more = *p == ',';
        *w = '\0';
        if (!more) break;
        p++;
    }
    return n;
}

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

typedef struct {
    int64_t *slot; /* (cap) record index + 1; 0 = empty */
    int64_t cap;
} str_table;

/* Finds key among ix->recs[].key; returns the record index or -1, and the slot to fill. */
static int64_t table_find(const str_table *t, const mg_bh_index *ix, const char *key, int64_t *slot) {
    int64_t i = (int64_t)(hash_str(key) & (uint64_t)(t->cap - 1));
    while (t->slot[i] && strcmp(ix->recs[t->slot[i] - 1].key, key)) i = (i + 1) & (t->cap - 1);
    *slot = i;
    return t->slot[i] ? t->slot[i] - 1 : -1;
}

static mg_status index_csv(mg_bh_index *ix, int64_t *cap, const char *csv_path, const char *root, mg_bad_policy on_bad) {
    FILE *f = fopen(csv_path, "rb");
    if (!f) return mg_fail(MG_ERR_IO, "check the --data path", "cannot open %s", csv_path);
    char line[4096], *fld[16];
    int col_fold = -1, col_mag = -1, col_grp = -1, col_file = -1;
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return mg_fail(MG_ERR_FORMAT, "Folds.csv starts with the header fold,mag,grp,filename", "%s: empty file", csv_path);
    }
    line[strcspn(line, "\r\n")] = '\0';
    int nf = csv_fields(line, fld, 16);
    for (int i = 0; i < nf; i++) {
        if (!strcmp(fld[i], "fold")) col_fold = i;
        if (!strcmp(fld[i], "mag")) col_mag = i;
        if (!strcmp(fld[i], "grp")) col_grp = i;
        if (!strcmp(fld[i], "filename")) col_file = i;
    }
    if (col_fold < 0 || col_mag < 0 || col_grp < 0 || col_file < 0) {
        fclose(f);
        return mg_fail(MG_ERR_FORMAT, "Folds.csv starts with the header fold,mag,grp,filename",
                       "%s: header lacks one of the columns fold, mag, grp, filename", csv_path);
    }
    str_table t = { NULL, 1 << 14 };
    t.slot = calloc((size_t)t.cap, sizeof *t.slot);
    unsigned char *bad = NULL; /* (cap) 1 for a record whose file is missing or misnamed */
    int64_t bad_cap = 0;
    mg_status st = t.slot ? MG_OK : mg_fail(MG_ERR_OOM, NULL, "out of memory");
    int64_t lineno = 1;
    char path[4096];
    while (st == MG_OK && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) continue;
        int n = csv_fields(line, fld, 16);
        int need = col_file > col_grp ? col_file : col_grp;
        need = need > col_mag ? need : col_mag;
        need = need > col_fold ? need : col_fold;
        char *e1 = line, *e2 = line;
        long fold = n > need ? strtol(fld[col_fold], &e1, 10) : 0, mag = n > need ? strtol(fld[col_mag], &e2, 10) : 0;
        const char *grp = n > need ? fld[col_grp] : "";
        int split = !strcmp(grp, "train") ? MG_BH_SPLIT_TRAIN : !strcmp(grp, "test") ? MG_BH_SPLIT_TEST : 0;
        if (n <= need || *e1 || *e2 || fold < 1 || fold > MG_BH_NFOLDS || !split) {
            st = mg_fail(MG_ERR_FORMAT, "rows look like 1,100,train,BreaKHis_v1/histology_slides/breast/...png",
                         "%s line %lld: malformed row (fold 1-5, mag, grp train|test, filename)", csv_path, (long long)lineno);
            break;
        }
        const char *fname = fld[col_file];
        mg_bh_path_info info;
        memset(&info, 0, sizeof info);
        mg_status pst = mg_bh_parse_path(fname, &info);
        const char *key = pst == MG_OK ? info.key : fname;
        if (2 * (ix->n + 1) > t.cap) { /* grow and rehash */
            str_table g = { calloc((size_t)t.cap * 2, sizeof *t.slot), t.cap * 2 };
            if (!g.slot) { st = mg_fail(MG_ERR_OOM, NULL, "out of memory"); break; }
            for (int64_t r = 0; r < ix->n; r++) {
                int64_t s;
                table_find(&g, ix, ix->recs[r].key, &s);
                g.slot[s] = r + 1;
            }
            free(t.slot), t = g;
        }
        int64_t slot, r = table_find(&t, ix, key, &slot);
        if (r < 0) { /* first row naming this file: check it once */
            if ((size_t)snprintf(path, sizeof path, "%s/BreaKHis_v1/%s", root, fname) >= sizeof path) {
                st = mg_fail(MG_ERR_FORMAT, NULL, "%s line %lld: path too long", csv_path, (long long)lineno);
                break;
            }
            struct stat sb;
            int missing = stat(path, &sb) != 0 || !S_ISREG(sb.st_mode);
            if (pst == MG_OK && missing)
                pst = mg_fail(MG_ERR_MISSING,
                              "Folds.csv's filename column is relative to <root>/BreaKHis_v1/ (Kaggle nests BreaKHis_v1 twice); "
                              "restore the file or pass --on-bad-image skip",
                              "%s line %lld: file missing: %s", csv_path, (long long)lineno, path);
            if (pst == MG_OK && (int)mag != info.mag)
                pst = mg_fail(MG_ERR_FORMAT, "the mag column must match the magnification in the path",
                              "%s line %lld: mag %ld contradicts %s", csv_path, (long long)lineno, mag, fname);
            if (pst == MG_OK) {
                st = add_record(ix, cap, &info, path, -1, (int64_t)sb.st_size);
            } else {
                st = bad_file(ix, on_bad, pst, pst == MG_ERR_MISSING ? path : fname);
                if (st == MG_OK) { /* keep a placeholder so later rows of this file are dropped quietly */
                    snprintf(info.key, sizeof info.key, "%s", key);
                    st = add_record(ix, cap, &info, path, -1, 0);
                }
            }
            if (st != MG_OK) break;
            r = ix->n - 1;
            t.slot[slot] = r + 1;
            if (ix->n > bad_cap) {
                int64_t c = *cap;
                unsigned char *b = realloc(bad, (size_t)c);
                if (!b) { st = mg_fail(MG_ERR_OOM, NULL, "out of memory"); break; }
                memset(b + bad_cap, 0, (size_t)(c - bad_cap));
                bad = b, bad_cap = c;
            }
            bad[r] = pst != MG_OK;
        }
        if (bad[r]) continue;
        unsigned char *s = &ix->recs[r].split[fold - 1];
        if (*s && *s != split) {
            st = mg_fail(MG_ERR_FORMAT, "each file appears at most once per fold", "%s line %lld: %s is both train and test in fold %ld",
                         csv_path, (long long)lineno, fname, fold);
            break;
        }
        *s = (unsigned char)split;
    }
    fclose(f);
    free(t.slot);
    /* drop the placeholders of bad files */
    int64_t w = 0;
    for (int64_t r = 0; r < ix->n; r++) {
        if (bad && bad[r]) { free(ix->recs[r].key), free(ix->recs[r].path); continue; }
        ix->recs[w++] = ix->recs[r];
    }
    ix->n = w;
    free(bad);
    return st;
}

/* ---- opening ------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

mg_status mg_bh_index_open(const char *path, mg_bad_policy on_bad, mg_bh_index **out) {
    *out = NULL;
    mg_bh_index *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->origin = dupstr(path))) return free(ix), mg_fail(MG_ERR_OOM, NULL, "out of memory");
    size_t plen = strlen(ix->origin);
    while (plen > 1 && ix->origin[plen - 1] == '/') ix->origin[--plen] = '\0';
    struct stat sb;
    mg_status st;
    int64_t cap = 0;
    char csv[4096];
    if (stat(ix->origin, &sb)) {
        st = mg_fail(MG_ERR_IO,
                     "--data takes the Kaggle download folder (with Folds.csv), BreaKHis_v1.tar.gz, or a BreaKHis_v1 folder",
                     "cannot open %s", ix->origin);
    } else if (S_ISDIR(sb.st_mode)) {
        snprintf(csv, sizeof csv, "%s/Folds.csv", ix->origin);
        if (!stat(csv, &sb)) {
            ix->source = MG_BH_FOLDS_CSV;
            st = index_csv(ix, &cap, csv, ix->origin, on_bad);
        } else {
            ix->source = MG_BH_TREE;
            st = walk(ix, &cap, ix->origin, on_bad, 0);
        }
    } else if (ends_with(ix->origin, ".csv")) {
        ix->source = MG_BH_FOLDS_CSV;
        char root[4096];
        snprintf(root, sizeof root, "%s", ix->origin);
        char *slash = strrchr(root, '/');
        if (slash) *slash = '\0'; else snprintf(root, sizeof root, ".");
        st = index_csv(ix, &cap, ix->origin, root, on_bad);
    } else if (ends_with(ix->origin, ".tar.gz") || ends_with(ix->origin, ".tgz")) {
        ix->source = MG_BH_TARGZ;
        st = index_tar(ix, &cap, on_bad);
    } else {
        st = mg_fail(MG_ERR_ARG,
                     "--data takes the Kaggle download folder (with Folds.csv), BreaKHis_v1.tar.gz, or a BreaKHis_v1 folder",
                     "%s: not a folder, a Folds.csv or a .tar.gz", ix->origin);
    }
    if (st == MG_OK) st = sort_and_dedupe(ix, on_bad);
    if (st == MG_OK && ix->n == 0)
        st = mg_fail(MG_ERR_MISSING, "point --data at the Kaggle download folder, BreaKHis_v1.tar.gz, or a folder holding histology_slides/",
                     "%s: no BreakHis images found (%lld skipped)", ix->origin, (long long)ix->n_skipped);
    if (st == MG_OK && ix->source != MG_BH_FOLDS_CSV) mg_bh_make_folds(ix, MG_BH_FOLD_SEED);
    if (st != MG_OK) {
        mg_bh_index_free(ix);
        return st;
    }
    *out = ix;
    return MG_OK;
}

mg_status mg_bh_read_bytes(const mg_bh_index *ix, int64_t i, unsigned char **bytes, size_t *n) {
    const mg_bh_record *r = &ix->recs[i];
    *bytes = NULL, *n = 0;
    if (r->tar_offset >= 0) {
        unsigned char *b = malloc(r->size > 0 ? (size_t)r->size : 1);
        if (!b) return mg_fail(MG_ERR_OOM, NULL, "out of memory reading %s", r->path);
        mg_status st = mg_targz_read(ix->tar, r->tar_offset, r->size, b);
        if (st != MG_OK) return free(b), mg_fail_context(st, "%s: ", r->path);
        *bytes = b, *n = (size_t)r->size;
        return MG_OK;
    }
    FILE *f = fopen(r->path, "rb");
    if (!f) return mg_fail(MG_ERR_IO, "the file was there when the index was built; restore it", "cannot open %s", r->path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = len >= 0 ? malloc(len > 0 ? (size_t)len : 1) : NULL;
    if (!b || fread(b, 1, (size_t)len, f) != (size_t)len) {
        fclose(f), free(b);
        return mg_fail(MG_ERR_IO, NULL, "cannot read %s", r->path);
    }
    fclose(f);
    *bytes = b, *n = (size_t)len;
    return MG_OK;
}
