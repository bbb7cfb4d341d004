/* A synthetic BreakHis in the Kaggle layout, for tests, for `medgem run` without data, and (real
 * counts) for timing runs at the real data set's size:
 *   <out>/Folds.csv
 *   <out>/BreaKHis_v1/BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<class>/<patient>/<mag>X/<file>.png
 * Same folder names, file-name grammar and quirks as the real set: letter-suffixed slide ids,
 * slide numbers shared across classes (one DC/LC pair like 14-13412, one A/F pair like 14-29960
 * with different suffixes), every fifth patient 4 pixels shorter (700x456 beside 700x460).
 * Each class has its own colour and stripe texture, plus dark "nuclei" whose size and count depend
 * on the class, so a model can learn the classes. Pixels use integer arithmetic and data/rng.h
 * only: the same options give the same bytes on every platform. Folds.csv holds the folds
 * mg_bh_make_folds builds (seed MG_BH_FOLD_SEED), so all three source forms agree (with real_counts,
 * fold 1 of Folds.csv is the planned one instead, below). */
#ifndef MG_SYNTH_H
#define MG_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/status.h"

typedef struct {
    int patients;       /* patients in all, dealt round-robin over the 8 classes (>= 8) */
    int images;         /* images per patient and magnification */
    bool real_counts;   /* instead of patients/images: BreakHis v1's 82 patients and 7,909 images, per
                         * class and magnification as in the real set (spec/breakhis.md §1.4), and a
                         * fold 1 whose 100X split has the Kaggle Folds.csv's 383/938 train and 261/499
                         * test benign/malignant images, so binary balancing selects the guide's 766 and
                         * 522; 30% of each class's patients are test, one DC/LC slide on both sides (as
                         * 14-13412 is); folds 2-5 as medgem builds them */
    int width, height;  /* image size (some patients get height - 4) */
    uint64_t seed;
} mg_synth_opts;

/* 16 patients, 5 images per patient and magnification (320 images), 700x460, seed 1. */
mg_synth_opts mg_synth_defaults(void);

/* The number of images mg_synth_breakhis writes for o. */
int64_t mg_synth_images(const mg_synth_opts *o);

/* Writes the tree and Folds.csv under out_dir (created if needed). Each file is written to a
 * temporary name and renamed; one syncfs() makes the images durable before Folds.csv, written
 * last with fsync, marks the tree complete. */
mg_status mg_synth_breakhis(const char *out_dir, const mg_synth_opts *o);

/* Renders image `seq` of one patient (class label 0-7) into rgb (h, w, 3). */
void mg_synth_render(int label, int patient, int mag, int seq, uint64_t seed, int w, int h, unsigned char *rgb);

/* Encodes rgb (h, w, 3) as PNG into a malloc'd buffer (zlib level 1). */
mg_status mg_png_encode(const unsigned char *rgb, int w, int h, unsigned char **png, size_t *n);


#endif
