/* Errors are values: every library function that can fail on user input returns an mg_status and
 * records a message the caller fetches with mg_last_error(). The message names the file or tensor
 * and ends with a "HINT:" line saying what to do. Nothing in the library calls exit() or abort()
 * on user input; asserts guard programmer errors only. The message buffer is per thread (like
 * errno), so it is the one piece of state that is not carried in a context. */
#ifndef MG_STATUS_H
#define MG_STATUS_H

typedef enum {
    MG_OK = 0,
    MG_ERR_IO,          /* a file could not be opened, read, written or mapped */
    MG_ERR_FORMAT,      /* a file is malformed: bad header, bad JSON, bad image */
    MG_ERR_SHAPE,       /* a tensor or argument has the wrong shape */
    MG_ERR_MISSING,     /* something required is absent: a tensor, a file, a key */
    MG_ERR_ARG,         /* a bad argument or option value */
    MG_ERR_UNSUPPORTED, /* valid input that medgem does not handle (yet) */
    MG_ERR_OOM,         /* host or device memory exhausted */
    MG_ERR_CUDA,        /* a CUDA or cuBLASLt call failed */
    MG_ERR_NUMERIC,     /* NaN or Inf where a finite value is required */
} mg_status;

/* Records "msg" (printf-style) plus an optional hint line and returns code, so callers write
 * `return mg_fail(MG_ERR_IO, "check the path", "cannot open %s", path);`. hint may be NULL. */
mg_status mg_fail(mg_status code, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends context ("loading model dir X: ") to the current message; returns code unchanged. */
mg_status mg_fail_context(mg_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Replaces the current message's "HINT:" line with hint (adds one when there is none); the line and
 * anything after it are dropped. For a caller that knows better what to do than the failing code. */
void mg_set_hint(const char *hint);

const char *mg_last_error(void);  /* "" when no error has been recorded on this thread */
void mg_clear_error(void);
const char *mg_status_name(mg_status s);

/* Propagate a failing status unchanged. */
#define MG_TRY(expr)                          \
    do {                                      \
        mg_status mg_try_s_ = (expr);         \
        if (mg_try_s_ != MG_OK) return mg_try_s_; \
    } while (0)

#endif
