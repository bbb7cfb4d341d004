#include "model/binding_report.h"

#include <stdarg.h>
#include <stdio.h>

void mg_report_note(mg_binding_report *r, int *counter, const char *fmt, ...) {
    (*counter)++;
    if (r->n < MG_REPORT_LINES) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->lines[r->n], sizeof r->lines[0], fmt, ap);
        va_end(ap);
    }
    r->n++;
}

mg_status mg_report_fail(const mg_binding_report *r, const char *hint, const char *what, const char *doing) {
    char list[MG_REPORT_LINES * 244 + 64];
    size_t n = 0;
    for (int i = 0; i < r->n && i < MG_REPORT_LINES; i++) n += (size_t)snprintf(list + n, sizeof list - n, "\n  %s", r->lines[i]);
    if (r->n > MG_REPORT_LINES) snprintf(list + n, sizeof list - n, "\n  ... and %d more", r->n - MG_REPORT_LINES);
    const mg_status code = r->missing                                            ? MG_ERR_MISSING
                           : r->shape && !r->duplicated && !r->unexpected ? MG_ERR_SHAPE
                                                                                 : MG_ERR_FORMAT;
    return mg_fail(code, hint, "%s: %d problem(s) %s (%d missing, %d duplicated, %d unexpected, %d wrong shape):%s", what,
                   r->n, doing, r->missing, r->duplicated, r->unexpected, r->shape, list);
}
