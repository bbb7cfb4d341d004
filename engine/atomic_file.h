/* Files written so a crash never leaves a half-written file under the final name: the bytes go to
 * a temp file beside the target, which is fsynced, renamed over the target, and the directory is
 * fsynced so the rename itself is durable. Checkpoints, adapters, CSVs and Folds.csv use this.
 * Also the whole-file read that JSON files, copies and the training log's trim share. */
#ifndef MG_ATOMIC_FILE_H
#define MG_ATOMIC_FILE_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/status.h"

/* Writes the n_parts buffers in order as the new content of path. durable = false skips the two
 * fsyncs (for many small files made durable later by one syncfs, as `medgem data synth` does). */
mg_status mg_write_parts_atomic(const char *path, const void *const *parts, const size_t *sizes, int n_parts,
                                bool durable);

/* One buffer, durable. */
mg_status mg_write_file_atomic(const char *path, const void *bytes, size_t n);

/* The whole of path in *bytes (malloc'd, NUL after the *n bytes; free it), or MG_ERR_IO naming the
 * file (MG_ERR_OOM when it does not fit). */
mg_status mg_read_file(const char *path, char **bytes, size_t *n);

/* `mkdir -p path`: every missing folder on the way, 0755; existing ones are fine. */
mg_status mg_make_dirs(const char *path);

#endif
