/* The leakage report for a train/test selection:
 * - patients: slide numbers (letter suffix removed, spec/breakhis.md §3.2) with images on both sides;
 * - duplicates: byte-identical images filed under different labels (the DC/LC 14-13412 twins),
 *   anywhere in train ∪ test. Files are hashed (FNV-1a 64 over all bytes), then equal hashes are
 *   confirmed byte by byte. */
#ifndef MG_LEAKAGE_H
#define MG_LEAKAGE_H

#include <stdint.h>

#include "data/breakhis_index.h"

typedef struct {
    char (*patients)[32];   /* (n_patients) slide numbers in both splits, sorted */
    int64_t n_patients;
    int64_t (*duplicates)[2]; /* (n_duplicates, 2) record index pairs, lower index first */
    int64_t n_duplicates;
} mg_bh_leaks;

mg_status mg_bh_find_leaks(const mg_bh_index *ix, const int64_t *train, int64_t ntrain, const int64_t *test, int64_t ntest,
                           mg_bh_leaks *out);
void mg_bh_leaks_free(mg_bh_leaks *l);

#endif
