#include "data/targz.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum { WINSIZE = 32768, CHUNK = 65536, BLOCK = 512 };

typedef struct {
    int64_t out;  /* uncompressed offset of this checkpoint */
    int64_t in;   /* compressed offset of the first full byte after it */
    int bits;     /* bits of the byte before `in` that belong to the next deflate block */
    unsigned char *window; /* (WINSIZE) the 32 KiB of output before `out` */
} checkpoint;

struct mg_targz {
    char *path;
    int fd;
    checkpoint *points; /* (npoints) increasing out */
    int64_t npoints;
};

/* ---- tar stream parser: fed the uncompressed bytes in order ------------------------------- */

typedef struct {
    int64_t pos;              /* uncompressed bytes consumed */
    unsigned char hdr[BLOCK]; /* header block being assembled */
    int hfill;
    int64_t skip;             /* data + padding bytes still to pass over */
    int capture;              /* 'L' (GNU long name) or 'x' (pax) while their data is kept */
    char *cap;                /* captured data */
    int64_t cap_len, cap_want;
    char *next_name;          /* name from a preceding 'L' or pax 'path' record */
    mg_tar_member *m;
    int64_t n, cap_m;
    int bad;                  /* 1 after a checksum failure */
} tar_parser;

static int64_t parse_octal(const unsigned char *p, int len) {
    if (p[0] & 0x80) { /* GNU base-256 for sizes beyond 8 GiB */
        int64_t v = p[0] & 0x7f;
        for (int i = 1; i < len; i++) v = (v << 8) | p[i];
        return v;
    }
    int64_t v = 0;
    int i = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\0')) i++;
    for (; i < len && p[i] >= '0' && p[i] <= '7'; i++) v = v * 8 + (p[i] - '0');
    return v;
}

static char *strndup_(const char *s, size_t n) {
    char *r = malloc(n + 1);
    if (!r) return NULL;
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

/* pax records are "<len> <key>=<value>\n"; keeps the value of "path". */
static char *pax_path(const char *d, int64_t n) {
    int64_t i = 0;
    while (i < n) {
        int64_t len = 0, j = i;
        while (j < n && d[j] >= '0' && d[j] <= '9') len = len * 10 + (d[j++] - '0');
        if (len <= 0 || i + len > n || j >= n || d[j] != ' ') return NULL;
        const char *kv = d + j + 1;
        int64_t kvlen = i + len - (j + 1) - 1; /* without the newline */
        if (kvlen > 5 && !memcmp(kv, "path=", 5)) return strndup_(kv + 5, (size_t)(kvlen - 5));
        i += len;
    }
    return NULL;
}

static int header_checksum_ok(const unsigned char *h) {
    int64_t want = parse_octal(h + 148, 8), sum = 0;
    for (int i = 0; i < BLOCK; i++) sum += (i >= 148 && i < 156) ? ' ' : h[i];
    return sum == want;
}

/* Handles one complete header block. Returns 0 on success, -1 on malformed or OOM. */
static int tar_header(tar_parser *tp) {
    const unsigned char *h = tp->hdr;
    int zero = 1;
    for (int i = 0; i < BLOCK && zero; i++) zero = h[i] == 0;
    if (zero) return 0; /* end-of-archive blocks */
    if (!header_checksum_ok(h)) return -1;
    int64_t size = parse_octal(h + 124, 12);
    char type = (char)h[156];
    tp->skip = (size + BLOCK - 1) / BLOCK * BLOCK;
    if (type == 'L' || type == 'x') {
        tp->capture = type;
        tp->cap_want = size;
        tp->cap_len = 0;
        free(tp->cap);
        tp->cap = malloc((size_t)size + 1);
        return tp->cap ? 0 : -1;
    }
    if (type == '0' || type == '\0' || type == '7') {
        char *name = tp->next_name;
        tp->next_name = NULL;
        if (!name) {
            char buf[BLOCK];
            size_t nl = strnlen((const char *)h, 100);
            int ustar = !memcmp(h + 257, "ustar", 5);
            size_t pl = ustar ? strnlen((const char *)h + 345, 155) : 0;
            if (pl) memcpy(buf, h + 345, pl), buf[pl++] = '/';
            memcpy(buf + pl, h, nl);
            name = strndup_(buf, pl + nl);
            if (!name) return -1;
        }
        if (tp->n == tp->cap_m) {
            int64_t c = tp->cap_m ? 2 * tp->cap_m : 256;
            mg_tar_member *m = realloc(tp->m, (size_t)c * sizeof *m);
            if (!m) return free(name), -1;
            tp->m = m, tp->cap_m = c;
        }
        tp->m[tp->n++] = (mg_tar_member){ name, tp->pos, size };
    } else {
        free(tp->next_name); /* a long name for a directory or link: not ours to keep */
        tp->next_name = NULL;
    }
    return 0;
}

static int tar_feed(tar_parser *tp, const unsigned char *p, int64_t n) {
    while (n > 0) {
        if (tp->skip > 0) {
            int64_t k = n < tp->skip ? n : tp->skip;
            if (tp->capture) {
                int64_t keep = tp->cap_want - tp->cap_len;
                if (keep > k) keep = k;
                if (keep > 0) memcpy(tp->cap + tp->cap_len, p, (size_t)keep), tp->cap_len += keep;
            }
            tp->skip -= k, tp->pos += k, p += k, n -= k;
            if (tp->skip == 0 && tp->capture) {
                tp->cap[tp->cap_len] = '\0';
                free(tp->next_name);
                tp->next_name = tp->capture == 'L' ? strndup_(tp->cap, strlen(tp->cap)) : pax_path(tp->cap, tp->cap_len);
                tp->capture = 0;
            }
            continue;
        }
        int64_t k = BLOCK - tp->hfill;
        if (k > n) k = n;
        memcpy(tp->hdr + tp->hfill, p, (size_t)k);
        tp->hfill += (int)k, tp->pos += k, p += k, n -= k;
        if (tp->hfill == BLOCK) {
            tp->hfill = 0;
            if (tar_header(tp)) return -1;
        }
    }
    return 0;
}

/* ---- the scan -------------------------------------------------------------------------------- */

static int add_point(mg_targz *t, int64_t *cap, int bits, int64_t in, int64_t out, unsigned left,
                     const unsigned char *window) {
    if (t->npoints == *cap) {
        int64_t c = *cap ? 2 * *cap : 64;
        checkpoint *p = realloc(t->points, (size_t)c * sizeof *p);
        if (!p) return -1;
        t->points = p, *cap = c;
    }
    checkpoint *pt = &t->points[t->npoints];
    pt->window = malloc(WINSIZE);
    if (!pt->window) return -1;
    pt->bits = bits, pt->in = in, pt->out = out;
    /* the circular window holds the newest output just before next_out: unroll it */
    if (left) memcpy(pt->window, window + WINSIZE - left, left);
    if (left < WINSIZE) memcpy(pt->window + left, window, WINSIZE - left);
    t->npoints++;
    return 0;
}

void mg_targz_close(mg_targz *t) {
    if (!t) return;
    for (int64_t i = 0; i < t->npoints; i++) free(t->points[i].window);
    free(t->points);
    if (t->fd >= 0) close(t->fd);
    free(t->path);
    free(t);
}

mg_status mg_targz_open(const char *path, mg_targz **out, mg_tar_member **members, int64_t *n) {
    *out = NULL, *members = NULL, *n = 0;
    mg_targz *t = calloc(1, sizeof *t);
    unsigned char *input = malloc(CHUNK), *window = malloc(WINSIZE);
    tar_parser tp = { 0 };
    z_stream zs = { 0 };
    mg_status st = MG_OK;
    int z_ok = 0;
    if (!t || !input || !window) { st = mg_fail(MG_ERR_OOM, NULL, "%s: out of memory opening the archive", path); goto done; }
    t->fd = open(path, O_RDONLY);
    t->path = strndup_(path, strlen(path));
    if (t->fd < 0) { st = mg_fail(MG_ERR_IO, "check the --data path", "cannot open %s", path); goto done; }
    struct stat sb;
    fstat(t->fd, &sb);
    /* ~512 checkpoints whatever the size (16 MiB of windows), at least one per MiB */
    int64_t span = sb.st_size / 512 > (1 << 20) ? sb.st_size / 512 : (1 << 20);
    int64_t cap = 0, totin = 0, totout = 0, last = 0;
    if (inflateInit2(&zs, 15 + 16) != Z_OK) { st = mg_fail(MG_ERR_OOM, NULL, "%s: zlib init failed", path); goto done; }
    z_ok = 1;
    int ret = Z_OK;
    do {
        ssize_t got = read(t->fd, input, CHUNK);
        if (got < 0) { st = mg_fail(MG_ERR_IO, NULL, "%s: read error", path); goto done; }
        if (got == 0) { st = mg_fail(MG_ERR_FORMAT, "the archive is truncated: download it again", "%s: unexpected end of gzip data", path); goto done; }
        zs.avail_in = (uInt)got, zs.next_in = input;
        do {
            if (zs.avail_out == 0) zs.avail_out = WINSIZE, zs.next_out = window;
            unsigned char *from = zs.next_out;
            totin += zs.avail_in, totout += zs.avail_out;
            ret = inflate(&zs, Z_BLOCK);
            totin -= zs.avail_in, totout -= zs.avail_out;
            if (ret == Z_NEED_DICT || ret == Z_DATA_ERROR || ret == Z_MEM_ERROR) {
                st = mg_fail(MG_ERR_FORMAT, "medgem reads BreaKHis_v1.tar.gz as published (gzip-compressed tar)",
                             "%s: not valid gzip data (%s)", path, zs.msg ? zs.msg : "inflate error");
                goto done;
            }
            if (tar_feed(&tp, from, zs.next_out - from)) {
                st = mg_fail(MG_ERR_FORMAT, "medgem reads BreaKHis_v1.tar.gz as published (gzip-compressed tar)",
                             "%s: not a tar archive (bad header at byte %lld of the tar stream)", path, (long long)(tp.pos - BLOCK));
                goto done;
            }
            if (ret == Z_STREAM_END) break;
            /* at a deflate block boundary (bit 128), not after the last block (bit 64) */
            if ((zs.data_type & 128) && !(zs.data_type & 64) && (totout == 0 || totout - last > span)) {
                if (add_point(t, &cap, zs.data_type & 7, totin, totout, zs.avail_out, window)) {
                    st = mg_fail(MG_ERR_OOM, NULL, "%s: out of memory indexing the archive", path);
                    goto done;
                }
                last = totout;
            }
        } while (zs.avail_in != 0);
    } while (ret != Z_STREAM_END);
    if (tp.hfill || tp.skip) {
        st = mg_fail(MG_ERR_FORMAT, "the archive is truncated: download it again", "%s: tar stream ends inside a member", path);
        goto done;
    }
    for (int64_t i = 0; i < tp.n; i++)
        if (tp.m[i].offset + tp.m[i].size > totout) { st = mg_fail(MG_ERR_FORMAT, NULL, "%s: member beyond the end", path); goto done; }
done:
    if (z_ok) inflateEnd(&zs);
    free(input), free(window), free(tp.cap), free(tp.next_name);
    if (st != MG_OK) {
        for (int64_t i = 0; i < tp.n; i++) free(tp.m[i].name);
        free(tp.m);
        mg_targz_close(t);
        return st;
    }
    *out = t, *members = tp.m, *n = tp.n;
    return MG_OK;
}

mg_status mg_targz_read(const mg_targz *t, int64_t offset, int64_t size, unsigned char *dst) {
    /* the last checkpoint at or before offset */
    int64_t lo = 0, hi = t->npoints - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (t->points[mid].out <= offset) lo = mid; else hi = mid - 1;
    }
    const checkpoint *pt = &t->points[lo];
    unsigned char *input = malloc(CHUNK), *discard = malloc(WINSIZE);
    z_stream zs = { 0 };
    mg_status st = MG_OK;
    if (!input || !discard || inflateInit2(&zs, -15) != Z_OK) {
        free(input), free(discard);
        return mg_fail(MG_ERR_OOM, NULL, "%s: out of memory reading a member", t->path);
    }
    int64_t in = pt->in - (pt->bits ? 1 : 0);
    if (pt->bits) {
        unsigned char b;
        if (pread(t->fd, &b, 1, in) != 1) { st = mg_fail(MG_ERR_IO, NULL, "%s: read error", t->path); goto done; }
        in++;
        inflatePrime(&zs, pt->bits, b >> (8 - pt->bits));
    }
    if (pt->out > 0) inflateSetDictionary(&zs, pt->window, WINSIZE);
    int64_t skip = offset - pt->out, want = size;
    while (skip > 0 || want > 0) {
        if (skip > 0) zs.next_out = discard, zs.avail_out = (uInt)(skip < WINSIZE ? skip : WINSIZE);
        else zs.next_out = dst + (size - want), zs.avail_out = (uInt)(want < (1 << 30) ? want : (1 << 30));
        uInt asked = zs.avail_out;
        while (zs.avail_out > 0) {
            if (zs.avail_in == 0) {
                ssize_t got = pread(t->fd, input, CHUNK, in);
                if (got <= 0) { st = mg_fail(MG_ERR_IO, NULL, "%s: read error or changed since it was indexed", t->path); goto done; }
                in += got, zs.next_in = input, zs.avail_in = (uInt)got;
            }
            int ret = inflate(&zs, Z_NO_FLUSH);
            if (ret != Z_OK && !(ret == Z_STREAM_END && zs.avail_out == 0)) {
                st = mg_fail(MG_ERR_FORMAT, "the archive changed since it was indexed, or is corrupt", "%s: inflate failed at offset %lld",
                             t->path, (long long)offset);
                goto done;
            }
        }
        if (skip > 0) skip -= asked; else want -= asked;
    }
done:
    inflateEnd(&zs);
    free(input), free(discard);
    return st;
}
