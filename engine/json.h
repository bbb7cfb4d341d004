/* A small JSON reader (config.json, safetensors headers, index files) and a writer helper for
 * --json output. The parser builds a tree; strings are unescaped UTF-8; numbers are doubles
 * (every integer a safetensors offset can hold up to 2^53 is exact). Nesting deeper than
 * MG_JSON_MAX_DEPTH is rejected so hostile input cannot exhaust the stack. */
#ifndef MG_JSON_H
#define MG_JSON_H

#include <stddef.h>
#include <stdio.h>

#include "engine/status.h"

#define MG_JSON_MAX_DEPTH 64

typedef enum { MG_JSON_NULL, MG_JSON_BOOL, MG_JSON_NUMBER, MG_JSON_STRING, MG_JSON_ARRAY, MG_JSON_OBJECT } mg_json_type;

typedef struct mg_json mg_json;
struct mg_json {
    mg_json_type type;
    int boolean;     /* BOOL */
    double number;   /* NUMBER */
    char *string;    /* STRING: NUL-terminated (may contain NULs from \u0000; then `len` tells) */
    size_t len;      /* STRING: byte length */
    char *key;       /* set on the members of an OBJECT */
    mg_json *items;  /* ARRAY elements or OBJECT members, in document order */
    int n;           /* number of items */
};

/* Parses len bytes of text. `what` names the source (a file path) for error messages. */
mg_status mg_json_parse(const char *text, size_t len, const char *what, mg_json **out);
/* Reads and parses a whole file. */
mg_status mg_json_parse_file(const char *path, mg_json **out);
void mg_json_free(mg_json *j);

/* Member lookup; NULL when obj is not an object or has no such key. */
const mg_json *mg_json_get(const mg_json *obj, const char *key);
/* Typed lookups: return the value, or `fallback` when absent or of another type. */
double mg_json_get_number(const mg_json *obj, const char *key, double fallback);
const char *mg_json_get_string(const mg_json *obj, const char *key, const char *fallback);
/* 1 when j is a number with an exact integer value in [-2^53, 2^53]. */
int mg_json_is_int(const mg_json *j);

/* Writes s as a JSON string literal (quotes and escapes included). */
void mg_json_write_string(FILE *f, const char *s);

#endif
