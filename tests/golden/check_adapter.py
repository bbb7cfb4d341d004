#!/usr/bin/env python3
"""Checks that PEFT loads an adapter medgem saved (mg_lora_save) and computes the logits medgem does.

    make build/tests/test_lora && build/tests/test_lora     # leaves build/lora_saved
    python3 tests/golden/check_adapter.py [build/lora_saved]

Needs torch, transformers, peft (not run by `make test`: CI has no torch). Loads tests/golden/tiny
in fp32 eager, PeftModel.from_pretrained(model, DIR), and requires:
- no missing and no unexpected adapter keys (load_adapter's load_result);
- every lora_A/lora_B equal to the one in tests/golden/lora_adapter (the adapter medgem loaded and
  saved again);
- the logits on the inputs of tests/golden/lora_fp32.safetensors equal to that file's `logits`,
  which test_lora checks medgem's merged CPU forward against (max rel error 1e-4).
Exits non-zero on failure.
"""
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import Gemma3ForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))


@torch.no_grad()
def main():
    saved = sys.argv[1] if len(sys.argv) > 1 else "build/lora_saved"
    base = Gemma3ForConditionalGeneration.from_pretrained(os.path.join(HERE, "tiny"), dtype=torch.float32,
                                                          attn_implementation="eager").eval()
    model = PeftModel.from_pretrained(base, saved).eval()
    res = model.load_adapter(saved, adapter_name="check")
    print(f"load_adapter: missing {len(res.missing_keys)} {res.missing_keys[:3]}, "
          f"unexpected {len(res.unexpected_keys)} {res.unexpected_keys[:3]}")
    ok = not res.missing_keys and not res.unexpected_keys
    model.set_adapter("default")

    ours, peft_saved = load_file(os.path.join(saved, "adapter_model.safetensors")), \
        load_file(os.path.join(HERE, "lora_adapter", "adapter_model.safetensors"))
    same = ours.keys() == peft_saved.keys() and all(torch.equal(ours[k], peft_saved[k]) for k in ours)
    print(f"tensors: {len(ours)} saved, {len(peft_saved)} in PEFT's adapter, identical: {same}")
    ok &= same

    fx = load_file(os.path.join(HERE, "lora_fp32.safetensors"))
    logits = model(input_ids=fx["input_ids"].long(), token_type_ids=fx["token_type_ids"].long(),
                   pixel_values=fx["pixel_values"]).logits
    ref = fx["logits"]
    rel = ((logits - ref).abs().max() / ref.abs().max()).item()
    print(f"logits {tuple(logits.shape)} vs lora_fp32.safetensors: max rel error {rel:.3g}")
    ok &= rel <= 1e-5
    print("check_adapter:", "OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
