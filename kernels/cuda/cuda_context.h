/* The CUDA context: everything device-side that the ops need, created once and passed to every
 * mg_cuda_* entry (no globals, STYLE habit 3). It is a plain C struct so C code can embed it; the
 * CUDA handle types appear through their struct tags (cudaStream_t is `struct CUstream_st *`,
 * cublasLtHandle_t is `struct cublasLtContext *`), so this header needs no CUDA headers.
 *
 * Every entry assumes the calling thread's current device is ctx->device (mg_cuda_ctx_create
 * makes it current). All work goes to ctx->stream; the memory helpers below are synchronous. */
#ifndef MG_CUDA_CONTEXT_H
#define MG_CUDA_CONTEXT_H

#include <stddef.h>

#include "engine/status.h"

typedef struct mg_cuda_ctx {
    int device;                     /* CUDA device ordinal */
    char name[256];                 /* "NVIDIA H100 80GB HBM3" */
    int cc_major, cc_minor;         /* compute capability, 9.0 on H100 */
    int sm_count;                   /* streaming multiprocessors */
    size_t smem_optin;              /* bytes of shared memory a block may use after opting in */
    struct CUstream_st *stream;     /* cudaStream_t every op is launched on */
    struct cublasLtContext *lt;     /* cublasLtHandle_t for the GEMMs */
    void *lt_workspace;             /* (lt_workspace_bytes) device scratch handed to cuBLASLt */
    size_t lt_workspace_bytes;
    struct mg_gemm_plans *gemm_plans; /* cuBLASLt descriptors + chosen algorithm per GEMM shape (linear.cu) */
    void *scratch;                  /* (scratch_bytes) device temporary of the ops that need one (LoRA's dropout(x)
                                       and bf16 du, by chunks of rows), used in stream order by one op at a time */
    size_t scratch_bytes;
    void *attn_scratch;             /* (attn_scratch_bytes) fp32 row statistics of attention_backward (attention.cu), grown on demand */
    size_t attn_scratch_bytes;
} mg_cuda_ctx;

/* Selects `device`, reads its properties, creates the stream, the cuBLASLt handle, its
 * workspace, the GEMM plan table and the op scratch. Fails with MG_ERR_UNSUPPORTED when there is no usable GPU (the message says why),
 * MG_ERR_CUDA/MG_ERR_OOM otherwise; on failure nothing is left allocated. */
mg_status mg_cuda_ctx_create(mg_cuda_ctx *ctx, int device);
/* Releases what create made; safe on a zeroed or already destroyed context. */
void mg_cuda_ctx_destroy(mg_cuda_ctx *ctx);

/* Waits for all work on ctx->stream; reports errors of kernels that already ran (a fault inside a
 * kernel surfaces here, not at its launch). */
mg_status mg_cuda_sync(mg_cuda_ctx *ctx);

/* Device memory (plain cudaMalloc; arenas are built on these). *ptr is NULL on failure. Out of memory
 * is MG_ERR_OOM saying "allocating <bytes> for <what> on GPU n failed: <free> free of <total>"
 * (engine/oom.h); mg_cuda_alloc's what is "a device buffer". The runtime's error is cleared. */
mg_status mg_cuda_alloc_for(mg_cuda_ctx *ctx, void **ptr, size_t bytes, const char *what);
mg_status mg_cuda_alloc(mg_cuda_ctx *ctx, void **ptr, size_t bytes);
void mg_cuda_free(void *ptr); /* ptr may be NULL */
/* Synchronous copies through ctx->stream: they wait for earlier work on it and for the copy. */
mg_status mg_cuda_upload(mg_cuda_ctx *ctx, void *dst_dev, const void *src_host, size_t bytes);
mg_status mg_cuda_download(mg_cuda_ctx *ctx, void *dst_host, const void *src_dev, size_t bytes);
/* Queued on ctx->stream, returning at once: a device-to-device copy, and dst[0..bytes) = 0. */
mg_status mg_cuda_copy(mg_cuda_ctx *ctx, void *dst_dev, const void *src_dev, size_t bytes);
mg_status mg_cuda_zero(mg_cuda_ctx *ctx, void *dst_dev, size_t bytes);

#endif
