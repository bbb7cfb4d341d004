/* Random access into a .tar.gz without extracting it (the zlib "zran" technique): one pass over
 * the archive lists its regular files and saves an inflate checkpoint (bit position plus the
 * previous 32 KiB window) every `span` bytes of output. Reading a member then restarts inflate at
 * the nearest checkpoint before it, so a read costs at most one span of decompression.
 * Reads are thread safe (each uses its own inflate state and pread). */
#ifndef MG_TARGZ_H
#define MG_TARGZ_H

#include <stdint.h>

#include "engine/status.h"

typedef struct mg_targz mg_targz;

typedef struct {
    char *name;      /* member path inside the archive ("BreaKHis_v1/histology_slides/...") */
    int64_t offset;  /* first data byte in the uncompressed tar stream */
    int64_t size;    /* bytes */
} mg_tar_member;

/* Scans path once. On success *members holds *n regular-file members (free each name, then the
 * array) and *out the reader. Fails naming the file when it is not gzip or not tar. */
mg_status mg_targz_open(const char *path, mg_targz **out, mg_tar_member **members, int64_t *n);
/* Copies size bytes starting at uncompressed offset into dst. */
mg_status mg_targz_read(const mg_targz *t, int64_t offset, int64_t size, unsigned char *dst);
void mg_targz_close(mg_targz *t);

#endif
