#!/usr/bin/env python3
"""Evaluation throughput, medgem beside transformers, in one run on one GPU (issue 6; docs/benchmarks.md).

On the GPU machine, from the repository root, with build/ carried (`make all` on the build machine):

    python3 tests/bench/bench_eval_hf.py [--dir /tmp/mg4b] [--batches 1,8,32] [--tokens 360] [--out F]

Steps:
1. the random-weight MedGemma-4B checkpoint of tests/gpu/fullsize_compare.py (its build/save code,
   imported): built and saved to --dir in about 45 s, reused when --dir already holds it;
2. transformers bf16, sdpa attention: the eval prefill, model(**inputs, logits_to_keep=1) under
   torch.inference_mode, on prompts of exactly --tokens ids (bos, user turn, 256 image soft tokens
   between boi/eoi, random text, model turn; fullsize_compare.make_inputs) with random pixels;
   timed with CUDA events after --warmup runs, the median of --iters; at each of --batches;
   optionally greedy `generate` of 8 new tokens at batch 8 (the guide's evaluation path);
3. the model is freed, then `build/medgem bench --model DIR --batch B --tokens T --json` at the same
   batches (its own warm-up and median; the eval score path: logits at the last position over 8 ids);
4. a table batch | HF images/s | medgem images/s | ratio (medgem / HF), with the GPU, date and
   versions; every number in a JSON file (--out, default $OUT/bench_eval_hf.json when $OUT is set,
   else ./bench_eval_hf.json).
--small runs the same on fullsize_compare's toy config (CPU is enough; medgem then runs --cpu).
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import transformers
from transformers import Gemma3ForConditionalGeneration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "gpu"))
import fullsize_compare as fc  # noqa: E402  (the checkpoint's config, weights and prompt layout)

# fullsize_compare's prompt: 6 tokens before the image block, 2 after it, then the text, then 5
TEMPLATE_TOKENS = 13


class Timer:
    """Milliseconds of a region: CUDA events on a GPU (synchronised before reading), else a host clock."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t)


def make_prompts(n, config, tokens):
    """n prompts of exactly `tokens` ids in fullsize_compare's classify layout, with random pixels."""
    text = tokens - TEMPLATE_TOKENS - config.mm_tokens_per_image
    if text < 1:
        sys.exit(f"--tokens {tokens} leaves no room for text: at least {TEMPLATE_TOKENS + config.mm_tokens_per_image + 1}")
    fc.TEXT_TOKENS = text  # make_inputs reads the module's text length
    inputs = fc.make_inputs(n, config)
    assert inputs["input_ids"].shape[1] == tokens, inputs["input_ids"].shape
    return inputs


def batch_of(inputs, b, device):
    sl = {k: v[:b].to(device) for k, v in inputs.items()}
    sl["pixel_values"] = sl["pixel_values"].to(torch.bfloat16)
    sl["attention_mask"] = torch.ones_like(sl["input_ids"])
    return sl


def measure(timer, fn, warmup, iters):
    for _ in range(warmup):
        timer(fn)
    ms = [timer(fn) for _ in range(iters)]
    return {"ms": ms, "ms_per_batch": statistics.median(ms)}


@torch.inference_mode()
def bench_hf(args, inputs, batches, device):
    t = time.time()
    model = Gemma3ForConditionalGeneration.from_pretrained(args.dir, dtype=torch.bfloat16,
                                                           attn_implementation="sdpa").to(device).eval()
    print(f"transformers: loaded in {time.time() - t:.1f} s", flush=True)
    timer, res = Timer(device), {"prefill": {}, "generate": {}}
    for b in batches:
        sl = batch_of(inputs, b, device)
        out = model(**sl, logits_to_keep=1)
        assert out.logits.shape[:2] == (b, 1), f"logits_to_keep=1 gave logits of shape {tuple(out.logits.shape)}"
        assert torch.isfinite(out.logits).all(), "transformers' logits are not finite"
        del out
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r = measure(timer, lambda: model(**sl, logits_to_keep=1), args.warmup, args.iters)
        r["images_per_s"] = b / (r["ms_per_batch"] / 1e3)
        if device.type == "cuda":
            r["peak_bytes"] = torch.cuda.max_memory_allocated()
        res["prefill"][b] = r
        print(f"transformers prefill batch {b}: {r['ms_per_batch']:.1f} ms, {r['images_per_s']:.2f} images/s", flush=True)
    if args.generate_batch:
        b = args.generate_batch
        sl = batch_of(inputs, b, device)
        gen = lambda: model.generate(**sl, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)  # noqa: E731
        assert gen().shape[1] == sl["input_ids"].shape[1] + 8
        r = measure(timer, gen, 1, max(1, args.iters // 2))
        r["images_per_s"] = b / (r["ms_per_batch"] / 1e3)
        res["generate"][b] = r
        print(f"transformers generate (8 new tokens) batch {b}: {r['ms_per_batch']:.1f} ms, "
              f"{r['images_per_s']:.2f} images/s", flush=True)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def bench_medgem(args, batches, cpu):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.path.join(REPO, "build", "lib") + ":" + env.get("LD_LIBRARY_PATH", "")
    res = {}
    for b in batches:
        cmd = [os.path.join(REPO, "build", "medgem"), "bench", "--model", args.dir, "--batch", str(b), "--tokens",
               str(args.tokens), "--iters", str(args.mg_iters), "--warmup", str(args.mg_warmup), "--json"]
        if cpu:
            cmd.append("--cpu")
        t = time.time()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"medgem bench batch {b} failed (exit {p.returncode}):\n{p.stderr.strip()}", flush=True)
            res[b] = {"error": p.stderr.strip(), "command": " ".join(cmd)}
            continue
        r = json.loads(p.stdout)
        r["command"], r["wall_s"] = " ".join(cmd), time.time() - t
        res[b] = r
        print(f"medgem batch {b}: {r['ms_per_batch']:.1f} ms, {r['images_per_s']:.2f} images/s "
              f"(load {r['load_s']:.1f} s)", flush=True)
    return res


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=None, help="the random checkpoint (default /tmp/mg4b, --small: /tmp/mg4b-small)")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--tokens", type=int, default=360)
    ap.add_argument("--iters", type=int, default=10, help="timed transformers forwards (median)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--mg-iters", type=int, default=3, help="timed medgem forwards (median)")
    ap.add_argument("--mg-warmup", type=int, default=1)
    ap.add_argument("--generate-batch", type=int, default=8, help="batch of the greedy generate timing; 0: skip")
    ap.add_argument("--out", default=None)
    ap.add_argument("--small", action="store_true", help="fullsize_compare's toy config (a smoke test)")
    ap.add_argument("--cpu", action="store_true", help="medgem on its CPU backend")
    args = ap.parse_args()
    args.dir = args.dir or ("/tmp/mg4b-small" if args.small else "/tmp/mg4b")
    out_path = args.out or os.path.join(os.environ.get("OUT", "."), "bench_eval_hf.json")
    batches = [int(b) for b in args.batches.split(",")]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none (CPU)"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    t = time.time()
    fc.save_model(args.dir, args.small, device)
    config = fc.build_config(args.small)
    inputs = make_prompts(max(batches + [args.generate_batch]), config, args.tokens)
    print(f"checkpoint ready in {time.time() - t:.0f} s; prompts of {args.tokens} tokens "
          f"({config.mm_tokens_per_image} image tokens); device {gpu}", flush=True)

    hf = bench_hf(args, inputs, batches, device)
    mg = bench_medgem(args, batches, args.cpu or device.type != "cuda")

    rows = []
    for b in batches:
        h, m = hf["prefill"][b], mg[b]
        ratio = m["images_per_s"] / h["images_per_s"] if "images_per_s" in m else None
        rows.append({"batch": b, "hf_images_per_s": h["images_per_s"], "hf_ms_per_batch": h["ms_per_batch"],
                     "medgem_images_per_s": m.get("images_per_s"), "medgem_ms_per_batch": m.get("ms_per_batch"),
                     "ratio": ratio})
    result = {"what": "eval prefill throughput, logits at the last position; medgem bench vs transformers bf16 sdpa",
              "date": date, "gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
              "tokens": args.tokens, "image_tokens": config.mm_tokens_per_image, "checkpoint": args.dir,
              "small": args.small, "command": " ".join(sys.argv), "rows": rows,
              "hf": {k: {str(b): v for b, v in d.items()} for k, d in hf.items()},
              "medgem": {str(b): v for b, v in mg.items()}}
    write_json(out_path, result)

    print(f"\n{gpu}, {date}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{args.tokens}-token prompts ({config.mm_tokens_per_image} image tokens)")
    print("| batch | HF images/s | medgem images/s | ratio |\n|---|---|---|---|")
    for r in rows:
        mg_s = f"{r['medgem_images_per_s']:.2f}" if r["ratio"] is not None else "failed"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        print(f"| {r['batch']} | {r['hf_images_per_s']:.2f} | {mg_s} | {ratio} |")
    for b, g in hf["generate"].items():
        print(f"HF generate (8 new tokens), batch {b}: {g['images_per_s']:.2f} images/s")
    print(f"all numbers: {out_path}")
    sys.exit(0 if all(r["ratio"] is not None for r in rows) else 1)


if __name__ == "__main__":
    main()
