/* One function per `medgem <command>`; each lives in engine/cli/cmd_<command>.c, parses its own
 * options, prints errors from mg_last_error(), and returns the process exit code. */
#ifndef MG_CLI_COMMANDS_H
#define MG_CLI_COMMANDS_H

#include <signal.h>
#include <stdbool.h>

#include "engine/backend.h"
#include "engine/jobs/train.h"
#include "model/medgem_model.h"

int cmd_version(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_train(int argc, char **argv);

/* engine/cli/cli_options.c: Ctrl-C while training sets cli_stop_requested (the job then writes a
 * checkpoint and returns); cli_catch_sigint(false) restores the default. */
extern volatile sig_atomic_t cli_stop_requested;
void cli_catch_sigint(bool on);
int cmd_merge(int argc, char **argv);
int cmd_run(int argc, char **argv);

/* engine/cli/cli_options.c: the options train, eval and run share. Each applies one flag with its
 * value and returns 1 when the flag is one it knows (then *bad tells whether the value was bad),
 * else 0. cli_train_option: --adapter --lora-targets --prompt-file (stores the path) --resume
 * --schedule --loss-on --on-bad-image --lora-r --lora-alpha --lora-dropout --epochs --batch
 * --grad-accum --max-steps --lr --weight-decay --warmup-ratio --max-grad-norm --eval-every
 * --eval-batch --save-every --threads. cli_eval_option: --mode --on-bad-image --batch --threads
 * --max-new-tokens (eval's --batch is the evaluation batch; run and train call that --eval-batch). */
int cli_train_option(const char *flag, const char *value, mg_train_opts *o, int *bad);
int cli_eval_option(const char *flag, const char *value, mg_eval_opts *o, int *bad);
/* Progress bars on stderr (with ETA) for mg_train_opts.progress and mg_eval_opts.progress; the
 * evaluation's user pointer, when not NULL, is a label printed before the bar. */
void cli_train_progress(void *user, const mg_train_progress *p);
void cli_eval_progress(void *user, int64_t done, int64_t total, double seconds);

/* engine/cli/cli_model.c: opens the backend (printing which on stderr), the model in dir and, when
 * adapter is not NULL, merges that PEFT adapter. Returns 0, or 1 after printing the error as
 * "medgem <cmd>: ..."; *be is then still safe to pass to mg_backend_close. */
int cli_open_model(const char *cmd, bool force_cpu, const char *dir, const char *adapter, const mg_backend **be,
                   mg_model *m);

/* engine/cli/cli_model.c, on the public API: opens the model in dir (CPU with force_cpu, else the
 * GPU when there is one), with the question prompt or the text of prompt_file (both may be NULL:
 * the guide's), and merges the PEFT adapter when given. Returns 0, or 1 after printing the error as
 * "medgem <cmd>: ..." (*m is then NULL). */
typedef struct medgem_model medgem_model;
int cli_api_open(const char *cmd, bool force_cpu, const char *dir, const char *adapter, const char *prompt,
                 const char *prompt_file, int double_bos, medgem_model **m);
/* Each image file as the processor would give it, in a new (n, 3, S, S) buffer for m; NULL after
 * printing the error as "medgem <cmd>: ...". */
float *cli_api_load_images(const char *cmd, medgem_model *m, const char *const *paths, int n);

#endif
