/* Ctrl-C (the jobs' stop flag) while an evaluation runs, on the CPU with the tiny golden model and a
 * small synthetic BreakHis. The flag is raised from the evaluation's progress callback, so the stop
 * lands inside the evaluation every time (a signal from outside would race the short loop):
 * 1. training, during epoch 1's evaluation: the evaluation ends after its batch in flight, the run
 *    returns interrupted with a checkpoint of the completed epoch and no evaluation line; resumed, it
 *    ends with the adapter bytes of an uninterrupted run and logs each update once;
 * 2. `medgem run`, during the baseline evaluation: it stops before training, saying so;
 * 3. `medgem run`, during training: it stops naming --resume; a new run there without --resume is
 *    refused; `--resume` trains only the updates left and ends with the uninterrupted run's adapter
 *    bytes, log and final accuracy;
 * 4. `medgem run`, during the final evaluation: it stops naming the trained adapter, which exists;
 *    `--resume` then trains nothing and finishes the report; a new run (no --resume) trains again. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/backend.h"
#include "engine/jobs/run.h"
#include "engine/jobs/train.h"
#include "model/medgem_model.h"
#include "tests/synth_fixture.h"

#define MODEL "tests/golden/tiny"
#define WORK "build/test_train_stop"
#define DATA WORK "/synth"

static volatile sig_atomic_t stop_flag;
static int armed; /* the progress callback raises the flag only while armed */

static void raise_stop(void *user, int64_t done, int64_t total, double seconds) {
    (void)user, (void)done, (void)total, (void)seconds;
    if (armed) stop_flag = 1;
}

static int count_lines(const char *path, const char *needle) {
    size_t n;
    char *s = test_slurp(path, &n);
    int c = 0;
    for (char *p = s, *nl; p && (nl = strchr(p, '\n')); p = nl + 1) {
        *nl = 0;
        c += strstr(p, needle) != NULL;
    }
    free(s);
    return c;
}

static mg_train_opts train_opts(const char *out) {
    mg_train_opts o = mg_train_defaults();
    o.loss_on = MG_LOSS_ON_SEED, o.lr = 2e-3, o.batch = 2, o.grad_accum = 2, o.epochs = 2, o.eval_every = 1;
    o.threads = 1, o.eval.threads = 1, o.eval.batch = 4, o.out_dir = out;
    return o;
}

/* 1. training */
static void test_train(mg_model *m, const mg_bh_index *ix) {
    mg_bh_selection sel = mg_bh_selection_default(MG_BH_SPLIT_TRAIN);
    int64_t *train = NULL, *test = NULL, n_train = 0, n_test = 0;
    CHECK(mg_bh_select(ix, &sel, &train, &n_train) == MG_OK, "training selection: %s", mg_last_error());
    sel.split = MG_BH_SPLIT_TEST;
    CHECK(mg_bh_select(ix, &sel, &test, &n_test) == MG_OK, "test selection: %s", mg_last_error());

    mg_train_opts o = train_opts(WORK "/ref");
    mg_train_result ref = { 0 }, part = { 0 }, rest = { 0 };
    CHECK(mg_train_run(m, ix, train, n_train, test, n_test, &o, &ref) == MG_OK && !ref.interrupted,
          "the uninterrupted run: %s", mg_last_error());
    const int per_epoch = ref.steps / 2;

    o = train_opts(WORK "/part");
    o.stop = &stop_flag, o.eval.progress = raise_stop;
    stop_flag = 0, armed = 1;
    const mg_status s = mg_train_run(m, ix, train, n_train, test, n_test, &o, &part);
    armed = 0;
    printf("     stopped in epoch 1's evaluation: %d of %d updates, checkpoint %s\n", part.steps, ref.steps,
           part.checkpoint);
    char want[256];
    snprintf(want, sizeof want, WORK "/part/checkpoint-%d", per_epoch);
    CHECK(s == MG_OK && part.interrupted && part.steps == per_epoch && !strcmp(part.checkpoint, want),
          "interrupted after epoch 1's %d updates with %s (%s; steps %d, checkpoint '%s')", per_epoch, want,
          mg_status_name(s), part.steps, part.checkpoint);
    CHECK(count_lines(WORK "/part/train_log.jsonl", "\"eval\"") == 0, "the stopped evaluation is not logged");
    char state[300];
    snprintf(state, sizeof state, "%s/state.json", want);
    size_t n;
    char *js = test_slurp(state, &n);
    CHECK(js && strstr(js, "\"epoch\": 1, \"micro_batch\": 0"), "the checkpoint starts epoch 2: %s", js ? js : "(none)");
    free(js);

    o = train_opts(WORK "/part");
    o.resume = want;
    stop_flag = 0;
    CHECK(mg_train_run(m, ix, train, n_train, test, n_test, &o, &rest) == MG_OK && !rest.interrupted &&
              rest.steps == ref.steps,
          "the resumed run finishes (%d of %d updates): %s", rest.steps, ref.steps, mg_last_error());
    CHECK(test_same_file(WORK "/ref/adapter/adapter_model.safetensors", WORK "/part/adapter/adapter_model.safetensors"),
          "the resumed adapter has the uninterrupted run's bytes");
    CHECK(count_lines(WORK "/part/train_log.jsonl", "{\"step\": ") == ref.steps,
          "the log holds each of the %d updates once", ref.steps);
    CHECK(count_lines(WORK "/part/train_log.jsonl", "\"eval\"") == 1, "epoch 2's evaluation is logged");
    free(train), free(test);
}

/* Where `medgem run` is stopped: the stage that arms the stop, and for training the update after
 * which it lands (the evaluations raise it from their progress callback). */
typedef struct {
    mg_run_stage at;
    int after_update; /* training: stop once this many updates are done */
    int trained;      /* updates seen by the progress callback (training ran in this call) */
} run_plan;

/* A plan "at" the data stage never stops: that stage runs no evaluation and no training. */
#define NO_STOP MG_RUN_DATA

static void on_stage(void *user, int fold, mg_run_stage stage, const char *what) {
    (void)fold, (void)what;
    run_plan *p = user;
    if (stage == p->at && stage != MG_RUN_TRAIN && stage != NO_STOP) armed = 1;
}

static void on_update(void *user, const mg_train_progress *pr) {
    run_plan *p = user;
    p->trained++;
    if (p->at == MG_RUN_TRAIN && pr->step == p->after_update) stop_flag = 1;
}

static mg_run_opts run_opts(const char *out, run_plan *plan) {
    mg_run_opts o = mg_run_defaults(true);
    o.model_dir = MODEL, o.data = DATA, o.force_cpu = true, o.out_dir = out;
    o.train.epochs = 2, o.train.eval_every = 0, o.train.threads = 1, o.eval.threads = 1;
    o.train.stop = &stop_flag, o.eval.progress = raise_stop, o.train.progress = on_update, o.train.user = plan;
    o.stage = on_stage, o.user = plan;
    return o;
}

/* One mg_run with the stop planned (or none: NO_STOP). */
static mg_status run_once(const char *out, run_plan *plan, bool resume, mg_run_result *r) {
    mg_run_opts o = run_opts(out, plan);
    o.resume = resume;
    stop_flag = 0, armed = plan->at == MG_RUN_BASELINE;
    const mg_status s = mg_run(&o, r);
    armed = 0, stop_flag = 0;
    return s;
}

/* 2-4. medgem run: stopped in the baseline, in training and in the final evaluation; --resume */
static void test_run_stops(void) {
    mg_run_result r;
    run_plan ref_plan = { .at = NO_STOP };
    CHECK(run_once(WORK "/run_ref", &ref_plan, false, &r) == MG_OK, "the uninterrupted run: %s", mg_last_error());
    const int total = r.folds[0].train.steps;
    const double ref_acc = r.folds[0].final.metrics.accuracy;
    mg_run_result_free(&r);

    run_plan base = { .at = MG_RUN_BASELINE };
    mg_status s = run_once(WORK "/run_baseline", &base, false, &r);
    CHECK(s != MG_OK && strstr(mg_last_error(), "interrupted during the baseline evaluation") && base.trained == 0,
          "run stops in the baseline evaluation before training: %s", mg_last_error());
    mg_run_result_free(&r);

    /* in training, after update 3 (a checkpoint): --resume continues to the uninterrupted run's adapter */
    run_plan tr = { .at = MG_RUN_TRAIN, .after_update = 3 };
    s = run_once(WORK "/run_train", &tr, false, &r);
    CHECK(s != MG_OK && strstr(mg_last_error(), "interrupted during training") && strstr(mg_last_error(), "--resume"),
          "run stops in training, naming --resume: %s", mg_last_error());
    mg_run_result_free(&r);
    run_plan none = { .at = NO_STOP };
    s = run_once(WORK "/run_train", &none, false, &r);
    CHECK(s != MG_OK && strstr(mg_last_error(), "holds checkpoints of an earlier run") && strstr(mg_last_error(), "--resume") &&
              none.trained == 0,
          "without --resume, a new run beside those checkpoints is refused, naming --resume: %s", mg_last_error());
    mg_run_result_free(&r);
    run_plan go = { .at = NO_STOP };
    s = run_once(WORK "/run_train", &go, true, &r);
    CHECK(s == MG_OK && go.trained == total - 3 && r.folds[0].train.steps == total,
          "--resume trains the %d updates left (%d) and finishes: %s", total - 3, go.trained, mg_last_error());
    CHECK(test_same_file(WORK "/run_ref/adapter/adapter_model.safetensors", WORK "/run_train/adapter/adapter_model.safetensors"),
          "the resumed run's adapter has the uninterrupted run's bytes");
    CHECK(count_lines(WORK "/run_train/train_log.jsonl", "{\"step\": ") == total, "its log holds each of the %d updates once",
          total);
    CHECK(r.folds[0].final.metrics.accuracy == ref_acc, "and the same final accuracy (%.4f vs %.4f)",
          r.folds[0].final.metrics.accuracy, ref_acc);
    mg_run_result_free(&r);

    /* in the final evaluation: the adapter is on disk; --resume evaluates it without training again */
    run_plan fin = { .at = MG_RUN_FINAL };
    s = run_once(WORK "/run_final", &fin, false, &r);
    struct stat st;
    CHECK(s != MG_OK && strstr(mg_last_error(), "interrupted during the final evaluation") &&
              strstr(mg_last_error(), "/adapter") && stat(WORK "/run_final/adapter/adapter_model.safetensors", &st) == 0,
          "run stops in the final evaluation, naming the saved adapter: %s", mg_last_error());
    mg_run_result_free(&r);
    run_plan again = { .at = NO_STOP };
    s = run_once(WORK "/run_final", &again, true, &r);
    CHECK(s == MG_OK && again.trained == 0 && r.folds[0].train.steps == total &&
              r.folds[0].final.metrics.accuracy == ref_acc && stat(WORK "/run_final/report.html", &st) == 0,
          "--resume after it trains nothing, reports %d updates and the reference accuracy, writes the report: %s",
          total, mg_last_error());
    mg_run_result_free(&r);

    /* without --resume, the folder's record of the finished training is dropped: a new run trains */
    run_plan fresh = { .at = NO_STOP };
    s = run_once(WORK "/run_final", &fresh, false, &r);
    CHECK(s == MG_OK && fresh.trained == total, "a new run in that folder trains again (%d updates): %s", fresh.trained,
          mg_last_error());
    mg_run_result_free(&r);
}

int main(void) {
    test_fresh_synth(WORK, DATA);
    const mg_backend *be = NULL;
    char desc[256];
    mg_model m = { 0 };
    mg_bh_index *ix = NULL;
    CHECK(mg_backend_open(true, &be, desc, sizeof desc) == MG_OK && mg_model_open(&m, be, MODEL) == MG_OK &&
              mg_bh_index_open(DATA, MG_BAD_SKIP, &ix) == MG_OK,
          "model and data: %s", mg_last_error());
    if (ix) test_train(&m, ix);
    mg_bh_index_free(ix);
    mg_model_free(&m);
    mg_backend_close(be);
    test_run_stops();
    return test_finish();
}
