/* Out-of-memory reports (issue 13): every MG_ERR_OOM says how much was asked for, what for, where
 * (GPU n or the host) and how much was free there; the job that ran out then sets the HINT line
 * to the flags that lower its memory use (--batch, --recompute, --max-memory for train and run;
 * --batch / --eval-batch for eval). Three layers, each knowing one thing:
 *   - the allocation site knows the bytes and what they are for: mg_fail_oom (or, in the CUDA
 *     code, mg_cuda_alloc_for), which queries the free memory at that moment;
 *   - the job knows its flags: mg_oom_hint, on the status it is about to return;
 *   - mg_oom_describe / mg_oom_preflight_describe / mg_fmt_bytes format, with no I/O (unit-tested).
 * Sizes are printed in decimal units (1 GB = 1e9 bytes), those of --max-memory. */
#ifndef MG_OOM_H
#define MG_OOM_H

#include <stddef.h>

#include "engine/status.h"

struct mg_backend;

typedef struct {
    int known;        /* 0: the free memory could not be read (then only the request is reported) */
    int device;       /* CUDA device ordinal; -1: host memory */
    size_t free;      /* bytes free now: cudaMemGetInfo's, or the host's MemAvailable */
    size_t total;     /* bytes in all */
    size_t swap_free; /* host only: free swap, which the pre-flight check counts as room */
} mg_mem_info;

/* "3.2 GB", "512.0 MB", "12.0 kB", "100 bytes" into buf. */
void mg_fmt_bytes(char *buf, size_t cap, double bytes);

/* "allocating 3.2 GB for <what> on GPU 0 failed: 1.1 GB free of 139.8 GB" (on the host: "in host
 * memory"; mi->known == 0: no free/total part). Returns buf. */
const char *mg_oom_describe(char *buf, size_t cap, size_t need, const char *what, const mg_mem_info *mi);
/* "<what> need 8.6 GB on GPU 0, but only 3.1 GB of 139.8 GB is free". Returns buf. */
const char *mg_oom_preflight_describe(char *buf, size_t cap, size_t need, const char *what, const mg_mem_info *mi);

/* The memory be allocates from: the calling thread's current GPU (the backend's device, once bound),
 * or the host's for the CPU backend and when no GPU answers. be may be NULL (the host). */
void mg_mem_query(const struct mg_backend *be, mg_mem_info *mi);
void mg_host_mem(mg_mem_info *mi); /* /proc/meminfo: MemAvailable, MemTotal, SwapFree */

/* Records MG_ERR_OOM with mg_oom_describe's message for an allocation of need bytes on be that
 * failed; what is printf-style. hint may be NULL (the job sets it). */
mg_status mg_fail_oom(const struct mg_backend *be, size_t need, const char *hint, const char *what_fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Before allocating need bytes on be: MG_OK when they can fit (or the free memory is unknown),
 * else MG_ERR_OOM with mg_oom_preflight_describe's message and hint. Counts free swap on the host. */
mg_status mg_mem_preflight(const struct mg_backend *be, size_t need, const char *hint, const char *what);

/* When s is MG_ERR_OOM, the current message's HINT line becomes hint (the job's flags). Returns s. */
mg_status mg_oom_hint(mg_status s, const char *hint);

#endif
