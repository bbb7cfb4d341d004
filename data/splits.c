#include "data/splits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/rng.h"

mg_bh_selection mg_bh_selection_default(mg_bh_split split) {
    return (mg_bh_selection){ .fold = 1, .mag = 100, .split = split, .balance = MG_BALANCE_BINARY, .seed = 42 };
}

static const mg_bh_index *g_sort_ix; /* qsort has no context argument; folds are built on one thread */

static int cmp_slide(const void *a, const void *b) {
    const mg_bh_record *ra = &g_sort_ix->recs[*(const int64_t *)a], *rb = &g_sort_ix->recs[*(const int64_t *)b];
    return strcmp(ra->slide, rb->slide);
}

void mg_bh_make_folds(mg_bh_index *ix, uint64_t seed) {
    /* one representative record per distinct slide, in slide order */
    int64_t *order = malloc((size_t)ix->n * sizeof *order), *pat = malloc((size_t)ix->n * sizeof *pat);
    int64_t *group = malloc((size_t)ix->n * sizeof *group), *of_rec = malloc((size_t)ix->n * sizeof *of_rec);
    if (!order || !pat || !group || !of_rec) goto done; /* leaves splits unset: selections come out empty */
    for (int64_t i = 0; i < ix->n; i++) order[i] = i;
    g_sort_ix = ix;
    qsort(order, (size_t)ix->n, sizeof *order, cmp_slide);
    int64_t np = 0;
    for (int64_t k = 0; k < ix->n; k++) {
        int64_t i = order[k];
        if (k == 0 || strcmp(ix->recs[order[k - 1]].slide, ix->recs[i].slide)) pat[np++] = i;
        of_rec[i] = np - 1;
    }
    unsigned char *side = malloc((size_t)np);
    if (!side) goto done;
    for (int f = 0; f < MG_BH_NFOLDS; f++) {
        mg_rng rng = mg_rng_seed(seed, (uint64_t)f);
        for (int c = 0; c < MG_BREAKHIS_NCLASSES; c++) { /* stratified: each class's patients split 70/30 */
            int64_t ng = 0;
            for (int64_t p = 0; p < np; p++)
                if (ix->recs[pat[p]].label == c) group[ng++] = p;
            mg_rng_shuffle(&rng, group, ng);
            int64_t ntest = (int64_t)(0.3 * (double)ng + 0.5);
            if (ntest == 0 && ng >= 2) ntest = 1;
            for (int64_t k = 0; k < ng; k++) side[group[k]] = k < ntest ? MG_BH_SPLIT_TEST : MG_BH_SPLIT_TRAIN;
        }
        for (int64_t i = 0; i < ix->n; i++) ix->recs[i].split[f] = side[of_rec[i]];
    }
    free(side);
done:
    free(order), free(pat), free(group), free(of_rec);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

mg_status mg_bh_select(const mg_bh_index *ix, const mg_bh_selection *sel, int64_t **idx, int64_t *n) {
    *idx = NULL, *n = 0;
    if (sel->fold < 1 || sel->fold > MG_BH_NFOLDS) return mg_fail(MG_ERR_ARG, "folds are 1-5", "--fold %d out of range", sel->fold);
    if (sel->split != MG_BH_SPLIT_TRAIN && sel->split != MG_BH_SPLIT_TEST)
        return mg_fail(MG_ERR_ARG, "--split train or test", "bad split");
    /* group the matching records by what balancing equalises: class label or binary label */
    int ngroups = sel->balance == MG_BALANCE_CLASS ? MG_BREAKHIS_NCLASSES : sel->balance == MG_BALANCE_BINARY ? 2 : 1;
    int64_t *g[MG_BREAKHIS_NCLASSES] = { 0 }, cnt[MG_BREAKHIS_NCLASSES] = { 0 };
    for (int k = 0; k < ngroups; k++)
        if (!(g[k] = malloc(((size_t)ix->n + 1) * sizeof *g[k]))) {
            for (int j = 0; j < k; j++) free(g[j]);
            return mg_fail(MG_ERR_OOM, NULL, "out of memory");
        }
    for (int64_t i = 0; i < ix->n; i++) {
        const mg_bh_record *r = &ix->recs[i];
        if (r->split[sel->fold - 1] != sel->split || (sel->mag && r->mag != sel->mag)) continue;
        int k = sel->balance == MG_BALANCE_CLASS ? r->label : sel->balance == MG_BALANCE_BINARY ? r->binary : 0;
        g[k][cnt[k]++] = i;
    }
    int64_t smallest = -1, total = 0;
    for (int k = 0; k < ngroups; k++)
        if (cnt[k] > 0 && (smallest < 0 || cnt[k] < smallest)) smallest = cnt[k];
    mg_rng rng = mg_rng_seed(sel->seed, (uint64_t)(sel->fold * 16 + sel->split));
    for (int k = 0; k < ngroups; k++) {
        if (ngroups > 1 && smallest >= 0 && cnt[k] > smallest) {
            mg_rng_shuffle(&rng, g[k], cnt[k]); /* keep a seeded random `smallest` of them */
            cnt[k] = smallest;
        }
        total += cnt[k];
    }
    int64_t *out = malloc(((size_t)total + 1) * sizeof *out);
    if (out) {
        int64_t w = 0;
        for (int k = 0; k < ngroups; k++) memcpy(out + w, g[k], (size_t)cnt[k] * sizeof *out), w += cnt[k];
        qsort(out, (size_t)total, sizeof *out, cmp_i64);
    }
    for (int k = 0; k < ngroups; k++) free(g[k]);
    if (!out) return mg_fail(MG_ERR_OOM, NULL, "out of memory");
    if (total == 0) {
        free(out);
        char mag[16];
        snprintf(mag, sizeof mag, sel->mag ? "%dX" : "all", sel->mag);
        return mg_fail(MG_ERR_MISSING, "check --fold, --mag and --split against `medgem data --data PATH --balance none`",
                       "%s: selection fold %d, mag %s, split %s is empty", ix->origin, sel->fold, mag,
                       sel->split == MG_BH_SPLIT_TRAIN ? "train" : "test");
    }
    *idx = out, *n = total;
    return MG_OK;
}

mg_status mg_balance_parse(const char *s, mg_balance *out) {
    if (!strcmp(s, "none")) *out = MG_BALANCE_NONE;
    else if (!strcmp(s, "binary")) *out = MG_BALANCE_BINARY;
    else if (!strcmp(s, "class")) *out = MG_BALANCE_CLASS;
    else return mg_fail(MG_ERR_ARG, "--balance takes binary, class or none", "unknown balance '%s'", s);
    return MG_OK;
}

const char *mg_balance_name(mg_balance b) { return b == MG_BALANCE_BINARY ? "binary" : b == MG_BALANCE_CLASS ? "class" : "none"; }

mg_status mg_split_parse(const char *s, mg_bh_split *out) {
    if (!strcmp(s, "train")) *out = MG_BH_SPLIT_TRAIN;
    else if (!strcmp(s, "test")) *out = MG_BH_SPLIT_TEST;
    else return mg_fail(MG_ERR_ARG, "--split takes train or test", "unknown split '%s'", s);
    return MG_OK;
}

mg_status mg_mag_parse(const char *s, int *out) {
    if (!strcmp(s, "all")) *out = 0;
    else if (!strcmp(s, "40") || !strcmp(s, "40X")) *out = 40;
    else if (!strcmp(s, "100") || !strcmp(s, "100X")) *out = 100;
    else if (!strcmp(s, "200") || !strcmp(s, "200X")) *out = 200;
    else if (!strcmp(s, "400") || !strcmp(s, "400X")) *out = 400;
    else return mg_fail(MG_ERR_ARG, "--mag takes 40, 100, 200, 400 or all", "unknown magnification '%s'", s);
    return MG_OK;
}

int mg_bh_selection_option(const char *flag, const char *value, mg_bh_selection *sel, mg_status *st) {
    char *end;
    *st = MG_OK;
    if (!strcmp(flag, "--fold")) {
        long f = strtol(value, &end, 10);
        if (*end || f < 1 || f > MG_BH_NFOLDS) *st = mg_fail(MG_ERR_ARG, "folds are 1-5", "bad --fold '%s'", value);
        else sel->fold = (int)f;
    } else if (!strcmp(flag, "--seed")) {
        unsigned long long s = strtoull(value, &end, 10);
        if (*end || !*value) *st = mg_fail(MG_ERR_ARG, "--seed takes a non-negative integer", "bad --seed '%s'", value);
        else sel->seed = s;
    } else if (!strcmp(flag, "--mag")) {
        *st = mg_mag_parse(value, &sel->mag);
    } else if (!strcmp(flag, "--split")) {
        *st = mg_split_parse(value, &sel->split);
    } else if (!strcmp(flag, "--balance")) {
        *st = mg_balance_parse(value, &sel->balance);
    } else {
        return 0;
    }
    return 1;
}
