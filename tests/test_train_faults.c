/* Faults while training (`medgem train` on the CPU, tiny golden model, small synthetic BreakHis),
 * each against an uninterrupted reference run with the same checkpoints (--save-every 3):
 * 1. integrity: state.json lists each checkpoint file's size and CRC-32; a corrupted (bit-flipped)
 *    newest checkpoint is named and the previous complete one is used, and the run still ends with
 *    the reference adapter bytes; a truncated one with no earlier checkpoint fails clearly;
 * 2. SIGKILL at a random update, then `--resume OUT` (the run folder: its newest complete
 *    checkpoint) ends with the reference adapter bytes, and its log holds each update once (the
 *    killed run's lines past the checkpoint are trimmed; the trim itself on a written log too); a
 *    new run into that folder is refused (a later --resume of it would take the earlier run's);
 * 3. a full disk while saving (a file-size limit in the child): a clear error, the failed
 *    checkpoint's folder removed, the previous checkpoint intact, and a later resume reaches the
 *    reference adapter;
 * 4. numerics: --lr 1e30 overflows the loss at update 2; the default stops naming the update and
 *    the last good checkpoint; --on-nan skip skips and counts the updates, marking their log lines. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/jobs/train_ckpt.h"
#include "engine/jobs/train_log.h"
#include "engine/json.h"
#include "tests/synth_fixture.h"

#define MEDGEM "build/medgem"
#define WORK "build/test_train_faults"
#define DATA WORK "/synth"
#define ARGS " train --cpu --model tests/golden/tiny --data " DATA " --loss-on seed --lr 2e-3 --batch 2" \
             " --grad-accum 2 --eval-every 0 --lora-dropout 0.1 --save-every 3 --max-steps 15"
#define REF WORK "/ref/adapter/adapter_model.safetensors"

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int train(char **out, const char *extra) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, MEDGEM ARGS " %s 2>&1", extra);
    return test_run(cmd, out);
}

static int count_lines(const char *path, const char *needle) {
    size_t n;
    char *s = test_slurp(path, &n);
    int c = 0;
    for (char *p = s; p && (p = strstr(p, needle)); p++) c++;
    free(s);
    return c;
}

/* 1. integrity */
static void test_integrity(void) {
    char *out;
    int rc = train(&out, "--out " WORK "/ref");
    CHECK(rc == 0, "the reference run exits 0: %s", out);
    free(out);
    CHECK(exists(WORK "/ref/checkpoint-15") && exists(WORK "/ref/checkpoint-12") && !exists(WORK "/ref/checkpoint-9"),
          "the two newest checkpoints are kept (12 and 15), older ones removed");
    mg_json *j = NULL;
    const mg_json *f = NULL;
    if (mg_json_parse_file(WORK "/ref/checkpoint-15/state.json", &j) == MG_OK) f = mg_json_get(j, "files");
    CHECK(f && f->n == 3 && mg_json_get(f, "optimizer.safetensors") &&
              mg_json_get_string(mg_json_get(f, "adapter_model.safetensors"), "crc32", NULL),
          "state.json lists the 3 files with bytes and crc32");
    mg_json_free(j);
    CHECK(mg_ckpt_verify(WORK "/ref/checkpoint-15") == MG_OK, "the checkpoint verifies: %s", mg_last_error());

    /* a copy of the reference run's folder, its newest checkpoint corrupted in place (a run with
     * another --max-steps would have another schedule) */
    test_run("cp -r " WORK "/ref " WORK "/corrupt && rm -r " WORK "/corrupt/adapter", &out);
    free(out);
    FILE *fp = fopen(WORK "/corrupt/checkpoint-15/optimizer.safetensors", "r+b");
    if (fp) fseek(fp, 5000, SEEK_SET), fputc(0x5a, fp), fputc(0xa5, fp), fclose(fp);
    CHECK(mg_ckpt_verify(WORK "/corrupt/checkpoint-15") == MG_ERR_FORMAT && strstr(mg_last_error(), "CRC-32"),
          "the flipped bytes are found: %s", mg_last_error());
    rc = train(&out, "--out " WORK "/corrupt --resume " WORK "/corrupt/checkpoint-15");
    printf("     %s", out);
    CHECK(rc == 0 && strstr(out, "checkpoint-15 is damaged") && strstr(out, "resuming from the previous complete checkpoint") &&
              strstr(out, WORK "/corrupt/checkpoint-12"),
          "resume names the damaged checkpoint and falls back to checkpoint-12 (%d)", rc);
    free(out);
    CHECK(test_same_file(REF, WORK "/corrupt/adapter/adapter_model.safetensors"),
          "after the fallback the run ends with the reference adapter bytes");
    CHECK(mg_ckpt_verify(WORK "/corrupt/checkpoint-15") == MG_OK, "the damaged checkpoint-15 was written again");

    /* truncated, and nothing earlier */
    rc = train(&out, "--out " WORK "/trunc --max-steps 3");
    free(out);
    CHECK(truncate(WORK "/trunc/checkpoint-3/adapter_model.safetensors", 1000) == 0, "truncate");
    rc = train(&out, "--out " WORK "/trunc --resume " WORK "/trunc/checkpoint-3");
    printf("     %s", out);
    CHECK(rc == 1 && strstr(out, "truncated") && strstr(out, "no earlier complete one"),
          "a truncated checkpoint with nothing earlier fails naming it (%d)", rc);
    free(out);
    rc = train(&out, "--out " WORK "/trunc --resume " WORK "/trunc");
    CHECK(rc == 1 && strstr(out, "holds no complete checkpoint"), "--resume OUT with no complete checkpoint fails (%d): %s",
          rc, out);
    free(out);
}

/* 2. SIGKILL at a random update, resume from the run folder */
static void test_sigkill(void) {
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    const int at = 4 + rand() % 10; /* 4..13 of 15: checkpoint-3 is complete before update 4 is logged */
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen(WORK "/kill.log", "w", stderr)) _exit(127);
        execl("/bin/sh", "sh", "-c", "exec " MEDGEM ARGS " --out " WORK "/kill", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 12000 && count_lines(WORK "/kill/train_log.jsonl", "\"step\"") < at; i++) usleep(1000);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    const int done = count_lines(WORK "/kill/train_log.jsonl", "\"step\"");
    printf("     killed (signal %d) after %d logged updates (target %d)\n", WIFSIGNALED(st) ? WTERMSIG(st) : 0, done, at);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && done < 15, "SIGKILL lands mid-run");
    char *out;
    const int rc = train(&out, "--out " WORK "/kill --resume " WORK "/kill");
    const char *from = strstr(out, "resuming from ");
    printf("     %.*s\n", from ? (int)strcspn(from, "\n") : 0, from ? from : "");
    CHECK(rc == 0, "the resumed run exits 0: %s", out);
    /* it continued from the newest checkpoint at or before the kill: at most 2 updates redone */
    int step = -1;
    if (from && strstr(from, "checkpoint-")) step = atoi(strstr(from, "checkpoint-") + 11);
    CHECK(step == (done / 3) * 3 || step == (done / 3) * 3 - 3,
          "it resumed from the newest complete checkpoint (%d after %d updates)", step, done);
    free(out);
    CHECK(test_same_file(REF, WORK "/kill/adapter/adapter_model.safetensors"),
          "the killed and resumed run ends with the reference adapter bytes");
    CHECK(count_lines(WORK "/kill/train_log.jsonl", "{\"step\": ") == 15,
          "the log holds each of the 15 updates once (%d lines): the killed run's lines past the checkpoint were dropped",
          count_lines(WORK "/kill/train_log.jsonl", "{\"step\": "));
}

/* A new run (no --resume) into a folder holding an earlier run's checkpoints is refused: a later
 * `--resume FOLDER` would otherwise take the earlier run's newest checkpoint. */
static void test_new_run_beside_checkpoints(void) {
    char *out;
    const int rc = train(&out, "--out " WORK "/kill");
    CHECK(rc == 1 && strstr(out, "holds checkpoints of an earlier run") && strstr(out, "--resume"),
          "a new run into a folder with checkpoints is refused, naming --resume (%d): %s", rc, out);
    free(out);
    CHECK(exists(WORK "/kill/adapter/adapter_model.safetensors") &&
              count_lines(WORK "/kill/train_log.jsonl", "{\"step\": ") == 15,
          "the earlier run's adapter and log are untouched");
}

/* The resume's log trim on a written log: lines past the step go, a torn last line goes, the rest
 * stays byte for byte; a missing log stays missing. */
static void test_log_trim(void) {
    static const char head[] = "{\"step\": 1, \"loss\": 2.5}\n{\"step\": 2, \"loss\": 2.25}\n"
                               "{\"eval\": {\"epoch\": 1, \"step\": 2, \"accuracy\": 0.5}}\n"
                               "{\"epoch_end\": {\"epoch\": 1, \"updates\": 2, \"seconds\": 1.0}}\n";
    static const char tail[] = "{\"step\": 3, \"loss\": 2.0}\n{\"eval\": {\"epoch\": 2, \"step\": 3}}\n"
                               "{\"epoch_end\": {\"epoch\": 2, \"updates\": 3}}\n{\"step\": 4, \"lo";
    const char *path = WORK "/trim.jsonl";
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(path, "wb");
        if (!f) { CHECK(0, "cannot write %s", path); return; }
        fputs(head, f), fputs(tail, f), fclose(f);
        const int step = k == 0 ? 2 : 3;
        CHECK(mg_train_log_trim(path, step) == MG_OK, "trim to %d: %s", step, mg_last_error());
        size_t n;
        char *got = test_slurp(path, &n);
        char want[1024];
        snprintf(want, sizeof want, "%s%.*s", head, k == 0 ? 0 : (int)(strstr(tail, "{\"step\": 4") - tail), tail);
        CHECK(got && !strcmp(got, want), "trim to %d keeps what came before and drops the rest:\n%s", step,
              got ? got : "(none)");
        free(got);
    }
    remove(path);
    CHECK(mg_train_log_trim(path, 3) == MG_OK && !exists(path), "a missing log stays missing");
}

/* 3. a full disk while saving */
static void test_full_disk(void) {
    char *out;
    int rc = test_run("cp -r " WORK "/ref " WORK "/disk && rm -r " WORK "/disk/adapter " WORK "/disk/checkpoint-15", &out);
    free(out);
    rc = test_run("sh -c 'ulimit -f 100; trap \"\" XFSZ; exec " MEDGEM ARGS " --out " WORK "/disk --resume " WORK
                  "/disk' 2>&1",
                  &out);
    printf("     %s", out);
    CHECK(rc == 1 && strstr(out, "writing checkpoint") && strstr(out, "the previous checkpoint is intact") &&
              strstr(out, "checkpoint-12"),
          "a failed save says so and names the intact previous checkpoint (%d)", rc);
    free(out);
    CHECK(!exists(WORK "/disk/checkpoint-15") && !exists(WORK "/disk/adapter"), "the partial checkpoint-15 folder is removed");
    CHECK(mg_ckpt_verify(WORK "/disk/checkpoint-12") == MG_OK, "checkpoint-12 still verifies: %s", mg_last_error());
    rc = train(&out, "--out " WORK "/disk --resume " WORK "/disk");
    CHECK(rc == 0 && test_same_file(REF, WORK "/disk/adapter/adapter_model.safetensors"),
          "with space again, resuming reaches the reference adapter (%d)", rc);
    free(out);
}

/* 4. NaN / Inf */
static void test_nan(void) {
    char *out;
    int rc = train(&out, "--out " WORK "/nan --lr 1e30 --warmup-ratio 0 --save-every 1 --max-steps 6");
    printf("     %s", out);
    CHECK(rc == 1 && strstr(out, "update 2") && strstr(out, "the loss is") && strstr(out, "checkpoint-1") &&
              strstr(out, "--on-nan skip"),
          "a NaN loss stops naming the update, the loss and the last good checkpoint (%d)", rc);
    free(out);
    rc = train(&out, "--out " WORK "/skip --lr 1e30 --warmup-ratio 0 --max-steps 6 --on-nan skip");
    CHECK(rc == 0 && strstr(out, "5 updates skipped"), "--on-nan skip finishes and counts 5 skipped updates (%d): %s", rc,
          out);
    free(out);
    CHECK(count_lines(WORK "/skip/train_log.jsonl", "\"skipped\": true") == 5 &&
              count_lines(WORK "/skip/train_log.jsonl", "\"loss\": null") == 5,
          "the log marks the 5 skipped updates");
    rc = train(&out, "--out " WORK "/bad --on-nan maybe");
    CHECK(rc == 2 && strstr(out, "--on-nan"), "--on-nan takes stop or skip (%d)", rc);
    free(out);
}

int main(void) {
    test_fresh_synth(WORK, DATA);
    test_integrity();
    test_sigkill();
    test_new_run_beside_checkpoints();
    test_log_trim();
    test_full_disk();
    test_nan();
    return test_finish();
}
