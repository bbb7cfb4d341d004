/* train_log.jsonl, one JSON object a line (docs/cli.md, `medgem train`): the lines the training
 * loop writes, and the trim a resumed run does before it appends. */
#ifndef MG_JOBS_TRAIN_LOG_H
#define MG_JOBS_TRAIN_LOG_H

#include <stdbool.h>
#include <stdio.h>

#include "engine/jobs/train.h"

/* One optimizer update: {"step", "epoch" (fractional), "loss", "lr", "grad_norm", "images_per_s",
 * "seconds"[, "skipped": true]}; a loss or norm that is not finite is written as null. */
void mg_train_log_step(FILE *log, int step, double epoch, double loss, double lr, double grad_norm,
                       double images_per_s, double seconds, bool skipped);

/* One evaluation: {"eval": {"epoch", "step", "images", the metrics, "seconds"}}. */
void mg_train_log_eval(FILE *log, int epoch, int step, const mg_eval_result *r);

/* Fills e's host_rss, host_peak (this process) and device_used (-1 on the CPU backend). */
void mg_train_epoch_memory(const mg_backend *be, mg_train_epoch *e);

/* The end of an epoch: {"epoch_end": {"epoch", "updates", "seconds", the memory}}. */
void mg_train_log_epoch(FILE *log, const mg_train_epoch *e);

/* Before a run resumed after `step` updates appends: drops the lines of later updates, evaluations
 * and epoch ends (written by the run that died after its last checkpoint, and about to be written
 * again) and a torn last line, so that every update appears once. Rewritten atomically; a missing
 * log is left missing. */
mg_status mg_train_log_trim(const char *path, int step);

#endif
