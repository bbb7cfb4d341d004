#include "engine/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { MSG_CAP = 4096 };
static _Thread_local char g_msg[MSG_CAP];

mg_status mg_fail(mg_status code, const char *hint, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g_msg, MSG_CAP, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (hint && (size_t)n < MSG_CAP) snprintf(g_msg + n, MSG_CAP - (size_t)n, "\nHINT: %s", hint);
    return code;
}

mg_status mg_fail_context(mg_status code, const char *fmt, ...) {
    char prefix[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (n < 0) return code;
    size_t plen = strlen(prefix), old = strnlen(g_msg, MSG_CAP - 1);
    if (plen + old >= MSG_CAP) old = MSG_CAP - 1 - plen; /* drop the tail of the old message */
    memmove(g_msg + plen, g_msg, old);
    memcpy(g_msg, prefix, plen);
    g_msg[plen + old] = '\0';
    return code;
}

void mg_set_hint(const char *hint) {
    char *h = strstr(g_msg, "\nHINT: ");
    size_t n = h ? (size_t)(h - g_msg) : strnlen(g_msg, MSG_CAP - 1);
    snprintf(g_msg + n, MSG_CAP - n, "\nHINT: %s", hint);
}

const char *mg_last_error(void) { return g_msg; }
void mg_clear_error(void) { g_msg[0] = '\0'; }

const char *mg_status_name(mg_status s) {
    switch (s) {
    case MG_OK: return "ok";
    case MG_ERR_IO: return "io error";
    case MG_ERR_FORMAT: return "format error";
    case MG_ERR_SHAPE: return "shape error";
    case MG_ERR_MISSING: return "missing";
    case MG_ERR_ARG: return "bad argument";
    case MG_ERR_UNSUPPORTED: return "unsupported";
    case MG_ERR_OOM: return "out of memory";
    case MG_ERR_CUDA: return "cuda error";
    case MG_ERR_NUMERIC: return "numeric error";
    }
    return "unknown";
}
