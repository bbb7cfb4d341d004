/* The per-token int32 arrays a forward of the composed model needs, built on the host from its
 * inputs and checked there (model/medgem_model.c and model/train_step.c share them). */
#ifndef MG_MODEL_TOKENS_H
#define MG_MODEL_TOKENS_H

#include "model/medgem_model.h"

/* How a run uses the decoder's KV cache. */
typedef struct {
    int64_t t_max; /* > 0: keep the keys/values of up to t_max positions per row (prefill and decode) */
    bool decode;   /* one text token per row at position `past`, attending to the cache */
    int64_t past;  /* decode: positions already cached */
} mg_run_mode;

/* The int32 per-token arrays, built on the host and copied to the device in one block. */
typedef struct {
    int32_t *pos;        /* (B, T) positions past..past+T-1 (cache_position) */
    int32_t *group;      /* (B, T) image index of a soft token within its row, -1 for text */
    int32_t *valid;      /* (B, T) attention_mask */
    int32_t *ids;        /* (B, T) */
    int32_t *cache_rows; /* (B, T) b*t_max + position: where each token's keys go in the cache (empty without) */
    int32_t *soft_rows;  /* (n_soft) flattened positions of the image placeholders, in order */
    int32_t *head_rows;  /* (R) */
    int32_t *vocab;      /* (n_vocab) */
} mg_token_arrays;

/* Host-side checks of everything the ops take on trust; *n_soft = the image placeholders. An id
 * outside the vocabulary, a placeholder count or run that does not match n_images whole images,
 * token_type_ids that disagree with the placeholders, a head row outside the batch: each an
 * error naming the position. In a decode step every id is text (transformers feeds a generated
 * <image_soft_token> back as an embedding). */
mg_status mg_check_input(const mg_config *cfg, const mg_model_input *in, const mg_model_head *head,
                         const mg_run_mode *mode, int64_t *n_soft);

/* Lays the arrays out from base (NULL: only sizes them); returns the bytes needed. */
size_t mg_token_arrays_layout(mg_token_arrays *t, int32_t *base, int64_t M, int64_t n_cache, int64_t n_soft,
                              int64_t R, int64_t n_vocab);
/* Fills the arrays (laid out for in's sizes) from in and head. */
void mg_fill_token_arrays(mg_token_arrays *t, const mg_config *cfg, const mg_model_input *in,
                          const mg_model_head *head, const mg_run_mode *mode);

#endif
