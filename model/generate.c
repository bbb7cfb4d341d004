/* Greedy decoding with the KV cache (model/generate.h): one prefill, then one decode step per new token. */
#include "model/generate.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* torch.argmax: the first maximal index */
static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static bool is_eos(const mg_generate_args *a, int id) {
    for (int i = 0; i < a->n_eos; i++)
        if (a->eos[i] == id) return true;
    return false;
}

mg_status mg_generate_greedy(mg_model *m, const mg_generate_args *a, int32_t *tokens, int *n_new,
                             float *first_logits) {
    const int64_t B = a->B, T0 = a->T, N = a->max_new_tokens, Tmax = T0 + N;
    const int V = m->cfg.vocab;
    if (B < 1 || T0 < 1 || N < 1)
        return mg_fail(MG_ERR_ARG, "generate at least one token for at least one image",
                       "generate: B=%lld, prompt of %lld tokens, max_new_tokens=%lld", (long long)B, (long long)T0,
                       (long long)N);
    if (Tmax > m->cfg.max_positions)
        return mg_fail(MG_ERR_ARG, "lower --max-new-tokens", "a %lld-token prompt plus %lld new tokens exceeds the "
                       "model's %d positions", (long long)T0, (long long)N, m->cfg.max_positions);
    int32_t *ids = malloc((size_t)(B * T0) * sizeof *ids);     /* (B, T0) the prompt of every row */
    int32_t *types = malloc((size_t)(B * T0) * sizeof *types);
    int32_t *rows = malloc((size_t)B * sizeof *rows);           /* (B) the logit row of each batch row */
    int32_t *next = malloc((size_t)B * sizeof *next);           /* (B) the token each row feeds next */
    float *logits = malloc((size_t)B * V * sizeof *logits);    /* (B, V) at each row's newest position */
    bool *done = calloc((size_t)B, sizeof *done);
    mg_status s = MG_OK;
    if (!ids || !types || !rows || !next || !logits || !done) {
        s = mg_fail(MG_ERR_OOM, "use a smaller --batch", "generate buffers for %lld images", (long long)B);
        goto out;
    }
    for (int64_t b = 0; b < B; b++) {
        n_new[b] = 0;
        for (int64_t k = 0; k < N; k++) tokens[b * N + k] = a->pad;
        for (int64_t t = 0; t < T0; t++) ids[b * T0 + t] = a->prompt[t], types[b * T0 + t] = a->token_type[t];
        rows[b] = (int32_t)(b * T0 + T0 - 1);
    }
    /* prefill: the prompt with its image block mask, logits at the last prompt position */
    const mg_model_input in = { .B = B, .T = T0, .ids = ids, .token_type = types, .pixels = a->pixels, .n_images = B };
    const mg_model_head head = { .rows = rows, .R = B, .logits = logits };
    if ((s = mg_model_prefill(m, &in, &head, Tmax)) != MG_OK) goto out;
    if (first_logits) memcpy(first_logits, logits, (size_t)B * V * sizeof *logits);
    int64_t live = B;
    for (int64_t step = 0;; step++) {
        /* the argmax of each live row; finished rows feed pad */
        for (int64_t b = 0; b < B; b++) {
            next[b] = a->pad;
            if (done[b]) continue;
            next[b] = argmax(logits + b * V, V);
            tokens[b * N + step] = next[b];
            n_new[b]++;
            if (is_eos(a, next[b])) done[b] = true, live--;
        }
        if (step + 1 == N || live == 0) break;
        /* decode: one token per row at position T0 + step, logits at it */
        for (int64_t b = 0; b < B; b++) rows[b] = (int32_t)b;
        if ((s = mg_model_decode_step(m, next, &head)) != MG_OK) goto out;
    }
out:
    free(ids), free(types), free(rows), free(next), free(logits), free(done);
    return s;
}
