/* libFuzzer target: see tests/fuzz/fuzz_targets.h (fz_targz) and make fuzz. */
#include "tests/fuzz/fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fz_targz(data, size); }
