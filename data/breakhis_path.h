/* BreakHis naming facts (spec/breakhis.md §1.2, §2.4; spec/seed-pipeline.md step 3) and the parser
 * that turns an image path into labels:
 *   .../<benign|malignant>/SOB/<class folder>/SOB_<B|M>_<type>_14-<slide>/<mag>X/SOB_<B|M>_<type>-14-<slide>-<mag>-<seq>.png
 * The folder decides the label; the file name must agree with it (a contradiction is bad input). */
#ifndef MG_BREAKHIS_PATH_H
#define MG_BREAKHIS_PATH_H

#include "engine/status.h"

#define MG_BREAKHIS_NCLASSES 8

/* Label i's name, as in the prompt: "benign_adenosis" ... "malignant_papillary_carcinoma". */
extern const char *const MG_BREAKHIS_CLASSES[MG_BREAKHIS_NCLASSES];
/* Label i's folder in the archive: "adenosis" ... "papillary_carcinoma". */
extern const char *const MG_BREAKHIS_CLASS_FOLDERS[MG_BREAKHIS_NCLASSES];
/* Label i's subtype code in file names: "A", "F", "PT", "TA", "DC", "LC", "MC", "PC". */
extern const char *const MG_BREAKHIS_TYPE_CODES[MG_BREAKHIS_NCLASSES];

/* Binary label of a class label: 0-3 benign (0), 4-7 malignant (1). */
static inline int mg_breakhis_binary(int label) { return label >= 4; }

/* What one image path says about its image. */
typedef struct {
    int label;         /* 0-7, from the class folder */
    int binary;        /* 0 benign, 1 malignant */
    int mag;           /* 40, 100, 200 or 400 */
    int seq;           /* image number inside patient and magnification */
    char patient[64];  /* folder-level patient id, "SOB_M_DC-14-13412" (keeps letter suffixes) */
    char slide[32];    /* slide number without letter suffix, "14-13412": the strict patient id */
    char key[512];     /* the path from BreaKHis_v1/ on, as Folds.csv writes it */
} mg_bh_path_info;

/* Parses the last six components of path. Fails with MG_ERR_FORMAT naming the path when a
 * component is unknown or the file name contradicts its folders. */
mg_status mg_bh_parse_path(const char *path, mg_bh_path_info *out);

/* 1 when name ends in an image extension medgem decodes (.png .jpg .jpeg .bmp, any case). */
int mg_bh_is_image_name(const char *name);

#endif
