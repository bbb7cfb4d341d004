/* A small C API over libsentencepiece: load a tokenizer.model, encode plain text to ids, decode
 * ids to text, and map pieces to ids. The implementation (tokenizer/spm_shim.cpp) is the only C++
 * in medgem; it catches every C++ exception and turns sentencepiece's statuses into mg_status
 * values with a message, so callers see plain C.
 *
 * encode() treats its input as plain text: it never emits ids for special token strings such as
 * "<start_of_turn>" unless the model itself lists them as user-defined pieces. The chat template
 * (tokenizer/prompt.h) places the special ids itself and encodes only the text between them, which
 * is what the Hugging Face tokenizer does after splitting its added tokens out of the text. */
#ifndef MG_SPM_H
#define MG_SPM_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mg_spm mg_spm;

/* Loads a SentencePiece model file. A missing file is MG_ERR_IO; a file sentencepiece cannot parse
 * (truncated, not a model, empty vocabulary) is MG_ERR_FORMAT. */
mg_status mg_spm_load(const char *path, mg_spm **out);
void mg_spm_free(mg_spm *spm);

/* Number of pieces in the model (ids 0 .. n-1). Ids added on top of it by Hugging Face, such as
 * <image_soft_token> = 262144 for Gemma 3, are outside this range. */
int mg_spm_vocab_size(const mg_spm *spm);

/* Encodes len bytes of UTF-8 text. *ids is malloc'd (n entries; NULL when n == 0); free() it. */
mg_status mg_spm_encode(const mg_spm *spm, const char *text, size_t len, int **ids, int *n);

/* Decodes ids to UTF-8 text; *text is malloc'd and NUL-terminated; free() it. With skip_special,
 * ids that are control or unknown pieces in the model, or outside its vocabulary, are dropped
 * (sentencepiece itself renders control pieces as "" and unknown as " \xe2\x81\x87 "); without it, an
 * id outside the vocabulary is an error. */
mg_status mg_spm_decode(const mg_spm *spm, const int *ids, int n, bool skip_special, char **text);

/* The id of a piece, or -1 when the model has no such piece (sentencepiece answers unk_id for
 * unknown pieces; this does not). */
int mg_spm_piece_to_id(const mg_spm *spm, const char *piece);

/* The piece of an id (as stored, with U+2581 for spaces), or NULL when id is out of range. The
 * string lives as long as spm. */
const char *mg_spm_id_to_piece(const mg_spm *spm, int id);

/* 1 when the model marks id as a control piece (<bos>, <eos>, <pad>, ...) or the unknown piece. */
int mg_spm_is_special(const mg_spm *spm, int id);

#ifdef __cplusplus
}
#endif

#endif
