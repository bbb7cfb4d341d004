"""torch SDPA at the shapes of tests/bench/attention.cu, on the same GPU, for ratios against medgem.

Backends: flash and cuDNN, each alone (sdpa_kernel with one backend: the math fallback is off, so a
backend that cannot take a shape raises and the row says so instead of timing something else).
Inputs are [B,T,H,D] bf16 like medgem's, viewed as [B,H,T,D] with transpose (no copy). GQA: with
enable_gqa=True; if the backend refuses it, k/v repeated to H heads (the row says "kv repeated").
Timing: CUDA events around each run, a 256 MiB write between runs (cold L2), median of 20 after 3
warm-ups. FLOPs as in attention.cu: 4·B·H·T²·D, halved when causal; the backward rows ("bwd",
torch.autograd.grad of dq, dk, dv from a saved forward) count 2.5x that, as attention.cu does.
Run: python3 tests/bench/attention_torch.py
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

WARMUP, REPEATS = 3, 20
SHAPES = [  # name, B, T, H, Hkv, D, causal
    ("siglip B=8 H=16 T=4096 D=72", 8, 4096, 16, 16, 72, False),
    ("gemma B=32 H=8 Hkv=4 T=360 D=256 causal", 32, 360, 8, 4, 256, True),
]
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]


def time_ms(fn, flush):
    for _ in range(WARMUP):
        fn()
    times = []
    for i in range(REPEATS):
        flush.fill_(i & 0xFF)
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return sorted(times)[REPEATS // 2]


def main():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name()}")
    print("version | shape | time ms | TFLOP/s")
    for name, B, T, H, Hkv, D, causal in SHAPES:
        q = (torch.rand(B, T, H, D, device=dev) * 4 - 2).bfloat16().transpose(1, 2)
        k = (torch.rand(B, T, Hkv, D, device=dev) * 4 - 2).bfloat16().transpose(1, 2)
        v = (torch.rand(B, T, Hkv, D, device=dev) * 2 - 1).bfloat16().transpose(1, 2)
        flop = 4.0 * B * H * T * T * D * (0.5 if causal else 1.0)
        for bname, backend in BACKENDS:
            note = ""
            kk, vv, gqa = k, v, Hkv != H
            with sdpa_kernel(backend):
                try:
                    F.scaled_dot_product_attention(q, kk, vv, is_causal=causal, enable_gqa=gqa)
                except RuntimeError:
                    if not gqa:
                        print(f"{bname:5s} | {name:52s} | unsupported")
                        continue
                    kk, vv, gqa = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1), False
                    note = " (kv repeated)"
                try:
                    ms = time_ms(lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=causal,
                                                                        enable_gqa=gqa), flush)
                except RuntimeError as e:
                    print(f"{bname:5s} | {name:52s} | unsupported: {str(e).splitlines()[0][:80]}")
                    continue
            print(f"{bname:5s} | {name:52s} | {ms:9.3f} | {flop / (ms * 1e-3) / 1e12:7.1f}{note}")
            qg, kg, vg = (t.detach().requires_grad_() for t in (q, kk, vv))
            with sdpa_kernel(backend):
                out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal, enable_gqa=gqa)
            dout = torch.rand_like(out) * 2 - 1
            try:
                ms = time_ms(lambda: torch.autograd.grad(out, (qg, kg, vg), dout, retain_graph=True), flush)
            except RuntimeError as e:
                print(f"{bname + ' bwd':9s} | {name:52s} | unsupported: {str(e).splitlines()[0][:80]}")
                continue
            print(f"{bname + ' bwd':9s} | {name:52s} | {ms:9.3f} | {2.5 * flop / (ms * 1e-3) / 1e12:7.1f}{note}")


if __name__ == "__main__":
    main()
