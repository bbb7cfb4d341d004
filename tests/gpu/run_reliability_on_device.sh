#!/bin/sh
# The GPU items of issue 13 (docs/reliability.md), for the lead on the GPU machine, from the
# repository root with build/ carried from the build machine (nothing is compiled here; build first:
#   make all build/tests/gpu/test_cuda_ops build/tests/gpu/test_cuda_backward \
#        build/tests/gpu/test_api_gpu build/tests/gpu/test_train_gpu
#   run(command="sh tests/gpu/run_reliability_on_device.sh oom|sanitize|memflat MODEL_DIR", carry=["build"])
# oom (about a minute): test_cuda_ops's alloc(total + 1 GB) case and test_api_gpu's full-GPU case
#     (MEDGEM_ERR_OOM with the bytes needed, the free memory and the call's hint, then recovery).
# sanitize (minutes): compute-sanitizer memcheck and racecheck on test_cuda_backward and
#     test_train_gpu (the training kernels), racecheck on test_cuda_ops; each ERROR SUMMARY line.
# memflat MODEL_DIR [EPOCHS]: `medgem train` at the guide's settings on a synthetic BreakHis of the
#     real one's size (82 patients x 4 magnifications x 24 images of 700x460, 7872 images; fold 1,
#     100X, as the guide), EPOCHS (5) epochs; host RSS and GPU memory sampled every 5 s beside the
#     epoch the run is in; per epoch the peak of each, and whether epochs 2.. stay within 1% + 64 MB
#     of epoch 2's peak (flat after the first epoch).
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
    for t in test_cuda_backward test_train_gpu test_cuda_ops; do
        step "racecheck_$t" "$san" --tool racecheck --racecheck-report hazard --error-exitcode 3 "build/tests/gpu/$t"
        grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$out/racecheck_$t.log"
    done
elif [ "$what" = memflat ]; then
    model="${2:?memflat needs the model folder}"
    epochs="${3:-5}"
    run="$out/memflat"
    rm -rf "$run" /tmp/memflat_synth
    step synth build/medgem data synth --out /tmp/memflat_synth --patients 82 --images 24
    build/medgem train --model "$model" --data /tmp/memflat_synth --out "$run" --epochs "$epochs" \
        > "$out/memflat_train.log" 2>&1 &
    pid=$!
    echo "time_s epoch rss_mb gpu_mb" > "$out/memflat_samples.txt"
    t0=$(date +%s)
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null)
        gpu=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -1)
        ep=$(grep '^{"step"' "$run/train_log.jsonl" 2>/dev/null | tail -1 | sed 's/.*"epoch": \([0-9.]*\).*/\1/')
        [ -n "$rss" ] && echo "$(( $(date +%s) - t0 )) ${ep:-0} $rss ${gpu:-0}" >> "$out/memflat_samples.txt"
        sleep 5
    done
    wait "$pid" || failed="$failed memflat_train"
    tail -n 15 "$out/memflat_train.log"
    echo "== memflat: peak per epoch (samples in $out/memflat_samples.txt)"
    # epoch e covers log epochs in [e-1, e); samples before the first update count as epoch 1
    awk -v n="$epochs" 'NR > 1 { e = int($2) + 1; if (e > n) e = n; if ($3 > r[e]) r[e] = $3; if ($4 > g[e]) g[e] = $4 }
        END { bad = 0
              for (e = 1; e <= n; e++) {
                  flag = ""
                  if (e > 2 && (r[e] > r[2] * 1.01 + 64 || g[e] > g[2] * 1.01 + 64)) { flag = "  GROWS"; bad = 1 }
                  printf "epoch %d: host RSS %d MB, GPU %d MB%s\n", e, r[e], g[e], flag }
              print bad ? "memory grows after the first epoch" : "flat after the first epoch"
              exit bad }' "$out/memflat_samples.txt" || failed="$failed memflat"
else
    echo "usage: $0 oom|sanitize|memflat MODEL_DIR [EPOCHS]"
    exit 2
fi

echo "== verdict"
if [ -z "$failed" ]; then echo "all $what checks passed"; exit 0; fi
echo "FAILED:$failed"
exit 1
