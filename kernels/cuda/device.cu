// Device discovery. The CUDA runtime is linked statically; on a machine with no driver
// cudaGetDeviceCount fails and we report that instead of failing.
extern "C" {
#include "engine/device.h"
}

#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

extern "C" void mg_gpu_query(mg_gpu_info *info) {
    memset(info, 0, sizeof *info);
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        // without a driver the runtime says "driver version is insufficient": say what it means
        const char *why = err == cudaErrorInsufficientDriver ? "no NVIDIA driver, or one older than CUDA 13 needs"
                          : err != cudaSuccess              ? cudaGetErrorString(err)
                                                            : "no CUDA devices";
        snprintf(info->name, sizeof info->name, "no GPU (%s)", why);
        cudaGetLastError();  // clear the sticky-free error so later calls start clean
        return;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        snprintf(info->name, sizeof info->name, "no GPU (cudaGetDeviceProperties failed)");
        return;
    }
    info->available = 1;
    snprintf(info->name, sizeof info->name, "%s", prop.name);
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    info->sm_count = prop.multiProcessorCount;
    info->total_mem = prop.totalGlobalMem;
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) info->free_mem = free_b;
}

extern "C" int mg_gpu_mem(int *device, size_t *free_bytes, size_t *total_bytes) {
    int dev = -1;
    size_t free_b = 0, total_b = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        cudaGetLastError();  // a query leaves no error behind
        return 0;
    }
    *device = dev, *free_bytes = free_b, *total_bytes = total_b;
    return 1;
}
