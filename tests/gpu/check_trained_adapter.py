#!/usr/bin/env python3
"""An adapter `medgem train` wrote loads in PEFT and gives medgem's logits.

    python3 tests/gpu/check_trained_adapter.py ADAPTER_DIR [ADAPTER_DIR ...]

For each DIR (e.g. build/test_train/learn/adapter from `make test`, or --out/adapter of a GPU run
on the tiny model): PeftModel.from_pretrained(tiny fp32 eager, DIR) must report no missing or
unexpected keys, and its class-digit logits at the last prompt position for the two images of
tests/fixtures/classify (the processor's pixels and prompt, as make_classify_fixture.py builds
them) must equal `medgem classify --cpu --adapter DIR --json` within 1e-4 of their max |value|
(medgem merges in fp32 on the CPU; PEFT runs unmerged). Needs torch, transformers, peft, Pillow.
Exits non-zero on failure.
"""
import json
import os
import subprocess
import sys

import torch
from PIL import Image
from peft import PeftModel
from transformers import AutoProcessor, Gemma3ForConditionalGeneration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "fixtures", "classify"))
from make_classify_fixture import MODEL, PROMPT, pixels  # noqa: E402

IMAGES = [os.path.join(REPO, "tests", "fixtures", "classify", f) for f in ("stripes_70x46.png", "noise_30x20.png")]


@torch.no_grad()
def peft_logits(adapter):
    proc = AutoProcessor.from_pretrained(MODEL)
    base = Gemma3ForConditionalGeneration.from_pretrained(MODEL, dtype=torch.float32, attn_implementation="eager").eval()
    model = PeftModel.from_pretrained(base, adapter).eval()
    res = model.load_adapter(adapter, adapter_name="check")
    keys_ok = not res.missing_keys and not res.unexpected_keys
    print(f"  PEFT load_adapter: missing {len(res.missing_keys)}, unexpected {len(res.unexpected_keys)}")
    model.set_adapter("default")
    size = base.config.vision_config.image_size
    digits = [proc.tokenizer.convert_tokens_to_ids(str(k)) for k in range(8)]
    out = []
    for path in IMAGES:
        img = Image.open(path)
        msgs = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": PROMPT}]}]
        enc = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt")
        logits = model(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                       pixel_values=pixels(img, size)[None], attention_mask=enc["attention_mask"]).logits
        out.append(logits[0, -1, digits].tolist())
    return keys_ok, torch.tensor(out)


def medgem_logits(adapter):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.path.join(REPO, "build", "lib") + ":" + env.get("LD_LIBRARY_PATH", "")
    cmd = [os.path.join(REPO, "build", "medgem"), "classify", "--cpu", "--model", MODEL, "--adapter", adapter, "--json",
           "--image"] + IMAGES
    lines = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout.splitlines()
    return torch.tensor([json.loads(l)["logits"] for l in lines if l.startswith("{")])


def main():
    ok = True
    for adapter in sys.argv[1:] or [os.path.join(REPO, "build", "test_train", "learn", "adapter")]:
        print(f"{adapter}:")
        keys_ok, ref = peft_logits(adapter)
        got = medgem_logits(adapter)
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        good = keys_ok and got.shape == ref.shape and err <= 1e-4
        ok &= good
        print(f"  PEFT logits {ref[0, :4].tolist()}\n  medgem      {got[0, :4].tolist()}\n"
              f"  max rel error {err:.2e}: {'ok' if good else 'FAIL'}")
    print("trained adapter in PEFT:", "OK" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
