/* MedGemma (Gemma3ForConditionalGeneration) composed from its parts, on any backend:
 *   pixels -> SigLIP -> projector -> soft tokens
 *   ids -> scaled embeddings, soft tokens merged at the image placeholders -> Gemma 3 decoder
 *   -> tied head at the requested positions (and optionally only the requested vocab columns).
 * Nothing is sized for the 4B model: every shape comes from the mg_config. */
#ifndef MG_MEDGEM_MODEL_H
#define MG_MEDGEM_MODEL_H

#include "engine/backend.h"
#include "engine/config.h"
#include "model/gemma3.h"
#include "model/projector.h"
#include "model/siglip.h"
#include "model/weights.h"

typedef struct {
    const mg_backend *be;
    mg_config cfg;
    void *arena;              /* the one allocation holding every weight (act dtype) */
    size_t arena_bytes;
    void *work;               /* the activations of a forward, one allocation kept between forwards
                               * and replaced only by a larger one (model/medgem_model.c) */
    size_t work_bytes;
    mg_gemma3_cache kv;       /* the decoder's keys/values from mg_model_prefill, at the start of `work`;
                               * kv.B == 0 when there is none (any other forward discards it) */
    int64_t kv_len;           /* positions of each row filled in kv */
    const struct mg_lora_device *lora; /* an unmerged adapter every forward adds (model/lora_device.h); NULL: none */
    bool adapter_merged;      /* an adapter has been merged into the weights (model/lora.h): a second merge or an
                               * unmerged adapter on top would add LoRA twice, so both are refused */
    mg_siglip_weights vision;
    mg_projector_weights projector;
    mg_gemma3_weights text;
} mg_model;

/* One forward's inputs, host memory. */
typedef struct {
    int64_t B, T;
    const int32_t *ids;        /* (B, T) token ids */
    const int32_t *token_type; /* (B, T) 1 on image soft tokens (token_type_ids); NULL: ids == image_token_id */
    const int32_t *attn_mask;  /* (B, T) 1 real token, 0 padding; NULL: no padding */
    const float *pixels;       /* (n_images, 3, S, S) processor output; image k fills the k-th run of
                                * mm_tokens_per_image placeholders in (b, t) order */
    int64_t n_images;
    const void *const *soft_tokens; /* (n_images) device pointers, each (mm_tokens_per_image, C) in act dtype:
                                * the images' projector outputs (mg_model_image_features), used instead
                                * of pixels when not NULL (pixels is then ignored and may be NULL) */
} mg_model_input;

/* Which logits to compute, and where they go (host). */
typedef struct {
    const int32_t *rows; /* (R) flattened positions b*T + t */
    int64_t R;
    const int32_t *vocab;/* (n_vocab) token ids to score, e.g. the class digits; NULL: the whole vocab */
    int n_vocab;
    float *logits;       /* (R, n_vocab), or (R, V) when vocab == NULL */
} mg_model_head;

/* Copies the bound checkpoint tensors into one arena on `be`, converted to its dtype. */
mg_status mg_model_load(mg_model *m, const mg_backend *be, const mg_config *cfg, const mg_weights *w);
/* mg_config_load + mg_checkpoint_open + mg_weights_bind + mg_model_load; the checkpoint is closed after. */
mg_status mg_model_open(mg_model *m, const mg_backend *be, const char *dir);
void mg_model_free(mg_model *m);

/* Runs the whole model once. Bad input (an id outside the vocabulary, a placeholder count that
 * does not match n_images, a row or vocab id out of range) is an error naming the position.
 * obs (may be NULL) sees "vision_out", "projector_out", "embeds" (after the image merge),
 * "hidden_<l>", "final_norm_out" and "logits" (device tensors: read them with be->download).
 * The activations live in m->work, allocated on the first forward and again only when a forward
 * needs more than the largest so far: repeated forwards of one shape allocate nothing. So one
 * model runs one forward at a time. Errors of the backend's queued work are returned here. */
mg_status mg_model_forward(mg_model *m, const mg_model_input *in, const mg_model_head *head, const mg_observer *obs);

/* The image soft tokens alone (get_image_features: tower, post-layernorm, projector), with the
 * unmerged adapter m->lora when set, exactly as mg_model_forward computes them: out[k] (device
 * pointers, each (mm_tokens_per_image, C) act dtype, caller-owned) = image k of pixels (N, 3, S, S).
 * Reuses m->work (discarding a prefill's KV cache). Feeding them back through
 * mg_model_input.soft_tokens gives the pixel path's logits bit for bit on the same backend. */
mg_status mg_model_image_features(mg_model *m, const float *pixels, int64_t N, void *const *out);

/* The vision part shared by the forward, mg_model_image_features and the train step (so that the
 * three agree bit for bit): soft[N, mm, C] from device pixels[N, 3, S, S], through vis[N, P, Cv],
 * with scratch of mg_model_vision_scratch_bytes. */
size_t mg_model_vision_scratch_bytes(const mg_config *cfg, const struct mg_lora_device *lora, int64_t N, size_t esize);
void mg_model_vision_forward(const mg_model *m, const struct mg_lora_device *lora, void *soft, void *vis,
                             const void *pixels, int64_t N, void *scratch, const mg_observer *obs);

/* KV-cached greedy decoding, as transformers' generate: mg_model_prefill runs mg_model_forward on
 * the prompt (image block mask included) and keeps every layer's keys and values in m->work for up
 * to t_max positions per row (in->T <= t_max <= max_positions; no padding: attn_mask must be NULL).
 * Then each mg_model_decode_step feeds one text token per row at the next position (T, T+1, ...):
 * ids (B) host ids; it attends to the cached positions with the plain causal / sliding mask, adds
 * its keys and values to the cache, and computes the logits of `head`, whose rows index the B new
 * tokens (0..B-1). Nothing is allocated by a decode step. The cache lasts until the next prefill or
 * forward. */
mg_status mg_model_prefill(mg_model *m, const mg_model_input *in, const mg_model_head *head, int64_t t_max);
mg_status mg_model_decode_step(mg_model *m, const int32_t *ids, const mg_model_head *head);

#endif
