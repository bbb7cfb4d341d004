// linear: y[M,N] = x[M,K] · w[N,K]ᵀ (+ b[N]), all bf16 in memory, written with `=`.
// cuBLASLt does the work: fp32 compute, the bias added in fp32 by the epilogue, one rounding to
// bf16 (what torch's F.linear does on bf16 CUDA tensors).
//
// cuBLASLt is column-major. Our row-major y[M,N] is the column-major matrix yᵀ (N×M, ld N), and
// yᵀ = w · xᵀ: A = w, row-major [N,K] = column-major K×N (ld K) used transposed; B = x, row-major
// [M,K] = column-major K×M (ld K) used as is; the bias is a vector over the N rows of yᵀ.
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// The descriptors of one GEMM; destroyed together whatever happened.
typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulPreference_t pref;
} linear_descs;

static void linear_descs_destroy(linear_descs *d) {
    if (d->pref) cublasLtMatmulPreferenceDestroy(d->pref);
    if (d->c) cublasLtMatrixLayoutDestroy(d->c);
    if (d->b) cublasLtMatrixLayoutDestroy(d->b);
    if (d->a) cublasLtMatrixLayoutDestroy(d->a);
    if (d->op) cublasLtMatmulDescDestroy(d->op);
}

// The largest power of two (up to 256) dividing the address: cuBLASLt's heuristic assumes 256-byte
// aligned buffers unless told otherwise, and views into arenas (row offsets) are often less aligned.
static uint32_t pointer_alignment(const void *p) {
    uint32_t align = 256;
    while (align > 1 && (uintptr_t)p % align != 0) align /= 2;
    return align;
}

// The launcher: describes the GEMM, asks the heuristic for one algorithm, runs it on the stream.
static mg_status linear_forward_launch(mg_cuda_ctx *ctx, linear_descs *d, bf16 *y, const bf16 *x, const bf16 *w,
                                       const bf16 *b, int64_t M, int K, int N) {
    MG_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
    MG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans));
    MG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans, sizeof no_trans));
    if (b) {
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        const cudaDataType_t bias_type = CUDA_R_16BF;
        MG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        MG_CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
        MG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b));
    }
    MG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d->a, CUDA_R_16BF, (uint64_t)K, (uint64_t)N, K));  // w: K×N
    MG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d->b, CUDA_R_16BF, (uint64_t)K, (uint64_t)M, K));  // x: K×M
    MG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d->c, CUDA_R_16BF, (uint64_t)N, (uint64_t)M, N));  // y: N×M

    MG_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d->pref));
    const size_t ws = ctx->lt_workspace_bytes;
    MG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                         sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const void *align_ptr[4] = {w, x, y, y};
    for (int i = 0; i < 4; i++) {
        const uint32_t align = pointer_alignment(align_ptr[i]);
        MG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d->pref, align_attr[i], &align, sizeof align));
    }
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    MG_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx->lt, d->op, d->a, d->b, d->c, d->c, d->pref, 1, &heur, &found));
    if (found == 0)
        return mg_fail(MG_ERR_UNSUPPORTED, "report the shape; a separate bias kernel or padding K/N would avoid it",
                       "cuBLASLt has no bf16 algorithm for linear M=%lld K=%d N=%d%s", (long long)M, K, N,
                       b ? " with bias" : "");

    const float alpha = 1.0f, beta = 0.0f;
    MG_CUBLAS_CHECK(cublasLtMatmul(ctx->lt, d->op, &alpha, w, d->a, x, d->b, &beta, y, d->c, y, d->c, &heur.algo,
                                   ctx->lt_workspace, ws, ctx->stream));
    return MG_OK;
}

extern "C" mg_status mg_cuda_linear_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b,
                                            int64_t M, int K, int N) {
    if (M <= 0 || K <= 0 || N <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "linear: M=%lld K=%d N=%d must all be positive", (long long)M, K, N);
    if (!y || !x || !w) return mg_fail(MG_ERR_ARG, NULL, "linear: y, x and w must be device pointers");
    linear_descs d = {};
    mg_status s = linear_forward_launch(ctx, &d, (bf16 *)y, (const bf16 *)x, (const bf16 *)w, (const bf16 *)b, M, K, N);
    linear_descs_destroy(&d);
    return s;
}
