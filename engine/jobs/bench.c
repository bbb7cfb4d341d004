/* `medgem bench`'s core: a synthetic classify batch, timed forwards (engine/jobs/bench.h). */
#include "engine/jobs/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/rng.h"
#include "engine/oom.h"

/* Every id the config (or the caller) gives a special meaning; -1 entries are unused. */
typedef struct {
    int ids[MG_MAX_EOS + 7];
    int n;
} special_ids;

static special_ids collect_specials(const mg_config *cfg, int sot, int eot) {
    special_ids s = { .n = 0 };
    const int fixed[7] = { cfg->bos_token_id, cfg->pad_token_id, cfg->boi_token_id, cfg->eoi_token_id,
                           cfg->image_token_id, sot, eot };
    for (int i = 0; i < 7; i++) s.ids[s.n++] = fixed[i];
    for (int i = 0; i < cfg->n_eos; i++) s.ids[s.n++] = cfg->eos_ids[i];
    return s;
}

static bool is_special(const special_ids *s, int id) {
    for (int i = 0; i < s->n; i++)
        if (s->ids[i] == id) return true;
    return false;
}

/* The range ordinary ids are drawn from: [V/8, V/2), clear of Gemma's low control ids and of its
 * high added tokens (image markers, unused slots). It must hold more than the specials. */
static mg_status ordinary_range(const mg_config *cfg, const special_ids *s, int *lo, int *n) {
    *lo = cfg->vocab / 8;
    *n = cfg->vocab / 2 - *lo;
    if (*n <= s->n + MG_BENCH_HEAD_IDS)
        return mg_fail(MG_ERR_ARG, "use a model with a larger vocabulary", "vocabulary of %d ids is too small for "
                       "the benchmark's filler text", cfg->vocab);
    return MG_OK;
}

/* One ordinary id: uniform over the range, redrawn while special. */
static int draw_ordinary(mg_rng *r, const special_ids *s, int lo, int n) {
    int id;
    do id = lo + (int)mg_rng_below(r, (uint64_t)n);
    while (is_special(s, id));
    return id;
}

mg_status mg_bench_prompt(const mg_config *cfg, int T, int sot, int eot, uint64_t seed, int32_t *ids) {
    const int M = cfg->mm_tokens_per_image, min_T = M + MG_BENCH_TEMPLATE_TOKENS;
    if (T < min_T || T > cfg->max_positions)
        return mg_fail(MG_ERR_ARG, "pick --tokens in range (the eval prompt of MedGemma-4B is about 360)",
                       "a benchmark prompt of %d tokens: it needs %d..%d (%d image tokens + %d template tokens, "
                       "at most max_position_embeddings)", T, min_T, cfg->max_positions, M, MG_BENCH_TEMPLATE_TOKENS);
    const special_ids s = collect_specials(cfg, sot, eot);
    int lo, n;
    MG_TRY(ordinary_range(cfg, &s, &lo, &n));
    mg_rng r = mg_rng_seed(seed, 1);
    const int turn_start = sot >= 0 ? sot : draw_ordinary(&r, &s, lo, n);
    const int turn_end = eot >= 0 ? eot : draw_ordinary(&r, &s, lo, n);
    int t = 0;
    /* <bos><start_of_turn>user\n\n\n<start_of_image> */
    ids[t++] = cfg->bos_token_id, ids[t++] = turn_start;
    ids[t++] = draw_ordinary(&r, &s, lo, n), ids[t++] = draw_ordinary(&r, &s, lo, n);
    ids[t++] = cfg->boi_token_id;
    for (int i = 0; i < M; i++) ids[t++] = cfg->image_token_id;
    /* <end_of_image>\n\n Q <end_of_turn>\n<start_of_turn>model\n */
    ids[t++] = cfg->eoi_token_id, ids[t++] = draw_ordinary(&r, &s, lo, n);
    while (t < T - 5) ids[t++] = draw_ordinary(&r, &s, lo, n);
    ids[t++] = turn_end, ids[t++] = draw_ordinary(&r, &s, lo, n);
    ids[t++] = turn_start, ids[t++] = draw_ordinary(&r, &s, lo, n), ids[t++] = draw_ordinary(&r, &s, lo, n);
    return MG_OK;
}

mg_status mg_bench_head_ids(const mg_config *cfg, uint64_t seed, int32_t ids[MG_BENCH_HEAD_IDS]) {
    const special_ids s = collect_specials(cfg, -1, -1);
    int lo, n;
    MG_TRY(ordinary_range(cfg, &s, &lo, &n));
    mg_rng r = mg_rng_seed(seed, 2);
    for (int k = 0; k < MG_BENCH_HEAD_IDS; k++) {
        bool repeated;
        do {
            ids[k] = draw_ordinary(&r, &s, lo, n);
            repeated = false;
            for (int j = 0; j < k; j++) repeated |= ids[j] == ids[k];
        } while (repeated);
    }
    return MG_OK;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, min and max of r->ms. */
static mg_status summarize(mg_bench_result *r) {
    double *sorted = malloc((size_t)r->iters * sizeof *sorted);
    if (!sorted) return mg_fail(MG_ERR_OOM, NULL, "benchmark timings");
    memcpy(sorted, r->ms, (size_t)r->iters * sizeof *sorted);
    qsort(sorted, (size_t)r->iters, sizeof *sorted, cmp_double);
    const int n = r->iters;
    r->ms_median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    r->ms_min = sorted[0], r->ms_max = sorted[n - 1];
    r->images_per_s = r->ms_median > 0 ? (double)r->batch / (1e-3 * r->ms_median) : 0;
    free(sorted);
    return MG_OK;
}

mg_status mg_bench_eval(mg_model *m, const mg_bench_opts *o, mg_bench_result *r) {
    memset(r, 0, sizeof *r);
    const mg_config *cfg = &m->cfg;
    const mg_backend *be = m->be;
    const int64_t B = o->batch, T = o->tokens, S = cfg->image_size, px_row = 3 * S * S;
    if (B < 1 || o->iters < 1 || o->warmup < 0)
        return mg_fail(MG_ERR_ARG, "give a batch and iterations >= 1, warm-ups >= 0",
                       "benchmark batch %lld, %d iterations, %d warm-ups", (long long)B, o->iters, o->warmup);
    int32_t *prompt = malloc((size_t)T * sizeof *prompt);  /* (T) */
    int32_t *ids = malloc((size_t)(B * T) * sizeof *ids);  /* (B, T) the prompt in every row */
    int32_t *rows = malloc((size_t)B * sizeof *rows);      /* (B) each row's last position */
    float *pixels = malloc((size_t)(B * px_row) * sizeof *pixels); /* (B, 3, S, S) */
    float *logits = malloc((size_t)B * MG_BENCH_HEAD_IDS * sizeof *logits); /* (B, 8) */
    r->ms = malloc((size_t)o->iters * sizeof *r->ms); /* (iters) */
    int32_t head_ids[MG_BENCH_HEAD_IDS];
    mg_status s = MG_OK;
    if (!prompt || !ids || !rows || !pixels || !logits || !r->ms)
        s = mg_fail(MG_ERR_OOM, "use a smaller --batch", "host buffers for a benchmark batch of %lld", (long long)B);
    if (s == MG_OK) s = mg_bench_prompt(cfg, (int)T, o->sot, o->eot, o->seed, prompt);
    if (s == MG_OK) s = mg_bench_head_ids(cfg, o->seed, head_ids);
    if (s == MG_OK) {
        for (int64_t b = 0; b < B; b++) {
            memcpy(ids + b * T, prompt, (size_t)T * sizeof *ids);
            rows[b] = (int32_t)(b * T + T - 1);
        }
        mg_rng rng = mg_rng_seed(o->seed, 3);
        for (int64_t i = 0; i < B * px_row; i++) pixels[i] = (float)(2 * mg_rng_uniform(&rng) - 1);
        const mg_model_input in = { .B = B, .T = T, .ids = ids, .pixels = pixels, .n_images = B };
        const mg_model_head head = { .rows = rows, .R = B, .vocab = head_ids, .n_vocab = MG_BENCH_HEAD_IDS,
                                     .logits = logits };
        for (int i = 0; s == MG_OK && i < o->warmup + o->iters; i++) {
            s = be->sync(be->ctx);
            const double t0 = now_ms();
            if (s == MG_OK) s = mg_model_forward(m, &in, &head, NULL);
            if (s == MG_OK) s = be->sync(be->ctx);
            if (i >= o->warmup) r->ms[i - o->warmup] = now_ms() - t0;
        }
    }
    if (s == MG_OK) {
        r->batch = B, r->tokens = (int)T, r->iters = o->iters, r->warmup = o->warmup;
        r->weight_bytes = m->arena_bytes, r->activation_bytes = m->work_bytes;
        r->logits_finite = true;
        for (int64_t i = 0; i < B * MG_BENCH_HEAD_IDS; i++) r->logits_finite &= isfinite(logits[i]) != 0;
        s = summarize(r);
    }
    free(prompt), free(ids), free(rows), free(pixels), free(logits);
    if (s != MG_OK) mg_bench_result_free(r);
    return mg_oom_hint(s, "use a smaller --batch or --tokens");
}

void mg_bench_result_free(mg_bench_result *r) {
    free(r->ms);
    memset(r, 0, sizeof *r);
}
