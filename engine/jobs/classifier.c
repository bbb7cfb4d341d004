/* The BreakHis classifier: prompt once, then class-digit logits or greedy answers per batch. */
#include "engine/jobs/classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/generate.h"
#include "tokenizer/answer.h"

/* The token ids of "0".."n-1": each digit must be a single token of the tokenizer. */
static mg_status digit_ids(const mg_spm *spm, int n, int32_t *ids) {
    for (int k = 0; k < n; k++) {
        char digit[2] = { (char)('0' + k), 0 };
        int *t, nt;
        MG_TRY(mg_spm_encode(spm, digit, 1, &t, &nt));
        const int id = nt == 1 ? t[0] : -1;
        free(t);
        if (id < 0)
            return mg_fail(MG_ERR_FORMAT, "classification needs a tokenizer that splits digits (Gemma's does)",
                           "the digit \"%s\" is %d tokens, not one", digit, nt);
        ids[k] = id;
    }
    return MG_OK;
}

mg_status mg_classifier_init(mg_classifier *c, mg_model *m, const mg_classifier_opts *o) {
    memset(c, 0, sizeof *c);
    c->model = m;
    c->n_classes = MG_BREAKHIS_NCLASSES;
    if (!m->cfg.tokenizer_path[0])
        return mg_fail(MG_ERR_MISSING, "copy tokenizer.model into the model directory", "%s has no tokenizer.model",
                       m->cfg.dir);
    MG_TRY(mg_spm_load(m->cfg.tokenizer_path, &c->spm));
    char *text = NULL;
    mg_status s = mg_chat_ids_init(&c->chat, &m->cfg, c->spm);
    if (s == MG_OK) s = digit_ids(c->spm, c->n_classes, c->digits);
    if (s == MG_OK && !o->text) s = mg_prompt_default_text(MG_BREAKHIS_CLASSES, c->n_classes, &text);
    if (s == MG_OK) {
        const mg_prompt_opts po = { .text = o->text ? o->text : text, .guide_path = o->guide_path,
                                    .loss_on = MG_LOSS_ON_SEED, .max_tokens = m->cfg.max_positions };
        s = mg_prompt_build(c->spm, &c->chat, &po, &c->prompt);
    }
    free(text);
    if (s != MG_OK) mg_classifier_free(c);
    return s;
}

void mg_classifier_free(mg_classifier *c) {
    mg_prompt_free(&c->prompt);
    if (c->spm) mg_spm_free(c->spm);
    c->spm = NULL;
}

/* One forward of B images given as pixels or as soft tokens. */
static mg_status score(const mg_classifier *c, const float *pixels, const void *const *soft, int64_t B, float *logits) {
    const int64_t T = c->prompt.n;
    int32_t *ids = malloc((size_t)(B * T) * sizeof *ids);     /* (B, T) the prompt in every row */
    int32_t *types = malloc((size_t)(B * T) * sizeof *types); /* (B, T) */
    int32_t *rows = malloc((size_t)(B > 0 ? B : 1) * sizeof *rows); /* (B) each row's last position */
    mg_status s = MG_OK;
    if (!ids || !types || !rows) {
        s = mg_fail(MG_ERR_OOM, "use a smaller batch", "scoring %lld images", (long long)B);
    } else {
        for (int64_t b = 0; b < B; b++) {
            for (int64_t t = 0; t < T; t++) ids[b * T + t] = c->prompt.ids[t], types[b * T + t] = c->prompt.token_type_ids[t];
            rows[b] = (int32_t)(b * T + T - 1);
        }
        const mg_model_input in = { .B = B, .T = T, .ids = ids, .token_type = types, .pixels = pixels, .n_images = B,
                                    .soft_tokens = soft };
        const mg_model_head head = { .rows = rows, .R = B, .vocab = c->digits, .n_vocab = c->n_classes, .logits = logits };
        s = mg_model_forward(c->model, &in, &head, NULL);
    }
    free(ids), free(types), free(rows);
    return s;
}

mg_status mg_classifier_score(const mg_classifier *c, const float *pixels, int64_t B, float *logits) {
    return score(c, pixels, NULL, B, logits);
}

mg_status mg_classifier_score_features(const mg_classifier *c, const void *const *soft, int64_t B, float *logits) {
    return score(c, NULL, soft, B, logits);
}

mg_status mg_classifier_generate(const mg_classifier *c, const float *pixels, int64_t B, int max_new_tokens,
                                 int *preds, char **answers, float *logits) {
    const int V = c->model->cfg.vocab, K = c->n_classes;
    const int64_t N = max_new_tokens > 0 ? max_new_tokens : 1;
    int32_t *tokens = malloc((size_t)(B * N) * sizeof *tokens);              /* (B, N) */
    int *n_new = malloc((size_t)(B > 0 ? B : 1) * sizeof *n_new);             /* (B) */
    float *first = logits ? malloc((size_t)(B * V) * sizeof *first) : NULL; /* (B, V) */
    for (int64_t b = 0; answers && b < B; b++) answers[b] = NULL;
    mg_status s = MG_OK;
    if (!tokens || !n_new || (logits && !first)) {
        s = mg_fail(MG_ERR_OOM, "use a smaller batch", "generating for %lld images", (long long)B);
        goto out;
    }
    const mg_generate_args a = { .prompt = c->prompt.ids, .token_type = c->prompt.token_type_ids, .T = c->prompt.n,
                                 .pixels = pixels, .B = B, .max_new_tokens = max_new_tokens,
                                 .eos = c->model->cfg.eos_ids, .n_eos = c->model->cfg.n_eos,
                                 .pad = c->model->cfg.pad_token_id };
    if ((s = mg_generate_greedy(c->model, &a, tokens, n_new, first)) != MG_OK) goto out;
    for (int64_t b = 0; b < B; b++) {
        /* decode(skip_special_tokens=True), then the guide's regex */
        char *text;
        if ((s = mg_chat_decode(c->spm, &c->chat, tokens + b * N, n_new[b], &text)) != MG_OK) goto out;
        preds[b] = mg_parse_answer(text, K);
        if (answers) answers[b] = text;
        else free(text);
        for (int k = 0; logits && k < K; k++) logits[b * K + k] = first[b * V + c->digits[k]];
    }
out:
    if (s != MG_OK && answers)
        for (int64_t b = 0; b < B; b++) free(answers[b]), answers[b] = NULL;
    free(tokens), free(n_new), free(first);
    return s;
}

int mg_class_softmax(const float *logits, int K, double *probs) {
    int pred = 0;
    double mx = logits[0], sum = 0;
    for (int k = 1; k < K; k++) {
        if (logits[k] > logits[pred]) pred = k;
        if (logits[k] > mx) mx = logits[k];
    }
    for (int k = 0; k < K; k++) sum += probs[k] = exp((double)logits[k] - mx);
    for (int k = 0; k < K; k++) probs[k] /= sum;
    return pred;
}
