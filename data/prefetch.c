#include "data/prefetch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/image.h"
#include "data/resize.h"

enum { SLOT_FREE, SLOT_READY };

typedef struct {
    mg_batch b;
    int state;
    mg_status st;     /* a failure while filling (MG_BAD_FAIL or out of memory) */
    int64_t skipped;  /* images of this batch left out under MG_BAD_SKIP */
    char err[1024];
} slot;

struct mg_loader {
    const mg_bh_index *ix;
    int64_t *order;   /* (n) record indices */
    unsigned char *skip; /* (nbatches) 1: every record of the batch is cached, nothing to read */
    int64_t n, nbatches;
    mg_loader_opts o;
    slot slots[2];    /* batch k fills slot k % 2 */
    int held;         /* the slot the caller holds, or -1 */
    int64_t given;    /* batches handed out */
    int stop;
    int64_t skipped;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

mg_status mg_bh_load_rgb(const mg_bh_index *ix, int64_t i, int image_size, unsigned char *rgb) {
    unsigned char *bytes;
    size_t n;
    MG_TRY(mg_bh_read_bytes(ix, i, &bytes, &n));
    mg_image im;
    mg_status st = mg_image_decode(bytes, n, ix->recs[i].path, &im);
    free(bytes);
    if (st != MG_OK) return st;
    st = mg_resize_bilinear(im.rgb, im.w, im.h, rgb, image_size, image_size);
    mg_image_free(&im);
    return st;
}

/* Loads batch k into s (the loader itself is only read here). */
static void fill(mg_loader *ld, int64_t k, slot *s) {
    const int64_t B = ld->o.batch, first = k * B, count = (first + B <= ld->n ? B : ld->n - first);
    const int S = ld->o.image_size;
    const size_t plane = (size_t)3 * S * S;
    int *ok = calloc((size_t)count, sizeof *ok);
    if (!ok) { s->st = mg_fail(MG_ERR_OOM, NULL, "out of memory loading a batch"); snprintf(s->err, sizeof s->err, "%s", mg_last_error()); return; }
    s->st = MG_OK;
    s->skipped = 0;
    if (ld->skip[k]) { /* the caller has these images' features: only the records and labels */
        for (int64_t j = 0; j < count; j++) {
            const int64_t r = ld->order[first + j];
            s->b.records[j] = r, s->b.labels[j] = ld->ix->recs[r].label, s->b.binary[j] = ld->ix->recs[r].binary;
        }
        s->b.n = count;
        free(ok);
        return;
    }
#pragma omp parallel for schedule(dynamic) num_threads(ld->o.threads)
    for (int64_t j = 0; j < count; j++) {
        int64_t r = ld->order[first + j];
        unsigned char *rgb = malloc(plane);
        mg_status st = rgb ? mg_bh_load_rgb(ld->ix, r, S, rgb) : mg_fail(MG_ERR_OOM, NULL, "out of memory loading a batch");
        if (st == MG_OK) {
            mg_normalize_chw(rgb, S, S, s->b.pixels + (size_t)j * plane);
            ok[j] = 1;
        } else {
#pragma omp critical
            {
                if (ld->o.on_bad == MG_BAD_SKIP && st != MG_ERR_OOM) {
                    s->skipped++;
                } else if (s->st == MG_OK) {
                    s->st = st;
                    snprintf(s->err, sizeof s->err, "%s", mg_last_error());
                }
            }
        }
        free(rgb);
    }
    /* close the gaps left by skipped images */
    int64_t w = 0;
    for (int64_t j = 0; j < count; j++) {
        if (!ok[j]) continue;
        int64_t r = ld->order[first + j];
        if (w != j) memcpy(s->b.pixels + (size_t)w * plane, s->b.pixels + (size_t)j * plane, plane * sizeof(float));
        s->b.records[w] = r, s->b.labels[w] = ld->ix->recs[r].label, s->b.binary[w] = ld->ix->recs[r].binary;
        w++;
    }
    s->b.n = w;
    free(ok);
}

static void *producer(void *arg) {
    mg_loader *ld = arg;
    for (int64_t k = 0; k < ld->nbatches; k++) {
        slot *s = &ld->slots[k % 2];
        pthread_mutex_lock(&ld->mu);
        while (s->state != SLOT_FREE && !ld->stop) pthread_cond_wait(&ld->cv, &ld->mu);
        int stop = ld->stop;
        pthread_mutex_unlock(&ld->mu);
        if (stop) break;
        fill(ld, k, s);
        pthread_mutex_lock(&ld->mu);
        s->state = SLOT_READY;
        ld->skipped += s->skipped;
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
        if (s->st != MG_OK) break;
    }
    return NULL;
}

void mg_loader_free(mg_loader *ld) {
    if (!ld) return;
    if (ld->thread_started) {
        pthread_mutex_lock(&ld->mu);
        ld->stop = 1;
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
        pthread_join(ld->thread, NULL);
    }
    for (int i = 0; i < 2; i++) {
        mg_batch *b = &ld->slots[i].b;
        free(b->pixels), free(b->labels), free(b->binary), free(b->records);
    }
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv);
    free(ld->order);
    free(ld->skip);
    free(ld);
}

mg_status mg_loader_create(const mg_bh_index *ix, const int64_t *order, int64_t n, const mg_loader_opts *opts, mg_loader **out) {
    *out = NULL;
    if (opts->batch < 1 || opts->image_size < 1 || opts->threads < 1 || n < 0)
        return mg_fail(MG_ERR_ARG, NULL, "loader: batch %d, image size %d, threads %d must be positive", opts->batch,
                       opts->image_size, opts->threads);
    for (int64_t i = 0; i < n; i++)
        if (order[i] < 0 || order[i] >= ix->n) return mg_fail(MG_ERR_ARG, NULL, "loader: record %lld out of range", (long long)order[i]);
    mg_loader *ld = calloc(1, sizeof *ld);
    if (!ld) return mg_fail(MG_ERR_OOM, NULL, "out of memory");
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv, NULL);
    ld->ix = ix, ld->n = n, ld->o = *opts, ld->held = -1;
    ld->nbatches = (n + opts->batch - 1) / opts->batch;
    ld->order = malloc(((size_t)n + 1) * sizeof *ld->order);
    size_t plane = (size_t)3 * opts->image_size * opts->image_size;
    ld->skip = calloc((size_t)ld->nbatches + 1, 1);
    int oom = !ld->order || !ld->skip;
    for (int i = 0; i < 2 && !oom; i++) {
        mg_batch *b = &ld->slots[i].b;
        b->pixels = malloc((size_t)opts->batch * plane * sizeof(float));
        b->labels = malloc((size_t)opts->batch * sizeof(int));
        b->binary = malloc((size_t)opts->batch * sizeof(int));
        b->records = malloc((size_t)opts->batch * sizeof(int64_t));
        oom = !b->pixels || !b->labels || !b->binary || !b->records;
    }
    if (oom) {
        mg_loader_free(ld);
        return mg_fail(MG_ERR_OOM, "use a smaller batch", "out of memory for two batches of %d images of %dx%d", opts->batch,
                       opts->image_size, opts->image_size);
    }
    if (n) memcpy(ld->order, order, (size_t)n * sizeof *order);
    for (int64_t k = 0; opts->cached && k < ld->nbatches; k++) {
        ld->skip[k] = 1;
        for (int64_t i = k * opts->batch; i < n && i < (k + 1) * opts->batch; i++) ld->skip[k] &= opts->cached[order[i]] != 0;
    }
    if (pthread_create(&ld->thread, NULL, producer, ld)) {
        mg_loader_free(ld);
        return mg_fail(MG_ERR_OOM, NULL, "cannot start the loader thread");
    }
    ld->thread_started = 1;
    *out = ld;
    return MG_OK;
}

mg_status mg_loader_next(mg_loader *ld, const mg_batch **out) {
    static const mg_batch END = { 0 };
    pthread_mutex_lock(&ld->mu);
    if (ld->held >= 0) { /* the caller is done with the previous batch: let the producer refill it */
        ld->slots[ld->held].state = SLOT_FREE;
        ld->held = -1;
        pthread_cond_broadcast(&ld->cv);
    }
    if (ld->given >= ld->nbatches) {
        pthread_mutex_unlock(&ld->mu);
        *out = &END;
        return MG_OK;
    }
    slot *s = &ld->slots[ld->given % 2];
    while (s->state != SLOT_READY) pthread_cond_wait(&ld->cv, &ld->mu);
    if (s->st != MG_OK) {
        mg_status st = s->st;
        ld->given = ld->nbatches; /* the producer has stopped */
        pthread_mutex_unlock(&ld->mu);
        *out = &END;
        return mg_fail(st, NULL, "%s", s->err);
    }
    ld->held = (int)(ld->given % 2);
    ld->given++;
    pthread_mutex_unlock(&ld->mu);
    *out = &s->b;
    return MG_OK;
}

int64_t mg_loader_skipped(const mg_loader *ld) {
    pthread_mutex_lock((pthread_mutex_t *)&ld->mu);
    int64_t n = ld->skipped;
    pthread_mutex_unlock((pthread_mutex_t *)&ld->mu);
    return n;
}
