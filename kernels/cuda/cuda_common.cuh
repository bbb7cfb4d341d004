// Shared by the kernels/cuda/*.cu files only (CUDA C++): the error-check macros, bf16 load/store
// helpers and warp/block reductions. C code includes kernels/cuda/cuda_context.h and ops.h instead.
//
// Errors (STYLE habit 12): a failing CUDA or cuBLASLt call is recorded with the statement text,
// the function, file, line and device through mg_fail, and the enclosing function returns the
// status (MG_ERR_OOM for an allocation failure, MG_ERR_CUDA otherwise). Library code never exits.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "engine/status.h"
#include "kernels/cuda/cuda_context.h"
}

// Records the failure and returns the status to hand back (defined in cuda_context.cu).
mg_status mg_cuda_fail_(const char *stmt, const char *what, int is_oom, const char *func, const char *file,
                        int line);

// The context's table of GEMM plans (linear.cu): created with the context, destroyed with it.
mg_status mg_cuda_gemm_plans_create(mg_cuda_ctx *ctx);
void mg_cuda_gemm_plans_destroy(mg_cuda_ctx *ctx); // safe when never created

// One GEMM in cuBLASLt's column-major terms (linear.cu runs it through the plan table):
//   D[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C,   op(X) = Xᵀ when trans_x
// A is stored k×m when transposed (m×k otherwise), B n×k when transposed (k×n otherwise), each with
// its leading dimension; C has D's layout and dtype. fp32 compute; A and B bf16; D bf16 or fp32.
// beta == 0: C is not read. Otherwise C = c, or D itself when c is NULL or c == d (in place).
// bias (bf16, over D's m rows) and gelu: the epilogue, with a bf16 D only.
typedef struct {
    bool trans_a, trans_b;
    int64_t m, n, k;
    const void *a;
    int64_t lda;
    cudaDataType_t type_a;
    const void *b;
    int64_t ldb;
    cudaDataType_t type_b;
    void *d;
    int64_t ldd;
    cudaDataType_t type_d;
    const void *c;
    float alpha, beta;
    const void *bias;
    bool gelu;
} mg_gemm;
mg_status mg_cuda_gemm(mg_cuda_ctx *ctx, const mg_gemm *g);

#define MG_CUDA_CHECK(stmt)                                                                              \
    do {                                                                                                 \
        cudaError_t mg_e_ = (stmt);                                                                      \
        if (mg_e_ != cudaSuccess)                                                                        \
            return mg_cuda_fail_(#stmt, cudaGetErrorString(mg_e_), mg_e_ == cudaErrorMemoryAllocation, \
                                 __func__, __FILE__, __LINE__);                                          \
    } while (0)

#define MG_CUBLAS_CHECK(stmt)                                                                          \
    do {                                                                                               \
        cublasStatus_t mg_s_ = (stmt);                                                                 \
        if (mg_s_ != CUBLAS_STATUS_SUCCESS)                                                            \
            return mg_cuda_fail_(#stmt, cublasLtGetStatusString(mg_s_), mg_s_ == CUBLAS_STATUS_ALLOC_FAILED, \
                                 __func__, __FILE__, __LINE__);                                        \
    } while (0)

// After every launch: a bad configuration (too much shared memory, grid too large) shows here.
#define MG_CUDA_LAUNCH_CHECK(kernel)                                                                \
    do {                                                                                            \
        cudaError_t mg_e_ = cudaGetLastError();                                                     \
        if (mg_e_ != cudaSuccess)                                                                   \
            return mg_cuda_fail_("launch of " #kernel, cudaGetErrorString(mg_e_), 0, __func__, __FILE__, \
                                 __LINE__);                                                         \
    } while (0)

// bf16 tensors cross the C API as void *; kernels see them as __nv_bfloat16.
typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float ld_bf16(const bf16 *p) { return __bfloat162float(*p); }
// Round to nearest even, as torch's .to(torch.bfloat16).
static __device__ __forceinline__ bf16 to_bf16(float f) { return __float2bfloat16_rn(f); }
// The value f takes once stored as bf16 (a rounding point of spec/model.md §10).
static __device__ __forceinline__ float round_bf16(float f) { return __bfloat162float(__float2bfloat16_rn(f)); }

// Eight bf16 moved as one 16-byte access (uint4): the widest load/store a thread can issue, which
// memory-bound kernels need to reach copy speed. The address must be 16-byte aligned.
static __device__ __forceinline__ void unpack8(uint4 v, float f[8]) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&v);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
}
// Rounds each to bf16 (nearest even) and packs them in memory order.
static __device__ __forceinline__ uint4 pack8(const float f[8]) {
    uint4 v;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&v);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return v;
}
static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// VW consecutive bf16 as floats: VW = 8 is one 16-byte access (the address 16-byte aligned), any
// other VW element by element. Kernels templated on VW run one loop for both.
template <int VW>
static __device__ __forceinline__ void load_bf16s(const bf16 *p, float f[VW]) {
    if constexpr (VW == 8) {
        unpack8(*reinterpret_cast<const uint4 *>(p), f);
    } else {
#pragma unroll
        for (int j = 0; j < VW; j++) f[j] = __bfloat162float(p[j]);
    }
}
template <int VW>
static __device__ __forceinline__ void store_bf16s(bf16 *p, const float f[VW]) {
    if constexpr (VW == 8) {
        *reinterpret_cast<uint4 *>(p) = pack8(f);
    } else {
#pragma unroll
        for (int j = 0; j < VW; j++) p[j] = __float2bfloat16_rn(f[j]);
    }
}

// Asynchronous 16-byte copies global -> shared (sm_80+), waited for as one group.
static __device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
static __device__ __forceinline__ void cp_async16(void *dst_smem, const void *src_global) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst_smem)), "l"(src_global));
}
// The same where `pred` holds, reading `bytes` (16 or 0) of the source and zero-filling the rest: a
// row past the end becomes zeros without a branch (the source is then not read).
static __device__ __forceinline__ void cp_async16_zfill(bool pred, uint32_t dst_smem, const void *src_global,
                                                        uint32_t bytes) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %0, 0;\n@p cp.async.cg.shared.global [%1], [%2], 16, %3;\n}\n" ::"r"((int)pred),
        "r"(dst_smem), "l"(src_global), "r"(bytes));
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
static __device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// c[16×8] += a[16×16] · b[16×8] on the tensor cores (sm_80+), bf16 operands, fp32 accumulators. With
// g = lane/4, t = lane%4: a[0..3] hold a's (row g, columns 2t, 2t+1), (row g+8, the same), (row g,
// columns 2t+8, 2t+9), (row g+8, the same); b0, b1 b's (rows 2t, 2t+1 | 2t+8, 2t+9; column g); c
// (row g, columns 2t, 2t+1) then (row g+8, the same). Each register holds two bf16, the lower
// column (or row of b) in the low half.
static __device__ __forceinline__ void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x on the special-function unit (one instruction; 2^-inf = 0; relative error ~2^-22).
static __device__ __forceinline__ float exp2_fast(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Two floats as a bf16 pair, `lo` in the low half (the lower column of an mma operand).
static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&p);
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block; every thread gets the result. blockDim.x must be a multiple of 32
// (launchers assert it). `scratch` is 32 floats of shared memory; the leading barrier lets a
// block call this twice in a row with the same scratch.
static __device__ __forceinline__ float block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Threads per block for a one-block-per-row kernel over C features: a multiple of 32, at most 256.
static inline int row_block_threads(int C) {
    int t = (C + 31) / 32 * 32;
    return t < 256 ? t : 256;
}

// Blocks for a grid-stride loop over n elements: enough to fill the GPU, never more than needed.
static inline unsigned grid_stride_blocks(const mg_cuda_ctx *ctx, int64_t n, int threads) {
    const int64_t need = (n + threads - 1) / threads, cap = (int64_t)ctx->sm_count * 32;
    return (unsigned)(need < cap ? need : cap);
}
