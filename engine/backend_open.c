/* Choosing the backend that runs the model (engine/backend.h, mg_backend_open). */
#include <stdio.h>

#include "engine/backend.h"
#include "engine/device.h"

mg_status mg_backend_open(bool force_cpu, const mg_backend **be, char *desc, size_t desc_size) {
    char scratch[8];
    if (!desc) desc = scratch, desc_size = sizeof scratch;
    *be = mg_backend_cpu();
    if (force_cpu) {
        snprintf(desc, desc_size, "cpu (--cpu)");
        return MG_OK;
    }
    mg_gpu_info gpu;
    mg_gpu_query(&gpu);
    if (!gpu.available) {
        snprintf(desc, desc_size, "cpu, %s", gpu.name); /* the name says why: "no GPU (...)" */
        return MG_OK;
    }
    mg_backend *cuda = NULL;
    mg_status s = mg_backend_cuda_create(0, &cuda);
    if (s == MG_ERR_UNSUPPORTED) { /* a GPU the kernels cannot use (pre-Ampere): the CPU still works */
        snprintf(desc, desc_size, "cpu (%s has compute capability %d.%d; the CUDA kernels need 8.0+)", gpu.name,
                 gpu.cc_major, gpu.cc_minor);
        return MG_OK;
    }
    if (s != MG_OK) return mg_fail_context(s, "setting up %s: ", gpu.name);
    *be = cuda;
    snprintf(desc, desc_size, "cuda (%s)", cuda->device);
    return MG_OK;
}

void mg_backend_close(const mg_backend *be) {
    if (be && be != mg_backend_cpu()) mg_backend_cuda_destroy(be);
}
