/* Runs tests/gpu/test_cuda_ops.c's attention_backward and attention cases (its harness, reference
 * and verdicts) on the emulated kernels (fake_cuda.cpp): small shapes only, the emulator is slow.
 * EMU_SM90=1 runs the unmasked ones through the Hopper kernels, as an H100/H200 does. */
#define main test_cuda_ops_main
#include "tests/gpu/test_cuda_ops.c"
#undef main

extern int emu_sm90_calls, emu_tc_calls, emu_fp32_calls;

int main(void) {
    rng_state = 11;
    mg_cuda_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    case_attention_backward(&ctx, (attn_case){.B = 2, .T = 37, .H = 4, .Hkv = 2, .D = 16, .causal = 1, .padding = 1,
                                              .img_start = -1, .want_groups = 4});
    case_attention_backward(&ctx, (attn_case){.B = 2, .T = 70, .H = 2, .Hkv = 1, .D = 200, .causal = 1, .padding = 1,
                                              .img_start = 10, .img_len = 20, .want_groups = 1});
    case_attention_backward(&ctx, (attn_case){.B = 1, .T = 33, .H = 2, .Hkv = 2, .D = 5, .causal = 1, .window = 3,
                                              .img_start = -1, .fp32_kernel = 1, .want_groups = 2});
    case_attention_backward(&ctx, (attn_case){.B = 2, .T = 100, .H = 4, .Hkv = 2, .D = 72, .causal = 1, .window = 30,
                                              .padding = 1, .img_start = 10, .img_len = 40, .fp32_kernel = 1,
                                              .want_groups = 4});
    case_attention_backward(&ctx, (attn_case){.B = 3, .T = 100, .H = 4, .Hkv = 2, .D = 72, .causal = 1, .window = 30,
                                              .padding = 1, .img_start = 10, .img_len = 40, .want_groups = 2});
    /* as in training: lse2 from the forward (fused dQ at D = 72, the dq kernel at D = 200; the fp32
     * forward's lse2 at D = 24 with q misaligned) */
    case_attention_backward(&ctx, (attn_case){.B = 2, .T = 100, .H = 4, .Hkv = 2, .D = 72, .causal = 1, .window = 30,
                                              .padding = 1, .img_start = 10, .img_len = 40, .want_groups = 2,
                                              .lse = 1});
    case_attention_backward(&ctx, (attn_case){.B = 2, .T = 70, .H = 2, .Hkv = 1, .D = 200, .causal = 1, .padding = 1,
                                              .img_start = 10, .img_len = 20, .want_groups = 1, .lse = 1});
    case_attention_backward(&ctx, (attn_case){.B = 1, .T = 50, .H = 2, .Hkv = 1, .D = 24, .causal = 1, .padding = 1,
                                              .img_start = -1, .fp32_kernel = 1, .want_groups = 1, .lse = 1});
    /* no mask (with EMU_SM90 set: attention_sm90.cu's kernel): D = 72 over two 128-key blocks, D = 128
     * and 40 with GQA, D = 64 fed by the forward's lse2 */
    case_attention_backward(&ctx, (attn_case){.B = 1, .T = 150, .H = 2, .Hkv = 2, .D = 72, .img_start = -1,
                                              .want_groups = 2});
    case_attention_backward(&ctx, (attn_case){.B = 1, .T = 70, .H = 4, .Hkv = 2, .D = 128, .img_start = -1,
                                              .want_groups = 2});
    case_attention_backward(&ctx, (attn_case){.B = 2, .T = 65, .H = 2, .Hkv = 1, .D = 40, .img_start = -1,
                                              .want_groups = 2});
    case_attention_backward(&ctx, (attn_case){.B = 1, .T = 130, .H = 2, .Hkv = 1, .D = 64, .img_start = -1,
                                              .want_groups = 1, .lse = 1});
    /* the forward without a mask (with EMU_SM90 set: attention_sm90.cu's forward kernel): one key
     * tile, three with the last one partial, GQA at D = 128 and 40, D = 64 over two query tiles;
     * out and lse2 of sampled rows against float64 */
    case_attention(&ctx, (attn_case){.B = 1, .T = 50, .H = 3, .Hkv = 3, .D = 72, .img_start = -1, .want_queries = 50});
    case_attention(&ctx, (attn_case){.B = 2, .T = 150, .H = 2, .Hkv = 2, .D = 72, .img_start = -1, .want_queries = 80});
    case_attention(&ctx, (attn_case){.B = 1, .T = 70, .H = 4, .Hkv = 2, .D = 128, .img_start = -1, .want_queries = 70});
    case_attention(&ctx, (attn_case){.B = 2, .T = 65, .H = 2, .Hkv = 1, .D = 40, .img_start = -1, .want_queries = 60});
    case_attention(&ctx, (attn_case){.B = 1, .T = 260, .H = 2, .Hkv = 1, .D = 64, .img_start = -1, .want_queries = 90});
    printf("Hopper path %d calls, tensor-core path %d calls, fp32 path %d calls; %d/%d passed\n", emu_sm90_calls,
           emu_tc_calls, emu_fp32_calls, test_passed_, test_passed_ + test_failed_);
    return test_failed_ != 0;
}
