/* The Gemma 3 text decoder (Gemma3TextModel, spec/model.md §5-6): L sandwich-norm layers with
 * GQA attention (QK-norm, RoPE local/global, causal + sliding + same-image masks) and a gelu-tanh
 * gated MLP, then the final RMSNorm. The embedding lookup and the image merge are in
 * medgem_model.c; this file starts from the merged embeddings. */
#ifndef MG_GEMMA3_H
#define MG_GEMMA3_H

#include "engine/backend.h"
#include "engine/config.h"
#include "model/arena.h"
#include "model/weights.h"

struct mg_lora_device; /* model/lora_device.h: an unmerged adapter the forward adds */

/* Called with each stage's output (a device tensor of n elements) when the caller asks, e.g.
 * to compare against transformers dumps. stage: "vision_out", "hidden_3", "logits", ... */
typedef struct {
    void (*fn)(void *user, const char *stage, const void *x, int64_t n);
    void *user;
} mg_observer;

typedef struct {
    void *input_norm;                                  /* (C) input_layernorm */
    void *qkv_w;                                       /* (H*D + 2*Hkv*D, C): q_proj rows, k_proj rows, v_proj rows */
    void *o_w;                                         /* (C, H*D) */
    void *q_norm, *k_norm;                             /* (D) */
    void *post_attn_norm, *pre_ffw_norm, *post_ffw_norm; /* (C) */
    void *gate_up_w;                                   /* (2F, C): gate_proj rows, then up_proj rows */
    void *down_w;                                      /* (C, F) */
} mg_gemma3_layer;

typedef struct {
    void *embed;              /* (V, C) embed_tokens, also the tied head */
    float embed_scale;        /* sqrt(C) rounded to the dtype the model runs in (see mg_gemma3_load) */
    mg_gemma3_layer *layers;  /* [L] host array of device views */
    void *final_norm;         /* (C) */
} mg_gemma3_weights;

/* Every layer's keys and values for cached greedy decoding, in device memory the caller owns
 * (the model's activation buffer). Layer l's keys are k + l*B*Tmax*Hkv*D elements, viewed as
 * (B*Tmax, Hkv*D) rows: position t of batch row b is row b*Tmax + t. */
typedef struct {
    int64_t B, Tmax; /* batch rows, positions per row */
    void *k, *v;     /* (L, B, Tmax, Hkv, D) RoPE'd keys, values */
} mg_gemma3_cache;

/* Elements of each of mg_gemma3_cache's k and v for B rows of Tmax positions. */
int64_t mg_gemma3_cache_elems(const mg_config *cfg, int64_t B, int64_t Tmax);

/* Per-token inputs of the decoder, device int32 arrays. */
typedef struct {
    int64_t B, T;
    const int32_t *pos;        /* (B, T) RoPE positions */
    const int32_t *key_valid;  /* (B, T) attention_mask; NULL = no padding (unused when decoding) */
    const int32_t *group;      /* (B, T) image index of soft tokens, -1 for text; NULL = no images (unused when decoding) */
    const mg_gemma3_cache *cache; /* NULL: none; else every layer stores its tokens' k, v at cache_rows */
    const int32_t *cache_rows; /* (B, T) b*Tmax + position of each token in the cache */
    bool decode;               /* a decode step: T == 1, row b's token at position `past` attends to the cache's
                                * positions 0..past with the plain causal / sliding mask (spec/model.md §6.2) */
    int64_t past;              /* decode: positions already in the cache */
} mg_gemma3_tokens;

void mg_gemma3_load(mg_weight_arena *a, const mg_config *cfg, const mg_weights *w, mg_gemma3_weights *gw);

/* Bytes of scratch mg_gemma3_forward needs for M = B*T tokens (one layer's activations, with the
 * LoRA branches' when lora != NULL). */
size_t mg_gemma3_scratch_bytes(const mg_config *cfg, const struct mg_lora_device *lora, int64_t M, size_t esize);

/* x[B, T, C]: in, the input embeddings; out, the final-normed hidden states. With tok->cache the
 * tokens' keys and values are kept for later decode steps (tok->decode needs them for 0..past-1). scratch holds
 * mg_gemma3_scratch_bytes on the same backend, 256-byte aligned. Reports "hidden_<l>" (output of
 * layer l) and "final_norm_out" to obs when obs != NULL. */
void mg_gemma3_forward(const mg_backend *be, const mg_config *cfg, const mg_gemma3_weights *w,
                       const struct mg_lora_device *lora, void *x, const mg_gemma3_tokens *tok, const mg_observer *obs,
                       void *scratch);

/* Training: layer l alone, x_out[B,T,C] = layer(x_in) (distinct buffers), with every activation in
 * its own buffer of scratch (mg_gemma3_layer_train_bytes) so that a tape can differentiate it. The
 * LoRA branches (lora, unmerged) use lora->dropout and lora->seed. */
size_t mg_gemma3_layer_train_bytes(const mg_config *cfg, const struct mg_lora_device *lora, int64_t M, size_t esize);
void mg_gemma3_layer_train(const mg_backend *be, const mg_config *cfg, const mg_gemma3_weights *w,
                           const struct mg_lora_device *lora, int l, const mg_gemma3_tokens *tok, const void *x_in,
                           void *x_out, void *scratch);

#endif
