/* Out-of-memory reports (engine/oom.h) on the CPU:
 *  - the formatting: sizes, "allocating X for W on GPU n failed: F free of T", the host and
 *    unknown-free forms, the pre-flight form;
 *  - the job's hint replaces the allocation site's (mg_oom_hint), and only for MG_ERR_OOM;
 *  - the host query and the pre-flight check (this machine's /proc/meminfo);
 *  - the call sites: a backend whose alloc fails makes mg_model_open say how much the weights
 *    needed, how much host memory was free, and what to do; a backend that can hold the weights
 *    but not a forward's activations makes the forward say so.
 * The same messages on a real GPU: tests/gpu/test_api_gpu.c and tests/gpu/test_cuda_ops.c. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "engine/oom.h"
#include "model/medgem_model.h"
#include "tests/test.h"

#define MODEL_DIR "tests/golden/tiny"

static void check_str(const char *got, const char *want) {
    CHECK(!strcmp(got, want), "got \"%s\", want \"%s\"", got, want);
}

static void formatting(void) {
    char b[256];
    mg_fmt_bytes(b, sizeof b, 3.2e9), check_str(b, "3.2 GB");
    mg_fmt_bytes(b, sizeof b, 139.8e9), check_str(b, "139.8 GB");
    mg_fmt_bytes(b, sizeof b, 512e6), check_str(b, "512.0 MB");
    mg_fmt_bytes(b, sizeof b, 12345), check_str(b, "12.3 kB");
    mg_fmt_bytes(b, sizeof b, 999), check_str(b, "999 bytes");
    mg_fmt_bytes(b, sizeof b, 0), check_str(b, "0 bytes");

    const mg_mem_info gpu = { .known = 1, .device = 0, .free = 1100000000, .total = 139800000000 };
    check_str(mg_oom_describe(b, sizeof b, 3200000000, "the activations of a forward of B=8 T=300", &gpu),
              "allocating 3.2 GB for the activations of a forward of B=8 T=300 on GPU 0 failed: 1.1 GB free of 139.8 GB");
    const mg_mem_info host = { .known = 1, .device = -1, .free = 2000000000, .total = 16000000000 };
    check_str(mg_oom_describe(b, sizeof b, 17000000000, "the model's weights", &host),
              "allocating 17.0 GB for the model's weights in host memory failed: 2.0 GB free of 16.0 GB");
    const mg_mem_info unknown = { .known = 0, .device = 3 };
    check_str(mg_oom_describe(b, sizeof b, 5000000, "a device buffer", &unknown),
              "allocating 5.0 MB for a device buffer on GPU 3 failed");
    check_str(mg_oom_preflight_describe(b, sizeof b, 8600000000, "the model's weights", &(mg_mem_info){ .known = 1, .device = 1, .free = 3100000000, .total = 80000000000 }),
              "the model's weights need 8.6 GB on GPU 1, but only 3.1 GB of 80.0 GB is free");
    const mg_mem_info swap = { .known = 1, .device = -1, .free = 2000000000, .total = 16000000000, .swap_free = 1000000000 };
    check_str(mg_oom_preflight_describe(b, sizeof b, 17000000000, "the model's weights", &swap),
              "the model's weights need 17.0 GB of host memory, but only 2.0 GB of 16.0 GB is free (and 1.0 GB of swap)");
    /* a short buffer truncates, never overflows */
    char small[16];
    mg_oom_describe(small, sizeof small, 3200000000, "x", &gpu);
    CHECK(strlen(small) == sizeof small - 1, "truncated to %zu chars", strlen(small));
}

static void hints(void) {
    mg_status s = mg_fail(MG_ERR_OOM, "free GPU memory", "allocating 1.0 GB for x on GPU 0 failed");
    CHECK(mg_oom_hint(s, "lower --batch") == MG_ERR_OOM, "mg_oom_hint returns the status");
    check_str(mg_last_error(), "allocating 1.0 GB for x on GPU 0 failed\nHINT: lower --batch");
    /* a second job up the stack (train around eval) has the last word */
    mg_oom_hint(s, "lower --eval-batch");
    check_str(mg_last_error(), "allocating 1.0 GB for x on GPU 0 failed\nHINT: lower --eval-batch");
    /* no hint yet: one is added; a context prefix stays */
    mg_fail(MG_ERR_OOM, NULL, "results of 9 images");
    mg_fail_context(MG_ERR_OOM, "evaluating: ");
    mg_oom_hint(MG_ERR_OOM, "lower --batch");
    check_str(mg_last_error(), "evaluating: results of 9 images\nHINT: lower --batch");
    /* other failures keep their own hint */
    s = mg_fail(MG_ERR_IO, "check the path", "cannot open x");
    CHECK(mg_oom_hint(s, "lower --batch") == MG_ERR_IO, "status kept");
    check_str(mg_last_error(), "cannot open x\nHINT: check the path");
    CHECK(mg_oom_hint(MG_OK, "lower --batch") == MG_OK, "MG_OK passes");
}

static void host_queries(void) {
    mg_mem_info mi;
    mg_host_mem(&mi);
    CHECK(mi.known && mi.device == -1 && mi.total > 0 && mi.free > 0 && mi.free <= mi.total,
          "host memory: known %d, %zu free of %zu", mi.known, mi.free, mi.total);
    mg_mem_query(mg_backend_cpu(), &mi);
    CHECK(mi.known && mi.device == -1, "the CPU backend allocates host memory");
    CHECK(mg_mem_preflight(mg_backend_cpu(), 1 << 20, "h", "a MB") == MG_OK, "1 MB fits");
    const mg_status s = mg_mem_preflight(mg_backend_cpu(), SIZE_MAX / 2, "free host memory", "the model's weights");
    CHECK(s == MG_ERR_OOM && strstr(mg_last_error(), "the model's weights need ") &&
              strstr(mg_last_error(), " of host memory, but only ") && strstr(mg_last_error(), "\nHINT: free host memory"),
          "pre-flight of an impossible size: %s", mg_last_error());
    char want[64];
    snprintf(want, sizeof want, "allocating 2.0 GB for x%d in host memory failed: ", 7);
    mg_fail_oom(mg_backend_cpu(), 2000000000, NULL, "x%d", 7);
    CHECK(!strncmp(mg_last_error(), want, strlen(want)) && strstr(mg_last_error(), " free of "), "%s", mg_last_error());
}

/* A CPU backend that refuses any allocation above limit bytes. */
static size_t g_limit;
static void *limited_alloc(void *ctx, size_t n) {
    return n > g_limit ? NULL : mg_backend_cpu()->alloc(ctx, n);
}

static void call_sites(void) {
    mg_backend be = *mg_backend_cpu();
    be.alloc = limited_alloc;
    mg_model m;
    g_limit = 0;
    mg_status s = mg_model_open(&m, &be, MODEL_DIR);
    const char *e = mg_last_error();
    CHECK(s == MG_ERR_OOM, "weights on a full backend: %s (%s)", mg_status_name(s), e);
    CHECK(strstr(e, "allocating ") && strstr(e, " for the model's weights in host memory failed: ") &&
              strstr(e, " free of ") && strstr(e, "\nHINT: free host memory"),
          "the weights' message names the bytes, the free memory and a hint: %s", e);
    printf("     model load: %s\n", e);

    /* room for the weights, not for a forward */
    g_limit = 1 << 30;
    s = mg_model_open(&m, &be, MODEL_DIR);
    CHECK(s == MG_OK, "open: %s", mg_last_error());
    if (s != MG_OK) return;
    g_limit = 4096; /* less than any forward needs */
    const int64_t B = 2, T = 40;
    int32_t ids[80] = { 0 }, rows[1] = { 0 };
    float logits[1024];
    const mg_model_input in = { .B = B, .T = T, .ids = ids };
    const mg_model_head head = { .rows = rows, .R = 1, .logits = logits };
    for (int i = 0; i < B * T; i++) ids[i] = 20 + i % 100;
    s = mg_model_forward(&m, &in, &head, NULL);
    e = mg_last_error();
    CHECK(s == MG_ERR_OOM && strstr(e, "for the activations of a forward of B=2 T=40 in host memory failed: ") &&
              strstr(e, " free of "),
          "forward: %s (%s)", mg_status_name(s), e);
    printf("     forward: %s\n", e);
    g_limit = 1 << 30; /* and it recovers once memory is there */
    s = mg_model_forward(&m, &in, &head, NULL);
    CHECK(s == MG_OK, "forward after the failure: %s", mg_last_error());
    mg_model_free(&m);
}

int main(void) {
    formatting();
    hints();
    host_queries();
    call_sites();
    return test_finish();
}
