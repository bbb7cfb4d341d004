#!/bin/sh
# The GPU items of issue 13 (docs/reliability.md), for the lead on the GPU machine, from the
# repository root with build/ carried from the build machine (nothing is compiled here; build first:
#   make all build/tests/gpu/test_cuda_ops build/tests/gpu/test_cuda_backward \
#        build/tests/gpu/test_api_gpu build/tests/gpu/test_train_gpu
#   run(command="sh tests/gpu/run_reliability_on_device.sh oom|sanitize|race-attention", carry=["build"])
# oom (about a minute): test_cuda_ops's alloc(total + 1 GB) case and test_api_gpu's full-GPU case
#     (MEDGEM_ERR_OOM with the bytes needed, the free memory and the call's hint, then recovery).
# sanitize (about 5 minutes on the H200): compute-sanitizer memcheck and racecheck on
#     test_cuda_backward and test_train_gpu (the training kernels); each ERROR SUMMARY line.
# race-attention (several minutes): racecheck on test_cuda_ops's attention cases (MG_TEST_ONLY), the
#     kernels with shared-memory tiles, without the full-size SigLIP shape (MG_TEST_SKIP=T=4096): its
#     kernel is the one the T=300, D=72 case runs, and under racecheck it alone would take most of the
#     600 s a device command may run. A separate mode for the same reason.
# Memory over a 5-epoch run at full size: tests/gpu/run_fullsize_run.sh (per-epoch host and GPU
# memory, nvidia-smi sampled through the run, and the flatness verdict).
# Logs go to $OUT (/tmp when unset). Exit status: 0 only when every step passed.
set -u
cd "$(dirname "$0")/../.." || exit 2
out="${OUT:-/tmp}"
what="${1:-oom}"
failed=""
LD_LIBRARY_PATH="$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
nvidia-smi -L

step() { # name, command...: runs it with its log in $out/<name>.log, prints the log's tail
    name=$1; shift
    echo "== $name"
    "$@" > "$out/$name.log" 2>&1 || failed="$failed $name"
    tail -n 25 "$out/$name.log"
}
san=/usr/local/cuda/bin/compute-sanitizer
[ -x "$san" ] || san=$(command -v compute-sanitizer || echo compute-sanitizer)

if [ "$what" = oom ]; then
    step test_cuda_ops build/tests/gpu/test_cuda_ops
    grep -B1 'alloc(total' "$out/test_cuda_ops.log"
    step test_api_gpu build/tests/gpu/test_api_gpu
elif [ "$what" = sanitize ]; then
    for t in test_cuda_backward test_train_gpu; do
        step "memcheck_$t" "$san" --tool memcheck --error-exitcode 3 "build/tests/gpu/$t"
        grep 'ERROR SUMMARY' "$out/memcheck_$t.log"
    done
    for t in test_cuda_backward test_train_gpu; do
        step "racecheck_$t" "$san" --tool racecheck --racecheck-report hazard --error-exitcode 3 "build/tests/gpu/$t"
        grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$out/racecheck_$t.log"
    done
elif [ "$what" = race-attention ]; then
    # cases chosen by name (MG_TEST_ONLY / MG_TEST_SKIP): restricting racecheck with --kernel-name
    # instead stopped the sanitizer in a cuBLASLt case (H200, 2026-12-02: "failed to handle a
    # hardware exception")
    step racecheck_attention env MG_TEST_ONLY=attention MG_TEST_SKIP=T=4096 "$san" --tool racecheck \
        --racecheck-report hazard --error-exitcode 3 build/tests/gpu/test_cuda_ops
    grep -E ': FAIL|RACECHECK SUMMARY|ERROR SUMMARY' "$out/racecheck_attention.log"
else
    echo "usage: $0 oom|sanitize|race-attention"
    exit 2
fi

echo "== verdict"
if [ -z "$failed" ]; then echo "all $what checks passed"; exit 0; fi
echo "FAILED:$failed"
exit 1
