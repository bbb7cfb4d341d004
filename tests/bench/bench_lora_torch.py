#!/usr/bin/env python3
"""medgem's LoRA branch against PEFT's, forward and backward, at MedGemma-4B's training shapes, same GPU, same run.

On the GPU machine, from the repository root, with build/ carried:

    make build/bench/libmgbench_kernels.so                 # on the build machine (tests/bench/kernels.cu)
    python3 tests/bench/bench_lora_torch.py [--batch 4] [--tokens 352] [--only vision,text] [--out F]

What is compared: the branch PEFT adds to a frozen Linear (peft lora.Linear.forward:
result + lora_B(lora_A(dropout(x))) * scaling, spec/seed-pipeline.md's r = 8, alpha = 16,
dropout 0.1), and its backward to x, A and B, against medgem's mg_cuda_lora_forward /
mg_cuda_lora_backward (kernels/cuda/lora.cu), the entries the training step calls. Torch runs as the
guide's trainer does: bf16 activations under autocast, fp32 A and B (PEFT keeps adapters in fp32),
its own dropout. medgem's y and dx are `+=` into the frozen Linear's output and input gradient (y's
rows ldy apart where the model fuses q|k|v or gate|up); torch's forward adds to a separate result
as PEFT does and its backward is autograd.grad of the saved forward to x, A and B.
Per case:
1. validate at dropout 0 (both stacks): y on 2048 sampled rows, dx on the same rows, dA and dB in
   full, each against float64 of the same math; medgem's relative L2 error must be <= 1.5 x torch's
   + 1e-3 and < 1e-2 for every output, and every value finite.
2. validate medgem at dropout 0.1 against float64 with medgem's own mask (engine/dropout.h's
   splitmix64 counter hash, recomputed here in numpy): same bounds, against torch's error at 0
   (torch's mask comes from its own generator, so its outputs cannot be compared element-wise).
3. time both at dropout 0.1, forward and backward apart (L2 flushed before each repeat, CUDA events,
   median of --reps; bench_kernels_torch.py's timing). The rate is GB/s of the bytes the branch must
   move at least (forward: x read, y read and written; backward: dy and x read, dx read and
   written), against the device-copy ceiling.
Writes every number to --out (default $OUT/bench_lora.json when $OUT is set, else ./bench_lora.json).
"""
import ctypes
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels_torch import (C, CEILING, CV, D, FACTOR, FF, FLOOR, FV, H, HKV, PATCHES,  # noqa: E402
                                 SAMPLE_ROWS, bench_finish, bench_start, bind_entries, print_case, rel_l2, time_case)

R, ALPHA, P_DROP, SEED = 8, 16, 0.1, 0x5eed0123456789ab
P, I64, I, FL, U64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_uint64
SIG = {"mgb_lora_forward": (I, [P, P, P, P, P, P, I64, I, I, I, I64, FL, FL, U64]),
       "mgb_lora_backward": (I, [P, P, P, P, P, P, P, P, P, P, I64, I, I, I, I64, FL, FL, U64])}


def cases(batch, tokens):
    """(name, tower, dims) at the training micro-batch: K in, N out, ldy the row stride of y and dy."""
    mt, mv, qkv = batch * tokens, batch * PATCHES, (H + 2 * HKV) * D
    d = lambda M, K, N, ldy: {"M": M, "K": K, "N": N, "ldy": ldy}  # noqa: E731
    return [
        ("vision q/k/v (in q|k|v)", "vision", d(mv, CV, CV, 3 * CV)),
        ("vision out_proj", "vision", d(mv, CV, CV, CV)),
        ("vision fc1", "vision", d(mv, CV, FV, FV)),
        ("vision fc2", "vision", d(mv, FV, CV, CV)),
        ("text q_proj (in q|k|v)", "text", d(mt, C, H * D, qkv)),
        ("text k/v_proj (in q|k|v)", "text", d(mt, C, HKV * D, qkv)),
        ("text o_proj", "text", d(mt, H * D, C, C)),
        ("text gate/up_proj (in gate|up)", "text", d(mt, C, FF, 2 * FF)),
        ("text down_proj", "text", d(mt, FF, C, C)),
    ]


def hash64(x):
    """engine/dropout.h mg_hash64 (splitmix64's finaliser) on numpy uint64, wrapping as in C."""
    x = x + np.uint64(0x9e3779b97f4a7c15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
    return x ^ (x >> np.uint64(31))


def keep_mask(seed, M, K, p):
    """mg_dropout_keep(seed, m*K + k, p) for every element of an M x K input, as a bool tensor."""
    out = np.empty((M, K), dtype=bool)
    k = np.arange(K, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for m0 in range(0, M, 1024):
            i = np.arange(m0, min(M, m0 + 1024), dtype=np.uint64)[:, None] * np.uint64(K) + k[None, :]
            h = hash64(np.uint64(seed) + (i >> np.uint64(2)) * np.uint64(0x9e3779b97f4a7c15))
            v = (h >> (np.uint64(16) * (i & np.uint64(3)))) & np.uint64(0xffff)
            out[m0:m0 + len(i)] = v.astype(np.float32) * np.float32(1.0 / 65536.0) >= np.float32(p)
    return torch.from_numpy(out)


def build(d, gen, dev):
    rnd = lambda *shape, scale=1.0: (torch.randn(*shape, generator=gen, device=dev) * scale).to(torch.bfloat16)  # noqa: E731
    M, K, N, ldy = d["M"], d["K"], d["N"], d["ldy"]
    return {"M": M, "K": K, "N": N, "ldy": ldy, "scale": ALPHA / R,
            "x": rnd(M, K), "A": rnd(R, K, scale=K ** -0.5), "B": rnd(N, R, scale=R ** -0.5),
            "y0": rnd(M, ldy), "dy": rnd(M, ldy),
            "dims": f"M={M} K={K} N={N} r={R}",
            "bytes_fwd": 2.0 * (M * K + 2 * M * N), "bytes_bwd": 2.0 * (M * N + 3 * M * K)}


def reference(c, p, rows):
    """float64 of the branch with medgem's mask: y on rows, dx on rows, dA and dB in full."""
    s, K = c["scale"], c["K"]
    x64 = c["x"].double()
    if p > 0:
        keep = keep_mask(SEED, c["M"], K, p).to(x64.device)
        xd = torch.where(keep, (c["x"].float() * (1.0 / (1.0 - p))).to(torch.bfloat16).double(), 0.0)
    else:
        keep, xd = None, x64
    A, B, dy = c["A"].double(), c["B"].double(), c["dy"][:, :c["N"]].double()
    u = xd @ A.T
    du = s * dy @ B
    dxr = du[rows] @ A
    if keep is not None:
        dxr = dxr * keep[rows] / (1.0 - p)
    return {"y": c["y0"][rows, :c["N"]].double() + s * u[rows] @ B.T, "dx": dxr, "dA": du.T @ xd, "dB": s * dy.T @ u}


def medgem_buffers(c, p, dx0):
    """medgem's arguments at dropout p, and its buffers: y from y0, u, dx from dx0, dA and dB zero, du."""
    M, K, N, dev = c["M"], c["K"], c["N"], c["x"].device
    return ((M, K, R, N, c["ldy"], c["scale"], p, SEED),
            {"y": c["y0"].clone(), "u": torch.empty(M, R, dtype=torch.bfloat16, device=dev), "dx": dx0.clone(),
             "dA": torch.zeros(R, K, device=dev), "dB": torch.zeros(N, R, device=dev),
             "du": torch.empty(M, R, device=dev)})


def medgem_forward(mg, c, b, margs):
    mg.call("mgb_lora_forward", b["y"], b["u"], c["x"], c["A"], c["B"], *margs)


def medgem_backward(mg, c, b, margs):
    mg.call("mgb_lora_backward", b["dx"], b["dA"], b["dB"], b["du"], c["dy"], c["x"], b["u"], c["A"], c["B"], *margs)


def medgem_run(c, mg, p, rows, gen):
    """medgem's forward then backward; the outputs the reference checks."""
    N = c["N"]
    d0 = (torch.randn(c["M"], c["K"], generator=gen, device=c["x"].device) * 0.01).to(torch.bfloat16)
    margs, b = medgem_buffers(c, p, d0)
    torch.cuda.synchronize()
    with torch.cuda.stream(mg.stream):
        medgem_forward(mg, c, b, margs)
        medgem_backward(mg, c, b, margs)
    mg.sync()
    finite = all(bool(torch.isfinite(b[k]).all()) for k in ("y", "dx", "dA", "dB"))
    untouched = torch.equal(b["y"][:, N:], c["y0"][:, N:])  # the columns past N belong to the other modules
    got = {"y": b["y"][rows, :N], "dx": b["dx"][rows].double() - d0[rows].double(), "dA": b["dA"], "dB": b["dB"]}
    return got, finite and untouched


def torch_graph(c, p):
    """PEFT's branch under autocast with fp32 adapters; returns (forward call, backward call)."""
    A32, B32 = c["A"].float().requires_grad_(), c["B"].float().requires_grad_()
    y0, x, dy, s = c["y0"][:, :c["N"]].contiguous(), c["x"], c["dy"][:, :c["N"]].contiguous(), c["scale"]

    def fwd(xin):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return y0 + F.linear(F.linear(F.dropout(xin, p, training=p > 0), A32), B32) * s

    xg = x.detach().requires_grad_()
    out = fwd(xg)
    return (lambda: fwd(x)), (lambda: torch.autograd.grad(out, [xg, A32, B32], dy, retain_graph=True))


def errors(got, ref):
    return {k: rel_l2(got[k], ref[k]) for k in ref}


def main():
    args, out_path, dev, mg, flush, gen, only, gpu, date = bench_start(
        __doc__, 4, 352, "vision,text", "bench_lora.json", f"LoRA r={R} alpha={ALPHA} dropout {P_DROP}, ")
    bind_entries(mg, SIG)

    rows_out, failed = [], 0
    for name, tower, d in cases(args.batch, args.tokens):
        if only and tower not in only:
            continue
        c = build(d, gen, dev)
        rows = torch.linspace(0, c["M"] - 1, min(SAMPLE_ROWS, c["M"]), device=dev).long()
        # 1. dropout 0, both stacks against float64
        ref0 = reference(c, 0.0, rows)
        got0, finite0 = medgem_run(c, mg, 0.0, rows, gen)
        tfwd, tbwd = torch_graph(c, 0.0)
        dxt, dAt, dBt = tbwd()
        tgot = {"y": tfwd()[rows], "dx": dxt[rows], "dA": dAt, "dB": dBt}
        err_mg0, err_t0 = errors(got0, ref0), errors(tgot, ref0)
        # 2. medgem at dropout P_DROP against float64 with its own mask
        refp = reference(c, P_DROP, rows)
        gotp, finitep = medgem_run(c, mg, P_DROP, rows, gen)
        err_mgp = errors(gotp, refp)
        ok = finite0 and finitep and all(
            e[k] <= FACTOR * err_t0[k] + FLOOR and e[k] < CEILING for e in (err_mg0, err_mgp) for k in ref0)
        del ref0, refp, got0, gotp, tgot, dxt, dAt, dBt, tfwd, tbwd
        worst = lambda e: max(e.values())  # noqa: E731
        base = {"op": "lora", "torch_op": "PEFT lora.Linear (autocast bf16, fp32 A/B)", "dims": c["dims"], "ok": ok,
                "finite": finite0 and finitep, "errors_medgem_p0": err_mg0, "errors_torch_p0": err_t0,
                "errors_medgem_dropout": err_mgp}
        for direction in ("fwd", "bwd"):
            r = {"case": f"{name} {direction}", "direction": direction, **base,
                 "err_medgem": worst(err_mgp if direction == "bwd" else {"y": err_mgp["y"]}),
                 "err_torch": worst(err_t0 if direction == "bwd" else {"y": err_t0["y"]})}
            if ok:
                tfwd, tbwd = torch_graph(c, P_DROP)
                margs, b = medgem_buffers(c, P_DROP, torch.zeros(c["M"], c["K"], dtype=torch.bfloat16, device=dev))
                torch.cuda.synchronize()
                with torch.cuda.stream(mg.stream):
                    medgem_forward(mg, c, b, margs)  # u for the backward
                step = medgem_forward if direction == "fwd" else medgem_backward
                case = {"flop": 0, "bytes": c["bytes_" + direction]}
                time_case(r, case, lambda: step(mg, c, b, margs), tfwd if direction == "fwd" else tbwd, mg, flush,
                          args.warmup, args.reps)
                del tfwd, tbwd, b
            else:
                failed += 1
            rows_out.append(r)
            print_case(r)
        del c
        torch.cuda.empty_cache()
    bench_finish(args, out_path, date, gpu, rows_out, failed, mg)


if __name__ == "__main__":
    main()
