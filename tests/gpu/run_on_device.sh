#!/bin/sh
# The GPU check the lead runs on the device machine, from the repository root, with build/ carried
# from the build machine (nothing is compiled here; build it first with
#   make all build/tests/gpu/test_cuda_ops build/tests/gpu/test_model_gpu):
#   run(command="sh tests/gpu/run_on_device.sh", carry=["build"])
# Steps (about a minute on an H100):
#   1. the GPU and `medgem version`;
#   2. tests/gpu/test_cuda_ops: one line per CUDA op case, then a summary;
#   3. tests/gpu/test_model_gpu: the tiny model in bf16 against transformers, per stage;
#   4. `medgem classify` on the tiny model and tests/fixtures/classify/*.png on the GPU and with
#      --cpu, both printed, with the largest logit difference and whether the predictions agree;
#   5. the same GPU classify under compute-sanitizer --tool memcheck, its ERROR SUMMARY line.
# Logs go to $OUT (6 files; /tmp when OUT is unset). Exit status: 0 only when every step passed.
set -u
cd "$(dirname "$0")/../.." || exit 2
out="${OUT:-/tmp}"
failed=""

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
build/tests/gpu/test_cuda_ops > "$out/test_cuda_ops.log" 2>&1 || failed="$failed test_cuda_ops"
cat "$out/test_cuda_ops.log"
grep -c ': OK' "$out/test_cuda_ops.log" | sed 's/$/ cases OK/'
grep -E ': FAIL|no GPU' "$out/test_cuda_ops.log" || echo "no failing case"
grep '^RESULT' "$out/test_cuda_ops.log" || echo "RESULT missing: test_cuda_ops stopped before finishing"

echo "== build/tests/gpu/test_model_gpu"
build/tests/gpu/test_model_gpu > "$out/test_model_gpu.log" 2>&1 || failed="$failed test_model_gpu"
cat "$out/test_model_gpu.log"
grep '^RESULT' "$out/test_model_gpu.log" || echo "RESULT missing: test_model_gpu stopped before finishing"

images="tests/fixtures/classify/stripes_70x46.png tests/fixtures/classify/noise_30x20.png"
classify="build/medgem classify --model tests/golden/tiny --json --image $images"
echo "== medgem classify, GPU"
$classify > "$out/classify_gpu.json" 2> "$out/classify_gpu.err" || failed="$failed classify-gpu"
cat "$out/classify_gpu.err" "$out/classify_gpu.json"
grep -q 'using cuda' "$out/classify_gpu.err" || failed="$failed classify-did-not-use-the-GPU"
echo "== medgem classify --cpu"
$classify --cpu > "$out/classify_cpu.json" 2>&1 || failed="$failed classify-cpu"
cat "$out/classify_cpu.json"
python3 - "$out/classify_gpu.json" "$out/classify_cpu.json" <<'EOF' || failed="$failed classify-compare"
import json, sys
gpu, cpu = ([json.loads(l) for l in open(p) if l.startswith("{")] for p in sys.argv[1:])
assert gpu and len(gpu) == len(cpu), "both runs score every image"
d = max(abs(a - b) for g, c in zip(gpu, cpu) for a, b in zip(g["logits"], c["logits"]))
same = all(g["pred"] == c["pred"] for g, c in zip(gpu, cpu))
print(f"GPU (bf16) vs --cpu (fp32): max logit difference {d:.4f}, predictions {'agree' if same else 'DIFFER'}")
sys.exit(0 if same else 1)
EOF

echo "== compute-sanitizer --tool memcheck: medgem classify on the GPU"
san=/usr/local/cuda/bin/compute-sanitizer
[ -x "$san" ] || san=$(command -v compute-sanitizer || true)
if [ -n "$san" ]; then
    "$san" --tool memcheck --error-exitcode 3 $classify > "$out/memcheck.log" 2>&1 || failed="$failed memcheck"
    grep -E 'ERROR SUMMARY|medgem: using' "$out/memcheck.log" || { echo "no summary line:"; tail -20 "$out/memcheck.log"; }
else
    echo "compute-sanitizer not found (looked at /usr/local/cuda/bin and PATH): memcheck skipped"
fi

echo "== verdict"
if [ -z "$failed" ]; then echo "all GPU checks passed"; exit 0; fi
echo "FAILED:$failed"
exit 1
