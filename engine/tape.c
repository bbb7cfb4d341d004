/* The LoRA-only autograd: a recording backend and its reverse replay (engine/tape.h). */
#include "engine/tape.h"

#include "engine/oom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    OP_LINEAR,          /* y = x·wᵀ + b */
    OP_LINEAR_RESIDUAL, /* y = r + x·wᵀ + b */
    OP_LAYERNORM,       /* y = layernorm(x) */
    OP_RMSNORM,         /* y = rmsnorm(x) */
    OP_RMSNORM_ADD,     /* y = r + rmsnorm(x) */
    OP_QKV,             /* q, k, v = qk_norm_rope(x) */
    OP_ATTENTION,       /* y = attention(q = x, k = r, v = x3) */
    OP_GELU,            /* y = gelu(x) */
    OP_GEGLU,           /* y = geglu(x) */
    OP_AVGPOOL,         /* y = avgpool(x) */
    OP_ADD,             /* y = x + r */
    OP_GATHER,          /* y = x[rows] */
    OP_SCATTER,         /* y[rows] = x */
    OP_LORA,            /* y += lora(x) */
} op_kind;

/* A tensor an op touches: where it is and how many act_dtype elements it has (-1: unknown, its
 * gradient must be bound by the caller). */
typedef struct {
    const void *p;
    int64_t n;
} tensor_ref;

typedef struct {
    op_kind op;
    const char *name;     /* the backend entry, for messages */
    tensor_ref y[3];      /* outputs (q, k, v for OP_QKV) */
    tensor_ref x, r, x3;  /* inputs: x; the residual / k; v / out for attention */
    const void *w;        /* frozen weight the backward reads */
    int64_t M;
    int K, N, C, G, k;
    float eps;
    const int32_t *rows;
    mg_qkv_args qkv;
    mg_attention_args attn;
    mg_lora_args lora;
    const void *u, *A, *B; /* LoRA's saved intermediate and leaves (its dropout mask is drawn again) */
} record;

typedef struct {
    const char *p;
    char *g;
    size_t bytes;
} binding;

struct mg_tape {
    mg_backend table;      /* the recording backend; table.ctx == this tape */
    const mg_backend *be;  /* the inner backend */
    size_t es;             /* act_dtype size */
    record *rec;
    int n_rec, cap_rec;
    binding *bind;
    int n_bind, cap_bind;
    const char *leaves;    /* params_act */
    float *leaf_grads;
    int64_t n_leaves;
    char *arena;           /* gradients the tape allocates */
    size_t arena_bytes, arena_used;
    const char *bad;       /* why backward must refuse (first problem seen while recording) */
    char bad_msg[160];
};

/* ---- bookkeeping ------------------------------------------------------------------------------ */

static int overlaps(const void *a, size_t an, const void *b, size_t bn) {
    const char *pa = a, *pb = b;
    return pa < pb + bn && pb < pa + an;
}

static void mark_bad(mg_tape *t, const char *fmt_op, const char *what) {
    if (t->bad) return;
    snprintf(t->bad_msg, sizeof t->bad_msg, "%s %s", fmt_op, what);
    t->bad = t->bad_msg;
}

/* The tensors a record's backward reads (saved for it): they must not change after it. */
static int saved_refs(const record *r, tensor_ref out[4]) {
    int n = 0;
    switch (r->op) {
    case OP_LAYERNORM:
    case OP_RMSNORM:
    case OP_RMSNORM_ADD:
    case OP_GELU:
    case OP_GEGLU:
    case OP_QKV: out[n++] = r->x; break;
    case OP_ATTENTION: out[n++] = r->x, out[n++] = r->r, out[n++] = r->x3, out[n++] = r->y[0]; break;
    case OP_LORA:
        out[n++] = r->x;
        out[n++] = (tensor_ref){ r->u, r->lora.M * r->lora.r };
        break;
    default: break;
    }
    return n;
}

/* Records r after checking that its outputs do not rewrite anything an earlier record saved. */
static void push(mg_tape *t, const record *r) {
    for (int i = 0; i < t->n_rec && !t->bad; i++) {
        tensor_ref s[4];
        const int ns = saved_refs(&t->rec[i], s);
        for (int j = 0; j < ns; j++)
            for (int o = 0; o < 3 && r->y[o].p; o++)
                if (r->y[o].n > 0 && s[j].n > 0 &&
                    overlaps(r->y[o].p, (size_t)r->y[o].n * t->es, s[j].p, (size_t)s[j].n * t->es))
                    mark_bad(t, r->name, "overwrites a tensor an earlier op saved for its backward");
    }
    if (t->n_rec == t->cap_rec) {
        const int cap = t->cap_rec ? 2 * t->cap_rec : 64;
        record *p = realloc(t->rec, (size_t)cap * sizeof *p);
        if (!p) {
            mark_bad(t, r->name, "could not be recorded (out of host memory)");
            return;
        }
        t->rec = p, t->cap_rec = cap;
    }
    t->rec[t->n_rec++] = *r;
}

static int add_binding(mg_tape *t, const void *p, void *g, size_t bytes) {
    if (t->n_bind == t->cap_bind) {
        const int cap = t->cap_bind ? 2 * t->cap_bind : 64;
        binding *b = realloc(t->bind, (size_t)cap * sizeof *b);
        if (!b) return 0;
        t->bind = b, t->cap_bind = cap;
    }
    t->bind[t->n_bind++] = (binding){ p, g, bytes };
    return 1;
}

/* The gradient of the tensor at p: its binding, or the matching place inside a bound tensor that
 * contains p (a column slice of a fused output). NULL when nothing has written one. */
static void *grad_find(const mg_tape *t, const void *p) {
    const char *c = p;
    for (int i = t->n_bind - 1; i >= 0; i--) {
        const binding *b = &t->bind[i];
        if (c >= b->p && c < b->p + b->bytes) return b->g + (c - b->p);
    }
    return NULL;
}

/* The gradient of x, allocated zeroed from the arena the first time (NULL: arena exhausted or
 * the size is unknown; backward then fails). */
static void *grad_get(mg_tape *t, tensor_ref x) {
    void *g = grad_find(t, x.p);
    if (g || x.n < 0) return g;
    const size_t bytes = ((size_t)x.n * t->es + 255) / 256 * 256;
    if (t->arena_used + bytes > t->arena_bytes) return NULL;
    g = t->arena + t->arena_used;
    t->arena_used += bytes;
    t->be->zero(t->be->ctx, g, (size_t)x.n * t->es);
    return add_binding(t, x.p, g, (size_t)x.n * t->es) ? g : NULL;
}

/* ---- the recording table ---------------------------------------------------------------------- */

#define TAPE(ctx) ((mg_tape *)(ctx))
#define INNER(t) (t)->be->ctx

static void rec_linear(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K, int N) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_LINEAR, .name = "linear_forward", .y = { { y, M * N } }, .x = { x, M * K }, .w = w,
                       .M = M, .K = K, .N = N });
    t->be->linear_forward(INNER(t), y, x, w, b, M, K, N);
}

static void rec_linear_residual(void *ctx, void *y, const void *x, const void *w, const void *b, const void *r,
                                int64_t M, int K, int N) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_LINEAR_RESIDUAL, .name = "linear_residual_forward", .y = { { y, M * N } },
                       .x = { x, M * K }, .r = { r, M * N }, .w = w, .M = M, .K = K, .N = N });
    t->be->linear_residual_forward(INNER(t), y, x, w, b, r, M, K, N);
}

static void rec_linear_gelu(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int K,
                            int N) {
    mg_tape *t = TAPE(ctx);
    mark_bad(t, "linear_gelu_forward", "has no backward (it keeps no pre-activation): use linear + gelu");
    t->be->linear_gelu_forward(INNER(t), y, x, w, b, M, K, N);
}

static void rec_layernorm(void *ctx, void *y, const void *x, const void *w, const void *b, int64_t M, int C,
                          float eps) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_LAYERNORM, .name = "layernorm_forward", .y = { { y, M * C } }, .x = { x, M * C },
                       .w = w, .M = M, .C = C, .eps = eps });
    t->be->layernorm_forward(INNER(t), y, x, w, b, M, C, eps);
}

static void rec_rmsnorm(void *ctx, void *y, const void *x, const void *w, int64_t M, int C, float eps) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_RMSNORM, .name = "rmsnorm_forward", .y = { { y, M * C } }, .x = { x, M * C },
                       .w = w, .M = M, .C = C, .eps = eps });
    t->be->rmsnorm_forward(INNER(t), y, x, w, M, C, eps);
}

static void rec_rmsnorm_add(void *ctx, void *h, const void *residual, const void *x, const void *w, int64_t M, int C,
                            float eps) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_RMSNORM_ADD, .name = "rmsnorm_add_forward", .y = { { h, M * C } },
                       .x = { x, M * C }, .r = { residual, M * C }, .w = w, .M = M, .C = C, .eps = eps });
    t->be->rmsnorm_add_forward(INNER(t), h, residual, x, w, M, C, eps);
}

static void rec_qkv(void *ctx, void *q, void *k, void *v, const void *qkv, const mg_qkv_args *a) {
    mg_tape *t = TAPE(ctx);
    const int64_t M = a->B * a->T, qn = M * a->H * a->D, kn = M * a->Hkv * a->D;
    push(t, &(record){ .op = OP_QKV, .name = "qk_norm_rope_forward", .y = { { q, qn }, { k, kn }, { v, kn } },
                       .x = { qkv, qn + 2 * kn }, .qkv = *a });
    t->be->qk_norm_rope_forward(INNER(t), q, k, v, qkv, a);
}

static void rec_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                          const mg_attention_args *a) {
    mg_tape *t = TAPE(ctx);
    const int64_t M = a->B * a->T, qn = M * a->H * a->D, kn = M * a->Hkv * a->D;
    push(t, &(record){ .op = OP_ATTENTION, .name = "attention_forward", .y = { { out, qn } }, .x = { q, qn },
                       .r = { k, kn }, .x3 = { v, kn }, .attn = *a });
    t->be->attention_forward(INNER(t), out, q, k, v, a);
}

static void rec_attention_decode(void *ctx, void *out, const void *q, const void *kc, const void *vc,
                                 const mg_decode_args *a) {
    mg_tape *t = TAPE(ctx);
    mark_bad(t, "attention_decode_forward", "has no backward (decoding is not trained)");
    t->be->attention_decode_forward(INNER(t), out, q, kc, vc, a);
}

static void rec_gelu(void *ctx, void *y, const void *x, int64_t n) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_GELU, .name = "gelu_forward", .y = { { y, n } }, .x = { x, n }, .M = n });
    t->be->gelu_forward(INNER(t), y, x, n);
}

static void rec_geglu(void *ctx, void *y, const void *gu, int64_t M, int F) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_GEGLU, .name = "geglu_forward", .y = { { y, M * F } }, .x = { gu, 2 * M * F },
                       .M = M, .N = F });
    t->be->geglu_forward(INNER(t), y, gu, M, F);
}

static void rec_avgpool(void *ctx, void *y, const void *x, int64_t B, int G, int k, int C) {
    mg_tape *t = TAPE(ctx);
    const int64_t g = G / k;
    push(t, &(record){ .op = OP_AVGPOOL, .name = "avgpool_forward", .y = { { y, B * g * g * C } },
                       .x = { x, B * G * G * (int64_t)C }, .M = B, .G = G, .k = k, .C = C });
    t->be->avgpool_forward(INNER(t), y, x, B, G, k, C);
}

static void rec_add(void *ctx, void *y, const void *a, const void *b, int64_t n) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_ADD, .name = "add_forward", .y = { { y, n } }, .x = { a, n }, .r = { b, n }, .M = n });
    t->be->add_forward(INNER(t), y, a, b, n);
}

/* x += pos: the gradient of x passes through unchanged, pos is frozen: nothing to record. */
static void rec_add_rows(void *ctx, void *x, const void *pos, int64_t B, int64_t P, int C) {
    mg_tape *t = TAPE(ctx);
    t->be->add_rows_forward(INNER(t), x, pos, B, P, C);
}

static void rec_gather_rows(void *ctx, void *y, const void *x, const int32_t *rows, int64_t R, int C) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_GATHER, .name = "gather_rows_forward", .y = { { y, R * C } }, .x = { x, -1 },
                       .rows = rows, .M = R, .C = C });
    t->be->gather_rows_forward(INNER(t), y, x, rows, R, C);
}

/* y[rows] = src: src's gradient is y's at those rows. The overwritten rows' old values (the token
 * embeddings under the image placeholders) get no gradient: nothing below them is trained. */
static void rec_scatter_rows(void *ctx, void *y, const void *src, const int32_t *rows, int64_t R, int C) {
    mg_tape *t = TAPE(ctx);
    push(t, &(record){ .op = OP_SCATTER, .name = "scatter_rows_forward", .y = { { y, -1 } }, .x = { src, R * C },
                       .rows = rows, .M = R, .C = C });
    t->be->scatter_rows_forward(INNER(t), y, src, rows, R, C);
}

static void rec_lora(void *ctx, void *y, void *u, const void *x, const void *A, const void *B,
                     const mg_lora_args *a) {
    mg_tape *t = TAPE(ctx);
    /* y is updated in place (+=): not a rewrite of anything saved unless another op saved y */
    push(t, &(record){ .op = OP_LORA, .name = "lora_forward", .x = { x, a->M * a->K }, .lora = *a, .u = u, .A = A,
                       .B = B, .y = { { y, 0 } } });
    t->be->lora_forward(INNER(t), y, u, x, A, B, a);
}

/* Memory entries and ops with no gradient pass straight through. */
static mg_status pass_sync(void *ctx) { return TAPE(ctx)->be->sync(INNER(TAPE(ctx))); }
static mg_status pass_bind(void *ctx) { return TAPE(ctx)->be->bind(INNER(TAPE(ctx))); }
static void *pass_alloc(void *ctx, size_t n) { return TAPE(ctx)->be->alloc(INNER(TAPE(ctx)), n); }
static void pass_free(void *ctx, void *p) { TAPE(ctx)->be->free(INNER(TAPE(ctx)), p); }
static void pass_upload(void *ctx, void *dst, const void *src, mg_dtype dt, int64_t n) {
    TAPE(ctx)->be->upload(INNER(TAPE(ctx)), dst, src, dt, n);
}
static void pass_download(void *ctx, float *dst, const void *src, int64_t n) {
    TAPE(ctx)->be->download(INNER(TAPE(ctx)), dst, src, n);
}
static void pass_copy_in(void *ctx, void *dst, const void *src, size_t n) {
    TAPE(ctx)->be->copy_in(INNER(TAPE(ctx)), dst, src, n);
}
static void pass_copy_out(void *ctx, void *dst, const void *src, size_t n) {
    TAPE(ctx)->be->copy_out(INNER(TAPE(ctx)), dst, src, n);
}
static void pass_copy(void *ctx, void *dst, const void *src, size_t n) {
    TAPE(ctx)->be->copy(INNER(TAPE(ctx)), dst, src, n);
}
static void pass_zero(void *ctx, void *dst, size_t n) { TAPE(ctx)->be->zero(INNER(TAPE(ctx)), dst, n); }
static void pass_im2col(void *ctx, void *cols, const void *pixels, int64_t B, int S, int p) {
    TAPE(ctx)->be->im2col_forward(INNER(TAPE(ctx)), cols, pixels, B, S, p);
}
static void pass_embedding(void *ctx, void *y, const void *E, const int32_t *ids, int64_t n, int C, int64_t V,
                           float scale) {
    TAPE(ctx)->be->embedding_forward(INNER(TAPE(ctx)), y, E, ids, n, C, V, scale);
}

/* ---- the replay ------------------------------------------------------------------------------- */

/* The fp32 gradient of a leaf (A or B in params_act), or NULL when p is not a leaf. */
static float *leaf_grad(const mg_tape *t, const void *p) {
    const char *c = p;
    if (!t->leaves || c < t->leaves || c >= t->leaves + (size_t)t->n_leaves * t->es) return NULL;
    return t->leaf_grads + (c - t->leaves) / (ptrdiff_t)t->es;
}

/* One record's backward. Returns 0 when a gradient could not be had (arena, unknown size). */
static int backward_one(mg_tape *t, const record *r) {
    const mg_backend *be = t->be;
    void *ctx = be->ctx;
    void *dy = r->op == OP_QKV ? NULL : grad_find(t, r->y[0].p);
    if (r->op == OP_QKV) {
        void *dq = grad_find(t, r->y[0].p), *dk = grad_find(t, r->y[1].p), *dv = grad_find(t, r->y[2].p);
        if (!dq && !dk && !dv) return 1; /* nothing downstream used the split */
        if (!dq) dq = grad_get(t, r->y[0]);
        if (!dk) dk = grad_get(t, r->y[1]);
        if (!dv) dv = grad_get(t, r->y[2]);
        void *dx = grad_get(t, r->x);
        if (!dq || !dk || !dv || !dx) return 0;
        be->qk_norm_rope_backward(ctx, dx, dq, dk, dv, r->x.p, &r->qkv);
        return 1;
    }
    if (!dy) return 1; /* this output does not reach the loss */
    void *dx = grad_get(t, r->x);
    if (!dx) return 0;
    switch (r->op) {
    case OP_LINEAR: be->linear_backward(ctx, dx, dy, r->w, r->M, r->K, r->N); break;
    case OP_LINEAR_RESIDUAL: {
        be->linear_backward(ctx, dx, dy, r->w, r->M, r->K, r->N);
        if (r->r.p != r->y[0].p) { /* y = r + ...: dr += dy (in place, dr is dy itself) */
            void *dr = grad_get(t, r->r);
            if (!dr) return 0;
            be->add_forward(ctx, dr, dr, dy, r->M * r->N);
        }
        break;
    }
    case OP_LAYERNORM: be->layernorm_backward(ctx, dx, dy, r->x.p, r->w, r->M, r->C, r->eps); break;
    case OP_RMSNORM: be->rmsnorm_backward(ctx, dx, dy, r->x.p, r->w, r->M, r->C, r->eps); break;
    case OP_RMSNORM_ADD: {
        be->rmsnorm_backward(ctx, dx, dy, r->x.p, r->w, r->M, r->C, r->eps);
        if (r->r.p != r->y[0].p) {
            void *dr = grad_get(t, r->r);
            if (!dr) return 0;
            be->add_forward(ctx, dr, dr, dy, r->M * r->C);
        }
        break;
    }
    case OP_ATTENTION: {
        void *dk = grad_get(t, r->r), *dv = grad_get(t, r->x3);
        if (!dk || !dv) return 0;
        be->attention_backward(ctx, dx, dk, dv, dy, r->x.p, r->r.p, r->x3.p, r->y[0].p, &r->attn);
        break;
    }
    case OP_GELU: be->gelu_backward(ctx, dx, dy, r->x.p, r->M); break;
    case OP_GEGLU: be->geglu_backward(ctx, dx, dy, r->x.p, r->M, r->N); break;
    case OP_AVGPOOL: be->avgpool_backward(ctx, dx, dy, r->M, r->G, r->k, r->C); break;
    case OP_ADD: {
        if (r->x.p != r->y[0].p) be->add_forward(ctx, dx, dx, dy, r->M);
        if (r->r.p != r->y[0].p) {
            void *db = grad_get(t, r->r);
            if (!db) return 0;
            be->add_forward(ctx, db, db, dy, r->M);
        }
        break;
    }
    case OP_GATHER: be->gather_rows_backward(ctx, dx, dy, r->rows, r->M, r->C); break;
    case OP_SCATTER: be->scatter_rows_backward(ctx, dx, dy, r->rows, r->M, r->C); break;
    case OP_LORA: {
        float *dA = leaf_grad(t, r->A), *dB = leaf_grad(t, r->B);
        const size_t du_bytes = (size_t)r->lora.M * r->lora.r * sizeof(float);
        if (!dA || !dB || t->arena_used + du_bytes > t->arena_bytes) return 0;
        float *du = (float *)(t->arena + t->arena_used); /* scratch, reused by the next LoRA record */
        be->lora_backward(ctx, dx, dA, dB, du, dy, r->x.p, r->u, r->A, r->B, &r->lora);
        break;
    }
    case OP_QKV: break;
    }
    return 1;
}

static int ref_order(const void *a, const void *b) {
    const tensor_ref *x = a, *y = b;
    return (uintptr_t)x->p < (uintptr_t)y->p ? -1 : (uintptr_t)x->p > (uintptr_t)y->p;
}

/* Bytes of gradient the replay of [from, to) can need: grad_get allocates once per tensor address
 * (every later use of it, or of an address inside it, finds that one), never for one the caller
 * bound. So: each distinct input address once at its largest size (plus the q, k, v a split
 * produced, whose gradients the split's backward may be the first to want), less the bound ones,
 * plus LoRA's du scratch. Without host memory to sort the addresses, every use counts (larger, as
 * safe). A layer's gradients then take about what its activations do: each LoRA branch and the
 * linear beside it read the same input, and q, k, v share theirs. */
static size_t arena_need(const mg_tape *t, int from, int to) {
    size_t du = 0, n = 0;
    tensor_ref *refs = malloc((size_t)(to - from) * 6 * sizeof *refs + 1);
    size_t need = 0;
    for (int i = from; i < to; i++) {
        const record *r = &t->rec[i];
        const tensor_ref in[6] = { r->x, r->r, r->x3, r->op == OP_QKV ? r->y[0] : (tensor_ref){ 0 },
                                   r->op == OP_QKV ? r->y[1] : (tensor_ref){ 0 },
                                   r->op == OP_QKV ? r->y[2] : (tensor_ref){ 0 } };
        for (int j = 0; j < 6; j++) {
            if (!in[j].p || in[j].n <= 0) continue;
            if (refs) refs[n++] = in[j];
            else need += ((size_t)in[j].n * t->es + 255) / 256 * 256;
        }
        if (r->op == OP_LORA) {
            const size_t b = (size_t)r->lora.M * r->lora.r * sizeof(float);
            du = b > du ? b : du;
        }
    }
    if (refs) {
        qsort(refs, n, sizeof *refs, ref_order);
        for (size_t i = 0; i < n;) {
            int64_t most = refs[i].n;
            size_t j = i + 1;
            for (; j < n && refs[j].p == refs[i].p; j++) most = refs[j].n > most ? refs[j].n : most;
            if (!grad_find(t, refs[i].p)) need += ((size_t)most * t->es + 255) / 256 * 256;
            i = j;
        }
        free(refs);
    }
    return need + du;
}

mg_status mg_tape_backward(mg_tape *t, int from, int to) {
    if (t->bad) return mg_fail(MG_ERR_UNSUPPORTED, "this is a bug in medgem's training code: please report it",
                               "autograd tape: %s", t->bad);
    if (from < 0 || to > t->n_rec || from > to)
        return mg_fail(MG_ERR_ARG, NULL, "autograd tape: records [%d, %d) of %d", from, to, t->n_rec);
    const size_t need = arena_need(t, from, to);
    if (need > t->arena_bytes) {
        MG_TRY(t->be->sync(t->be->ctx)); /* the old arena may still be read by queued work */
        t->be->free(t->be->ctx, t->arena);
        t->arena_bytes = 0;
        if (!(t->arena = t->be->alloc(t->be->ctx, need)))
            return mg_fail_oom(t->be, need, "use a smaller --batch or --recompute",
                               "the activation gradients of the autograd tape");
        t->arena_bytes = need;
    }
    t->arena_used = 0;
    for (int i = to - 1; i >= from; i--)
        if (!backward_one(t, &t->rec[i]))
            return mg_fail(MG_ERR_UNSUPPORTED, "this is a bug in medgem's training code: please report it",
                           "autograd tape: no gradient buffer for the input of %s (record %d)", t->rec[i].name, i);
    return MG_OK;
}

/* ---- life cycle ------------------------------------------------------------------------------- */

mg_status mg_tape_create(mg_tape **out, const mg_backend *inner) {
    mg_tape *t = calloc(1, sizeof *t);
    if (!t) return mg_fail(MG_ERR_OOM, NULL, "autograd tape");
    t->be = inner;
    t->es = mg_dtype_size(inner->act_dtype);
    mg_backend *b = &t->table;
    *b = *inner; /* names and dtype; every entry is replaced below */
    b->ctx = t;
    b->sync = pass_sync, b->alloc = pass_alloc, b->free = pass_free, b->upload = pass_upload;
    b->download = pass_download, b->copy_in = pass_copy_in, b->copy_out = pass_copy_out, b->copy = pass_copy;
    b->zero = pass_zero;
    b->bind = inner->bind ? pass_bind : NULL;
    b->linear_forward = rec_linear, b->linear_gelu_forward = rec_linear_gelu;
    b->linear_residual_forward = rec_linear_residual, b->im2col_forward = pass_im2col;
    b->add_rows_forward = rec_add_rows, b->add_forward = rec_add, b->layernorm_forward = rec_layernorm;
    b->rmsnorm_forward = rec_rmsnorm, b->rmsnorm_add_forward = rec_rmsnorm_add, b->qk_norm_rope_forward = rec_qkv;
    b->attention_forward = rec_attention, b->attention_decode_forward = rec_attention_decode;
    b->gelu_forward = rec_gelu, b->geglu_forward = rec_geglu, b->avgpool_forward = rec_avgpool;
    b->embedding_forward = pass_embedding, b->gather_rows_forward = rec_gather_rows;
    b->scatter_rows_forward = rec_scatter_rows, b->lora_forward = rec_lora;
    /* the backward entries are the inner backend's (copied above): a tape does not record them */
    *out = t;
    return MG_OK;
}

void mg_tape_destroy(mg_tape *t) {
    if (!t) return;
    t->be->free(t->be->ctx, t->arena);
    free(t->rec);
    free(t->bind);
    free(t);
}

const mg_backend *mg_tape_backend(mg_tape *t) { return &t->table; }

void mg_tape_reset(mg_tape *t) {
    t->n_rec = 0;
    t->n_bind = 0;
    t->bad = NULL;
}

int mg_tape_mark(const mg_tape *t) { return t->n_rec; }

void mg_tape_clear_grads(mg_tape *t) { t->n_bind = 0; }

void mg_tape_truncate(mg_tape *t, int mark) {
    if (mark >= 0 && mark < t->n_rec) t->n_rec = mark;
    t->n_bind = 0;
}

size_t mg_tape_arena_bytes(const mg_tape *t) { return t->arena_bytes; }

void mg_tape_set_leaves(mg_tape *t, const void *params_act, float *grads, int64_t n) {
    t->leaves = params_act, t->leaf_grads = grads, t->n_leaves = n;
}

void mg_tape_bind_grad(mg_tape *t, const void *x, void *grad, int64_t n) {
    if (!add_binding(t, x, grad, (size_t)n * t->es)) mark_bad(t, "mg_tape_bind_grad", "is out of host memory");
}
