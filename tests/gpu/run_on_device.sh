#!/bin/sh
# The GPU check the lead runs on the device machine, from the repository root, with build/ carried
# from the build machine (nothing is compiled here):
#   run(command="sh tests/gpu/run_on_device.sh", carry=["build"])
# Prints the GPU, `medgem version`, then one line per CUDA op case (tests/gpu/test_cuda_ops.c) and
# a summary; the full log goes to $OUT/test_cuda_ops.log when $OUT is set. Exit status: the test's.
set -u
cd "$(dirname "$0")/../.." || exit 2
log="${OUT:-/tmp}/test_cuda_ops.log"

echo "== nvidia-smi -L"
nvidia-smi -L

# build/lib holds libsentencepiece (the device machine has none). libcublasLt.so.13 comes through
# the binaries' rpath (/usr/local/cuda/lib64); if the toolkit there lacks it, use pip's copy.
LD_LIBRARY_PATH="$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd build/tests/gpu/test_cuda_ops | grep -q 'libcublasLt.*not found'; then
    lt=$(find /usr/local /usr/lib /opt $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
        -name 'libcublasLt.so.13' 2>/dev/null | head -1)
    echo "libcublasLt.so.13 not on the rpath; using ${lt:-nothing found}"
    [ -n "$lt" ] && LD_LIBRARY_PATH="$(dirname "$lt"):$LD_LIBRARY_PATH"
fi
export LD_LIBRARY_PATH

echo "== build/medgem version"
build/medgem version

echo "== build/tests/gpu/test_cuda_ops"
build/tests/gpu/test_cuda_ops > "$log" 2>&1
rc=$?
cat "$log"

echo "== summary"
grep -c ': OK' "$log" | sed 's/$/ cases OK/'
grep -E ': FAIL|no GPU' "$log" || echo "no failing case"
grep '^RESULT' "$log" || echo "RESULT missing: test_cuda_ops exited with $rc before finishing"
exit $rc
