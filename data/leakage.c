#include "data/leakage.h"

#include <stdlib.h>
#include <string.h>

static int cmp_str32(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

typedef struct {
    uint64_t hash;
    int64_t size, rec;
} file_hash;

static int cmp_hash(const void *a, const void *b) {
    const file_hash *x = a, *y = b;
    if (x->size != y->size) return x->size < y->size ? -1 : 1;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return (x->rec > y->rec) - (x->rec < y->rec);
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

void mg_bh_leaks_free(mg_bh_leaks *l) {
    free(l->patients), free(l->duplicates);
    memset(l, 0, sizeof *l);
}

static mg_status same_bytes(const mg_bh_index *ix, int64_t a, int64_t b, int *same) {
    unsigned char *pa, *pb;
    size_t na, nb;
    MG_TRY(mg_bh_read_bytes(ix, a, &pa, &na));
    mg_status st = mg_bh_read_bytes(ix, b, &pb, &nb);
    if (st != MG_OK) return free(pa), st;
    *same = na == nb && !memcmp(pa, pb, na);
    free(pa), free(pb);
    return MG_OK;
}

mg_status mg_bh_find_leaks(const mg_bh_index *ix, const int64_t *train, int64_t ntrain, const int64_t *test, int64_t ntest,
                           mg_bh_leaks *out) {
    memset(out, 0, sizeof *out);
    /* patients: sorted slide lists of each side, intersected */
    char (*a)[32] = malloc(((size_t)ntrain + 1) * 32), (*b)[32] = malloc(((size_t)ntest + 1) * 32);
    out->patients = malloc(((size_t)(ntrain < ntest ? ntrain : ntest) + 1) * 32);
    file_hash *h = malloc(((size_t)(ntrain + ntest) + 1) * sizeof *h);
    mg_status st = MG_OK;
    if (!a || !b || !out->patients || !h) { st = mg_fail(MG_ERR_OOM, NULL, "out of memory"); goto done; }
    for (int64_t i = 0; i < ntrain; i++) memcpy(a[i], ix->recs[train[i]].slide, 32);
    for (int64_t i = 0; i < ntest; i++) memcpy(b[i], ix->recs[test[i]].slide, 32);
    qsort(a, (size_t)ntrain, 32, cmp_str32);
    qsort(b, (size_t)ntest, 32, cmp_str32);
    for (int64_t i = 0, j = 0; i < ntrain && j < ntest;) {
        int c = strcmp(a[i], b[j]);
        if (c < 0) i++;
        else if (c > 0) j++;
        else {
            if (!out->n_patients || strcmp(out->patients[out->n_patients - 1], a[i])) memcpy(out->patients[out->n_patients++], a[i], 32);
            i++, j++;
        }
    }
    /* duplicates: hash every file of both sides */
    int64_t nh = ntrain + ntest;
    for (int64_t k = 0; k < nh; k++) h[k].rec = k < ntrain ? train[k] : test[k - ntrain];
#pragma omp parallel for schedule(dynamic)
    for (int64_t k = 0; k < nh; k++) {
        unsigned char *bytes;
        size_t n;
        if (mg_bh_read_bytes(ix, h[k].rec, &bytes, &n) != MG_OK) {
            h[k].size = -1;
            continue;
        }
        h[k].hash = fnv1a(bytes, n), h[k].size = (int64_t)n;
        free(bytes);
    }
    for (int64_t k = 0; k < nh; k++)
        if (h[k].size < 0) { /* read it again on this thread for the message (errors are per thread) */
            unsigned char *bytes = NULL;
            size_t n;
            st = mg_bh_read_bytes(ix, h[k].rec, &bytes, &n);
            free(bytes);
            if (st == MG_OK) st = mg_fail(MG_ERR_IO, NULL, "%s: read failed", ix->recs[h[k].rec].path);
            goto done;
        }
    qsort(h, (size_t)nh, sizeof *h, cmp_hash);
    int64_t cap = 0;
    for (int64_t i = 0; i < nh; i++)
        for (int64_t j = i + 1; j < nh && h[j].size == h[i].size && h[j].hash == h[i].hash; j++) {
            if (h[i].rec == h[j].rec || ix->recs[h[i].rec].label == ix->recs[h[j].rec].label) continue;
            int same;
            if ((st = same_bytes(ix, h[i].rec, h[j].rec, &same)) != MG_OK) goto done;
            if (!same) continue;
            if (out->n_duplicates == cap) {
                cap = cap ? 2 * cap : 16;
                int64_t(*d)[2] = realloc(out->duplicates, (size_t)cap * sizeof *d);
                if (!d) { st = mg_fail(MG_ERR_OOM, NULL, "out of memory"); goto done; }
                out->duplicates = d;
            }
            int64_t lo = h[i].rec < h[j].rec ? h[i].rec : h[j].rec, hi = h[i].rec ^ h[j].rec ^ lo;
            out->duplicates[out->n_duplicates][0] = lo, out->duplicates[out->n_duplicates][1] = hi;
            out->n_duplicates++;
        }
done:
    free(a), free(b), free(h);
    if (st != MG_OK) mg_bh_leaks_free(out);
    return st;
}
