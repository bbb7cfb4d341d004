#include "engine/json.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/atomic_file.h"

typedef struct {
    const char *s, *end, *start;
    const char *what;
} parser;

static mg_status syntax(parser *p, const char *msg) {
    return mg_fail(MG_ERR_FORMAT, "the file is not valid JSON; re-download or regenerate it",
                   "%s: invalid JSON at byte %td: %s", p->what, p->s - p->start, msg);
}

static void skip_ws(parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* p->s points at the opening quote. The unescaped string is never longer than the escaped one. */
static mg_status parse_string(parser *p, char **out, size_t *out_len) {
    p->s++;
    const char *q = p->s;
    while (q < p->end && *q != '"') q += (*q == '\\') ? 2 : 1;
    if (q >= p->end) return syntax(p, "unterminated string");
    char *buf = malloc((size_t)(q - p->s) + 1);
    if (!buf) return mg_fail(MG_ERR_OOM, NULL, "%s: out of memory parsing JSON", p->what);
    size_t n = 0;
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s;
        if (c < 0x20) { free(buf); return syntax(p, "control character in string"); }
        if (c != '\\') { buf[n++] = (char)c; p->s++; continue; }
        char e = p->s[1];
        p->s += 2;
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (p->end - p->s < 4 || !hex4(p->s, &cp)) { free(buf); return syntax(p, "bad \\u escape"); }
            p->s += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && p->end - p->s >= 6 && p->s[0] == '\\' && p->s[1] == 'u' &&
                hex4(p->s + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p->s += 6;
            }
            n += put_utf8(buf + n, cp); /* 6 or 12 escaped bytes always cover <= 4 output bytes */
            break;
        }
        default: free(buf); p->s -= 1; return syntax(p, "bad escape");
        }
    }
    p->s++;
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return MG_OK;
}

static mg_status parse_value(parser *p, mg_json *v, int depth);

static mg_status parse_container(parser *p, mg_json *v, int depth, char close) {
    int cap = 0;
    p->s++;
    skip_ws(p);
    if (p->s < p->end && *p->s == close) { p->s++; return MG_OK; }
    for (;;) {
        if (v->n == cap) {
            cap = cap ? cap * 2 : 8;
            mg_json *grown = realloc(v->items, (size_t)cap * sizeof *grown);
            if (!grown) return mg_fail(MG_ERR_OOM, NULL, "%s: out of memory parsing JSON", p->what);
            v->items = grown;
        }
        mg_json *item = &v->items[v->n];
        memset(item, 0, sizeof *item);
        v->n++;
        skip_ws(p);
        if (close == '}') {
            size_t klen;
            if (p->s >= p->end || *p->s != '"') return syntax(p, "expected a string key");
            MG_TRY(parse_string(p, &item->key, &klen));
            skip_ws(p);
            if (p->s >= p->end || *p->s != ':') return syntax(p, "expected ':'");
            p->s++;
        }
        MG_TRY(parse_value(p, item, depth + 1));
        skip_ws(p);
        if (p->s >= p->end) return syntax(p, "unexpected end");
        if (*p->s == ',') { p->s++; continue; }
        if (*p->s == close) { p->s++; return MG_OK; }
        return syntax(p, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static mg_status parse_number(parser *p, mg_json *v) {
    const char *q = p->s;
    if (q < p->end && *q == '-') q++;
    if (q >= p->end || *q < '0' || *q > '9') return syntax(p, "unexpected character");
    while (q < p->end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-')) q++;
    char tmp[64];
    if (q - p->s >= (long)sizeof tmp) return syntax(p, "number too long");
    memcpy(tmp, p->s, (size_t)(q - p->s));
    tmp[q - p->s] = '\0';
    char *endp;
    v->number = strtod(tmp, &endp);
    if (*endp != '\0') return syntax(p, "malformed number");
    v->type = MG_JSON_NUMBER;
    p->s = q;
    return MG_OK;
}

static int match(parser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n) != 0) return 0;
    p->s += n;
    return 1;
}

static mg_status parse_value(parser *p, mg_json *v, int depth) {
    if (depth > MG_JSON_MAX_DEPTH) return syntax(p, "nesting too deep");
    skip_ws(p);
    if (p->s >= p->end) return syntax(p, "unexpected end");
    switch (*p->s) {
    case '{': v->type = MG_JSON_OBJECT; return parse_container(p, v, depth, '}');
    case '[': v->type = MG_JSON_ARRAY; return parse_container(p, v, depth, ']');
    case '"': v->type = MG_JSON_STRING; return parse_string(p, &v->string, &v->len);
    case 't': if (match(p, "true")) { v->type = MG_JSON_BOOL; v->boolean = 1; return MG_OK; } break;
    case 'f': if (match(p, "false")) { v->type = MG_JSON_BOOL; return MG_OK; } break;
    case 'n': if (match(p, "null")) { v->type = MG_JSON_NULL; return MG_OK; } break;
    default: return parse_number(p, v);
    }
    return syntax(p, "unexpected literal");
}

static void free_items(mg_json *j) {
    for (int i = 0; i < j->n; i++) free_items(&j->items[i]);
    free(j->items);
    free(j->string);
    free(j->key);
}

void mg_json_free(mg_json *j) {
    if (!j) return;
    free_items(j);
    free(j);
}

mg_status mg_json_parse(const char *text, size_t len, const char *what, mg_json **out) {
    parser p = { text, text + len, text, what ? what : "JSON" };
    *out = NULL;
    mg_json *root = calloc(1, sizeof *root);
    if (!root) return mg_fail(MG_ERR_OOM, NULL, "%s: out of memory parsing JSON", p.what);
    mg_status s = parse_value(&p, root, 0);
    if (s == MG_OK) {
        skip_ws(&p);
        if (p.s != p.end) s = syntax(&p, "trailing characters after the value");
    }
    if (s != MG_OK) { mg_json_free(root); return s; }
    *out = root;
    return MG_OK;
}

mg_status mg_json_parse_file(const char *path, mg_json **out) {
    *out = NULL;
    char *buf;
    size_t len;
    MG_TRY(mg_read_file(path, &buf, &len));
    mg_status s = mg_json_parse(buf, len, path, out);
    free(buf);
    return s;
}

const mg_json *mg_json_get(const mg_json *obj, const char *key) {
    if (!obj || obj->type != MG_JSON_OBJECT) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->items[i].key, key) == 0) return &obj->items[i];
    return NULL;
}

double mg_json_get_number(const mg_json *obj, const char *key, double fallback) {
    const mg_json *v = mg_json_get(obj, key);
    return v && v->type == MG_JSON_NUMBER ? v->number : fallback;
}

const char *mg_json_get_string(const mg_json *obj, const char *key, const char *fallback) {
    const mg_json *v = mg_json_get(obj, key);
    return v && v->type == MG_JSON_STRING ? v->string : fallback;
}

int mg_json_is_int(const mg_json *j) {
    return j && j->type == MG_JSON_NUMBER && fabs(j->number) <= 9007199254740992.0 && j->number == floor(j->number);
}

void mg_json_write_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*c < 0x20) fprintf(f, "\\u%04x", *c);
            else fputc(*c, f);
        }
    }
    fputc('"', f);
}
