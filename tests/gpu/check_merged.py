#!/usr/bin/env python3
"""Checks that a model directory written by `medgem merge` is what PEFT's merge_and_unload gives.

    make && python3 tests/gpu/check_merged.py        # both cases below; runs build/medgem merge itself
    python3 tests/gpu/check_merged.py --case bf16 --merged DIR   # one case, on a directory merged already

Needs torch, transformers, peft (the GPU machine: torch 2.11, transformers 5.17, peft 0.21); runs on
CUDA when there is a GPU (TF32 off), else on the CPU. Cases, each with tests/golden/lora_adapter:
  fp32: tests/golden/tiny (fp32, one model.safetensors)
  bf16: tests/golden/tiny-sharded (bf16, 3 shards + index)
For each: reference = Gemma3ForConditionalGeneration.from_pretrained(base, dtype) +
PeftModel.from_pretrained(ref, adapter).merge_and_unload(); ours = from_pretrained(merged dir, dtype).
Requires:
  - ours loads with no missing, unexpected or mismatched keys;
  - the same parameters; every weight within one rounding of the reference's: fp32 max relative
    difference <= 1e-6 (torch sums B·A in its own order), bf16 at most 1 bf16 step (the fp32 delta
    may round the other way in rare ties) in at most 0.1% of the adapted weights' elements;
  - logits on the inputs of tests/golden/lora_fp32.safetensors equal to the reference's within
    rel 1e-5 (fp32) / 1e-2 (bf16) of max |logit|.
Prints the max differences; exits non-zero on failure. On the CPU with the same versions (torch
2.11.0, transformers 5.17.0, peft 0.21.0): fp32 logits rel 7.7e-7, weights within 1.1e-7; bf16
logits identical, 3 weight elements one bf16 step apart.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import Gemma3ForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden")
ADAPTER = os.path.join(GOLDEN, "lora_adapter")
CASES = {  # name: (base model dir, dtype, logits tolerance relative to max |logit|)
    "fp32": (os.path.join(GOLDEN, "tiny"), torch.float32, 1e-5),
    "bf16": (os.path.join(GOLDEN, "tiny-sharded"), torch.bfloat16, 1e-2),
}


def load(path, dtype, device):
    out = Gemma3ForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation="eager",
                                                         output_loading_info=True)
    model, info = out if isinstance(out, tuple) else (out, {})
    return model.to(device).eval(), info


def bf16_steps(a, b):
    """|a - b| in bf16 steps (units in the last place), elementwise, for bf16 tensors."""
    ia = a.contiguous().view(torch.int16).to(torch.int32)
    ib = b.contiguous().view(torch.int16).to(torch.int32)
    # sign-magnitude to a monotonic integer line
    ia = torch.where(ia < 0, -(ia & 0x7FFF), ia)
    ib = torch.where(ib < 0, -(ib & 0x7FFF), ib)
    return (ia - ib).abs()


@torch.no_grad()
def check(name, merged_dir, device):
    base_dir, dtype, tol = CASES[name]
    print(f"== {name}: {os.path.relpath(base_dir, ROOT)} + lora_adapter via PEFT vs medgem merge -> {merged_dir}")
    ref, _ = load(base_dir, dtype, device)
    ref = PeftModel.from_pretrained(ref, ADAPTER).merge_and_unload().eval()
    ours, info = load(merged_dir, dtype, device)
    bad_keys = {k: sorted(map(str, v))[:5] for k, v in info.items()
                if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    print(f"loading info: {bad_keys or 'no missing, unexpected or mismatched keys'}")
    ok = not bad_keys

    rs, os_ = ref.state_dict(), ours.state_dict()
    ok &= rs.keys() == os_.keys()
    n_same = n_diff_el = n_adapted_el = 0
    worst_rel, worst_steps = 0.0, 0
    for k in rs:
        a, b = rs[k], os_[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            print(f"  {k}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")
            ok = False
            continue
        if torch.equal(a, b):
            n_same += 1
            continue
        n_adapted_el += a.numel()
        n_diff_el += int((a != b).sum())
        if dtype == torch.bfloat16:
            worst_steps = max(worst_steps, int(bf16_steps(a, b).max()))
        worst_rel = max(worst_rel, ((a.float() - b.float()).abs().max() / a.float().abs().max()).item())
    print(f"weights: {n_same} of {len(rs)} tensors bit-identical; {n_diff_el} elements differ in the others "
          f"({n_adapted_el} elements), max rel diff {worst_rel:.3g}"
          + (f", max {worst_steps} bf16 step(s)" if dtype == torch.bfloat16 else ""))
    if dtype == torch.bfloat16:
        ok &= worst_steps <= 1 and n_diff_el <= 1e-3 * max(n_adapted_el, 1)
    else:
        ok &= worst_rel <= 1e-6

    fx = load_file(os.path.join(GOLDEN, "lora_fp32.safetensors"))
    inputs = dict(input_ids=fx["input_ids"].long().to(device), token_type_ids=fx["token_type_ids"].long().to(device),
                  pixel_values=fx["pixel_values"].to(device, dtype))
    lr, lo = ref(**inputs).logits.float(), ours(**inputs).logits.float()
    diff = (lr - lo).abs().max().item()
    rel = diff / lr.abs().max().item()
    print(f"logits {tuple(lo.shape)}: max abs diff {diff:.3g}, rel {rel:.3g} (tolerance {tol:g})")
    ok &= rel <= tol
    print(f"{name}: {'OK' if ok else 'FAIL'}")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", choices=sorted(CASES), help="one case (default: both)")
    p.add_argument("--merged", help="a directory medgem merge wrote for --case (default: merge now)")
    p.add_argument("--medgem", default=os.path.join(ROOT, "build", "medgem"))
    a = p.parse_args()
    if a.merged and not a.case:
        p.error("--merged needs --case")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, device {device}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="medgem_merged_") as tmp:
        for name in [a.case] if a.case else sorted(CASES):
            merged = a.merged
            if not merged:
                merged = os.path.join(tmp, name)
                subprocess.run([a.medgem, "merge", "--model", CASES[name][0], "--adapter", ADAPTER, "--out", merged],
                               check=True)
            ok &= check(name, merged, device)
    print("check_merged:", "OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
