/* What the public handles of engine/medgem.h hold, shared by the files implementing them
 * (engine/jobs/api.c: models, images, adapters; engine/jobs/api_train.c: the trainer). */
#ifndef MG_API_INTERNAL_H
#define MG_API_INTERNAL_H

#include <stdbool.h>

#include "engine/medgem.h"
#include "engine/jobs/classifier.h"
#include "model/lora.h"

enum { MG_API_ERR_CAP = 4096 };

struct medgem_model {
    const mg_backend *be;     /* owned: closed with the model */
    mg_model m;
    mg_classifier cl;         /* the prompt, tokenizer and class digits; borrows &m */
    char *prompt;             /* the options' question (copied), or NULL */
    int n_trainers;           /* live trainers over m: merging is refused meanwhile */
    char backend_desc[512];
    char err[MG_API_ERR_CAP];
};

struct medgem_adapter {
    mg_lora lora;
    mg_config cfg;            /* the config it was checked against (mg_lora_save writes from it) */
    char err[MG_API_ERR_CAP];
};

/* Keeps the calling thread's message in err when s fails; returns s as a medgem_status. */
medgem_status mg_api_status(char *err, mg_status s);
/* A NULL-argument error naming the function and the argument. */
mg_status mg_api_null(const char *func, const char *arg);
/* Makes be's device current on this thread (engine/backend.h, bind). */
mg_status mg_api_bind(const mg_backend *be);
/* Copies a caller's options struct of o_size bytes over the defaults in dst (dst_size bytes):
 * fields the caller's version lacks keep their defaults. MG_ERR_ARG when o_size is too small to
 * be set (the caller forgot .size). */
mg_status mg_api_options(void *dst, size_t dst_size, const void *o, size_t o_size, const char *what);
/* Fills out[n] from n images' class-digit logits (n, K). */
void mg_api_predictions(const float *logits, int n, medgem_prediction *out);

#endif
