#!/usr/bin/env python3
"""A stand-in Gemma 3 tokenizer for a random full-size MedGemma-4B checkpoint (which has no tokenizer
files), so that `medgem run`, `medgem eval` and transformers can load the directory.

    python3 tests/gpu/make_standin_tokenizer.py DIR

Standard library only (the GPU machine may lack protobuf): the SentencePiece ModelProto is encoded
by hand. Writes into DIR tokenizer.model, tokenizer.json, tokenizer_config.json, chat_template.jinja
and processor_config.json (image size and soft tokens per image from DIR/config.json when present,
else MedGemma's 896 px and 256); the weights, config.json and generation_config.json come from
save_pretrained. The layout is Gemma 3's; the merges and most pieces are not (no real tokenizer is
reachable from here), so ids of ordinary text differ from the real model's:

    0 <pad>, 1 <eos>, 2 <bos> (control), 3 <unk>, 4 <mask>, 5 [multimodal], 6..104 <unused0..98>,
    105 <start_of_turn>, 106 <end_of_turn>, 107..137 "\\n" x 1..31 (user-defined), 138..393 the byte
    pieces <0x00>..<0xFF>, then ordinary BPE pieces: merge chains for the words of the guide's
    prompt and chat template (about 360 tokens a training prompt, like the real one), the printable
    ASCII characters and "\u2581", then unique single-code-point fillers up to 255998;
    255999 <start_of_image>, 256000 <end_of_image>, 256001..262143 <unused99..6241>: 262,144 pieces.
    <image_soft_token> = 262144 is an added token of tokenizer.json only, as in Gemma 3.

Model settings mirror Gemma 3 (and tests/golden/make_tokenizer.sh): BPE, byte fallback, identity
normalisation, no dummy prefix, whitespace kept and escaped as U+2581, digits split.
tokenizer.json is built the way transformers' SentencePieceExtractor + GemmaTokenizer build one from
tokenizer.model (merges from every split of a piece into two pieces, ordered by score).
"""
import json
import os
import shutil
import struct
import sys

VOCAB = 262144
N_NEWLINES = 31
BOI, EOI, FIRST_UNUSED_HI = 255999, 256000, 256001
SPACE = "\u2581"

# The guide's prompt, the chat template's words and the answers, as the tokens a word should end up
# as; each becomes a chain of prefix pieces so BPE can build it. Sub-word splits are guesses chosen
# so a training prompt is about 360 tokens, like the real tokenizer's.
UNITS = ["user", "model", "Analyze", SPACE + "this", SPACE + "image", SPACE + "and", SPACE + "classify",
         SPACE + "(", "):", SPACE + "only", SPACE + "benign", SPACE + "malignant", "aden", "osis", "fib", "ro",
         "oma", "phy", "llo", "des", "tumor", "tub", "ular", "duct", "al", "carcin", "lob", "muc", "inous",
         "pap", "illary"]


def build_pieces():
    """[(piece, type)] in id order; type as in sentencepiece_model.proto."""
    NORMAL, UNKNOWN, CONTROL, USER, BYTE = 1, 2, 3, 4, 6
    head = [("<pad>", CONTROL), ("<eos>", CONTROL), ("<bos>", CONTROL), ("<unk>", UNKNOWN),
            ("<mask>", USER), ("[multimodal]", USER)]
    head += [(f"<unused{i}>", USER) for i in range(99)]
    head += [("<start_of_turn>", USER), ("<end_of_turn>", USER)]
    head += [("\n" * k, USER) for k in range(1, N_NEWLINES + 1)]
    head += [(f"<0x{b:02X}>", BYTE) for b in range(256)]
    assert len(head) == 394 and head[105][0] == "<start_of_turn>" and head[107][0] == "\n"
    # merge chains: every prefix of length >= 2 of every unit, shorter ones first (higher score)
    chains = []
    for n in range(2, max(len(u) for u in UNITS) + 1):
        for u in UNITS:
            if len(u) >= n and u[:n] not in chains:
                chains.append(u[:n])
    chars = [chr(c) for c in range(0x21, 0x7F)] + [SPACE]
    for u in UNITS:
        chars += [c for c in u if c not in chars]
    normal = chains + chars
    used = set(normal)
    tail = [("<start_of_image>", USER), ("<end_of_image>", USER)]
    tail += [(f"<unused{i}>", USER) for i in range(99, 99 + VOCAB - FIRST_UNUSED_HI)]
    n_fill = VOCAB - len(head) - len(normal) - len(tail)
    fill, cp = [], 0xA1
    while len(fill) < n_fill:  # single code points: never merged, never part of the prompts
        ok = not (0xD800 <= cp <= 0xDFFF or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE)
        if ok and chr(cp) not in used:
            fill.append(chr(cp))
        cp += 1
    assert cp <= 0x110000
    pieces = head + [(p, NORMAL) for p in normal + fill] + tail
    assert len(pieces) == VOCAB and pieces[BOI][0] == "<start_of_image>" and pieces[EOI][0] == "<end_of_image>"
    assert len({p for p, _ in pieces}) == VOCAB, "pieces must be unique"
    return pieces


def scores(pieces):
    """0 for special pieces; ordinary pieces -0, -1, -2, ... in id order (the merge priority)."""
    out, rank = [], 0
    for _, t in pieces:
        out.append(-float(rank) if t == 1 else 0.0)
        rank += t == 1
    return out


# ---- protobuf, by hand (sentencepiece_model.proto) ------------------------------------------------

def varint(n):
    assert n >= 0
    b = bytearray()
    while True:
        b.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(b)


def f_varint(field, v):
    return varint(field << 3) + varint(int(v))


def f_bytes(field, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return varint(field << 3 | 2) + varint(len(data)) + data


def f_float(field, x):
    return varint(field << 3 | 5) + struct.pack("<f", x)


def model_proto(pieces, score):
    out = bytearray()
    for (p, t), s in zip(pieces, score):
        msg = f_bytes(1, p) + f_float(2, s) + (f_varint(3, t) if t != 1 else b"")  # NORMAL is the default
        out += f_bytes(1, msg)
    user = [p for p, t in pieces if t == 4]
    trainer = b"".join([
        f_varint(3, 2), f_varint(4, VOCAB), f_varint(6, 0), f_bytes(7, ""), f_float(10, 1.0), f_varint(11, 0),
        f_varint(14, 1000000), f_float(15, 0.75), f_varint(16, 16), f_varint(17, 2), f_varint(18, 4192),
        f_varint(19, 1), f_varint(20, 16), f_varint(21, 1), f_varint(22, 1), f_varint(23, 1), f_varint(24, 0),
        f_varint(25, 1), f_varint(26, 1), b"".join(f_bytes(31, u) for u in user), f_varint(32, 1),
        f_varint(33, 1), f_varint(34, 0), f_varint(35, 1), f_bytes(36, ""), f_varint(40, 3), f_varint(41, 2),
        f_varint(42, 1), f_varint(43, 0), f_bytes(44, " \u2047 "), f_bytes(45, "<unk>"), f_bytes(46, "<bos>"),
        f_bytes(47, "<eos>"), f_bytes(48, "<pad>"), f_varint(49, 0)])
    normalizer = f_bytes(1, "identity") + f_bytes(2, b"") + f_varint(3, 0) + f_varint(4, 0) + f_varint(5, 1) + f_bytes(6, "")
    out += f_bytes(2, trainer) + f_bytes(3, normalizer)
    return bytes(out)


# ---- tokenizer.json ------------------------------------------------------------------------------

def merges_of(pieces, score):
    """transformers' generate_merges(vocab, vocab_scores): every split of a piece into two pieces,
    by (left id, right id) within the piece, then by (score, len left, len right) descending (stable)."""
    vocab = {p: i for i, (p, _) in enumerate(pieces)}
    merges = []
    for i, (p, _) in enumerate(pieces):
        local = [(p[:k], p[k:], score[i]) for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges += local
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [[a, b] for a, b, _ in merges]


SPECIAL_USER = {"<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"}


def added(i, content, special):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def tokenizer_json(pieces, score):
    toks = [added(i, p, t in (2, 3) or p in SPECIAL_USER) for i, (p, t) in enumerate(pieces) if t in (2, 3, 4)]
    toks.append(added(VOCAB, "<image_soft_token>", True))
    bos = {"id": "<bos>", "type_id": 0}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": toks,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                          "invert": False},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": bos}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": bos}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<bos>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {p: i for i, (p, _) in enumerate(pieces)}, "merges": merges_of(pieces, score)},
    }


TOKENIZER_CONFIG = {
    "backend": "tokenizers", "boi_token": "<start_of_image>", "bos_token": "<bos>", "eoi_token": "<end_of_image>",
    "eos_token": "<eos>", "extra_special_tokens": [], "image_token": "<image_soft_token>", "mask_token": "<mask>",
    "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>", "padding_side": "left",
    "processor_class": "Gemma3Processor", "tokenizer_class": "GemmaTokenizer", "unk_token": "<unk>"}

# The Gemma 3 chat template (transformers' convert_gemma3_weights.py), as tests/golden/tiny carries it.
CHAT_TEMPLATE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden", "tiny",
                                  "chat_template.jinja")


def processor_config(image_size, seq_length):
    return {"image_processor": {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
                                "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Gemma3ImageProcessor",
                                "image_std": [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 1 / 255,
                                "size": {"height": image_size, "width": image_size}},
            "image_seq_length": seq_length, "processor_class": "Gemma3Processor"}


def write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python3 tests/gpu/make_standin_tokenizer.py DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    image_size, seq = 896, 256
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(cfg_path):  # check the model's special ids against this layout
        with open(cfg_path) as f:
            cfg = json.load(f)
        want = {"boi_token_index": BOI, "eoi_token_index": EOI, "image_token_index": VOCAB}
        bad = {k: cfg.get(k) for k, v in want.items() if cfg.get(k) != v}
        vocab = cfg.get("text_config", {}).get("vocab_size", VOCAB)
        if bad or vocab <= VOCAB:
            sys.exit(f"{cfg_path}: {bad or ''} vocab_size {vocab}: not a Gemma 3 layout (want {want}, vocab > {VOCAB})")
        image_size = cfg.get("vision_config", {}).get("image_size", image_size)
        seq = cfg.get("mm_tokens_per_image", seq)
    pieces = build_pieces()
    score = scores(pieces)
    write(os.path.join(out, "tokenizer.model"), model_proto(pieces, score))
    write(os.path.join(out, "tokenizer.json"), json.dumps(tokenizer_json(pieces, score), ensure_ascii=False, indent=1))
    write(os.path.join(out, "tokenizer_config.json"), json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    shutil.copyfile(CHAT_TEMPLATE_FILE, os.path.join(out, "chat_template.jinja"))
    write(os.path.join(out, "processor_config.json"), json.dumps(processor_config(image_size, seq), indent=2) + "\n")
    print(f"stand-in Gemma 3 tokenizer ({VOCAB} pieces; image {image_size} px, {seq} soft tokens) written to {out}")


if __name__ == "__main__":
    main()
