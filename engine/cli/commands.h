/* One function per `medgem <command>`; each lives in engine/cli/cmd_<command>.c, parses its own
 * options, prints errors from mg_last_error(), and returns the process exit code. */
#ifndef MG_CLI_COMMANDS_H
#define MG_CLI_COMMANDS_H

#include <stdbool.h>

#include "engine/backend.h"
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
int cmd_merge(int argc, char **argv);

/* engine/cli/cli_model.c: opens the backend (printing which on stderr), the model in dir and, when
 * adapter is not NULL, merges that PEFT adapter. Returns 0, or 1 after printing the error as
 * "medgem <cmd>: ..."; *be is then still safe to pass to mg_backend_close. */
int cli_open_model(const char *cmd, bool force_cpu, const char *dir, const char *adapter, const mg_backend **be,
                   mg_model *m);

/* engine/cli/cli_model.c: each image file as the processor would give it, in a new (n, 3, S, S)
 * buffer; NULL after printing the error as "medgem <cmd>: ...". */
float *cli_load_images(const char *cmd, const char *const *paths, int n, int S);

#endif
