#!/usr/bin/env python3
"""medgem's CUDA ops against torch's equivalents at MedGemma-4B's eval shapes, same GPU, same run.

On the GPU machine, from the repository root, with build/ carried:

    make build/bench/libmgbench_kernels.so                 # on the build machine (tests/bench/kernels.cu)
    python3 tests/bench/bench_kernels_torch.py [--batch 32] [--tokens 360] [--only linear,rmsnorm] [--out F]

medgem's ops run through build/bench/libmgbench_kernels.so (ctypes) on torch-allocated tensors, on
medgem's own stream wrapped as torch.cuda.ExternalStream. Per case:
1. validate: fresh random bf16 inputs; medgem's output poisoned with NaN (for linear_residual: the
   residual it is written over), then written by the op;
   medgem and torch both compared with a float64 reference on 2048 sampled rows by
   ||out - ref|| / ||ref||; pass when medgem's error is <= 1.5 x torch's + 1e-3 and < 1e-2 and every
   element is finite (written). A failing case is reported and not timed.
2. time: CUDA events around each call after warm-ups, the L2 flushed (a 256 MiB memset) before
   every repeat, median of --reps; plus the back-to-back time per call (--reps calls between two
   events, no flush), which shows host overhead when a kernel is shorter than its launch path.
Torch's equivalents are what transformers runs in bf16: F.linear; Gemma3RMSNorm (eager: fp32 norm,
x (1 + w)); F.layer_norm; gelu_tanh(gate) * up; F.gelu(approximate="tanh"); a + b; and for medgem's fused
fc1 + GELU (one cuBLASLt call, GELU_BIAS epilogue) the two calls transformers makes,
F.gelu(F.linear(x, w, b), approximate="tanh"); for the fused out_proj + residual (one cuBLASLt call,
beta = 1, written over the residual in place as the model does) transformers' r + F.linear(x, w, b).
Shapes: decoder rows M = batch x tokens, vision rows batch x 4096 patches, projector batch x 256.
Prints one table (speedup = torch time / medgem time: > 1 means medgem is faster) and the two
ceilings measured on the same GPU (device-to-device copy GB/s, 8192^3 bf16 matmul TF/s); writes
every number to --out (default $OUT/bench_kernels.json when $OUT is set, else ./bench_kernels.json).
Attention is benchmarked by tests/bench/attention.cu, not here.
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import statistics
import sys

import torch
import torch.nn.functional as F
import transformers
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(REPO, "build", "bench", "libmgbench_kernels.so")
EPS = 1e-6
SAMPLE_ROWS = 2048
FACTOR, FLOOR, CEILING = 1.5, 1e-3, 1e-2
C, H, HKV, D, FF, V = 2560, 8, 4, 256, 10240, 262208          # text decoder (spec/model.md)
CV, FV, PATCHES, PATCH_K, MM = 1152, 4304, 4096, 3 * 14 * 14, 256  # vision tower, projector


def cases(batch, tokens):
    """(name, op, dims): the model's eval shapes at `batch` images of `tokens` prompt tokens."""
    mt, mv, mp = batch * tokens, batch * PATCHES, batch * MM
    lin = lambda M, K, N, bias: {"M": M, "K": K, "N": N, "bias": bias}  # noqa: E731
    return [
        ("text q_proj (unfused)", "linear", lin(mt, C, H * D, False)),
        ("text k_proj / v_proj (unfused)", "linear", lin(mt, C, HKV * D, False)),
        ("text q|k|v fused (the model runs this)", "linear", lin(mt, C, (H + 2 * HKV) * D, False)),
        ("text o_proj", "linear", lin(mt, H * D, C, False)),
        ("text gate|up fused", "linear", lin(mt, C, 2 * FF, False)),
        ("text down_proj", "linear", lin(mt, FF, C, False)),
        ("vision patch embed", "linear", lin(mv, PATCH_K, CV, True)),
        ("vision q/k/v/out_proj", "linear", lin(mv, CV, CV, True)),
        ("vision out_proj + residual (fused)", "linear_residual", lin(mv, CV, CV, True)),
        ("vision q|k|v fused (the model runs this)", "linear", lin(mv, CV, 3 * CV, True)),
        ("vision fc1", "linear", lin(mv, CV, FV, True)),
        ("vision fc1 + gelu (fused)", "linear_gelu", lin(mv, CV, FV, True)),
        ("vision fc2", "linear", lin(mv, FV, CV, True)),
        ("vision fc2 + residual (fused)", "linear_residual", lin(mv, FV, CV, True)),
        ("projector", "linear", lin(mp, CV, C, False)),
        ("text rmsnorm (hidden)", "rmsnorm", {"M": mt, "C": C}),
        ("text q_norm (per head)", "rmsnorm", {"M": mt * H, "C": D}),
        ("text k_norm (per head)", "rmsnorm", {"M": mt * HKV, "C": D}),
        ("projector rmsnorm", "rmsnorm", {"M": mp, "C": CV}),
        ("vision layernorm", "layernorm", {"M": mv, "C": CV}),
        ("text geglu", "geglu", {"M": mt, "F": FF}),
        ("vision gelu (fc1 out; fused into fc1 now)", "gelu", {"M": mv, "F": FV}),
        ("vision residual add", "add", {"M": mv, "F": CV}),
    ]


class Medgem:
    """build/bench/libmgbench_kernels.so through ctypes; every call's status is checked."""

    def __init__(self, path, device_index):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run `make build/bench/libmgbench_kernels.so` on the build machine")
        lib = ctypes.CDLL(path)
        P, I64, I, FL = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
        sig = {"mgb_open": (P, [I]), "mgb_close": (None, [P]), "mgb_stream": (P, [P]), "mgb_sync": (I, [P]),
               "mgb_error": (ctypes.c_char_p, []), "mgb_device_name": (ctypes.c_char_p, [P]),
               "mgb_linear": (I, [P, P, P, P, P, I64, I, I]), "mgb_linear_gelu": (I, [P, P, P, P, P, I64, I, I]),
               "mgb_linear_residual": (I, [P, P, P, P, P, P, I64, I, I]),
               "mgb_rmsnorm": (I, [P, P, P, P, I64, I, FL]),
               "mgb_layernorm": (I, [P, P, P, P, P, I64, I, FL]), "mgb_geglu": (I, [P, P, P, I64, I]),
               "mgb_gelu": (I, [P, P, P, I64]), "mgb_add": (I, [P, P, P, P, I64])}
        for name, (res, args) in sig.items():
            getattr(lib, name).restype, getattr(lib, name).argtypes = res, args
        self.lib = lib
        self.h = lib.mgb_open(device_index)
        if not self.h:
            sys.exit(f"medgem: cannot create a CUDA context: {lib.mgb_error().decode()}")
        self.stream = torch.cuda.ExternalStream(lib.mgb_stream(self.h))
        self.device_name = lib.mgb_device_name(self.h).decode()

    def check(self, status, what):
        if status != 0:
            raise RuntimeError(f"medgem {what} failed: {self.lib.mgb_error().decode()}")

    def call(self, name, *args):
        ptr = lambda a: a.data_ptr() if isinstance(a, torch.Tensor) else a  # noqa: E731
        self.check(getattr(self.lib, name)(self.h, *[ptr(a) for a in args]), name)

    def sync(self):
        self.check(self.lib.mgb_sync(self.h), "sync")


def bind_entries(mg, sig):
    """Gives each ctypes entry of `sig` ({name: (restype, argtypes)}) its types; exits when the
    library lacks one (built before the entry existed)."""
    for name, (res, argt) in sig.items():
        if not hasattr(mg.lib, name):
            sys.exit(f"{LIB} has no {name}: rebuild it (make build/bench/libmgbench_kernels.so)")
        getattr(mg.lib, name).restype, getattr(mg.lib, name).argtypes = res, argt


def gelu_tanh64(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def build(op, d, mg, gen, dev):
    """Inputs, the torch and medgem calls, the float64 reference on chosen rows, and the work done."""
    rnd = lambda *shape, scale=1.0: (torch.randn(*shape, generator=gen, device=dev) * scale).to(torch.bfloat16)  # noqa: E731
    if op in ("linear", "linear_gelu", "linear_residual"):
        M, K, N = d["M"], d["K"], d["N"]
        x, w = rnd(M, K), rnd(N, K, scale=K ** -0.5)
        b = rnd(N, scale=0.1) if d["bias"] else None
        lin64 = lambda r: x[r].double() @ w.double().T + (b.double() if b is not None else 0)  # noqa: E731
        common = {"shape": (M, N), "flop": 2.0 * M * N * K, "bytes": 2.0 * (M * K + N * K + M * N),
                  "dims": f"M={M} K={K} N={N}"}
        if op == "linear":
            return {**common, "torch": lambda: F.linear(x, w, b),
                    "medgem": lambda y: mg.call("mgb_linear", y, x, w, b, M, K, N), "ref": lin64}
        if op == "linear_residual":  # medgem's y starts as r ("init") and is updated in place
            r = rnd(M, N)
            return {**common, "bytes": common["bytes"] + 2.0 * M * N, "init": r,
                    "torch": lambda: r + F.linear(x, w, b),
                    "medgem": lambda y: mg.call("mgb_linear_residual", y, x, w, b, y, M, K, N),
                    "ref": lambda rows: r[rows].double() + lin64(rows)}
        return {**common, "torch": lambda: F.gelu(F.linear(x, w, b), approximate="tanh"),
                "medgem": lambda y: mg.call("mgb_linear_gelu", y, x, w, b, M, K, N),
                "ref": lambda r: gelu_tanh64(lin64(r))}
    if op in ("rmsnorm", "layernorm"):
        M, Cn = d["M"], d["C"]
        x, w, b = rnd(M, Cn), rnd(Cn, scale=0.1), rnd(Cn, scale=0.1)
        if op == "rmsnorm":
            norm = Gemma3RMSNorm(Cn, eps=EPS).to(device=dev, dtype=torch.bfloat16)
            with torch.no_grad():
                norm.weight.copy_(w)
            ref = lambda r: (lambda xd: xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + EPS) * (1 + w.double()))(x[r].double())  # noqa: E731
            return {"shape": (M, Cn), "torch": lambda: norm(x), "medgem": lambda y: mg.call("mgb_rmsnorm", y, x, w, M, Cn, EPS),
                    "ref": ref, "flop": 0, "bytes": 2.0 * (2 * M * Cn + Cn), "dims": f"M={M} C={Cn}"}
        w = (1 + w.float()).to(torch.bfloat16)  # LayerNorm scales sit near 1 (Gemma's RMSNorm stores offsets)
        ref = lambda r: F.layer_norm(x[r].double(), (Cn,), w.double(), b.double(), EPS)  # noqa: E731
        return {"shape": (M, Cn), "torch": lambda: F.layer_norm(x, (Cn,), w, b, EPS),
                "medgem": lambda y: mg.call("mgb_layernorm", y, x, w, b, M, Cn, EPS),
                "ref": ref, "flop": 0, "bytes": 2.0 * (2 * M * Cn + 2 * Cn), "dims": f"M={M} C={Cn}"}
    M, Fw = d["M"], d["F"]
    if op == "geglu":
        gu = rnd(M, 2 * Fw)
        return {"shape": (M, Fw), "torch": lambda: F.gelu(gu[:, :Fw], approximate="tanh") * gu[:, Fw:],
                "medgem": lambda y: mg.call("mgb_geglu", y, gu, M, Fw),
                "ref": lambda r: gelu_tanh64(gu[r, :Fw].double()) * gu[r, Fw:].double(),
                "flop": 0, "bytes": 2.0 * 3 * M * Fw, "dims": f"M={M} F={Fw}"}
    if op == "add":
        a, b = rnd(M, Fw), rnd(M, Fw)
        return {"shape": (M, Fw), "torch": lambda: a + b, "medgem": lambda y: mg.call("mgb_add", y, a, b, M * Fw),
                "ref": lambda r: a[r].double() + b[r].double(), "flop": 0, "bytes": 2.0 * 3 * M * Fw,
                "dims": f"n={M}x{Fw}"}
    x = rnd(M, Fw)
    return {"shape": (M, Fw), "torch": lambda: F.gelu(x, approximate="tanh"),
            "medgem": lambda y: mg.call("mgb_gelu", y, x, M * Fw),
            "ref": lambda r: gelu_tanh64(x[r].double()), "flop": 0, "bytes": 2.0 * 2 * M * Fw,
            "dims": f"n={M}x{Fw}"}


def rel_l2(got, ref):
    return ((got.double() - ref).norm() / ref.norm()).item()


def validate(case, mg):
    y_torch = case["torch"]()
    y_mg = (case["init"].clone() if "init" in case
            else torch.full(case["shape"], float("nan"), dtype=torch.bfloat16, device=y_torch.device))
    torch.cuda.synchronize()
    with torch.cuda.stream(mg.stream):
        case["medgem"](y_mg)
    mg.sync()
    M = case["shape"][0]
    rows = torch.linspace(0, M - 1, min(SAMPLE_ROWS, M), device=y_mg.device).long()
    ref = case["ref"](rows)
    err_mg, err_torch = rel_l2(y_mg[rows], ref), rel_l2(y_torch[rows], ref)
    finite = bool(torch.isfinite(y_mg).all())
    ok = finite and err_mg <= FACTOR * err_torch + FLOOR and err_mg < CEILING
    return {"ok": ok, "finite": finite, "err_medgem": err_mg, "err_torch": err_torch,
            "rel_medgem_vs_torch": rel_l2(y_mg[rows], y_torch[rows].double())}


def time_calls(fn, stream, flush, warmup, reps):
    """Median ms per call with the L2 flushed before each, and ms per call back to back."""
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps + 1)]
        for s, e in ev[:reps]:
            flush.zero_()
            s.record()
            fn()
            e.record()
        s, e = ev[reps]
        s.record()
        for _ in range(reps):
            fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev[:reps]), s.elapsed_time(e) / reps


def ceilings(flush):
    """Device-to-device copy bandwidth (bytes read + written) and a large bf16 matmul's rate."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    copy_ms, _ = time_calls(lambda: dst.copy_(src), torch.cuda.current_stream(), flush, 3, 10)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms, _ = time_calls(lambda: a @ b, torch.cuda.current_stream(), flush, 3, 10)
    return {"copy_GBps": 2 * src.numel() / (copy_ms * 1e-3) / 1e9, "matmul_8192_TFps": 2 * 8192 ** 3 / (mm_ms * 1e-3) / 1e12}


def time_case(r, case, medgem_call, torch_call, mg, flush, warmup, reps):
    """Times a validated case into r: medgem_call on medgem's stream, then torch_call, each flushed and
    back to back (time_calls), the speed-up and both rates (TF/s when the case counts FLOPs, else GB/s)."""
    r["medgem_ms"], r["medgem_b2b_ms"] = time_calls(medgem_call, mg.stream, flush, warmup, reps)
    mg.sync()
    r["torch_ms"], r["torch_b2b_ms"] = time_calls(torch_call, torch.cuda.current_stream(), flush, warmup, reps)
    r["speedup"] = r["torch_ms"] / r["medgem_ms"]
    rate = (lambda ms: case["flop"] / (ms * 1e-3) / 1e12) if case["flop"] else (lambda ms: case["bytes"] / (ms * 1e-3) / 1e9)
    r["unit"] = "TF/s" if case["flop"] else "GB/s"
    r["medgem_rate"], r["torch_rate"] = rate(r["medgem_ms"]), rate(r["torch_ms"])


def print_case(r):
    """One progress line per case: the errors, then the times or NOT TIMED."""
    status = (f"{r['medgem_ms'] * 1e3:9.1f} us vs torch {r['torch_ms'] * 1e3:9.1f} us: {r['speedup']:.2f}x"
              if r["ok"] else "NOT TIMED")
    print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['case']:32s} {r['dims']:24s} err medgem {r['err_medgem']:.2e} "
          f"torch {r['err_torch']:.2e} | {status}", flush=True)


def bench_finish(args, out_path, date, gpu, rows, failed, mg, **extra):
    """Writes every number to out_path atomically (a temporary file renamed), closes the bridge and
    exits 1 when a case failed validation."""
    result = {"date": date, "gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
              "batch": args.batch, "tokens": args.tokens, "reps": args.reps, "warmup": args.warmup,
              "command": " ".join(sys.argv), **extra, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out_path + ".tmp", out_path)
    print(f"{len(rows) - failed}/{len(rows)} validated; all numbers: {out_path}")
    mg.sync()
    mg.lib.mgb_close(mg.h)
    sys.exit(1 if failed else 0)


def bench_start(doc, batch, tokens, ops, json_name, what):
    """The options and set-up both kernel benches share: parses --batch (default batch), --tokens,
    --only (one of ops), --warmup, --reps, --seed, --out; opens medgem's bridge; prints the header.
    Returns (args, out_path, dev, mg, flush, gen, only, gpu, date)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--batch", type=int, default=batch, help="images per batch")
    ap.add_argument("--tokens", type=int, default=tokens, help="prompt tokens per image")
    ap.add_argument("--only", default="", help=f"comma-separated ops ({ops})")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit(f"{os.path.basename(sys.argv[0])} needs a CUDA GPU")
    out_path = args.out or os.path.join(os.environ.get("OUT", "."), json_name)
    dev = torch.device("cuda")
    mg = Medgem(LIB, torch.cuda.current_device())
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    only = set(filter(None, args.only.split(",")))
    gpu = torch.cuda.get_device_name()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{gpu} (medgem sees {mg.device_name}), {date}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}; {what}batch {args.batch}, {args.tokens} tokens", flush=True)
    return args, out_path, dev, mg, flush, gen, only, gpu, date


@torch.inference_mode()
def main():
    args, out_path, dev, mg, flush, gen, only, gpu, date = bench_start(
        __doc__, 32, 360, "linear,linear_gelu,linear_residual,rmsnorm,layernorm,geglu,gelu,add", "bench_kernels.json", "")

    rows, failed = [], 0
    for name, op, d in cases(args.batch, args.tokens):
        if only and op not in only:
            continue
        case = build(op, d, mg, gen, dev)
        r = {"case": name, "op": op, "dims": case["dims"], **validate(case, mg)}
        if r["ok"]:
            y = case["init"].clone() if "init" in case else torch.empty(case["shape"], dtype=torch.bfloat16, device=dev)
            time_case(r, case, lambda: case["medgem"](y), case["torch"], mg, flush, args.warmup, args.reps)
        else:
            failed += 1
        rows.append(r)
        print_case(r)
        del case
        torch.cuda.empty_cache()
    ceil = ceilings(flush)

    print(f"\nceilings on this GPU: copy {ceil['copy_GBps']:.0f} GB/s, bf16 matmul 8192^3 {ceil['matmul_8192_TFps']:.0f} TF/s")
    print("| case | dims | medgem us | torch us | speedup | medgem | torch | b2b medgem us | b2b torch us | err medgem | err torch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["ok"]:
            print(f"| {r['case']} | {r['dims']} | FAIL (finite {r['finite']}) | | | | | | | {r['err_medgem']:.2e} | {r['err_torch']:.2e} |")
            continue
        print(f"| {r['case']} | {r['dims']} | {r['medgem_ms'] * 1e3:.1f} | {r['torch_ms'] * 1e3:.1f} | {r['speedup']:.2f}x | "
              f"{r['medgem_rate']:.0f} {r['unit']} | {r['torch_rate']:.0f} {r['unit']} | {r['medgem_b2b_ms'] * 1e3:.1f} | "
              f"{r['torch_b2b_ms'] * 1e3:.1f} | {r['err_medgem']:.2e} | {r['err_torch']:.2e} |")
    bench_finish(args, out_path, date, gpu, rows, failed, mg, ceilings=ceil)


if __name__ == "__main__":
    main()
