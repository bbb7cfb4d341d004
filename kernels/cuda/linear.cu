// linear:          y[M,N] = x[M,K] · w[N,K]ᵀ (+ b[N]), all bf16 in memory, written with `=`.
// linear_gelu:     y[M,N] = gelu_tanh(x[M,K] · w[N,K]ᵀ (+ b[N]))  (SigLIP's fc1 and its activation)
// linear_residual: y[M,N] = r[M,N] + x[M,K] · w[N,K]ᵀ (+ b[N])  (SigLIP's out_proj / fc2 and the
//                  residual add after each); y may alias r.
// linear_backward: dx[M,K] += dy[M,N] · w[N,K]  (a frozen linear's input gradient; `+=`, one
//                  rounding of the fp32 sum with dx's old value; w gets no gradient)
// cuBLASLt does the work: fp32 compute, the bias (and GELU) applied in fp32 by the epilogue, one
// rounding to bf16 (what torch's F.linear does on bf16 CUDA tensors).
//
// CUBLASLT_EPILOGUE_GELU(_BIAS) is the tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x³))):
// cublasLt.h does not name the form, but torch's _addmm_activation(use_gelu=True) runs this
// epilogue and, where it cannot, applies at::gelu_(result, "tanh") instead; tests/gpu/test_cuda_ops
// checks it on a probe where the tanh and erf forms differ by 2-40% (x in [-5, -2]).
// linear_gelu drops one rounding that transformers' bf16 graph has: fc1's output is not rounded to
// bf16 before the activation (fp32 all the way to the single final rounding), so it is slightly
// closer to the fp32 model than torch's bf16 fc1 -> gelu.
// linear_residual is cuBLASLt's D = alpha·A·B + beta·C with beta = 1 and C = r in D's layout: the
// residual is read as bf16 and added in fp32 with the product and the bias, then one rounding.
// transformers rounds out_proj's / fc2's output to bf16 before the add; this does not. cublasLt.h
// names out-of-place results (D != C) as an algorithm capability
// (CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT), so in place (C = D, the model's use) is what every
// algorithm runs; a separate r is given only to an algorithm that reports the capability.
//
// cuBLASLt is column-major. Our row-major y[M,N] is the column-major matrix yᵀ (N×M, ld N), and
// yᵀ = w · xᵀ: A = w, row-major [N,K] = column-major K×N (ld K) used transposed; B = x, row-major
// [M,K] = column-major K×M (ld K) used as is; the bias is a vector over the N rows of yᵀ.
// linear_backward: dxᵀ (K×M, ld K) = w (column-major K×N, ld K) · dyᵀ (N×M, ld N), neither
// transposed, beta = 1 with C = D = dx.
//
// mg_cuda_gemm (cuda_common.cuh) is the one entry behind these and the LoRA GEMMs (lora.cu): any
// transposes, leading dimensions, alpha/beta, bf16 or fp32 output.
//
// Plans: describing a GEMM and asking the heuristic for an algorithm costs tens of microseconds of
// host time, as much as a small GEMM itself. A model runs a handful of shapes again and again, so
// the descriptors, layouts and chosen algorithm are kept per (transposes, m, n, k, leading
// dimensions, dtypes, epilogue, C operand (which says whether beta is 0), alignments) in a small
// table owned by the context (mg_gemm_plans); a steady-state call only sets the bias pointer and
// launches. When the table is full the oldest plan is replaced.
#include <stdlib.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ops.h"
}

// Distinct GEMMs kept. A forward uses about 12 (vision, projector, text, head); training adds per
// adapted shape the LoRA GEMMs (u, y, dB, du, dA) and per frozen linear its input gradient, about
// 60 more, and evaluation inside a training run its own M. A lookup scans the table (~1 µs at 256).
enum { N_PLANS = 256 };

// Where the C of D = alpha·A·B + beta·C comes from: not read (beta = 0; C = D is passed), the output
// itself (beta != 0, C = D: a residual or gradient updated in place), a separate matrix (beta != 0,
// C != D, which needs an algorithm with the out-of-place capability).
typedef enum { C_UNREAD, C_IN_PLACE, C_SEPARATE } c_operand;

// What makes two GEMMs share a plan: everything the descriptors and layouts hold, the C operand
// and the pointer alignments the heuristic was told about (an algorithm chosen for 256-byte aligned
// buffers may not run on less).
typedef struct {
    bool trans_a, trans_b;
    int64_t m, n, k, lda, ldb, ldd;
    cudaDataType_t type_a, type_b, type_d;
    cublasLtEpilogue_t epi;  // DEFAULT, BIAS, GELU or GELU_BIAS
    c_operand c;
    uint32_t align_a, align_b, align_c, align_d;  // align_c = align_d unless c is C_SEPARATE
} plan_key;

// One described GEMM and the algorithm the heuristic picked for it.
typedef struct {
    plan_key key;
    int used;  // 0: empty slot
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;  // c describes both C and D
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

struct mg_gemm_plans {
    gemm_plan plan[N_PLANS];
    int next;  // slot the next new plan takes once the table is full (round robin)
};

static void plan_release(gemm_plan *p) {
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    *p = gemm_plan{};
}

mg_status mg_cuda_gemm_plans_create(mg_cuda_ctx *ctx) {
    ctx->gemm_plans = (mg_gemm_plans *)calloc(1, sizeof(mg_gemm_plans));
    return ctx->gemm_plans ? MG_OK : mg_fail(MG_ERR_OOM, NULL, "cuBLASLt plan table");
}

void mg_cuda_gemm_plans_destroy(mg_cuda_ctx *ctx) {
    if (!ctx->gemm_plans) return;
    for (int i = 0; i < N_PLANS; i++) plan_release(&ctx->gemm_plans->plan[i]);
    free(ctx->gemm_plans);
    ctx->gemm_plans = NULL;
}

// The largest power of two (up to 256) dividing the address: cuBLASLt's heuristic assumes 256-byte
// aligned buffers unless told otherwise, and views into arenas (row offsets) are often less aligned.
static uint32_t pointer_alignment(const void *p) {
    uint32_t align = 256;
    while (align > 1 && (uintptr_t)p % align != 0) align /= 2;
    return align;
}

static bool has_bias(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_BIAS; }
static bool has_gelu(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_GELU || e == CUBLASLT_EPILOGUE_GELU_BIAS; }

static bool same_key(const plan_key *a, const plan_key *b) {
    return a->trans_a == b->trans_a && a->trans_b == b->trans_b && a->m == b->m && a->n == b->n && a->k == b->k &&
           a->lda == b->lda && a->ldb == b->ldb && a->ldd == b->ldd && a->type_a == b->type_a &&
           a->type_b == b->type_b && a->type_d == b->type_d && a->epi == b->epi && a->c == b->c &&
           a->align_a == b->align_a && a->align_b == b->align_b && a->align_c == b->align_c &&
           a->align_d == b->align_d;
}

// Whether `algo` can run a GEMM with this C operand: only C_SEPARATE needs a capability.
static bool algo_takes_c(const cublasLtMatmulAlgo_t *algo, c_operand c) {
    if (c != C_SEPARATE) return true;
    int32_t out_of_place = 0;
    size_t written = 0;
    return cublasLtMatmulAlgoCapGetAttribute(algo, CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT, &out_of_place,
                                             sizeof out_of_place, &written) == CUBLAS_STATUS_SUCCESS &&
           out_of_place != 0;
}

static const char *type_name(cudaDataType_t t) { return t == CUDA_R_16BF ? "bf16" : t == CUDA_R_32F ? "fp32" : "?"; }

// Describes the GEMM of `key` into p and asks the heuristic for its algorithm. On failure p is
// left partly built; the caller releases it.
static mg_status plan_build(mg_cuda_ctx *ctx, gemm_plan *p, const plan_key *key) {
    p->key = *key;
    MG_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = key->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = key->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    MG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    MG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (key->epi != CUBLASLT_EPILOGUE_DEFAULT)
        MG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &key->epi, sizeof key->epi));
    if (has_bias(key->epi)) {
        const cudaDataType_t bias_type = CUDA_R_16BF;
        MG_CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
    }
    // Stored shapes (column-major): op(A) is m×k, so A is k×m when transposed; op(B) is k×n.
    const uint64_t m = (uint64_t)key->m, n = (uint64_t)key->n, k = (uint64_t)key->k;
    MG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, key->type_a, key->trans_a ? k : m, key->trans_a ? m : k, key->lda));
    MG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, key->type_b, key->trans_b ? n : k, key->trans_b ? k : n, key->ldb));
    MG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, key->type_d, m, n, key->ldd));

    // The preference only feeds the heuristic; it is not needed afterwards.
    cublasLtMatmulPreference_t pref = NULL;
    MG_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = ctx->lt_workspace_bytes;
    const cublasLtMatmulPreferenceAttributes_t attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const uint32_t align[4] = {key->align_a, key->align_b, key->align_c, key->align_d};
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                             sizeof ws);
    for (int i = 0; i < 4 && st == CUBLAS_STATUS_SUCCESS; i++)
        st = cublasLtMatmulPreferenceSetAttribute(pref, attr[i], &align[i], sizeof align[i]);
    // The best algorithm, or for a separate C the best of a few that takes one.
    enum { N_CANDIDATES = 8 };
    cublasLtMatmulHeuristicResult_t heur[N_CANDIDATES];
    int found = 0, pick = -1;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(ctx->lt, p->op, p->a, p->b, p->c, p->c, pref,
                                            key->c == C_SEPARATE ? N_CANDIDATES : 1, heur, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    MG_CUBLAS_CHECK(st);
    for (int i = 0; i < found && pick < 0; i++)
        if (algo_takes_c(&heur[i].algo, key->c)) pick = i;
    if (pick < 0)
        return mg_fail(MG_ERR_UNSUPPORTED,
                       key->c == C_SEPARATE ? "write the result over the residual (y == r)"
                                            : "report the shape; a separate bias kernel or padding K/N would avoid it",
                       "cuBLASLt has no algorithm for the GEMM m=%lld n=%lld k=%lld (A %s%s, B %s%s, D %s, ld %lld/%lld/%lld)%s%s%s",
                       (long long)key->m, (long long)key->n, (long long)key->k, type_name(key->type_a),
                       key->trans_a ? "ᵀ" : "", type_name(key->type_b), key->trans_b ? "ᵀ" : "",
                       type_name(key->type_d), (long long)key->lda, (long long)key->ldb, (long long)key->ldd,
                       has_bias(key->epi) ? " with bias" : "", has_gelu(key->epi) ? " and GELU" : "",
                       key->c == C_SEPARATE ? " adding a C other than its output" : "");
    p->algo = heur[pick].algo;
    p->used = 1;
    return MG_OK;
}

// The plan for `key`: found in the table, or built into a free (or the oldest) slot.
static mg_status plan_get(mg_cuda_ctx *ctx, const plan_key *key, gemm_plan **out) {
    mg_gemm_plans *t = ctx->gemm_plans;
    for (int i = 0; i < N_PLANS; i++)
        if (t->plan[i].used && same_key(&t->plan[i].key, key)) {
            *out = &t->plan[i];
            return MG_OK;
        }
    int slot = -1;
    for (int i = 0; i < N_PLANS && slot < 0; i++)
        if (!t->plan[i].used) slot = i;
    if (slot < 0) {
        slot = t->next;
        t->next = (t->next + 1) % N_PLANS;
    }
    gemm_plan *p = &t->plan[slot];
    plan_release(p);
    const mg_status s = plan_build(ctx, p, key);
    if (s != MG_OK) {
        plan_release(p);
        return s;
    }
    *out = p;
    return MG_OK;
}

// The launcher of every GEMM: takes the plan, points the epilogue at this call's bias, runs it on
// the stream. The callers have checked the shapes; a bias goes only with a bf16 output.
mg_status mg_cuda_gemm(mg_cuda_ctx *ctx, const mg_gemm *g) {
    const cublasLtEpilogue_t epi = g->gelu ? (g->bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                                           : (g->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
    const bool reads_c = g->beta != 0.0f;
    const void *c = reads_c && g->c ? g->c : g->d;
    const plan_key key = {g->trans_a, g->trans_b, g->m, g->n, g->k, g->lda, g->ldb, g->ldd,
                          g->type_a, g->type_b, g->type_d, epi,
                          !reads_c ? C_UNREAD : c == g->d ? C_IN_PLACE : C_SEPARATE,
                          pointer_alignment(g->a), pointer_alignment(g->b), pointer_alignment(c),
                          pointer_alignment(g->d)};
    gemm_plan *p = NULL;
    MG_TRY(plan_get(ctx, &key, &p));
    // cublasLtMatmul reads the descriptor when it is called, so resetting the pointer for the next
    // call does not disturb a queued one.
    if (g->bias)
        MG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias));
    const float alpha = g->alpha, beta = g->beta;
    MG_CUBLAS_CHECK(cublasLtMatmul(ctx->lt, p->op, &alpha, g->a, p->a, g->b, p->b, &beta, c, p->c, g->d, p->c, &p->algo,
                                   ctx->lt_workspace, ctx->lt_workspace_bytes, ctx->stream));
    return MG_OK;
}

// The forward launcher: y = [r +] act(x·wᵀ + b) as the GEMM yᵀ = w·xᵀ (see the top comment).
// r: the residual to add (beta = 1), or NULL (beta = 0, C not read).
static mg_status linear_forward_launch(mg_cuda_ctx *ctx, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *b,
                                       const bf16 *r, int64_t M, int K, int N, bool gelu) {
    mg_gemm g = {};
    g.trans_a = true, g.trans_b = false;
    g.m = N, g.n = M, g.k = K;
    g.a = w, g.lda = K, g.type_a = CUDA_R_16BF;
    g.b = x, g.ldb = K, g.type_b = CUDA_R_16BF;
    g.d = y, g.ldd = N, g.type_d = CUDA_R_16BF;
    g.c = r, g.alpha = 1.0f, g.beta = r ? 1.0f : 0.0f;
    g.bias = b, g.gelu = gelu;
    return mg_cuda_gemm(ctx, &g);
}

// dxᵀ (K×M) += w (K×N, column-major view of w[N,K]) · dyᵀ (N×M), in place.
static mg_status linear_backward_launch(mg_cuda_ctx *ctx, bf16 *dx, const bf16 *dy, const bf16 *w, int64_t M, int K,
                                        int N) {
    mg_gemm g = {};
    g.trans_a = false, g.trans_b = false;
    g.m = K, g.n = M, g.k = N;
    g.a = w, g.lda = K, g.type_a = CUDA_R_16BF;
    g.b = dy, g.ldb = N, g.type_b = CUDA_R_16BF;
    g.d = dx, g.ldd = K, g.type_d = CUDA_R_16BF;
    g.c = dx, g.alpha = 1.0f, g.beta = 1.0f;
    return mg_cuda_gemm(ctx, &g);
}


// M = 0 (no rows: an empty logit head) is valid and does no work, as on the CPU; the entries
// return before the launch, since cuBLASLt rejects a zero-sized layout.
static mg_status linear_check(const char *op, const void *y, const void *x, const void *w, int64_t M, int K, int N) {
    if (M < 0 || K <= 0 || N <= 0)
        return mg_fail(MG_ERR_SHAPE, NULL, "%s: M=%lld K=%d N=%d: M must be >= 0, K and N positive", op,
                       (long long)M, K, N);
    if (M > 0 && (!y || !x || !w)) return mg_fail(MG_ERR_ARG, NULL, "%s: y, x and w must be device pointers", op);
    return MG_OK;
}

extern "C" mg_status mg_cuda_linear_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w, const void *b,
                                            int64_t M, int K, int N) {
    MG_TRY(linear_check("linear", y, x, w, M, K, N));
    if (M == 0) return MG_OK;
    return linear_forward_launch(ctx, (bf16 *)y, (const bf16 *)x, (const bf16 *)w, (const bf16 *)b, NULL, M, K, N,
                                 false);
}

extern "C" mg_status mg_cuda_linear_gelu_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w,
                                                 const void *b, int64_t M, int K, int N) {
    MG_TRY(linear_check("linear_gelu", y, x, w, M, K, N));
    if (M == 0) return MG_OK;
    return linear_forward_launch(ctx, (bf16 *)y, (const bf16 *)x, (const bf16 *)w, (const bf16 *)b, NULL, M, K, N,
                                 true);
}

extern "C" mg_status mg_cuda_linear_residual_forward(mg_cuda_ctx *ctx, void *y, const void *x, const void *w,
                                                     const void *b, const void *r, int64_t M, int K, int N) {
    MG_TRY(linear_check("linear_residual", y, x, w, M, K, N));
    if (M == 0) return MG_OK;
    if (!r) return mg_fail(MG_ERR_ARG, NULL, "linear_residual: r must be a device pointer (y may alias it)");
    return linear_forward_launch(ctx, (bf16 *)y, (const bf16 *)x, (const bf16 *)w, (const bf16 *)b, (const bf16 *)r,
                                 M, K, N, false);
}

extern "C" mg_status mg_cuda_linear_backward(mg_cuda_ctx *ctx, void *dx, const void *dy, const void *w, int64_t M,
                                             int K, int N) {
    MG_TRY(linear_check("linear_backward", dx, dy, w, M, K, N));
    if (M == 0) return MG_OK;
    return linear_backward_launch(ctx, (bf16 *)dx, (const bf16 *)dy, (const bf16 *)w, M, K, N);
}
