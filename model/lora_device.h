/* An adapter on the backend, unmerged: what the forward adds to each adapted Linear, and the
 * state training updates (STYLE habit 11: one allocation for the LoRA parameters, their
 * gradients and the AdamW moments).
 *   params  (n) fp32 master copy of every A and B, in mg_lora's flat order
 *   act     (n) the same in act_dtype: what lora_forward reads (bf16 on CUDA, as PEFT's A and B
 *               run under autocast), refreshed by every optimizer step
 *   grads   (n) fp32 dL/dparams, accumulated over micro-batches; m, v (n) fp32 AdamW moments
 * The forward finds a module's pieces through mg_lora_device_module; the tape maps `act` to
 * `grads` by offset (engine/tape.h). */
#ifndef MG_LORA_DEVICE_H
#define MG_LORA_DEVICE_H

#include "model/lora.h"

typedef struct mg_lora_device {
    const mg_backend *be;
    const mg_lora *host;     /* module table (shapes, scales) and the host copy of params */
    int *index[2];           /* [n_layers * MG_LORA_N_KINDS], [v_layers * ...]: module of (layer, kind) or -1 */
    int r_max;               /* the largest rank (sizes the u buffers) */
    void *block;             /* the one allocation */
    float *params, *grads, *m, *v; /* (n_params) fp32 each; m, v NULL without an optimizer */
    void *act;               /* (n_params) act_dtype */
    float *scratch;          /* (1) fp32 device scratch (the gradient norm) */
    int64_t n_params;
    float dropout;           /* LoRA dropout of this forward: 0 in evaluation */
    uint64_t seed;           /* this micro-batch's dropout seed */
} mg_lora_device;

/* Uploads lora to be (with room for gradients, and AdamW moments when optimizer). Fails when a
 * module does not fit the model cfg describes. lora must outlive the device copy. */
mg_status mg_lora_device_create(mg_lora_device *d, const mg_backend *be, const mg_config *cfg, const mg_lora *lora,
                                bool optimizer);
void mg_lora_device_free(mg_lora_device *d);

/* The module adapting (comp, layer, kind), or NULL when there is none. */
const mg_lora_module *mg_lora_device_module(const mg_lora_device *d, mg_component comp, int layer, mg_lora_kind kind,
                                            const void **A, const void **B);

/* Copies the fp32 parameters (and the moments, when m and v are not NULL) back to the host
 * (into host->params); waits for the device. */
mg_status mg_lora_device_download(const mg_lora_device *d, float *params, float *m, float *v);
/* Uploads fp32 parameters (and moments when given), refreshing the act_dtype copy. */
void mg_lora_device_upload(mg_lora_device *d, const float *params, const float *m, const float *v);

/* Per-module buffers of one layer's LoRA branches: u (M, r_max), what backward keeps beside the
 * branch's input (the dropout mask is drawn again from the seed, so dropout(x) is never stored).
 * Laid out with mg_carve from base (NULL: sizing); returns the bytes. */
typedef struct {
    void *u[MG_LORA_N_KINDS];
} mg_lora_acts;
size_t mg_lora_acts_layout(mg_lora_acts *a, char *base, const mg_lora_device *d, const mg_config *cfg,
                           mg_component comp, int64_t M, size_t esize);

/* y[:, :out] (rows ldy apart) += the LoRA branch of (comp, layer, kind) on x[M, in], when d has
 * that module (nothing otherwise; d may be NULL). */
void mg_lora_apply(const mg_backend *be, const mg_lora_device *d, const mg_lora_acts *a, mg_component comp, int layer,
                   mg_lora_kind kind, void *y, int64_t ldy, const void *x, int64_t M);

#endif
