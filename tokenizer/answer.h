/* The guide's answer parser: the class a generated answer names. */
#ifndef MG_ANSWER_H
#define MG_ANSWER_H

/* The first standalone ASCII digit in 0 .. n_classes-1 of text (UTF-8), or -1 when there is none.
 * With n_classes = 8 this is Python's
 *     m = re.search(r'\b([0-7])\b', text.strip()); int(m.group(1)) if m else -1
 * "Standalone" means neither neighbour is a word character (Python's \w on str: letters, numbers
 * of any script, '_'); see mg_py_isword in tokenizer/unicode.c for how closely that is matched.
 * n_classes must be in 1..10 (a single digit). */
int mg_parse_answer(const char *text, int n_classes);

#endif
