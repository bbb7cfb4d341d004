/* medgem: the command-line entry point. Dispatches `medgem <command> [options]` to a cmd_*
 * function from the table below; every command has --help. */
#include <stdio.h>
#include <string.h>

#include "engine/cli/commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

/* In the order a user meets them: the main job, data, model, inference, evaluation, speed, export, debugging. */
static const command COMMANDS[] = {
    { "run", cmd_run, "the guide's whole workflow: baseline, LoRA training, merge, final evaluation, report.html" },
    { "data", cmd_data, "BreakHis counts, splits and leakage; `data synth` writes a synthetic set" },
    { "info", cmd_info, "check a model directory and print its architecture, sizes and GPU needs" },
    { "classify", cmd_classify, "class probabilities of images (one forward, the class digits' logits)" },
    { "generate", cmd_generate, "free-text answers about images (greedy decoding with a KV cache)" },
    { "eval", cmd_eval, "accuracy, F1, ROC-AUC and patient rate of a model on a BreakHis selection" },
    { "train", cmd_train, "LoRA fine-tuning on a BreakHis selection (the guide's settings by default)" },
    { "bench", cmd_bench, "evaluation throughput: timed score-mode forwards of a synthetic batch" },
    { "merge", cmd_merge, "fold a LoRA adapter into a copy of the model (loads with from_pretrained)" },
    { "tokenize", cmd_tokenize, "print the token ids of a text or of the chat prompt" },
    { "version", cmd_version, "print the version and the GPU this process sees" },
};

static void usage(FILE *f) {
    fprintf(f, "usage: medgem <command> [options]   (medgem <command> --help: its options and their defaults)\n"
               "start with `medgem run`: the whole workflow on an embedded tiny model and synthetic data\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "medgem: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
