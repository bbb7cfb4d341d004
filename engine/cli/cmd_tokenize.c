/* medgem tokenize: print the token ids medgem feeds the model, to check them against Python
 * (tokenizer(T, add_special_tokens=False) for --text; the processor's chat prompt for --prompt). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cli/commands.h"
#include "engine/config.h"
#include "engine/json.h"
#include "tokenizer/prompt.h"
#include "tokenizer/spm.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: medgem tokenize --model DIR (--text T | --prompt) [options]\n"
            "  --model DIR         model directory with tokenizer.model and config.json\n"
            "  --text T            encode T as plain text (no special tokens) and print its ids\n"
            "  --prompt            build the chat prompt: one user turn [image, text], image expanded\n"
            "  --prompt-file F     the prompt text (default: the guide's prompt from --classes)\n"
            "  --classes A,B,...   class names for the default prompt (0: A, 1: B, ...)\n"
            "  --answer A          training form: the assistant answer A follows (else generation form)\n"
            "  --double-bos        the guide's path: two BOS; training text without the final newline\n"
            "  --loss-on seed|answer  labels: all but pad/<start_of_image>/image tokens (seed, default),\n"
            "                      or only the answer and its <end_of_turn>\n"
            "  --json              print a JSON object instead of text\n");
}

/* An integer from obj[key] (or text_config[key] when absent): -1 when neither has it. */
static int json_int(const mg_json *cfg, const char *key) {
    const mg_json *v = mg_json_get(cfg, key);
    if (!v) v = mg_json_get(mg_json_get(cfg, "text_config"), key);
    if (v && v->type == MG_JSON_ARRAY && v->n > 0) v = &v->items[0]; /* eos_token_id may be a list */
    return v && mg_json_is_int(v) ? (int)v->number : -1;
}

/* The ids the prompt needs, from DIR/config.json (the 5.x "*_token_id" or 4.x "*_token_index"
 * names), and max_position_embeddings, which mg_config does not carry. */
static mg_status read_config(const char *dir, mg_config *cfg, int *max_tokens) {
    char path[MG_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/config.json", dir);
    mg_json *j;
    MG_TRY(mg_json_parse_file(path, &j));
    memset(cfg, 0, sizeof *cfg);
    struct { int *dst; const char *key, *alt; } keys[] = {
        { &cfg->image_token_id, "image_token_id", "image_token_index" },
        { &cfg->boi_token_id, "boi_token_id", "boi_token_index" },
        { &cfg->eoi_token_id, "eoi_token_id", "eoi_token_index" },
        { &cfg->mm_tokens_per_image, "mm_tokens_per_image", NULL },
        { &cfg->bos_token_id, "bos_token_id", NULL },
        { &cfg->pad_token_id, "pad_token_id", NULL },
        { &cfg->eos_ids[0], "eos_token_id", NULL },
        { max_tokens, "max_position_embeddings", NULL },
    };
    mg_status st = MG_OK;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && st == MG_OK; i++) {
        *keys[i].dst = json_int(j, keys[i].key);
        if (*keys[i].dst < 0 && keys[i].alt) *keys[i].dst = json_int(j, keys[i].alt);
        if (*keys[i].dst < 0)
            st = mg_fail(MG_ERR_MISSING, "use the config.json of a Gemma 3 / MedGemma checkpoint",
                         "%s has no integer %s (top level or text_config)", path, keys[i].key);
    }
    cfg->n_eos = 1;
    mg_json_free(j);
    return st;
}

static void print_ints(const char *name, const int *v, int n, bool json) {
    printf(json ? "\"%s\": [" : "%s:", name);
    for (int i = 0; i < n; i++) printf("%s%d", json ? (i ? ", " : "") : " ", v[i]);
    printf(json ? "]" : "\n");
}

/* Splits "a,b,c" in place into at most 10 names. */
static int split_classes(char *list, const char **names) {
    int n = 0;
    for (char *tok = strtok(list, ","); tok && n < 11; tok = strtok(NULL, ",")) names[n++] = tok;
    return n;
}

static int fail(const char *what) {
    fprintf(stderr, "medgem tokenize: %s\n%s\n", what, mg_last_error());
    return 1;
}

int cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL, *text = NULL, *prompt_file = NULL, *answer = NULL, *classes = NULL;
    bool prompt = false, json = false;
    mg_prompt_opts opts = { .loss_on = MG_LOSS_ON_SEED };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--prompt")) prompt = true;
        else if (!strcmp(a, "--double-bos")) opts.guide_path = true;
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--model") && has_value) dir = argv[++i];
        else if (!strcmp(a, "--text") && has_value) text = argv[++i];
        else if (!strcmp(a, "--prompt-file") && has_value) prompt_file = argv[++i];
        else if (!strcmp(a, "--classes") && has_value) classes = argv[++i];
        else if (!strcmp(a, "--answer") && has_value) answer = argv[++i];
        else if (!strcmp(a, "--loss-on") && has_value && !strcmp(argv[i + 1], "seed")) { opts.loss_on = MG_LOSS_ON_SEED; i++; }
        else if (!strcmp(a, "--loss-on") && has_value && !strcmp(argv[i + 1], "answer")) { opts.loss_on = MG_LOSS_ON_ANSWER; i++; }
        else {
            fprintf(stderr, "medgem tokenize: bad option '%s'%s\n\n", a, has_value ? "" : " (or its value is missing)");
            usage(stderr);
            return 2;
        }
    }
    if (!dir || (!text) == (!prompt)) {
        fprintf(stderr, "medgem tokenize: give --model DIR and exactly one of --text T or --prompt\n\n");
        usage(stderr);
        return 2;
    }
    if (prompt && !prompt_file && !classes) {
        fprintf(stderr, "medgem tokenize: --prompt needs --prompt-file F or --classes A,B,... for the default prompt\n");
        return 2;
    }

    char path[MG_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    mg_spm *spm;
    if (mg_spm_load(path, &spm) != MG_OK) return fail("cannot load the tokenizer");

    int rc = 0;
    if (text) {
        int *ids, n;
        if (mg_spm_encode(spm, text, strlen(text), &ids, &n) != MG_OK) {
            mg_spm_free(spm);
            return fail("cannot encode the text");
        }
        if (json) printf("{");
        print_ints("input_ids", ids, n, json);
        if (json) printf("}\n");
        free(ids);
        mg_spm_free(spm);
        return 0;
    }

    mg_config cfg;
    mg_chat_ids chat;
    char *qtext = NULL, *list = NULL;
    mg_prompt p = { 0 };
    if (read_config(dir, &cfg, &opts.max_tokens) != MG_OK || mg_chat_ids_init(&chat, &cfg, spm) != MG_OK) {
        rc = fail("cannot read the model's special ids");
        goto done;
    }
    if (prompt_file) {
        if (mg_prompt_read_file(prompt_file, &qtext) != MG_OK) { rc = fail("cannot read the prompt file"); goto done; }
    } else {
        const char *names[11];
        list = strdup(classes);
        const int n = list ? split_classes(list, names) : 0;
        if (mg_prompt_default_text(names, n, &qtext) != MG_OK) { rc = fail("cannot build the default prompt"); goto done; }
    }
    opts.text = qtext;
    opts.answer = answer;
    if (mg_prompt_build(spm, &chat, &opts, &p) != MG_OK) { rc = fail("cannot build the prompt"); goto done; }
    if (json) {
        printf("{\"text\": ");
        mg_json_write_string(stdout, qtext);
        printf(", \"n\": %d, ", p.n);
        print_ints("input_ids", p.ids, p.n, true);
        printf(", ");
        print_ints("token_type_ids", p.token_type_ids, p.n, true);
        printf(", ");
        print_ints("labels", p.labels, p.n, true);
        printf("}\n");
    } else {
        printf("tokens: %d (context %d)\n", p.n, opts.max_tokens);
        print_ints("input_ids", p.ids, p.n, false);
        print_ints("token_type_ids", p.token_type_ids, p.n, false);
        print_ints("labels", p.labels, p.n, false);
    }
done:
    mg_prompt_free(&p);
    free(qtext);
    free(list);
    mg_spm_free(spm);
    return rc;
}
