// The CUDA backend (engine/backend.h): bf16 activations and weights on one GPU, the mg_cuda_* ops
// of kernels/cuda/ops.h behind the mg_backend table.
//
// Errors: the table's op and copy entries return void, the mg_cuda_* entries an mg_status. Each
// wrapper records the first failing status with its message (later calls overwrite
// mg_last_error) and skips the ops after it, which would only compute on garbage; `sync` waits
// for the stream and hands the recorded failure back.
//
// Profiling: with MG_PROFILE=1 in the environment every op entry is bracketed by CUDA events and
// the GPU time per entry (attention and linear also per shape) is printed to stderr when the
// backend is destroyed, longest first, each entry's first call apart (one-time costs). The events
// cost a little; off by default.
//
// Conversions: fp32/f16 data (the checkpoint's tensors, each forward's pixels) are rounded to bf16
// on the host by several threads (mg_to_bf16), a chunk at a time into one of two pinned staging
// buffers; the chunk's copy to the device is queued on the stream and the next chunk is converted
// into the other buffer meanwhile (an event per buffer says when its copy has read it). bf16 goes
// over PCIe, half the bytes of fp32, and an upload returns once its last chunk is queued. bf16
// tensors are copied as they are. Downloads come back through the staging memory (synchronously)
// and widen to fp32 on the host.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "engine/backend.h"
#include "engine/dtype.h"
#include "engine/oom.h"
#include "kernels/cuda/ops.h"
}

// 8 Mi bf16 elements = 16 MiB of pinned host memory, two halves of 8 MiB: large enough that the
// copies run near PCIe speed, small enough to pin on any machine.
static const int64_t STAGING_ELEMS = (int64_t)8 << 20;
static const int64_t CHUNK_ELEMS = STAGING_ELEMS / 2;

// GPU time of one backend entry (and shape key), summed over the calls (MG_PROFILE=1). The first
// call is kept apart: it carries one-time costs (a GEMM plan built, a kernel's module loaded, the
// host work before it while the GPU waits) that are not what a steady-state call costs.
typedef struct {
    const char *name;
    long long key;          // a shape key for entries worth telling apart (attention T*1000+D, linear N*100000+K)
    double ms;              // the calls after the first
    double first_ms;        // the first call
    long long calls;        // every call, the first included
} prof_row;

enum { PROF_ROWS = 128, PROF_PENDING = 1024 };

typedef struct {
    prof_row rows[PROF_ROWS];
    int n_rows;
    cudaEvent_t start[PROF_PENDING], end[PROF_PENDING];
    int row_of[PROF_PENDING];  // the row each pending event pair adds to
    bool first[PROF_PENDING];  // whether that pair is the row's first call
    int n_pending;
} profile;

typedef struct {
    mg_backend be;          // the table handed out; be.ctx points back at this struct
    mg_cuda_ctx cuda;
    mg_status first;        // first failure since the last sync, MG_OK when none
    char first_msg[2048];   // its message
    uint16_t *staging;      // (STAGING_ELEMS) pinned host memory: two upload buffers of CHUNK_ELEMS, or one download buffer
    cudaEvent_t copied[2];  // recorded after the queued copy out of upload buffer i; NULL until created
    profile *prof;          // MG_PROFILE=1: per-entry GPU times; NULL otherwise
} cuda_backend;

static cuda_backend *cb(void *ctx) { return (cuda_backend *)ctx; }

// Keeps the first failure; false once one is recorded, so callers skip the work after it.
static bool record(cuda_backend *c, mg_status s) {
    if (s != MG_OK && c->first == MG_OK) {
        c->first = s;
        snprintf(c->first_msg, sizeof c->first_msg, "%s", mg_last_error());
    }
    return c->first == MG_OK;
}

// ---- memory ----------------------------------------------------------------------------------

static void *cuda_be_alloc(void *ctx, size_t nbytes) {
    void *p = NULL;
    // A failed allocation is reported by the caller (NULL), which knows what the memory was for
    // (mg_fail_oom). Clear the runtime's error so that the next launch check does not report it again.
    if (mg_cuda_alloc(&cb(ctx)->cuda, &p, nbytes ? nbytes : 1) != MG_OK) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_be_free(void *ctx, void *p) {
    (void)ctx;
    mg_cuda_free(p);
}

// Chunk i is converted into buffer i % 2 once the copy queued from it two chunks ago has run,
// then its copy is queued; the conversion of chunk i+1 overlaps the copy of chunk i.
static mg_status upload_converted(cuda_backend *c, uint16_t *dst, const void *src, mg_dtype src_dtype, int64_t n) {
    const size_t es = mg_dtype_size(src_dtype);
    for (int64_t i = 0, chunk = 0; i < n; i += CHUNK_ELEMS, chunk++) {
        const int64_t m = n - i < CHUNK_ELEMS ? n - i : CHUNK_ELEMS;
        const int k = (int)(chunk % 2);
        uint16_t *buf = c->staging + k * CHUNK_ELEMS;
        MG_CUDA_CHECK(cudaEventSynchronize(c->copied[k]));
        mg_to_bf16(buf, (const char *)src + (size_t)i * es, src_dtype, (size_t)m);  // nearest even, like .to(bf16)
        MG_CUDA_CHECK(cudaMemcpyAsync(dst + i, buf, (size_t)m * sizeof(uint16_t), cudaMemcpyHostToDevice,
                                      c->cuda.stream));
        MG_CUDA_CHECK(cudaEventRecord(c->copied[k], c->cuda.stream));
    }
    return MG_OK;
}

static void cuda_be_upload(void *ctx, void *dst, const void *src, mg_dtype src_dtype, int64_t n) {
    cuda_backend *c = cb(ctx);
    if (c->first != MG_OK || n <= 0) return;
    if (src_dtype == MG_BF16) record(c, mg_cuda_upload(&c->cuda, dst, src, (size_t)n * sizeof(uint16_t)));
    else record(c, upload_converted(c, (uint16_t *)dst, src, src_dtype, n));
}

// The copy into the staging memory is queued after every earlier upload's copies out of it, and
// mg_cuda_download waits for it, so the buffers are free again when this returns.
static mg_status download_widened(cuda_backend *c, float *dst, const uint16_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i += STAGING_ELEMS) {
        const int64_t m = n - i < STAGING_ELEMS ? n - i : STAGING_ELEMS;
        MG_TRY(mg_cuda_download(&c->cuda, c->staging, src + i, (size_t)m * sizeof(uint16_t)));
        for (int64_t j = 0; j < m; j++) dst[i + j] = mg_bf16_to_f32(c->staging[j]);
    }
    return MG_OK;
}

static void cuda_be_download(void *ctx, float *dst, const void *src, int64_t n) {
    cuda_backend *c = cb(ctx);
    if (c->first != MG_OK || n <= 0) return;
    record(c, download_widened(c, dst, (const uint16_t *)src, n));
}

static void cuda_be_copy_in(void *ctx, void *dst, const void *src, size_t nbytes) {
    cuda_backend *c = cb(ctx);
    if (c->first != MG_OK || nbytes == 0) return;
    record(c, mg_cuda_upload(&c->cuda, dst, src, nbytes));
}

static void cuda_be_copy_out(void *ctx, void *dst, const void *src, size_t nbytes) {
    cuda_backend *c = cb(ctx);
    if (c->first != MG_OK || nbytes == 0) return;
    record(c, mg_cuda_download(&c->cuda, dst, src, nbytes));  // queued after the ops, then waited for
}

static void cuda_be_copy(void *ctx, void *dst, const void *src, size_t nbytes) {
    cuda_backend *c = cb(ctx);
    if (c->first != MG_OK || nbytes == 0) return;
    record(c, mg_cuda_copy(&c->cuda, dst, src, nbytes));
}

static void cuda_be_zero(void *ctx, void *dst, size_t nbytes) {
    cuda_backend *c = cb(ctx);
    if (c->first != MG_OK || nbytes == 0) return;
    record(c, mg_cuda_zero(&c->cuda, dst, nbytes));
}

// The current device is per host thread: a model created on device N and driven from another
// thread must select N there first (the C API calls this at the start of each call).
static mg_status cuda_be_bind(void *ctx) {
    MG_CUDA_CHECK(cudaSetDevice(cb(ctx)->cuda.device));
    return MG_OK;
}

static mg_status cuda_be_sync(void *ctx) {
    cuda_backend *c = cb(ctx);
    record(c, mg_cuda_sync(&c->cuda));
    const mg_status s = c->first;
    c->first = MG_OK;
    if (s != MG_OK) mg_fail(s, NULL, "%s", c->first_msg);  // the saved message already ends in its HINT
    return s;
}

// ---- profiling (MG_PROFILE=1) ---------------------------------------------------------------

// Adds the elapsed times of the pending event pairs to their rows.
static void prof_flush(profile *p) {
    if (!p->n_pending) return;
    cudaEventSynchronize(p->end[p->n_pending - 1]);
    for (int i = 0; i < p->n_pending; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, p->start[i], p->end[i]) != cudaSuccess) continue;
        prof_row *row = &p->rows[p->row_of[i]];
        if (p->first[i]) row->first_ms += ms;
        else row->ms += ms;
    }
    p->n_pending = 0;
}

// Records the start event of one entry's call; returns its pending slot, or -1 when not profiling.
static int prof_begin(cuda_backend *c, const char *name, long long key) {
    profile *p = c->prof;
    if (!p) return -1;
    int r = 0;
    while (r < p->n_rows && (p->rows[r].name != name || p->rows[r].key != key)) r++;
    if (r == p->n_rows) {
        if (r == PROF_ROWS) return -1;
        p->rows[p->n_rows++] = prof_row{ name, key, 0.0, 0.0, 0 };
    }
    if (p->n_pending == PROF_PENDING) prof_flush(p);
    const int i = p->n_pending++;
    p->row_of[i] = r;
    p->first[i] = p->rows[r].calls == 0;
    p->rows[r].calls++;
    cudaEventRecord(p->start[i], c->cuda.stream);
    return i;
}

static void prof_end(cuda_backend *c, int i) {
    if (i >= 0) cudaEventRecord(c->prof->end[i], c->cuda.stream);
}

static int prof_cmp(const void *a, const void *b) {
    const double x = ((const prof_row *)a)->ms, y = ((const prof_row *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void prof_report(profile *p) {
    prof_flush(p);
    qsort(p->rows, (size_t)p->n_rows, sizeof p->rows[0], prof_cmp);
    double total = 0, first = 0;
    for (int r = 0; r < p->n_rows; r++) total += p->rows[r].ms, first += p->rows[r].first_ms;
    fprintf(stderr, "MG_PROFILE: GPU time per backend entry over the calls after each entry's first "
                    "(%.1f ms in all; the first calls, apart: %.1f ms)\n", total, first);
    for (int r = 0; r < p->n_rows; r++)
        fprintf(stderr, "  %-24s key %-12lld %10.2f ms %5.1f%% %8lld calls (first %.2f ms)\n", p->rows[r].name,
                p->rows[r].key, p->rows[r].ms, 100 * p->rows[r].ms / (total > 0 ? total : 1), p->rows[r].calls - 1,
                p->rows[r].first_ms);
}

// ---- ops: each wrapper skips its work after a failure and records its own ----------------------

#define OPK(call, key)                                      \
    do {                                                    \
        cuda_backend *c_ = cb(ctx);                         \
        if (c_->first != MG_OK) break;                      \
        const int p_ = prof_begin(c_, __func__, (key));     \
        record(c_, call);                                   \
        prof_end(c_, p_);                                   \
    } while (0)
#define OP(call) OPK(call, 0)
#define CTX (&cb(ctx)->cuda)

static void linear(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K, int N) {
    OPK(mg_cuda_linear_forward(CTX, y, x, w, b, M, K, N), (long long)N * 100000 + K);
}
static void linear_gelu(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K, int N) {
    OP(mg_cuda_linear_gelu_forward(CTX, y, x, w, b, M, K, N));
}
static void linear_residual(void *ctx, void *y, const void *x, const void *w, const void *b, const void *r, int64_t M,
                            int K, int N) {
    OP(mg_cuda_linear_residual_forward(CTX, y, x, w, b, r, M, K, N));
}
static void im2col(void *ctx, void *cols, const void *pixels, int64_t B, int S, int p) {
    OP(mg_cuda_im2col_forward(CTX, cols, pixels, B, S, p));
}
static void add_rows(void *ctx, void *x, const void *pos, int64_t B, int64_t P, int C) {
    OP(mg_cuda_add_rows_forward(CTX, x, pos, B, P, C));
}
static void add(void *ctx, void *y, const void *a, const void *b, int64_t n) { OP(mg_cuda_add_forward(CTX, y, a, b, n)); }
static void layernorm(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int C, float eps) {
    OP(mg_cuda_layernorm_forward(CTX, y, x, w, b, M, C, eps));
}
static void rmsnorm(void *ctx, void *y, const void *x, const void *w, int64_t M, int C, float eps) {
    OP(mg_cuda_rmsnorm_forward(CTX, y, x, w, M, C, eps));
}
static void rmsnorm_add(void *ctx, void *h, const void *residual, const void *x, const void *w, int64_t M, int C,
                        float eps) {
    OP(mg_cuda_rmsnorm_add_forward(CTX, h, residual, x, w, M, C, eps));
}
static void qk_norm_rope(void *ctx, void *q, void *k, void *v, const void *qkv, const mg_qkv_args *a) {
    OP(mg_cuda_qk_norm_rope_forward(CTX, q, k, v, qkv, a));
}
static void attention(void *ctx, void *out, const void *q, const void *k, const void *v, const mg_attention_args *a) {
    OPK(mg_cuda_attention_forward(CTX, out, q, k, v, a), a->T * 1000 + a->D);
}
static void attention_bwd(void *ctx, void *dq, void *dk, void *dv, const void *dout, const void *q, const void *k,
                          const void *v, const void *out, const mg_attention_args *a) {
    OPK(mg_cuda_attention_backward(CTX, dq, dk, dv, dout, q, k, v, out, a), a->T * 1000 + a->D);
}
static void attention_decode(void *ctx, void *out, const void *q, const void *kc, const void *vc,
                             const mg_decode_args *a) {
    OP(mg_cuda_attention_decode_forward(CTX, out, q, kc, vc, a));
}
static void gelu(void *ctx, void *y, const void *x, int64_t n) { OP(mg_cuda_gelu_forward(CTX, y, x, n)); }
static void geglu(void *ctx, void *y, const void *gu, int64_t M, int F) { OP(mg_cuda_geglu_forward(CTX, y, gu, M, F)); }
static void avgpool(void *ctx, void *y, const void *x, int64_t B, int G, int k, int C) {
    OP(mg_cuda_avgpool_forward(CTX, y, x, B, G, k, C));
}
static void embedding(void *ctx, void *y, const void *E, const int32_t *ids, int64_t n, int C, int64_t V,
                      float scale) {
    OP(mg_cuda_embedding_forward(CTX, y, E, ids, n, C, V, scale));
}
static void gather_rows(void *ctx, void *y, const void *x, const int32_t *rows, int64_t R, int C) {
    OP(mg_cuda_gather_rows_forward(CTX, y, x, rows, R, C));
}
static void scatter_rows(void *ctx, void *y, const void *src, const int32_t *rows, int64_t R, int C) {
    OP(mg_cuda_scatter_rows_forward(CTX, y, src, rows, R, C));
}

static void lora(void *ctx, void *y, void *u, const void *x, const void *A, const void *B, const mg_lora_args *a) {
    OPK(mg_cuda_lora_forward(CTX, y, u, x, A, B, a), (long long)a->N * 100000 + a->K);
}

// ---- training ----------------------------------------------------------------------------------

static void linear_bw(void *ctx, void *dx, const void *dy, const void *w, int64_t M, int K, int N) {
    OPK(mg_cuda_linear_backward(CTX, dx, dy, w, M, K, N), (long long)N * 100000 + K);
}
static void lora_bw(void *ctx, void *dx, float *dA, float *dB, float *du, const void *dy, const void *x,
                    const void *u, const void *A, const void *B, const mg_lora_args *a) {
    OPK(mg_cuda_lora_backward(CTX, dx, dA, dB, du, dy, x, u, A, B, a), (long long)a->N * 100000 + a->K);
}
static void gelu_bw(void *ctx, void *dx, const void *dy, const void *x, int64_t n) {
    OP(mg_cuda_gelu_backward(CTX, dx, dy, x, n));
}
static void geglu_bw(void *ctx, void *dgu, const void *dy, const void *gu, int64_t M, int F) {
    OP(mg_cuda_geglu_backward(CTX, dgu, dy, gu, M, F));
}
static void layernorm_bw(void *ctx, void *dx, const void *dy, const void *x, const void *w, int64_t M, int C,
                         float eps) {
    OP(mg_cuda_layernorm_backward(CTX, dx, dy, x, w, M, C, eps));
}
static void rmsnorm_bw(void *ctx, void *dx, const void *dy, const void *x, const void *w, int64_t M, int C, float eps) {
    OP(mg_cuda_rmsnorm_backward(CTX, dx, dy, x, w, M, C, eps));
}
static void qk_norm_rope_bw(void *ctx, void *dqkv, const void *dq, const void *dk, const void *dv, const void *qkv,
                            const mg_qkv_args *a) {
    OP(mg_cuda_qk_norm_rope_backward(CTX, dqkv, dq, dk, dv, qkv, a));
}
static void avgpool_bw(void *ctx, void *dx, const void *dy, int64_t B, int G, int k, int C) {
    OP(mg_cuda_avgpool_backward(CTX, dx, dy, B, G, k, C));
}
static void gather_rows_bw(void *ctx, void *dx, const void *dy, const int32_t *rows, int64_t R, int C) {
    OP(mg_cuda_gather_rows_backward(CTX, dx, dy, rows, R, C));
}
static void scatter_rows_bw(void *ctx, void *dsrc, const void *dy, const int32_t *rows, int64_t R, int C) {
    OP(mg_cuda_scatter_rows_backward(CTX, dsrc, dy, rows, R, C));
}
static void cross_entropy_bw(void *ctx, void *dlogits, float *loss, const void *logits, const int32_t *targets,
                             int64_t R, int V, float grad_scale) {
    OP(mg_cuda_cross_entropy_backward(CTX, dlogits, loss, logits, targets, R, V, grad_scale));
}
static void sumsq(void *ctx, float *out, const float *x, int64_t n) { OP(mg_cuda_sumsq(CTX, out, x, n)); }
static void adamw_step(void *ctx, float *param, const float *grad, float *m, float *v, void *param_act,
                       const mg_adamw_args *a) {
    OP(mg_cuda_adamw_step(CTX, param, grad, m, v, param_act, a));
}

#undef OP
#undef CTX

// ---- lifetime ----------------------------------------------------------------------------------

extern "C" void mg_backend_cuda_destroy(const mg_backend *be) {
    if (!be) return;
    cuda_backend *c = cb(be->ctx);
    if (c->cuda.stream) cudaStreamSynchronize(c->cuda.stream);  // no copy still reading the staging memory
    if (c->prof) {
        prof_report(c->prof);
        for (int i = 0; i < PROF_PENDING; i++) cudaEventDestroy(c->prof->start[i]), cudaEventDestroy(c->prof->end[i]);
        free(c->prof);
    }
    for (int k = 0; k < 2; k++)
        if (c->copied[k]) cudaEventDestroy(c->copied[k]);
    if (c->staging) cudaFreeHost(c->staging);
    mg_cuda_ctx_destroy(&c->cuda);
    free(c);
}

static mg_status pin_staging(cuda_backend *c) {
    void *p = NULL;
    const size_t bytes = (size_t)STAGING_ELEMS * sizeof(uint16_t);
    const cudaError_t e = cudaMallocHost(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {  // pinned host memory, not the GPU's: say so
        cudaGetLastError();
        mg_mem_info mi;
        mg_host_mem(&mi);
        char msg[1024];
        return mg_fail(MG_ERR_OOM, "free host memory", "%s",
                       mg_oom_describe(msg, sizeof msg, bytes, "the pinned upload staging buffer", &mi));
    }
    MG_CUDA_CHECK(e);
    c->staging = (uint16_t *)p;
    for (int k = 0; k < 2; k++) MG_CUDA_CHECK(cudaEventCreateWithFlags(&c->copied[k], cudaEventDisableTiming));
    return MG_OK;
}

extern "C" mg_status mg_backend_cuda_create(int device, mg_backend **out) {
    *out = NULL;
    cuda_backend *c = (cuda_backend *)calloc(1, sizeof *c);
    if (!c) return mg_fail(MG_ERR_OOM, NULL, "CUDA backend state");
    mg_backend *be = &c->be;
    be->ctx = c;  // destroy finds the state through it, also after a partial create
    mg_status s = mg_cuda_ctx_create(&c->cuda, device);
    if (s == MG_OK) s = pin_staging(c);
    const char *prof = getenv("MG_PROFILE");
    if (s == MG_OK && prof && !strcmp(prof, "1") && (c->prof = (profile *)calloc(1, sizeof(profile))))
        for (int i = 0; i < PROF_PENDING; i++)
            cudaEventCreate(&c->prof->start[i]), cudaEventCreate(&c->prof->end[i]);
    if (s != MG_OK) {
        mg_backend_cuda_destroy(be);
        return s;
    }
    be->name = "cuda";
    be->device = c->cuda.name;
    be->act_dtype = MG_BF16;
    be->sync = cuda_be_sync;
    be->alloc = cuda_be_alloc;
    be->free = cuda_be_free;
    be->upload = cuda_be_upload;
    be->download = cuda_be_download;
    be->copy_in = cuda_be_copy_in;
    be->linear_forward = linear;
    be->linear_gelu_forward = linear_gelu;
    be->linear_residual_forward = linear_residual;
    be->im2col_forward = im2col;
    be->add_rows_forward = add_rows;
    be->add_forward = add;
    be->layernorm_forward = layernorm;
    be->rmsnorm_forward = rmsnorm;
    be->rmsnorm_add_forward = rmsnorm_add;
    be->qk_norm_rope_forward = qk_norm_rope;
    be->attention_forward = attention;
    be->attention_decode_forward = attention_decode;
    be->attention_backward = attention_bwd;
    be->gelu_forward = gelu;
    be->geglu_forward = geglu;
    be->avgpool_forward = avgpool;
    be->embedding_forward = embedding;
    be->gather_rows_forward = gather_rows;
    be->scatter_rows_forward = scatter_rows;
    be->lora_forward = lora;
    be->copy_out = cuda_be_copy_out;
    be->copy = cuda_be_copy;
    be->zero = cuda_be_zero;
    be->linear_backward = linear_bw;
    be->lora_backward = lora_bw;
    be->gelu_backward = gelu_bw;
    be->geglu_backward = geglu_bw;
    be->layernorm_backward = layernorm_bw;
    be->rmsnorm_backward = rmsnorm_bw;
    be->qk_norm_rope_backward = qk_norm_rope_bw;
    be->avgpool_backward = avgpool_bw;
    be->gather_rows_backward = gather_rows_bw;
    be->scatter_rows_backward = scatter_rows_bw;
    be->cross_entropy_backward = cross_entropy_bw;
    be->sumsq = sumsq;
    be->adamw_step = adamw_step;
    be->bind = cuda_be_bind;
    *out = be;
    return MG_OK;
}
