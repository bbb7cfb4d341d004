// The CUDA context (kernels/cuda/cuda_context.h): device properties, stream, cuBLASLt handle,
// workspace, GEMM plan table and op scratch, created once; plus the synchronous memory helpers and the error recorder behind
// MG_CUDA_CHECK / MG_CUBLAS_CHECK.
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "engine/oom.h"
}

// 32 MiB: NVIDIA's recommended cuBLASLt workspace on Hopper (smaller parts need less; a bigger
// workspace only widens the choice of algorithms).
static const size_t LT_WORKSPACE_BYTES = (size_t)32 << 20;
// 32 MiB: LoRA's dropout(x) for the GEMMs that read it and lora_backward's bf16 copy of du, a chunk
// of rows at a time (about 3,800 rows at K = 4304, 14,000 at K = 1152): large enough that the
// chunks' launches cost little, small enough to stay in the H100/H200's 50 MB L2 between the
// kernel that writes a chunk and the GEMM that reads it.
static const size_t SCRATCH_BYTES = (size_t)32 << 20;

// What an out-of-memory error says to do when the job does not say better (engine/oom.h: the jobs
// replace it with their flags).
static const char *OOM_HINT = "free GPU memory that other programs hold (nvidia-smi lists them), or make the job "
                              "smaller (a smaller batch)";

mg_status mg_cuda_fail_(const char *stmt, const char *what, int is_oom, const char *func, const char *file,
                        int line) {
    int dev = -1;
    cudaGetDevice(&dev);  // best effort: the device is only for the message
    if (!is_oom)
        return mg_fail(MG_ERR_CUDA,
                       "a CUDA error is a medgem bug or a broken GPU/driver: rerun with CUDA_LAUNCH_BLOCKING=1 (or "
                       "under compute-sanitizer) and report the message",
                       "CUDA call failed on device %d: %s -> %s (in %s at %s:%d)", dev, stmt, what, func, file, line);
    // An allocation error is not sticky: clear it, or the next launch check would report it again
    // as a CUDA error. Then say how much memory there is (the bytes asked for are not known here).
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    char f[32] = "?", t[32] = "?";
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
        mg_fmt_bytes(f, sizeof f, (double)free_b);
        mg_fmt_bytes(t, sizeof t, (double)total_b);
    } else {
        cudaGetLastError();
    }
    return mg_fail(MG_ERR_OOM, OOM_HINT, "GPU %d ran out of memory in %s (%s): %s free of %s (in %s at %s:%d)", dev,
                   stmt, what, f, t, func, file, line);
}

extern "C" mg_status mg_cuda_alloc_for(mg_cuda_ctx *ctx, void **ptr, size_t bytes, const char *what) {
    *ptr = NULL;
    const cudaError_t e = cudaMalloc(ptr, bytes);
    if (e == cudaSuccess) return MG_OK;
    *ptr = NULL;
    if (e != cudaErrorMemoryAllocation)
        return mg_cuda_fail_("cudaMalloc", cudaGetErrorString(e), 0, __func__, __FILE__, __LINE__);
    cudaGetLastError();  // not sticky: the next launch check must not see it
    mg_mem_info mi;
    memset(&mi, 0, sizeof mi);
    mi.device = ctx->device;
    mi.known = cudaMemGetInfo(&mi.free, &mi.total) == cudaSuccess;
    if (!mi.known) cudaGetLastError();
    char msg[1024];
    return mg_fail(MG_ERR_OOM, OOM_HINT, "%s", mg_oom_describe(msg, sizeof msg, bytes, what, &mi));
}

// Everything create makes, in the reverse order; tolerates a partly created context.
extern "C" void mg_cuda_ctx_destroy(mg_cuda_ctx *ctx) {
    mg_cuda_gemm_plans_destroy(ctx);
    if (ctx->scratch) cudaFree(ctx->scratch);
    if (ctx->attn_scratch) cudaFree(ctx->attn_scratch);
    ctx->attn_scratch = NULL;
    ctx->attn_scratch_bytes = 0;
    if (ctx->lt_workspace) cudaFree(ctx->lt_workspace);
    if (ctx->lt) cublasLtDestroy(ctx->lt);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    ctx->scratch = NULL;
    ctx->scratch_bytes = 0;
    ctx->lt_workspace = NULL;
    ctx->lt = NULL;
    ctx->stream = NULL;
}

static mg_status ctx_init(mg_cuda_ctx *ctx, int device) {
    MG_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop;
    MG_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    ctx->device = device;
    snprintf(ctx->name, sizeof ctx->name, "%s", prop.name);
    ctx->cc_major = prop.major;
    ctx->cc_minor = prop.minor;
    ctx->sm_count = prop.multiProcessorCount;
    ctx->smem_optin = prop.sharedMemPerBlockOptin;
    if (prop.major < 8)
        return mg_fail(MG_ERR_UNSUPPORTED, "medgem's CUDA kernels need an Ampere (sm_80) or newer GPU",
                       "GPU %d (%s) has compute capability %d.%d, without bf16 tensor cores", device, prop.name,
                       prop.major, prop.minor);
    cudaStream_t stream = NULL;
    MG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    ctx->stream = stream;
    cublasLtHandle_t lt = NULL;
    MG_CUBLAS_CHECK(cublasLtCreate(&lt));
    ctx->lt = lt;
    MG_TRY(mg_cuda_alloc_for(ctx, &ctx->lt_workspace, LT_WORKSPACE_BYTES, "the cuBLASLt workspace"));
    ctx->lt_workspace_bytes = LT_WORKSPACE_BYTES;
    MG_TRY(mg_cuda_alloc_for(ctx, &ctx->scratch, SCRATCH_BYTES, "the op scratch"));
    ctx->scratch_bytes = SCRATCH_BYTES;
    return mg_cuda_gemm_plans_create(ctx);
}

extern "C" mg_status mg_cuda_ctx_create(mg_cuda_ctx *ctx, int device) {
    memset(ctx, 0, sizeof *ctx);
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        cudaGetLastError();  // leave no error behind for later calls
        return mg_fail(MG_ERR_UNSUPPORTED, "run on a machine with an NVIDIA GPU and driver, or use the CPU backend",
                       "no GPU: %s", err != cudaSuccess ? cudaGetErrorString(err) : "no CUDA devices");
    }
    if (device < 0 || device >= count)
        return mg_fail(MG_ERR_ARG, "pick a device between 0 and the count nvidia-smi -L lists",
                       "CUDA device %d does not exist (%d visible)", device, count);
    mg_status s = ctx_init(ctx, device);
    if (s != MG_OK) mg_cuda_ctx_destroy(ctx);
    return s;
}

extern "C" mg_status mg_cuda_sync(mg_cuda_ctx *ctx) {
    MG_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return MG_OK;
}

extern "C" mg_status mg_cuda_alloc(mg_cuda_ctx *ctx, void **ptr, size_t bytes) {
    return mg_cuda_alloc_for(ctx, ptr, bytes, "a device buffer");
}

extern "C" void mg_cuda_free(void *ptr) {
    if (ptr) cudaFree(ptr);
}

extern "C" mg_status mg_cuda_upload(mg_cuda_ctx *ctx, void *dst_dev, const void *src_host, size_t bytes) {
    MG_CUDA_CHECK(cudaMemcpyAsync(dst_dev, src_host, bytes, cudaMemcpyHostToDevice, ctx->stream));
    MG_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return MG_OK;
}

extern "C" mg_status mg_cuda_download(mg_cuda_ctx *ctx, void *dst_host, const void *src_dev, size_t bytes) {
    MG_CUDA_CHECK(cudaMemcpyAsync(dst_host, src_dev, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    MG_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return MG_OK;
}

extern "C" mg_status mg_cuda_copy(mg_cuda_ctx *ctx, void *dst_dev, const void *src_dev, size_t bytes) {
    MG_CUDA_CHECK(cudaMemcpyAsync(dst_dev, src_dev, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    return MG_OK;
}

extern "C" mg_status mg_cuda_zero(mg_cuda_ctx *ctx, void *dst_dev, size_t bytes) {
    MG_CUDA_CHECK(cudaMemsetAsync(dst_dev, 0, bytes, ctx->stream));
    return MG_OK;
}
