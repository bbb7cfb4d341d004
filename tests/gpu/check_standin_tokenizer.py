#!/usr/bin/env python3
"""Checks the stand-in tokenizer of tests/gpu/make_standin_tokenizer.py in a model directory (one with
config.json, e.g. `fullsize_compare.py --small`'s checkpoint) against three readers:

    python3 tests/gpu/check_standin_tokenizer.py DIR      # needs sentencepiece and transformers; build/medgem

1. Python sentencepiece loads tokenizer.model: 262,144 pieces, Gemma 3's special ids;
2. transformers' own converter (SentencePieceExtractor, as tests/golden/make_tokenizer_fixtures.py uses it)
   gives from tokenizer.model the vocab and merges written in tokenizer.json;
3. the guide's prompt, generation and training form, double BOS: `medgem tokenize` (libsentencepiece),
   transformers' AutoProcessor on DIR (processor(text=rendered[.strip()], images=...)) and Python
   sentencepiece on the text between the special tokens all give the same ids; plus plain strings.
Exit status 0 when everything agrees.
"""
import json
import os
import subprocess
import sys

import numpy as np
import sentencepiece as spm
from PIL import Image
from transformers import AutoProcessor
from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = ["benign_adenosis", "benign_fibroadenoma", "benign_phyllodes_tumor", "benign_tubular_adenoma",
           "malignant_ductal_carcinoma", "malignant_lobular_carcinoma", "malignant_mucinous_carcinoma",
           "malignant_papillary_carcinoma"]
PROMPT = "Analyze this image and classify (0-7 only):\n" + "\n".join(f"{i}: {c}" for i, c in enumerate(CLASSES))
TEXTS = ["Analyze this image and classify (0-7 only):", "malignant_papillary_carcinoma", "model\n4", "user\n\n\n",
         "  two  spaces and a tab\there", "caf\u00e9 \U0001f642 \u65e5\u672c", "<start_of_turn>user\nhi<end_of_turn>\n",
         "digits 0123456789", ""]
failed = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failed.append(what)


def medgem(*args):
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(REPO, "build", "lib"))
    out = subprocess.run([os.path.join(REPO, "build", "medgem"), "tokenize", *args], check=True, env=env,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    d = sys.argv[1]
    path = os.path.join(d, "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=path)
    want = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>", 5: "[multimodal]", 105: "<start_of_turn>",
            106: "<end_of_turn>", 107: "\n", 108: "\n\n", 255999: "<start_of_image>", 256000: "<end_of_image>"}
    check(sp.get_piece_size() == 262144 and all(sp.id_to_piece(i) == p for i, p in want.items())
          and (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3),
          f"sentencepiece {spm.__version__}: 262144 pieces, Gemma 3's special ids")
    bytes_ok = all(sp.id_to_piece(sp.piece_to_id(f"<0x{b:02X}>")) == f"<0x{b:02X}>" for b in range(256))
    check(bytes_ok and sp.encode("\t") == [sp.piece_to_id("<0x09>")], "256 byte pieces, byte fallback")

    with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    vocab, _, merges = SentencePieceExtractor(path).extract()
    check(vocab == tj["model"]["vocab"], "tokenizer.json vocab = transformers' SentencePieceExtractor's")
    check([list(m) for m in merges] == tj["model"]["merges"],
          f"tokenizer.json merges ({len(merges)}) = SentencePieceExtractor's")

    for s in TEXTS:
        ours = medgem("--model", d, "--text", s, "--json")["input_ids"]
        check(ours == sp.encode(s), f"medgem = sentencepiece on {s!r}: {len(ours)} ids")

    proc = AutoProcessor.from_pretrained(d)
    image = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    cls = ",".join(CLASSES)
    for form, answer in (("generation", None), ("training", "4")):
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        if answer:
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        rendered = proc.apply_chat_template(msgs, add_generation_prompt=answer is None, tokenize=False)
        text = rendered.strip() if answer else rendered  # the guide's collate_fn strips the training text
        hf = [int(i) for i in proc(text=text, images=[[image]])["input_ids"][0]]
        mg = medgem("--model", d, "--prompt", "--classes", cls, "--double-bos", "--json",
                    *(["--answer", answer] if answer else []))
        check(mg["input_ids"] == hf, f"{form} form: medgem = transformers' processor ({len(hf)} tokens)")
        # sentencepiece on the rendered text after <bos>, the image expanded and its soft tokens dropped
        plain = text.removeprefix("<bos>").replace("<start_of_image>", proc.full_image_sequence)
        plain = plain.replace("<image_soft_token>", "")
        ids = [i for i in mg["input_ids"][2:] if i != 262144]
        check(sp.encode(plain) == ids, f"{form} form: sentencepiece on the text = medgem's ids")
        print(f"     {form}: {len(hf)} tokens, {sum(i == 262144 for i in hf)} image soft tokens")
    print("stand-in tokenizer:", "OK" if not failed else f"FAILED {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
