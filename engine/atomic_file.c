#include "engine/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return 0;
        p += w, n -= (size_t)w;
    }
    return 1;
}

static void fsync_parent_dir(const char *path) {
    char *dir = strdup(path);
    int dfd = dir ? open(dirname(dir), O_RDONLY | O_DIRECTORY) : -1;
    if (dfd >= 0) fsync(dfd), close(dfd);
    free(dir);
}

mg_status mg_write_parts_atomic(const char *path, const void *const *parts, const size_t *sizes, int n_parts,
                                bool durable) {
    const size_t cap = strlen(path) + 16;
    char *tmp = malloc(cap);
    if (!tmp) return mg_fail(MG_ERR_OOM, NULL, "out of memory writing %s", path);
    snprintf(tmp, cap, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        mg_status s = mg_fail(MG_ERR_IO, "check that the directory exists and is writable",
                              "cannot create a temp file beside %s: %s", path, strerror(errno));
        free(tmp);
        return s;
    }
    fchmod(fd, 0644); /* mkstemp makes 0600; the target is an ordinary shared file */
    int ok = 1;
    for (int i = 0; ok && i < n_parts; i++) ok = write_all(fd, parts[i], sizes[i]);
    ok = ok && (!durable || fsync(fd) == 0);
    int err = errno;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        if (ok) err = errno;
        unlink(tmp);
        free(tmp);
        return mg_fail(MG_ERR_IO, "check the free disk space and the permissions", "cannot write %s: %s", path,
                       strerror(err));
    }
    free(tmp);
    if (durable) fsync_parent_dir(path);
    return MG_OK;
}

mg_status mg_write_file_atomic(const char *path, const void *bytes, size_t n) {
    return mg_write_parts_atomic(path, &bytes, &n, 1, true);
}

mg_status mg_make_dirs(const char *path) {
    char buf[4800];
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf)
        return mg_fail(MG_ERR_ARG, NULL, "path too long: %s", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        const char c = *p;
        *p = '\0';
        if (mkdir(buf, 0755) && errno != EEXIST)
            return mg_fail(MG_ERR_IO, "check that the parent folder is writable", "cannot create folder %s: %s", buf,
                           strerror(errno));
        *p = c;
        if (!c) return MG_OK;
    }
}

mg_status mg_read_file(const char *path, char **bytes, size_t *n) {
    *bytes = NULL, *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return mg_fail(MG_ERR_IO, "check that the file exists and is readable", "cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 1 >= cap) { /* room for the bytes and the NUL */
            char *grown = realloc(buf, cap = cap ? 2 * cap : 1 << 16);
            if (!grown) {
                free(buf), fclose(f);
                return mg_fail(MG_ERR_OOM, NULL, "out of memory reading %s", path);
            }
            buf = grown;
        }
        got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
    } while (got > 0);
    const int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return mg_fail(MG_ERR_IO, NULL, "error reading %s", path);
    }
    buf[len] = 0;
    *bytes = buf, *n = len;
    return MG_OK;
}
