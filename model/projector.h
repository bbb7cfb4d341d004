/* The Gemma 3 multimodal projector (Gemma3MultiModalProjector, spec/model.md §4): average-pool the
 * vision grid to mm_tokens_per_image soft tokens, Gemma RMSNorm (eps = vision eps), then x @ W. */
#ifndef MG_PROJECTOR_H
#define MG_PROJECTOR_H

#include "engine/backend.h"
#include "engine/config.h"
#include "model/arena.h"
#include "model/weights.h"

typedef struct {
    void *norm_w; /* (Cv) mm_soft_emb_norm */
    void *proj_w; /* (C, Cv): mm_input_projection_weight (Cv, C) transposed at load, so a plain linear */
} mg_projector_weights;

void mg_projector_load(mg_weight_arena *a, const mg_weights *w, mg_projector_weights *pw);

/* Bytes of scratch mg_projector_forward needs for N images (the pooled and the normed tokens). */
size_t mg_projector_scratch_bytes(const mg_config *cfg, int64_t N, size_t esize);

/* out[N, mm, C] from the vision output x[N, P, Cv] (device pointers); scratch holds
 * mg_projector_scratch_bytes on the same backend. */
void mg_projector_forward(const mg_backend *be, const mg_config *cfg, const mg_projector_weights *w, void *out,
                          const void *x, int64_t N, void *scratch);

#endif
