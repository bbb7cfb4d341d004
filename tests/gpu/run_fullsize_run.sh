#!/bin/sh
# `medgem run` at full size on the GPU machine: a random MedGemma-4B (exact shapes, seeded weights,
# a stand-in Gemma 3 tokenizer) on a synthetic BreakHis of the real size (7,909 images of 700x460;
# fold 1 at 100X gives the guide's 766 training and 522 test images). Reports the wall time of each
# stage and the host/GPU memory at the end of each epoch, with a verdict on whether it stays flat.
# Two calls on the same warm machine (each under the 600 s a device command may take), from the
# repository root with build/ carried (build/medgem and build/lib; nothing is compiled there):
#   run(command="sh tests/gpu/run_fullsize_run.sh prep", carry=["build"])
#   run(command="sh tests/gpu/run_fullsize_run.sh run", carry=["build"])
# prep (about 1-2 minutes): the random checkpoint (tests/gpu/fullsize_compare.py's builder, built
#   on the GPU, saved in bf16, 8.6 GB) into MODEL_DIR, the tokenizer files
#   (tests/gpu/make_standin_tokenizer.py), `medgem data synth --real-counts` into DATA_DIR; each
#   reused when already complete.
# run: build/medgem run with the guide's settings except --batch 4 --grad-accum 2 (the same 8 images
#   per update as the guide's 1 x 8, and the same 96 updates an epoch), --max-memory 40 (the guide's
#   A100-40GB), --threads 8 (image decoding workers), and --eval-every 5: at the estimated speeds
#   (training about 8 images/s, evaluation about 38) 5 epochs of 766 images take about 485 s, and
#   each evaluation of 522 images about 14 s, so the guide's 7 evaluations (baseline, one per epoch,
#   final; about 100 s) with the model load would not fit in 600 s; 3 do (baseline, after epoch 5,
#   final: about 545 s in all). EVAL_EVERY=1 runs the guide's schedule where time allows. The run
#   is stopped (SIGINT, then KILL 10 s later) at TIME_LIMIT seconds so the summary always prints;
#   a stopped run still reports the memory of the epochs it finished.
#   Its directory is RUN_DIR (adapter, checkpoints and predictions stay there); only run.log,
#   summary.txt, metrics.json, train_log.jsonl, report.html and gpu_mem.csv go to $OUT.
# Environment (defaults): MODEL_DIR (/tmp/mg4b), DATA_DIR (/tmp/bh), RUN_DIR (/tmp/mg4b_run),
#   EPOCHS (5), EVAL_EVERY (5), BATCH (4), GRAD_ACCUM (2), MAX_MEMORY (40), TIME_LIMIT (580),
#   EXTRA (more `medgem run` flags), PYTHON (python3: the one with torch and transformers),
#   SMALL=1 (fullsize_compare.py --small's toy checkpoint: a CPU smoke test of this script),
#   SYNTH (--real-counts: the arguments of `medgem data synth`).
# Exit status: 0 when the step worked (run: finished, and memory flat).
set -u
cd "$(dirname "$0")/../.." || exit 2
out="${OUT:-/tmp/fullsize_run_out}"
mkdir -p "$out"
MODEL_DIR="${MODEL_DIR:-/tmp/mg4b}"
DATA_DIR="${DATA_DIR:-/tmp/bh}"
RUN_DIR="${RUN_DIR:-/tmp/mg4b_run}"
EPOCHS="${EPOCHS:-5}"
EVAL_EVERY="${EVAL_EVERY:-5}"
BATCH="${BATCH:-4}"
GRAD_ACCUM="${GRAD_ACCUM:-2}"
MAX_MEMORY="${MAX_MEMORY:-40}"
TIME_LIMIT="${TIME_LIMIT:-580}"
EXTRA="${EXTRA:-}"
PYTHON="${PYTHON:-python3}"
SMALL="${SMALL:-0}"
SYNTH="${SYNTH:---real-counts}"
LD_LIBRARY_PATH="$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH PYTHONUNBUFFERED=1

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# prefixes each line with the seconds since it started
stamp() { python3 -u -c 'import sys, time
t0 = time.time()
for line in sys.stdin:
    sys.stdout.write("[%7.1fs] %s" % (time.time() - t0, line))'; }

prep() {
    command -v nvidia-smi > /dev/null && nvidia-smi -L
    t0=$(now)
    echo "== random checkpoint -> $MODEL_DIR (small=$SMALL)"
    "$PYTHON" - "$MODEL_DIR" "$SMALL" <<'EOF' || return 1
import os, shutil, sys, time
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "gpu"))
import torch
from fullsize_compare import save_model
d, small = sys.argv[1], sys.argv[2] == "1"
if os.path.exists(os.path.join(d, "config.json")):
    print(f"reusing the checkpoint in {d}")
else:  # into a side folder, renamed when complete: an interrupted prep leaves nothing to reuse by mistake
    part = d + ".partial"
    shutil.rmtree(part, ignore_errors=True)
    if os.path.isdir(d):
        print(f"{d} has no config.json: replacing it")
        shutil.rmtree(d)
    save_model(part, small, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    os.rename(part, d)
EOF
    echo "checkpoint: $(since "$t0") s"
    t1=$(now)
    python3 tests/gpu/make_standin_tokenizer.py "$MODEL_DIR" || return 1
    echo "tokenizer: $(since "$t1") s"
    build/medgem info --model "$MODEL_DIR" || return 1
    t2=$(now)
    if [ -f "$DATA_DIR/Folds.csv" ]; then
        echo "== reusing the synthetic BreakHis in $DATA_DIR (Folds.csv is written last)"
    else
        rm -rf "$DATA_DIR"
        echo "== medgem data synth --out $DATA_DIR $SYNTH"
        # shellcheck disable=SC2086
        build/medgem data synth --out "$DATA_DIR" $SYNTH || return 1
    fi
    echo "data: $(since "$t2") s"
    build/medgem data --data "$DATA_DIR" || return 1
    du -sh "$MODEL_DIR" "$DATA_DIR"
    echo "prep: $(since "$t0") s in all"
}

run() {
    if [ ! -f "$MODEL_DIR/tokenizer.model" ] || [ ! -f "$DATA_DIR/Folds.csv" ]; then
        echo "no $MODEL_DIR/tokenizer.model or $DATA_DIR/Folds.csv: run 'prep' first on the same warm machine" >&2
        return 2
    fi
    command -v nvidia-smi > /dev/null && nvidia-smi -L
    rm -rf "$RUN_DIR"
    rm -f "$out/gpu_mem.csv"
    smi=""
    if command -v nvidia-smi > /dev/null; then # the GPU's used memory every 2 s, for its peak
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -l 2 > "$out/gpu_mem.csv" 2> /dev/null &
        smi=$!
    fi
    limit=""
    command -v timeout > /dev/null && limit="timeout -k 10 -s INT $TIME_LIMIT"
    echo "== medgem run: the guide's settings except --batch $BATCH --grad-accum $GRAD_ACCUM (8 images an update, as" \
         "the guide's 1 x 8), --max-memory $MAX_MEMORY, --eval-every $EVAL_EVERY, --epochs $EPOCHS, --threads 8; limit ${TIME_LIMIT} s"
    rcfile="$out/.rc"
    # shellcheck disable=SC2086
    { $limit build/medgem run --model "$MODEL_DIR" --data "$DATA_DIR" --out "$RUN_DIR" --epochs "$EPOCHS" \
          --batch "$BATCH" --grad-accum "$GRAD_ACCUM" --max-memory "$MAX_MEMORY" --eval-every "$EVAL_EVERY" \
          --threads 8 $EXTRA 2>&1; echo $? > "$rcfile"; } | stamp | tee "$out/run.log"
    rc=$(cat "$rcfile")
    rm -f "$rcfile"
    [ -n "$smi" ] && kill "$smi" 2> /dev/null
    for f in metrics.json train_log.jsonl report.html; do
        [ -f "$RUN_DIR/$f" ] && cp "$RUN_DIR/$f" "$out/"
    done
    echo "== medgem run exit status $rc"
    python3 tests/gpu/summarize_fullsize_run.py "$RUN_DIR" "$out/run.log" "$out/gpu_mem.csv" --limit "$TIME_LIMIT" \
        --rc "$rc" | tee "$out/summary.txt"
}

case "${1:-}" in
prep | run) ;;
*) echo "usage: sh tests/gpu/run_fullsize_run.sh prep|run" >&2; exit 2 ;;
esac
{ "$1"; echo $? > "$out/.status"; } 2>&1 | tee "$out/$1.log.tmp"
st=$(cat "$out/.status")
rm -f "$out/.status"
if [ "$1" = prep ]; then mv "$out/prep.log.tmp" "$out/prep.log"; else rm -f "$out/run.log.tmp"; fi
[ "$st" = 0 ] || exit "$st"
# run: the summary's verdict
[ "$1" = prep ] || tail -n 1 "$out/summary.txt" | grep -q ': OK$'
