/* train_loop MODEL_DIR DATA_DIR OUT_DIR [--epochs N] [--batch N] [--lr X] [--limit N]
 * A host-driven LoRA fine-tuning loop over a folder of labelled images, through libmedgem's
 * public API only (engine/medgem.h). An image's class is its folder's name when that is a digit
 * 0-7 (DATA_DIR/3/x.png), else what its BreakHis path says (.../SOB/adenosis/.../SOB_B_A-...png).
 * Every 5th image (in a shuffled order) is held out for evaluation after each epoch; the adapter
 * is written to OUT_DIR in PEFT's format at the end.
 *   cc train_loop.c $(pkg-config --cflags --libs medgem) -o train_loop */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <medgem.h>

typedef struct {
    char **path;
    int *label;
    int n, cap;
} image_list;

static int is_image(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
                   !strcasecmp(dot, ".bmp"));
}

/* Collects the labelled images under dir; folder is the name of dir itself. */
static void walk(const char *dir, const char *folder, image_list *l) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) { walk(path, e->d_name, l); continue; }
        if (!is_image(e->d_name)) continue;
        int label = -1;
        if (strlen(folder) == 1 && folder[0] >= '0' && folder[0] <= '7') label = folder[0] - '0';
        else if (medgem_breakhis_label(path, &label) != MEDGEM_OK) continue; /* not labelled: skipped */
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 64;
            l->path = realloc(l->path, (size_t)l->cap * sizeof *l->path);
            l->label = realloc(l->label, (size_t)l->cap * sizeof *l->label);
        }
        l->path[l->n] = strdup(path), l->label[l->n++] = label;
    }
    closedir(d);
}

static int by_path(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void on_progress(void *user, const medgem_train_progress *p) {
    (void)user;
    printf("update %d: loss %.4f lr %.3g grad norm %.3f (%.1f s)\n", p->step, p->loss, p->lr, p->grad_norm, p->seconds);
}

/* Loads images idx[0..n) into pixels and labels. */
static int load_batch(const image_list *l, const int *idx, int n, int S, float *pixels, int *labels) {
    for (int i = 0; i < n; i++) {
        if (medgem_image_load(l->path[idx[i]], S, pixels + (size_t)i * 3 * S * S) != MEDGEM_OK) {
            fprintf(stderr, "%s\n", medgem_last_error());
            return 1;
        }
        labels[i] = l->label[idx[i]];
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR DATA_DIR OUT_DIR [--epochs N] [--batch N] [--lr X] [--limit N] [--answer-loss 1]\n", argv[0]);
        return 2;
    }
    int epochs = 3, batch = 4, limit = 0, answer_loss = 0;
    double lr = 5e-4;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--epochs")) epochs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--lr")) lr = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--limit")) limit = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--answer-loss")) answer_loss = atoi(argv[i + 1]);
    }
    image_list l = { 0 };
    walk(argv[2], "", &l);
    if (l.n < 2) {
        fprintf(stderr, "%s: fewer than 2 labelled images\n", argv[2]);
        return 1;
    }
    /* a reproducible order: sorted, then shuffled by a fixed LCG */
    int *order = malloc((size_t)l.n * sizeof *order);
    for (int i = 0; i < l.n; i++) order[i] = i;
    char **sorted = malloc((size_t)l.n * sizeof *sorted);
    memcpy(sorted, l.path, (size_t)l.n * sizeof *sorted);
    qsort(sorted, (size_t)l.n, sizeof *sorted, by_path);
    for (int i = 0; i < l.n; i++)
        for (int j = 0; j < l.n; j++)
            if (l.path[j] == sorted[i]) order[i] = j;
    free(sorted);
    uint64_t rng = 42;
    for (int i = l.n - 1; i > 0; i--) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        const int j = (int)((rng >> 33) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    const int n_use = limit > 0 && limit < l.n ? limit : l.n; /* the first `limit` of the shuffled order */
    int *train = malloc((size_t)n_use * sizeof *train), *test = malloc((size_t)n_use * sizeof *test), nt = 0, ne = 0;
    for (int i = 0; i < n_use; i++) {
        if (i % 5 == 4) test[ne++] = order[i];
        else train[nt++] = order[i];
    }
    printf("%d images: %d to train, %d held out\n", n_use, nt, ne);

    medgem_model *m = NULL;
    if (medgem_model_open(argv[1], NULL, &m) != MEDGEM_OK) {
        fprintf(stderr, "cannot load %s:\n%s\n", argv[1], medgem_last_error());
        return 1;
    }
    const int S = medgem_model_image_size(m);
    const int per_epoch = (nt + batch - 1) / batch;
    medgem_trainer_options o;
    medgem_trainer_options_init(&o);
    o.lr = lr, o.total_steps = epochs * per_epoch, o.progress = on_progress;
    if (answer_loss) o.loss_on = MEDGEM_LOSS_ON_ANSWER; /* the loss on the class digit only */
    medgem_trainer *t = NULL;
    if (medgem_trainer_create(m, &o, &t) != MEDGEM_OK) {
        fprintf(stderr, "cannot create the trainer:\n%s\n", medgem_model_last_error(m));
        medgem_model_free(m);
        return 1;
    }
    const int cap = batch > ne ? batch : ne;
    float *pixels = malloc((size_t)cap * 3 * S * S * sizeof *pixels);
    int *labels = malloc((size_t)cap * sizeof *labels), rc = 0;
    for (int e = 0; rc == 0 && e < epochs; e++) {
        for (int b = 0; rc == 0 && b < nt; b += batch) {
            const int n = nt - b < batch ? nt - b : batch;
            if ((rc = load_batch(&l, train + b, n, S, pixels, labels))) break;
            if (medgem_trainer_step(t, pixels, labels, n, NULL) != MEDGEM_OK) {
                fprintf(stderr, "step failed:\n%s\n", medgem_trainer_last_error(t));
                rc = 1;
            }
        }
        double acc = 0;
        if (rc == 0 && ne > 0 && (rc = load_batch(&l, test, ne, S, pixels, labels)) == 0) {
            if (medgem_trainer_evaluate(t, pixels, labels, ne, NULL, &acc) != MEDGEM_OK) {
                fprintf(stderr, "evaluation failed:\n%s\n", medgem_trainer_last_error(t));
                rc = 1;
            } else {
                printf("epoch %d: held-out accuracy %.3f\n", e + 1, acc);
            }
        }
    }
    if (rc == 0 && medgem_trainer_save(t, argv[3]) != MEDGEM_OK) {
        fprintf(stderr, "cannot save the adapter:\n%s\n", medgem_trainer_last_error(t));
        rc = 1;
    }
    if (rc == 0) printf("adapter written to %s\n", argv[3]);
    medgem_trainer_free(t);
    medgem_model_free(m);
    for (int i = 0; i < l.n; i++) free(l.path[i]);
    free(l.path), free(l.label);
    free(pixels), free(labels), free(train), free(test), free(order);
    return rc;
}
