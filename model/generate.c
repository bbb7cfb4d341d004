/* Greedy decoding by recomputation (model/generate.h): the loop the CUDA KV cache replaces. */
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
    int32_t *ids = malloc((size_t)(B * Tmax) * sizeof *ids);   /* (B, Tmax), rows packed at the current T */
    int32_t *types = malloc((size_t)(B * Tmax) * sizeof *types);
    int32_t *rows = malloc((size_t)B * sizeof *rows);
    float *logits = malloc((size_t)B * V * sizeof *logits);    /* (B, V) at the last position */
    bool *done = calloc((size_t)B, sizeof *done);
    mg_status s = MG_OK;
    if (!ids || !types || !rows || !logits || !done) {
        s = mg_fail(MG_ERR_OOM, "use a smaller --batch", "generate buffers for %lld images", (long long)B);
        goto out;
    }
    for (int64_t b = 0; b < B; b++) {
        n_new[b] = 0;
        for (int64_t k = 0; k < N; k++) tokens[b * N + k] = a->pad;
    }
    int64_t live = B;
    for (int64_t step = 0; step < N && live > 0; step++) {
        /* the sequence so far: prompt, then the tokens generated (pad on finished rows) */
        const int64_t T = T0 + step;
        for (int64_t b = 0; b < B; b++) {
            for (int64_t t = 0; t < T; t++) {
                ids[b * T + t] = t < T0 ? a->prompt[t] : tokens[b * N + (t - T0)];
                types[b * T + t] = t < T0 ? a->token_type[t] : 0;
            }
            rows[b] = (int32_t)(b * T + T - 1);
        }
        const mg_model_input in = { .B = B, .T = T, .ids = ids, .token_type = types, .pixels = a->pixels, .n_images = B };
        const mg_model_head head = { .rows = rows, .R = B, .logits = logits };
        if ((s = mg_model_forward(m, &in, &head, NULL)) != MG_OK) goto out;
        if (step == 0 && first_logits) memcpy(first_logits, logits, (size_t)B * V * sizeof *logits);
        for (int64_t b = 0; b < B; b++) {
            if (done[b]) continue;
            const int next = argmax(logits + b * V, V);
            if (next == m->cfg.image_token_id) { done[b] = true, live--; continue; } /* see generate.h */
            tokens[b * N + step] = next;
            n_new[b]++;
            if (is_eos(a, next)) done[b] = true, live--;
        }
    }
out:
    free(ids), free(types), free(rows), free(logits), free(done);
    return s;
}
