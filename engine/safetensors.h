/* safetensors files: read by mmap with a validated header, written atomically.
 * Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:
 * [begin, end]}, "__metadata__": {...}}, then the data block. Offsets are relative to the data
 * block. The reader checks: N within the file, JSON valid, dtype in {BF16, F16, F32},
 * prod(shape) * dtype size == end - begin, every range inside the data block, no two ranges
 * overlapping. Byte offsets and element counts are size_t/int64_t: the 4B model's embedding alone
 * has 671M elements, and products of dims overflow 32 bits. */
#ifndef MG_SAFETENSORS_H
#define MG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/dtype.h"
#include "engine/status.h"

#define MG_MAX_DIMS 8

typedef struct {
    char *name;
    mg_dtype dtype;
    int ndim;
    int64_t shape[MG_MAX_DIMS]; /* PyTorch order */
    const void *data;           /* points into the mapping */
    size_t nbytes;
    const char *file;           /* path of the file holding it (for messages) */
} mg_st_tensor;

typedef struct {
    char *path;
    void *map;
    size_t map_len;
    mg_st_tensor *tensors;
    int n;
} mg_st_file;

mg_status mg_st_open(const char *path, mg_st_file *f);
void mg_st_close(mg_st_file *f);
const mg_st_tensor *mg_st_find(const mg_st_file *f, const char *name);
int64_t mg_st_numel(const mg_st_tensor *t);

typedef struct {
    const char *name;
    mg_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data; /* numel * dtype size bytes */
} mg_st_entry;

/* Writes a temp file beside path, fsyncs it and renames it over path, so a crash never leaves a
 * half-written file under the final name. metadata: a flat string->string map, may be NULL. */
mg_status mg_st_write(const char *path, const mg_st_entry *entries, int n, const char *const *metadata_kv,
                      int n_metadata);

/* A checkpoint: one model.safetensors, or the shards listed by model.safetensors.index.json. */
typedef struct {
    mg_st_file *files;
    int n_files;
} mg_checkpoint;

mg_status mg_checkpoint_open(const char *dir, mg_checkpoint *ck);
void mg_checkpoint_close(mg_checkpoint *ck);

#endif
