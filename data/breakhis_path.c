#include "data/breakhis_path.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const MG_BREAKHIS_CLASSES[MG_BREAKHIS_NCLASSES] = {
    "benign_adenosis",           "benign_fibroadenoma",        "benign_phyllodes_tumor",
    "benign_tubular_adenoma",    "malignant_ductal_carcinoma", "malignant_lobular_carcinoma",
    "malignant_mucinous_carcinoma", "malignant_papillary_carcinoma",
};
const char *const MG_BREAKHIS_CLASS_FOLDERS[MG_BREAKHIS_NCLASSES] = {
    "adenosis",          "fibroadenoma",      "phyllodes_tumor",    "tubular_adenoma",
    "ductal_carcinoma",  "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma",
};
const char *const MG_BREAKHIS_TYPE_CODES[MG_BREAKHIS_NCLASSES] = { "A", "F", "PT", "TA", "DC", "LC", "MC", "PC" };

static const char *BINARY_FOLDERS[2] = { "benign", "malignant" };
static const char *const LAYOUT_HINT =
    "BreakHis paths look like .../benign/SOB/adenosis/SOB_B_A_14-22549AB/100X/SOB_B_A-14-22549AB-100-001.png; "
    "fix or remove the file, or pass --on-bad-image skip";

int mg_bh_is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".bmp");
}

/* Reads [A-Z]+ into out (cap bytes); returns the number of characters read, 0 on none or overflow. */
static size_t read_upper(const char *s, char *out, size_t cap) {
    size_t n = 0;
    while (isupper((unsigned char)s[n])) {
        if (n + 1 >= cap) return 0;
        out[n] = s[n];
        n++;
    }
    out[n] = '\0';
    return n;
}

/* Reads [0-9]+ (digits only) or [0-9A-Za-z]+ (alnum) into out; returns the length, 0 on none/overflow. */
static size_t read_token(const char *s, char *out, size_t cap, int alnum) {
    size_t n = 0;
    while (alnum ? isalnum((unsigned char)s[n]) : isdigit((unsigned char)s[n])) {
        if (n + 1 >= cap) return 0;
        out[n] = s[n];
        n++;
    }
    out[n] = '\0';
    return n;
}

/* The fields both the patient folder and the file name carry. */
typedef struct {
    char proc[8], bm[2], type[8], year[8], slide[24];
} name_fields;

/* "<proc>_<B|M>_<type><sep><year>-<slide>": sep is '_' in folders and '-' in file names.
 * Returns the number of characters consumed, 0 when the grammar does not match. */
static size_t parse_name_head(const char *s, char sep, name_fields *f) {
    size_t i = 0, n;
    if (!(n = read_upper(s, f->proc, sizeof f->proc)) || s[n] != '_') return 0;
    i = n + 1;
    if ((s[i] != 'B' && s[i] != 'M') || s[i + 1] != '_') return 0;
    f->bm[0] = s[i], f->bm[1] = '\0';
    i += 2;
    if (!(n = read_upper(s + i, f->type, sizeof f->type)) || s[i + n] != sep) return 0;
    i += n + 1;
    if (!(n = read_token(s + i, f->year, sizeof f->year, 0)) || s[i + n] != '-') return 0;
    i += n + 1;
    if (!(n = read_token(s + i, f->slide, sizeof f->slide, 1))) return 0;
    return i + n;
}

mg_status mg_bh_parse_path(const char *path, mg_bh_path_info *out) {
    /* split off the last six components: binary / procedure / class / patient / magX / file */
    const char *comp[6];
    size_t len[6];
    const char *end = path + strlen(path);
    for (int c = 5; c >= 0; c--) {
        const char *p = end;
        while (p > path && p[-1] != '/') p--;
        if (p == end) return mg_fail(MG_ERR_FORMAT, LAYOUT_HINT, "%s: path has too few folders for the BreakHis layout", path);
        comp[c] = p, len[c] = (size_t)(end - p);
        if (c > 0) {
            if (p == path) return mg_fail(MG_ERR_FORMAT, LAYOUT_HINT, "%s: path has too few folders for the BreakHis layout", path);
            end = p - 1;
        }
    }
    char part[6][256];
    for (int c = 0; c < 6; c++) {
        if (len[c] >= sizeof part[c]) return mg_fail(MG_ERR_FORMAT, LAYOUT_HINT, "%s: path component too long", path);
        memcpy(part[c], comp[c], len[c]);
        part[c][len[c]] = '\0';
    }
    const char *bin_dir = part[0], *proc_dir = part[1], *cls_dir = part[2], *pat_dir = part[3], *mag_dir = part[4],
               *file = part[5];
    memset(out, 0, sizeof *out);

    int label = -1;
    for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++)
        if (!strcmp(cls_dir, MG_BREAKHIS_CLASS_FOLDERS[k])) label = k;
    if (label < 0)
        return mg_fail(MG_ERR_FORMAT,
                       "class folders are adenosis, fibroadenoma, phyllodes_tumor, tubular_adenoma, ductal_carcinoma, "
                       "lobular_carcinoma, mucinous_carcinoma, papillary_carcinoma",
                       "%s: unknown class folder '%s'", path, cls_dir);
    int binary = mg_breakhis_binary(label);
    if (strcmp(bin_dir, BINARY_FOLDERS[binary]))
        return mg_fail(MG_ERR_FORMAT, LAYOUT_HINT, "%s: class folder '%s' sits under '%s', expected '%s'", path, cls_dir,
                       bin_dir, BINARY_FOLDERS[binary]);

    int mag = 0;
    char magx[8];
    size_t n = read_token(mag_dir, magx, sizeof magx, 0);
    mag = n ? (int)strtol(magx, NULL, 10) : 0;
    if (!n || strcmp(mag_dir + n, "X") || (mag != 40 && mag != 100 && mag != 200 && mag != 400))
        return mg_fail(MG_ERR_FORMAT, "magnification folders are 40X, 100X, 200X, 400X",
                       "%s: unknown magnification folder '%s'", path, mag_dir);

    name_fields pf, ff;
    if (parse_name_head(pat_dir, '_', &pf) != strlen(pat_dir))
        return mg_fail(MG_ERR_FORMAT, LAYOUT_HINT, "%s: patient folder '%s' does not match SOB_<B|M>_<type>_14-<slide>",
                       path, pat_dir);
    size_t h = parse_name_head(file, '-', &ff);
    char fmag[8], fseq[8];
    size_t nm = 0, ns = 0;
    if (h && file[h] == '-' && (nm = read_token(file + h + 1, fmag, sizeof fmag, 0)) && file[h + 1 + nm] == '-')
        ns = read_token(file + h + 2 + nm, fseq, sizeof fseq, 0);
    if (!h || !nm || !ns || !mg_bh_is_image_name(file + h + 2 + nm + ns) || file[h + 2 + nm + ns] != '.')
        return mg_fail(MG_ERR_FORMAT, LAYOUT_HINT, "%s: file name '%s' does not match SOB_<B|M>_<type>-14-<slide>-<mag>-<seq>.png",
                       path, file);

    /* the folder decides; every field the file name repeats must agree with it */
    const char *want_bm = binary ? "M" : "B";
    const char *what = NULL;
    if (strcmp(pf.bm, want_bm) || strcmp(ff.bm, want_bm)) what = "benign/malignant letter";
    else if (strcmp(pf.type, MG_BREAKHIS_TYPE_CODES[label]) || strcmp(ff.type, MG_BREAKHIS_TYPE_CODES[label])) what = "subtype code";
    else if (strcmp(pf.proc, proc_dir) || strcmp(ff.proc, proc_dir)) what = "procedure";
    else if (strcmp(pf.year, ff.year) || strcmp(pf.slide, ff.slide)) what = "patient (year-slide)";
    else if ((int)strtol(fmag, NULL, 10) != mag) what = "magnification";
    if (what)
        return mg_fail(MG_ERR_FORMAT, "the folder decides the label; rename or move the file so both agree, or pass --on-bad-image skip",
                       "%s: file name contradicts its folder (%s): folder %s/%s/%s, file %s", path, what, cls_dir,
                       pat_dir, mag_dir, file);

    out->label = label;
    out->binary = binary;
    out->mag = mag;
    out->seq = (int)strtol(fseq, NULL, 10);
    snprintf(out->patient, sizeof out->patient, "%s_%s_%s-%s-%s", pf.proc, pf.bm, pf.type, pf.year, pf.slide);
    size_t digits = 0;
    while (isdigit((unsigned char)pf.slide[digits])) digits++;
    if (!digits)
        return mg_fail(MG_ERR_FORMAT, LAYOUT_HINT, "%s: slide '%s' does not start with a number", path, pf.slide);
    snprintf(out->slide, sizeof out->slide, "%s-%.*s", pf.year, (int)digits, pf.slide);
    int k = snprintf(out->key, sizeof out->key, "BreaKHis_v1/histology_slides/breast/%s/%s/%s/%s/%s/%s", bin_dir,
                     proc_dir, cls_dir, pat_dir, mag_dir, file);
    if (k < 0 || (size_t)k >= sizeof out->key) return mg_fail(MG_ERR_FORMAT, NULL, "%s: path too long", path);
    return MG_OK;
}
