/* The per-token arrays of a forward (model/model_tokens.h). */
#include "model/model_tokens.h"

#include <string.h>

mg_status mg_check_input(const mg_config *cfg, const mg_model_input *in, const mg_model_head *head,
                         const mg_run_mode *mode, int64_t *n_soft) {
    const int64_t M = in->B * in->T;
    if (in->B <= 0 || in->T <= 0) return mg_fail(MG_ERR_ARG, NULL, "empty batch: B=%lld T=%lld", (long long)in->B,
                                                 (long long)in->T);
    *n_soft = 0;
    for (int64_t i = 0; i < M; i++) {
        if (in->ids[i] < 0 || in->ids[i] >= cfg->vocab)
            return mg_fail(MG_ERR_ARG, "token ids must come from this model's tokenizer",
                           "token id %d at (b=%lld, t=%lld) is outside the vocabulary [0, %d)", in->ids[i],
                           (long long)(i / in->T), (long long)(i % in->T), cfg->vocab);
        *n_soft += !mode->decode && in->ids[i] == cfg->image_token_id;
    }
    if (*n_soft != in->n_images * cfg->mm_tokens_per_image)
        return mg_fail(MG_ERR_ARG, "each image needs exactly mm_tokens_per_image <image_soft_token> placeholders",
                       "%lld image placeholder tokens for %lld images of %d soft tokens", (long long)*n_soft,
                       (long long)in->n_images, cfg->mm_tokens_per_image);
    /* each image is one run of exactly mm placeholders (the image block mask groups a run), and
     * token_type_ids, when given, marks exactly the placeholders */
    for (int64_t b = 0; !mode->decode && b < in->B; b++)
        for (int64_t t = 0, run = 0; t <= in->T; t++) {
            const int64_t i = b * in->T + t;
            const int soft = t < in->T && in->ids[i] == cfg->image_token_id;
            if (t < in->T && in->token_type && (in->token_type[i] == 1) != soft)
                return mg_fail(MG_ERR_ARG, "token_type_ids must be 1 exactly on the <image_soft_token> placeholders",
                               "token_type %d at (b=%lld, t=%lld) for token id %d", in->token_type[i], (long long)b,
                               (long long)t, in->ids[i]);
            if (soft) run++;
            else if (run && run != cfg->mm_tokens_per_image)
                return mg_fail(MG_ERR_ARG, "each image needs exactly mm_tokens_per_image consecutive placeholders",
                               "a run of %lld image placeholders ends at (b=%lld, t=%lld); an image has %d",
                               (long long)run, (long long)b, (long long)t, cfg->mm_tokens_per_image);
            else run = 0;
        }
    for (int64_t r = 0; r < head->R; r++)
        if (head->rows[r] < 0 || head->rows[r] >= M)
            return mg_fail(MG_ERR_ARG, NULL, "logit row %d is outside the batch's %lld positions", head->rows[r],
                           (long long)M);
    for (int i = 0; head->vocab && i < head->n_vocab; i++)
        if (head->vocab[i] < 0 || head->vocab[i] >= cfg->vocab)
            return mg_fail(MG_ERR_ARG, NULL, "scored token id %d is outside the vocabulary [0, %d)", head->vocab[i],
                           cfg->vocab);
    return MG_OK;
}

size_t mg_token_arrays_layout(mg_token_arrays *t, int32_t *base, int64_t M, int64_t n_cache, int64_t n_soft,
                              int64_t R, int64_t n_vocab) {
    int32_t **slot[] = { &t->pos, &t->group, &t->valid, &t->ids, &t->cache_rows, &t->soft_rows, &t->head_rows,
                         &t->vocab };
    const int64_t count[] = { M, M, M, M, n_cache, n_soft, R, n_vocab };
    int64_t used = 0;
    for (size_t i = 0; i < sizeof count / sizeof count[0]; i++) {
        *slot[i] = base ? base + used : NULL;
        used += count[i];
    }
    return (size_t)used * sizeof(int32_t);
}

void mg_fill_token_arrays(mg_token_arrays *t, const mg_config *cfg, const mg_model_input *in,
                          const mg_model_head *head, const mg_run_mode *mode) {
    int64_t k = 0;
    for (int64_t b = 0; b < in->B; b++) {
        int32_t image = -1;
        for (int64_t i = b * in->T; i < (b + 1) * in->T; i++) {
            const int64_t position = mode->past + (i - b * in->T);
            const int is_soft = !mode->decode &&
                                (in->token_type ? in->token_type[i] == 1 : in->ids[i] == cfg->image_token_id);
            const int prev_soft = i > b * in->T && t->group[i - 1] >= 0;
            if (is_soft && !prev_soft) image++; /* a new run of soft tokens starts a new image */
            t->pos[i] = (int32_t)position;
            t->group[i] = is_soft ? image : -1;
            t->valid[i] = in->attn_mask ? in->attn_mask[i] : 1;
            t->ids[i] = in->ids[i];
            if (mode->t_max) t->cache_rows[i] = (int32_t)(b * mode->t_max + position);
            if (!mode->decode && in->ids[i] == cfg->image_token_id) t->soft_rows[k++] = (int32_t)i;
        }
    }
    if (head->R) memcpy(t->head_rows, head->rows, (size_t)head->R * sizeof(int32_t));
    if (head->vocab) memcpy(t->vocab, head->vocab, (size_t)head->n_vocab * sizeof(int32_t));
}

