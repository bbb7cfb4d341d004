/* `medgem train` end to end on the CPU with the tiny golden model and a small synthetic BreakHis:
 * 1. learning: from PEFT's fresh init the adapter reaches >= 95% test accuracy (the base model is
 *    at chance), the log has one line per update with every key and one per evaluation, and the
 *    saved adapter loads as a PEFT adapter of the model;
 * 2. resume: a run stopped by SIGINT (exit 130, a checkpoint) and resumed ends with the same
 *    adapter bytes as the uninterrupted run, dropout on;
 * 3. bad input: a missing --out, unknown targets, a resume folder that is not a checkpoint, an
 *    adapter for another model: each a clear message and a failing exit status. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/json.h"
#include "model/lora.h"
#include "tests/synth_fixture.h"

#define MEDGEM "build/medgem"
#define MODEL "tests/golden/tiny"
#define WORK "build/test_train"
#define DATA WORK "/synth"

static int count_lines(const char *path, const char *needle) {
    size_t n;
    char *s = test_slurp(path, &n);
    int c = 0;
    for (char *p = s, *nl; p && *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl) break;
        *nl = 0;
        c += !needle || strstr(p, needle) != NULL;
    }
    free(s);
    return c;
}

/* 1. learning */
static void test_learns(void) {
    char *out;
    const int rc = test_run(MEDGEM " train --cpu --model " MODEL " --data " DATA " --out " WORK "/learn"
                                   " --loss-on answer --lr 5e-3 --epochs 3 --batch 4 --grad-accum 1 --max-grad-norm 1"
                                   " --warmup-ratio 0 --json 2>&1",
                            &out);
    CHECK(rc == 0, "medgem train exits 0 (%d): %s", rc, out);
    CHECK(strstr(out, "epoch 3/3 done: 66 updates") && strstr(out, "host RSS") && !strstr(out, "GPU memory"),
          "stderr names each epoch's memory (host only on the CPU)");
    free(out);
    /* every update line has the keys; the last evaluation's accuracy */
    size_t n;
    char *log = test_slurp(WORK "/learn/train_log.jsonl", &n);
    CHECK(log != NULL, "train_log.jsonl written");
    if (!log) return;
    int updates = 0, evals = 0, epochs = 0, keys_ok = 1, mem_ok = 1;
    double acc = -1, first_loss = -1, last_loss = -1;
    for (char *p = log, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        *nl = 0;
        mg_json *j = NULL;
        if (mg_json_parse(p, strlen(p), "train_log line", &j) != MG_OK) { keys_ok = 0; continue; }
        const mg_json *ev = mg_json_get(j, "eval"), *ep = mg_json_get(j, "epoch_end");
        if (ep) { /* memory at the end of each epoch: host RSS (Linux has /proc), no GPU on --cpu */
            epochs++;
            const double rss = mg_json_get_number(ep, "host_rss_bytes", -1), peak = mg_json_get_number(ep, "host_peak_rss_bytes", -1);
            const mg_json *dev = mg_json_get(ep, "device_used_bytes");
            mem_ok &= mg_json_get_number(ep, "epoch", -1) == epochs && mg_json_get_number(ep, "updates", -1) == 22 * epochs &&
                      mg_json_get_number(ep, "seconds", -1) > 0 && rss > 1e6 && peak >= rss && dev && dev->type == MG_JSON_NULL;
        } else if (ev) {
            evals++, acc = mg_json_get_number(ev, "accuracy", -1);
        } else {
            static const char *const keys[] = { "step", "epoch", "loss", "lr", "grad_norm", "images_per_s", "seconds" };
            for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) keys_ok &= mg_json_get(j, keys[k]) != NULL;
            updates++;
            last_loss = mg_json_get_number(j, "loss", -1);
            if (first_loss < 0) first_loss = last_loss;
        }
        mg_json_free(j);
    }
    free(log);
    printf("     %d updates, %d evaluations, loss %.4f -> %.4f, final test accuracy %.4f\n", updates, evals, first_loss,
           last_loss, acc);
    CHECK(keys_ok && updates == 3 * 22 && evals == 3, "one line per update (66) with every key, one per epoch's evaluation");
    CHECK(epochs == 3 && mem_ok, "one epoch_end line per epoch (%d) with its updates, seconds, host RSS <= peak RSS > 1 MB, "
          "device_used_bytes null on the CPU", epochs);
    CHECK(acc >= 0.95, "the fine-tuned tiny model reaches >= 95%% test accuracy (got %.4f)", acc);
    CHECK(last_loss < 0.25 * first_loss, "the loss falls (%.4f -> %.4f)", first_loss, last_loss);
    /* the adapter is PEFT-loadable by medgem's own reader, for this model */
    mg_config cfg;
    mg_lora lora;
    CHECK(mg_config_load(MODEL, &cfg) == MG_OK && mg_lora_load(WORK "/learn/adapter", &cfg, &lora) == MG_OK,
          "the saved adapter loads: %s", mg_last_error());
    if (lora.n) {
        CHECK(lora.n == 47 && lora.r == 8 && lora.alpha == 16, "47 modules, r 8, alpha 16 (all-linear)");
        mg_lora_free(&lora);
    }
    /* the base model is at chance on this data: the adapter made the difference */
    const int rc2 = test_run(MEDGEM " eval --cpu --model " MODEL " --data " DATA " --json 2>/dev/null", &out);
    mg_json *j = NULL;
    if (rc2 == 0 && mg_json_parse(out, strlen(out), "eval", &j) == MG_OK) {
        const double base = mg_json_get_number(j, "accuracy", -1);
        printf("     base model accuracy %.4f\n", base);
        CHECK(base < 0.5, "the base model is far below the fine-tuned one (%.4f)", base);
        mg_json_free(j);
    } else {
        CHECK(0, "medgem eval of the base model: %s", out);
    }
    free(out);
}

/* Starts medgem train with args (a NULL-terminated argv after "train"), stdout/stderr to log. */
static pid_t spawn(const char *const *args, const char *log) {
    fflush(stdout); /* or the child's freopen would write our buffered lines again */
    const pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        if (!freopen("/dev/null", "w", stdout)) _exit(127);
        const char *argv[64] = { MEDGEM, "train" };
        int n = 2;
        for (int i = 0; args[i]; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(MEDGEM, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_status(pid_t pid) {
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* 2. SIGINT + resume against the uninterrupted run */
static void test_resume(void) {
#define RUN_ARGS "--cpu", "--model", MODEL, "--data", DATA, "--loss-on", "seed", "--lr", "2e-3", "--max-steps", "24", \
                 "--batch", "2", "--grad-accum", "2", "--eval-every", "0", "--lora-dropout", "0.1"
    const char *full[] = { RUN_ARGS, "--out", WORK "/full", NULL };
    CHECK(wait_status(spawn(full, WORK "/full.log")) == 0, "the uninterrupted run exits 0");

    const char *part[] = { RUN_ARGS, "--out", WORK "/part", NULL };
    const pid_t pid = spawn(part, WORK "/part.log");
    for (int i = 0; i < 6000 && count_lines(WORK "/part/train_log.jsonl", "\"step\"") < 5; i++) usleep(5000);
    kill(pid, SIGINT);
    const int st = wait_status(pid);
    const int done = count_lines(WORK "/part/train_log.jsonl", "\"step\"");
    printf("     interrupted after %d of 24 updates, exit status %d\n", done, st);
    CHECK(st == 130 && done < 24, "SIGINT stops the run with a checkpoint and exit status 130 (got %d after %d updates)",
          st, done);
    char ckpt[256];
    snprintf(ckpt, sizeof ckpt, WORK "/part/checkpoint-%d", done);
    struct stat sb;
    CHECK(stat(ckpt, &sb) == 0, "%s exists", ckpt);
    const char *resume[] = { RUN_ARGS, "--out", WORK "/part", "--resume", ckpt, NULL };
    CHECK(wait_status(spawn(resume, WORK "/resume.log")) == 0, "the resumed run exits 0");
    size_t na, nb;
    char *a = test_slurp(WORK "/full/adapter/adapter_model.safetensors", &na);
    char *b = test_slurp(WORK "/part/adapter/adapter_model.safetensors", &nb);
    CHECK(a && b && na == nb && !memcmp(a, b, na), "the resumed run's adapter has the uninterrupted run's bytes (%zu vs %zu)",
          na, nb);
    CHECK(count_lines(WORK "/part/train_log.jsonl", "\"step\"") == 24, "the log holds each of the 24 updates once");
    free(a), free(b);
}

/* train_log.jsonl with the timing fields cut: each update's step, epoch, loss, lr, grad_norm; each
 * evaluation's metrics */
static char *log_without_timing(const char *path) {
    size_t n;
    char *s = test_slurp(path, &n);
    if (!s) return NULL;
    char *out = calloc(n + 1, 1), *w = out;
    for (char *p = s, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        *nl = 0;
        char *cut = strstr(p, "\"images_per_s\"");
        if (!cut) cut = strstr(p, "\"seconds\"");
        if (cut) *cut = 0;
        w += sprintf(w, "%s\n", p);
    }
    free(s);
    return out;
}

/* 3. the vision-feature cache: with --lora-targets text, a run with it and one without give the
 * same log (losses, gradient norms, evaluation metrics) and the same adapter bytes; with vision
 * modules it is never used */
static void test_feature_cache(void) {
#define FC_ARGS " train --cpu --model " MODEL " --data " DATA " --loss-on answer --lr 5e-3 --epochs 2 --batch 4" \
                " --grad-accum 2 --max-grad-norm 1 --warmup-ratio 0 --lora-dropout 0.1 --json"
    char *on_out, *off_out, *vis_out;
    const int rc_on = test_run(MEDGEM FC_ARGS " --lora-targets text --out " WORK "/fc_on 2>&1", &on_out);
    const int rc_off = test_run(MEDGEM FC_ARGS " --lora-targets text --no-feature-cache --out " WORK "/fc_off 2>&1",
                                &off_out);
    const int rc_vis = test_run(MEDGEM FC_ARGS " --lora-targets vision --max-steps 3 --out " WORK "/fc_vis 2>&1", &vis_out);
    CHECK(rc_on == 0 && rc_off == 0 && rc_vis == 0, "the three runs exit 0 (%d %d %d): %s%s%s", rc_on, rc_off, rc_vis,
          on_out, off_out, vis_out);
    CHECK(strstr(on_out, "feature cache on") != NULL, "the run with the cache says it is on: %s", on_out);
    CHECK(strstr(off_out, "feature cache off (--no-feature-cache)") != NULL, "--no-feature-cache says it is off");
    CHECK(strstr(vis_out, "feature cache off (the adapter trains the vision tower)") != NULL,
          "with vision modules the cache is off: %s", vis_out);
    /* the JSON summary counts the images the cache computed and reused */
    const char *j_on = strstr(on_out, "{\"steps\""), *j_off = strstr(off_out, "{\"steps\""), *j_vis = strstr(vis_out, "{\"steps\"");
    mg_json *a = NULL, *b = NULL, *c = NULL;
    if (j_on) mg_json_parse(j_on, strcspn(j_on, "\n"), "summary", &a);
    if (j_off) mg_json_parse(j_off, strcspn(j_off, "\n"), "summary", &b);
    if (j_vis) mg_json_parse(j_vis, strcspn(j_vis, "\n"), "summary", &c);
    CHECK(a && b && c, "the three runs print a JSON summary");
    if (a && b && c) {
        const double comp = mg_json_get_number(a, "features_computed", -1), reused = mg_json_get_number(a, "features_reused", -1);
        printf("     with the cache: %.0f images' features computed, %.0f reused\n", comp, reused);
        /* epoch 2 and the second evaluation reuse what epoch 1 and the first evaluation computed (the
         * run's first batch is computed inside its step, before the cache is sized, so a few batches
         * of epoch 2 compute again) */
        CHECK(comp > 0 && reused > 0.4 * (comp + reused),
              "the second epoch and evaluation reuse the features (%.0f computed, %.0f reused)", comp, reused);
        CHECK(mg_json_get_number(b, "features_computed", -1) == 0 && mg_json_get_number(b, "features_reused", -1) == 0,
              "--no-feature-cache computes nothing into a cache");
        CHECK(mg_json_get_number(c, "features_computed", -1) == 0 && mg_json_get_number(c, "features_reused", -1) == 0 &&
                  mg_json_get(c, "feature_cache") && mg_json_get(c, "feature_cache")->type == MG_JSON_BOOL &&
                  !mg_json_get(c, "feature_cache")->boolean,
              "with vision modules the cache is never used");
    }
    mg_json_free(a), mg_json_free(b), mg_json_free(c);
    free(on_out), free(off_out), free(vis_out);
    char *la = log_without_timing(WORK "/fc_on/train_log.jsonl"), *lb = log_without_timing(WORK "/fc_off/train_log.jsonl");
    CHECK(la && lb && !strcmp(la, lb), "the logs match line for line (losses, gradient norms, evaluations):\n%s---\n%s",
          la ? la : "", lb ? lb : "");
    if (la) printf("     %d log lines, %d evaluations\n", count_lines(WORK "/fc_on/train_log.jsonl", NULL),
                   count_lines(WORK "/fc_on/train_log.jsonl", "\"eval\""));
    CHECK(count_lines(WORK "/fc_on/train_log.jsonl", "\"eval\"") == 2, "two evaluations (one per epoch)");
    free(la), free(lb);
    size_t na, nb;
    char *x = test_slurp(WORK "/fc_on/adapter/adapter_model.safetensors", &na);
    char *y = test_slurp(WORK "/fc_off/adapter/adapter_model.safetensors", &nb);
    CHECK(x && y && na == nb && !memcmp(x, y, na), "the adapters have the same bytes (%zu vs %zu)", na, nb);
    free(x), free(y);
}

/* 4. bad input */
static void test_bad_input(void) {
    static const struct {
        const char *args, *expect;
        int rc;
    } cases[] = {
        { "--model " MODEL " --data " DATA, "--out", 2 },
        { "--model " MODEL " --data " DATA " --out " WORK "/bad --lora-targets qq_proj", "unknown module", 1 },
        { "--model " MODEL " --data " DATA " --out " WORK "/bad --resume " WORK, "not a complete checkpoint", 1 },
        { "--model " MODEL " --data " DATA " --out " WORK "/bad --adapter tests/fixtures/config", "adapter", 1 },
        { "--model " MODEL " --data " WORK "/nowhere --out " WORK "/bad", "cannot index", 1 },
        { "--model " MODEL " --data " DATA " --out " WORK "/bad --lr -1", "--lr", 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[1024], *out;
        snprintf(cmd, sizeof cmd, MEDGEM " train --cpu %s 2>&1", cases[i].args);
        const int rc = test_run(cmd, &out);
        CHECK(rc == cases[i].rc && strstr(out, cases[i].expect), "`train %s` fails (%d) naming '%s': %s", cases[i].args,
              rc, cases[i].expect, out);
        free(out);
    }
}

int main(void) {
    test_fresh_synth(WORK, DATA);
    test_learns();
    test_resume();
    test_feature_cache();
    test_bad_input();
    return test_finish();
}
