/* Prompt building: one user turn [image, text] in the Gemma 3 chat template, expanded the way
 * Gemma3Processor expands the image (spec/model.md §7.2-7.5), with labels for training (§8.2).
 *
 * Generation form (add_generation_prompt=True):
 *   <bos><start_of_turn>user\n\n\n<start_of_image><image_soft_token>×M<end_of_image>\n\nQ<end_of_turn>\n
 *   <start_of_turn>model\n
 * Training form (an answer A): the same without the generation prompt, then
 *   <start_of_turn>model\nA<end_of_turn>\n        (the guide's path: one more <bos>, no final \n)
 * Q and A are trimmed like the template's |trim. Special ids are placed directly; only the text
 * between them goes through sentencepiece, one piece of text at a time, as the Hugging Face
 * tokenizer does after splitting out its added tokens (so "user\n" and the expansion's "\n\n"
 * become one "\n\n\n" token, as in transformers). */
#ifndef MG_PROMPT_H
#define MG_PROMPT_H

#include <stdbool.h>

#include "engine/config.h"
#include "engine/status.h"
#include "tokenizer/spm.h"

#define MG_IGNORE_LABEL (-100) /* label of positions left out of the loss (transformers' ignore_index) */

/* The ids the template needs. Those of config.json are taken from it; <start_of_turn> and
 * <end_of_turn> are looked up by piece in tokenizer.model. Nothing is hard-coded to Gemma's numbers. */
typedef struct {
    int bos, pad;            /* config.json bos_token_id, pad_token_id */
    int boi, eoi, image;     /* <start_of_image>, <end_of_image>, <image_soft_token> (config.json) */
    int sot, eot;            /* <start_of_turn>, <end_of_turn> (tokenizer.model) */
    int mm_tokens_per_image; /* M: soft tokens per image (config.json, 256 for MedGemma) */
    int eos[MG_MAX_EOS];     /* config / generation_config eos ids (skipped when decoding) */
    int n_eos;
} mg_chat_ids;

/* Fills ids from a loaded config and the tokenizer, checking that they agree: <start_of_image> and
 * <end_of_image> must be the pieces at the config's boi/eoi ids, and the tokenizer must have
 * <start_of_turn> and <end_of_turn>. */
mg_status mg_chat_ids_init(mg_chat_ids *ids, const mg_config *cfg, const mg_spm *spm);

typedef enum {
    MG_LOSS_ON_SEED,   /* every token except pad, <start_of_image> and the image soft tokens (the guide) */
    MG_LOSS_ON_ANSWER, /* only the answer tokens and the <end_of_turn> after them */
} mg_loss_on;

typedef struct {
    const char *text;   /* Q: the user text after the image (UTF-8) */
    const char *answer; /* A: NULL builds the generation form; else the training form */
    bool guide_path;    /* the guide's processor(text=rendered) path (spec/model.md §7.5, §8.2): two BOS
                         * (the template's and the tokenizer's); in the training form also no "\n"
                         * after the last <end_of_turn>, because its collate_fn strips the text */
    mg_loss_on loss_on;
    int max_tokens;     /* the model's context (max_position_embeddings); a longer prompt is an error */
} mg_prompt_opts;

typedef struct {
    int *ids;            /* (T) input_ids */
    int *token_type_ids; /* (T) 1 on the image soft tokens, 0 elsewhere */
    int *labels;         /* (T) input_ids where supervised, MG_IGNORE_LABEL elsewhere; unshifted, as
                          * transformers takes them (logits at t predict labels[t+1]) */
    int n;               /* T */
} mg_prompt;

/* Builds the prompt into *out (arrays malloc'd; release with mg_prompt_free). On error *out is
 * empty. In the generation form every label is MG_IGNORE_LABEL under MG_LOSS_ON_ANSWER. */
mg_status mg_prompt_build(const mg_spm *spm, const mg_chat_ids *ids, const mg_prompt_opts *opts, mg_prompt *out);
void mg_prompt_free(mg_prompt *p);

/* The guide's prompt (spec/seed-pipeline.md step 4) for n class names:
 *   "Analyze this image and classify (0-<n-1> only):\n0: <names[0]>\n...\n<n-1>: <names[n-1]>"
 * *text is malloc'd. n must be 1..10, so that every class is one digit. */
mg_status mg_prompt_default_text(const char *const *names, int n, char **text);

/* Reads a prompt file (UTF-8 text used as Q) into a malloc'd string. */
mg_status mg_prompt_read_file(const char *path, char **text);

/* Decodes generated ids to text without special tokens, like transformers' decode(...,
 * skip_special_tokens=True): drops the template's and config's special ids and the tokenizer's
 * control and unknown pieces. *text is malloc'd. */
mg_status mg_chat_decode(const mg_spm *spm, const mg_chat_ids *ids, const int *tokens, int n, char **text);

#endif
