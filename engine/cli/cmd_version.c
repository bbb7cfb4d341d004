#include <stdio.h>

#include "engine/cli/commands.h"
#include "engine/device.h"
#include "engine/medgem.h"

int cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    mg_gpu_info gpu;
    mg_gpu_query(&gpu);
    printf("medgem %s\n", MG_VERSION);
    if (gpu.available)
        printf("gpu: %s (sm_%d%d, %d SMs, %.1f GiB)\n", gpu.name, gpu.cc_major, gpu.cc_minor, gpu.sm_count,
               gpu.total_mem / 1073741824.0);
    else
        printf("gpu: %s; medgem will use the CPU\n", gpu.name);
    return 0;
}
