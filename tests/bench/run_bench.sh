#!/bin/sh
# `make bench`: every benchmark in one run on the GPU machine, then one table (tests/bench/bench_table.py).
# From the repository root with build/ carried (make bench builds it first when nvcc exists).
# Parts, in order (BENCH_PARTS, comma-separated; default all four):
#   kernels    tests/bench/bench_kernels_torch.py: the two ceilings (8192^3 bf16 matmul, 1 GiB device
#              copy) and medgem's CUDA ops against torch's          -> bench_kernels.json
#              tests/bench/bench_kernels_bwd_torch.py: the backward ops against torch autograd
#              at the training micro-batch                            -> bench_kernels_bwd.json
#              tests/bench/bench_lora_torch.py: the LoRA branch against PEFT's, forward and
#              backward, at the training micro-batch                  -> bench_lora.json
#   attention  build/bench/attention and tests/bench/attention_torch.py -> attn_lab.txt, attn_torch.txt
#   eval       tests/bench/bench_eval_hf.py: `medgem bench` against transformers' prefill -> bench_eval_hf.json
#   train      tests/bench/bench_train_hf.py: training against HF+PEFT(+Liger)      -> bench_train.txt
# BENCH_E2E=0 drops eval and train (the slow end-to-end parts: minutes each).
# Options (environment): BENCH_KERNEL_BATCH (32), BENCH_TOKENS (360), BENCH_KERNEL_BWD_BATCH (4),
#   BENCH_TRAIN_TOKENS (352: the backward kernels' prompt length), BENCH_EVAL_BATCHES (1,8,32),
#   BENCH_TRAIN_BATCHES (4), BENCH_HF_TRAIN_BATCHES (default: BENCH_TRAIN_BATCHES), BENCH_TRAIN_STEPS (8),
#   BENCH_MAX_MEMORY (40: medgem's budget in GB), BENCH_NO_HF=1 (training: medgem only),
#   BENCH_DIR (/tmp/mg4b: the random checkpoint, built once and reused).
# Output: $OUT (default /tmp/medgem-bench): the files above, bench_run.log (every part's stdout and
# stderr, its exit status, and the table last) and bench_table.json: 9 files in all.
# The device allows 600 s a command and returns at most 8 files: run the parts in two calls there
# (e.g. BENCH_PARTS=kernels,attention,eval then BENCH_PARTS=train) and join their folders with
# `python3 tests/bench/bench_table.py DIR1 DIR2`.
# Exit status: 0 when every part ran and passed its own checks.
set -u
cd "$(dirname "$0")/../.." || exit 2
out="${OUT:-/tmp/medgem-bench}"
mkdir -p "$out" || exit 2
parts="${BENCH_PARTS:-kernels,attention,eval,train}"
if [ "${BENCH_E2E:-1}" = 0 ]; then
    parts=$(echo "$parts" | tr ',' '\n' | grep -v -x -e eval -e train | paste -sd, -)
fi
tokens="${BENCH_TOKENS:-360}"
dir="${BENCH_DIR:-/tmp/mg4b}"
train_batches="${BENCH_TRAIN_BATCHES:-4}"
LD_LIBRARY_PATH="$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH PYTHONUNBUFFERED=1
log="$out/bench_run.log"
: > "$log"
failed=""

has() { echo ",$parts," | grep -q ",$1,"; }
# part NAME STDOUT_FILE COMMAND...: stdout to STDOUT_FILE (or the log when empty), stderr to the log,
# then a "== part NAME: exit N" line that bench_table.py reads.
part() {
    name=$1 dest=$2; shift 2
    echo "== $name: $*" | tee -a "$log"
    t0=$(date +%s)
    if [ -n "$dest" ]; then "$@" > "$dest" 2>> "$log"; else "$@" >> "$log" 2>&1; fi
    rc=$?
    echo "== part $name: exit $rc ($(( $(date +%s) - t0 )) s)" | tee -a "$log"
    [ $rc = 0 ] || failed="$failed $name"
}
skip() { echo "== part $1: skipped" >> "$log"; }

nvidia-smi -L 2>&1 | tee -a "$log"
for p in kernels kernels_bwd kernels_lora attention_lab attention_torch eval train; do has ${p%_*} || skip $p; done
if has kernels; then
    part kernels "" python3 tests/bench/bench_kernels_torch.py --batch "${BENCH_KERNEL_BATCH:-32}" \
        --tokens "$tokens" --out "$out/bench_kernels.json"
    part kernels_bwd "" python3 tests/bench/bench_kernels_bwd_torch.py --batch "${BENCH_KERNEL_BWD_BATCH:-4}" \
        --tokens "${BENCH_TRAIN_TOKENS:-352}" --out "$out/bench_kernels_bwd.json"
    part kernels_lora "" python3 tests/bench/bench_lora_torch.py --batch "${BENCH_KERNEL_BWD_BATCH:-4}" \
        --tokens "${BENCH_TRAIN_TOKENS:-352}" --out "$out/bench_lora.json"
fi
if has attention; then
    part attention_lab "$out/attn_lab.txt" build/bench/attention
    part attention_torch "$out/attn_torch.txt" python3 tests/bench/attention_torch.py
fi
if has eval; then
    part eval "" python3 tests/bench/bench_eval_hf.py --dir "$dir" --batches "${BENCH_EVAL_BATCHES:-1,8,32}" \
        --tokens "$tokens" --generate-batch 0 --out "$out/bench_eval_hf.json"
fi
if has train; then
    if ls .whl/*.whl > /dev/null 2>&1; then  # liger-kernel carried as a wheel (run_train_on_device.sh's way)
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
            >> "$log" 2>&1 && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    no_hf=""
    [ "${BENCH_NO_HF:-0}" = 1 ] && no_hf=--no-hf
    part train "$out/bench_train.txt" python3 tests/bench/bench_train_hf.py --dir "$dir" --batches "$train_batches" \
        --hf-batches "${BENCH_HF_TRAIN_BATCHES:-$train_batches}" --steps "${BENCH_TRAIN_STEPS:-8}" \
        --max-memory "${BENCH_MAX_MEMORY:-40}" $no_hf
fi

python3 tests/bench/bench_table.py "$out" --json "$out/bench_table.json" | tee -a "$log"
[ -z "$failed" ] || { echo "FAILED:$failed (see $log)"; exit 1; }
