/* The one error listing every problem found while binding tensors to a model (checkpoint weights
 * in model/weights.c, adapter tensors in model/lora.c): missing, duplicated, unexpected and
 * wrong-shape tensors, each counted, the first MG_REPORT_LINES listed in full. */
#ifndef MG_BINDING_REPORT_H
#define MG_BINDING_REPORT_H

#include "engine/status.h"

#define MG_REPORT_LINES 12 /* listed in full: the message buffer (4 KiB) must still hold the HINT */

typedef struct {
    char lines[MG_REPORT_LINES][240];
    int n;                                     /* problems found (may exceed the lines kept) */
    int missing, duplicated, unexpected, shape;/* per kind */
} mg_binding_report;

/* Counts one problem in *counter (one of r's per-kind fields) and keeps its line while there is room. */
void mg_report_note(mg_binding_report *r, int *counter, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The error for a non-empty report: MISSING if anything is missing, SHAPE if only shapes are
 * wrong, FORMAT otherwise; the message is "<what>: N problem(s) <doing> (counts):" and the lines. */
mg_status mg_report_fail(const mg_binding_report *r, const char *hint, const char *what, const char *doing);

#endif
