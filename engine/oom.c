/* Out-of-memory reports (engine/oom.h). */
#include "engine/oom.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/device.h"

void mg_fmt_bytes(char *buf, size_t cap, double bytes) {
    if (bytes >= 1e9) snprintf(buf, cap, "%.1f GB", bytes / 1e9);
    else if (bytes >= 1e6) snprintf(buf, cap, "%.1f MB", bytes / 1e6);
    else if (bytes >= 1e3) snprintf(buf, cap, "%.1f kB", bytes / 1e3);
    else snprintf(buf, cap, "%.0f bytes", bytes);
}

/* "GPU 0" or "host memory" */
static void place(char *buf, size_t cap, const mg_mem_info *mi) {
    if (mi->device >= 0) snprintf(buf, cap, "GPU %d", mi->device);
    else snprintf(buf, cap, "host memory");
}

const char *mg_oom_describe(char *buf, size_t cap, size_t need, const char *what, const mg_mem_info *mi) {
    char n[32], f[32], t[32], where[32];
    mg_fmt_bytes(n, sizeof n, (double)need);
    place(where, sizeof where, mi);
    const char *on = mi->device >= 0 ? "on" : "in";
    if (!mi->known) {
        snprintf(buf, cap, "allocating %s for %s %s %s failed", n, what, on, where);
        return buf;
    }
    mg_fmt_bytes(f, sizeof f, (double)mi->free);
    mg_fmt_bytes(t, sizeof t, (double)mi->total);
    snprintf(buf, cap, "allocating %s for %s %s %s failed: %s free of %s", n, what, on, where, f, t);
    return buf;
}

const char *mg_oom_preflight_describe(char *buf, size_t cap, size_t need, const char *what, const mg_mem_info *mi) {
    char n[32], f[32], t[32], s[32], where[32];
    mg_fmt_bytes(n, sizeof n, (double)need);
    mg_fmt_bytes(f, sizeof f, (double)mi->free);
    mg_fmt_bytes(t, sizeof t, (double)mi->total);
    mg_fmt_bytes(s, sizeof s, (double)mi->swap_free);
    place(where, sizeof where, mi);
    snprintf(buf, cap, "%s need %s %s %s, but only %s of %s is free%s%s%s", what, n, mi->device >= 0 ? "on" : "of",
             where, f, t, mi->swap_free ? " (and " : "", mi->swap_free ? s : "", mi->swap_free ? " of swap)" : "");
    return buf;
}

void mg_host_mem(mg_mem_info *mi) {
    *mi = (mg_mem_info){ .device = -1 };
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return;
    char line[256];
    unsigned long long kb;
    int have = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) mi->free = (size_t)kb * 1024, have |= 1;
        else if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) mi->total = (size_t)kb * 1024, have |= 2;
        else if (sscanf(line, "SwapFree: %llu kB", &kb) == 1) mi->swap_free = (size_t)kb * 1024;
    }
    fclose(f);
    mi->known = have == 3;
}

void mg_mem_query(const mg_backend *be, mg_mem_info *mi) {
    /* the tape's recording table copies the inner backend's name, so the name is what tells */
    const int gpu = be && be->name && strcmp(be->name, "cpu") != 0;
    *mi = (mg_mem_info){ .device = -1 };
    if (gpu && mg_gpu_mem(&mi->device, &mi->free, &mi->total)) {
        mi->known = 1;
        return;
    }
    mg_host_mem(mi);
}

mg_status mg_fail_oom(const mg_backend *be, size_t need, const char *hint, const char *what_fmt, ...) {
    char what[512], msg[1024];
    va_list ap;
    va_start(ap, what_fmt);
    vsnprintf(what, sizeof what, what_fmt, ap);
    va_end(ap);
    mg_mem_info mi;
    mg_mem_query(be, &mi);
    return mg_fail(MG_ERR_OOM, hint, "%s", mg_oom_describe(msg, sizeof msg, need, what, &mi));
}

mg_status mg_mem_preflight(const mg_backend *be, size_t need, const char *hint, const char *what) {
    mg_mem_info mi;
    mg_mem_query(be, &mi);
    if (!mi.known || need <= mi.free || need - mi.free <= mi.swap_free) return MG_OK;
    char msg[1024];
    return mg_fail(MG_ERR_OOM, hint, "%s", mg_oom_preflight_describe(msg, sizeof msg, need, what, &mi));
}

mg_status mg_oom_hint(mg_status s, const char *hint) {
    if (s == MG_ERR_OOM && hint) mg_set_hint(hint);
    return s;
}
