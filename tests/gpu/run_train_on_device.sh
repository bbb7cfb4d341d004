#!/bin/sh
# The training checks the lead runs on the GPU machine, from the repository root, with build/
# carried from the build machine (nothing is compiled here; build it first with
#   make all build/tests/gpu/test_cuda_ops build/tests/gpu/test_cuda_backward \
#        build/tests/gpu/test_train_gpu build/tests/gpu/fullsize_train && make test
# so that build/test_train/learn/adapter exists):
#   run(command="sh tests/gpu/run_train_on_device.sh [quick|full|bench]", carry=["build"])
# quick (about 2 minutes):
#   1. the CUDA op tests, forward and backward (every op against float64);
#   2. test_train_gpu: the tiny model's 94 LoRA gradients and 5 AdamW losses against PEFT fp32;
#      test_api_gpu: libmedgem on CUDA (two models from two threads, CUDA vs CPU, a trainer);
#   3. `medgem train` on the GPU: tiny model, synthetic BreakHis, 3 epochs, then its adapter and the
#      CPU-trained one from `make test` through PEFT (check_trained_adapter.py), and `medgem merge`'s
#      directory through from_pretrained (check_merged.py);
#   4. compute-sanitizer memcheck on a few GPU training updates.
# full: tests/gpu/train_compare.py (20 updates at 4B shapes against HF+PEFT bf16 and fp32), then
#   tests/gpu/check_merge_precision.py (medgem merge against transformers' bf16 merge and fp32; needs
#   build/tests/gpu/fullsize_forward).
# bench [BATCHES [GB,...] [HF_BATCHES]]: tests/bench/bench_train_hf.py (images/s and peak memory beside
#   HF+PEFT(+Liger); medgem under each memory budget, 0 = all free memory; HF at HF_BATCHES, default BATCHES).
# Logs go to $OUT (/tmp when unset). Exit status: 0 only when every step passed.
set -u
cd "$(dirname "$0")/../.." || exit 2
out="${OUT:-/tmp}"
what="${1:-quick}"
failed=""
LD_LIBRARY_PATH="$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH PYTHONUNBUFFERED=1
nvidia-smi -L

step() { # name, command...: runs it with its log in $out/<name>.log, prints the log's tail
    name=$1; shift
    echo "== $name"
    "$@" > "$out/$name.log" 2>&1 || failed="$failed $name"
    tail -n 40 "$out/$name.log"
}

if [ "$what" = quick ]; then
    if [ -x build/tests/gpu/test_cuda_ops ]; then
        step test_cuda_ops build/tests/gpu/test_cuda_ops
        grep -E ': FAIL' "$out/test_cuda_ops.log"
    fi
    step test_cuda_backward build/tests/gpu/test_cuda_backward
    grep -E 'FAIL' "$out/test_cuda_backward.log"
    step test_train_gpu build/tests/gpu/test_train_gpu
    if [ -x build/tests/gpu/test_api_gpu ]; then step test_api_gpu build/tests/gpu/test_api_gpu; fi
    rm -rf /tmp/synth /tmp/gputrain
    build/medgem data synth --out /tmp/synth --patients 32 --images 4 --size 140x92 > /dev/null
    step train_tiny_gpu build/medgem train --model tests/golden/tiny --data /tmp/synth --out /tmp/gputrain \
        --loss-on answer --lr 5e-3 --epochs 3 --batch 4 --grad-accum 1 --max-grad-norm 1 --warmup-ratio 0
    grep evaluation "$out/train_tiny_gpu.log"
    step check_trained_adapter python3 tests/gpu/check_trained_adapter.py build/test_train/learn/adapter /tmp/gputrain/adapter
    if [ -f tests/gpu/check_merged.py ]; then step check_merged python3 tests/gpu/check_merged.py; fi
    san=/usr/local/cuda/bin/compute-sanitizer
    [ -x "$san" ] || san=$(command -v compute-sanitizer || true)
    if [ -n "$san" ]; then
        step memcheck_train "$san" --tool memcheck --error-exitcode 3 build/medgem train --model tests/golden/tiny \
            --data /tmp/synth --out /tmp/memcheck --max-steps 3 --batch 2 --grad-accum 1 --eval-every 0
        grep -E 'ERROR SUMMARY' "$out/memcheck_train.log"
    fi
elif [ "$what" = full ]; then
    step train_compare python3 tests/gpu/train_compare.py --steps 20 --batch 4
    step check_merge_precision python3 tests/gpu/check_merge_precision.py --n 32
elif [ "$what" = bench ]; then
    if ls .whl/*.whl > /dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
            export PYTHONPATH=/tmp/site
    fi
    step bench_train python3 tests/bench/bench_train_hf.py --batches "${2:-1,4,8}" --steps 8 --max-memory "${3:-40}" \
        ${4:+--hf-batches "$4"}
fi

echo "== verdict"
if [ -z "$failed" ]; then echo "all GPU training checks passed"; exit 0; fi
echo "FAILED:$failed"
exit 1
