#!/usr/bin/env python3
"""Training throughput and peak memory of medgem beside HF+PEFT and HF+PEFT+Liger, in one run on one
GPU, at MedGemma-4B's full shapes (random weights: tests/gpu/fullsize_compare.py's checkpoint;
352-token training prompts with one 896x896 image each, tests/gpu/train_compare.py's batches).

    make all build/tests/gpu/fullsize_train                        # on the build machine
    python3 tests/bench/bench_train_hf.py [--batches 1,4,8] [--steps 8] [--dir /tmp/mg4b]

Every configuration runs --steps LoRA updates (r 8, alpha 16, all-linear, AdamW) of one
micro-batch each; the time of the updates after the first two is what counts (images/s), and the
peak is torch.cuda.max_memory_allocated for HF and, for medgem, what it allocated (weights +
activations + gradients + LoRA state, printed by fullsize_train) and the device's used memory
(cudaMemGetInfo, which includes the CUDA context). medgem keeps as many vision layers' activations
as fit in --max-memory (40 GB by default: the guide's A100-40GB) and recomputes the others. HF runs in bf16 with the LoRA weights in fp32 under autocast (the
guide's setting), sdpa attention, with and without gradient checkpointing; "+Liger" adds
liger_kernel's Gemma 3 patches (fused linear cross-entropy, RMSNorm, GeGLU) when the package is
importable. Both stacks train with the same LoRA dropout (--dropout, default the guide's 0.1; the
adapter is saved with 0, so HF's is set on load). A configuration that runs out of memory is reported
as OOM. Prints a Markdown table.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gpu"))
from fullsize_compare import REPO, build_config, save_model  # noqa: E402
from train_compare import make_adapter, make_batches  # noqa: E402


def bench_hf(model_dir, adapter, data, batch, steps, checkpointing, liger, dropout):
    import peft
    from transformers import Gemma3ForConditionalGeneration
    if liger:
        from liger_kernel.transformers import apply_liger_kernel_to_gemma3
        apply_liger_kernel_to_gemma3()
    model = Gemma3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                           attn_implementation="sdpa").cuda()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = peft.PeftConfig.from_pretrained(adapter)
    config.lora_dropout = dropout  # the adapter was saved with 0; both stacks train with the same dropout
    pm = peft.PeftModel.from_pretrained(model, adapter, is_trainable=True, config=config)
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    n = len(data["input_ids"])
    torch.cuda.reset_peak_memory_stats()
    times = []
    try:
        for k in range(steps):
            idx = [(k * batch + j) % n for j in range(batch)]
            b = {key: v[idx].cuda() for key, v in data.items()}
            b["pixel_values"] = b["pixel_values"].to(torch.bfloat16)
            b["attention_mask"] = torch.ones_like(b["input_ids"])
            torch.cuda.synchronize()
            t = time.time()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = pm(**b).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.3)
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            times.append(time.time() - t)
        rate = (steps - 2) * batch / sum(times[2:])
        peak = torch.cuda.max_memory_allocated() / 1e9
    except torch.OutOfMemoryError:
        rate, peak = None, None
    del pm, model, opt
    torch.cuda.empty_cache()
    return rate, peak


def bench_medgem(model_dir, adapter, inputs, batch, steps, max_memory, dropout):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.path.join(REPO, "build", "lib") + ":" + env.get("LD_LIBRARY_PATH", "")
    out = os.path.join(model_dir, "bench_train_outputs.safetensors")
    cmd = [os.path.join(REPO, "build", "tests", "gpu", "fullsize_train"), model_dir, adapter, inputs, out, "--steps",
           str(steps), "--batch", str(batch), "--lr", "1e-4", "--clip", "0.3", "--dropout", str(dropout), "--max-memory",
           str(max_memory)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    sys.stderr.write(p.stderr[-8000:])
    if p.returncode != 0:
        return None, None, None
    rate = float(re.search(r"([0-9.]+) images/s", p.stderr).group(1))
    mem = re.search(r"= ([0-9.]+) GB; device used ([0-9.]+) GB", p.stderr)
    return rate, float(mem.group(1)), float(mem.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--dir", default="/tmp/mg4b")
    ap.add_argument("--hf-batches", default=None,
                    help="HF's batch sizes (default: --batches); HF's best within 40 GB is Liger + checkpointing at 32")
    ap.add_argument("--no-hf", action="store_true", help="medgem only")
    ap.add_argument("--dropout", type=float, default=0.1,
                    help="LoRA dropout on both stacks (0.1: the guide's; each side pays for its dropout)")
    ap.add_argument("--max-memory", default="40",
                    help="medgem's device memory budgets in GB, comma-separated (40: the guide's A100-40GB; 0: all free memory)")
    args = ap.parse_args()
    from safetensors.torch import save_file
    device = torch.device("cuda")
    save_model(args.dir, False, device)
    adapter = os.path.join(args.dir, "train_adapter")
    make_adapter(adapter, args.dir, device)
    batches = [int(x) for x in args.batches.split(",")]
    hf_batches = [int(x) for x in (args.hf_batches or args.batches).split(",")]
    data = make_batches(max(batches + hf_batches) * 2, build_config(False))
    inputs = os.path.join(args.dir, "bench_train_inputs.safetensors")
    save_file({k: v.float().contiguous() for k, v in data.items()}, inputs)
    try:
        import liger_kernel  # noqa: F401
        have_liger = True
    except ImportError:
        have_liger = False
        if not args.no_hf:
            print("WARNING: liger_kernel is not importable, so HF+PEFT+Liger (HF's best within 40 GB) is not in this "
                  "run; carry the wheel in .whl/ (docs/benchmarks.md, section 4)", file=sys.stderr, flush=True)
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, prompts of {data['input_ids'].shape[1]} tokens, "
          f"{args.steps} updates per configuration (the first 2 not timed), LoRA dropout {args.dropout:g} on both, "
          f"liger {'yes' if have_liger else 'no'}")
    rows = []
    for b in batches:
        for gb in (float(x) for x in args.max_memory.split(",")):
            mg = bench_medgem(args.dir, adapter, inputs, b, args.steps, gb, args.dropout)
            rows.append((b, f"medgem (max {gb:g} GB)" if gb > 0 else "medgem (all free memory)", mg[0], mg[1], mg[2]))
    # Liger patches transformers' classes for the rest of the process: every plain run goes first
    for liger in ((False, True) if have_liger and not args.no_hf else (False,) if not args.no_hf else ()):
        for b in hf_batches:
            for ckpt in (True, False) if b <= 8 else (True,):  # without checkpointing batch 16 needs > 140 GB
                name = "HF+PEFT" + ("+Liger" if liger else "") + (" (grad. checkpointing)" if ckpt else "")
                r, p = bench_hf(args.dir, adapter, data, b, args.steps, ckpt, liger, args.dropout)
                rows.append((b, name, r, p, None))
                print(f"  batch {b} {name}: {r and round(r, 3)} images/s, peak {p and round(p, 1)} GB", flush=True)
    print("\n| batch | stack | images/s | peak GB (allocated) | device used GB | vs best HF at this batch |")
    print("|---|---|---|---|---|---|")
    for b in sorted(set(batches + hf_batches)):
        hf = [r[2] for r in rows if r[0] == b and not r[1].startswith("medgem") and r[2]]
        best = max(hf) if hf else None
        for r in rows:
            if r[0] != b:
                continue
            ratio = f"{r[2] / best:.2f}x" if r[2] and best else "-"
            fmt = lambda x: f"{x:.2f}" if x else "OOM" if x is None else "-"
            print(f"| {b} | {r[1]} | {fmt(r[2])} | {fmt(r[3])} | {r[4] and f'{r[4]:.1f}' or '-'} | {ratio} |")
    # Within 40 GB (the guide's A100-40GB): medgem by the device's used memory, HF by its allocated peak.
    fits = lambda r: r[2] and ((r[4] or r[3]) if r[1].startswith("medgem") else r[3]) <= 40.0
    mg40 = max((r for r in rows if r[1].startswith("medgem") and fits(r)), key=lambda r: r[2], default=None)
    hf40 = max((r for r in rows if not r[1].startswith("medgem") and fits(r)), key=lambda r: r[2], default=None)
    if mg40 and hf40:
        print(f"\nWithin 40 GB: medgem {mg40[2]:.2f} images/s ({mg40[1]}, batch {mg40[0]}) against HF's best "
              f"{hf40[2]:.2f} ({hf40[1]}, batch {hf40[0]}): {mg40[2] / hf40[2]:.2f}x")


if __name__ == "__main__":
    main()
