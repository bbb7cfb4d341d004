#!/usr/bin/env python3
"""Reference dumps of a tiny random Gemma3ForConditionalGeneration, made by transformers + PEFT.

    python3 tests/golden/make_golden.py --out tests/golden     # CPU here, or CUDA on the GPU machine

Writes (under --out): tiny/ (save_pretrained model + processor files), tiny-sharded/ (the same
weights in bf16, in 3 shards + index), tiny_fp32.safetensors (eager, fp32), tiny_bf16.safetensors (sdpa,
bf16), lora_adapter/ (PEFT adapter before training), lora_fp32.safetensors (loss, LoRA gradients,
5 AdamW steps), versions.json. README.md lists every tensor with its shape.
The tiny model has every feature of MedGemma-4B at toy sizes: local and global layers with a
sliding window shorter than the prompt, GQA, head_dim != hidden/heads, q/k norms,
query_pre_attn_scalar != head_dim, both RoPE bases with the linear factor 8, a vocab padded past
the spm vocab with the image token at the first padded id, SigLIP with biases and avg-pool 2.
"""
import argparse
import json
import os
import platform
import shutil
import sys

import numpy as np
import peft
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GenerationConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_fixtures as tokfix  # noqa: E402  (the tokenizer fixture's builders)

SEED = 1234
BATCH = 2
IMAGE_SIZE = tokfix.IMAGE_SIZE  # 56 px, patch 7 -> 8x8 = 64 patches
MM_TOKENS = tokfix.MM_TOKENS_PER_IMAGE  # 16 = 4x4 soft tokens (avg-pool kernel 2)
# The second sample's first prompt line; the script checks it tokenizes to the seed prompt's length.
PROMPT_VARIANT_LINES = ["Classify this image and classify (0-7 only):",
                        "Analyze this slide and classify (0-7 only):",
                        "Analyze the image and classify (0-7 only):"]
ANSWERS = ["4", "6"]


def build_config(tok):
    spm_vocab = tok.image_token_id  # the image token is the first id past the spm vocab
    text = dict(
        vocab_size=spm_vocab + 64,  # like the real model: spm vocab + 64 appended rows
        hidden_size=40, intermediate_size=88, num_hidden_layers=5,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,  # GQA 2:1, 4*16 != 40
        query_pre_attn_scalar=24,  # != head_dim, so a kernel using head_dim^-0.5 fails
        sliding_window=8,  # shorter than the prompt
        layer_types=["sliding_attention", "full_attention", "sliding_attention",
                     "full_attention", "sliding_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
        rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh", attention_bias=False,
        final_logit_softcapping=None, attn_logit_softcapping=None, max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    vision = dict(
        image_size=IMAGE_SIZE, patch_size=7, num_channels=3, hidden_size=48, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6, attention_dropout=0.0, vision_use_head=False)
    return Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=MM_TOKENS,
        boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id, eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")],
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=True)


@torch.no_grad()
def reinit(model, gen):
    """Every parameter gets seeded random values, so no weight or bias keeps its 0/1 default.
    Scales keep activations and logits O(1): matrices ~ N(0, 1/fan_in), norm offsets ~ N(0, 0.1),
    embeddings ~ N(0, 0.3^2) so the tied head gives logits of std ~2 (not a near-uniform softmax)."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            fan_in = p[0].numel()
            if name.endswith("mm_input_projection_weight"):  # [vision hidden, text hidden], used as x @ W
                fan_in = p.shape[0]
            elif name.endswith("embed_tokens.weight"):  # also the tied head: logits std ~ 0.3 * sqrt(hidden)
                fan_in = 0.3 ** -2
            elif name.endswith("position_embedding.weight"):
                fan_in = 4.0
            std = fan_in ** -0.5
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        elif "layer_norm" in name or "post_layernorm" in name:  # SigLIP LayerNorm: y * w + b
            base = 1.0 if name.endswith(".weight") else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
        else:  # Gemma RMSNorm offsets (applied as 1 + w) and linear biases
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def make_batch(tok, proc, training):
    """Two samples with the same token count: the seed prompt and a one-line variant, one image each."""
    rng = np.random.default_rng(SEED)
    images = [Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
              for _ in range(BATCH)]
    prompts = [tokfix.SEED_PROMPT]
    first, rest = tokfix.SEED_PROMPT.split("\n", 1)
    ids = []
    for b in range(BATCH):
        msgs = tokfix.messages(images[b], ANSWERS[b] if training else None)
        if b > 0:
            for line in PROMPT_VARIANT_LINES:
                msgs[0]["content"][1]["text"] = line + "\n" + rest
                enc = proc.apply_chat_template(msgs, add_generation_prompt=not training, tokenize=True,
                                               return_dict=True)
                if len(enc["input_ids"][0]) == len(ids[0]["input_ids"][0]):
                    prompts.append(line + "\n" + rest)
                    break
            else:
                raise SystemExit("no prompt variant has the seed prompt's token count")
        else:
            enc = proc.apply_chat_template(msgs, add_generation_prompt=not training, tokenize=True,
                                           return_dict=True)
        ids.append(enc)
    input_ids = torch.tensor([e["input_ids"][0] for e in ids], dtype=torch.long)
    token_type_ids = torch.tensor([e["token_type_ids"][0] for e in ids], dtype=torch.long)
    assert (input_ids[:, 0] == tok.bos_token_id).all() and (input_ids[:, 1] != tok.bos_token_id).all()
    assert (token_type_ids == (input_ids == tok.image_token_id)).all()
    assert int(token_type_ids.sum()) == BATCH * MM_TOKENS
    # Deterministic pixels in [-1, 1] (not from the image processor: the C model takes pixel_values).
    gen = torch.Generator().manual_seed(SEED + 1)
    pixel_values = torch.rand((BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), generator=gen) * 2 - 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "pixel_values": pixel_values,
            "attention_mask": torch.ones_like(input_ids)}, prompts


class Capture:
    """Forward hooks on the stages the C model exposes, so nothing depends on output_hidden_states."""

    def __init__(self, model):
        inner = model.model
        lm = inner.language_model
        self.out = {}
        self.handles = [
            inner.vision_tower.register_forward_hook(
                lambda m, a, o: self.out.__setitem__("vision_out", o.last_hidden_state)),
            inner.multi_modal_projector.register_forward_hook(
                lambda m, a, o: self.out.__setitem__("projector_out", o)),
            lm.register_forward_pre_hook(
                lambda m, a, kw: self.out.__setitem__("embeds", kw["inputs_embeds"]), with_kwargs=True),
            lm.norm.register_forward_hook(lambda m, a, o: self.out.__setitem__("final_norm_out", o)),
        ]
        for i, layer in enumerate(lm.layers):
            self.handles.append(layer.register_forward_hook(
                lambda m, a, o, i=i: self.out.__setitem__(f"hidden_{i}", o[0] if isinstance(o, tuple) else o)))

    def remove(self):
        for h in self.handles:
            h.remove()


def as_inputs(batch, device, dtype):
    return {k: (v.to(device, dtype) if k == "pixel_values" else v.to(device)) for k, v in batch.items()}


def int_tensors(batch):
    """Inputs stored as F32 (exact for these small ints): our safetensors reader takes only float dtypes."""
    return {"pixel_values": batch["pixel_values"].float().contiguous(),
            "input_ids": batch["input_ids"].float().contiguous(),
            "token_type_ids": batch["token_type_ids"].float().contiguous()}


@torch.no_grad()
def dump_forward(model_dir, batch, dtype, attn, device, path):
    model = Gemma3ForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn)
    model.to(device).eval()
    cap = Capture(model)
    logits = model(**as_inputs(batch, device, dtype)).logits
    cap.remove()
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in cap.out.items()}
    tensors["logits"] = logits.detach().to("cpu", dtype).contiguous()
    tensors.update(int_tensors(batch))
    save_file(tensors, path, metadata={"dtype": str(dtype), "attn_implementation": attn, "device": str(device)})
    print(f"{os.path.basename(path)}: " + ", ".join(f"{k}{list(v.shape)}" for k, v in sorted(tensors.items())))
    return model, tensors


def adapter_key(peft_name):
    """PEFT parameter name -> the key save_pretrained writes (adapter name dropped)."""
    return peft_name.replace(".default.", ".")


def lora_fixture(model_dir, batch, tok, device, out_dir):
    model = Gemma3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    linears = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head")
    config = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none", target_modules="all-linear",
                             task_type="CAUSAL_LM")
    pm = peft.get_peft_model(model, config)
    gen = torch.Generator().manual_seed(SEED + 2)
    lora = {n: p for n, p in pm.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for n, p in sorted(lora.items()):
            assert ".lora_A.default." in n or ".lora_B.default." in n, n
            std = p.shape[1] ** -0.5 if ".lora_A." in n else 0.1  # B != 0: the adapter is not a no-op
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    adapter_dir = os.path.join(out_dir, "lora_adapter")
    pm.save_pretrained(adapter_dir)
    os.remove(os.path.join(adapter_dir, "README.md"))  # PEFT's model-card boilerplate
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    assert set(saved) == {adapter_key(n) for n in lora}, "adapter keys differ from the PEFT names"
    modules = sorted({n.rsplit(".lora_", 1)[0].removeprefix("base_model.model.") for n in lora})
    assert modules == linears, "all-linear should adapt every nn.Linear of both towers except lm_head"
    cfg_path = os.path.join(adapter_dir, "adapter_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["target_modules"] = sorted(cfg["target_modules"])  # a set: fix its order so reruns diff cleanly
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")

    pm.to(device).train()
    labels = batch["input_ids"].clone()
    for ignored in (tok.pad_token_id, tok.boi_token_id, tok.image_token_id):  # the guide's masking
        labels[labels == ignored] = -100
    inputs = as_inputs(batch, device, torch.float32)
    inputs["labels"] = labels.to(device)

    out = pm(**inputs)
    out.loss.backward()
    tensors = {"loss": out.loss.detach().reshape(1).cpu(), "logits": out.logits.detach().cpu(),
               "labels": labels.float()}
    tensors.update(int_tensors(batch))
    for n, p in lora.items():
        tensors["grad." + adapter_key(n)] = p.grad.detach().cpu().clone()

    opt = torch.optim.AdamW(list(lora.values()), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    losses = []
    for _ in range(5):  # loss before each step, on the same batch
        opt.zero_grad()
        loss = pm(**inputs).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
    tensors["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    for n, p in lora.items():
        tensors["final." + adapter_key(n)] = p.detach().cpu().clone()
    tensors = {k: v.float().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(out_dir, "lora_fp32.safetensors"),
              metadata={"adapted_modules": json.dumps(modules), "device": str(device)})
    with open(os.path.join(adapter_dir, "adapted_modules.json"), "w") as f:
        json.dump(modules, f, indent=1)
        f.write("\n")
    print(f"lora: {len(modules)} adapted modules, {len(lora)} tensors, loss {out.loss.item():.6f}, "
          f"adamw losses {losses}")
    return modules


def save_model(tok, proc, out_dir):
    torch.manual_seed(SEED)
    config = build_config(tok)
    model = Gemma3ForConditionalGeneration(config)
    reinit(model, torch.Generator().manual_seed(SEED))
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id, eos_token_id=config.eos_token_id)
    tiny = os.path.join(out_dir, "tiny")
    model.save_pretrained(tiny)
    proc.save_pretrained(tiny)
    shutil.copy(tokfix.SPM_PATH, os.path.join(tiny, "tokenizer.model"))

    # The sharded copy is bf16, like the Hub's checkpoints: same weights rounded to nearest even.
    sharded = os.path.join(out_dir, "tiny-sharded")
    shutil.rmtree(sharded, ignore_errors=True)
    Gemma3ForConditionalGeneration.from_pretrained(tiny, dtype=torch.bfloat16).save_pretrained(
        sharded, max_shard_size="150KB")
    for f in os.listdir(sharded):  # only what a loader needs: shards, index, config
        if not (f.endswith(".safetensors") or f in ("model.safetensors.index.json", "config.json")):
            os.remove(os.path.join(sharded, f))
    shards = sorted(f for f in os.listdir(sharded) if f.endswith(".safetensors"))
    assert len(shards) >= 2, shards
    whole = load_file(os.path.join(tiny, "model.safetensors"))
    parts = {}
    for f in shards:
        parts.update(load_file(os.path.join(sharded, f)))
    assert whole.keys() == parts.keys()
    assert all(parts[k].dtype == torch.bfloat16 and torch.equal(whole[k].to(torch.bfloat16), parts[k]) for k in whole)
    print(f"saved {tiny} ({len(whole)} tensors) and {len(shards)} shards in {sharded}")
    return tiny


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # fp32 references must be true fp32 on a GPU too: no TF32 in matmuls or the patch-embedding conv.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)

    tok = tokfix.build_tokenizer()
    proc = tokfix.build_processor(tok)
    tiny = save_model(tok, proc, args.out)

    batch, prompts = make_batch(tok, proc, training=False)
    model, fp32 = dump_forward(tiny, batch, torch.float32, "eager", device,
                               os.path.join(args.out, "tiny_fp32.safetensors"))
    print("model.config:", model.config)
    # The generation-form ids must be step 1's fixture ids (apply_chat_template, single BOS).
    with open(os.path.join(tokfix.TOK_DIR, "prompt_ids.json")) as f:
        ref = next(c for c in json.load(f)["cases"] if c["name"] == "generation/apply_chat_template_tokenize")
    assert batch["input_ids"][0].tolist() == ref["input_ids"]
    _, bf16 = dump_forward(tiny, batch, torch.bfloat16, "sdpa", device,
                           os.path.join(args.out, "tiny_bf16.safetensors"))
    d = (bf16["logits"].float() - fp32["logits"]).abs().max().item()
    print(f"bf16 vs fp32 logits: max abs diff {d:.4f}, fp32 logits std {fp32['logits'].std().item():.3f}")

    train_batch, _ = make_batch(tok, proc, training=True)
    modules = lora_fixture(tiny, train_batch, tok, device, args.out)

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__,
                "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
                "seq_len": int(batch["input_ids"].shape[1]),
                "train_seq_len": int(train_batch["input_ids"].shape[1]),
                "prompts": prompts, "answers": ANSWERS, "n_adapted_modules": len(modules)}
    with open(os.path.join(args.out, "versions.json"), "w") as f:
        json.dump(versions, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(versions))


if __name__ == "__main__":
    main()
