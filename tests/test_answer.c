/* The answer parser against Python's re.search(r'\b([0-7])\b', s.strip()) on the golden table of
 * tricky strings (tests/golden/tokenizer/answer_parser.json, answers computed by Python). */
#include "engine/json.h"
#include "tests/test.h"
#include "tokenizer/answer.h"

int main(void) {
    mg_json *fx = NULL;
    if (mg_json_parse_file("tests/golden/tokenizer/answer_parser.json", &fx) != MG_OK) {
        printf("FAIL: %s\n", mg_last_error());
        return 1;
    }
    const mg_json *cases = mg_json_get(fx, "cases");
    CHECK(cases && cases->n >= 40, "answer cases");
    int agree = 0;
    for (int c = 0; cases && c < cases->n; c++) {
        const mg_json *k = &cases->items[c];
        const char *text = mg_json_get_string(k, "text", "");
        const int want = (int)mg_json_get_number(k, "answer", -2);
        const int got = mg_parse_answer(text, 8);
        CHECK(got == want, "case %d '%s': got %d, Python %d", c, text, got, want);
        agree += got == want;
    }
    printf("answer parser agrees with Python on %d of %d strings\n", agree, cases ? cases->n : 0);
    mg_json_free(fx);
    return test_finish();
}
