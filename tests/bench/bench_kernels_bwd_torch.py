#!/usr/bin/env python3
"""medgem's CUDA backward ops against torch autograd at MedGemma-4B's training shapes, same GPU, same run.

On the GPU machine, from the repository root, with build/ carried:

    make build/bench/libmgbench_kernels.so                 # on the build machine (tests/bench/kernels.cu)
    python3 tests/bench/bench_kernels_bwd_torch.py [--batch 4] [--tokens 352] [--only linear,rmsnorm] [--out F]

The companion of bench_kernels_torch.py (its ctypes bridge, timing and error measure, imported):
the input gradients medgem's training computes (mg_cuda_<op>_backward, each ACCUMULATING into its
bf16 output) against torch.autograd.grad of what transformers runs in bf16, on the same inputs:
linear dX (F.linear), Gemma3RMSNorm, F.layer_norm, gelu_tanh(gate) * up, F.gelu(tanh). Torch's
time is autograd.grad of the saved forward (retain_graph), the backward alone; medgem's is its
entry accumulating into dx (torch writes a fresh dx, so the `+=` is medgem's cost only).
Per case:
1. validate: medgem's dx starts as d0 (random, 1% of the gradient's RMS), so an element it does not
   write is wrong; the reference is float64 autograd of the same math on 2048 sampled rows;
   medgem's error is ||(dx - d0) - ref|| / ||ref||, torch's ||dx_torch - ref|| / ||ref||; pass when
   medgem's is <= 1.5 x torch's + 1e-3 and < 1e-2 and every element is finite. A failing case is
   reported and not timed.
2. time: as bench_kernels_torch.py (L2 flushed before each repeat, CUDA events, median of --reps;
   the back-to-back time per call besides).
Shapes: the training micro-batch, decoder rows M = batch x tokens, vision rows batch x 4096 patches,
projector batch x 256. Writes every number to --out (default $OUT/bench_kernels_bwd.json when $OUT is
set, else ./bench_kernels_bwd.json) in bench_kernels_torch.py's row format plus "direction": "bwd" and
"torch_op". The ceilings are bench_kernels_torch.py's (tests/bench/bench_table.py joins them).
Not here yet: lora_backward (four outputs, dropout), attention_backward (tests/bench/attention.cu).
"""
import ctypes
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels_torch import (C, CEILING, CV, D, EPS, FACTOR, FF, FLOOR, FV, H, HKV, MM, PATCHES,  # noqa: E402
                                 SAMPLE_ROWS, bench_finish, bench_start, bind_entries, gelu_tanh64, Gemma3RMSNorm,
                                 print_case, rel_l2, time_case)

P, I64, I, FL = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
BWD_SIG = {"mgb_linear_backward": (I, [P, P, P, P, I64, I, I]),
           "mgb_rmsnorm_backward": (I, [P, P, P, P, P, I64, I, FL]),
           "mgb_layernorm_backward": (I, [P, P, P, P, P, I64, I, FL]),
           "mgb_geglu_backward": (I, [P, P, P, P, I64, I]),
           "mgb_gelu_backward": (I, [P, P, P, P, I64])}


def cases(batch, tokens):
    """(name, op, dims) at the training micro-batch; linear dims are the forward's (dx is [M,K])."""
    mt, mv, mp = batch * tokens, batch * PATCHES, batch * MM
    lin = lambda M, K, N: {"M": M, "K": K, "N": N}  # noqa: E731
    return [
        ("text q_proj dX", "linear", lin(mt, C, H * D)),
        ("text k_proj / v_proj dX", "linear", lin(mt, C, HKV * D)),
        ("text o_proj dX", "linear", lin(mt, H * D, C)),
        ("text gate|up fused dX", "linear", lin(mt, C, 2 * FF)),
        ("text down_proj dX", "linear", lin(mt, FF, C)),
        ("vision q/k/v/out_proj dX", "linear", lin(mv, CV, CV)),
        ("vision fc1 dX", "linear", lin(mv, CV, FV)),
        ("vision fc2 dX", "linear", lin(mv, FV, CV)),
        ("projector dX", "linear", lin(mp, CV, C)),
        ("text rmsnorm (hidden) bwd", "rmsnorm", {"M": mt, "C": C}),
        ("text q_norm (per head) bwd", "rmsnorm", {"M": mt * H, "C": D}),
        ("text k_norm (per head) bwd", "rmsnorm", {"M": mt * HKV, "C": D}),
        ("projector rmsnorm bwd", "rmsnorm", {"M": mp, "C": CV}),
        ("vision layernorm bwd", "layernorm", {"M": mv, "C": CV}),
        ("text geglu bwd", "geglu", {"M": mt, "F": FF}),
        ("vision gelu bwd", "gelu", {"M": mv, "F": FV}),
    ]


def grad64(f, x_rows, dy_rows):
    """float64 autograd: the gradient of f at x_rows (float64) given dy_rows."""
    xr = x_rows.double().requires_grad_()
    (g,) = torch.autograd.grad(f(xr), xr, dy_rows.double())
    return g


def build(op, d, mg, gen, dev):
    """Inputs, the torch forward (the graph autograd runs back through), medgem's backward call on
    dx, the float64 input gradient on chosen rows, and the work done."""
    rnd = lambda *shape, scale=1.0: (torch.randn(*shape, generator=gen, device=dev) * scale).to(torch.bfloat16)  # noqa: E731
    if op == "linear":
        M, K, N = d["M"], d["K"], d["N"]
        x, w, dy = rnd(M, K), rnd(N, K, scale=K ** -0.5), rnd(M, N)
        return {"x": x, "dy": dy, "fwd": lambda xg: F.linear(xg, w), "torch_op": "autograd F.linear",
                "medgem": lambda dx: mg.call("mgb_linear_backward", dx, dy, w, M, K, N),
                "ref": lambda r: dy[r].double() @ w.double(),
                "flop": 2.0 * M * N * K, "bytes": 2.0 * (M * N + N * K + 2 * M * K), "dims": f"M={M} K={K} N={N}"}
    if op in ("rmsnorm", "layernorm"):
        M, Cn = d["M"], d["C"]
        x, w, b, dy = rnd(M, Cn), rnd(Cn, scale=0.1), rnd(Cn, scale=0.1), rnd(M, Cn)
        common = {"x": x, "dy": dy, "flop": 0, "dims": f"M={M} C={Cn}"}
        if op == "rmsnorm":
            norm = Gemma3RMSNorm(Cn, eps=EPS).to(device=dev, dtype=torch.bfloat16)
            with torch.no_grad():
                norm.weight.copy_(w)
            norm.weight.requires_grad_(False)  # frozen, as in LoRA training: only dx
            f64 = lambda xd: xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + EPS) * (1 + w.double())  # noqa: E731
            return {**common, "fwd": norm, "torch_op": "autograd Gemma3RMSNorm",
                    "medgem": lambda dx: mg.call("mgb_rmsnorm_backward", dx, dy, x, w, M, Cn, EPS),
                    "ref": lambda r: grad64(f64, x[r], dy[r]), "bytes": 2.0 * (4 * M * Cn + Cn)}
        w = (1 + w.float()).to(torch.bfloat16)  # LayerNorm scales sit near 1
        f64 = lambda xd: F.layer_norm(xd, (Cn,), w.double(), b.double(), EPS)  # noqa: E731
        return {**common, "fwd": lambda xg: F.layer_norm(xg, (Cn,), w, b, EPS), "torch_op": "autograd F.layer_norm",
                "medgem": lambda dx: mg.call("mgb_layernorm_backward", dx, dy, x, w, M, Cn, EPS),
                "ref": lambda r: grad64(f64, x[r], dy[r]), "bytes": 2.0 * (4 * M * Cn + Cn)}
    M, Fw = d["M"], d["F"]
    if op == "geglu":
        gu, dy = rnd(M, 2 * Fw), rnd(M, Fw)
        f64 = lambda g: gelu_tanh64(g[:, :Fw]) * g[:, Fw:]  # noqa: E731
        return {"x": gu, "dy": dy, "fwd": lambda g: F.gelu(g[:, :Fw], approximate="tanh") * g[:, Fw:],
                "torch_op": "autograd gelu_tanh(g) * u",
                "medgem": lambda dgu: mg.call("mgb_geglu_backward", dgu, dy, gu, M, Fw),
                "ref": lambda r: grad64(f64, gu[r], dy[r]), "flop": 0, "bytes": 2.0 * 7 * M * Fw,
                "dims": f"M={M} F={Fw}"}
    x, dy = rnd(M, Fw), rnd(M, Fw)
    return {"x": x, "dy": dy, "fwd": lambda xg: F.gelu(xg, approximate="tanh"), "torch_op": "autograd F.gelu(tanh)",
            "medgem": lambda dx: mg.call("mgb_gelu_backward", dx, dy, x, M * Fw),
            "ref": lambda r: grad64(gelu_tanh64, x[r], dy[r]), "flop": 0, "bytes": 2.0 * 4 * M * Fw,
            "dims": f"n={M}x{Fw}"}


def torch_backward(case):
    """The saved forward and a call that runs autograd back through it to the input (dx only)."""
    xg = case["x"].detach().requires_grad_()
    out = case["fwd"](xg)
    return lambda: torch.autograd.grad(out, xg, case["dy"], retain_graph=True)[0]


def validate(case, mg, gen):
    bwd = torch_backward(case)
    dx_torch = bwd()
    x = case["x"]
    rms = dx_torch.float().pow(2).mean().sqrt().item()
    d0 = (torch.randn(x.shape, generator=gen, device=x.device) * (0.01 * rms)).to(torch.bfloat16)
    dx_mg = d0.clone()
    torch.cuda.synchronize()
    with torch.cuda.stream(mg.stream):
        case["medgem"](dx_mg)
    mg.sync()
    M = x.shape[0]
    rows = torch.linspace(0, M - 1, min(SAMPLE_ROWS, M), device=x.device).long()
    ref = case["ref"](rows)
    got = dx_mg[rows].double() - d0[rows].double()
    err_mg, err_torch = rel_l2(got, ref), rel_l2(dx_torch[rows], ref)
    finite = bool(torch.isfinite(dx_mg).all())
    ok = finite and err_mg <= FACTOR * err_torch + FLOOR and err_mg < CEILING
    return {"ok": ok, "finite": finite, "err_medgem": err_mg, "err_torch": err_torch,
            "rel_medgem_vs_torch": rel_l2(got, dx_torch[rows].double())}, bwd, d0


def main():
    args, out_path, dev, mg, flush, gen, only, gpu, date = bench_start(
        __doc__, 4, 352, "linear,rmsnorm,layernorm,geglu,gelu", "bench_kernels_bwd.json", "backward, ")
    bind_entries(mg, BWD_SIG)

    rows, failed = [], 0
    for name, op, d in cases(args.batch, args.tokens):
        if only and op not in only:
            continue
        case = build(op, d, mg, gen, dev)
        v, bwd, d0 = validate(case, mg, gen)
        r = {"case": name, "op": op, "direction": "bwd", "torch_op": case["torch_op"], "dims": case["dims"], **v}
        if r["ok"]:
            dx = d0.clone()  # medgem accumulates into it rep after rep; the values stay far from bf16's range
            torch.cuda.synchronize()  # the clone (torch's stream) before medgem's stream writes dx
            time_case(r, case, lambda: case["medgem"](dx), bwd, mg, flush, args.warmup, args.reps)
        else:
            failed += 1
        rows.append(r)
        print_case(r)
        del case, bwd, d0
        torch.cuda.empty_cache()
    bench_finish(args, out_path, date, gpu, rows, failed, mg)


if __name__ == "__main__":
    main()
