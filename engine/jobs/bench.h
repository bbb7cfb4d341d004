/* The evaluation-throughput benchmark behind `medgem bench`: times mg_model_forward called the way
 * score-mode evaluation calls it (engine/jobs/classifier.c: one image per row, logits only at each row's
 * last position and only over 8 vocab ids), on a synthetic prompt of exactly T tokens and random
 * pixels, so any model directory works: no tokenizer, images or data set needed.
 *
 * The prompt has the classify layout of tokenizer/prompt.h (generation form), 12 tokens around the
 * image block plus Q filler tokens:
 *   bos sot u u boi image×M eoi u q×Q eot u sot u u        (T = M + 12 + Q)
 * where u stands for the template's text pieces ("user", "\n\n\n", "\n\n", "\n", "model") and q for
 * the question; both are ordinary text ids drawn from [V/8, V/2) minus every special id the config
 * names. sot/eot are the tokenizer's <start_of_turn>/<end_of_turn> when known, else ordinary ids
 * stand in: an id's value does not change the work (one embedding row either way). */
#ifndef MG_BENCH_H
#define MG_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "model/medgem_model.h"

#define MG_BENCH_TEMPLATE_TOKENS 12 /* prompt tokens besides the image block and Q */
#define MG_BENCH_HEAD_IDS 8         /* vocab ids scored at the last position (the 8 class digits) */

typedef struct {
    int64_t batch;  /* B: images (= prompt rows) per forward, >= 1 */
    int tokens;     /* T: prompt length, mm_tokens_per_image + MG_BENCH_TEMPLATE_TOKENS .. max_positions */
    int iters;      /* timed forwards, >= 1 */
    int warmup;     /* untimed forwards first (the first allocates the activations), >= 0 */
    int sot, eot;   /* <start_of_turn>, <end_of_turn> ids; -1: ordinary text ids stand in */
    uint64_t seed;  /* filler ids and pixels */
} mg_bench_opts;

typedef struct {
    int64_t batch;
    int tokens, iters, warmup;
    double *ms;           /* (iters) wall milliseconds of each timed forward, backend synced */
    double ms_median, ms_min, ms_max;
    double images_per_s;  /* batch / median seconds */
    size_t weight_bytes;     /* mg_model.arena_bytes */
    size_t activation_bytes; /* mg_model.work_bytes after the forwards */
    bool logits_finite;      /* the last forward's (B, 8) logits are all finite: a NaN means a broken
                              * forward, whose speed means nothing */
} mg_bench_result;

/* ids (T) = the benchmark prompt described above, for cfg. Fails (MG_ERR_ARG) when T is shorter
 * than the template plus the image block, longer than max_positions, or the vocabulary has no
 * room for ordinary ids. */
mg_status mg_bench_prompt(const mg_config *cfg, int T, int sot, int eot, uint64_t seed, int32_t *ids);

/* The 8 head ids scored at the last position: distinct ordinary ids (as mg_bench_prompt draws). */
mg_status mg_bench_head_ids(const mg_config *cfg, uint64_t seed, int32_t ids[MG_BENCH_HEAD_IDS]);

/* Runs o->warmup + o->iters forwards of the benchmark batch on m and times the last o->iters,
 * reading the clock only after the backend's sync. On error *r is empty. */
mg_status mg_bench_eval(mg_model *m, const mg_bench_opts *o, mg_bench_result *r);
void mg_bench_result_free(mg_bench_result *r);

#endif
