/* The answer parser; see answer.h. text.strip() does not change the result: stripping removes
 * only whitespace, which is never a word character, so every \b keeps its place. Malformed UTF-8
 * bytes count as U+FFFD, a non-word character, as Python's errors="replace" decoding would give. */
#include "tokenizer/answer.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>

#include "tokenizer/unicode.h"

int mg_parse_answer(const char *text, int n_classes) {
    assert(n_classes >= 1 && n_classes <= 10);
    const size_t len = strlen(text);
    bool prev_word = false; /* is the code point before i a word character? (start of text: no) */
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        mg_utf8_next(text, len, &i, &cp);
        const bool word = mg_py_isword(cp);
        if (!prev_word && cp >= '0' && cp < (uint32_t)('0' + n_classes)) {
            /* the code point after the digit must not be a word character (end of text: fine) */
            size_t j = i;
            uint32_t next = ' ';
            if (j < len) mg_utf8_next(text, len, &j, &next);
            if (!mg_py_isword(next)) return (int)(cp - '0');
        }
        prev_word = word;
    }
    return -1;
}
