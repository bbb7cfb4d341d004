// The LoRA branch on top of a frozen linear (PEFT lora.Linear.forward, spec/model.md §8.1; the
// arguments are engine/backend.h's mg_lora_args). bf16 activations, fp32 math, fp32 gradients of A, B:
//   forward   xd = dropout(x)              p > 0 only: element i = m*K + k kept iff
//                                          mg_dropout_keep(seed, i, p) (engine/dropout.h, as the CPU
//                                          twin), kept values bf16(x · (1/(1-p))), dropped ones 0;
//                                          p == 0: xd is x
//             u[M,r] = xd · Aᵀ             (=, bf16)
//             y[:, :N] += scale · u · Bᵀ   (+=, y's rows ldy apart; alpha = scale, beta = 1 in place:
//                                          the product and y summed in fp32, one rounding)
//   backward  dB[N,r] += scale · dyᵀ · u   (fp32)
//             du[M,r]  = scale · dy · B    (=, fp32; the caller's scratch)
//             dA[r,K] += bf16(du)ᵀ · xd    (fp32; xd drawn again from x and the seed)
//             dx[M,K] += mask(du · A) / (1-p)  (bf16, one rounding; dx may be NULL: no input gradient)
// xd is never kept: where a GEMM needs it (u, dA), a chunk of rows at a time is written into the
// context's scratch and read back at once (rows sized so a chunk fits the scratch; 32 MiB, within
// the H100/H200's L2), so a training step keeps only x, which the layer keeps anyway.
// Every GEMM but dx's goes through cuBLASLt (mg_cuda_gemm), the reductions over M (dB, dA) with M as
// the GEMM's k. cuBLASLt has no bf16 × fp32 GEMM, so dA reads du rounded to bf16 in the context's
// scratch (torch's autocast rounds du to bf16 too); dx is a small kernel (r <= 64) that reads the fp32
// du and applies the dropout mask in the same pass, where a GEMM would need an M×K temporary.
//
// cuBLASLt is column-major; a row-major [R,C] matrix is the column-major C×R one:
//   u:  uᵀ (r×M)             = (A as K×r)ᵀ · xdᵀ (K×M)         (by chunks of rows with dropout)
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
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = mg_dropout_keep(seed, e0 + v * 8 + j, p) ? f[j] * inv_keep : 0.0f;
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
        const bf16 *Aj = A + (int64_t)j * K + k0;
        float a[8];
        if (vec) {
            unpack8(*reinterpret_cast<const uint4 *>(Aj), a);
        } else {
#pragma unroll
            for (int c = 0; c < 8; c++) a[c] = k0 + c < K ? ld_bf16(Aj + c) : 0.0f;
        }
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
        bf16 *row = dx + m * K + k0;
        float f[8];
        if (vec) {
            unpack8(*reinterpret_cast<const uint4 *>(row), f);
        } else {
#pragma unroll
            for (int c = 0; c < 8; c++) f[c] = k0 + c < K ? ld_bf16(row + c) : 0.0f;
        }
#pragma unroll
        for (int c = 0; c < 8; c++) {
            const bool keep = p <= 0.0f || mg_dropout_keep(seed, m * K + k0 + c, p);
            if (keep) f[c] += acc[i][c] * inv_keep;
        }
        if (vec) {
            *reinterpret_cast<uint4 *>(row) = pack8(f);
        } else {
#pragma unroll
            for (int c = 0; c < 8; c++)
                if (k0 + c < K) row[c] = to_bf16(f[c]);
        }
    }
}

static float keep_scale(float p) { return p > 0.0f ? 1.0f / (1.0f - p) : 1.0f; }

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
    // without dropout the GEMM reads x whole; with it, chunks of xd through the scratch
    const bool drop = a->dropout > 0.0f;
    const int64_t chunk = drop ? scratch_rows(ctx, (size_t)a->K * sizeof(bf16), 0) : a->M;
    if (chunk < 1)
        return mg_fail(MG_ERR_ARG, NULL, "lora_forward: a row of K=%d does not fit the context's scratch (%zu bytes)",
                       a->K, ctx->scratch_bytes);
    bf16 *xd = (bf16 *)ctx->scratch;
    for (int64_t m0 = 0; m0 < a->M; m0 += chunk) {
        const int64_t mc = a->M - m0 < chunk ? a->M - m0 : chunk;
        const bf16 *xin = x + m0 * a->K;
        if (drop) {
            MG_TRY(lora_dropout_launch(ctx, xd, x, m0, mc, a));
            xin = xd;
        }
        mg_gemm g = {};  // uᵀ (r×mc) = (A as K×r)ᵀ · xdᵀ, rows m0.. of u
        g.trans_a = true, g.trans_b = false;
        g.m = a->r, g.n = mc, g.k = a->K;
        g.a = A, g.lda = a->K, g.type_a = CUDA_R_16BF;
        g.b = xin, g.ldb = a->K, g.type_b = CUDA_R_16BF;
        g.d = u + m0 * a->r, g.ldd = a->r, g.type_d = CUDA_R_16BF;
        g.alpha = 1.0f, g.beta = 0.0f;
        MG_TRY(mg_cuda_gemm(ctx, &g));
    }
    mg_gemm g = {};  // yᵀ (N×M, ld ldy) += scale · (B as r×N)ᵀ · uᵀ
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
