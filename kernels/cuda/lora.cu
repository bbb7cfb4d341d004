// The LoRA branch on top of a frozen linear (PEFT lora.Linear.forward, spec/model.md §8.1; the
// arguments are engine/backend.h's mg_lora_args). bf16 activations, fp32 math, fp32 gradients of A, B:
//   forward   xd = dropout(x)              p > 0 only: element i = m*K + k kept iff
//                                          mg_dropout_keep(seed, i, p) (engine/dropout.h, as the CPU
//                                          twin), kept values bf16(x · (1/(1-p))), dropped ones 0;
//                                          p == 0: xd is x
//             u[M,r] = xd · Aᵀ             (=, bf16)
//             y[:, :N] += scale · u · Bᵀ   (+=, y's rows ldy apart; alpha = scale, beta = 1 in place:
//                                          the product and y summed in fp32, one rounding)
//   backward  du[M,r]  = scale · dy · B    (=, fp32; the caller's scratch)
//             dB[N,r] += scale · dyᵀ · u   (fp32)
//             dx[M,K] += mask(du · A) / (1-p)  (bf16, one rounding; dx may be NULL: no input gradient)
//             dA[r,K] += bf16(du)ᵀ · xd    (fp32; xd drawn again from x and the seed)
// u comes from lora_u_tc_kernel, which applies the mask as it reads x and sums on the tensor cores:
// one pass over x, where a dropout pass writing xd and a cuBLASLt GEMM with r = 8 as a side reading
// it back took longer.
// In the backward xd is formed a chunk of rows at a time in the context's scratch and read back
// at once by dA's GEMM (rows sized so a chunk fits the scratch; 32 MiB, within the H100/H200's L2),
// so a training step keeps only x, which the layer keeps anyway. The other GEMMs go through
// cuBLASLt (mg_cuda_gemm), the reductions over M (dB, dA) with M as the GEMM's k. cuBLASLt has no
// bf16 × fp32 GEMM, so dA reads du rounded to bf16 in the scratch (torch's autocast rounds du to
// bf16 too); dx is a small kernel (r <= 64) that reads the fp32 du and applies the dropout mask in
// the same pass, where a GEMM would need an M×K temporary. (Kernels of fp32 FMAs for du, dB and dA,
// each reading its big operand once, ran slower than these GEMMs: latency-bound at 8 outputs per
// element read.)
//
// cuBLASLt is column-major; a row-major [R,C] matrix is the column-major C×R one:
//   y:  yᵀ (N×M, ld ldy)    += scale · (B as r×N)ᵀ · uᵀ (r×M)
//   dB: dBᵀ (r×N)           += scale · uᵀ (r×M) · (dyᵀ as N×M, ld ldy)ᵀ
//   du: duᵀ (r×M)            = scale · (B as r×N) · dyᵀ (N×M, ld ldy)
//   dA: dAᵀ (K×r)           += xdᵀ (K×M) · (bf16(du)ᵀ as r×M)ᵀ  (by chunks of rows)
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "engine/dropout.h"
#include "kernels/cuda/ops.h"
}

// dx kernel tiling: a block of DX_WARPS warps covers DX_TILE_M rows × DX_TILE_K columns; warp w
// takes DX_ROWS rows, lane l 8 consecutive columns.
enum { LORA_MAX_R = 64, DX_WARPS = 8, DX_ROWS = 4, DX_TILE_M = DX_WARPS * DX_ROWS, DX_TILE_K = 32 * 8 };
// u on the tensor cores: UTC_GROUPS m16 row groups a warp, UTC_WARPS warps a block.
enum { UTC_WARPS = 8, UTC_GROUPS = 2, UTC_ROWS = UTC_WARPS * UTC_GROUPS * 16 };

// The dropout mask of elements i0..i0+7 as bits (bit c: element i0 + c kept); vec: i0 a multiple
// of 8, so two draws of mg_dropout_keep4 give all eight.
static __device__ __forceinline__ unsigned lora_keep8(uint64_t seed, int64_t i0, float p, bool vec, int valid) {
    if (vec) return mg_dropout_keep4(seed, i0 >> 2, p) | mg_dropout_keep4(seed, (i0 >> 2) + 1, p) << 4;
    unsigned bits = 0;
    for (int c = 0; c < valid; c++) bits |= (unsigned)mg_dropout_keep(seed, i0 + c, p) << c;
    return bits;
}

// f = row[k0 .. k0+7] as floats, zeros at or past K; vec: row + k0 16-byte aligned and K a multiple
// of 8 (one 16-byte load). With p > 0 the dropout of element i0 + c (i0: row[k0]'s index in the
// masked input): bf16(f · inv_keep) where kept, else 0.
static __device__ __forceinline__ void lora_load8(float f[8], const bf16 *row, int k0, int K, bool vec, int64_t i0,
                                                  uint64_t seed, float p, float inv_keep) {
    if (vec) {
        unpack8(*reinterpret_cast<const uint4 *>(row + k0), f);
    } else {
#pragma unroll
        for (int c = 0; c < 8; c++) f[c] = k0 + c < K ? ld_bf16(row + k0 + c) : 0.0f;
    }
    if (p > 0.0f) {
        const unsigned keep = lora_keep8(seed, i0, p, vec, K - k0 < 8 ? K - k0 : 8);
#pragma unroll
        for (int c = 0; c < 8; c++) f[c] = (keep >> c) & 1u ? round_bf16(f[c] * inv_keep) : 0.0f;
    }
}

// row[k0 .. k0+7] as 8 bf16 in memory order (an mma operand's 4 registers), zeros at or past K; with
// p > 0 dropped out as lora_load8 does it (same mask, same rounding).
static __device__ __forceinline__ uint4 lora_load8_bf16(const bf16 *row, int k0, int K, bool vec, int64_t i0,
                                                        uint64_t seed, float p, float inv_keep) {
    if (k0 >= K) return make_uint4(0, 0, 0, 0);
    if (vec && p == 0.0f) return *reinterpret_cast<const uint4 *>(row + k0);
    float f[8];
    lora_load8(f, row, k0, K, vec, i0, seed, p, inv_keep);
    return pack8(f);
}

// out[m, j] = bf16(Σ_k xd[m,k] · W[j,k]) for j < r (out's rows r apart), xd = x's rows dropped out
// with p > 0 (element index m·K + k), on mma.m16n8k16 (fp32 sums). Warp w of block b takes rows
// m0 = 32(8b + w) .. m0+31 as two m16 row groups, 8 outputs j a pass, and the columns of its slice
// [kc·y, kc·(y+1)) ∩ [0, K) (y = blockIdx.y) 32 a step. A sum over k does not care which column
// fills which of the mma's k slots, so lane (g, t) loads 16 contiguous bytes, columns k0 = step + 8t
// .. k0+7, of its rows g and g+8 of each group and of W's row jc + g, and these fill its k slots of
// two mmas alike in A and B (slots 2t, 2t+1, 2t+8, 2t+9: k0..k0+3 in the first, k0+4..k0+7 in the
// second): one 16-byte load per operand, no shuffles, and 16 rows × 8 outputs an instruction where
// the fp32 kernel this replaced spent 8 FMAs an element. With one slice the sums go to out; with
// several (to keep every SM busy) each slice's to part[y·M·r + m·r + j] for
// lora_u_finish_kernel. vec: 16-byte loads (K a multiple of 8, x and W 16-byte aligned).
static __global__ void __launch_bounds__(UTC_WARPS * 32)
    lora_u_tc_kernel(bf16 *out, float *part, const bf16 *x, const bf16 *W, int64_t M, int K, int kc, int r,
                     uint64_t seed, float p, float inv_keep, bool vec) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t m0 = ((int64_t)blockIdx.x * UTC_WARPS + (threadIdx.x >> 5)) * (UTC_GROUPS * 16);
    if (m0 >= M) return;  // the whole warp; no barriers here
    const int k_begin = blockIdx.y * kc, k_end = k_begin + kc < K ? k_begin + kc : K;
    int64_t rows[UTC_GROUPS][2];  // this lane's rows g, g+8 of each group (past M: the last, not stored)
#pragma unroll
    for (int i = 0; i < UTC_GROUPS; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t m = m0 + 16 * i + g + 8 * h;
            rows[i][h] = m < M ? m : M - 1;
        }
    for (int jc = 0; jc < r; jc += 8) {
        const bf16 *wrow = W + (int64_t)(jc + g < r ? jc + g : r - 1) * K;  // output jc + g (past r: not stored)
        float c[UTC_GROUPS][4] = {};
        for (int kb = k_begin; kb < k_end; kb += 32) {
            const int k0 = kb + 8 * t;
            const uint4 bw = lora_load8_bf16(wrow, k0, k_end, vec, 0, 0, 0.0f, 1.0f);
#pragma unroll
            for (int i = 0; i < UTC_GROUPS; i++) {
                const uint4 lo = lora_load8_bf16(x + rows[i][0] * K, k0, k_end, vec, rows[i][0] * K + k0, seed, p, inv_keep);
                const uint4 hi = lora_load8_bf16(x + rows[i][1] * K, k0, k_end, vec, rows[i][1] * K + k0, seed, p, inv_keep);
                const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y}, a1[4] = {lo.z, hi.z, lo.w, hi.w};
                mma_bf16_16816(c[i], a0, bw.x, bw.y);
                mma_bf16_16816(c[i], a1, bw.z, bw.w);
            }
        }
#pragma unroll
        for (int i = 0; i < UTC_GROUPS; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t m = m0 + 16 * i + g + 8 * (e >> 1);
                const int j = jc + 2 * t + (e & 1);
                if (m >= M || j >= r) continue;
                if (gridDim.y == 1) out[m * r + j] = to_bf16(c[i][e]);
                else part[(int64_t)blockIdx.y * M * r + m * r + j] = c[i][e];
            }
    }
}

// out[e] = bf16(Σ_y part[y·n + e]) for e < n = M·r, y = 0 .. slices-1 in order.
static __global__ void lora_u_finish_kernel(bf16 *out, const float *part, int slices, int64_t n) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += stride) {
        float t = 0.0f;
        for (int y = 0; y < slices; y++) t += part[y * n + e];
        out[e] = to_bf16(t);
    }
}

// xd[e] = dropout(x)[e0 + e] for e < n: x and xd start at element e0 of the M×K input (a chunk of
// rows), so element e draws the mask of input element i = e0 + e. vec: x and xd 16-byte aligned (8
// elements at a time).
static __global__ void lora_dropout_kernel(bf16 *xd, const bf16 *x, int64_t n, int64_t e0, uint64_t seed, float p,
                                           float inv_keep, bool vec) {
    const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t n8 = vec ? n / 8 : 0;
    for (int64_t v = tid; v < n8; v += stride) {
        float f[8];
        unpack8(reinterpret_cast<const uint4 *>(x)[v], f);
        const unsigned keep = lora_keep8(seed, e0 + v * 8, p, (e0 & 7) == 0, 8);  // two draws when aligned to 8
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = (keep >> j) & 1u ? f[j] * inv_keep : 0.0f;
        reinterpret_cast<uint4 *>(xd)[v] = pack8(f);
    }
    for (int64_t e = n8 * 8 + tid; e < n; e += stride)
        xd[e] = to_bf16(mg_dropout_keep(seed, e0 + e, p) ? ld_bf16(x + e) * inv_keep : 0.0f);
}

static __global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, int64_t n) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x)
        dst[e] = to_bf16(src[e]);
}

// dx[m,k] += keep(m,k) · inv_keep · Σ_j du[m,j] · A[j,k]. The block's du rows wait in shared memory
// (read as broadcasts); each 8-column vector of A row j serves DX_ROWS rows, each du value 8
// columns. vec: K a multiple of 8 and dx, A 16-byte aligned (16-byte accesses), otherwise element
// by element. p == 0: every element kept (inv_keep = 1), no hashing. Each dx element is read and
// written by one thread.
static __global__ void __launch_bounds__(DX_WARPS * 32)
    lora_dx_kernel(bf16 *dx, const float *du, const bf16 *A, int64_t M, int K, int r, uint64_t seed, float p,
                   float inv_keep, bool vec) {
    __shared__ float s_du[DX_TILE_M][LORA_MAX_R];
    const int64_t m0 = (int64_t)blockIdx.x * DX_TILE_M;
    for (int e = threadIdx.x; e < DX_TILE_M * r; e += blockDim.x) {
        const int i = e / r, j = e % r;
        s_du[i][j] = m0 + i < M ? du[(m0 + i) * r + j] : 0.0f;
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int k0 = blockIdx.y * DX_TILE_K + lane * 8;
    if (k0 >= K) return;  // past the barrier, so leaving early strands nobody
    float acc[DX_ROWS][8];
#pragma unroll
    for (int i = 0; i < DX_ROWS; i++)
#pragma unroll
        for (int c = 0; c < 8; c++) acc[i][c] = 0.0f;
    for (int j = 0; j < r; j++) {
        float a[8];
        lora_load8(a, A + (int64_t)j * K, k0, K, vec, 0, 0, 0.0f, 1.0f);
#pragma unroll
        for (int i = 0; i < DX_ROWS; i++) {
            const float d = s_du[warp * DX_ROWS + i][j];
#pragma unroll
            for (int c = 0; c < 8; c++) acc[i][c] += d * a[c];
        }
    }
#pragma unroll
    for (int i = 0; i < DX_ROWS; i++) {
        const int64_t m = m0 + warp * DX_ROWS + i;
        if (m >= M) break;
        bf16 *row = dx + m * K;
        float f[8];
        lora_load8(f, row, k0, K, vec, 0, 0, 0.0f, 1.0f);
        const unsigned keep = p > 0.0f ? lora_keep8(seed, m * K + k0, p, vec, K - k0 < 8 ? K - k0 : 8) : 0xffu;
#pragma unroll
        for (int c = 0; c < 8; c++)
            if ((keep >> c) & 1u) f[c] += acc[i][c] * inv_keep;
        if (vec) {
            *reinterpret_cast<uint4 *>(row + k0) = pack8(f);
        } else {
#pragma unroll
            for (int c = 0; c < 8; c++)
                if (k0 + c < K) row[k0 + c] = to_bf16(f[c]);
        }
    }
}

static float keep_scale(float p) { return p > 0.0f ? 1.0f / (1.0f - p) : 1.0f; }

// u[M, r] = bf16(dropout(x) · Aᵀ) (lora_u_tc_kernel). K is cut into slices (a multiple of 32
// columns, at least 128) until there are about 4 blocks an SM (the vision rows alone make half a
// block an SM; the decoder's 352 a prompt far less), whose partial sums (M·r floats a slice) go to the
// context's scratch and are added by lora_u_finish_kernel.
static mg_status lora_u_launch(mg_cuda_ctx *ctx, bf16 *u, const bf16 *x, const bf16 *A, const mg_lora_args *a) {
    const int64_t M = a->M, blocks = (M + UTC_ROWS - 1) / UTC_ROWS, want = 4 * (int64_t)ctx->sm_count;
    int64_t slices = blocks >= want ? 1 : (want + blocks - 1) / blocks;
    const int64_t room = (int64_t)(ctx->scratch_bytes / (sizeof(float) * (size_t)M * a->r));
    if (slices > room) slices = room > 1 ? room : 1;
    int kc = (int)((a->K + slices - 1) / slices);
    kc = kc < 128 ? 128 : (kc + 31) / 32 * 32;
    slices = (a->K + kc - 1) / kc;
    const bool vec = a->K % 8 == 0 && aligned16(x) && aligned16(A);
    float *part = (float *)ctx->scratch;
    lora_u_tc_kernel<<<dim3((unsigned)blocks, (unsigned)slices), UTC_WARPS * 32, 0, ctx->stream>>>(
        u, part, x, A, M, a->K, kc, a->r, a->seed, a->dropout, keep_scale(a->dropout), vec);
    MG_CUDA_LAUNCH_CHECK(lora_u_tc_kernel);
    if (slices > 1) {
        const int threads = 256;
        lora_u_finish_kernel<<<grid_stride_blocks(ctx, M * a->r, threads), threads, 0, ctx->stream>>>(
            u, part, (int)slices, M * a->r);
        MG_CUDA_LAUNCH_CHECK(lora_u_finish_kernel);
    }
    return MG_OK;
}

// Rows of a chunk whose row_bytes each fit the context's scratch less `slack` bytes: a multiple of
// 128 when there are that many, so that every chunk starts 256-byte aligned in x, u and du (as
// aligned as the whole tensors, which keeps the GEMMs' alignment and the 16-byte dropout path).
static int64_t scratch_rows(const mg_cuda_ctx *ctx, size_t row_bytes, size_t slack) {
    const int64_t rows = ctx->scratch_bytes > slack ? (int64_t)((ctx->scratch_bytes - slack) / row_bytes) : 0;
    return rows >= 128 ? rows - rows % 128 : rows;
}

// The scratch's xd for rows [m0, m0 + mc) of x (mc·K elements from input element m0·K on).
static mg_status lora_dropout_launch(mg_cuda_ctx *ctx, bf16 *xd, const bf16 *x, int64_t m0, int64_t mc,
                                     const mg_lora_args *a) {
    const int threads = 256;
    const int64_t n = mc * a->K, e0 = m0 * a->K;
    const bf16 *xc = x + e0;
    const bool vec = aligned16(xc) && aligned16(xd);
    lora_dropout_kernel<<<grid_stride_blocks(ctx, vec ? (n + 7) / 8 : n, threads), threads, 0, ctx->stream>>>(
        xd, xc, n, e0, a->seed, a->dropout, keep_scale(a->dropout), vec);
    MG_CUDA_LAUNCH_CHECK(lora_dropout_kernel);
    return MG_OK;
}

static mg_status lora_forward_launch(mg_cuda_ctx *ctx, bf16 *y, bf16 *u, const bf16 *x, const bf16 *A, const bf16 *B,
                                     const mg_lora_args *a) {
    MG_TRY(lora_u_launch(ctx, u, x, A, a));
    mg_gemm g = {};  // yᵀ (N×M, ld ldy) += scale · (B as r×N)ᵀ · uᵀ (cuBLASLt is column-major)
    g.trans_a = true, g.trans_b = false;
    g.m = a->N, g.n = a->M, g.k = a->r;
    g.a = B, g.lda = a->r, g.type_a = CUDA_R_16BF;
    g.b = u, g.ldb = a->r, g.type_b = CUDA_R_16BF;
    g.d = y, g.ldd = a->ldy, g.type_d = CUDA_R_16BF;
    g.c = y, g.alpha = a->scale, g.beta = 1.0f;
    return mg_cuda_gemm(ctx, &g);
}

static mg_status lora_dx_launch(mg_cuda_ctx *ctx, bf16 *dx, const float *du, const bf16 *A, const mg_lora_args *a) {
    const bool vec = a->K % 8 == 0 && aligned16(dx) && aligned16(A);
    const dim3 grid((unsigned)((a->M + DX_TILE_M - 1) / DX_TILE_M), (unsigned)((a->K + DX_TILE_K - 1) / DX_TILE_K));
    lora_dx_kernel<<<grid, DX_WARPS * 32, 0, ctx->stream>>>(dx, du, A, a->M, a->K, a->r, a->seed, a->dropout,
                                                           keep_scale(a->dropout), vec);
    MG_CUDA_LAUNCH_CHECK(lora_dx_kernel);
    return MG_OK;
}

// dAᵀ (K×r) += xdᵀ · bf16(du), a chunk of rows at a time through the scratch: bf16(du) (chunk×r)
// and, with dropout, xd drawn again from x (chunk×K, first, 256-byte aligned; about 3,800 rows a
// chunk at K = 4304 with the 32 MiB scratch). Without dropout the GEMM reads x itself.
static mg_status lora_dA_launch(mg_cuda_ctx *ctx, float *dA, const float *du, const bf16 *x, const mg_lora_args *a) {
    const bool drop = a->dropout > 0.0f;
    const size_t xd_row = drop ? (size_t)a->K * sizeof(bf16) : 0, du_row = (size_t)a->r * sizeof(bf16);
    const int64_t chunk = scratch_rows(ctx, xd_row + du_row, drop ? 256 : 0);
    if (chunk < 1)
        return mg_fail(MG_ERR_ARG, NULL, "lora_backward: a row of K=%d, r=%d does not fit the context's scratch (%zu bytes)",
                       a->K, a->r, ctx->scratch_bytes);
    bf16 *xd = (bf16 *)ctx->scratch;
    bf16 *dub = (bf16 *)((char *)ctx->scratch + ((size_t)chunk * xd_row + 255) / 256 * 256);
    for (int64_t m0 = 0; m0 < a->M; m0 += chunk) {
        const int64_t mc = a->M - m0 < chunk ? a->M - m0 : chunk;
        const int threads = 256;
        f32_to_bf16_kernel<<<grid_stride_blocks(ctx, mc * a->r, threads), threads, 0, ctx->stream>>>(
            dub, du + m0 * a->r, mc * a->r);
        MG_CUDA_LAUNCH_CHECK(f32_to_bf16_kernel);
        const bf16 *xin = x + m0 * a->K;
        if (drop) {
            MG_TRY(lora_dropout_launch(ctx, xd, x, m0, mc, a));
            xin = xd;
        }
        mg_gemm g = {};
        g.trans_a = false, g.trans_b = true;
        g.m = a->K, g.n = a->r, g.k = mc;
        g.a = xin, g.lda = a->K, g.type_a = CUDA_R_16BF;
        g.b = dub, g.ldb = a->r, g.type_b = CUDA_R_16BF;
        g.d = dA, g.ldd = a->K, g.type_d = CUDA_R_32F;
        g.c = dA, g.alpha = 1.0f, g.beta = 1.0f;
        MG_TRY(mg_cuda_gemm(ctx, &g));
    }
    return MG_OK;
}

static mg_status lora_backward_launch(mg_cuda_ctx *ctx, bf16 *dx, float *dA, float *dB, float *du, const bf16 *dy,
                                      const bf16 *x, const bf16 *u, const bf16 *A, const bf16 *B,
                                      const mg_lora_args *a) {
    mg_gemm g = {};  // dBᵀ (r×N) += scale · uᵀ · (dyᵀ)ᵀ
    g.trans_a = false, g.trans_b = true;
    g.m = a->r, g.n = a->N, g.k = a->M;
    g.a = u, g.lda = a->r, g.type_a = CUDA_R_16BF;
    g.b = dy, g.ldb = a->ldy, g.type_b = CUDA_R_16BF;
    g.d = dB, g.ldd = a->r, g.type_d = CUDA_R_32F;
    g.c = dB, g.alpha = a->scale, g.beta = 1.0f;
    MG_TRY(mg_cuda_gemm(ctx, &g));
    g = mg_gemm{};  // duᵀ (r×M) = scale · (B as r×N) · dyᵀ
    g.trans_a = false, g.trans_b = false;
    g.m = a->r, g.n = a->M, g.k = a->N;
    g.a = B, g.lda = a->r, g.type_a = CUDA_R_16BF;
    g.b = dy, g.ldb = a->ldy, g.type_b = CUDA_R_16BF;
    g.d = du, g.ldd = a->r, g.type_d = CUDA_R_32F;
    g.alpha = a->scale, g.beta = 0.0f;
    MG_TRY(mg_cuda_gemm(ctx, &g));
    if (dx) MG_TRY(lora_dx_launch(ctx, dx, du, A, a));
    return lora_dA_launch(ctx, dA, du, x, a);
}

static mg_status lora_check(const char *op, const mg_lora_args *a) {
    if (a->M <= 0 || a->K <= 0 || a->r <= 0 || a->N <= 0 || a->ldy < a->N)
        return mg_fail(MG_ERR_SHAPE, NULL, "%s: M=%lld K=%d r=%d N=%d ldy=%lld (need positive sizes, ldy >= N)", op,
                       (long long)a->M, a->K, a->r, a->N, (long long)a->ldy);
    if (!(a->dropout >= 0.0f && a->dropout < 1.0f))
        return mg_fail(MG_ERR_ARG, "lora_dropout must be in [0, 1)", "%s: dropout p=%g", op, a->dropout);
    return MG_OK;
}

extern "C" mg_status mg_cuda_lora_forward(mg_cuda_ctx *ctx, void *y, void *u, const void *x, const void *A,
                                          const void *B, const mg_lora_args *a) {
    MG_TRY(lora_check("lora_forward", a));
    if (!y || !u || !x || !A || !B) return mg_fail(MG_ERR_ARG, NULL, "lora_forward: y, u, x, A and B are required");
    return lora_forward_launch(ctx, (bf16 *)y, (bf16 *)u, (const bf16 *)x, (const bf16 *)A, (const bf16 *)B, a);
}

extern "C" mg_status mg_cuda_lora_backward(mg_cuda_ctx *ctx, void *dx, float *dA, float *dB, float *du, const void *dy,
                                           const void *x, const void *u, const void *A, const void *B,
                                           const mg_lora_args *a) {
    MG_TRY(lora_check("lora_backward", a));
    if (a->r > LORA_MAX_R)
        return mg_fail(MG_ERR_UNSUPPORTED, "use a LoRA rank of at most 64", "lora_backward: r=%d > %d", a->r,
                       LORA_MAX_R);
    if (!dA || !dB || !du || !dy || !x || !u || !A || !B)
        return mg_fail(MG_ERR_ARG, NULL, "lora_backward: dA, dB, du, dy, x, u, A and B are required");
    return lora_backward_launch(ctx, (bf16 *)dx, dA, dB, du, (const bf16 *)dy, (const bf16 *)x, (const bf16 *)u,
                                (const bf16 *)A, (const bf16 *)B, a);
}
