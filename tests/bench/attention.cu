// Attention kernel lab (STYLE habit 10): includes the production kernels of kernels/cuda/attention.cu
// and the previous tensor-core kernel (tests/bench/attention_tc_v1.cuh), and times them at the
// model's shapes. Versions:
//   sm90   attention_forward_sm90_kernel<DP, DC> (kernels/cuda/attention_sm90.cu, wgmma), what the
//          forward runs on an H100/H200 where it fits (no mask: SigLIP)
//   tc     attention_forward_tc_kernel<DP, BQ> (production): FlashAttention-2 on mma.sync bf16,
//          128-row query tiles at DP <= 80 (two m16 blocks per warp), two K/V stages, P·V over
//          D's n8 blocks only, K tiles past an image group skipped under causal
//   tc_v1  the previous production kernel: 64-row tiles, one K and one V buffer, no skipping
//   fp32   attention_forward_fp32_kernel, fp32 on CUDA cores (the fallback for odd D / alignment)
//   bwd_sm90  attention_backward's Hopper kernel (kernels/cuda/attention_sm90.cu, wgmma), what
//             training runs on an H100/H200 where it fits (no mask: SigLIP), the forward's lse2
//   bwd_tc    attention_backward's mma.sync tensor-core path (sm_80, and Hopper under masks): Δ, the forward's lse2
//             (mg_attention_args.lse2), the dk/dv kernel with dQ fused up to D = 80, else a dq
//             kernel and the dk/dv kernel (what torch's SDPA backward does too: it gets its
//             forward's log-sum-exp)
//   bwd_tc_stats  the same without the forward's lse2: the forward kernel's STATS mode first
//   bwd_tc_sep    bwd_tc_stats with the separate dq kernel at D <= 80 (the earlier production path)
//   bwd_fp32  attention_backward's fp32 path (the fallback), the reference for the others
// Shapes: SigLIP (B=8 images, H=16, T=4096, D=72, no mask); Gemma (B=32, H=8, Hkv=4, T=360,
// D=256) causal, and causal + one image of 256 soft tokens at position 6 (the model's real mask).
// Each shape is validated first: both tc versions against fp32 on the same random inputs (nmse
// over all outputs, ~5e-6 expected from bf16 P; > 1e-4 or any NaN fails; outputs poisoned with
// NaN before, so an unwritten element fails too). Then each version runs WARMUP times and REPEATS
// timed times (fp32: 3) with CUDA events around each run and a 256 MiB write between runs so
// that no run finds its inputs in L2; the median is printed, then the tc/tc_v1 speed-up.
// FLOPs: 4·B·H·T²·D with the real D (72, not the padded 80), halved when causal (the count
// flash-attention's and torch's benchmarks use), so rows compare with attention_torch.py; the
// backward counts 2.5x that (five T×T×D products: bwd_tc does five at D <= 80, bwd_tc_stats six,
// bwd_tc_sep eight). The backward is validated the same way (dq, dk, dv of each tc version
// against bwd_fp32 from zero, out from the tc forward) and timed accumulating.
//
// Build and run (GPU machine): make build/bench/attention && build/bench/attention
// Next to torch SDPA on the same GPU:  python3 tests/bench/attention_torch.py
#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#include "kernels/cuda/attention.cu"
#include "tests/bench/attention_tc_v1.cuh"

enum { WARMUP = 3, REPEATS = 20, REPEATS_FP32 = 3 };

#define BENCH_CHECK(stmt)                                                              \
    do {                                                                               \
        cudaError_t e_ = (stmt);                                                       \
        if (e_ != cudaSuccess) {                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #stmt, cudaGetErrorString(e_)); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)
#define MG_CHECK(stmt)                                                                 \
    do {                                                                               \
        if ((stmt) != MG_OK) {                                                         \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #stmt, mg_last_error()); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

typedef mg_status (*attention_launch_fn)(mg_cuda_ctx *, bf16 *, const bf16 *, const bf16 *, const bf16 *,
                                         const mg_attention_args *);

static uint64_t rng_state = 12345;
static float rng_uniform(void) {  // splitmix64 -> [-1, 1)
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

// A device tensor of n bf16 uniform in [-scale, scale).
static bf16 *rand_device(size_t n, float scale) {
    std::vector<bf16> h(n);
    for (size_t i = 0; i < n; i++) h[i] = __float2bfloat16_rn(rng_uniform() * scale);
    bf16 *d = NULL;
    BENCH_CHECK(cudaMalloc(&d, n * sizeof(bf16)));
    BENCH_CHECK(cudaMemcpy(d, h.data(), n * sizeof(bf16), cudaMemcpyHostToDevice));
    return d;
}

static std::vector<float> download(const bf16 *d, size_t n) {
    std::vector<bf16> h(n);
    BENCH_CHECK(cudaMemcpy(h.data(), d, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    std::vector<float> f(n);
    for (size_t i = 0; i < n; i++) f[i] = __bfloat162float(h[i]);
    return f;
}

// Median milliseconds of `reps` runs, L2 flushed before each.
static float time_ms(mg_cuda_ctx *ctx, attention_launch_fn fn, bf16 *out, const bf16 *q, const bf16 *k,
                     const bf16 *v, const mg_attention_args *a, int reps, void *flush, size_t flush_bytes) {
    cudaEvent_t e0, e1;
    BENCH_CHECK(cudaEventCreate(&e0));
    BENCH_CHECK(cudaEventCreate(&e1));
    for (int i = 0; i < WARMUP; i++) MG_CHECK(fn(ctx, out, q, k, v, a));
    std::vector<float> ms(reps);
    for (int i = 0; i < reps; i++) {
        BENCH_CHECK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, ctx->stream));
        BENCH_CHECK(cudaEventRecord(e0, ctx->stream));
        MG_CHECK(fn(ctx, out, q, k, v, a));
        BENCH_CHECK(cudaEventRecord(e1, ctx->stream));
        BENCH_CHECK(cudaEventSynchronize(e1));
        BENCH_CHECK(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    BENCH_CHECK(cudaEventDestroy(e0));
    BENCH_CHECK(cudaEventDestroy(e1));
    std::sort(ms.begin(), ms.end());
    return ms[reps / 2];
}

typedef struct {
    const char *name;
    int64_t B, T;
    int H, Hkv, D;
    bool causal;
    int64_t img_start, img_len;  // one image's soft tokens in every row; img_start < 0: none
} shape;

// nmse of got against ref over n outputs, and the count of NaNs in got.
static double nmse_of(const std::vector<float> &got, const std::vector<float> &ref, size_t *nans) {
    double num = 0, den = 0;
    *nans = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (got[i] != got[i]) (*nans)++;
        num += (double)(got[i] - ref[i]) * (got[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return num / (den > 0 ? den : 1.0);
}

static int bench_shape(mg_cuda_ctx *ctx, shape s, void *flush, size_t flush_bytes) {
    const size_t nq = (size_t)s.B * s.T * s.H * s.D, nk = (size_t)s.B * s.T * s.Hkv * s.D;
    bf16 *q = rand_device(nq, 2.0f), *k = rand_device(nk, 2.0f), *v = rand_device(nk, 1.0f);
    int32_t *group = NULL;
    if (s.img_start >= 0) {
        std::vector<int32_t> h((size_t)(s.B * s.T), -1);
        for (int64_t b = 0; b < s.B; b++)
            for (int64_t t = s.img_start; t < s.img_start + s.img_len; t++) h[(size_t)(b * s.T + t)] = 0;
        BENCH_CHECK(cudaMalloc(&group, h.size() * sizeof(int32_t)));
        BENCH_CHECK(cudaMemcpy(group, h.data(), h.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    }
    mg_attention_args a = {};
    a.B = s.B, a.T = s.T, a.H = s.H, a.Hkv = s.Hkv, a.D = s.D;
    a.scale = 1.0f / sqrtf((float)s.D);
    a.causal = s.causal;
    a.group = group;

    struct version {
        const char *name;
        attention_launch_fn fn;
        int reps;
        bf16 *out;
    };
    std::vector<version> versions;
    if (attention_sm90_fits(ctx, &a)) versions.push_back({"sm90", attention_forward_sm90_launch, REPEATS, NULL});
    versions.push_back({"tc", attention_forward_tc_launch, REPEATS, NULL});
    versions.push_back({"tc_v1", attn_v1::attention_forward_tc_launch, REPEATS, NULL});
    versions.push_back({"fp32", attention_forward_fp32_launch, REPEATS_FP32, NULL});
    const int n_versions = (int)versions.size(), ref_version = n_versions - 1;

    // Validate: each tensor-core version against fp32 over every output (outputs NaN-poisoned first).
    for (version &ver : versions) {
        BENCH_CHECK(cudaMalloc(&ver.out, nq * sizeof(bf16)));
        BENCH_CHECK(cudaMemset(ver.out, 0xff, nq * sizeof(bf16)));  // 0xffff: a bf16 NaN
        MG_CHECK(ver.fn(ctx, ver.out, q, k, v, &a));
    }
    MG_CHECK(mg_cuda_sync(ctx));
    const std::vector<float> ref = download(versions[ref_version].out, nq);
    int ok = 1;
    for (int vi = 0; vi < ref_version; vi++) {
        size_t nans = 0;
        const double nmse = nmse_of(download(versions[vi].out, nq), ref, &nans);
        const int v_ok = nans == 0 && nmse <= 1e-4;
        printf("# %s: %s vs fp32 nmse=%.2e nan=%zu: %s\n", s.name, versions[vi].name, nmse, nans,
               v_ok ? "OK" : "FAIL");
        ok &= v_ok;
    }

    const double flop = 4.0 * s.B * s.H * (double)s.T * s.T * s.D * (s.causal ? 0.5 : 1.0);
    std::vector<float> ms(n_versions);
    for (int vi = 0; vi < n_versions; vi++) {
        const version &ver = versions[vi];
        ms[vi] = time_ms(ctx, ver.fn, ver.out, q, k, v, &a, ver.reps, flush, flush_bytes);
        printf("%-6s | %-52s | %9.3f | %7.1f\n", ver.name, s.name, ms[vi], flop / (ms[vi] * 1e-3) / 1e12);
    }
    const int tc = n_versions - 3;  // then tc_v1, fp32
    printf("# %s: tc is %.2fx tc_v1\n", s.name, ms[tc + 1] / ms[tc]);
    if (tc == 1) printf("# %s: sm90 is %.2fx tc\n", s.name, ms[tc] / ms[0]);
    for (version &ver : versions) cudaFree(ver.out);
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(group);
    return ok;
}


static int bench_backward(mg_cuda_ctx *ctx, shape s, void *flush, size_t flush_bytes) {
    const size_t nq = (size_t)s.B * s.T * s.H * s.D, nk = (size_t)s.B * s.T * s.Hkv * s.D;
    bf16 *q = rand_device(nq, 2.0f), *k = rand_device(nk, 2.0f), *v = rand_device(nk, 1.0f),
         *dout = rand_device(nq, 1.0f), *out = NULL;
    int32_t *group = NULL;
    if (s.img_start >= 0) {
        std::vector<int32_t> h((size_t)(s.B * s.T), -1);
        for (int64_t b = 0; b < s.B; b++)
            for (int64_t t = s.img_start; t < s.img_start + s.img_len; t++) h[(size_t)(b * s.T + t)] = 0;
        BENCH_CHECK(cudaMalloc(&group, h.size() * sizeof(int32_t)));
        BENCH_CHECK(cudaMemcpy(group, h.data(), h.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    }
    mg_attention_args a = {};
    a.B = s.B, a.T = s.T, a.H = s.H, a.Hkv = s.Hkv, a.D = s.D;
    a.scale = 1.0f / sqrtf((float)s.D);
    a.causal = s.causal;
    a.group = group;
    // The forward as training runs it: out and each row's lse2, which bwd_tc reads.
    float *lse2 = NULL;
    BENCH_CHECK(cudaMalloc(&out, nq * sizeof(bf16)));
    BENCH_CHECK(cudaMalloc(&lse2, (size_t)s.B * s.H * s.T * sizeof(float)));
    mg_attention_args a_train = a;
    a_train.lse2 = lse2;
    MG_CHECK(attention_forward_tc_launch(ctx, out, q, k, v, &a_train));

    // bwd_sm90 (where it fits) and bwd_tc: the training paths (the forward's lse2); bwd_tc_stats:
    // bwd_tc without it (its own Q·Kᵀ statistics pass); bwd_tc_sep: that with the separate dq kernel.
    struct version {
        const char *name;
        attn_bwd_path path;
        bool lse;
        int reps;
        bf16 *dq, *dk, *dv;
    } all_versions[] = {{"bwd_sm90", ATTN_BWD_SM90, true, REPEATS, NULL, NULL, NULL},
                        {"bwd_tc", ATTN_BWD_TC, true, REPEATS, NULL, NULL, NULL},
                        {"bwd_tc_stats", ATTN_BWD_TC, false, REPEATS, NULL, NULL, NULL},
                        {"bwd_tc_sep", ATTN_BWD_TC_SEPARATE_DQ, false, REPEATS, NULL, NULL, NULL},
                        {"bwd_fp32", ATTN_BWD_FP32, false, REPEATS_FP32, NULL, NULL, NULL}};
    std::vector<version> versions;
    for (const version &ver : all_versions)
        if (ver.path != ATTN_BWD_SM90 || attention_sm90_fits(ctx, &a)) versions.push_back(ver);
    const int n_versions = (int)versions.size(), ref_version = n_versions - 1;
    auto run = [&](const version &ver) {
        return attention_backward_run(ctx, ver.path, ver.dq, ver.dk, ver.dv, dout, q, k, v, out, ver.lse ? &a_train : &a);
    };
    for (version &ver : versions) {
        BENCH_CHECK(cudaMalloc(&ver.dq, nq * sizeof(bf16)));
        BENCH_CHECK(cudaMalloc(&ver.dk, nk * sizeof(bf16)));
        BENCH_CHECK(cudaMalloc(&ver.dv, nk * sizeof(bf16)));
        BENCH_CHECK(cudaMemset(ver.dq, 0, nq * sizeof(bf16)));
        BENCH_CHECK(cudaMemset(ver.dk, 0, nk * sizeof(bf16)));
        BENCH_CHECK(cudaMemset(ver.dv, 0, nk * sizeof(bf16)));
        MG_CHECK(run(ver));
    }
    MG_CHECK(mg_cuda_sync(ctx));
    int ok = 1;
    const char *grads[3] = {"dq", "dk", "dv"};
    for (int vi = 0; vi < ref_version; vi++)
        for (int t = 0; t < 3; t++) {
            const version &got_v = versions[vi], &ref_v = versions[ref_version];
            const size_t n = t ? nk : nq;
            const bf16 *got = t == 0 ? got_v.dq : t == 1 ? got_v.dk : got_v.dv;
            const bf16 *ref = t == 0 ? ref_v.dq : t == 1 ? ref_v.dk : ref_v.dv;
            size_t nans = 0;
            const double nmse = nmse_of(download(got, n), download(ref, n), &nans);
            const int g_ok = nans == 0 && nmse <= 1e-4;
            printf("# %s: %s vs bwd_fp32 %s nmse=%.2e nan=%zu: %s\n", s.name, got_v.name, grads[t], nmse, nans,
                   g_ok ? "OK" : "FAIL");
            ok &= g_ok;
        }

    const double flop = 2.5 * 4.0 * s.B * s.H * (double)s.T * s.T * s.D * (s.causal ? 0.5 : 1.0);
    for (const version &ver : versions) {
        cudaEvent_t e0, e1;
        BENCH_CHECK(cudaEventCreate(&e0));
        BENCH_CHECK(cudaEventCreate(&e1));
        for (int i = 0; i < WARMUP; i++) MG_CHECK(run(ver));
        std::vector<float> ms(ver.reps);
        for (int i = 0; i < ver.reps; i++) {
            BENCH_CHECK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, ctx->stream));
            BENCH_CHECK(cudaEventRecord(e0, ctx->stream));
            MG_CHECK(run(ver));
            BENCH_CHECK(cudaEventRecord(e1, ctx->stream));
            BENCH_CHECK(cudaEventSynchronize(e1));
            BENCH_CHECK(cudaEventElapsedTime(&ms[i], e0, e1));
        }
        BENCH_CHECK(cudaEventDestroy(e0));
        BENCH_CHECK(cudaEventDestroy(e1));
        std::sort(ms.begin(), ms.end());
        const float med = ms[ver.reps / 2];
        printf("%-8s | %-52s | %9.3f | %7.1f\n", ver.name, s.name, med, flop / (med * 1e-3) / 1e12);
    }
    for (version &ver : versions) cudaFree(ver.dq), cudaFree(ver.dk), cudaFree(ver.dv);
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(dout), cudaFree(out), cudaFree(lse2), cudaFree(group);
    return ok;
}

int main(void) {
    mg_cuda_ctx ctx;
    MG_CHECK(mg_cuda_ctx_create(&ctx, 0));
    printf("# attention lab on %s (sm_%d%d, %d SMs)\n", ctx.name, ctx.cc_major, ctx.cc_minor, ctx.sm_count);
    const size_t flush_bytes = (size_t)256 << 20;
    void *flush = NULL;
    BENCH_CHECK(cudaMalloc(&flush, flush_bytes));
    const shape shapes[] = {
        {"siglip B=8 H=16 T=4096 D=72", 8, 4096, 16, 16, 72, false, -1, 0},
        {"gemma B=32 H=8 Hkv=4 T=360 D=256 causal", 32, 360, 8, 4, 256, true, -1, 0},
        {"gemma B=32 H=8 Hkv=4 T=360 D=256 causal+image@6x256", 32, 360, 8, 4, 256, true, 6, 256},
        {"gemma B=32 H=8 Hkv=4 T=293 D=256 causal+image@6x256", 32, 293, 8, 4, 256, true, 6, 256},
    };
    printf("version | shape | time ms | TFLOP/s\n");
    int all_ok = 1;
    if (!getenv("ATTN_LAB_BWD_ONLY"))  // set: the backward's rows only
        for (const shape &s : shapes) all_ok &= bench_shape(&ctx, s, flush, flush_bytes);
    for (const shape &s : shapes) all_ok &= bench_backward(&ctx, s, flush, flush_bytes);
    cudaFree(flush);
    mg_cuda_ctx_destroy(&ctx);
    printf("# validation: %s\n", all_ok ? "all OK" : "FAILED");
    return all_ok ? 0 : 1;
}
