/* What GPU, if any, this process can use. Implemented in kernels/cuda/device.cu; on a machine
 * without a GPU or driver these report "no GPU" rather than failing. */
#ifndef MG_DEVICE_H
#define MG_DEVICE_H

#include <stddef.h>

#include "engine/status.h"

typedef struct {
    int available;          /* 1 when a CUDA device can be used */
    char name[256];         /* "NVIDIA H100 80GB HBM3", or why none is available */
    int cc_major, cc_minor; /* compute capability */
    size_t total_mem, free_mem;
    int sm_count;
} mg_gpu_info;

/* Fills info about device 0. Never fails: info->available says whether a GPU is usable. */
void mg_gpu_query(mg_gpu_info *info);

/* Free and total memory of the calling thread's current CUDA device (cudaMemGetInfo) and its ordinal.
 * Returns 0, leaving the outputs alone, when there is no GPU or the query fails. */
int mg_gpu_mem(int *device, size_t *free_bytes, size_t *total_bytes);

#endif
