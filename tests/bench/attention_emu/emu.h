// A single-threaded SIMT emulator for kernels/cuda/attention.cu (run.sh builds and runs it): each
// CUDA thread is a ucontext fiber; warp collectives (ldmatrix, mma.sync m16n8k16, shfl) and
// __syncthreads are barriers over fibers, with PTX's fragment layouts (the forward kernel, which
// runs on the GPU, matching the float64 reference through it checks them). Checks: shared-memory
// bounds and 16-byte alignment of ldmatrix rows and cp.async, reads of never-written dynamic shared
// memory (filled with 0xFF, a bf16 NaN, before each block), collectives or barriers some thread
// never reaches (a deadlock aborts). EMU_DEFERRED=1: cp.async lands at the wait instead of at once;
// EMU_SHUFFLE=<seed>: each scheduler round runs a random subset of the warps, so warps drift apart
// between barriers (a missing barrier then shows as wrong results). Blocks run one after another.
#pragma once
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <ucontext.h>
#include <functional>
#include <vector>
extern "C" {
#include "engine/backend.h"
}
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

typedef __nv_bfloat16 bf16;
struct emu_dim3 { unsigned x, y, z; };
extern thread_local emu_dim3 threadIdx_tl;
struct EmuFiber { ucontext_t ctx; emu_dim3 tid; bool done; std::vector<char> stack; std::vector<std::pair<void*, const void*>> pending; };
extern emu_dim3 blockIdx, blockDim, gridDim;
extern int emu_cur;
extern std::vector<EmuFiber> emu_fibers;
#define threadIdx (emu_fibers[emu_cur].tid)
extern unsigned char emu_smem[];
extern size_t emu_smem_bytes;
extern int emu_deferred_cp;

void emu_yield();
void emu_warp_sync();
void emu_block_sync();
static inline int emu_lane() { return threadIdx.x & 31; }
static inline int emu_warp() { return threadIdx.x >> 5; }

struct EmuWarp {
    unsigned gen, count;
    const void *ptr[2][32];
    uint32_t a[2][32][4], b[2][32][2];
    float c[2][32][4];
    float f[2][32];
};
extern EmuWarp emu_warps[32];

static inline void __syncthreads() { emu_block_sync(); }
static inline float __shfl_xor_sync(unsigned, float v, int o) {
    EmuWarp &w = emu_warps[emu_warp()];
    const int p = w.gen & 1, l = emu_lane();
    w.f[p][l] = v;
    emu_warp_sync();
    return w.f[p][l ^ o];
}
static inline float __shfl_sync(unsigned, float v, int src) {
    EmuWarp &w = emu_warps[emu_warp()];
    const int p = w.gen & 1, l = emu_lane();
    w.f[p][l] = v;
    emu_warp_sync();
    return w.f[p][src & 31];
}
static inline int atomicMin(int *p, int v) { int o = *p; if (v < o) *p = v; return o; }
static inline int atomicMax(int *p, int v) { int o = *p; if (v > o) *p = v; return o; }
static inline float atomicAdd(float *p, float v) { float o = *p; *p = o + v; return o; }

static inline void emu_check_smem(const void *p, size_t bytes, const char *what) {
    const unsigned char *c = (const unsigned char *)p;
    if (c < emu_smem || c + bytes > emu_smem + emu_smem_bytes) {
        fprintf(stderr, "EMU: %s outside dynamic shared memory (offset %ld, %zu bytes of %zu)\n", what,
                (long)(c - emu_smem), bytes, emu_smem_bytes);
        abort();
    }
    if (((uintptr_t)p & 15) != 0) { fprintf(stderr, "EMU: %s misaligned\n", what); abort(); }
}
static inline void cp_async16(void *dst, const void *src) {
    emu_check_smem(dst, 16, "cp.async dst");
    if (((uintptr_t)src & 15) != 0) { fprintf(stderr, "EMU: cp.async src misaligned\n"); abort(); }
    if (emu_deferred_cp) emu_fibers[emu_cur].pending.push_back({dst, src});
    else memcpy(dst, src, 16);
}
static inline void cp_async16_zfill(bool pred, uint32_t dst, const void *src, uint32_t bytes) {
    if (!pred) return;
    if (bytes == 16) return cp_async16(emu_smem + dst, src);
    emu_check_smem(emu_smem + dst, 16, "cp.async dst");
    if (emu_deferred_cp) emu_fibers[emu_cur].pending.push_back({emu_smem + dst, nullptr});
    else memset(emu_smem + dst, 0, 16);
}
static inline void cp_async_commit() {}
static inline void cp_async_wait_all() {
    for (auto &pr : emu_fibers[emu_cur].pending)
        if (pr.second) memcpy(pr.first, pr.second, 16);
        else memset(pr.first, 0, 16);  // a zero-filling copy
    emu_fibers[emu_cur].pending.clear();
}
static inline uint16_t emu_bits(const bf16 *p) { uint16_t u; memcpy(&u, p, 2); return u; }
static inline float emu_lo(uint32_t u) { uint32_t x = u << 16; float f; memcpy(&f, &x, 4); return f; }
static inline float emu_hi(uint32_t u) { uint32_t x = u & 0xFFFF0000u; float f; memcpy(&f, &x, 4); return f; }
static inline void ldmatrix_x4(uint32_t r[4], const bf16 *row) {
    emu_check_smem(row, 16, "ldmatrix row");
    EmuWarp &w = emu_warps[emu_warp()];
    const int p = w.gen & 1, l = emu_lane();
    w.ptr[p][l] = row;
    emu_warp_sync();
    for (int i = 0; i < 4; i++) {
        const bf16 *base = (const bf16 *)w.ptr[p][8 * i + l / 4];
        r[i] = (uint32_t)emu_bits(base + 2 * (l % 4)) | ((uint32_t)emu_bits(base + 2 * (l % 4) + 1) << 16);
    }
}
static inline void ldmatrix_x4_trans(uint32_t r[4], const bf16 *row) {
    emu_check_smem(row, 16, "ldmatrix.trans row");
    EmuWarp &w = emu_warps[emu_warp()];
    const int p = w.gen & 1, l = emu_lane();
    w.ptr[p][l] = row;
    emu_warp_sync();
    for (int i = 0; i < 4; i++) {
        const bf16 *r0 = (const bf16 *)w.ptr[p][8 * i + 2 * (l % 4)], *r1 = (const bf16 *)w.ptr[p][8 * i + 2 * (l % 4) + 1];
        r[i] = (uint32_t)emu_bits(r0 + l / 4) | ((uint32_t)emu_bits(r1 + l / 4) << 16);
    }
}
// The warp's 16×16 A operand from its 32 lanes' mma.m16n8k16 A fragments.
static inline void emu_a_fragments(const uint32_t (&frag)[32][4], float A[16][16]) {
    for (int x = 0; x < 32; x++) {
        const int g = x / 4, t = x % 4;
        const uint32_t *ax = frag[x];
        A[g][2 * t] = emu_lo(ax[0]), A[g][2 * t + 1] = emu_hi(ax[0]);
        A[g + 8][2 * t] = emu_lo(ax[1]), A[g + 8][2 * t + 1] = emu_hi(ax[1]);
        A[g][2 * t + 8] = emu_lo(ax[2]), A[g][2 * t + 9] = emu_hi(ax[2]);
        A[g + 8][2 * t + 8] = emu_lo(ax[3]), A[g + 8][2 * t + 9] = emu_hi(ax[3]);
    }
}
static inline void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    EmuWarp &w = emu_warps[emu_warp()];
    const int p = w.gen & 1, l = emu_lane();
    for (int i = 0; i < 4; i++) w.a[p][l][i] = a[i], w.c[p][l][i] = c[i];
    w.b[p][l][0] = b0, w.b[p][l][1] = b1;
    emu_warp_sync();
    float A[16][16], B[16][8];
    emu_a_fragments(w.a[p], A);
    for (int x = 0; x < 32; x++) {
        const int g = x / 4, t = x % 4;
        B[2 * t][g] = emu_lo(w.b[p][x][0]), B[2 * t + 1][g] = emu_hi(w.b[p][x][0]);
        B[2 * t + 8][g] = emu_lo(w.b[p][x][1]), B[2 * t + 9][g] = emu_hi(w.b[p][x][1]);
    }
    const int g = l / 4, t = l % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; e++) {
        float s = c[e];
        for (int k = 0; k < 16; k++) s += A[rows[e]][k] * B[k][cols[e]];
        c[e] = s;
    }
}
static inline float exp2_fast(float x) { return exp2f(x); }
static inline uint32_t pack_bf16x2(float lo, float hi) {
    const bf16 l = __float2bfloat16_rn(lo), h = __float2bfloat16_rn(hi);
    uint16_t a, b;
    memcpy(&a, &l, 2), memcpy(&b, &h, 2);
    return (uint32_t)a | (uint32_t)b << 16;
}

// ---- Hopper (kernels/cuda/attention_sm90.cu) -------------------------------------------------
// wgmma runs at once (no asynchrony: a missing wait goes unseen); its shared-memory operands are
// read through the descriptor as PTX's no-swizzle canonical layouts define them (start address,
// LBO between 8×8 core matrices along K, SBO along M/N; a core matrix is 8 rows of 16 bytes), the
// register A operand and the accumulators with mma.m16n8k16's fragment layouts for each warp's 16
// rows. Shared addresses are offsets into emu_smem.
static inline uint32_t smem_u32(const void *p) { return (uint32_t)((const unsigned char *)p - emu_smem); }
// Element (mn, k) of a descriptor's operand: K-major (the 8 elements of a core-matrix row run along
// K) or, transposed, MN-major (they run along M/N).
static inline float emu_desc_elem(uint64_t desc, int mn, int k, bool mn_major) {
    const size_t lbo = ((desc >> 16) & 0x3FFF) << 4, sbo = ((desc >> 32) & 0x3FFF) << 4;
    const size_t off = ((desc & 0x3FFF) << 4) + (size_t)(mn / 8) * sbo + (size_t)(k / 8) * lbo +
                       (mn_major ? (size_t)(k % 8) * 16 + (size_t)(mn % 8) * 2 : (size_t)(mn % 8) * 16 + (size_t)(k % 8) * 2);
    emu_check_smem(emu_smem + (off & ~(size_t)15), 16, "wgmma operand");
    return __bfloat162float(*(const bf16 *)(emu_smem + off));
}
// d[i] (row 16w + g + 8·((i/2)%2), column 8·(i/4) + 2t + i%2 of the warpgroup's 64 × N) += row · B.
template <int N, typename ARow>
static inline void emu_wgmma(float *d, uint64_t db, int tb, int acc, ARow a_elem) {
    const int w = (threadIdx.x >> 5) & 3, g = emu_lane() / 4, t = emu_lane() % 4;
    for (int i = 0; i < N / 2; i++) {
        const int row = 16 * w + g + 8 * ((i >> 1) & 1), col = 8 * (i >> 2) + 2 * t + (i & 1);
        float sum = 0.0f;
        for (int k = 0; k < 16; k++) sum += a_elem(row, k) * emu_desc_elem(db, col, k, tb != 0);
        d[i] = (acc ? d[i] : 0.0f) + sum;
    }
}
template <int N, int TA, int TB>
static inline void wgmma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, int acc) {
    emu_wgmma<N>(d, db, TB, acc, [&](int row, int k) { return emu_desc_elem(da, row, k, TA != 0); });
}
template <int N, int TB>
static inline void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db) {
    EmuWarp &w = emu_warps[emu_warp()];
    const int p = w.gen & 1, l = emu_lane();
    for (int i = 0; i < 4; i++) w.a[p][l][i] = a[i];
    emu_warp_sync();
    float A[16][16];  // the warp's 16 rows
    emu_a_fragments(w.a[p], A);
    emu_wgmma<N>(d, db, TB, 1, [&](int row, int k) { return A[row % 16][k]; });
}
static inline void wgmma_fence() {}
static inline void wgmma_commit() {}
template <int N> static inline void wgmma_wait() {}
static inline void fence_proxy_async() {}
template <typename T> static inline void keep_regs(T &) {}
static inline void bulk_reduce_add(float *gdst, const float *ssrc, uint32_t bytes) {
    emu_check_smem(ssrc, bytes, "bulk reduction source");
    for (uint32_t i = 0; i < bytes / 4; i++) gdst[i] += ssrc[i];
}
static inline void bulk_wait_read() {}
static inline void bulk_wait_done() {}

// cuda_common.cuh's helpers the kernels use
static inline float ld_bf16(const bf16 *p) { return __bfloat162float(*p); }
static inline bf16 to_bf16(float f) { return __float2bfloat16_rn(f); }
static inline float warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
static inline float warp_max(float v) { for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o)); return v; }

// Runs fn on every thread of every block (blocks one after another).
void emu_launch(emu_dim3 grid, unsigned threads, size_t smem, const std::function<void()> &fn);
