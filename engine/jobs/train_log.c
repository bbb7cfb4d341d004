/* train_log.jsonl's lines (engine/jobs/train_log.h). */
#include "engine/jobs/train_log.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/atomic_file.h"
#include "engine/device.h"
#include "engine/json.h"

void mg_train_log_step(FILE *log, int step, double epoch, double loss, double lr, double grad_norm,
                       double images_per_s, double seconds, bool skipped) {
    char lv[32] = "null", nv[32] = "null"; /* JSON has no NaN */
    if (isfinite(loss)) snprintf(lv, sizeof lv, "%.6f", loss);
    if (isfinite(grad_norm)) snprintf(nv, sizeof nv, "%.6f", grad_norm);
    fprintf(log,
            "{\"step\": %d, \"epoch\": %.4f, \"loss\": %s, \"lr\": %.9g, \"grad_norm\": %s, "
            "\"images_per_s\": %.3f, \"seconds\": %.3f%s}\n",
            step, epoch, lv, lr, nv, images_per_s, seconds, skipped ? ", \"skipped\": true" : "");
    fflush(log);
}

void mg_train_log_eval(FILE *log, int epoch, int step, const mg_eval_result *r) {
    const mg_metrics *m = &r->metrics;
    fprintf(log,
            "{\"eval\": {\"epoch\": %d, \"step\": %d, \"images\": %lld, \"accuracy\": %.6f, \"f1_weighted\": %.6f, "
            "\"f1_macro\": %.6f, \"binary_accuracy\": %.6f, \"binary_f1\": %.6f, \"auc\": %.6f, "
            "\"patient_rate\": %.6f, \"seconds\": %.3f}}\n",
            epoch, step, (long long)r->n, m->accuracy, m->f1_weighted, m->f1_macro, m->bin_accuracy,
            m->bin_f1_positive, isnan(m->auc) ? -1.0 : m->auc, isnan(m->patient_rate) ? -1.0 : m->patient_rate,
            r->seconds);
    fflush(log);
}

/* The process's resident and peak resident bytes (VmRSS, VmHWM), -1 each where unreadable. */
static void host_memory(int64_t *rss, int64_t *peak) {
    *rss = *peak = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    long long kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1) *rss = kb * 1024;
        else if (sscanf(line, "VmHWM: %lld kB", &kb) == 1) *peak = kb * 1024;
    }
    fclose(f);
}

/* Bytes in use on the GPU (total - free), or -1 on the CPU backend or when the driver does not say. */
static int64_t device_used(const mg_backend *be) {
    if (be == mg_backend_cpu()) return -1;
    mg_gpu_info gi;
    mg_gpu_query(&gi);
    return gi.available && gi.free_mem ? (int64_t)(gi.total_mem - gi.free_mem) : -1;
}

void mg_train_log_epoch(FILE *log, const mg_train_epoch *e) {
    char dev[32] = "null";
    if (e->device_used >= 0) snprintf(dev, sizeof dev, "%lld", (long long)e->device_used);
    fprintf(log,
            "{\"epoch_end\": {\"epoch\": %d, \"updates\": %d, \"seconds\": %.3f, \"host_rss_bytes\": %lld, "
            "\"host_peak_rss_bytes\": %lld, \"device_used_bytes\": %s}}\n",
            e->epoch, e->step, e->seconds, (long long)e->host_rss, (long long)e->host_peak, dev);
    fflush(log);
}

void mg_train_epoch_memory(const mg_backend *be, mg_train_epoch *e) {
    host_memory(&e->host_rss, &e->host_peak);
    e->device_used = device_used(be);
}

/* The update a line belongs to: its "step", an evaluation's "step", an epoch end's "updates"; -1
 * for a line that does not parse (the torn end of a killed run's last write) or says none. */
static int line_step(const char *line, size_t len) {
    mg_json *j = NULL;
    if (mg_json_parse(line, len, "train_log line", &j) != MG_OK) return -1;
    const mg_json *ev = mg_json_get(j, "eval"), *ep = mg_json_get(j, "epoch_end");
    const double at = ev ? mg_json_get_number(ev, "step", -1)
                    : ep ? mg_json_get_number(ep, "updates", -1)
                         : mg_json_get_number(j, "step", -1);
    mg_json_free(j);
    return (int)at;
}

mg_status mg_train_log_trim(const char *path, int step) {
    if (access(path, F_OK) != 0 && errno == ENOENT) return MG_OK;
    char *text;
    size_t n;
    MG_TRY(mg_read_file(path, &text, &n));
    size_t kept = 0; /* lines kept are moved to the front of text */
    for (size_t at = 0; at < n;) {
        const char *nl = memchr(text + at, '\n', n - at);
        const size_t len = nl ? (size_t)(nl - (text + at)) : n - at;
        const int of = nl ? line_step(text + at, len) : -1; /* no newline: the write was cut short */
        if (of >= 0 && of <= step) {
            memmove(text + kept, text + at, len + 1);
            kept += len + 1;
        }
        at += len + 1;
    }
    const mg_status s = kept == n ? MG_OK : mg_write_file_atomic(path, text, kept);
    free(text);
    return s;
}
