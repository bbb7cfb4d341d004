// Row lookups, all written with `=`:
//   embedding:    y[n,C] = bf16(E[ids[n]] * scale), E[V,C]  (Gemma3TextScaledWordEmbedding: the
//                 model passes scale already rounded to the checkpoint dtype, 50.5 for bf16 C=2560;
//                 the product is computed in fp32 and rounded once)
//   gather_rows:  y[R,C] = x[rows[r]]                       (hidden rows at the scored positions)
//   scatter_rows: y[rows[r]] = src[r]                       (image soft-token merge; other rows of y
//                 untouched)
// Backward (`+=`, one rounding; the embedding table is frozen and gets none):
//   gather_rows:  dx[rows[r]] += dy[r]    (rows distinct, so no two threads add into one element)
//   scatter_rows: dsrc[r] += dy[rows[r]]
// Ids and rows are int32, checked in range on the host by the caller. The embedding kernel still
// refuses an id outside [0, V): it writes a NaN row, so a bug shows as NaN rather than a stray read.
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

static __global__ void embedding_forward_kernel(bf16 *y, const bf16 *E, const int32_t *ids, int64_t n, int C,
                                                int64_t V, float scale) {
    const int64_t total = n * C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = e / C;
        const int c = (int)(e % C);
        const int32_t id = ids[t];
        y[e] = (id >= 0 && id < V) ? to_bf16(ld_bf16(E + (int64_t)id * C + c) * scale) : to_bf16(nanf(""));
    }
}

// Copies R rows of C elements: y[dst row] = x[src row], where a NULL index means the identity.
static __global__ void copy_rows_kernel(bf16 *y, const bf16 *x, const int32_t *dst_rows, const int32_t *src_rows,
                                        int64_t R, int C) {
    const int64_t total = R * C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / C;
        const int c = (int)(e % C);
        const int64_t dst = dst_rows ? dst_rows[r] : r, src = src_rows ? src_rows[r] : r;
        y[dst * C + c] = x[src * C + c];
    }
}

// Adds R rows of C elements: y[dst row] += x[src row], where a NULL index means the identity.
static __global__ void accumulate_rows_kernel(bf16 *y, const bf16 *x, const int32_t *dst_rows, const int32_t *src_rows,
                                              int64_t R, int C) {
    const int64_t total = R * C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / C;
        const int c = (int)(e % C);
        const int64_t dst = dst_rows ? dst_rows[r] : r, src = src_rows ? src_rows[r] : r;
        y[dst * C + c] = to_bf16(ld_bf16(y + dst * C + c) + ld_bf16(x + src * C + c));
    }
}

static mg_status embedding_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *E, const int32_t *ids, int64_t n,
                                          int C, int64_t V, float scale) {
    const int threads = 256;
    embedding_forward_kernel<<<grid_stride_blocks(ctx, n * C, threads), threads, 0, ctx->stream>>>(y, E, ids, n, C, V,
                                                                                                   scale);
    MG_CUDA_LAUNCH_CHECK(embedding_forward_kernel);
    return MG_OK;
}

static mg_status copy_rows_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, const int32_t *dst_rows,
                                  const int32_t *src_rows, int64_t R, int C) {
    const int threads = 256;
    copy_rows_kernel<<<grid_stride_blocks(ctx, R * C, threads), threads, 0, ctx->stream>>>(y, x, dst_rows, src_rows, R,
                                                                                           C);
    MG_CUDA_LAUNCH_CHECK(copy_rows_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_embedding_forward(mg_cuda_ctx *ctx, void *y, const void *E, const int32_t *ids,
                                               int64_t n, int C, int64_t V, float scale) {
    if (n <= 0 || C <= 0 || V <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "embedding: n=%lld C=%d V=%lld must be positive", (long long)n, C,
                       (long long)V);
    return embedding_forward_launch(ctx, (bf16 *)y, (const bf16 *)E, ids, n, C, V, scale);
}

extern "C" mg_status mg_cuda_gather_rows_forward(mg_cuda_ctx *ctx, void *y, const void *x, const int32_t *rows,
                                                 int64_t R, int C) {
    if (R < 0 || C <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "gather_rows: R=%lld C=%d", (long long)R, C);
    if (R == 0) return MG_OK;  // nothing selected
    return copy_rows_launch(ctx, (bf16 *)y, (const bf16 *)x, NULL, rows, R, C);
}

extern "C" mg_status mg_cuda_scatter_rows_forward(mg_cuda_ctx *ctx, void *y, const void *src, const int32_t *rows,
                                                  int64_t R, int C) {
    if (R < 0 || C <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "scatter_rows: R=%lld C=%d", (long long)R, C);
    if (R == 0) return MG_OK;  // no image in the batch
    return copy_rows_launch(ctx, (bf16 *)y, (const bf16 *)src, rows, NULL, R, C);
}

static mg_status accumulate_rows_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, const int32_t *dst_rows,
                                        const int32_t *src_rows, int64_t R, int C) {
    const int threads = 256;
    accumulate_rows_kernel<<<grid_stride_blocks(ctx, R * C, threads), threads, 0, ctx->stream>>>(y, x, dst_rows,
                                                                                                 src_rows, R, C);
    MG_CUDA_LAUNCH_CHECK(accumulate_rows_kernel);
    return MG_OK;
}

extern "C" mg_status mg_cuda_gather_rows_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const int32_t *rows,
                                                  int64_t R, int C) {
    if (R < 0 || C <= 0) return mg_fail(MG_ERR_SHAPE, NULL, "gather_rows_backward: R=%lld C=%d", (long long)R, C);
    if (R == 0) return MG_OK;
    if (!dx || !dy || !rows) return mg_fail(MG_ERR_ARG, NULL, "gather_rows_backward: dx, dy and rows are required");
    return accumulate_rows_launch(ctx, (bf16 *)dx, (const bf16 *)dy, rows, NULL, R, C);
}

extern "C" mg_status mg_cuda_scatter_rows_backward(mg_cuda_ctx *ctx, void *dsrc, const void *dy, const int32_t *rows,
                                                   int64_t R, int C) {
    if (R < 0 || C <= 0) return mg_fail(MG_ERR_SHAPE, NULL, "scatter_rows_backward: R=%lld C=%d", (long long)R, C);
    if (R == 0) return MG_OK;
    if (!dsrc || !dy || !rows)
        return mg_fail(MG_ERR_ARG, NULL, "scatter_rows_backward: dsrc, dy and rows are required");
    return accumulate_rows_launch(ctx, (bf16 *)dsrc, (const bf16 *)dy, NULL, rows, R, C);
}
