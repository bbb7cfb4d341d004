#!/usr/bin/env python3
"""Does merging a LoRA adapter into bf16 weights change a random full-size MedGemma's answers?

`medgem run` on the random 4B checkpoint (docs/benchmarks.md, 2026-12-02) scored 100% after epoch 5
with the adapter unmerged and 14.9% (8 classes) after merging it into the bf16 weights. This script
asks whether that is the merge's bf16 rounding on a random network or a medgem bug: on the same
prompts (fullsize_compare.py's make_inputs) and the same adapter (train_compare.py's make_adapter, B
!= 0), last-position logits of
  ref         transformers fp32, PEFT adapter unmerged
  hf_unmerged transformers bf16, PEFT adapter unmerged
  hf_merged   transformers bf16, merge_and_unload() (PEFT adds the delta into the bf16 weights)
  mg_merged   `medgem merge` (delta added in fp32, stored in the checkpoint's bf16) + fullsize_forward
each against ref: relative L2 error and argmax agreement. Exit 0 when mg_merged's error is at most
1.5x hf_merged's + 2e-3 (medgem adds the delta in fp32 and rounds once; PEFT adds it in bf16). Before
the fix of commit 9bfa27b this measured 0.91 for mg_merged against 0.023 for hf_merged.

    python3 tests/gpu/check_merge_precision.py [--dir /tmp/mg4b] [--n 32]
"""
import argparse
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fullsize_compare import REPO, build_config, errors, make_inputs, run_medgem, save_model  # noqa: E402
from train_compare import make_adapter  # noqa: E402


@torch.no_grad()
def hf_logits(model, inputs, dtype, device, batch=8):
    out = []
    for b0 in range(0, len(inputs["input_ids"]), batch):
        sl = {k: v[b0:b0 + batch].to(device) for k, v in inputs.items()}
        sl["pixel_values"] = sl["pixel_values"].to(dtype)
        sl["attention_mask"] = torch.ones_like(sl["input_ids"])
        out.append(model(**sl, logits_to_keep=1).logits[:, -1].float().cpu())
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/mg4b")
    ap.add_argument("--n", type=int, default=32)
    args = ap.parse_args()
    import peft
    from transformers import Gemma3ForConditionalGeneration
    device = torch.device("cuda")
    save_model(args.dir, False, device)
    adapter = os.path.join(args.dir, "train_adapter")
    make_adapter(adapter, args.dir, device)
    inputs = make_inputs(args.n, build_config(False))
    got = {}
    for name, dtype in (("ref", torch.float32), ("hf_unmerged", torch.bfloat16)):
        base = Gemma3ForConditionalGeneration.from_pretrained(args.dir, dtype=dtype).to(device).eval()
        model = peft.PeftModel.from_pretrained(base, adapter).eval()
        got[name] = hf_logits(model, inputs, dtype, device)
        if dtype == torch.bfloat16:
            got["hf_merged"] = hf_logits(model.merge_and_unload(), inputs, dtype, device)
        del base, model
        torch.cuda.empty_cache()
    merged = os.path.join(args.dir + "_merged")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.path.join(REPO, "build", "lib") + ":" + env.get("LD_LIBRARY_PATH", "")
    subprocess.run([os.path.join(REPO, "build", "medgem"), "merge", "--model", args.dir, "--adapter", adapter,
                    "--out", merged, "--force"], check=True, env=env)
    got["mg_merged"] = run_medgem(merged, inputs, 8, False)["logits"]
    ref = got["ref"]
    print(f"\n{args.n} prompts, last-position logits against transformers fp32 with the adapter unmerged")
    print("| logits | rel. L2 error | max abs error | argmax = ref's |")
    print("|---|---|---|---|")
    rels = {}
    for name in ("hf_unmerged", "hf_merged", "mg_merged"):
        rel, mx = errors(got[name], ref)
        rels[name] = rel
        agree = (got[name].argmax(-1) == ref.argmax(-1)).float().mean().item()
        print(f"| {name} | {rel:.3e} | {mx:.3e} | {100 * agree:.0f}% |")
    # medgem adds the delta in fp32 and rounds once, PEFT adds it in bf16: no worse than 1.5x PEFT's error
    bound = 1.5 * rels["hf_merged"] + 2e-3
    ok = rels["mg_merged"] <= bound
    print(f"medgem merge: {'OK' if ok else 'FAIL'} (error {rels['mg_merged']:.3e}, bound {bound:.3e})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
