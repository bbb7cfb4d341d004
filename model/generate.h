/* Greedy decoding, as transformers' generate(do_sample=False) (spec/model.md §9): each step takes
 * the argmax of the last position's logits (ties to the lowest id, like torch.argmax), appends it,
 * and a row stops at its first eos id; finished rows are fed `pad` while others go on. The prompt
 * keeps its image block mask (token_type 1 on the soft tokens); generated tokens are text, so they
 * see everything before them causally, and positions continue T, T+1, ...
 *
 * The prompt runs once (mg_model_prefill keeps every layer's keys and values); each new token is
 * then one decode step (mg_model_decode_step) attending to the cache, with logits only at the new
 * position. A generated <image_soft_token> is fed back as a text embedding, as transformers does. */
#ifndef MG_GENERATE_H
#define MG_GENERATE_H

#include "model/medgem_model.h"

typedef struct {
    const int32_t *prompt;     /* (T) prompt ids, the same for every row */
    const int32_t *token_type; /* (T) 1 on the image soft tokens, else 0 */
    int64_t T;
    const float *pixels;       /* (B, 3, S, S): row b's image, filling its placeholders */
    int64_t B;
    int max_new_tokens;        /* at most this many new tokens per row (>= 1) */
    const int *eos;            /* (n_eos) stop ids: mg_config.eos_ids */
    int n_eos;
    int pad;                   /* fed to finished rows and written after their end (pad_token_id) */
} mg_generate_args;

/* tokens (B, max_new_tokens): each row's new tokens, its stop id included, then pad.
 * n_new (B): how many tokens each row generated (the stop id included).
 * first_logits (B, V) or NULL: the logits at the last prompt position (the first step's). */
mg_status mg_generate_greedy(mg_model *m, const mg_generate_args *a, int32_t *tokens, int *n_new,
                             float *first_logits);

#endif
