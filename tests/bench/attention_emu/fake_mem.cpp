// Device memory for the emulated tests (fake_cuda.cpp, fake_lora.cpp): host memory with
// cudaMalloc's alignment, copies by memcpy, nothing to wait for.
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "engine/status.h"
#include "kernels/cuda/cuda_context.h"
}

extern "C" mg_status mg_cuda_alloc(mg_cuda_ctx *, void **p, size_t bytes) {
    *p = aligned_alloc(256, (bytes + 255) / 256 * 256);  // cudaMalloc's alignment
    return MG_OK;
}
extern "C" void mg_cuda_free(void *p) { free(p); }
extern "C" mg_status mg_cuda_upload(mg_cuda_ctx *, void *d, const void *s, size_t n) { memcpy(d, s, n); return MG_OK; }
extern "C" mg_status mg_cuda_download(mg_cuda_ctx *, void *d, const void *s, size_t n) { memcpy(d, s, n); return MG_OK; }
extern "C" mg_status mg_cuda_sync(mg_cuda_ctx *) { return MG_OK; }
