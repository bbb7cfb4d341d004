/* libFuzzer target: see tests/fuzz/fuzz_targets.h (fz_config) and make fuzz. */
#include "tests/fuzz/fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fz_config(data, size); }
