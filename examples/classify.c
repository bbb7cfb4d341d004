/* classify MODEL_DIR IMAGE...: each image's BreakHis class and its 8 probabilities, through
 * libmedgem's public API only (engine/medgem.h). MEDGEM_BACKEND=cpu|cuda|auto picks the backend.
 *   cc classify.c $(pkg-config --cflags --libs medgem) -o classify */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <medgem.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR IMAGE...\n", argv[0]);
        return 2;
    }
    medgem_model_options o;
    medgem_model_options_init(&o);
    const char *be = getenv("MEDGEM_BACKEND");
    if (be && !strcmp(be, "cpu")) o.backend = MEDGEM_BACKEND_CPU;
    if (be && !strcmp(be, "cuda")) o.backend = MEDGEM_BACKEND_CUDA;

    medgem_model *m = NULL;
    if (medgem_model_open(argv[1], &o, &m) != MEDGEM_OK) {
        fprintf(stderr, "cannot load %s:\n%s\n", argv[1], medgem_last_error());
        return 1;
    }
    fprintf(stderr, "libmedgem %s on %s\n", medgem_version(), medgem_model_backend(m));

    const int n = argc - 2, S = medgem_model_image_size(m);
    const size_t per = (size_t)3 * S * S;
    float *pixels = malloc((size_t)n * per * sizeof *pixels);
    medgem_prediction *p = malloc((size_t)n * sizeof *p);
    int rc = pixels && p ? 0 : 1;
    for (int i = 0; rc == 0 && i < n; i++)
        if (medgem_image_load(argv[2 + i], S, pixels + i * per) != MEDGEM_OK) {
            fprintf(stderr, "%s\n", medgem_last_error());
            rc = 1;
        }
    if (rc == 0 && medgem_classify(m, pixels, n, p) != MEDGEM_OK) {
        fprintf(stderr, "classify failed:\n%s\n", medgem_model_last_error(m));
        rc = 1;
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        printf("%s: %d %s\n", argv[2 + i], p[i].label, medgem_class_name(p[i].label));
        for (int k = 0; k < MEDGEM_NUM_CLASSES; k++) printf("  %d %-30s %.5f\n", k, medgem_class_name(k), p[i].probs[k]);
    }
    free(pixels);
    free(p);
    medgem_model_free(m);
    return rc;
}
