/* One function per `medgem <command>`; each lives in engine/cli/cmd_<command>.c, parses its own
 * options, prints errors from mg_last_error(), and returns the process exit code. */
#ifndef MG_CLI_COMMANDS_H
#define MG_CLI_COMMANDS_H

int cmd_version(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
