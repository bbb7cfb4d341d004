/* The few Unicode facts the chat template and the answer parser need to behave like Python 3 str
 * methods: UTF-8 decoding, str.isspace() (for jinja's |trim and str.strip()) and the word-character
 * test of Python's re module (for \b). */
#ifndef MG_UNICODE_H
#define MG_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes the code point starting at s[*i] (len bytes in s) and advances *i past it. Returns false
 * on a malformed sequence (overlong, surrogate, above U+10FFFF, truncated); then *cp = U+FFFD and
 * *i advances by one byte, as a lenient decoder does. */
bool mg_utf8_next(const char *s, size_t len, size_t *i, uint32_t *cp);

/* Byte offset of the first malformed UTF-8 sequence in s, or len when s is valid. */
size_t mg_utf8_invalid_at(const char *s, size_t len);

/* Python's str.isspace() for one code point (exact: the 29 code points Python 3 lists). */
bool mg_py_isspace(uint32_t cp);

/* Python re's \w for str patterns: ch.isalnum() or ch == '_'. Exact for ASCII; approximate above
 * (see unicode.c). */
bool mg_py_isword(uint32_t cp);

#endif
