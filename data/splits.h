/* Folds, selection and balancing over a BreakHis index.
 * - Folds (when Folds.csv is absent): 5 independent seeded 70/30 train/test splits by patient,
 *   Spanhol's protocol. A patient is a slide number without its letter suffix ("14-13412"), so
 *   slide 14-13412, filed as both DC and LC, lands on one side. Patients are split class by class
 *   (a patient counts under the class of its first image by key; at least one test patient per
 *   class that has two or more), so every class appears on both sides where it can.
 * - Selection: fold 1-5, magnification (or all), split, then balancing:
 *   binary (the guide: the larger of benign/malignant undersampled to the smaller, seeded),
 *   class (every class down to the smallest present one), or none.
 * All sampling uses data/rng.h, so results are the same on every platform. */
#ifndef MG_SPLITS_H
#define MG_SPLITS_H

#include <stdint.h>

#include "data/breakhis_index.h"

typedef enum { MG_BALANCE_NONE, MG_BALANCE_BINARY, MG_BALANCE_CLASS } mg_balance;

typedef struct {
    int fold;           /* 1-5 */
    int mag;            /* 40, 100, 200, 400; 0 = all */
    mg_bh_split split;  /* MG_BH_SPLIT_TRAIN or MG_BH_SPLIT_TEST */
    mg_balance balance;
    uint64_t seed;      /* balancing seed */
} mg_bh_selection;

/* The guide's selection: fold 1, 100X, binary balancing, seed 42. */
mg_bh_selection mg_bh_selection_default(mg_bh_split split);

/* Sets recs[].split[] for all 5 folds from the patients in the index. */
void mg_bh_make_folds(mg_bh_index *ix, uint64_t seed);

/* The selected record indices, increasing (*idx is malloc'd). An empty result fails with a
 * message naming the selection. */
mg_status mg_bh_select(const mg_bh_index *ix, const mg_bh_selection *sel, int64_t **idx, int64_t *n);

/* Option parsers for the CLI and embedders; fail with MG_ERR_ARG naming the accepted values. */
mg_status mg_balance_parse(const char *s, mg_balance *out);
mg_status mg_split_parse(const char *s, mg_bh_split *out);
mg_status mg_mag_parse(const char *s, int *out);
const char *mg_balance_name(mg_balance b);

/* Applies one command-line selection option (--fold, --mag, --split, --balance, --seed) to sel.
 * Returns 1 when flag is one of them (then *st tells whether value was valid), 0 otherwise. */
int mg_bh_selection_option(const char *flag, const char *value, mg_bh_selection *sel, mg_status *st);

#endif
