// Attention on Hopper's warpgroup MMA (wgmma, sm_90a) without a mask (SigLIP's: every query sees
// every key), head dims up to 128: the backward here, the forward further down ("The forward").
// The backward: same math, same scratch and same result layout as attention.cu's fused tensor-core
// backward (its block comment): dk += scale·dK, dv += dV, dq += scale·dQ, dQ summed in fp32 over
// the key tiles first (each tile's dQ added to a (B, H, T, D) accumulator by one bulk reduction).
//
// One block of two warpgroups (8 warps) per (tile of 128 keys, kv head g, batch row b):
// warpgroup wg owns keys 64wg..64wg+63, its warp w keys 16w..16w+15 of those, as each wgmma's 64
// rows are split. K and V stay in shared memory; the tiles of 64 queries of each query head of g
// stream through two stages (Q, dout; their lse2 and Δ), each serving 128 keys. Per query tile,
// three wgmma phases with fp32 accumulators in registers:
//   1. Sᵀ = K·Qᵀ, dPᵀ = V·doutᵀ            (per warpgroup m64 n64, k = D; A, B from shared memory)
//      Pᵀ = 2^(Sᵀ·scale·log2 e − lse2), dSᵀ = Pᵀ(dPᵀ − Δ)  in registers
//   2. dV += bf16(Pᵀ)·dout, dK += bf16(dSᵀ)·Q  (m64 nDP, k = 64 queries; A from the registers of
//      phase 1, which wgmma's accumulator layout makes an A fragment as it stands; B transposed)
//   3. dQ = bf16(dS)·K over all 128 keys, warpgroup wg taking half of D (m64 nDP/2, k = 128 keys;
//      dSᵀ goes through shared memory, read as a transposed A), then through shared memory into
//      dq_acc by one bulk reduction a tile.
// Against attention.cu's mma.sync kernel at SigLIP's shape (B = 8) on the H200: 6.22 against 8.73
// ms (tests/bench/attention.cu). Steps on the way: one warpgroup of 64 keys with per-thread fp32
// atomics for dQ, 8.45 ms (the atomics, 4,608 a tile, bounded both kernels); the bulk reduction
// instead, 7.12; two warpgroups sharing each query tile (half the reductions and Q/dout loads a
// key), 6.69; built for the exact head dim with the tile copies planned once, 6.41; descriptors
// stepped by adds, 6.22.
//
// Shared-memory layout of every tile ("core-matrix" order, wgmma's no-swizzle canonical form): a
// tile of R rows × DP columns is stored as DP/8 column blocks, each R rows of 16 bytes:
// element (r, c) at ((c/8)·R + r)·8 + c%8. An 8×8 core matrix (8 rows of 8 consecutive columns)
// is then 128 contiguous bytes; core matrices are 128 bytes apart along the rows and R·16 bytes
// along the columns. Read as a K-major operand (rows = M or N, columns = K) the descriptor's
// leading byte offset (LBO, along K) is R·16 and its stride byte offset (SBO, along M/N) 128; read
// transposed (rows = K, columns = M or N: "MN-major") LBO (along K) is 128 and SBO R·16. The same
// tile serves both readings: Q and dout are phase 1's K-major B and phase 2's transposed B, K is
// phase 1's A and phase 3's transposed B (in the forward, K is S's K-major B and V the P·V
// product's transposed B). The rows land by cp.async, eight threads to a column block's 8 rows
// (128 contiguous bytes: no bank conflicts).
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/attention_sm90.cuh"

// Two warpgroups a block, each 64 keys: 128 keys share each query tile (64 queries).
enum { SM90_THREADS = 256, SM90_ROWS = 64, SM90_KEYS = 128 };

// Bytes of shared memory: K, V (128 × DP bf16 each), two stages of Q and dout (64 × DP bf16
// each), dSᵀ (128 × 64 bf16), the tile's dQ (64 × DP floats), two stages of lse2 and Δ (64 floats
// each).
static constexpr size_t sm90_smem_bytes(int DP) {
    return sizeof(bf16) * ((size_t)(2 * SM90_KEYS + 4 * SM90_ROWS) * DP + SM90_KEYS * SM90_ROWS) +
           sizeof(float) * ((size_t)SM90_ROWS * DP + 4 * SM90_ROWS);
}

// The padded width the kernels are built for: D rounded up to 64, 80 or 128. Each is also built
// for one exact head dim (DC: SigLIP's 72 at DP = 80, D = DP otherwise), whose constant D turns the
// tile copies' divisions by D/8 into multiplies; other multiples of 8 run the DC = 0 build.
static int sm90_padded_dim(int D) { return D <= 64 ? 64 : D <= 80 ? 80 : 128; }
static constexpr int sm90_exact_dim(int DP) { return DP == 80 ? 72 : DP; }

// ---- wgmma (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate") ---------------
// d[64×N] += A[64×16] · B[16×N], fp32 accumulators, bf16 operands. Accumulator layout per warp w of
// the warpgroup (g = lane/4, t = lane%4): d[4j + e] is row 16w + g + 8·(e/2), column 8j + 2t + e%2,
// that of mma.m16n8k16 for each 8-column block j. A from registers (wgmma_rs) has mma.m16n8k16's
// A fragment layout for the warp's 16 rows; from shared memory (wgmma_ss) it is a descriptor like
// B. TA, TB: 1 reads that operand transposed ("MN-major"). The same instruction at the N the
// kernel uses: 64 (phase 1), DP (phase 2: 64, 80, 128), DP/2 (phase 3: 32, 40, 64).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <int TA, int TB>
static __device__ __forceinline__ void wgmma_ss_n32(float (&d)[16], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, %19, %20;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "l"(da), "l"(db), "r"(acc), "n"(TA), "n"(TB));
}

template <int TA, int TB>
static __device__ __forceinline__ void wgmma_ss_n40(float (&d)[20], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %22, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n40k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19}, %20, %21, p, 1, 1, %23, %24;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19])
                 : "l"(da), "l"(db), "r"(acc), "n"(TA), "n"(TB));
}

template <int TA, int TB>
static __device__ __forceinline__ void wgmma_ss_n64(float (&d)[32], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(da), "l"(db), "r"(acc), "n"(TA), "n"(TB));
}

template <int TB>
static __device__ __forceinline__ void wgmma_rs_n64(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1), "n"(TB));
}

template <int TB>
static __device__ __forceinline__ void wgmma_rs_n80(float (&d)[40], const uint32_t (&a)[4], uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %45, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n80k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39}, {%40, %41, %42, %43}, %44, p, 1, 1, %46;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1), "n"(TB));
}

template <int TB>
static __device__ __forceinline__ void wgmma_rs_n128(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1), "n"(TB));
}
template <int N, int TA, int TB>
static __device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, int acc) {
    if constexpr (N == 32) wgmma_ss_n32<TA, TB>(d, da, db, acc);
    else if constexpr (N == 40) wgmma_ss_n40<TA, TB>(d, da, db, acc);
    else wgmma_ss_n64<TA, TB>(d, da, db, acc);
}
template <int N, int TB>
static __device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db) {
    if constexpr (N == 64) wgmma_rs_n64<TB>(d, a, db);
    else if constexpr (N == 80) wgmma_rs_n80<TB>(d, a, db);
    else wgmma_rs_n128<TB>(d, a, db);
}
static __device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed groups of this warpgroup's wgmma are still running (0: all done).
template <int N>
static __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }

// gdst[0 .. bytes/4) += ssrc[...] in fp32 by the bulk-copy engine (one instruction for a whole tile;
// bytes a multiple of 16, both addresses 16-byte aligned), and its completion: wait_read until the
// source may be overwritten, wait_done until the global writes are made.
static __device__ __forceinline__ void bulk_reduce_add(float *gdst, const float *ssrc, uint32_t bytes) {
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n"
                 ::"l"(gdst), "r"(smem_u32(ssrc)), "r"(bytes) : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
static __device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
static __device__ __forceinline__ void bulk_wait_done() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

// Shared-memory matrix descriptor, no swizzle: start address, LBO and SBO in bytes (each >> 4).
static __device__ __forceinline__ uint64_t wgmma_desc(const bf16 *p, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((smem_u32(p) & 0x3FFFF) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32;
}
// The descriptor d of an operand `elems` bf16 further on (a multiple of 8): only the start-address
// field moves, and it cannot carry out of its 14 bits (shared memory ends below 256 KB). One add in
// the loops instead of building each descriptor from its address.
static __device__ __forceinline__ uint64_t wgmma_desc_at(uint64_t d, int elems) { return d + (uint64_t)(elems >> 3); }
// Makes this thread's shared-memory writes (stores, landed cp.async) visible to wgmma's reads.
static __device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps values in their registers, unmoved, across this point (an asynchronous wgmma reads or
// writes them until its wait).
template <int N>
static __device__ __forceinline__ void keep_regs(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
template <int N>
static __device__ __forceinline__ void keep_regs(uint32_t (&d)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) asm volatile("" : "+r"(d[i][e])::"memory");
}

// One thread's share of copying rows [j0, j0 + R) of a [token][stride] bf16 slab into a tile of R
// rows in core-matrix order: the D/8 data column blocks by cp.async, eight threads to a column
// block's 8 rows (so a warp reads 64 contiguous bytes of each of 8 rows), rows at or past `end` as
// zeros. Worked out once (the divisions by D/8 and the offsets) for every tile a kernel streams:
// piece i goes to shared byte sbyte[i] of the tile from byte gbyte[i] of row j0 (row[i] < R; -1: no
// piece; gbyte < 2^31: stride <= H·D < 2^23 and r < 128). A piece is then one address add and one
// predicated copy, rows past `end` zero-filled by it (a branch per piece, 64-bit index arithmetic
// and a generic-to-shared conversion each took a third of the forward's loop).
template <int R, int DP>
struct sm90_tile_copy {
    static constexpr int N = (R * DP / 8 + SM90_THREADS - 1) / SM90_THREADS;
    int row[N];
    uint32_t sbyte[N], gbyte[N];
    __device__ __forceinline__ sm90_tile_copy(int64_t stride, int D) {
        const int nb = D / 8;
#pragma unroll
        for (int i = 0; i < N; i++) {
            const int e = threadIdx.x + i * SM90_THREADS, blk = e >> 3, cb = blk % nb, r = (blk / nb) * 8 + (e & 7);
            row[i] = e < R * nb ? r : -1;
            sbyte[i] = (uint32_t)(cb * R + r) * 16;
            gbyte[i] = (uint32_t)(r * (int)stride + cb * 8) * 2;
        }
    }
    // tile: the tile's shared address
    __device__ __forceinline__ void load(uint32_t tile, const bf16 *src, int64_t stride, int j0, int end) const {
        const char *base = reinterpret_cast<const char *>(src + (int64_t)j0 * stride);
#pragma unroll
        for (int i = 0; i < N; i++)
            cp_async16_zfill(row[i] >= 0, tile + sbyte[i], base + gbyte[i], j0 + row[i] < end ? 16 : 0);
    }
};
// Zeroes column blocks D/8 .. DP/8-1 of `tiles` consecutive tiles of R rows (never written again).
template <int DP, int R>
static __device__ __forceinline__ void sm90_zero_pad(bf16 *tile, int tiles, int D) {
    const int pad = (DP - D) / 8 * R;  // 16-byte rows of padding a tile
    for (int e = threadIdx.x; e < tiles * pad; e += SM90_THREADS)
        *reinterpret_cast<uint4 *>(tile + (e / pad) * R * DP + (D / 8 * R + e % pad) * 8) = make_uint4(0, 0, 0, 0);
}
#endif

template <int DP, int DC>
static __global__ void __launch_bounds__(SM90_THREADS, 1)
    attention_backward_sm90_kernel(bf16 *dk, bf16 *dv, float *dq_acc, const bf16 *q, const bf16 *k, const bf16 *v,
                                   const bf16 *dout, const float *lse2, const float *delta, mg_attention_args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int QT = SM90_ROWS * DP, KT = SM90_KEYS * DP;  // bf16 of a query tile, of a key tile
    constexpr uint32_t QCB = SM90_ROWS * 16, KCB = SM90_KEYS * 16;  // bytes between their column blocks
    constexpr int NJ = DP / 8, NJ3 = DP / 16;  // 8-column blocks of dK/dV, of a warpgroup's half of dQ
    extern __shared__ __align__(128) unsigned char smem_raw[];
    bf16 *ks = reinterpret_cast<bf16 *>(smem_raw), *vs = ks + KT;
    bf16 *qs = vs + KT, *dos = qs + 2 * QT;  // [2] stages each
    bf16 *dst = dos + 2 * QT;                // dSᵀ: [8 query blocks][128 keys][8 queries]
    float *sdq = reinterpret_cast<float *>(dst + SM90_KEYS * SM90_ROWS);  // the tile's dQ: [64 queries][D]
    float *slse = sdq + QT, *sdelta = slse + 2 * SM90_ROWS;

    const int D = DC ? DC : a.D, H = a.H, Hkv = a.Hkv, HG = H / Hkv, T = (int)a.T;
    const int64_t b = blockIdx.z;
    const int g = blockIdx.y, k0 = blockIdx.x * SM90_KEYS;
    const int lane = threadIdx.x & 31, wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3;
    const int fr = lane >> 2, fc = 2 * (lane & 3);
    const int key_w = 64 * wg + 16 * warp;  // this warp's first key within the block's 128
    const int64_t q_stride = (int64_t)H * D, kv_stride = (int64_t)Hkv * D;
    const int n_qt = (T + SM90_ROWS - 1) / SM90_ROWS, n_it = n_qt * HG;  // iteration it: head g·HG + it / n_qt

    sm90_zero_pad<DP, SM90_KEYS>(ks, 2, D);
    sm90_zero_pad<DP, SM90_ROWS>(qs, 4, D);
    {
        const sm90_tile_copy<SM90_KEYS, DP> kv_copy(kv_stride, D);
        kv_copy.load(smem_u32(ks), k + (b * T * Hkv + g) * D, kv_stride, k0, T);
        kv_copy.load(smem_u32(vs), v + (b * T * Hkv + g) * D, kv_stride, k0, T);
    }
    const sm90_tile_copy<SM90_ROWS, DP> q_copy(q_stride, D);  // Q and dout tiles
    const uint32_t qs_s = smem_u32(qs), dos_s = smem_u32(dos);
    // Query tile `it` into stage st (its statistics returned for the caller to store; rows past T:
    // lse2 = +inf, so P = 0).
    auto load_tile = [&](int it, int st, float &l_out, float &d_out) {
        const int hh = it / n_qt, h = g * HG + hh, t0 = (it - hh * n_qt) * SM90_ROWS;
        const int64_t head = (b * T * H + h) * D;
        q_copy.load(qs_s + st * QT * 2, q + head, q_stride, t0, T);
        q_copy.load(dos_s + st * QT * 2, dout + head, q_stride, t0, T);
        cp_async_commit();
        const int i = t0 + (int)threadIdx.x;
        l_out = INFINITY, d_out = 0.0f;
        if (threadIdx.x < SM90_ROWS && i < T) {
            const int64_t stat = (b * H + h) * T + i;
            l_out = lse2[stat], d_out = delta[stat];
        }
    };
    {
        float l0, d0;
        load_tile(0, 0, l0, d0);  // also commits K and V
        if (threadIdx.x < SM90_ROWS) slse[threadIdx.x] = l0, sdelta[threadIdx.x] = d0;
    }

    const float c_log2 = a.scale * 1.4426950408889634f;
    float dk_acc[DP / 2], dv_acc[DP / 2];
#pragma unroll
    for (int e = 0; e < DP / 2; e++) dk_acc[e] = dv_acc[e] = 0.0f;
    const bf16 *kw = ks + 64 * wg * 8, *vw = vs + 64 * wg * 8;  // this warpgroup's 64 keys (row 64·wg)
    const uint64_t k_desc = wgmma_desc(kw, KCB, 128), v_desc = wgmma_desc(vw, KCB, 128);    // phase 1's A
    const uint64_t ds_desc = wgmma_desc(dst, 128, KCB);                                       // phase 3's A
    const uint64_t kd_desc = wgmma_desc(ks + NJ3 * wg * SM90_KEYS * 8, 128, KCB);             // phase 3's B

    for (int it = 0; it < n_it; it++) {
        const int st = it & 1;
        cp_async_wait_all();
        fence_proxy_async();
        __syncthreads();  // tile `it` landed; everyone is done with tile it-1 (its stage, dst)
        float next_l = INFINITY, next_d = 0.0f;
        if (it + 1 < n_it) load_tile(it + 1, st ^ 1, next_l, next_d);
        const bf16 *qt = qs + st * QT, *dot = dos + st * QT;
        const uint64_t q_desc = wgmma_desc(qt, QCB, 128), do_desc = wgmma_desc(dot, QCB, 128);     // K-major
        const uint64_t qT_desc = wgmma_desc(qt, 128, QCB), doT_desc = wgmma_desc(dot, 128, QCB);  // transposed
        const float *lse_t = slse + st * SM90_ROWS, *delta_t = sdelta + st * SM90_ROWS;

        // 1. Sᵀ = K·Qᵀ, dPᵀ = V·doutᵀ for the warpgroup's keys: k16 step kk reads column blocks
        // 2kk, 2kk+1 of each tile.
        float s[32], dp[32];  // the first step overwrites them (acc = 0)
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++) {
            const int koff = kk * 2 * SM90_KEYS * 8, qoff = kk * 2 * SM90_ROWS * 8;
            wgmma_ss<64, 0, 0>(s, wgmma_desc_at(k_desc, koff), wgmma_desc_at(q_desc, qoff), kk > 0);
            wgmma_ss<64, 0, 0>(dp, wgmma_desc_at(v_desc, koff), wgmma_desc_at(do_desc, qoff), kk > 0);
        }
        wgmma_commit();
        wgmma_wait<0>();
        keep_regs(s);
        keep_regs(dp);
        // Pᵀ and dSᵀ (row = key, column = query 8j + fc + e%2)
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float2 l2 = *reinterpret_cast<const float2 *>(lse_t + 8 * j + fc);
            const float2 d2 = *reinterpret_cast<const float2 *>(delta_t + 8 * j + fc);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float p = exp2_fast(fmaf(s[4 * j + e], c_log2, -((e & 1) ? l2.y : l2.x)));
                s[4 * j + e] = p;
                dp[4 * j + e] = p * (dp[4 * j + e] - ((e & 1) ? d2.y : d2.x));
            }
        }

        // 2. dV += Pᵀ·dout, dK += dSᵀ·Q over 16 queries a step: A fragments from 8-column blocks
        // 2kq, 2kq+1 of Pᵀ / dSᵀ; B = the dout / Q tile read transposed from query row 16kq.
        uint32_t pa[4][4], sa[4][4];
#pragma unroll
        for (int kq = 0; kq < 4; kq++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                pa[kq][e] = pack_bf16x2(s[8 * kq + 2 * e], s[8 * kq + 2 * e + 1]);
                sa[kq][e] = pack_bf16x2(dp[8 * kq + 2 * e], dp[8 * kq + 2 * e + 1]);
            }
        wgmma_fence();
#pragma unroll
        for (int kq = 0; kq < 4; kq++) {
            wgmma_rs<DP, 1>(dv_acc, pa[kq], wgmma_desc_at(doT_desc, kq * 16 * 8));
            wgmma_rs<DP, 1>(dk_acc, sa[kq], wgmma_desc_at(qT_desc, kq * 16 * 8));
        }
        wgmma_commit();

        // 3. dQ = dS·K over the block's 128 keys, warpgroup wg taking dims [DP/2·wg, DP/2·(wg+1)):
        // dSᵀ into dst (bf16 pairs of queries), then dS read transposed from key row 16kk and K
        // read transposed from key row 16kk, column block NJ3·wg; dQ through sdq to dq_acc by one
        // bulk reduction (per-thread atomics of the tile's 4,608 floats bounded the kernel).
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int r = 0; r < 2; r++)
                *reinterpret_cast<uint32_t *>(dst + (j * SM90_KEYS + key_w + fr + 8 * r) * 8 + fc) =
                    sa[j / 2][(j & 1) * 2 + r];
        fence_proxy_async();
        if (threadIdx.x == 0) bulk_wait_read();  // the previous tile's reduction has read sdq
        __syncthreads();  // dSᵀ of all 128 keys in dst; sdq free
        float dq[DP / 4];  // the first step overwrites it
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < SM90_KEYS / 16; kk++)
            wgmma_ss<DP / 2, 1, 1>(dq, wgmma_desc_at(ds_desc, kk * 16 * 8), wgmma_desc_at(kd_desc, kk * 16 * 8), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();  // phases 2 and 3
        keep_regs(pa);
        keep_regs(sa);
        keep_regs(dv_acc);
        keep_regs(dk_acc);
        keep_regs(dq);
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int j = 0; j < NJ3; j++) {
                const int col = 8 * (NJ3 * wg + j) + fc;
                if (col < D)
                    *reinterpret_cast<float2 *>(sdq + (16 * warp + fr + 8 * r) * D + col) =
                        make_float2(dq[4 * j + 2 * r], dq[4 * j + 2 * r + 1]);
            }
        fence_proxy_async();
        __syncthreads();  // the tile's dQ in sdq
        if (threadIdx.x == 0) {  // dq_acc is (B, H, T, D): the tile's rows are one contiguous run
            const int hh = it / n_qt, h = g * HG + hh, q0 = (it - hh * n_qt) * SM90_ROWS;
            const int rows = T - q0 < SM90_ROWS ? T - q0 : SM90_ROWS;
            bulk_reduce_add(dq_acc + ((b * H + h) * T + q0) * (int64_t)D, sdq, (uint32_t)(rows * D * sizeof(float)));
        }
        if (it + 1 < n_it && threadIdx.x < SM90_ROWS)
            slse[(st ^ 1) * SM90_ROWS + threadIdx.x] = next_l, sdelta[(st ^ 1) * SM90_ROWS + threadIdx.x] = next_d;
    }

    if (threadIdx.x == 0) bulk_wait_done();
    // dk += scale · dK, dv += dV: each (key, column pair) belongs to this thread alone.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = k0 + key_w + fr + 8 * r;
        if (j >= T) continue;
        const int64_t row = (b * T + j) * kv_stride + (int64_t)g * D;
#pragma unroll
        for (int c = 0; c < NJ; c++) {
            const int col = 8 * c + fc;
            if (col >= D) continue;
            __nv_bfloat162 *k2 = reinterpret_cast<__nv_bfloat162 *>(dk + row + col);
            __nv_bfloat162 *v2 = reinterpret_cast<__nv_bfloat162 *>(dv + row + col);
            const float2 ko = __bfloat1622float2(*k2), vo = __bfloat1622float2(*v2);
            *k2 = __floats2bfloat162_rn(ko.x + a.scale * dk_acc[4 * c + 2 * r], ko.y + a.scale * dk_acc[4 * c + 2 * r + 1]);
            *v2 = __floats2bfloat162_rn(vo.x + dv_acc[4 * c + 2 * r], vo.y + dv_acc[4 * c + 2 * r + 1]);
        }
    }
#else
    __trap();  // launched on compute capability 9.0 only, which runs the sm_90a code
#endif
}

// ---- The forward ---------------------------------------------------------------------------------
// FlashAttention-2's forward on wgmma, for the same unmasked attention, with FlashAttention-3's
// overlap of the softmax and the products inside a warpgroup: one block of two warpgroups per
// (tile of 128 queries, head h, batch row b), warpgroup wg owning queries 64wg..64wg+63 (its warp w
// rows 16w..16w+15 of those, as wgmma splits its 64 rows). Q stays in shared memory; K and V tiles
// of 64 keys stream through two stages each by cp.async, V one tile behind K. Iteration n:
//   barrier (K_n and V_{n-1} landed; every warp is done with K_{n-1} and V_{n-2})
//   cp.async K_{n+1} and V_n into the stages K_{n-1} and V_{n-2} left
//   issue S = Q·K_nᵀ          (m64 n64, k = DP; A and B from shared memory, both K-major)
//   issue O += bf16(P_{n-1})·V_{n-1}  (m64 nDP, k = 64 keys; A = P in registers, which wgmma's
//                              accumulator layout makes an A fragment as it stands; B = the V tile
//                              read transposed)
//   wait for S; online softmax of S (p = 2^(s·c − m·c), c = scale·log2 e, as attention.cu's kernel)
//   while the P·V product runs; wait for it; O *= the softmax's correction; P_n packed to bf16
// and after the last tile O += P·V once more. Writes out (bf16, O/l) and, when a.lse2 is set, each
// row's lse2 as attention.cu's forward does. Up to DP = 80 two blocks share an SM, so one
// warpgroup's softmax also overlaps the other warpgroups' products. (ptxas places the wait for
// P·V before the softmax, reusing P's registers; keeping it below measured no faster, and neither
// did 128-key tiles or three warpgroups a block: docs/benchmarks.md, 2026-12-03.)
enum { SM90F_ROWS = 128, SM90F_KEYS = 64 };

// Bytes of shared memory: the Q tile (128 × DP bf16), two stages of K and V (64 × DP bf16 each).
static constexpr size_t sm90_forward_smem_bytes(int DP) {
    return sizeof(bf16) * (size_t)(SM90F_ROWS + 4 * SM90F_KEYS) * DP;
}

// Two blocks an SM up to DP = 80 (128 registers a thread); at DP = 128 O takes 64 registers, and
// one block an SM keeps the products from being serialized for want of registers.
template <int DP, int DC>
static __global__ void __launch_bounds__(SM90_THREADS, DP <= 80 ? 2 : 1)
    attention_forward_sm90_kernel(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, mg_attention_args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int KT = SM90F_KEYS * DP;                               // bf16 of a K or V tile
    constexpr uint32_t QCB = SM90F_ROWS * 16, KCB = SM90F_KEYS * 16;  // bytes between column blocks
    extern __shared__ __align__(128) unsigned char smem_raw[];
    bf16 *qs = reinterpret_cast<bf16 *>(smem_raw), *ks = qs + SM90F_ROWS * DP, *vs = ks + 2 * KT;

    const int D = DC ? DC : a.D, H = a.H, Hkv = a.Hkv, T = (int)a.T;
    const int64_t b = blockIdx.z;
    const int h = blockIdx.y, g = h / (H / Hkv), q0 = blockIdx.x * SM90F_ROWS;
    const int lane = threadIdx.x & 31, wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3;
    const int fc = 2 * (lane & 3);
    const int64_t q_stride = (int64_t)H * D, kv_stride = (int64_t)Hkv * D;
    const bf16 *k_bg = k + (b * T * Hkv + g) * D, *v_bg = v + (b * T * Hkv + g) * D;
    const int n_kt = (T + SM90F_KEYS - 1) / SM90F_KEYS;

    sm90_zero_pad<DP, SM90F_ROWS>(qs, 1, D);
    sm90_zero_pad<DP, SM90F_KEYS>(ks, 4, D);  // both stages of K, then of V
    sm90_tile_copy<SM90F_ROWS, DP>(q_stride, D).load(smem_u32(qs), q + (b * T * H + h) * D, q_stride, q0, T);
    const sm90_tile_copy<SM90F_KEYS, DP> kv_copy(kv_stride, D);  // K and V tiles
    const uint32_t ks_s = smem_u32(ks), vs_s = smem_u32(vs);
    kv_copy.load(ks_s, k_bg, kv_stride, 0, T);
    cp_async_commit();

    // Per thread: rows 16w + lane/4 and that + 8 of its warpgroup (r = 0, 1), the running max m of
    // the raw scores (the same in the quad's four lanes), this lane's share of the running sum l,
    // O, and the previous tile's P as A fragments (pa[kq]: keys 16kq..16kq+15).
    const float c_log2 = a.scale * 1.4426950408889634f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[DP / 2];
#pragma unroll
    for (int e = 0; e < DP / 2; e++) o[e] = 0.0f;
    uint32_t pa[4][4];
    // this warpgroup's 64 rows of Q (row 64·wg of each column block), the stages of K and V
    const uint64_t q_desc = wgmma_desc(qs + 64 * wg * 8, QCB, 128), k_desc = wgmma_desc(ks, KCB, 128);
    const uint64_t vT_desc = wgmma_desc(vs, 128, KCB);  // V read transposed
    auto pv_issue = [&](int n) {                          // O += P·V_n (after a wgmma_fence)
#pragma unroll
        for (int kq = 0; kq < 4; kq++) wgmma_rs<DP, 1>(o, pa[kq], wgmma_desc_at(vT_desc, (n & 1) * KT + kq * 16 * 8));
        wgmma_commit();
    };

    for (int it = 0; it < n_kt; it++) {
        const int k0 = it * SM90F_KEYS;
        cp_async_wait_all();
        fence_proxy_async();
        __syncthreads();
        if (it + 1 < n_kt) kv_copy.load(ks_s + ((it + 1) & 1) * KT * 2, k_bg, kv_stride, k0 + SM90F_KEYS, T);
        kv_copy.load(vs_s + (it & 1) * KT * 2, v_bg, kv_stride, k0, T);
        cp_async_commit();

        // S = Q·K_itᵀ (k16 step kk reads column blocks 2kk, 2kk+1 of both tiles), then the previous
        // tile's P·V behind it.
        float s[32];  // the first step overwrites it (acc = 0)
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++)
            wgmma_ss<64, 0, 0>(s, wgmma_desc_at(q_desc, kk * 2 * SM90F_ROWS * 8),
                               wgmma_desc_at(k_desc, (it & 1) * KT + kk * 2 * SM90F_KEYS * 8), kk > 0);
        wgmma_commit();
        if (it > 0) {
            pv_issue(it - 1);
            wgmma_wait<1>();  // S done; P·V may still run
        } else {
            wgmma_wait<0>();
        }
        keep_regs(s);
        if (k0 + SM90F_KEYS > T)  // the last tile's rows past T (zeros) are not keys
#pragma unroll
            for (int e = 0; e < 32; e++)
                if (k0 + 8 * (e >> 2) + fc + (e & 1) >= T) s[e] = -INFINITY;

        // Online softmax per row (s[4j + 2r + c] is row r's key 8j + fc + c): the quad's max, the
        // correction of the old state, p = 2^(s·c − m·c).
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = m[r];
#pragma unroll
            for (int j = 0; j < 8; j++) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * r], s[4 * j + 2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float base = mx * c_log2;                      // finite: every tile holds a key
            corr[r] = exp2_fast(fmaf(m[r], c_log2, -base));  // 0 on the first tile
            m[r] = mx;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const float p = exp2_fast(fmaf(s[4 * j + 2 * r + c], c_log2, -base));
                    s[4 * j + 2 * r + c] = p;
                    sum += p;
                }
            l[r] = l[r] * corr[r] + sum;
        }
        wgmma_wait<0>();  // the previous P·V: o and pa are free
        keep_regs(o);
        keep_regs(pa);
        if (corr[0] != 1.0f || corr[1] != 1.0f)  // the running max moved (else 2^0 is exactly 1)
#pragma unroll
            for (int j = 0; j < DP / 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) o[4 * j + e] *= corr[e >> 1];
#pragma unroll
        for (int kq = 0; kq < 4; kq++)
#pragma unroll
            for (int e = 0; e < 4; e++) pa[kq][e] = pack_bf16x2(s[8 * kq + 2 * e], s[8 * kq + 2 * e + 1]);
    }
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();  // the last V tile landed
    wgmma_fence();
    pv_issue(n_kt - 1);
    wgmma_wait<0>();
    keep_regs(o);

    // out = O / l, rounded to bf16 once; lse2 = m·c + log2 l (every row sees a key: l > 0).
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float sum = l[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const int i = q0 + 64 * wg + 16 * warp + (lane >> 2) + 8 * r;
        if (i >= T) continue;
        if (a.lse2 && (lane & 3) == 0) a.lse2[(b * H + h) * T + i] = m[r] * c_log2 + log2f(sum);
        const float inv = 1.0f / sum;
        bf16 *orow = out + (b * T + i) * q_stride + (int64_t)h * D;
#pragma unroll
        for (int j = 0; j < DP / 8; j++)
            if (8 * j < D)  // D is a multiple of 8: the whole 8-column block is real
                *reinterpret_cast<uint32_t *>(orow + 8 * j + fc) =
                    pack_bf16x2(o[4 * j + 2 * r] * inv, o[4 * j + 2 * r + 1] * inv);
    }
#else
    __trap();  // launched on compute capability 9.0 only, which runs the sm_90a code
#endif
}

// dq (B,T,H,D) += scale · acc (B,H,T,D), four elements at a time (D a multiple of 8).
static __global__ void attention_backward_sm90_dq_add_kernel(bf16 *dq, const float *acc, mg_attention_args a) {
    const int D = a.D, H = a.H;
    const int64_t T = a.T, n4 = a.B * T * H * D / 4, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t v = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; v < n4; v += stride) {
        const int64_t e = 4 * v, row = e / D, bt = row / H, t = bt % T, b = bt / T;
        const int d = (int)(e - row * D), h = (int)(row - bt * H);
        const float4 x = *reinterpret_cast<const float4 *>(acc + ((b * H + h) * T + t) * D + d);
        __nv_bfloat162 *p = reinterpret_cast<__nv_bfloat162 *>(dq + e);
        const float2 lo = __bfloat1622float2(p[0]), hi = __bfloat1622float2(p[1]);
        p[0] = __floats2bfloat162_rn(lo.x + a.scale * x.x, lo.y + a.scale * x.y);
        p[1] = __floats2bfloat162_rn(hi.x + a.scale * x.z, hi.y + a.scale * x.w);
    }
}

bool attention_sm90_fits(const mg_cuda_ctx *ctx, const mg_attention_args *a) {
    const int DP = sm90_padded_dim(a->D);
    return ctx->cc_major == 9 && ctx->cc_minor == 0 && !a->causal && a->window == 0 && !a->key_valid &&
           a->D % 8 == 0 && a->D <= 128 && sm90_smem_bytes(DP) <= ctx->smem_optin &&
           sm90_forward_smem_bytes(DP) <= ctx->smem_optin;
}

template <int DP, int DC>
static mg_status attention_forward_sm90_launch_cfg(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                                   const bf16 *v, const mg_attention_args *a) {
    const size_t smem = sm90_forward_smem_bytes(DP);
    MG_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_sm90_kernel<DP, DC>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)((a->T + SM90F_ROWS - 1) / SM90F_ROWS), (unsigned)a->H, (unsigned)a->B);
    attention_forward_sm90_kernel<DP, DC><<<grid, SM90_THREADS, smem, ctx->stream>>>(out, q, k, v, *a);
    MG_CUDA_LAUNCH_CHECK(attention_forward_sm90_kernel);
    return MG_OK;
}
template <int DP>
static mg_status attention_forward_sm90_launch_dp(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k,
                                                  const bf16 *v, const mg_attention_args *a) {
    if (a->D == sm90_exact_dim(DP)) return attention_forward_sm90_launch_cfg<DP, sm90_exact_dim(DP)>(ctx, out, q, k, v, a);
    return attention_forward_sm90_launch_cfg<DP, 0>(ctx, out, q, k, v, a);
}

mg_status attention_forward_sm90_launch(mg_cuda_ctx *ctx, bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v,
                                        const mg_attention_args *a) {
    switch (sm90_padded_dim(a->D)) {
    case 64: return attention_forward_sm90_launch_dp<64>(ctx, out, q, k, v, a);
    case 80: return attention_forward_sm90_launch_dp<80>(ctx, out, q, k, v, a);
    default: return attention_forward_sm90_launch_dp<128>(ctx, out, q, k, v, a);
    }
}

template <int DP, int DC>
static mg_status attention_backward_sm90_launch_cfg(mg_cuda_ctx *ctx, bf16 *dk, bf16 *dv, float *dq_acc, const bf16 *q,
                                                    const bf16 *k, const bf16 *v, const bf16 *dout, const float *lse2,
                                                    const float *delta, const mg_attention_args *a) {
    const size_t smem = sm90_smem_bytes(DP);
    MG_CUDA_CHECK(cudaFuncSetAttribute(attention_backward_sm90_kernel<DP, DC>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)((a->T + SM90_KEYS - 1) / SM90_KEYS), (unsigned)a->Hkv, (unsigned)a->B);
    attention_backward_sm90_kernel<DP, DC><<<grid, SM90_THREADS, smem, ctx->stream>>>(dk, dv, dq_acc, q, k, v, dout,
                                                                                     lse2, delta, *a);
    MG_CUDA_LAUNCH_CHECK(attention_backward_sm90_kernel);
    return MG_OK;
}
template <int DP>
static mg_status attention_backward_sm90_launch_dp(mg_cuda_ctx *ctx, bf16 *dk, bf16 *dv, float *dq_acc, const bf16 *q,
                                                   const bf16 *k, const bf16 *v, const bf16 *dout, const float *lse2,
                                                   const float *delta, const mg_attention_args *a) {
    if (a->D == sm90_exact_dim(DP))
        return attention_backward_sm90_launch_cfg<DP, sm90_exact_dim(DP)>(ctx, dk, dv, dq_acc, q, k, v, dout, lse2,
                                                                          delta, a);
    return attention_backward_sm90_launch_cfg<DP, 0>(ctx, dk, dv, dq_acc, q, k, v, dout, lse2, delta, a);
}

mg_status attention_backward_sm90_launch(mg_cuda_ctx *ctx, bf16 *dq, bf16 *dk, bf16 *dv, float *dq_acc, const bf16 *q,
                                         const bf16 *k, const bf16 *v, const bf16 *dout, const float *lse2,
                                         const float *delta, const mg_attention_args *a) {
    switch (sm90_padded_dim(a->D)) {
    case 64: MG_TRY(attention_backward_sm90_launch_dp<64>(ctx, dk, dv, dq_acc, q, k, v, dout, lse2, delta, a)); break;
    case 80: MG_TRY(attention_backward_sm90_launch_dp<80>(ctx, dk, dv, dq_acc, q, k, v, dout, lse2, delta, a)); break;
    default: MG_TRY(attention_backward_sm90_launch_dp<128>(ctx, dk, dv, dq_acc, q, k, v, dout, lse2, delta, a));
    }
    const int threads = 256;
    attention_backward_sm90_dq_add_kernel<<<grid_stride_blocks(ctx, a->B * a->T * a->H * a->D / 4, threads), threads, 0,
                                            ctx->stream>>>(dq, dq_acc, *a);
    MG_CUDA_LAUNCH_CHECK(attention_backward_sm90_dq_add_kernel);
    return MG_OK;
}
