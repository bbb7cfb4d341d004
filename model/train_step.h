/* One training micro-batch of MedGemma with an unmerged LoRA adapter: forward, causal-LM loss,
 * backward into the adapter's fp32 gradients (spec/model.md §8).
 *
 * Memory (STYLE habit 11): the forward keeps each layer's input (text (L+1)·M·C, vision
 * (Lv+1)·N·P·Cv values). Vision layers are recomputed in backward, one at a time, through the
 * autograd tape (engine/tape.h): replayed and discarded (keeping all of them takes 1.32 GB a layer
 * at batch 8), except the top ones that fit in `memory_budget`, which are recorded as they run.
 * Text layers are recorded during the forward with every activation kept (about 0.31 GB per layer
 * at batch 8 x 360 tokens), unless `recompute` is set, when they too are recomputed one at a time
 * (the least memory, one more text forward of time). A layer's activations are its ops' inputs
 * and outputs and each LoRA branch's u (M, r); LoRA dropout's output is never stored (the mask is
 * drawn again from its seed in backward, engine/backend.h mg_lora_args).
 * The head sees only the labelled rows: they are gathered before the final norm, and their
 * logits over the whole vocabulary exist one chunk of rows at a time.
 *
 * Loss: labels (B, T) as transformers takes them (-100 = ignored); position t predicts
 * labels[t+1] (the shift). The step adds Σ CE over its labelled positions to *loss_sum and
 * grad_scale · dΣCE/dθ to the adapter's gradients, so a caller that passes grad_scale =
 * 1 / (labelled tokens of the whole accumulation window) gets transformers' Trainer normalisation. */
#ifndef MG_TRAIN_STEP_H
#define MG_TRAIN_STEP_H

#include "engine/tape.h"
#include "model/lora_device.h"
#include "model/medgem_model.h"

typedef struct {
    mg_model *m;
    mg_lora_device *lora;
    mg_tape *tape;
    void *work;        /* one allocation for every buffer of a step, grown to the largest batch seen */
    size_t work_bytes;
    size_t peak_bytes; /* the largest work allocation so far */
    bool recompute;    /* recompute text layers in backward instead of keeping their activations */
    size_t memory_budget; /* keep the top vision layers' activations (instead of recomputing them) while
                           * weights + adapter state + the step's buffers fit in this many bytes; 0: none */
    int vision_keep;   /* the vision layers the last step kept */
    int *marks;        /* (L+1) tape position of each text layer's records */
    int *vmarks;       /* (Lv+1) tape position of each kept vision layer's records */
} mg_trainer;

/* Binds a trainer to a model and an adapter on the same backend (the model must not have the
 * adapter merged; the trainer sets m->lora while it runs a step). */
mg_status mg_trainer_create(mg_trainer *t, mg_model *m, mg_lora_device *lora);
void mg_trainer_free(mg_trainer *t);

/* The memory_budget for a run allowed max_gb of device memory (0: what the GPU has free now,
 * with the model already loaded), leaving 2 GB for the CUDA context, cuBLASLt's workspace and
 * fragmentation; 0 (nothing kept beyond the minimum) on the CPU backend unless max_gb is given. */
size_t mg_memory_budget(const mg_backend *be, const mg_model *m, double max_gb);

/* Whether the adapter has a vision-tower module (then the soft tokens change with training and a
 * step must get pixels, not precomputed soft tokens). */
bool mg_trainer_trains_vision(const mg_trainer *t);

/* Labelled positions of labels (B, T) after the shift: positions t < T-1 with labels[t+1] != -100. */
int64_t mg_count_targets(const int32_t *labels, int64_t B, int64_t T);

/* Runs one micro-batch (in: ids, pixels, token_type, attn_mask as for mg_model_forward; or
 * in->soft_tokens instead of pixels when the adapter has no vision module, an error otherwise) and
 * accumulates into the adapter's gradients (+=); *loss_sum += Σ CE (fp32 per token, summed in
 * double on the host). Bad input is an error naming the position; nothing is accumulated then. */
mg_status mg_train_step(mg_trainer *t, const mg_model_input *in, const int32_t *labels, float grad_scale,
                        double *loss_sum);

#endif
