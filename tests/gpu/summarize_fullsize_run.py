#!/usr/bin/env python3
"""The summary tests/gpu/run_fullsize_run.sh prints after `medgem run` (standard library only):

    python3 tests/gpu/summarize_fullsize_run.py RUN_DIR RUN_LOG [GPU_MEM_CSV] [--limit S] [--rc N]

- wall time of each stage: from RUN_DIR/metrics.json when the run finished (data, load, baseline,
  train, merge, final, total), and in any case from the timestamps run_fullsize_run.sh put on the
  stage lines of RUN_LOG ("[  12.3s] medgem run: ...");
- training: updates, images/s, each in-training evaluation's seconds (RUN_DIR/train_log.jsonl);
- memory at the end of each epoch (train_log.jsonl's epoch_end lines): host RSS, host peak RSS, GPU
  memory in use; plus the GPU's peak from nvidia-smi samples (GPU_MEM_CSV, MiB per line);
- the verdict on flatness: over epochs 1..N, max - min of host RSS <= HOST_BOUND and of GPU memory in
  use <= GPU_BOUND (below). A run cut short still gets its epochs' memory and a verdict.
Exit status 0 when the run finished and memory was flat.
"""
import json
import os
import re
import sys

GB = 1e9
HOST_BOUND = 256 * 2**20  # host RSS may move by this much between epoch ends (allocator slack, page cache of PNGs)
GPU_BOUND = 256 * 2**20   # device memory in use: every buffer is allocated once, so it should not move at all


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def main():
    args, opts, argv = [], {}, sys.argv[1:]
    while argv:
        a = argv.pop(0)
        if a.startswith("--") and argv:
            opts[a] = argv.pop(0)
        else:
            args.append(a)
    limit, rc = float(opts.get("--limit", 0)), int(opts.get("--rc", 0))
    run_dir, log = args[0], args[1]
    gpu_csv = args[2] if len(args) > 2 else None
    ok = True

    print("== stages (start times from the log)")
    stage_re = re.compile(r"^\[\s*([0-9.]+)s\] (medgem run: .*|epoch \d+ evaluation.*|epoch \d+/\d+ done.*)$")
    end = 0.0
    try:
        with open(log, errors="replace") as f:
            for line in f:
                m = re.match(r"^\[\s*([0-9.]+)s\]", line)
                if m:
                    end = float(m.group(1))
                m = stage_re.match(line.rstrip("\n"))
                if m:
                    print(f"  {float(m.group(1)):7.1f} s  {m.group(2)[:110]}")
    except OSError:
        print(f"  (no log {log})")
    print(f"  {end:7.1f} s  last line of the log")

    metrics = None
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        pass
    if metrics:
        fo = metrics["folds"][0]
        t = fo["timings"]
        print("== wall time per stage (metrics.json)")
        rows = [("data (index)", metrics.get("data_seconds")), ("model load", t["load"]),
                ("baseline evaluation", t["baseline"]), ("LoRA training (with its evaluations)", t["train"]),
                ("merge", t["merge"]), ("final evaluation", t["final"]), ("total", metrics["seconds"])]
        for name, sec in rows:
            print(f"  {name:38s} {sec:8.1f} s" if sec is not None else f"  {name:38s}        -")
        n_test = fo["data"]["test"]["images"]
        for name in ("baseline", "final"):
            if t[name] > 0:
                print(f"  {name} evaluation: {n_test} images, {n_test / t[name]:.1f} images/s")
        d = fo["data"]
        print(f"  data: {d['train']['images']} training, {d['test']['images']} test images")
    else:
        ok = False
        print("== no metrics.json: the run did not finish" + (f" (exit status {rc}" + (
            f", stopped at the {limit:.0f} s limit)" if rc in (124, 130, 137) else ")")))

    log_lines = read_jsonl(os.path.join(run_dir, "train_log.jsonl"))
    steps = [j for j in log_lines if "loss" in j and "step" in j]
    evals = [j["eval"] for j in log_lines if "eval" in j]
    epochs = [j["epoch_end"] for j in log_lines if "epoch_end" in j]
    print("== training (train_log.jsonl)")
    if steps:
        s = steps[-1]
        print(f"  {s['step']} updates, last loss {s['loss']}, {s['images_per_s']:.2f} images/s over {s['seconds']:.1f} s "
              f"(evaluations included)")
    for e in evals:
        print(f"  epoch {e['epoch']} evaluation: {e['images']} images in {e['seconds']:.1f} s "
              f"({e['images'] / max(e['seconds'], 1e-9):.1f} images/s), accuracy {e['accuracy']:.4f}")

    print("== memory at the end of each epoch")
    print("  epoch  updates  seconds  host RSS GB  host peak GB  GPU in use GB")
    for e in epochs:
        dev = e.get("device_used_bytes")
        print(f"  {e['epoch']:5d}  {e['updates']:7d}  {e['seconds']:7.1f}  {e['host_rss_bytes'] / GB:11.2f}  "
              f"{e['host_peak_rss_bytes'] / GB:12.2f}  {'-' if dev is None else f'{dev / GB:13.2f}'}")
    if gpu_csv:
        try:
            with open(gpu_csv) as f:
                mib = [float(x) for x in f.read().split() if re.fullmatch(r"[0-9.]+", x)]
            if mib:
                print(f"  nvidia-smi: GPU memory used peaked at {max(mib) * 2**20 / GB:.2f} GB ({len(mib)} samples)")
        except OSError:
            pass

    print("== verdict")
    if len(epochs) < 2:
        print(f"  memory: {len(epochs)} epoch(s) logged, too few to judge flatness")
        ok = False
    else:
        rss = [e["host_rss_bytes"] for e in epochs]
        dev = [e["device_used_bytes"] for e in epochs if e.get("device_used_bytes") is not None]
        host_var = max(rss) - min(rss)
        flat_host = host_var <= HOST_BOUND
        print(f"  host RSS over epochs 1-{len(epochs)}: {min(rss) / GB:.3f} .. {max(rss) / GB:.3f} GB, varies "
              f"{host_var / 2**20:.0f} MiB (bound {HOST_BOUND / 2**20:.0f} MiB): {'flat' if flat_host else 'NOT flat'}")
        flat_dev = True
        if dev:
            dev_var = max(dev) - min(dev)
            flat_dev = dev_var <= GPU_BOUND
            print(f"  GPU memory in use over epochs 1-{len(epochs)}: {min(dev) / GB:.3f} .. {max(dev) / GB:.3f} GB, varies "
                  f"{dev_var / 2**20:.0f} MiB (bound {GPU_BOUND / 2**20:.0f} MiB): {'flat' if flat_dev else 'NOT flat'}")
        else:
            print("  GPU memory: not recorded (CPU backend)")
        peak = [e["host_peak_rss_bytes"] for e in epochs]
        print(f"  (host peak RSS grew {(peak[-1] - peak[0]) / 2**20:.0f} MiB after epoch 1; "
              f"informational: the first in-training evaluation may raise it once)")
        ok &= flat_host and flat_dev
    print("fullsize run:", "OK" if ok else "NOT OK (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
