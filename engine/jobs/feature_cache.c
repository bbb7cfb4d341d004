/* The per-run image feature cache (engine/jobs/feature_cache.h). */
#include "engine/jobs/feature_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mg_status mg_feature_cache_init(mg_feature_cache *fc, mg_model *m, int64_t n_records) {
    memset(fc, 0, sizeof *fc);
    fc->m = m;
    fc->n_records = n_records;
    fc->image_bytes = (size_t)m->cfg.mm_tokens_per_image * (size_t)m->cfg.hidden * mg_dtype_size(m->be->act_dtype);
    fc->slot = malloc((size_t)(n_records > 0 ? n_records : 1) * sizeof *fc->slot);
    fc->have = calloc((size_t)(n_records > 0 ? n_records : 1), 1);
    if (!fc->slot || !fc->have) {
        mg_feature_cache_free(fc);
        return mg_fail(MG_ERR_OOM, NULL, "feature cache tables of %lld records", (long long)n_records);
    }
    for (int64_t i = 0; i < n_records; i++) fc->slot[i] = -1;
    return MG_OK;
}

mg_status mg_feature_cache_reserve(mg_feature_cache *fc, const int64_t *records, int64_t n) {
    if (fc->base) return mg_fail(MG_ERR_ARG, NULL, "feature cache: slots reserved after allocation");
    for (int64_t i = 0; i < n; i++) {
        if (records[i] < 0 || records[i] >= fc->n_records)
            return mg_fail(MG_ERR_ARG, NULL, "feature cache: record %lld outside the index", (long long)records[i]);
        if (fc->slot[records[i]] < 0) fc->slot[records[i]] = fc->n_slots++;
    }
    return MG_OK;
}

size_t mg_feature_cache_bytes(const mg_feature_cache *fc) { return (size_t)fc->n_slots * fc->image_bytes; }

bool mg_feature_cache_alloc(mg_feature_cache *fc, size_t budget, char *note, size_t note_cap) {
    const mg_backend *be = fc->m->be;
    const size_t bytes = mg_feature_cache_bytes(fc);
    const double mib = (double)bytes / (1 << 20);
    if (fc->base) return true;
    if (bytes == 0) {
        snprintf(note, note_cap, "off (no images)");
        return false;
    }
    if (bytes > budget) {
        snprintf(note, note_cap, "off: %lld images take %.1f MiB, %.1f MiB are left on %s", (long long)fc->n_slots,
                 mib, (double)budget / (1 << 20), be->name);
        return false;
    }
    if (!(fc->base = be->alloc(be->ctx, bytes))) {
        snprintf(note, note_cap, "off: %.1f MiB for %lld images could not be allocated on %s", mib,
                 (long long)fc->n_slots, be->name);
        return false;
    }
    snprintf(note, note_cap, "on: %lld images, %.1f MiB on %s", (long long)fc->n_slots, mib, be->name);
    return true;
}

mg_status mg_feature_cache_batch(mg_feature_cache *fc, const mg_batch *b, const void *const **ptrs) {
    if (!fc->base) return mg_fail(MG_ERR_ARG, NULL, "feature cache used while off");
    if (b->n > fc->cap) {
        const void **p = realloc(fc->ptrs, (size_t)b->n * sizeof *p);
        if (p) fc->ptrs = p;
        void **o = p ? realloc(fc->outs, (size_t)b->n * sizeof *o) : NULL;
        if (o) fc->outs = o;
        if (!o) return mg_fail(MG_ERR_OOM, NULL, "feature cache pointers of a batch of %lld", (long long)b->n);
        fc->cap = b->n;
    }
    bool all = true;
    for (int64_t j = 0; j < b->n; j++) {
        const int64_t r = b->records[j];
        if (r < 0 || r >= fc->n_records || fc->slot[r] < 0)
            return mg_fail(MG_ERR_ARG, NULL, "feature cache: record %lld has no slot", (long long)r);
        fc->outs[j] = (char *)fc->base + (size_t)fc->slot[r] * fc->image_bytes;
        fc->ptrs[j] = fc->outs[j];
        all = all && fc->have[r];
    }
    if (!all) {
        /* the whole batch, as the pixel path would compute it (same images, same shapes) */
        MG_TRY(mg_model_image_features(fc->m, b->pixels, b->n, fc->outs));
        for (int64_t j = 0; j < b->n; j++) fc->have[b->records[j]] = 1;
        fc->computed += b->n;
    } else {
        fc->reused += b->n;
    }
    *ptrs = fc->ptrs;
    return MG_OK;
}

void mg_feature_cache_free(mg_feature_cache *fc) {
    if (fc->m && fc->base) fc->m->be->free(fc->m->be->ctx, fc->base);
    free(fc->slot), free(fc->have), free(fc->ptrs), free(fc->outs);
    memset(fc, 0, sizeof *fc);
}
