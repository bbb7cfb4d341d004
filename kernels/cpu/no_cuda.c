/* The CUDA entry points the library references, for the CPU-only build (`make CUDA=no`, or `make`
 * on a machine without the CUDA toolkit): compiled only then, in place of kernels/cuda/. They
 * report that no GPU is there, so mg_backend_open picks the CPU backend. */
#include <stdio.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/device.h"

void mg_gpu_query(mg_gpu_info *info) {
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "no GPU (this medgem was built without CUDA)");
}

int mg_gpu_mem(int *device, size_t *free_bytes, size_t *total_bytes) {
    (void)device, (void)free_bytes, (void)total_bytes;
    return 0;
}

mg_status mg_backend_cuda_create(int device, mg_backend **be) {
    (void)device;
    *be = NULL;
    return mg_fail(MG_ERR_UNSUPPORTED, "build medgem with the CUDA toolkit installed (make, not make CUDA=no)",
                   "this medgem was built without CUDA");
}

void mg_backend_cuda_destroy(const mg_backend *be) { (void)be; }
