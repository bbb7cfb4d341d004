/* The BreakHis classifier around a loaded model: the scoring core shared by `medgem classify`,
 * `medgem eval` and the training loop's evaluation.
 *
 * The prompt is built once (tokenizer/prompt.h, generation form: one user turn [image, text]);
 * by default the text is the guide's (spec/seed-pipeline.md step 4) over MG_BREAKHIS_CLASSES.
 * - score: one forward per batch; the K class scores of an image are the logits of the tokens
 *   "0".."K-1" at the last prompt position, where the answer's first token is predicted.
 * - generate: the guide's evaluation (spec/model.md §9): greedy decoding (model/generate.h), the
 *   new tokens decoded without special tokens, and the first standalone digit 0..K-1 of the text
 *   (tokenizer/answer.h), or -1. */
#ifndef MG_CLASSIFIER_H
#define MG_CLASSIFIER_H

#include <stdbool.h>

#include "data/breakhis_path.h"
#include "model/medgem_model.h"
#include "tokenizer/prompt.h"
#include "tokenizer/spm.h"

typedef struct {
    const char *text; /* the user text after the image; NULL: the guide's prompt over MG_BREAKHIS_CLASSES */
    bool guide_path;  /* the guide's processor path: two BOS tokens (spec/model.md §7.5) */
} mg_classifier_opts;

typedef struct {
    mg_model *model;        /* borrowed; outlives the classifier (forwards reuse its buffers) */
    mg_spm *spm;            /* the model directory's tokenizer.model (owned) */
    mg_chat_ids chat;
    mg_prompt prompt;       /* (T) the generation-form prompt with one image */
    int n_classes;          /* K = MG_BREAKHIS_NCLASSES */
    int32_t digits[MG_BREAKHIS_NCLASSES]; /* (K) token ids of "0".."K-1" */
} mg_classifier;

/* Loads the tokenizer named by the model's config, builds the prompt and finds the class digits.
 * Fails when the model has no tokenizer.model, when a digit is not a single token, or when the
 * prompt is longer than max_position_embeddings. */
mg_status mg_classifier_init(mg_classifier *c, mg_model *m, const mg_classifier_opts *o);
void mg_classifier_free(mg_classifier *c);

/* logits (B, K): the class-digit logits of B images, pixels (B, 3, S, S), in one forward. */
mg_status mg_classifier_score(const mg_classifier *c, const float *pixels, int64_t B, float *logits);

/* The same from the images' precomputed soft tokens (mg_model_input.soft_tokens: B device
 * pointers, each (mm, C) act dtype, e.g. from engine/jobs/feature_cache.h). */
mg_status mg_classifier_score_features(const mg_classifier *c, const void *const *soft, int64_t B, float *logits);

/* Greedy answers for B images, pixels (B, 3, S, S):
 *   preds (B): the class each answer names, -1 for none;
 *   answers (B) or NULL: each answer's text, malloc'd (free each);
 *   logits (B, K) or NULL: the class-digit logits of the first step (what score gives). */
mg_status mg_classifier_generate(const mg_classifier *c, const float *pixels, int64_t B, int max_new_tokens,
                                 int *preds, char **answers, float *logits);

/* probs (K) = softmax(logits) in double; returns the argmax (ties to the lowest class). */
int mg_class_softmax(const float *logits, int K, double *probs);

#endif
