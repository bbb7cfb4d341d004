/* The LoRA-only autograd (DESIGN.md "Key choices"; review-training.md "A design that fits").
 *
 * A tape wraps a backend: mg_tape_backend() returns a table of the same type whose ops run on the
 * inner backend AND are recorded, so model code stays forward-only and runs unchanged under it.
 * mg_tape_backward() then replays the records in reverse, calling each op's *_backward entry.
 *
 * What is differentiated: activations (every float tensor an op reads that is not a weight) and
 * the LoRA leaves. Frozen weights (linear w and b, norm weights, embeddings) never get gradients;
 * a frozen linear's backward is the one GEMM dX += dY·W. The leaves are the act_dtype copies of
 * A and B that lora_forward reads: mg_tape_set_leaves maps them, by offset, to a flat fp32
 * gradient block laid out like them (the adapter's dA/dB).
 *
 * Gradients are found by address: the gradient of a tensor at p is a buffer the tape allocates
 * (zeroed) from its own arena the first time a backward writes it, or one the caller bound with
 * mg_tape_bind_grad (the seed dL/d(output) and the sink dL/d(input) of a segment). An address
 * inside a known tensor (a LoRA output slice of the fused q|k|v) maps into that tensor's gradient.
 * Because gradients are keyed by address, a recorded segment must not rewrite a tensor that an
 * earlier record still needs (a norm's input, say): the tape checks this and backward refuses.
 * In-place accumulation (y += lora(x), x += pos, a residual updated in place) is fine: those ops'
 * backward passes the output gradient through unchanged.
 *
 * Usage, one segment (a layer) at a time, recompute-style:
 *   mg_tape_reset(t); forward the layer through mg_tape_backend(t) into a fresh output y;
 *   mg_tape_bind_grad(t, y, dy, n); mg_tape_bind_grad(t, x, dx, n)  (dx zeroed: backward adds);
 *   mg_tape_backward(t, 0, mg_tape_mark(t));
 * or, keeping several layers recorded (no recompute): note mg_tape_mark before each layer's
 * forward, then differentiate the layers top down, each with its own bindings:
 *   bind dy and dx of layer l; mg_tape_backward(t, mark[l], mark[l+1]); mg_tape_clear_grads(t).
 * Ops with no backward (im2col, embedding: their inputs need no gradient) run unrecorded;
 * linear_gelu and attention_decode have no backward: recording them makes backward fail. */
#ifndef MG_TAPE_H
#define MG_TAPE_H

#include "engine/backend.h"

typedef struct mg_tape mg_tape;

mg_status mg_tape_create(mg_tape **t, const mg_backend *inner);
void mg_tape_destroy(mg_tape *t); /* t may be NULL */

/* The recording table (valid while t lives). */
const mg_backend *mg_tape_backend(mg_tape *t);

/* Forgets the records and every gradient binding; keeps the leaves and the arena. */
void mg_tape_reset(mg_tape *t);
/* The number of records so far: where the next op's record goes. */
int mg_tape_mark(const mg_tape *t);
/* Forgets every gradient binding, keeping the records (the next segment's backward). */
void mg_tape_clear_grads(mg_tape *t);
/* Forgets the records from position `mark` on (and every gradient binding): the records before it
 * stay, so a segment can be recomputed after segments that were kept. */
void mg_tape_truncate(mg_tape *t, int mark);
/* Bytes of the gradient arena (it grows to the largest segment's need). */
size_t mg_tape_arena_bytes(const mg_tape *t);

/* params_act[n] (act_dtype, on the inner backend) holds every LoRA A and B that lora_forward will
 * read; grads[n] (fp32) receives their gradients (+=) at the same element offsets. */
void mg_tape_set_leaves(mg_tape *t, const void *params_act, float *grads, int64_t n);

/* grad[n] (act_dtype) is the gradient of the tensor x[n]: backward reads it when x is an output
 * and adds into it when x is an input. */
void mg_tape_bind_grad(mg_tape *t, const void *x, void *grad, int64_t n);

/* Replays records [from, to) in reverse, with gradient buffers from an arena that every call
 * reuses from its start (so gradients a previous call allocated are gone: bind what must last).
 * Fails when the segment cannot be differentiated (an op without a backward, a saved tensor
 * overwritten) or the gradient arena cannot grow (MG_ERR_OOM). */
mg_status mg_tape_backward(mg_tape *t, int from, int to);

#endif
