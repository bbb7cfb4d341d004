#!/usr/bin/env python3
"""Tokenizer, chat-template and answer-parser fixtures, made by transformers (the reference).

    sh tests/golden/make_tokenizer.sh                 # trains tokenizer/tokenizer.model (spm_train)
    python3 tests/golden/make_tokenizer_fixtures.py   # writes tokenizer/prompt_ids.json, answer_parser.json, hf/

The HF tokenizer is built from tokenizer.model the way transformers 5.x's Gemma 3 converter
(convert_gemma3_weights.py) builds the real one: SentencePieceExtractor -> GemmaTokenizer with
image/boi/eoi extra special tokens, so <image_soft_token> gets the first id past the spm vocab
(262144 in the real model). The spm user-defined pieces become added tokens, as transformers'
SpmConverter does for the real tokenizer.json (<start_of_turn>/<end_of_turn> special, "\\n" runs not).
"""
import json
import os
import re
import sys

import numpy as np
import sentencepiece as spm
import transformers
from PIL import Image
from tokenizers import AddedToken
from transformers import Gemma3ImageProcessorPil, Gemma3Processor, GemmaTokenizer
from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

HERE = os.path.dirname(os.path.abspath(__file__))
TOK_DIR = os.path.join(HERE, "tokenizer")
SPM_PATH = os.path.join(TOK_DIR, "tokenizer.model")

MM_TOKENS_PER_IMAGE = 16  # the tiny model's 4x4 soft tokens (the real model has 256)
IMAGE_SIZE = 56           # the tiny model's SigLIP input size

# The Gemma 3 chat template, verbatim from transformers 5.x convert_gemma3_weights.py (_CHAT_TEMPLATE).
CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

# spec/seed-pipeline.md step 4, verbatim.
SEED_PROMPT = """Analyze this image and classify (0-7 only):
0: benign_adenosis
1: benign_fibroadenoma
2: benign_phyllodes_tumor
3: benign_tubular_adenoma
4: malignant_ductal_carcinoma
5: malignant_lobular_carcinoma
6: malignant_mucinous_carcinoma
7: malignant_papillary_carcinoma"""

# The user-defined pieces make_tokenizer.sh passes to spm_train, in id order from 4.
USER_DEFINED = ["<mask>", "[multimodal]", "<start_of_turn>", "<end_of_turn>",
                "<start_of_image>", "<end_of_image>", "\n", "\n\n", "\n\n\n", "\n\n\n\n"]
SPECIAL_USER_DEFINED = {"<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"}

ENCODE_CASES = [
    "Analyze this image and classify (0-7 only):",
    "hello world",
    "  two leading spaces and  double  spaces ",
    "line one\nline two\n\nline three\n\n\nend",
    "\n\n\n\n\n",
    "digits 1234567890 and 3.14 and 2024",
    "café naïve résumé é",
    "emoji 🙂 and 🧬 and ✓",
    "日本語のテキスト",
    "tab\tseparated\tvalues",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "malignant_papillary_carcinoma",
    "The answer is 4.",
    "x",
    "",
]

ANSWER_CASES = [
    "4", "0", "7", "8", "9", "12", "10", "07", "3.", "3.5", ".3", "class 4", "Class: 6",
    "4/7", "x4", "4x", "-4", "+4", "(4)", "[5]", "4,", "4!", "٣", "４", "é4", "4é", "_4", "4_",
    "a4b", "4a", "", "   ", "\n", " 7\n", "\n\n2\n", "The answer is 5.", "The answer is 8.",
    "8 or 3", "12 then 5", "1 2", "4\n5", "2024", "answer: 1", "malignant_ductal_carcinoma (4)",
    "benign", "<end_of_turn>", "3<end_of_turn>", "six", "0-7", "7-0", "4.0", "0.5", "v2",
]


def parse_answer(s):
    """The guide's parser (spec/model.md §9): first standalone digit 0-7, else -1."""
    m = re.search(r'\b([0-7])\b', s.strip())
    return int(m.group(1)) if m else -1


def build_tokenizer():
    vocab, _, merges = SentencePieceExtractor(SPM_PATH).extract()
    tok = GemmaTokenizer(
        vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False, padding_side="left",
        extra_special_tokens={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                              "eoi_token": "<end_of_image>"},
        chat_template=CHAT_TEMPLATE)
    for i, piece in enumerate(USER_DEFINED):
        assert vocab[piece] == 4 + i, (piece, vocab[piece])
    tok.add_tokens([AddedToken(p, special=p in SPECIAL_USER_DEFINED, normalized=False)
                    for p in USER_DEFINED])
    assert len(tok) == len(vocab) + 1 and tok.image_token_id == len(vocab)
    return tok


def build_processor(tok):
    image_processor = Gemma3ImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=(0.5,) * 3, image_std=(0.5,) * 3,
        resample=2)
    return Gemma3Processor(image_processor=image_processor, tokenizer=tok, chat_template=CHAT_TEMPLATE,
                           image_seq_length=MM_TOKENS_PER_IMAGE)


def messages(image, answer):
    msgs = [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": SEED_PROMPT}]}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return msgs


def ids_list(x):
    return [int(v) for v in np.asarray(x).reshape(-1)]


def prompt_cases(proc, image):
    """The three tokenizations of spec/model.md §7.5, for the generation and the training form."""
    cases = []
    for form, answer, gen in (("generation", None, True), ("training", "4", False)):
        msgs = messages(image, answer)
        rendered = proc.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=False)
        a = proc.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=True, return_dict=True)
        b = proc(text=rendered, images=[[image]])
        c = proc(text=rendered, images=[[image]], add_special_tokens=False)
        expanded = rendered.replace("<start_of_image>", proc.full_image_sequence)
        # The guide's collate_fn strips the rendered text (dropping the final "\n") before processor().
        d = proc(text=rendered.strip(), images=[[image]])
        for how, enc, note in (
                ("guide_stripped", d, "processor(text=rendered.strip(), images=...) defaults: the guide's "
                                      "training collate_fn, double BOS, no final newline"),
                ("apply_chat_template_tokenize", a, "apply_chat_template(tokenize=True): single BOS"),
                ("processor_default", b, "processor(text=rendered, images=...) defaults: double BOS (the guide)"),
                ("processor_no_special", c, "processor(..., add_special_tokens=False): single BOS (TRL)")):
            cases.append({"name": f"{form}/{how}", "form": form, "how": note,
                          "add_generation_prompt": gen, "answer": answer,
                          "rendered": rendered, "expanded": expanded,
                          "input_ids": ids_list(enc["input_ids"]),
                          "token_type_ids": ids_list(enc["token_type_ids"])})
    return cases


def main():
    tok = build_tokenizer()
    proc = build_processor(tok)
    sp = spm.SentencePieceProcessor(model_file=SPM_PATH)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))

    special = {
        "pad": tok.pad_token_id, "eos": tok.eos_token_id, "bos": tok.bos_token_id, "unk": tok.unk_token_id,
        "boi": tok.boi_token_id, "eoi": tok.eoi_token_id, "image": tok.image_token_id,
        "start_of_turn": tok.convert_tokens_to_ids("<start_of_turn>"),
        "end_of_turn": tok.convert_tokens_to_ids("<end_of_turn>"),
        "newline": tok.convert_tokens_to_ids("\n"), "newline2": tok.convert_tokens_to_ids("\n\n"),
        "newline3": tok.convert_tokens_to_ids("\n\n\n"),
    }
    encode = []
    for s in ENCODE_CASES:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        # The C tokenizer runs libsentencepiece: the fixture is only useful if both agree.
        assert ids == sp.encode(s), (s, ids, sp.encode(s))
        encode.append({"text": s, "ids": ids, "pieces": tok.convert_ids_to_tokens(ids),
                       "decoded": tok.decode(ids), "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})

    cases = prompt_cases(proc, image)
    for c in cases:  # libsentencepiece on the text after the template's "<bos>" gives the same ids
        text = c["expanded"].removeprefix("<bos>").replace("<image_soft_token>", "")
        if c["name"].endswith("guide_stripped"):
            text = text.strip()
        n_bos = 2 if c["name"].endswith(("processor_default", "guide_stripped")) else 1
        assert c["input_ids"][:n_bos + 1] == [special["bos"]] * n_bos + [special["start_of_turn"]], c["name"]
        assert sp.encode(text) == [i for i in c["input_ids"][n_bos:] if i != special["image"]], c["name"]
        assert c["token_type_ids"] == [int(i == special["image"]) for i in c["input_ids"]], c["name"]

    out = {
        "about": "Made by tests/golden/make_tokenizer_fixtures.py from tokenizer/tokenizer.model; "
                 "see tests/golden/README.md",
        "versions": {"transformers": transformers.__version__, "sentencepiece": spm.__version__},
        "spm_vocab_size": sp.get_piece_size(), "hf_vocab_size": len(tok),
        "mm_tokens_per_image": MM_TOKENS_PER_IMAGE,
        "special_ids": special,
        "seed_prompt": SEED_PROMPT,
        "chat_template": CHAT_TEMPLATE,
        "full_image_sequence": proc.full_image_sequence,
        "cases": cases,
        "encode": encode,
    }
    write_json(os.path.join(TOK_DIR, "prompt_ids.json"), out)
    write_json(os.path.join(TOK_DIR, "answer_parser.json"), {
        "about": "Python: m = re.search(r'\\b([0-7])\\b', s.strip()); int(m.group(1)) if m else -1",
        "cases": [{"text": s, "answer": parse_answer(s)} for s in ANSWER_CASES]})
    proc.save_pretrained(os.path.join(TOK_DIR, "hf"))
    for c in cases:
        print(c["name"], len(c["input_ids"]), c["input_ids"][:6])
    print("special", special)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
