/* Training checkpoints on disk: integrity and choice (the files of checkpoint-<step>/ are written
 * by engine/jobs/train.c). state.json, written last, lists every other file of the folder with its
 * byte size and CRC-32 ("files": {"name": {"bytes": N, "crc32": "8 hex digits"}}), so a truncated
 * or bit-flipped file is found before training continues from it. An --out folder keeps the two
 * newest complete checkpoints, so a damaged newest one still leaves one to resume from. */
#ifndef MG_JOBS_TRAIN_CKPT_H
#define MG_JOBS_TRAIN_CKPT_H

#include <stddef.h>

#include "engine/status.h"

/* The "files" object of dir's state.json (every regular file but state.json and temp files,
 * sorted by name): malloc'd JSON text in *json. */
mg_status mg_ckpt_manifest(const char *dir, char **json);

/* MG_OK when dir holds state.json and every file it lists with the listed size and CRC-32;
 * else MG_ERR_FORMAT / MG_ERR_MISSING naming the file and what differs. A state.json without
 * "files" (written before checksums) is accepted as it is. */
mg_status mg_ckpt_verify(const char *dir);

/* The checkpoint a --resume PATH means. PATH is either a checkpoint-<step> folder or a run's
 * --out folder. A checkpoint folder that verifies is used as given; a damaged or incomplete one
 * falls back to the newest complete checkpoint with a smaller step beside it; a run folder gives
 * its newest complete checkpoint. note (may be NULL) receives a sentence when something was
 * skipped ("" otherwise). Fails, naming what was wrong, when nothing complete is left. */
mg_status mg_ckpt_resolve(const char *path, char *dir, size_t dir_cap, char *note, size_t note_cap);

/* The largest n of out_dir's checkpoint-<n>/ folders, complete or not; -1 when there is none. */
int mg_ckpt_newest_step(const char *out_dir);

/* Removes every checkpoint-<n>/ of out_dir with n < keep_step except the newest complete one
 * (keeps the last two). */
void mg_ckpt_prune(const char *out_dir, int keep_step);

/* Removes a folder and the files in it (state.json first, so a half-removed checkpoint is never
 * taken for complete). */
void mg_ckpt_remove(const char *dir);

#endif
