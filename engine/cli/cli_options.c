/* The options and progress bars that train, eval and run share (engine/cli/commands.h), so that one
 * flag has one name, one parser and one default everywhere. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <signal.h>

#include "engine/cli/commands.h"

volatile sig_atomic_t cli_stop_requested;

static void on_sigint(int sig) {
    (void)sig;
    cli_stop_requested = 1;
}

void cli_catch_sigint(bool on) {
    if (!on) {
        signal(SIGINT, SIG_DFL);
        return;
    }
    struct sigaction sa = { .sa_handler = on_sigint };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

/* A number and whether it is one (and an integer) */
static int parse_num(const char *v, double *x, int *integer) {
    char *end = NULL;
    *x = strtod(v, &end);
    const int num = end && end != v && *end == 0 && isfinite(*x);
    *integer = num && *x == floor(*x) && fabs(*x) < 1e9;
    return num;
}

int cli_train_option(const char *a, const char *v, mg_train_opts *o, int *bad) {
    double x;
    int integer;
    const int num = parse_num(v, &x, &integer);
    *bad = 0;
    if (!strcmp(a, "--adapter")) o->adapter = v;
    else if (!strcmp(a, "--lora-targets")) o->lora_targets = v;
    else if (!strcmp(a, "--prompt-file")) o->prompt_text = v; /* read by the caller */
    else if (!strcmp(a, "--resume")) o->resume = v;
    else if (!strcmp(a, "--on-nan")) {
        *bad = strcmp(v, "stop") && strcmp(v, "skip");
        o->on_nan = !strcmp(v, "skip") ? MG_ON_NAN_SKIP : MG_ON_NAN_STOP;
    } else if (!strcmp(a, "--schedule")) *bad = mg_schedule_parse(v, &o->schedule) != MG_OK;
    else if (!strcmp(a, "--loss-on")) {
        *bad = strcmp(v, "seed") && strcmp(v, "answer");
        o->loss_on = !strcmp(v, "answer") ? MG_LOSS_ON_ANSWER : MG_LOSS_ON_SEED;
    } else if (!strcmp(a, "--on-bad-image")) {
        *bad = strcmp(v, "skip") && strcmp(v, "fail");
        o->on_bad = o->eval.on_bad = !strcmp(v, "fail") ? MG_BAD_FAIL : MG_BAD_SKIP;
    } else {
        struct { const char *flag; int *i; double *d; } nums[] = {
            { "--lora-r", &o->lora_r, NULL },         { "--lora-alpha", NULL, &o->lora_alpha },
            { "--lora-dropout", NULL, &o->lora_dropout }, { "--epochs", &o->epochs, NULL },
            { "--batch", &o->batch, NULL },           { "--grad-accum", &o->grad_accum, NULL },
            { "--max-steps", &o->max_steps, NULL },   { "--lr", NULL, &o->lr },
            { "--weight-decay", NULL, &o->weight_decay }, { "--warmup-ratio", NULL, &o->warmup_ratio },
            { "--max-grad-norm", NULL, &o->max_grad_norm }, { "--eval-every", &o->eval_every, NULL },
            { "--eval-batch", &o->eval.batch, NULL }, { "--save-every", &o->save_every, NULL },
            { "--threads", &o->threads, NULL },       { "--max-memory", NULL, &o->max_memory_gb },
        };
        for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
            if (strcmp(a, nums[i].flag)) continue;
            if (nums[i].i) *bad = !integer, *nums[i].i = (int)x;
            else *bad = !num, *nums[i].d = x;
            return 1;
        }
        return 0;
    }
    return 1;
}

int cli_eval_option(const char *a, const char *v, mg_eval_opts *o, int *bad) {
    double x;
    int integer;
    parse_num(v, &x, &integer);
    *bad = 0;
    if (!strcmp(a, "--mode")) {
        *bad = strcmp(v, "score") && strcmp(v, "generate");
        o->mode = !strcmp(v, "generate") ? MG_EVAL_GENERATE : MG_EVAL_SCORE;
    } else if (!strcmp(a, "--on-bad-image")) {
        *bad = strcmp(v, "skip") && strcmp(v, "fail");
        o->on_bad = !strcmp(v, "fail") ? MG_BAD_FAIL : MG_BAD_SKIP;
    } else if (!strcmp(a, "--batch") || !strcmp(a, "--threads") || !strcmp(a, "--max-new-tokens")) {
        int *dst = a[2] == 'b' ? &o->batch : a[2] == 't' ? &o->threads : &o->max_new_tokens;
        *bad = !integer || x < 1;
        *dst = (int)x;
    } else {
        return 0;
    }
    return 1;
}

void cli_train_progress(void *user, const mg_train_progress *p) {
    (void)user;
    const int width = 24, filled = (int)(width * (int64_t)p->step / (p->total_steps > 0 ? p->total_steps : 1));
    fprintf(stderr, "\repoch %d/%d [%.*s%*s] %d/%d loss %.4f lr %.2e gnorm %.3f %.2f img/s ETA %.0f s ", p->epoch,
            p->epochs, filled, "========================", width - filled, "", p->step, p->total_steps, p->loss, p->lr,
            p->grad_norm, p->images_per_s, p->eta_s);
    fflush(stderr);
}

void cli_eval_progress(void *user, int64_t done, int64_t total, double seconds) {
    const char *label = user;
    const int width = 30, filled = (int)(width * done / (total > 0 ? total : 1));
    const double rate = seconds > 0 ? (double)done / seconds : 0;
    fprintf(stderr, "\r%s%s[%.*s%*s] %lld/%lld images, %.2f images/s, ETA %.0f s ", label ? label : "",
            label ? " " : "", filled, "==============================", width - filled, "", (long long)done,
            (long long)total, rate, rate > 0 ? (double)(total - done) / rate : 0);
    fflush(stderr);
}
