/* Load / classify / train a step / save / free through engine/medgem.h only, for
 * `valgrind --leak-check=full` (docs/api.md reports its summary). The CPU backend, one OpenMP
 * thread (OMP_NUM_THREADS=1 keeps libgomp's pool out of the report).
 *   make build/valgrind/api_lifecycle && OMP_NUM_THREADS=1 valgrind --leak-check=full build/valgrind/api_lifecycle */
#include <stdio.h>
#include <stdlib.h>

#include <medgem.h>

int main(void) {
    medgem_model_options o;
    medgem_model_options_init(&o);
    o.backend = MEDGEM_BACKEND_CPU;
    medgem_model *m = NULL;
    if (medgem_model_open("tests/golden/tiny", &o, &m) != MEDGEM_OK) return fprintf(stderr, "%s\n", medgem_last_error()), 1;
    const int S = medgem_model_image_size(m);
    float *px = malloc((size_t)3 * S * S * sizeof *px);
    medgem_prediction p;
    int rc = medgem_image_load("tests/fixtures/classify/stripes_70x46.png", S, px) || medgem_classify(m, px, 1, &p);
    medgem_trainer *t = NULL;
    const int label = 3;
    medgem_step_info info = { 0 };
    if (!rc) rc = medgem_trainer_create(m, NULL, &t) || medgem_trainer_step(t, px, &label, 1, &info) ||
                  medgem_trainer_save(t, "build/valgrind/adapter");
    medgem_adapter *a = NULL;
    if (!rc) rc = medgem_trainer_adapter(t, &a);
    medgem_trainer_free(t);
    if (!rc) rc = medgem_model_merge_adapter(m, a) || medgem_classify(m, px, 1, &p);
    if (rc) fprintf(stderr, "%s\n", medgem_last_error());
    else printf("class %d, loss of the step %.4f\n", p.label, info.loss);
    medgem_adapter_free(a);
    medgem_model_free(m);
    free(px);
    return rc;
}
