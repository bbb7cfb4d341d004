/* The guide's workflow as one job (engine/jobs/run.h). */
#include "engine/jobs/run.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/clock.h"
#include "data/synth.h"
#include "engine/atomic_file.h"
#include "engine/json.h"
#include "engine/jobs/merge.h"
#include "engine/jobs/report.h"
#include "engine/jobs/train_ckpt.h"
#include "engine/medgem.h"
#include "engine/oom.h"
#include "model/lora.h"

/* accuracy and F1 of task (8-class, binary) x model (baseline, fine-tuned) */
const double MG_GUIDE_RESULTS[2][2][2] = { { { 0.326, 0.241 }, { 0.872, 0.865 } },
                                           { { 0.596, 0.639 }, { 0.990, 0.991 } } };

mg_run_opts mg_run_defaults(bool embedded) {
    mg_run_opts o = { .sel = mg_bh_selection_default(MG_BH_SPLIT_TRAIN), .train = mg_train_defaults(),
                      .eval = mg_eval_defaults() };
    if (embedded) {
        o.train.loss_on = MG_LOSS_ON_ANSWER;
        o.train.lr = 5e-3;
        o.train.epochs = 3;
        o.train.batch = 4;
        o.train.grad_accum = 1;
        o.train.max_grad_norm = 1;
        o.train.warmup_ratio = 0;
    }
    return o;
}

bool mg_run_is_guide_selection(const mg_run_opts *o) {
    return !o->all_folds && o->sel.fold == 1 && o->sel.mag == 100 && o->sel.balance == MG_BALANCE_BINARY;
}

static bool is_model_dir(const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    return access(p, R_OK) == 0;
}

mg_status mg_run_find_tiny_model(char *dir, size_t cap) {
    char exe[4096], tried[8400] = "";
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        /* build/medgem, a sanitizer build (build/san-address/medgem), build/tests/x: up to the repository */
        static const char *const rel[] = { "/../tests/golden/tiny", "/../../tests/golden/tiny", "/tests/golden/tiny" };
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
            char p[4200];
            snprintf(p, sizeof p, "%s%s", exe, rel[i]);
            char *real = realpath(p, NULL);
            if (real && is_model_dir(real) && strlen(real) < cap) {
                snprintf(dir, cap, "%s", real);
                free(real);
                return MG_OK;
            }
            free(real);
            if (i == 0) snprintf(tried, sizeof tried, "%s", p);
        }
    }
    if (is_model_dir("tests/golden/tiny")) {
        char *real = realpath("tests/golden/tiny", NULL);
        snprintf(dir, cap, "%s", real ? real : "tests/golden/tiny");
        free(real);
        return MG_OK;
    }
    return mg_fail(MG_ERR_MISSING, "run medgem from its repository (build/medgem), or give --model DIR",
                   "the embedded tiny model is missing: no tests/golden/tiny/config.json at %s or in the working "
                   "directory",
                   tried[0] ? tried : "(the executable's folder is unknown)");
}

/* ---- the data of one fold --------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void count_split(const mg_bh_index *ix, const int64_t *idx, int64_t n, mg_run_split_counts *c) {
    memset(c, 0, sizeof *c);
    c->images = n;
    const char **p = malloc(((size_t)n + 1) * sizeof *p);
    if (!p) return;
    for (int64_t i = 0; i < n; i++) c->class_images[ix->recs[idx[i]].label]++, p[i] = ix->recs[idx[i]].patient;
    qsort(p, (size_t)n, sizeof *p, cmp_str);
    for (int64_t i = 0; i < n; i++) {
        if (i && !strcmp(p[i - 1], p[i])) continue;
        c->patients++;
        /* the patient folder names its class: SOB_<B|M>_<class code>-... ; find it from any record */
        for (int64_t j = 0; j < n; j++)
            if (!strcmp(ix->recs[idx[j]].patient, p[i])) { c->class_patients[ix->recs[idx[j]].label]++; break; }
    }
    free(p);
}

static double binary_patient_rate(const mg_eval_result *e) {
    int *ok = malloc(((size_t)e->n + 1) * sizeof *ok);
    if (!ok) return NAN;
    for (int64_t i = 0; i < e->n; i++) ok[i] = e->preds[i] >= 0 && (e->preds[i] >= 4) == (e->labels[i] >= 4);
    const double rate = mg_patient_rate(e->patients, ok, e->n, NULL);
    free(ok);
    return rate;
}

static void stage(const mg_run_opts *o, int fold, mg_run_stage s, const char *what) {
    if (o->stage) o->stage(o->user, fold, s, what);
}

/* Evaluations run with --eval-batch images per forward (training's own hint comes from mg_train_run). */
static const char *OOM_HINT_EVAL = "lower --eval-batch (images per evaluation forward)";

/* ---- a fold's finished training, so that --resume does not repeat it ---------------------------- */

static void train_done_path(const mg_run_fold *f, char *path, size_t cap) {
    snprintf(path, cap, "%s/train_done.json", f->dir);
}

/* Written (atomically) once the fold's adapter is saved: the training summary the report shows. */
static mg_status write_train_done(const mg_run_fold *f) {
    char path[4400], loss[32] = "null", json[256];
    train_done_path(f, path, sizeof path);
    if (isfinite(f->train.last_loss)) snprintf(loss, sizeof loss, "%.9g", f->train.last_loss);
    const int n = snprintf(json, sizeof json, "{\"steps\": %d, \"loss\": %s, \"images\": %lld, \"seconds\": %.3f}\n",
                           f->train.steps, loss, (long long)f->train.images, f->t_train);
    return mg_write_file_atomic(path, json, (size_t)n);
}

/* --resume: the summary an earlier call recorded when this fold's training finished; false if none. */
static bool read_train_done(mg_run_fold *f) {
    char path[4400];
    train_done_path(f, path, sizeof path);
    mg_json *j = NULL;
    if (mg_json_parse_file(path, &j) != MG_OK) { /* none (or unreadable): the fold trains */
        mg_clear_error();
        return false;
    }
    f->train.steps = (int)mg_json_get_number(j, "steps", 0);
    f->train.last_loss = mg_json_get_number(j, "loss", NAN);
    f->train.images = (int64_t)mg_json_get_number(j, "images", 0);
    f->t_train = f->train.seconds = mg_json_get_number(j, "seconds", 0);
    mg_json_free(j);
    return true;
}

/* One fold of the workflow on backend be. */
static mg_status run_fold(const mg_run_opts *o, const mg_backend *be, const mg_bh_index *ix, const char *model_dir,
                          mg_run_fold *f) {
    char path[4400];
    MG_TRY(mg_make_dirs(f->dir));
    const int earlier = o->resume ? -1 : mg_ckpt_newest_step(f->dir);
    if (earlier >= 0) /* before any work: the training would refuse to start beside them */
        return mg_fail(MG_ERR_ARG, "continue that run with --resume, give another --out, or remove its checkpoint-* folders",
                       "%s holds checkpoints of an earlier run (the newest: checkpoint-%d)", f->dir, earlier);
    mg_bh_selection sel = o->sel;
    sel.fold = f->fold;
    int64_t *train = NULL, *test = NULL;
    mg_model m = { 0 };
    mg_classifier cl = { 0 };
    mg_status s;
    sel.split = MG_BH_SPLIT_TRAIN;
    if ((s = mg_bh_select(ix, &sel, &train, &f->n_train)) != MG_OK) goto done;
    sel.split = MG_BH_SPLIT_TEST;
    if ((s = mg_bh_select(ix, &sel, &test, &f->n_test)) != MG_OK) goto done;
    count_split(ix, train, f->n_train, &f->counts[0]);
    count_split(ix, test, f->n_test, &f->counts[1]);
    if ((s = mg_bh_find_leaks(ix, train, f->n_train, test, f->n_test, &f->leaks)) != MG_OK) goto done;

    stage(o, f->fold, MG_RUN_LOAD, model_dir);
    double t = mg_now_s();
    if ((s = mg_model_open(&m, be, model_dir)) != MG_OK) goto done;
    const mg_classifier_opts co = { .text = o->prompt_text, .guide_path = o->train.guide_path };
    if ((s = mg_classifier_init(&cl, &m, &co)) != MG_OK) goto done;
    f->t_load = mg_now_s() - t;

    /* 2. the untouched model */
    stage(o, f->fold, MG_RUN_BASELINE, "baseline evaluation of the untouched model");
    mg_eval_opts eo = o->eval;
    eo.stop = o->train.stop; /* Ctrl-C ends an evaluation too, after its batch in flight */
    t = mg_now_s();
    if ((s = mg_eval_run(&cl, ix, test, f->n_test, &eo, &f->baseline)) != MG_OK) {
        mg_oom_hint(s, OOM_HINT_EVAL);
        goto done;
    }
    if (f->baseline.stopped) {
        s = mg_fail(MG_ERR_ARG, NULL, "interrupted during the baseline evaluation; nothing was trained yet");
        goto done;
    }
    f->t_baseline = mg_now_s() - t;
    f->bin_patient_rate[0] = binary_patient_rate(&f->baseline);
    snprintf(path, sizeof path, "%s/predictions_baseline.csv", f->dir);
    if ((s = mg_eval_write_csv(path, ix, &f->baseline)) != MG_OK) goto done;

    /* 3. LoRA training; with --resume from the fold's newest checkpoint, or not at all if it finished */
    if (!o->resume) { /* an earlier run's record in this folder says nothing about this one */
        train_done_path(f, path, sizeof path);
        remove(path);
    }
    if (!o->resume || !read_train_done(f)) {
        stage(o, f->fold, MG_RUN_TRAIN, "LoRA training");
        mg_train_opts to = o->train;
        to.out_dir = f->dir;
        to.prompt_text = o->prompt_text;
        if (o->resume && mg_ckpt_newest_step(f->dir) >= 0) to.resume = f->dir;
        t = mg_now_s();
        s = mg_train_run(&m, ix, train, f->n_train, test, f->n_test, &to, &f->train);
        f->t_train = mg_now_s() - t;
        if (s != MG_OK) goto done;
        if (f->train.interrupted) {
            s = mg_fail(MG_ERR_ARG, NULL, "interrupted during training (checkpoint %s); run the same command with "
                        "--resume to continue", f->train.checkpoint);
            goto done;
        }
        if ((s = write_train_done(f)) != MG_OK) goto done;
    } else {
        stage(o, f->fold, MG_RUN_TRAIN, "LoRA training: finished in an earlier call (train_done.json)");
    }

    /* 4. merge_and_unload in memory, then the final evaluation */
    stage(o, f->fold, MG_RUN_FINAL, "final evaluation, adapter merged into the weights");
    char adapter[4400];
    snprintf(adapter, sizeof adapter, "%s/adapter", f->dir);
    t = mg_now_s();
    if ((s = mg_model_apply_adapter(&m, adapter)) != MG_OK) goto done;
    f->t_merge = mg_now_s() - t;
    t = mg_now_s();
    if ((s = mg_eval_run(&cl, ix, test, f->n_test, &eo, &f->final)) != MG_OK) {
        mg_oom_hint(s, OOM_HINT_EVAL);
        goto done;
    }
    if (f->final.stopped) {
        s = mg_fail(MG_ERR_ARG, NULL, "interrupted during the final evaluation; the trained adapter is in %s; "
                    "run the same command with --resume to evaluate it without training again", adapter);
        goto done;
    }
    f->t_final = mg_now_s() - t;
    f->bin_patient_rate[1] = binary_patient_rate(&f->final);
    snprintf(path, sizeof path, "%s/predictions_finetuned.csv", f->dir);
    if ((s = mg_eval_write_csv(path, ix, &f->final)) != MG_OK) goto done;

    /* 5. the merged model directory */
    if (o->save_merged) {
        stage(o, f->fold, MG_RUN_SAVE_MERGED, "writing the merged model");
        snprintf(path, sizeof path, "%s/merged", f->dir);
        const mg_merge_opts mo = { .model_dir = model_dir, .adapter_dir = adapter, .out_dir = path, .force = true };
        mg_merge_result mr;
        t = mg_now_s();
        s = mg_merge_run(&mo, &mr);
        f->t_save_merged = mg_now_s() - t;
    }
done:
    mg_classifier_free(&cl);
    mg_model_free(&m);
    free(train), free(test);
    return s;
}

mg_status mg_run(const mg_run_opts *o, mg_run_result *r) {
    memset(r, 0, sizeof *r);
    if (!o->out_dir) return mg_fail(MG_ERR_ARG, "give --out DIR", "mg_run needs an output directory");
    const double t0 = mg_now_s();
    const time_t wall = time(NULL);
    struct tm tm;
    localtime_r(&wall, &tm);
    strftime(r->started, sizeof r->started, "%Y-%m-%d %H:%M:%S", &tm);
    MG_TRY(mg_make_dirs(o->out_dir));

    /* the model and the data */
    r->embedded_model = !o->model_dir;
    if (o->model_dir) snprintf(r->model_dir, sizeof r->model_dir, "%s", o->model_dir);
    else MG_TRY(mg_run_find_tiny_model(r->model_dir, sizeof r->model_dir));
    r->embedded_data = !o->data;
    if (o->data) {
        snprintf(r->data, sizeof r->data, "%s", o->data);
    } else {
        snprintf(r->data, sizeof r->data, "%s/synth", o->out_dir);
        char csv[4200];
        snprintf(csv, sizeof csv, "%s/Folds.csv", r->data);
        if (access(csv, R_OK) != 0) { /* a complete earlier synthesis is reused */
            stage(o, 0, MG_RUN_DATA, "writing synthetic BreakHis-format data");
            mg_synth_opts so = mg_synth_defaults();
            so.patients = 32, so.images = 4, so.width = 140, so.height = 92;
            MG_TRY(mg_synth_breakhis(r->data, &so));
        }
    }
    stage(o, 0, MG_RUN_DATA, r->data);
    mg_bh_index *ix = NULL;
    MG_TRY(mg_bh_index_open(r->data, o->train.on_bad, &ix));
    r->index_images = ix->n;
    r->t_data = mg_now_s() - t0;

    const mg_backend *be = NULL;
    mg_status s = mg_backend_open(o->force_cpu, &be, r->backend, sizeof r->backend);
    r->n_folds = o->all_folds ? MG_BH_NFOLDS : 1;
    for (int k = 0; s == MG_OK && k < r->n_folds; k++) {
        mg_run_fold *f = &r->folds[k];
        f->fold = o->all_folds ? k + 1 : o->sel.fold;
        if (o->all_folds) snprintf(f->dir, sizeof f->dir, "%s/fold-%d", o->out_dir, f->fold);
        else snprintf(f->dir, sizeof f->dir, "%s", o->out_dir);
        s = run_fold(o, be, ix, r->model_dir, f);
        if (s != MG_OK) r->n_folds = k + 1; /* what ran, for the caller's error report */
    }
    mg_backend_close(be);
    r->t_total = mg_now_s() - t0;
    char path[4400];
    if (s == MG_OK) {
        stage(o, 0, MG_RUN_REPORT, "metrics.json and report.html");
        snprintf(path, sizeof path, "%s/metrics.json", o->out_dir);
        s = mg_run_write_metrics(path, o, r);
    }
    if (s == MG_OK) {
        snprintf(path, sizeof path, "%s/report.html", o->out_dir);
        s = mg_report_write(path, o, r, ix);
    }
    mg_bh_index_free(ix);
    r->t_total = mg_now_s() - t0;
    return s;
}

void mg_run_result_free(mg_run_result *r) {
    for (int k = 0; k < MG_BH_NFOLDS; k++) {
        mg_eval_result_free(&r->folds[k].baseline);
        mg_eval_result_free(&r->folds[k].final);
        mg_bh_leaks_free(&r->folds[k].leaks);
    }
    memset(r, 0, sizeof *r);
}

/* ---- summaries -------------------------------------------------------------------------------- */

static double fold_value(const mg_run_fold *f, int task, int model, int which) {
    const mg_eval_result *e = model ? &f->final : &f->baseline;
    const mg_metrics *m = &e->metrics;
    if (task == 0) {
        const double v[4] = { m->accuracy, m->f1_weighted, m->patient_rate, NAN };
        return v[which];
    }
    const double v[4] = { m->bin_accuracy, m->bin_f1_positive, f->bin_patient_rate[model], m->auc };
    return v[which];
}

void mg_run_summary(const mg_run_result *r, int task, int model, int which, double *mean, double *sd) {
    double sum = 0, sq = 0;
    int n = 0;
    for (int k = 0; k < r->n_folds; k++) {
        const double v = fold_value(&r->folds[k], task, model, which);
        if (isnan(v)) continue;
        sum += v, n++;
    }
    *mean = n ? sum / n : NAN;
    for (int k = 0; k < r->n_folds; k++) {
        const double v = fold_value(&r->folds[k], task, model, which);
        if (!isnan(v)) sq += (v - *mean) * (v - *mean);
    }
    *sd = n > 1 ? sqrt(sq / (n - 1)) : 0;
}

/* "87.2%" or "87.2 ± 1.3%" (percent), "0.865" or "0.865 ± 0.012", "-" for NaN */
static void cell(char *buf, size_t cap, double mean, double sd, bool percent, bool folds) {
    if (isnan(mean)) snprintf(buf, cap, "-");
    else if (percent) snprintf(buf, cap, folds ? "%.1f ± %.1f%%" : "%.1f%%", 100 * mean, 100 * sd);
    else snprintf(buf, cap, folds ? "%.3f ± %.3f" : "%.3f", mean, sd);
}

void mg_run_print_table(FILE *f, const mg_run_opts *o, const mg_run_result *r) {
    static const char *const task[2] = { "8-class", "binary" }, *const model[2] = { "baseline", "fine-tuned" };
    static const char *const f1[2] = { "(weighted)", "(malignant)" };
    const bool folds = r->n_folds > 1, guide = mg_run_is_guide_selection(o);
    /* columns: accuracy, F1 (+ its kind), patient rate, ROC-AUC; widths in characters */
    const int w[4] = { folds ? 14 : 8, folds ? 13 : 5, folds ? 14 : 12, folds ? 13 : 7 };
    fprintf(f, "%-8s  %-10s  %*s  %*s %-11s  %*s  %*s", "task", "model", w[0], "accuracy", w[1], "F1", "", w[2],
            "patient rate", w[3], "ROC-AUC");
    if (guide) fprintf(f, "   guide: accuracy     F1");
    fputc('\n', f);
    for (int t = 0; t < 2; t++)
        for (int m = 0; m < 2; m++) {
            char c[4][48];
            int pad[4];
            for (int q = 0; q < 4; q++) {
                double mean, sd;
                mg_run_summary(r, t, m, q, &mean, &sd);
                cell(c[q], sizeof c[q], mean, sd, q == 0 || q == 2, folds);
                pad[q] = w[q] + (strstr(c[q], "±") ? 1 : 0); /* "±" is two bytes, one column */
            }
            fprintf(f, "%-8s  %-10s  %*s  %*s %-11s  %*s  %*s", task[t], model[m], pad[0], c[0], pad[1], c[1], f1[t],
                    pad[2], c[2], pad[3], c[3]);
            if (guide) fprintf(f, "   %15.1f%%  %5.3f", 100 * MG_GUIDE_RESULTS[t][m][0], MG_GUIDE_RESULTS[t][m][1]);
            fputc('\n', f);
        }
}

/* ---- metrics.json ----------------------------------------------------------------------------- */

static void jnum(FILE *f, double x) {
    if (isnan(x) || isinf(x)) fprintf(f, "null");
    else fprintf(f, "%.9g", x);
}

static void json_counts(FILE *f, const mg_run_split_counts *c) {
    fprintf(f, "{\"images\": %lld, \"patients\": %lld, \"class_images\": [", (long long)c->images, (long long)c->patients);
    for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++) fprintf(f, "%s%lld", k ? ", " : "", (long long)c->class_images[k]);
    fprintf(f, "], \"class_patients\": [");
    for (int k = 0; k < MG_BREAKHIS_NCLASSES; k++) fprintf(f, "%s%lld", k ? ", " : "", (long long)c->class_patients[k]);
    fprintf(f, "]}");
}

mg_status mg_run_write_metrics(const char *path, const mg_run_opts *o, const mg_run_result *r) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return mg_fail(MG_ERR_OOM, NULL, "metrics.json buffer");
    const mg_train_opts *t = &o->train;
    char mag[16];
    snprintf(mag, sizeof mag, o->sel.mag ? "%dX" : "all", o->sel.mag);
    fprintf(f, "{\"medgem\": \"%s\", \"started\": \"%s\", \"seconds\": %.3f, \"data_seconds\": %.3f,\n \"model\": ",
            MG_VERSION, r->started, r->t_total, r->t_data);
    mg_json_write_string(f, r->model_dir);
    fprintf(f, ", \"embedded_model\": %s, \"data\": ", r->embedded_model ? "true" : "false");
    mg_json_write_string(f, r->data);
    fprintf(f, ", \"embedded_data\": %s, \"backend\": ", r->embedded_data ? "true" : "false");
    mg_json_write_string(f, r->backend);
    fprintf(f, ",\n \"settings\": {\"fold\": \"%s\", \"mag\": \"%s\", \"balance\": \"%s\", \"seed\": %llu, "
               "\"eval_mode\": \"%s\", \"eval_batch\": %d, \"max_new_tokens\": %d, \"final\": \"adapter merged into "
               "the weights in memory\",\n  \"lora_r\": %d, \"lora_alpha\": %g, \"lora_dropout\": %g, "
               "\"lora_targets\": \"%s\", \"epochs\": %d, \"batch\": %d, \"grad_accum\": %d, \"max_steps\": %d, "
               "\"lr\": %g, \"weight_decay\": %g, \"warmup_ratio\": %g, \"max_grad_norm\": %g, \"schedule\": \"%s\", "
               "\"loss_on\": \"%s\", \"double_bos\": %s, \"train_seed\": %llu},\n \"folds\": [",
            o->all_folds ? "all" : (char[2]){ (char)('0' + o->sel.fold), 0 }, mag, mg_balance_name(o->sel.balance),
            (unsigned long long)o->sel.seed, o->eval.mode == MG_EVAL_GENERATE ? "generate" : "score", o->eval.batch,
            o->eval.max_new_tokens, t->lora_r, t->lora_alpha, t->lora_dropout, t->lora_targets, t->epochs, t->batch,
            t->grad_accum, t->max_steps, t->lr, t->weight_decay, t->warmup_ratio, t->max_grad_norm,
            mg_schedule_name(t->schedule), t->loss_on == MG_LOSS_ON_ANSWER ? "answer" : "seed",
            t->guide_path ? "true" : "false", (unsigned long long)t->seed);
    for (int k = 0; k < r->n_folds; k++) {
        const mg_run_fold *fo = &r->folds[k];
        mg_bh_selection sel = o->sel;
        sel.fold = fo->fold, sel.split = MG_BH_SPLIT_TEST;
        fprintf(f, "%s\n {\"fold\": %d, \"dir\": ", k ? "," : "", fo->fold);
        mg_json_write_string(f, fo->dir);
        fprintf(f, ",\n  \"data\": {\"train\": ");
        json_counts(f, &fo->counts[0]);
        fprintf(f, ", \"test\": ");
        json_counts(f, &fo->counts[1]);
        fprintf(f, ", \"leakage\": {\"patients\": [");
        for (int64_t i = 0; i < fo->leaks.n_patients; i++) {
            if (i) fprintf(f, ", ");
            mg_json_write_string(f, fo->leaks.patients[i]);
        }
        fprintf(f, "], \"duplicates\": %lld}},\n", (long long)fo->leaks.n_duplicates);
        const mg_train_result *tr = &fo->train;
        fprintf(f, "  \"train\": {\"steps\": %d, \"loss\": ", tr->steps);
        jnum(f, tr->last_loss);
        fprintf(f, ", \"images\": %lld, \"seconds\": %.3f, \"images_per_s\": ", (long long)tr->images, tr->seconds);
        jnum(f, tr->seconds > 0 ? tr->images / tr->seconds : NAN);
        fprintf(f, "},\n  \"timings\": {\"load\": %.3f, \"baseline\": %.3f, \"train\": %.3f, \"merge\": %.3f, "
                   "\"final\": %.3f, \"save_merged\": %.3f},\n  \"binary_patient_rate\": {\"baseline\": ",
                fo->t_load, fo->t_baseline, fo->t_train, fo->t_merge, fo->t_final, fo->t_save_merged);
        jnum(f, fo->bin_patient_rate[0]);
        fprintf(f, ", \"fine_tuned\": ");
        jnum(f, fo->bin_patient_rate[1]);
        fprintf(f, "},\n  \"baseline\": ");
        mg_eval_write_json(f, &fo->baseline, &sel, o->eval.mode, fo->n_test);
        fprintf(f, ",  \"fine_tuned\": ");
        mg_eval_write_json(f, &fo->final, &sel, o->eval.mode, fo->n_test);
        fprintf(f, " }");
    }
    fprintf(f, "],\n \"summary\": [");
    static const char *const task[2] = { "8-class", "binary" }, *const model[2] = { "baseline", "fine_tuned" };
    static const char *const what[4] = { "accuracy", "f1", "patient_rate", "auc" };
    for (int tk = 0; tk < 2; tk++)
        for (int m = 0; m < 2; m++) {
            fprintf(f, "%s\n  {\"task\": \"%s\", \"model\": \"%s\"", tk || m ? "," : "", task[tk], model[m]);
            for (int q = 0; q < 4; q++) {
                double mean, sd;
                mg_run_summary(r, tk, m, q, &mean, &sd);
                fprintf(f, ", \"%s\": ", what[q]), jnum(f, mean);
                fprintf(f, ", \"%s_sd\": ", what[q]), jnum(f, sd);
            }
            if (mg_run_is_guide_selection(o))
                fprintf(f, ", \"guide_accuracy\": %.3f, \"guide_f1\": %.3f", MG_GUIDE_RESULTS[tk][m][0],
                        MG_GUIDE_RESULTS[tk][m][1]);
            fprintf(f, "}");
        }
    fprintf(f, "]}\n");
    fclose(f);
    const mg_status s = mg_write_file_atomic(path, buf, n);
    free(buf);
    return s;
}
