/* Runs tests/gpu/test_cuda_backward.c's lora_backward cases (its harness, float64 reference and
 * verdicts) on kernels/cuda/lora.cu's tensor-core backward in the emulator (fake_lora.cpp): small
 * shapes that take that path, every rank padding (16, 32, 48, 64), dropout on and off, dy a column
 * slice, row and column counts off the 64-tiles, column splits (few rows), dx NULL. */
#define main test_cuda_backward_main
#include "tests/gpu/test_cuda_backward.c"
#undef main

extern int emu_lora_tc_calls;

int main(void) {
    rng_state = 7;
    mg_cuda_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    const lora_case lc[] = {
        {.M = 37, .K = 40, .r = 8, .N = 32, .ldy = 40, .off = 8, .p = 0.0f},
        {.M = 150, .K = 136, .r = 8, .N = 200, .ldy = 216, .off = 16, .p = 0.1f},
        {.M = 300, .K = 1000, .r = 64, .N = 200, .ldy = 256, .off = 56, .p = 0.05f},
        {.M = 97, .K = 72, .r = 12, .N = 48, .ldy = 48, .off = 0, .p = 0.2f},
        {.M = 70, .K = 64, .r = 24, .N = 64, .ldy = 136, .off = 64, .p = 0.0f},
        {.M = 65, .K = 208, .r = 40, .N = 24, .ldy = 24, .off = 0, .p = 0.1f},
        {.M = 520, .K = 24, .r = 4, .N = 16, .ldy = 32, .off = 8, .p = 0.3f},
    };
    for (size_t i = 0; i < sizeof lc / sizeof lc[0]; i++) case_lora_backward(&ctx, lc[i], 1);
    case_lora_backward(&ctx, lc[1], 0);
    printf("tensor-core path %d calls; %d/%d passed\n", emu_lora_tc_calls, test_passed_, test_passed_ + test_failed_);
    return test_failed_ != 0 || emu_lora_tc_calls != (int)(sizeof lc / sizeof lc[0]) + 1;
}
