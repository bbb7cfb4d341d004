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
// u comes from lora_rowdot_kernel, which applies the mask as it reads x: one pass over x, where a
// dropout pass writing xd and a cuBLASLt GEMM with r = 8 as a side reading it back took longer.
// The backward reads each big operand once, on tensor cores (lora_dy_kernel and lora_dA_kernel
// below): dy for du and dB together, x (masked in shared memory as it arrives) for dA; dx is
// lora_dx_kernel (r <= 64 fp32 FMAs an element, reading the fp32 du and applying the mask in the
// same pass, where a GEMM would need an M×K temporary). dA reads du rounded to bf16 (torch's
// autocast rounds du to bf16 too). Shapes those kernels do not take (K, N or ldy not a multiple of
// 8, dy or x not 16-byte aligned, partial sums past the scratch) go through cuBLASLt (mg_cuda_gemm),
// the reductions over M (dB, dA) with M as the GEMM's k: there xd is formed a chunk of rows at a
// time in the context's scratch and read back at once by dA's GEMM (32 MiB, within the H100/H200's
// L2). Either way a training step keeps only x, which the layer keeps anyway.
//
// cuBLASLt (the forward's y, the backward's other shapes) is column-major; a row-major [R,C]
// matrix is the column-major C×R one:
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
// rowdot: ROWDOT_ROWS rows per warp, 8 of the r outputs per pass.
enum { ROWDOT_WARPS = 8, ROWDOT_ROWS = 4 };

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

// One step of warp_reduce_scatter32: lanes with bit HALF set keep the upper HALF values (moved
// down to v[0..HALF)), the others the lower, each adding its partner's copy of what it keeps.
template <int HALF>
static __device__ __forceinline__ void reduce_scatter_step(float v[32], int lane) {
    const bool upper = lane & HALF;
#pragma unroll
    for (int i = 0; i < HALF; i++) {
        const float send = upper ? v[i] : v[i + HALF], keep = upper ? v[i + HALF] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, HALF);
    }
}

// Each lane's v[0..31] summed over the warp, lane l getting the sum of v[l] (31 shuffles).
static __device__ __forceinline__ float warp_reduce_scatter32(float v[32]) {
    const int lane = threadIdx.x & 31;
    reduce_scatter_step<16>(v, lane);
    reduce_scatter_step<8>(v, lane);
    reduce_scatter_step<4>(v, lane);
    reduce_scatter_step<2>(v, lane);
    reduce_scatter_step<1>(v, lane);
    return v[0];
}

// out[m, j] = bf16(Σ_k in[m,k] · W[j,k]) for j < r (out's rows r apart), in =
// x's rows, dropped out with p > 0 (element index m*K + k). Warp w of block b takes rows
// m0 = 4(8b + w) .. m0+3; lane l columns 8l + 256t of the block's slice [kc·y, kc·(y+1)) ∩ [0, K)
// (y = blockIdx.y); a pass per 8 outputs j, whose 4×8 sums the warp reduces so that lane l holds
// (row l/8, output l%8). With one slice the sums go to out; with several (few rows: the slices
// keep the GPU busy) each slice's to part[y·M·r + m·r + j] for lora_rowdot_finish_kernel. vec:
// 16-byte loads (K and kc multiples of 8, x and W 16-byte aligned).
static __global__ void __launch_bounds__(ROWDOT_WARPS * 32)
    lora_rowdot_kernel(bf16 *out, float *part, const bf16 *x, const bf16 *W, int64_t M, int K, int kc,
                       int r, uint64_t seed, float p, float inv_keep, bool vec) {
    const int lane = threadIdx.x & 31;
    const int64_t m0 = ((int64_t)blockIdx.x * ROWDOT_WARPS + (threadIdx.x >> 5)) * ROWDOT_ROWS;
    if (m0 >= M) return;  // no barriers here
    const int k_begin = blockIdx.y * kc, k_end = k_begin + kc < K ? k_begin + kc : K;
    for (int jc = 0; jc < r; jc += 8) {
        float acc[ROWDOT_ROWS * 8];
#pragma unroll
        for (int e = 0; e < ROWDOT_ROWS * 8; e++) acc[e] = 0.0f;
        for (int k0 = k_begin + lane * 8; k0 < k_end; k0 += 32 * 8) {
            float xv[ROWDOT_ROWS][8];
#pragma unroll
            for (int rr = 0; rr < ROWDOT_ROWS; rr++) {
                const int64_t m = m0 + rr < M ? m0 + rr : M - 1;  // a row past M: a copy of the last, not stored
                lora_load8(xv[rr], x + m * K, k0, K, vec, m * K + k0, seed, p, inv_keep);
            }
#pragma unroll
            for (int j = 0; j < 8; j++) {
                if (jc + j < r) {  // warp-uniform
                    float w[8];
                    lora_load8(w, W + (int64_t)(jc + j) * K, k0, K, vec, 0, 0, 0.0f, 1.0f);
#pragma unroll
                    for (int rr = 0; rr < ROWDOT_ROWS; rr++)
#pragma unroll
                        for (int c = 0; c < 8; c++) acc[rr * 8 + j] = fmaf(xv[rr][c], w[c], acc[rr * 8 + j]);
                }
            }
        }
        const float sum = warp_reduce_scatter32(acc);
        const int64_t m = m0 + (lane >> 3);
        const int j = jc + (lane & 7);
        if (m < M && j < r) {
            if (gridDim.y == 1) out[m * r + j] = to_bf16(sum);
            else part[(int64_t)blockIdx.y * M * r + m * r + j] = sum;
        }
    }
}

// out[e] = bf16(Σ_y part[y·n + e]) for e < n = M·r, y = 0 .. slices-1 in order.
static __global__ void lora_rowdot_finish_kernel(bf16 *out, const float *part, int slices, int64_t n) {
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

// ---- the backward's two streaming passes, on tensor cores (mma.sync m16n8k16) ------------------
// A block of 4 warps walks a group of S tiles of 64 rows through chunks of 64 columns of its split
// of the columns: each 64×64 tile of the big operand (dy, or x with its dropout) is read from
// global memory once, by cp.async into shared memory, and serves both products of the pass:
//   lora_dy_kernel   du[m, j] = Σ_n dy[m, n] · B[n, j]    (warp w: rows 16w.. of each tile)
//                    dB[n, j] = Σ_m dy[m, n] · u[m, j]    (warp w: columns 16w.. of the chunk)
//   lora_dA_kernel   dA[j, k] = Σ_m bf16(du)[m, j] · xd[m, k]  (warp w: columns 16w.. of the chunk)
// The rank is padded to RP (a multiple of 16, zeros past r). A reduction a block cannot finish
// (du over the column splits, dB and dA over the row groups) is written as the block's partial sum
// to the context's scratch and added up in a fixed order by lora_sum_kernel: no atomics, so the
// gradients are the same from run to run. Needs K, N, ldy multiples of 8 and x, dy 16-byte aligned
// (16-byte copies); lora_backward_launch keeps cuBLASLt for the other shapes.
enum { LT_ROWS = 64, LT_COLS = 64, LT_LD = LT_COLS + 8, LT_THREADS = 128 };

// Row groups of S tiles: S·RT accumulators of du per thread stay within 32 floats.
static constexpr __host__ __device__ int lora_tile_group(int RP) { return RP <= 16 ? 4 : RP <= 32 ? 2 : 1; }
static constexpr size_t lora_pass_smem_bytes(int RP) {
    return sizeof(bf16) * ((size_t)LT_ROWS * LT_LD + 2 * (size_t)LT_ROWS * (RP + 8));
}

// The 64×64 tile at (m0, c0) of a row-major bf16 matrix (rows ld apart) into dst[64][LT_LD] by
// cp.async, zeros for rows at or past M and columns at or past c_end (c_end a multiple of 8).
static __device__ __forceinline__ void lora_load_tile(bf16 *dst, const bf16 *src, int64_t ld, int64_t m0, int64_t M,
                                                      int c0, int c_end) {
    for (int e = threadIdx.x; e < LT_ROWS * LT_COLS / 8; e += LT_THREADS) {
        const int i = e / (LT_COLS / 8), c = e % (LT_COLS / 8) * 8;
        bf16 *d = dst + i * LT_LD + c;
        if (m0 + i < M && c0 + c < c_end) cp_async16(d, src + (m0 + i) * ld + c0 + c);
        else *reinterpret_cast<uint4 *>(d) = make_uint4(0, 0, 0, 0);
    }
    cp_async_commit();
}

// dst[64][RP + 8] = rows m0.. of a [M, r] matrix (fp32 or bf16) as bf16, zeros past M and past r.
template <int RP, typename T>
static __device__ __forceinline__ void lora_load_rank_rows(bf16 *dst, const T *src, int64_t m0, int64_t M, int r) {
    for (int e = threadIdx.x; e < LT_ROWS * RP; e += LT_THREADS) {
        const int i = e / RP, j = e % RP;
        float v = 0.0f;
        if (m0 + i < M && j < r) {
            if constexpr (sizeof(T) == 4) v = src[(m0 + i) * r + j];
            else v = ld_bf16(src + (m0 + i) * r + j);
        }
        dst[i * (RP + 8) + j] = to_bf16(v);
    }
}

// acc[t] += (16×64 A from `a_tile`) · (64×RP B from `b_rows`, stored [k][j]), one k-step of 16 at a
// time. TRANS_A: A is the transpose of a_tile's [k][m] storage (columns m0.. of the tile), else
// a_tile's rows m0.. as they are.
template <int RP, bool TRANS_A>
static __device__ __forceinline__ void lora_tile_mma(float (*acc)[4], const bf16 *a_tile, int m0, const bf16 *b_rows) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < LT_ROWS / 16; kk++) {
        uint32_t a[4];
        if constexpr (TRANS_A)
            ldmatrix_x4_trans(a, a_tile + (16 * kk + ((lane >> 4) & 1) * 8 + (lane & 7)) * LT_LD + m0 + ((lane >> 3) & 1) * 8);
        else
            ldmatrix_x4(a, a_tile + (m0 + (lane & 15)) * LT_LD + 16 * kk + (lane >> 4) * 8);
#pragma unroll
        for (int t = 0; t < RP / 8; t += 2) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, b_rows + (16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8) * (RP + 8) + 8 * t + (lane >> 4) * 8);
            mma_bf16_16816(acc[t], a, b[0], b[1]);
            mma_bf16_16816(acc[t + 1], a, b[2], b[3]);
        }
    }
}

// Writes a warp's 16×RP accumulator tile (rows row0.., columns j) where row < rows_end and j < r:
// out[row · rs + j · js].
template <int RP>
static __device__ __forceinline__ void lora_store_acc(float *out, const float (*acc)[4], int64_t row0, int64_t rows_end,
                                                      int r, int64_t rs, int64_t js) {
    const int lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int t = 0; t < RP / 8; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int64_t row = row0 + g + (e >> 1) * 8;
            const int j = 8 * t + 2 * q + (e & 1);
            if (row < rows_end && j < r) out[row * rs + j * js] = acc[t][e];
        }
}

// Grid (row groups, column splits of ncs columns). du_part[y][M][r]: this split's du; dB_part[x][N][r]:
// this row group's dB, for the columns of the split.
template <int RP>
static __global__ void __launch_bounds__(LT_THREADS)
    lora_dy_kernel(float *du_part, float *dB_part, const bf16 *dy, int64_t ldy, const bf16 *B, const bf16 *u, int64_t M,
                   int N, int r, int ncs) {
    constexpr int S = lora_tile_group(RP);
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *ys = (bf16 *)smem_raw, *bs = ys + LT_ROWS * LT_LD, *us = bs + LT_ROWS * (RP + 8);
    const int warp = threadIdx.x >> 5;
    const int64_t row0 = (int64_t)blockIdx.x * LT_ROWS * S;
    const int n_begin = blockIdx.y * ncs, n_end = n_begin + ncs < N ? n_begin + ncs : N;
    float du[S][RP / 8][4] = {};
    for (int n0 = n_begin; n0 < n_end; n0 += LT_COLS) {
        lora_load_rank_rows<RP>(bs, B, n0, n_end, r);  // B's rows of the chunk
        float dB[RP / 8][4] = {};
#pragma unroll
        for (int s = 0; s < S; s++) {
            const int64_t m0 = row0 + (int64_t)s * LT_ROWS;
            if (m0 >= M) break;  // block-uniform
            lora_load_tile(ys, dy, ldy, m0, M, n0, n_end);
            lora_load_rank_rows<RP>(us, u, m0, M, r);
            cp_async_wait_all();
            __syncthreads();
            lora_tile_mma<RP, false>(du[s], ys, 16 * warp, bs);
            lora_tile_mma<RP, true>(dB, ys, 16 * warp, us);
            __syncthreads();
        }
        lora_store_acc<RP>(dB_part + (int64_t)blockIdx.x * N * r, dB, n0 + 16 * warp, n_end, r, r, 1);
    }
#pragma unroll
    for (int s = 0; s < S; s++)
        lora_store_acc<RP>(du_part + (int64_t)blockIdx.y * M * r, du[s], row0 + (int64_t)s * LT_ROWS + 16 * warp, M, r, r,
                           1);
}

// Grid (row groups, column splits of kcs columns). dA_part[x][r][K]: this row group's dA for the
// columns of the split. The dropout mask is applied to the x tile in shared memory, each thread to
// the 16-byte pieces it copied (its own cp.async writes are visible to it after the wait).
template <int RP>
static __global__ void __launch_bounds__(LT_THREADS)
    lora_dA_kernel(float *dA_part, const bf16 *x, const float *du, int64_t M, int K, int r, int kcs, uint64_t seed,
                   float p, float inv_keep) {
    constexpr int S = lora_tile_group(RP);
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *xs = (bf16 *)smem_raw, *ds = xs + LT_ROWS * LT_LD;
    const int warp = threadIdx.x >> 5;
    const int64_t row0 = (int64_t)blockIdx.x * LT_ROWS * S;
    const int k_begin = blockIdx.y * kcs, k_end = k_begin + kcs < K ? k_begin + kcs : K;
    for (int k0 = k_begin; k0 < k_end; k0 += LT_COLS) {
        float dA[RP / 8][4] = {};
#pragma unroll
        for (int s = 0; s < S; s++) {
            const int64_t m0 = row0 + (int64_t)s * LT_ROWS;
            if (m0 >= M) break;  // block-uniform
            lora_load_tile(xs, x, K, m0, M, k0, k_end);
            lora_load_rank_rows<RP>(ds, du, m0, M, r);
            cp_async_wait_all();
            if (p > 0.0f)
                for (int e = threadIdx.x; e < LT_ROWS * LT_COLS / 8; e += LT_THREADS) {
                    const int i = e / (LT_COLS / 8), c = e % (LT_COLS / 8) * 8;
                    if (m0 + i >= M || k0 + c >= k_end) continue;  // zeros
                    uint4 *v = reinterpret_cast<uint4 *>(xs + i * LT_LD + c);
                    float f[8];
                    unpack8(*v, f);
                    const unsigned keep = lora_keep8(seed, (m0 + i) * K + k0 + c, p, true, 8);
#pragma unroll
                    for (int j = 0; j < 8; j++) f[j] = (keep >> j) & 1u ? f[j] * inv_keep : 0.0f;
                    *v = pack8(f);
                }
            __syncthreads();
            lora_tile_mma<RP, true>(dA, xs, 16 * warp, ds);
            __syncthreads();
        }
        lora_store_acc<RP>(dA_part + (int64_t)blockIdx.x * r * K, dA, k0 + 16 * warp, k_end, r, 1, K);
    }
}

// out[e] = beta·out[e] + alpha·Σ_s part[s·n + e], s = 0 .. parts-1 in order (beta 0: out not read).
static __global__ void lora_sum_kernel(float *out, const float *part, int parts, int64_t n, float alpha, float beta) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += stride) {
        float t = 0.0f;
        for (int s = 0; s < parts; s++) t += part[s * n + e];
        out[e] = beta != 0.0f ? beta * out[e] + alpha * t : alpha * t;
    }
}

static float keep_scale(float p) { return p > 0.0f ? 1.0f / (1.0f - p) : 1.0f; }

// u[M, r] = bf16(dropout(x) · Aᵀ) (lora_rowdot_kernel). Few rows (the decoder's 352 a prompt)
// leave most SMs idle, so K is then cut into slices of a multiple of 256 columns, about 4 blocks per
// SM in all, whose partial sums (M·r floats a slice) go to the context's scratch and are added by
// lora_rowdot_finish_kernel.
static mg_status lora_u_launch(mg_cuda_ctx *ctx, bf16 *u, const bf16 *x, const bf16 *A, const mg_lora_args *a) {
    const int64_t M = a->M, rows_per_block = ROWDOT_WARPS * ROWDOT_ROWS;
    const int64_t blocks = (M + rows_per_block - 1) / rows_per_block, want = 4 * (int64_t)ctx->sm_count;
    int64_t slices = blocks >= want ? 1 : (want + blocks - 1) / blocks;
    const int64_t room = (int64_t)(ctx->scratch_bytes / (sizeof(float) * (size_t)M * a->r));
    if (slices > room) slices = room > 1 ? room : 1;
    int kc = (int)((a->K + slices - 1) / slices);
    kc = (kc + 255) / 256 * 256;
    slices = (a->K + kc - 1) / kc;
    const bool vec = a->K % 8 == 0 && aligned16(x) && aligned16(A);
    float *part = (float *)ctx->scratch;
    lora_rowdot_kernel<<<dim3((unsigned)blocks, (unsigned)slices), ROWDOT_WARPS * 32, 0, ctx->stream>>>(
        u, part, x, A, M, a->K, kc, a->r, a->seed, a->dropout, keep_scale(a->dropout), vec);
    MG_CUDA_LAUNCH_CHECK(lora_rowdot_kernel);
    if (slices > 1) {
        const int threads = 256;
        lora_rowdot_finish_kernel<<<grid_stride_blocks(ctx, M * a->r, threads), threads, 0, ctx->stream>>>(
            u, part, (int)slices, M * a->r);
        MG_CUDA_LAUNCH_CHECK(lora_rowdot_finish_kernel);
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

// How the tensor-core passes split the work: row groups of lora_tile_group(RP) tiles, and the
// columns (N for the dy pass, K for the dA pass) cut into splits of whole 64-column chunks so that
// there are about 4 blocks per SM (the decoder's few rows need the column splits).
typedef struct {
    int RP;                   // r rounded up to 16
    int64_t groups;           // row groups (grid.x of both passes)
    int n_splits, n_cols;     // the dy pass's column splits and their width
    int k_splits, k_cols;     // the dA pass's
} lora_tc_plan;

static void lora_split(int sm_count, int64_t groups, int C, int *splits, int *cols) {
    const int chunks = (C + LT_COLS - 1) / LT_COLS;
    const int64_t want = (4 * (int64_t)sm_count + groups - 1) / groups;
    const int s = want < 1 ? 1 : want > chunks ? chunks : (int)want;
    *cols = (chunks + s - 1) / s * LT_COLS;
    *splits = (C + *cols - 1) / *cols;
}

// Whether the tensor-core passes take this backward (16-byte copies of dy and x; partial sums
// within the scratch of scratch_bytes), and their plan for a GPU of sm_count SMs.
static bool lora_backward_tc_plan(int sm_count, size_t scratch_bytes, const bf16 *dy, const bf16 *x,
                                  const mg_lora_args *a, lora_tc_plan *pl) {
    if (a->K % 8 || a->N % 8 || a->ldy % 8 || !aligned16(dy) || !aligned16(x)) return false;
    pl->RP = (a->r + 15) / 16 * 16;
    const int64_t rows = (int64_t)LT_ROWS * lora_tile_group(pl->RP);
    pl->groups = (a->M + rows - 1) / rows;
    lora_split(sm_count, pl->groups, a->N, &pl->n_splits, &pl->n_cols);
    lora_split(sm_count, pl->groups, a->K, &pl->k_splits, &pl->k_cols);
    const size_t dy_pass = sizeof(float) * (size_t)a->r * ((size_t)pl->n_splits * a->M + (size_t)pl->groups * a->N);
    const size_t dA_pass = sizeof(float) * (size_t)a->r * pl->groups * a->K;
    return dy_pass <= scratch_bytes && dA_pass <= scratch_bytes && pl->groups <= 65535;
}

static mg_status lora_sum_launch(mg_cuda_ctx *ctx, float *out, const float *part, int parts, int64_t n, float alpha,
                                 float beta) {
    const int threads = 256;
    lora_sum_kernel<<<grid_stride_blocks(ctx, n, threads), threads, 0, ctx->stream>>>(out, part, parts, n, alpha, beta);
    MG_CUDA_LAUNCH_CHECK(lora_sum_kernel);
    return MG_OK;
}

// The backward by the two tensor-core passes: dy's (du, dB), then dx (lora_dx_kernel), then x's (dA).
template <int RP>
static mg_status lora_backward_tc_launch(mg_cuda_ctx *ctx, bf16 *dx, float *dA, float *dB, float *du, const bf16 *dy,
                                         const bf16 *x, const bf16 *u, const bf16 *A, const bf16 *B,
                                         const mg_lora_args *a, const lora_tc_plan *pl) {
    float *part = (float *)ctx->scratch, *dB_part = part + (size_t)pl->n_splits * a->M * a->r;
    const size_t smem = lora_pass_smem_bytes(RP);
    lora_dy_kernel<RP><<<dim3((unsigned)pl->groups, (unsigned)pl->n_splits), LT_THREADS, smem, ctx->stream>>>(
        part, dB_part, dy, a->ldy, B, u, a->M, a->N, a->r, pl->n_cols);
    MG_CUDA_LAUNCH_CHECK(lora_dy_kernel);
    MG_TRY(lora_sum_launch(ctx, du, part, pl->n_splits, a->M * a->r, a->scale, 0.0f));
    MG_TRY(lora_sum_launch(ctx, dB, dB_part, (int)pl->groups, (int64_t)a->N * a->r, a->scale, 1.0f));
    if (dx) MG_TRY(lora_dx_launch(ctx, dx, du, A, a));
    lora_dA_kernel<RP><<<dim3((unsigned)pl->groups, (unsigned)pl->k_splits), LT_THREADS, smem, ctx->stream>>>(
        part, x, du, a->M, a->K, a->r, pl->k_cols, a->seed, a->dropout, keep_scale(a->dropout));
    MG_CUDA_LAUNCH_CHECK(lora_dA_kernel);
    return lora_sum_launch(ctx, dA, part, (int)pl->groups, (int64_t)a->r * a->K, 1.0f, 1.0f);
}

static mg_status lora_backward_launch(mg_cuda_ctx *ctx, bf16 *dx, float *dA, float *dB, float *du, const bf16 *dy,
                                      const bf16 *x, const bf16 *u, const bf16 *A, const bf16 *B,
                                      const mg_lora_args *a) {
    lora_tc_plan pl;
    if (lora_backward_tc_plan(ctx->sm_count, ctx->scratch_bytes, dy, x, a, &pl)) {
        switch (pl.RP) {
        case 16: return lora_backward_tc_launch<16>(ctx, dx, dA, dB, du, dy, x, u, A, B, a, &pl);
        case 32: return lora_backward_tc_launch<32>(ctx, dx, dA, dB, du, dy, x, u, A, B, a, &pl);
        case 48: return lora_backward_tc_launch<48>(ctx, dx, dA, dB, du, dy, x, u, A, B, a, &pl);
        default: return lora_backward_tc_launch<64>(ctx, dx, dA, dB, du, dy, x, u, A, B, a, &pl);
        }
    }
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
