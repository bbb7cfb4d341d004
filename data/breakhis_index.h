/* The BreakHis index: one record per image, from any of the three forms the data comes in:
 *   1. the Kaggle download: <root>/Folds.csv beside <root>/BreaKHis_v1/BreaKHis_v1/histology_slides/...
 *      (Folds.csv's filename column is relative to <root>/BreaKHis_v1/; its 5 folds are used as given);
 *   2. the original BreaKHis_v1.tar.gz, read in place (data/targz.h);
 *   3. a plain folder tree holding histology_slides/ without Folds.csv.
 * Forms 2 and 3 get 5 patient-disjoint folds from mg_bh_make_folds (data/splits.h).
 * Records are sorted by key, so the same images give the same index in every form. */
#ifndef MG_BREAKHIS_INDEX_H
#define MG_BREAKHIS_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "data/breakhis_path.h"
#include "engine/status.h"

#define MG_BH_NFOLDS 5
#define MG_BH_FOLD_SEED 1455 /* the seed of the folds medgem builds when Folds.csv is absent */

typedef enum { MG_BH_SPLIT_NONE = 0, MG_BH_SPLIT_TRAIN = 1, MG_BH_SPLIT_TEST = 2 } mg_bh_split;
typedef enum { MG_BH_FOLDS_CSV, MG_BH_TREE, MG_BH_TARGZ } mg_bh_source;
/* What to do with a bad file (missing, undecodable, unknown class, name contradicting folder). */
typedef enum { MG_BAD_SKIP, MG_BAD_FAIL } mg_bad_policy;

typedef struct {
    char *key;          /* "BreaKHis_v1/histology_slides/breast/.../x.png": Folds.csv's form, same in every source */
    char *path;         /* where the bytes are: a file path, or the member name in the tar.gz */
    int64_t tar_offset; /* first byte in the uncompressed tar stream; -1 for files */
    int64_t size;       /* bytes (files: from stat) */
    int label;          /* 0-7 (MG_BREAKHIS_CLASSES) */
    int binary;         /* 0 benign, 1 malignant */
    int mag;            /* 40, 100, 200, 400 */
    char patient[64];   /* folder-level patient id "SOB_M_DC-14-13412" */
    char slide[32];     /* slide number without letter suffix "14-13412": patients for folds and leakage */
    unsigned char split[MG_BH_NFOLDS]; /* (5) per fold: mg_bh_split */
} mg_bh_record;

typedef struct {
    char *path;   /* the file as the source names it */
    char *reason; /* the error message, first line */
} mg_bh_skip;

typedef struct mg_targz mg_targz;

typedef struct {
    mg_bh_source source;
    char *origin;         /* the path given to mg_bh_index_open */
    mg_bh_record *recs;   /* (n) sorted by key */
    int64_t n;
    mg_bh_skip *skipped;  /* (n_skipped) files left out under MG_BAD_SKIP, with why */
    int64_t n_skipped, cap_skipped;
    mg_targz *tar;        /* the archive reader for MG_BH_TARGZ, else NULL */
} mg_bh_index;

/* Opens a Kaggle root (folder with Folds.csv) or a Folds.csv path, a .tar.gz/.tgz, or a folder
 * tree. Bad files are skipped and listed in ix->skipped, or fail the call, per `on_bad`. */
mg_status mg_bh_index_open(const char *path, mg_bad_policy on_bad, mg_bh_index **out);
void mg_bh_index_free(mg_bh_index *ix);

/* Reads record i's file bytes into a malloc'd buffer (*bytes, *n). */
mg_status mg_bh_read_bytes(const mg_bh_index *ix, int64_t i, unsigned char **bytes, size_t *n);

/* Records a skipped path with mg_last_error()'s first line as the reason. Returns MG_OK or OOM. */
mg_status mg_bh_add_skip(mg_bh_index *ix, const char *path);

const char *mg_bh_source_name(mg_bh_source s);

#endif
