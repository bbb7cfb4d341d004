/* libFuzzer target: see tests/fuzz/fuzz_targets.h (fz_spm) and make fuzz. */
#include "tests/fuzz/fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fz_spm(data, size); }
