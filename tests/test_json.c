/* JSON reader: valid documents, escapes, and malformed input that must fail with a message. */
#include "engine/dtype.h"
#include "engine/json.h"
#include "tests/test.h"

static int parses(const char *text) {
    mg_json *j = NULL;
    mg_status s = mg_json_parse(text, strlen(text), "test", &j);
    mg_json_free(j);
    return s == MG_OK;
}

int main(void) {
    const char *doc = "{\"a\": 1.5, \"b\": [1, 2, {\"c\": null}], \"s\": \"x\\n\\u00e9\\ud83d\\ude00\", \"t\": true}";
    mg_json *j = NULL;
    CHECK(mg_json_parse(doc, strlen(doc), "doc", &j) == MG_OK, "valid doc: %s", mg_last_error());
    CHECK(mg_json_get_number(j, "a", 0) == 1.5, "number");
    const mg_json *b = mg_json_get(j, "b");
    CHECK(b && b->type == MG_JSON_ARRAY && b->n == 3 && mg_json_is_int(&b->items[1]), "array");
    CHECK(b && mg_json_get(&b->items[2], "c")->type == MG_JSON_NULL, "nested null");
    CHECK(!strcmp(mg_json_get_string(j, "s", ""), "x\n\xc3\xa9\xf0\x9f\x98\x80"), "escapes and surrogate pair");
    CHECK(mg_json_get(j, "t")->boolean == 1, "bool");
    CHECK(mg_json_get(j, "missing") == NULL, "missing key");
    mg_json_free(j);

    const char *bad[] = { "", "{", "{\"a\" 1}", "[1,]", "{\"a\":1,}", "\"abc", "tru", "01x", "{\"a\":1} x",
                          "\"\\q\"", "[\"\x01\"]", "{1:2}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!parses(bad[i]), "malformed input %zu accepted: %s", i, bad[i]);
        CHECK(strstr(mg_last_error(), "invalid JSON") != NULL, "message for input %zu: %s", i, mg_last_error());
    }
    char deep[200];
    memset(deep, '[', sizeof deep);
    mg_json *d = NULL;
    CHECK(mg_json_parse(deep, sizeof deep, "deep", &d) != MG_OK, "nesting limit");

    /* bf16 rounding matches torch: round to nearest even. */
    CHECK(mg_f32_to_bf16(1.0f) == 0x3f80, "bf16(1)");
    CHECK(mg_round_bf16(50.596443f) == 50.5f, "bf16(sqrt(2560)) = 50.5");
    CHECK(mg_f32_to_bf16(1.00390625f) == 0x3f80, "tie to even down");
    CHECK(mg_f32_to_bf16(1.01171875f) == 0x3f82, "tie to even up");
    CHECK(mg_f16_to_f32(mg_f32_to_f16(0.333251953125f)) == 0.333251953125f, "f16 round trip");
    CHECK(mg_f16_to_f32(0x0001) == 5.9604645e-08f, "f16 subnormal");
    return test_finish();
}
