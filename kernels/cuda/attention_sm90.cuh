// The attention forward and backward's Hopper kernels (attention_sm90.cu), called by attention.cu's
// entries.
#pragma once

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "engine/backend.h"
}

// Whether the Hopper kernels take this attention: a compute capability 9.0 device (their sm_90a
// code), no mask (not causal, no window, no key padding), D a multiple of 8 up to 128. The caller has
// checked the tensor-core path's alignment (16-byte q, k, v, dout, dq, dk, dv; 4-byte out).
bool attention_sm90_fits(const mg_cuda_ctx *ctx, const mg_attention_args *a);

// out = softmax(q·kᵀ·scale)·v, and a->lse2 (B,H,T) when set, as attention.cu's forward.
mg_status attention_forward_sm90_launch(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v,
                                        const mg_attention_args *a);

// dq += scale·dQ, dk += scale·dK, dv += dV from the forward's lse2 and Δ ((B,H,T) each, as in
// attention.cu), dQ summed over the key tiles in dq_acc (B·T·H·D floats of scratch, 16-byte aligned,
// zeroed by the caller).
mg_status attention_backward_sm90_launch(mg_cuda_ctx *ctx, bf16 *dq, bf16 *dk, bf16 *dv, float *dq_acc, const bf16 *q,
                                         const bf16 *k, const bf16 *v, const bf16 *dout, const float *lse2,
                                         const float *delta, const mg_attention_args *a);
