/* safetensors reader (mmap + header validation) and atomic writer. See engine/safetensors.h for
 * the format and the checks. The tensors of a file are kept sorted by name so lookups bisect. */
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/atomic_file.h"
#include "engine/json.h"

#define HINT_CORRUPT "the file is corrupt or not a safetensors file; re-download or regenerate it"

int64_t mg_st_numel(const mg_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static int parse_dtype(const char *s, mg_dtype *out) {
    if (!strcmp(s, "BF16")) *out = MG_BF16;
    else if (!strcmp(s, "F16")) *out = MG_F16;
    else if (!strcmp(s, "F32")) *out = MG_F32;
    else return 0;
    return 1;
}

/* A non-negative integer JSON value that fits a uint64 without loss (JSON numbers are doubles). */
static int json_u64(const mg_json *j, uint64_t *out) {
    if (!j || !mg_json_is_int(j) || j->number < 0) return 0;
    *out = (uint64_t)j->number;
    return 1;
}

typedef struct {
    uint64_t begin, end;
    const char *name;
} range;

static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const mg_st_tensor *)a)->name, ((const mg_st_tensor *)b)->name);
}

/* Fills t from one header entry; data_len is the size of the data block. */
static mg_status parse_entry(const mg_json *e, const char *path, size_t data_len, const uint8_t *data,
                             mg_st_tensor *t, range *r) {
    const char *name = e->key;
    if (e->type != MG_JSON_OBJECT)
        return mg_fail(MG_ERR_FORMAT, HINT_CORRUPT, "%s: header entry '%s' is not an object", path, name);
    const char *dt = mg_json_get_string(e, "dtype", NULL);
    if (!dt) return mg_fail(MG_ERR_FORMAT, HINT_CORRUPT, "%s: tensor '%s' has no dtype string", path, name);
    if (!parse_dtype(dt, &t->dtype))
        return mg_fail(MG_ERR_UNSUPPORTED, "convert the checkpoint to bf16, f16 or f32 (e.g. with torch and safetensors)",
                       "%s: tensor '%s' has dtype %s; medgem reads only BF16, F16 and F32", path, name, dt);
    const mg_json *shape = mg_json_get(e, "shape");
    if (!shape || shape->type != MG_JSON_ARRAY || shape->n > MG_MAX_DIMS)
        return mg_fail(MG_ERR_FORMAT, HINT_CORRUPT, "%s: tensor '%s': shape must be an array of at most %d dims", path,
                       name, MG_MAX_DIMS);
    uint64_t numel = 1;
    t->ndim = shape->n;
    for (int i = 0; i < shape->n; i++) {
        uint64_t d;
        if (!json_u64(&shape->items[i], &d) || d > INT64_MAX)
            return mg_fail(MG_ERR_FORMAT, HINT_CORRUPT, "%s: tensor '%s': shape entry %d is not a non-negative integer",
                           path, name, i);
        t->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(numel, d, &numel))
            return mg_fail(MG_ERR_FORMAT, HINT_CORRUPT, "%s: tensor '%s': shape product overflows", path, name);
    }
    const mg_json *off = mg_json_get(e, "data_offsets");
    if (!off || off->type != MG_JSON_ARRAY || off->n != 2 || !json_u64(&off->items[0], &r->begin) ||
        !json_u64(&off->items[1], &r->end) || r->begin > r->end)
        return mg_fail(MG_ERR_FORMAT, HINT_CORRUPT,
                       "%s: tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= end", path, name);
    if (r->end > data_len)
        return mg_fail(MG_ERR_FORMAT, HINT_CORRUPT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] run past the data block (%zu bytes); the file is "
                       "truncated or corrupt", path, name, (unsigned long long)r->begin, (unsigned long long)r->end,
                       data_len);
    uint64_t want;
    if (__builtin_mul_overflow(numel, (uint64_t)mg_dtype_size(t->dtype), &want) || want != r->end - r->begin)
        return mg_fail(MG_ERR_FORMAT, HINT_CORRUPT,
                       "%s: tensor '%s': %llu elements of %s need %llu bytes but data_offsets span %llu", path, name,
                       (unsigned long long)numel, dt, (unsigned long long)(numel * mg_dtype_size(t->dtype)),
                       (unsigned long long)(r->end - r->begin));
    t->data = data + r->begin;
    t->nbytes = (size_t)want;
    return MG_OK;
}

/* Validates the header JSON and fills f->tensors. */
static mg_status parse_header(mg_st_file *f, const char *json, size_t json_len, const uint8_t *data, size_t data_len) {
    mg_json *h = NULL;
    MG_TRY(mg_json_parse(json, json_len, f->path, &h));
    mg_status s = MG_OK;
    range *ranges = NULL;
    if (h->type != MG_JSON_OBJECT) {
        s = mg_fail(MG_ERR_FORMAT, HINT_CORRUPT, "%s: the header is not a JSON object", f->path);
        goto done;
    }
    f->tensors = calloc((size_t)h->n + 1, sizeof *f->tensors);
    ranges = calloc((size_t)h->n + 1, sizeof *ranges);
    if (!f->tensors || !ranges) { s = mg_fail(MG_ERR_OOM, NULL, "%s: out of memory reading the header", f->path); goto done; }
    for (int i = 0; i < h->n; i++) {
        const mg_json *e = &h->items[i];
        if (!strcmp(e->key, "__metadata__")) continue;
        mg_st_tensor *t = &f->tensors[f->n];
        range *r = &ranges[f->n];
        t->name = strdup(e->key);
        t->file = f->path;
        if (!t->name) { s = mg_fail(MG_ERR_OOM, NULL, "%s: out of memory", f->path); goto done; }
        f->n++;
        r->name = t->name;
        if ((s = parse_entry(e, f->path, data_len, data, t, r)) != MG_OK) goto done;
    }
    /* Overlap check: in begin order, each non-empty range must start at or after the furthest end
     * seen so far (empty tensors occupy no bytes and may sit anywhere). */
    qsort(ranges, (size_t)f->n, sizeof *ranges, cmp_range);
    const range *furthest = NULL;
    for (int i = 0; i < f->n; i++) {
        const range *r = &ranges[i];
        if (r->end == r->begin) continue;
        if (furthest && r->begin < furthest->end) {
            s = mg_fail(MG_ERR_FORMAT, HINT_CORRUPT, "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
                        f->path, furthest->name, (unsigned long long)furthest->begin,
                        (unsigned long long)furthest->end, r->name, (unsigned long long)r->begin,
                        (unsigned long long)r->end);
            goto done;
        }
        if (!furthest || r->end > furthest->end) furthest = r;
    }
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_tensor_name);
    for (int i = 0; i + 1 < f->n; i++)
        if (!strcmp(f->tensors[i].name, f->tensors[i + 1].name)) {
            s = mg_fail(MG_ERR_FORMAT, HINT_CORRUPT, "%s: tensor '%s' appears twice in the header", f->path,
                        f->tensors[i].name);
            goto done;
        }
done:
    free(ranges);
    mg_json_free(h);
    return s;
}

mg_status mg_st_open(const char *path, mg_st_file *f) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return mg_fail(MG_ERR_OOM, NULL, "out of memory");
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        mg_status s = mg_fail(errno == ENOENT ? MG_ERR_MISSING : MG_ERR_IO, "check the path and the permissions",
                              "cannot open %s: %s", path, strerror(errno));
        mg_st_close(f);
        return s;
    }
    struct stat st;
    mg_status s = MG_OK;
    if (fstat(fd, &st) != 0) {
        s = mg_fail(MG_ERR_IO, NULL, "cannot stat %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        s = mg_fail(MG_ERR_IO, "pass the path of a .safetensors file", "%s is not a regular file", path);
    } else if (st.st_size < 8) {
        s = mg_fail(MG_ERR_FORMAT, HINT_CORRUPT, "%s is %lld bytes, shorter than the 8-byte header length field",
                    path, (long long)st.st_size);
    } else {
        f->map_len = (size_t)st.st_size;
        f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            s = mg_fail(MG_ERR_IO, NULL, "cannot mmap %s (%zu bytes): %s", path, f->map_len, strerror(errno));
        }
    }
    close(fd);
    if (s == MG_OK) {
        const uint8_t *b = f->map;
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];  /* little-endian u64 */
        if (n > f->map_len - 8)
            s = mg_fail(MG_ERR_FORMAT, HINT_CORRUPT,
                        "%s: header length %llu runs past the end of the file (%zu bytes); the file is truncated or "
                        "not a safetensors file", path, (unsigned long long)n, f->map_len);
        else
            s = parse_header(f, (const char *)b + 8, (size_t)n, b + 8 + n, f->map_len - 8 - (size_t)n);
    }
    if (s != MG_OK) mg_st_close(f);
    return s;
}

void mg_st_close(mg_st_file *f) {
    if (f->map) munmap(f->map, f->map_len);
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const mg_st_tensor *mg_st_find(const mg_st_file *f, const char *name) {
    mg_st_tensor key = { .name = (char *)name };
    if (!f->n) return NULL;
    return bsearch(&key, f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_tensor_name);
}

/* ---- writer ---------------------------------------------------------------------------------- */

/* Builds the header JSON, padded with spaces to a multiple of 8 bytes as the reference
 * implementation does, so the data block starts 8-byte aligned. */
static mg_status build_header(const mg_st_entry *e, int n, const char *const *kv, int n_kv, char **out, size_t *len) {
    char *buf = NULL;
    size_t sz = 0;
    FILE *m = open_memstream(&buf, &sz);
    if (!m) return mg_fail(MG_ERR_OOM, NULL, "out of memory building a safetensors header");
    fputc('{', m);
    if (n_kv > 0) {
        fputs("\"__metadata__\":{", m);
        for (int i = 0; i < n_kv; i++) {
            if (i) fputc(',', m);
            mg_json_write_string(m, kv[2 * i]);
            fputc(':', m);
            mg_json_write_string(m, kv[2 * i + 1]);
        }
        fputc('}', m);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t nbytes = mg_dtype_size(e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++) nbytes *= (uint64_t)e[i].shape[d];
        if (i || n_kv > 0) fputc(',', m);
        mg_json_write_string(m, e[i].name);
        fprintf(m, ":{\"dtype\":\"%s\",\"shape\":[", mg_dtype_name(e[i].dtype));
        for (int d = 0; d < e[i].ndim; d++) fprintf(m, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
        fprintf(m, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + nbytes));
        off += nbytes;
    }
    fputc('}', m);
    while (ftell(m) % 8) fputc(' ', m);
    if (fclose(m) != 0) { free(buf); return mg_fail(MG_ERR_OOM, NULL, "out of memory building a safetensors header"); }
    *out = buf;
    *len = sz;
    return MG_OK;
}

mg_status mg_st_write(const char *path, const mg_st_entry *entries, int n, const char *const *metadata_kv,
                      int n_metadata) {
    for (int i = 0; i < n; i++)
        if (entries[i].ndim < 0 || entries[i].ndim > MG_MAX_DIMS)
            return mg_fail(MG_ERR_ARG, NULL, "writing %s: tensor '%s' has %d dims (max %d)", path, entries[i].name,
                           entries[i].ndim, MG_MAX_DIMS);
    char *header = NULL;
    size_t hlen = 0;
    MG_TRY(build_header(entries, n, metadata_kv, n_metadata, &header, &hlen));

    /* parts: the 8-byte header length, the header, then each tensor's bytes */
    const void **parts = malloc((size_t)(n + 2) * sizeof *parts);
    size_t *sizes = malloc((size_t)(n + 2) * sizeof *sizes);
    if (!parts || !sizes) {
        free(parts), free(sizes), free(header);
        return mg_fail(MG_ERR_OOM, NULL, "out of memory writing %s", path);
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    parts[0] = len8, sizes[0] = 8;
    parts[1] = header, sizes[1] = hlen;
    for (int i = 0; i < n; i++) {
        size_t nbytes = mg_dtype_size(entries[i].dtype);
        for (int d = 0; d < entries[i].ndim; d++) nbytes *= (size_t)entries[i].shape[d];
        parts[i + 2] = entries[i].data, sizes[i + 2] = nbytes;
    }
    mg_status s = mg_write_parts_atomic(path, parts, sizes, n + 2, true);
    free(parts), free(sizes), free(header);
    return s;
}
