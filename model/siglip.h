/* The SigLIP vision tower (transformers SiglipVisionTransformer without the pooling head,
 * spec/model.md §3): patch embedding + position embedding, Lv pre-LN encoder layers,
 * post_layernorm. Weights are device pointers in the backend's dtype, placed by
 * mg_siglip_load into the weights' arena. */
#ifndef MG_SIGLIP_H
#define MG_SIGLIP_H

#include "engine/backend.h"
#include "engine/config.h"
#include "model/arena.h"
#include "model/weights.h"

struct mg_lora_device; /* model/lora_device.h */

typedef struct {
    void *ln1_w, *ln1_b;          /* (Cv) layer_norm1 */
    void *qkv_w, *qkv_b;          /* (3*Cv, Cv), (3*Cv): q_proj, k_proj, v_proj rows (and biases) fused */
    void *o_w, *o_b;              /* (Cv, Cv), (Cv) out_proj */
    void *ln2_w, *ln2_b;          /* (Cv) layer_norm2 */
    void *fc1_w, *fc1_b;          /* (Fv, Cv), (Fv) */
    void *fc2_w, *fc2_b;          /* (Cv, Fv), (Cv) */
} mg_siglip_layer;

typedef struct {
    void *patch_w;               /* (Cv, 3*p*p): the conv weight (Cv, 3, p, p) viewed flat */
    void *patch_b;               /* (Cv) */
    void *pos_emb;               /* (P, Cv), P = (S/p)² */
    mg_siglip_layer *layers;     /* [Lv] host array of device views */
    void *post_ln_w, *post_ln_b; /* (Cv) */
} mg_siglip_weights;

/* Places the vision weights of w in the arena (model/arena.h); layers must hold Lv entries. */
void mg_siglip_load(mg_weight_arena *a, const mg_config *cfg, const mg_weights *w, mg_siglip_weights *sw);

/* Bytes of scratch mg_siglip_forward needs for N images (one encoder layer's activations, with the
 * LoRA branches' when lora != NULL). */
size_t mg_siglip_scratch_bytes(const mg_config *cfg, const struct mg_lora_device *lora, int64_t N, size_t esize);

/* out[N, P, Cv] = SigLIP(pixels[N, 3, S, S]) (device pointers), the unmerged adapter lora added
 * when not NULL; scratch holds mg_siglip_scratch_bytes on the same backend, 256-byte aligned. */
void mg_siglip_forward(const mg_backend *be, const mg_config *cfg, const mg_siglip_weights *w,
                       const struct mg_lora_device *lora, void *out, const void *pixels, int64_t N, void *scratch);

/* The embeddings alone: x[N, P, Cv] = patch_embedding(pixels) + position_embedding, with
 * cols (N*P, 3*p*p) as scratch. */
void mg_siglip_embed(const mg_backend *be, const mg_config *cfg, const mg_siglip_weights *w, void *x,
                     const void *pixels, int64_t N, void *cols);

/* Training: encoder layer l alone, x_out[N,P,Cv] = layer(x_in) (distinct buffers), every activation
 * in its own buffer of scratch (mg_siglip_layer_train_bytes) so that a tape can differentiate it. */
size_t mg_siglip_layer_train_bytes(const mg_config *cfg, const struct mg_lora_device *lora, int64_t N, size_t esize);
void mg_siglip_layer_train(const mg_backend *be, const mg_config *cfg, const mg_siglip_weights *w,
                           const struct mg_lora_device *lora, int l, int64_t N, const void *x_in, void *x_out,
                           void *scratch);

#endif
