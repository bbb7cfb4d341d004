/* The Gemma 3 chat template with the processor's image expansion; see prompt.h. */
#include "tokenizer/prompt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/unicode.h"

static mg_status check_piece(const mg_spm *spm, int id, const char *piece, const char *key) {
    const char *got = mg_spm_id_to_piece(spm, id);
    if (!got || strcmp(got, piece))
        return mg_fail(MG_ERR_FORMAT, "use the config.json and tokenizer.model of the same checkpoint",
                       "config.json %s = %d but the tokenizer's piece %d is %s, not %s", key, id, id,
                       got ? got : "(out of its vocabulary)", piece);
    return MG_OK;
}

static mg_status find_piece(const mg_spm *spm, const char *piece, int *id) {
    *id = mg_spm_piece_to_id(spm, piece);
    if (*id < 0)
        return mg_fail(MG_ERR_FORMAT, "medgem needs the Gemma 3 instruction-tuned tokenizer (e.g. medgemma-4b-it)",
                       "the tokenizer has no %s piece", piece);
    return MG_OK;
}

mg_status mg_chat_ids_init(mg_chat_ids *ids, const mg_config *cfg, const mg_spm *spm) {
    memset(ids, 0, sizeof *ids);
    ids->bos = cfg->bos_token_id;
    ids->pad = cfg->pad_token_id;
    ids->boi = cfg->boi_token_id;
    ids->eoi = cfg->eoi_token_id;
    ids->image = cfg->image_token_id;
    ids->mm_tokens_per_image = cfg->mm_tokens_per_image;
    ids->n_eos = cfg->n_eos;
    memcpy(ids->eos, cfg->eos_ids, sizeof ids->eos);
    MG_TRY(check_piece(spm, ids->boi, "<start_of_image>", "boi_token_id"));
    MG_TRY(check_piece(spm, ids->eoi, "<end_of_image>", "eoi_token_id"));
    MG_TRY(find_piece(spm, "<start_of_turn>", &ids->sot));
    MG_TRY(find_piece(spm, "<end_of_turn>", &ids->eot));
    if (ids->mm_tokens_per_image <= 0)
        return mg_fail(MG_ERR_FORMAT, "check config.json", "mm_tokens_per_image is %d", ids->mm_tokens_per_image);
    return MG_OK;
}

/* ---- a growing token sequence ------------------------------------------------------------- */

typedef struct {
    mg_prompt p;
    int cap;
    bool supervise; /* MG_LOSS_ON_ANSWER: are the tokens being appended answer tokens? */
    mg_loss_on loss_on;
    const mg_chat_ids *ids;
} seq;

static mg_status seq_reserve(seq *s, int more) {
    if (s->p.n + more <= s->cap) return MG_OK;
    int cap = s->cap ? s->cap : 512;
    while (cap < s->p.n + more) cap *= 2;
    int *a = realloc(s->p.ids, (size_t)cap * sizeof(int));
    if (a) s->p.ids = a;
    int *b = a ? realloc(s->p.token_type_ids, (size_t)cap * sizeof(int)) : NULL;
    if (b) s->p.token_type_ids = b;
    int *c = b ? realloc(s->p.labels, (size_t)cap * sizeof(int)) : NULL;
    if (c) s->p.labels = c;
    if (!c) return mg_fail(MG_ERR_OOM, NULL, "out of memory building a prompt of %d tokens", s->p.n + more);
    s->cap = cap;
    return MG_OK;
}

static int label_of(const seq *s, int id) {
    if (s->loss_on == MG_LOSS_ON_ANSWER) return s->supervise ? id : MG_IGNORE_LABEL;
    /* the guide's collator: pad, <start_of_image> and the image soft tokens leave the loss */
    const mg_chat_ids *k = s->ids;
    return (id == k->pad || id == k->boi || id == k->image) ? MG_IGNORE_LABEL : id;
}

static mg_status push(seq *s, int id, int count) {
    MG_TRY(seq_reserve(s, count));
    for (int i = 0; i < count; i++) {
        s->p.ids[s->p.n] = id;
        s->p.token_type_ids[s->p.n] = id == s->ids->image;
        s->p.labels[s->p.n] = label_of(s, id);
        s->p.n++;
    }
    return MG_OK;
}

static mg_status push_text(seq *s, const mg_spm *spm, const char *text, size_t len) {
    int *ids, n;
    MG_TRY(mg_spm_encode(spm, text, len, &ids, &n));
    mg_status st = MG_OK;
    for (int i = 0; st == MG_OK && i < n; i++) st = push(s, ids[i], 1);
    free(ids);
    return st;
}

/* Python's str.strip() bounds (jinja's |trim): [*b, *e) of s without surrounding whitespace. */
static void trim(const char *s, size_t *b, size_t *e) {
    const size_t len = strlen(s);
    size_t i = 0, first = len, last = 0;
    while (i < len) {
        size_t at = i;
        uint32_t cp;
        mg_utf8_next(s, len, &i, &cp);
        if (!mg_py_isspace(cp)) {
            if (first == len) first = at;
            last = i;
        }
    }
    *b = first == len ? 0 : first;
    *e = first == len ? 0 : last;
}

/* Appends head + body[0, len) as one piece of text (one sentencepiece call). */
static mg_status push_joined(seq *s, const mg_spm *spm, const char *head, const char *body, size_t len) {
    const size_t nh = strlen(head);
    char *buf = malloc(nh + len + 1);
    if (!buf) return mg_fail(MG_ERR_OOM, NULL, "out of memory building a prompt");
    memcpy(buf, head, nh);
    memcpy(buf + nh, body, len);
    mg_status st = push_text(s, spm, buf, nh + len);
    free(buf);
    return st;
}

/* Appends "model\n" + answer as one piece of text. The answer's tokens, which the answer-only loss
 * supervises, are those after the longest prefix shared with the encoding of "model\n" alone: if
 * sentencepiece merges across the boundary, the merged token counts as the answer's. */
static mg_status push_model_turn(seq *s, const mg_spm *spm, const char *answer, size_t len) {
    int *head = NULL, *all = NULL, nh, na;
    char *buf = malloc(6 + len);
    mg_status st = buf ? MG_OK : mg_fail(MG_ERR_OOM, NULL, "out of memory building a prompt");
    if (st == MG_OK) {
        memcpy(buf, "model\n", 6);
        memcpy(buf + 6, answer, len);
        st = mg_spm_encode(spm, buf, 6 + len, &all, &na);
    }
    if (st == MG_OK) st = mg_spm_encode(spm, "model\n", 6, &head, &nh);
    int shared = 0;
    while (st == MG_OK && shared < nh && shared < na && head[shared] == all[shared]) shared++;
    for (int i = 0; st == MG_OK && i < na; i++) {
        s->supervise = i >= shared;
        st = push(s, all[i], 1);
    }
    free(buf);
    free(head);
    free(all);
    return st;
}

static mg_status check_utf8(const char *what, const char *s) {
    const size_t len = strlen(s), at = mg_utf8_invalid_at(s, len);
    if (at != len)
        return mg_fail(MG_ERR_ARG, "save the prompt and answers as UTF-8", "the %s is not valid UTF-8 (byte %zu)",
                       what, at);
    return MG_OK;
}

static mg_status build(seq *s, const mg_spm *spm, const mg_prompt_opts *o) {
    const mg_chat_ids *k = s->ids;
    size_t qb, qe;
    trim(o->text, &qb, &qe);
    /* {{ bos_token }} of the template, plus the tokenizer's own BOS on the guide's path */
    MG_TRY(push(s, k->bos, o->guide_path ? 2 : 1));
    /* <start_of_turn>user\n, then the image item expanded to \n\n<boi><image>×M<eoi>\n\n */
    MG_TRY(push(s, k->sot, 1));
    MG_TRY(push_text(s, spm, "user\n\n\n", 7));
    MG_TRY(push(s, k->boi, 1));
    MG_TRY(push(s, k->image, k->mm_tokens_per_image));
    MG_TRY(push(s, k->eoi, 1));
    /* the text item, trimmed, then the end of the user turn */
    MG_TRY(push_joined(s, spm, "\n\n", o->text + qb, qe - qb));
    MG_TRY(push(s, k->eot, 1));
    MG_TRY(push_text(s, spm, "\n", 1));
    MG_TRY(push(s, k->sot, 1));
    if (!o->answer) return push_text(s, spm, "model\n", 6); /* the generation prompt */
    /* the model turn: "model\n" and the answer are one piece of text; only the answer is supervised */
    size_t ab, ae;
    trim(o->answer, &ab, &ae);
    MG_TRY(push_model_turn(s, spm, o->answer + ab, ae - ab));
    s->supervise = true;
    MG_TRY(push(s, k->eot, 1));
    s->supervise = false;
    return o->guide_path ? MG_OK : push_text(s, spm, "\n", 1);
}

mg_status mg_prompt_build(const mg_spm *spm, const mg_chat_ids *ids, const mg_prompt_opts *opts, mg_prompt *out) {
    memset(out, 0, sizeof *out);
    if (opts->max_tokens <= 0)
        return mg_fail(MG_ERR_ARG, NULL, "max_tokens must be positive (the model's max_position_embeddings), got %d",
                       opts->max_tokens);
    MG_TRY(check_utf8("prompt text", opts->text));
    if (opts->answer) MG_TRY(check_utf8("answer", opts->answer));
    seq s = { .loss_on = opts->loss_on, .ids = ids };
    mg_status st = build(&s, spm, opts);
    if (st == MG_OK && s.p.n > opts->max_tokens)
        st = mg_fail(MG_ERR_ARG, "shorten the prompt text (or the answer)",
                     "the prompt is %d tokens, longer than the model's context of %d tokens (max_position_embeddings)",
                     s.p.n, opts->max_tokens);
    if (st != MG_OK) {
        mg_prompt_free(&s.p);
        return st;
    }
    *out = s.p;
    return MG_OK;
}

void mg_prompt_free(mg_prompt *p) {
    free(p->ids);
    free(p->token_type_ids);
    free(p->labels);
    memset(p, 0, sizeof *p);
}

mg_status mg_prompt_default_text(const char *const *names, int n, char **text) {
    *text = NULL;
    if (n < 1 || n > 10)
        return mg_fail(MG_ERR_ARG, "the answer is one digit, so at most 10 classes fit the default prompt",
                       "cannot build the default prompt for %d classes", n);
    size_t cap = 64;
    for (int i = 0; i < n; i++) cap += strlen(names[i]) + 8;
    char *buf = malloc(cap);
    if (!buf) return mg_fail(MG_ERR_OOM, NULL, "out of memory building the prompt");
    size_t len = (size_t)snprintf(buf, cap, "Analyze this image and classify (0-%d only):", n - 1);
    for (int i = 0; i < n; i++) len += (size_t)snprintf(buf + len, cap - len, "\n%d: %s", i, names[i]);
    *text = buf;
    return MG_OK;
}

mg_status mg_prompt_read_file(const char *path, char **text) {
    *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return mg_fail(MG_ERR_IO, "check the --prompt-file path", "cannot open prompt file %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1) break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) { free(buf); buf = NULL; break; }
        buf = bigger;
        cap *= 2;
    }
    const int err = ferror(f);
    fclose(f);
    if (!buf) return mg_fail(MG_ERR_OOM, NULL, "out of memory reading prompt file %s", path);
    if (err) { free(buf); return mg_fail(MG_ERR_IO, NULL, "cannot read prompt file %s", path); }
    buf[len] = '\0';
    if (strlen(buf) != len) { free(buf); return mg_fail(MG_ERR_FORMAT, "a prompt file is plain UTF-8 text", "prompt file %s contains a NUL byte", path); }
    if (mg_utf8_invalid_at(buf, len) != len) {
        const size_t at = mg_utf8_invalid_at(buf, len);
        free(buf);
        return mg_fail(MG_ERR_FORMAT, "save the prompt file as UTF-8", "prompt file %s is not valid UTF-8 (byte %zu)", path, at);
    }
    *text = buf;
    return MG_OK;
}

static bool is_chat_special(const mg_chat_ids *k, int id) {
    if (id == k->bos || id == k->pad || id == k->boi || id == k->eoi || id == k->image || id == k->sot || id == k->eot)
        return true;
    for (int i = 0; i < k->n_eos; i++)
        if (id == k->eos[i]) return true;
    return false;
}

mg_status mg_chat_decode(const mg_spm *spm, const mg_chat_ids *ids, const int *tokens, int n, char **text) {
    int *keep = malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    if (!keep) return mg_fail(MG_ERR_OOM, NULL, "out of memory decoding %d tokens", n);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!is_chat_special(ids, tokens[i])) keep[m++] = tokens[i];
    mg_status st = mg_spm_decode(spm, keep, m, true, text);
    free(keep);
    return st;
}
