#!/usr/bin/env python3
"""medgem (bf16, CUDA) and transformers (bf16, sdpa) against transformers fp32 (eager, TF32 off) at
MedGemma-4B's full shapes (spec/model.md §1) with seeded random weights, so no real checkpoint is
needed. On the GPU machine, from the repository root, with build/ carried:

    make all build/tests/gpu/fullsize_forward            # on the build machine
    python3 tests/gpu/fullsize_compare.py [--n 64] [--batch 8] [--dir /tmp/mg4b]

Steps: build the 4B config, initialise every parameter from a seeded normal with small scales
(matrices 1/sqrt(fan_in), embedding 0.03, norm offsets and biases 0.1) on the GPU, save_pretrained
in bf16 to --dir (about 8.6 GB; reused when --dir already holds it); write --n random images and
prompts shaped like the classify prompt (bos, user turn, 256 image soft tokens between boi/eoi,
random text ids, model turn; token_type_ids on the soft tokens); run transformers fp32 and bf16 from
that checkpoint (from_pretrained, as spec/model.md §10.4 asks) and medgem through
build/tests/gpu/fullsize_forward; report, for vision_out, projector_out and the last-position
logits, the relative L2 error ‖x − fp32‖/‖fp32‖ and max abs error of medgem and of HF-bf16, and the
argmax agreement with fp32 over 8 stand-in class ids (random weights make no id special) and over
the whole vocab. Pass: medgem's rel L2 <= 1.5 x HF-bf16's + 2e-3 on every tensor. Exit status 0 on
pass. --small runs the same code on a toy config (CPU is enough; with --cpu medgem runs fp32).
"""
import argparse
import os
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file, save_file
from transformers import Gemma3Config, Gemma3ForConditionalGeneration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOS, SOT, EOT, USER, MODEL, NL, NL2 = 2, 105, 106, 2364, 4368, 107, 108
IMAGE, BOI, EOI = 262144, 255999, 256000
CLASS_IDS = [100, 1000, 5000, 20000, 60000, 120000, 200000, 262000]  # stand-ins for "0".."7"
TEXT_TOKENS = 24  # random prompt text between the image and the end of the user turn
FACTOR, FLOOR = 1.5, 2e-3


def build_config(small):
    n_text, n_vision = (4, 2) if small else (34, 27)
    text = dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=n_text, num_attention_heads=8,
                num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_text)],
                rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
                vocab_size=262208, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh", attention_bias=False,
                final_logit_softcapping=None, attn_logit_softcapping=None, max_position_embeddings=131072,
                pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = dict(image_size=896, patch_size=14, num_channels=3, hidden_size=1152, intermediate_size=4304,
                  num_hidden_layers=n_vision, num_attention_heads=16, hidden_act="gelu_pytorch_tanh",
                  layer_norm_eps=1e-6, attention_dropout=0.0, vision_use_head=False)
    if small:  # toy widths, same structure (the vocab stays: the ids are the real ones)
        text.update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    query_pre_attn_scalar=16, sliding_window=16)
        vision.update(image_size=112, hidden_size=48, intermediate_size=96, num_attention_heads=4)
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256 if not small else 16,
                        boi_token_index=BOI, eoi_token_index=EOI, image_token_index=IMAGE, eos_token_id=[1, EOT],
                        pad_token_id=0, bos_token_id=BOS, tie_word_embeddings=True)


@torch.no_grad()
def reinit(model, gen):
    """Seeded normal for every parameter, scaled so activations and logits stay O(1)."""
    for name, p in sorted(model.named_parameters()):
        if p.dim() >= 2:
            fan_in = p[0].numel()
            if name.endswith("mm_input_projection_weight"):  # [Cv, C], used as x @ W
                fan_in = p.shape[0]
            std = 0.03 if name.endswith("embed_tokens.weight") else 0.5 if "position_embedding" in name else fan_in ** -0.5
            p.copy_(torch.randn(p.shape, generator=gen, device=p.device) * std)
        elif "layer_norm" in name or "post_layernorm" in name:  # SigLIP LayerNorm: y * w + b
            p.copy_((1.0 if name.endswith(".weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen, device=p.device))
        else:  # Gemma RMSNorm offsets (1 + w) and linear biases
            p.copy_(0.1 * torch.randn(p.shape, generator=gen, device=p.device))


def save_model(path, small, device):
    if os.path.exists(os.path.join(path, "config.json")):
        print(f"reusing the checkpoint in {path}")
        return
    config = build_config(small)
    with torch.device(device):
        model = Gemma3ForConditionalGeneration(config)
    reinit(model, torch.Generator(device=device).manual_seed(1234))
    t = time.time()
    model.to(torch.bfloat16).save_pretrained(path)  # bf16 like the Hub's checkpoint
    print(f"saved the random model ({sum(p.numel() for p in model.parameters()):,} parameters) to {path} "
          f"in {time.time() - t:.0f} s")


def make_inputs(n, config):
    gen = torch.Generator().manual_seed(1235)
    mm, S = config.mm_tokens_per_image, config.vision_config.image_size
    rows = []
    for _ in range(n):
        text = torch.randint(1000, 200000, (TEXT_TOKENS,), generator=gen).tolist()
        rows.append([BOS, SOT, USER, NL, NL2, BOI] + [IMAGE] * mm + [EOI, NL2] + text + [EOT, NL, SOT, MODEL, NL])
    ids = torch.tensor(rows)
    return {"input_ids": ids, "token_type_ids": (ids == IMAGE).long(),
            "pixel_values": torch.rand((n, 3, S, S), generator=gen) * 2 - 1}


@torch.no_grad()
def run_hf(path, inputs, dtype, attn, device, batch):
    model = Gemma3ForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=attn).to(device).eval()
    got = {"vision_out": [], "projector_out": []}
    inner = model.model
    hooks = [inner.vision_tower.register_forward_hook(lambda m, a, o: got["vision_out"].append(o.last_hidden_state.float().cpu())),
             inner.multi_modal_projector.register_forward_hook(lambda m, a, o: got["projector_out"].append(o.float().cpu()))]
    logits, t = [], time.time()
    for b0 in range(0, len(inputs["input_ids"]), batch):
        sl = {k: v[b0:b0 + batch].to(device) for k, v in inputs.items()}
        sl["pixel_values"] = sl["pixel_values"].to(dtype)
        sl["attention_mask"] = torch.ones_like(sl["input_ids"])
        logits.append(model(**sl, logits_to_keep=1).logits[:, -1].float().cpu())
    for h in hooks:
        h.remove()
    print(f"transformers {dtype} {attn}: {time.time() - t:.1f} s")
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"vision_out": torch.cat(got["vision_out"]), "projector_out": torch.cat(got["projector_out"]),
            "logits": torch.cat(logits)}


def run_medgem(path, inputs, batch, cpu):
    inp, out = os.path.join(path, "medgem_inputs.safetensors"), os.path.join(path, "medgem_outputs.safetensors")
    save_file({k: v.float().contiguous() for k, v in inputs.items()}, inp)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.path.join(REPO, "build", "lib") + ":" + env.get("LD_LIBRARY_PATH", "")
    cmd = [os.path.join(REPO, "build", "tests", "gpu", "fullsize_forward"), path, inp, out, "--batch", str(batch)]
    t = time.time()
    subprocess.run(cmd + (["--cpu"] if cpu else []), check=True, env=env)
    print(f"medgem: {time.time() - t:.1f} s (load + forward)")
    return {k: v.float() for k, v in load_file(out).items()}


def errors(x, ref):
    d = (x.double() - ref.double())
    return (d.norm() / ref.double().norm()).item(), d.abs().max().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images/prompts")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dir", default="/tmp/mg4b", help="where the random checkpoint goes (reused)")
    ap.add_argument("--small", action="store_true", help="toy widths and depths (a smoke test)")
    ap.add_argument("--cpu", action="store_true", help="medgem on its CPU backend")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference is true fp32
    torch.backends.cudnn.allow_tf32 = False
    save_model(args.dir, args.small, device)
    inputs = make_inputs(args.n, build_config(args.small))
    print(f"{args.n} prompts of {inputs['input_ids'].shape[1]} tokens, device {device}")

    res = {"fp32": run_hf(args.dir, inputs, torch.float32, "eager", device, args.batch)}
    res["HF-bf16"] = run_hf(args.dir, inputs, torch.bfloat16, "sdpa", device, args.batch)
    res["medgem"] = run_medgem(args.dir, inputs, args.batch, args.cpu)

    ok = True
    ref = res["fp32"]
    for k in ("vision_out", "projector_out", "logits"):
        (mg_rel, mg_max), (hf_rel, hf_max) = errors(res["medgem"][k], ref[k]), errors(res["HF-bf16"][k], ref[k])
        d_rel, _ = errors(res["medgem"][k], res["HF-bf16"][k])
        bound = FACTOR * hf_rel + FLOOR
        ok &= mg_rel <= bound
        print(f"{'ok  ' if mg_rel <= bound else 'FAIL'} {k:14s} medgem vs fp32: rel {mg_rel:.3e} max {mg_max:.3e} | "
              f"HF-bf16 vs fp32: rel {hf_rel:.3e} max {hf_max:.3e} | medgem vs HF-bf16: rel {d_rel:.3e} | bound {bound:.3e}")
    want_cls, want_all = ref["logits"][:, CLASS_IDS].argmax(-1), ref["logits"].argmax(-1)
    for name in ("medgem", "HF-bf16"):
        lg = res[name]["logits"]
        print(f"{name:8s} argmax agreement with fp32: 8 class ids {(lg[:, CLASS_IDS].argmax(-1) == want_cls).float().mean():.4f}, "
              f"whole vocab {(lg.argmax(-1) == want_all).float().mean():.4f} over {args.n} prompts")
    print("fullsize compare:", "OK" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
