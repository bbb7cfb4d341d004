#!/usr/bin/env python3
"""One table from the outputs of tests/bench/run_bench.sh (`make bench`): medgem against PyTorch.

    python3 tests/bench/bench_table.py DIR [DIR ...] [--json F]
    python3 tests/bench/bench_table.py --self-test

Reads, from the first DIR that holds each (so the folders of several device calls can be joined):
bench_kernels.json (bench_kernels_torch.py: the ceilings and the kernel rows), bench_kernels_bwd.json
(bench_kernels_bwd_torch.py: the backward kernels against torch autograd), bench_lora.json
(bench_lora_torch.py: the LoRA branch against PEFT's, forward and backward), attn_lab.txt
(build/bench/attention), attn_torch.txt (attention_torch.py), bench_eval_hf.json (bench_eval_hf.py),
bench_train.txt (bench_train_hf.py's stdout) and bench_run.log (run_bench.sh's "== part NAME: exit N"
lines, which say why a part's file is missing). Prints one Markdown table, a row per medgem kernel
(forward; backward where the bench has it), attention forward and backward at each lab shape, eval
prefill at each batch and training at each batch; columns: medgem's time, its TFLOP/s or GB/s (images/s
for the end-to-end rows), its % of the ceiling measured by bench_kernels_torch.py in the same run
(8192^3 bf16 matmul for TFLOP/s, device-to-device copy for GB/s), the PyTorch equivalent and its time,
and ratio = torch time / medgem time (> 1: medgem is faster; for training, medgem images/s / HF's).
A number that is missing (part skipped, failed, not validated) is shown as "-" with the reason in
the row's note; nothing is estimated. --json writes the same rows.
"""
import argparse
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("kernels", "attention_lab", "attention_torch", "eval", "train")


# ---- parsers (each returns plain data; a missing file is None) -----------------------------------
def read_status(path):
    """run_bench.sh's log: {part: "exit N" | "skipped"}."""
    st = {}
    if path and os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                m = re.match(r"== part (\w+): (exit -?\d+|skipped)", line)
                if m:
                    st[m.group(1)] = m.group(2)
    return st


ATTN_ROW = re.compile(r"^(\S+(?: bwd)?)\s*\|\s*(.+?)\s*\|\s*(.*)$")
ATTN_CHECK = re.compile(r"^# (.+?): (\S+) vs \S+ (?:(dq|dk|dv) )?nmse=\S+ nan=\d+: (OK|FAIL)")


def parse_attention(path):
    """Rows of attention.cu or attention_torch.py: {(version, shape): {"ms", "tflops", "note"}},
    plus the validation verdicts {(version, shape): bool} (attention.cu times a failing version too)."""
    rows, checks = {}, {}
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = ATTN_CHECK.match(line)
            if m:
                key = (m.group(2), m.group(1))
                checks[key] = checks.get(key, True) and m.group(4) == "OK"
                continue
            if line.startswith("#") or line.startswith("version |"):
                continue
            m = ATTN_ROW.match(line)
            if not m:
                continue
            ver, shape, rest = m.group(1), m.group(2), m.group(3)
            nums = re.match(r"([\d.]+)\s*\|\s*([\d.]+)(.*)$", rest)
            if nums:
                rows[(ver, shape)] = {"ms": float(nums.group(1)), "tflops": float(nums.group(2)),
                                      "note": nums.group(3).strip()}
            else:  # "unsupported: ..."
                rows[(ver, shape)] = {"ms": None, "tflops": None, "note": rest.strip()}
    return rows, checks


def parse_train(path):
    """bench_train_hf.py's stdout: the Markdown rows [(batch, stack, images/s|None, peak GB|None,
    device GB|None)] and the "Within 40 GB" line's numbers (or None)."""
    rows, within = [], None
    num = lambda s: float(s) if re.fullmatch(r"[\d.]+", s) else None  # noqa: E731  ("OOM", "-")
    with open(path, errors="replace") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 6 and cells[0].isdigit():
                rows.append((int(cells[0]), cells[1], num(cells[2]), num(cells[3]), num(cells[4])))
            m = re.match(r"Within 40 GB: medgem ([\d.]+) images/s \((.+?), batch (\d+)\) against HF's best "
                         r"([\d.]+) \((.+?), batch (\d+)\)", line.strip())
            if m:
                within = {"medgem": float(m.group(1)), "medgem_stack": m.group(2), "medgem_batch": int(m.group(3)),
                          "hf": float(m.group(4)), "hf_stack": m.group(5), "hf_batch": int(m.group(6))}
    return rows, within


# ---- the table --------------------------------------------------------------------------------
def row(part, name, shape, mg_ms=None, rate=None, unit="", ceiling=None, torch_name="", torch_ms=None,
        ratio=None, note=""):
    pct = 100.0 * rate / ceiling if rate is not None and ceiling else None
    if ratio is None and mg_ms and torch_ms:
        ratio = torch_ms / mg_ms
    return {"part": part, "name": name, "shape": shape, "medgem_ms": mg_ms, "rate": rate, "unit": unit,
            "pct_ceiling": pct, "torch": torch_name, "torch_ms": torch_ms, "ratio": ratio, "note": note}


def why_missing(status, *parts):
    for p in parts:
        s = status.get(p)
        if s == "skipped":
            return f"{p} skipped"
        if s and s != "exit 0":
            return f"{p} failed ({s})"
    return "not run (no output file)"


TORCH_OP = {"linear": "F.linear", "linear_gelu": "F.gelu(F.linear)", "linear_residual": "r + F.linear",
            "rmsnorm": "Gemma3RMSNorm", "layernorm": "F.layer_norm", "geglu": "gelu_tanh(g) * u",
            "gelu": "F.gelu(tanh)", "add": "a + b"}


def kernel_rows(k, ceil):
    out = []
    for r in k["rows"]:
        direction = r.get("direction", "fwd")
        torch_name = r.get("torch_op") or TORCH_OP.get(r["op"], r["op"])
        if not r.get("ok"):
            out.append(row(f"kernel {direction}", r["case"], r["dims"], torch_name=torch_name,
                           note=f"validation FAIL (finite {r.get('finite')}, err medgem {r.get('err_medgem', float('nan')):.2e} "
                                f"vs torch {r.get('err_torch', float('nan')):.2e}): not timed"))
            continue
        c = ceil.get("matmul_8192_TFps") if r["unit"] == "TF/s" else ceil.get("copy_GBps")
        out.append(row(f"kernel {direction}", r["case"], r["dims"], r["medgem_ms"], r["medgem_rate"], r["unit"], c,
                       torch_name, r["torch_ms"], r["torch_ms"] / r["medgem_ms"]))
    return out


def attention_rows(lab, torch_rows, tf_ceiling, status):
    lab_rows, checks = lab if lab else ({}, {})
    t_rows = torch_rows[0] if torch_rows else {}
    out = []
    shapes = list(dict.fromkeys([s for (_, s) in lab_rows] + [s for (_, s) in t_rows]))
    # medgem's row is what production runs: the Hopper kernels where the lab has them (sm90,
    # bwd_sm90: an H100/H200 and an unmasked shape), else the mma.sync path (tc, bwd_tc)
    for direction, mg_vers, t_vers in (("fwd", ("sm90", "tc"), ("cudnn", "flash")),
                                       ("bwd", ("bwd_sm90", "bwd_tc"), ("cudnn bwd", "flash bwd"))):
        for shape in shapes:
            mg_ver = next((v for v in mg_vers if (v, shape) in lab_rows), mg_vers[-1])
            mg = lab_rows.get((mg_ver, shape))
            notes = [f"medgem: the Hopper kernel ({mg_ver})"] if mg_ver == mg_vers[0] and mg is not None else []
            if mg is None:
                if not any((v, shape) in t_rows for v in t_vers):
                    continue
                mg = {"ms": None, "tflops": None}
                notes.append("medgem: " + (why_missing(status, "attention_lab") if lab is None else "no row at this shape"))
            if checks.get((mg_ver, shape)) is False:
                notes.append("medgem validation FAIL (timed anyway by the lab)")
            # PyTorch's fastest SDPA backend on this shape (cuDNN is the issue's target)
            cands = [(t_rows[(v, shape)]["ms"], v, t_rows[(v, shape)]["note"]) for v in t_vers
                     if (v, shape) in t_rows and t_rows[(v, shape)]["ms"]]
            torch_name, torch_ms = "torch SDPA", None
            if cands:
                torch_ms, v, tn = min(cands)
                torch_name = f"SDPA {v}" + (f" {tn}" if tn else "")
                others = [f"{o} {ms:.3f} ms" for ms, o, _ in sorted(cands)[1:]]
                if others:
                    notes.append("also " + ", ".join(others))
            elif torch_rows is None:
                notes.append("torch: " + why_missing(status, "attention_torch"))
            else:
                notes.append("torch: no row at this shape")
            out.append(row(f"attention {direction}", "attention " + ("forward" if direction == "fwd" else "backward"),
                           shape, mg["ms"], mg["tflops"], "TF/s", tf_ceiling, torch_name, torch_ms,
                           note="; ".join(notes)))
    return out


def eval_rows(e):
    out = []
    for r in e["rows"]:
        b = r["batch"]
        mg = e.get("medgem", {}).get(str(b), {})
        note = "" if r.get("medgem_ms_per_batch") else "medgem failed: " + str(mg.get("error", "no result"))[:120]
        out.append(row("eval", "eval prefill (medgem bench)", f"batch {b}, {e.get('tokens')} tokens, per batch",
                       r.get("medgem_ms_per_batch"), r.get("medgem_images_per_s"), "images/s", None,
                       "transformers bf16 sdpa", r.get("hf_ms_per_batch"), note=note))
    return out


def train_rows(rows, within):
    out = []
    for b in sorted({r[0] for r in rows}):
        hf = [r for r in rows if r[0] == b and not r[1].startswith("medgem") and r[2]]
        best = max(hf, key=lambda r: r[2]) if hf else None
        for r in (r for r in rows if r[0] == b and r[1].startswith("medgem")):
            mg_ms = 1e3 * b / r[2] if r[2] else None
            note = f"medgem peak {r[3]:.2f} GB allocated, {r[4]:.1f} GB device" if r[3] and r[4] else \
                ("medgem OOM" if r[2] is None else "")
            torch_name, torch_ms = "HF (no rows at this batch)", None
            if best:
                torch_name, torch_ms = best[1], 1e3 * b / best[2]
                note += f"; HF peak {best[3]:.2f} GB" if best[3] else ""
            out.append(row("train", f"train update ({r[1]})", f"batch {b}, per update", mg_ms, r[2], "images/s",
                           None, torch_name, torch_ms, (r[2] / best[2]) if r[2] and best else None, note.strip("; ")))
    if within:
        out.append(row("train", "train within 40 GB, each side's best", f"per image (medgem batch {within['medgem_batch']}, "
                       f"HF batch {within['hf_batch']})", 1e3 / within["medgem"], within["medgem"], "images/s", None,
                       within["hf_stack"], 1e3 / within["hf"], within["medgem"] / within["hf"],
                       within["medgem_stack"]))
    return out


def find(dirs, name):
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.exists(p) and os.path.getsize(p) > 0:  # a failed part can leave an empty file
            return p
    return None


def build(dirs):
    """(header lines, rows) from the first folder holding each output."""
    status = {}
    for d in reversed(dirs):  # the first folder's verdicts win
        status.update(read_status(os.path.join(d, "bench_run.log")))
    head, rows = [], []
    kp = find(dirs, "bench_kernels.json")
    k = json.load(open(kp)) if kp else None
    ceil = k.get("ceilings", {}) if k else {}
    if k:
        head.append(f"{k.get('gpu')}, {k.get('date')}, torch {k.get('torch')}, transformers {k.get('transformers')}")
        head.append(f"ceilings (same run): bf16 matmul 8192^3 {ceil['matmul_8192_TFps']:.0f} TFLOP/s, "
                    f"device copy {ceil['copy_GBps']:.0f} GB/s")
        rows += kernel_rows(k, ceil)
    else:
        head.append("ceilings: not measured (" + why_missing(status, "kernels") + "); % of ceiling left empty")
        rows.append(row("kernel", "(all kernels)", "", note=why_missing(status, "kernels")))
    bp = find(dirs, "bench_kernels_bwd.json")
    if bp:  # the ceilings are the forward bench's (same run)
        rows += kernel_rows(json.load(open(bp)), ceil)
    else:
        rows.append(row("kernel bwd", "(all backward kernels)", "", note=why_missing(status, "kernels_bwd")))
    lorap = find(dirs, "bench_lora.json")
    if lorap:  # the LoRA branch, forward and backward (bench_lora_torch.py), against the same ceilings
        rows += kernel_rows(json.load(open(lorap)), ceil)
    else:
        rows.append(row("kernel lora", "(the LoRA branch)", "", note=why_missing(status, "kernels_lora")))
    lp, tp = find(dirs, "attn_lab.txt"), find(dirs, "attn_torch.txt")
    lab = parse_attention(lp) if lp else None
    tt = parse_attention(tp) if tp else None
    if (lab and lab[0]) or (tt and tt[0]):
        rows += attention_rows(lab if lab and lab[0] else None, tt, ceil.get("matmul_8192_TFps"), status)
    else:
        rows.append(row("attention", "(attention)", "", note=why_missing(status, "attention_lab")))
    ep = find(dirs, "bench_eval_hf.json")
    if ep:
        e = json.load(open(ep))
        rows += eval_rows(e)
    else:
        rows.append(row("eval", "(eval prefill)", "", note=why_missing(status, "eval")))
    trp = find(dirs, "bench_train.txt")
    tr = parse_train(trp) if trp else None
    if tr and tr[0]:
        rows += train_rows(*tr)
    else:
        rows.append(row("train", "(training)", "", note=why_missing(status, "train") if not trp
                        else "no table in bench_train.txt (the run stopped early?)"))
    return head, rows


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def cell(text):
    return str(text).replace("|", "\\|")  # a row name such as "gate|up" must not split its cell


def markdown(head, rows):
    lines = list(head)
    lines.append("ratio = torch time / medgem time (> 1: medgem faster); end-to-end rows: images/s, no ceiling")
    lines.append("| part | row | shape | medgem ms | medgem rate | % ceiling | PyTorch equivalent | PyTorch ms | ratio | note |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms_spec = ".4f" if r["medgem_ms"] is not None and r["medgem_ms"] < 0.1 else ".3f"
        lines.append(f"| {r['part']} | {cell(r['name'])} | {r['shape']} | {fmt(r['medgem_ms'], ms_spec)} | "
                     f"{fmt(r['rate'], '.1f')}{' ' + r['unit'] if r['rate'] is not None else ''} | "
                     f"{fmt(r['pct_ceiling'], '.0f')}{'%' if r['pct_ceiling'] is not None else ''} | {r['torch'] or '-'} | "
                     f"{fmt(r['torch_ms'], ms_spec)} | {fmt(r['ratio'], '.2f')}{'x' if r['ratio'] is not None else ''} | "
                     f"{r['note']} |")
    return "\n".join(lines)


# ---- self-test on tests/bench/fixtures (outputs of real H200 runs; the JSON ones made by hand) ----
def self_test():
    fx = os.path.join(HERE, "fixtures")
    fails = []

    def check(what, got, want, tol=1e-6):
        ok = (got is None and want is None) or (got is not None and want is not None and
                                                 (abs(got - want) <= tol * max(1.0, abs(want))
                                                  if isinstance(want, float) else got == want))
        if not ok:
            fails.append(f"{what}: got {got!r}, want {want!r}")

    lab_rows, checks = parse_attention(os.path.join(fx, "attn_lab.txt"))
    S = "siglip B=8 H=16 T=4096 D=72"
    G = "gemma B=32 H=8 Hkv=4 T=360 D=256 causal"
    GI = "gemma B=32 H=8 Hkv=4 T=360 D=256 causal+image@6x256"
    check("lab rows", len(lab_rows), 4 * 3 + 4 * 3)
    check("lab tc siglip ms", lab_rows[("tc", S)]["ms"], 2.514)
    check("lab bwd_tc siglip TF/s", lab_rows[("bwd_tc", S)]["tflops"], 148.5)
    check("lab bwd_tc_sep gemma ms", lab_rows[("bwd_tc_sep", G)]["ms"], 0.731)
    check("lab checks all OK", all(checks.values()), True)
    check("lab bwd_tc checks (dq,dk,dv merged)", checks[("bwd_tc", GI)], True)
    sm90_rows, sm90_checks = parse_attention(os.path.join(fx, "attn_lab_sm90.txt"))
    check("lab sm90 rows", len(sm90_rows), (4 + 3 * 3) + (5 + 3 * 4))
    check("lab sm90 checks", (sm90_checks[("sm90", S)], sm90_checks[("bwd_sm90", S)]), (True, True))
    att = attention_rows((sm90_rows, sm90_checks), None, 772.0, {})

    def att_ms(part, shape):
        r = [r for r in att if r["part"] == part and r["shape"] == shape]
        return r[0]["medgem_ms"] if r else None
    check("attention fwd row takes sm90 at SigLIP", att_ms("attention fwd", S), 2.161)
    check("attention fwd row takes tc at Gemma", att_ms("attention fwd", G), 0.146)
    check("attention bwd row takes bwd_sm90 at SigLIP", att_ms("attention bwd", S), 6.413)
    check("attention bwd row takes bwd_tc at Gemma", att_ms("attention bwd", G), 0.641)
    t_rows, _ = parse_attention(os.path.join(fx, "attn_torch.txt"))
    check("torch rows", len(t_rows), 8)
    check("torch cudnn bwd siglip ms", t_rows[("cudnn bwd", S)]["ms"], 5.057)
    check("torch flash gemma TF/s", t_rows[("flash", G)]["tflops"], 162.1)

    tr, within = parse_train(os.path.join(fx, "bench_train_medgem.txt"))
    check("train medgem rows", tr, [(4, "medgem (max 40 GB)", 10.53, 34.25, 35.6),
                                    (8, "medgem (max 40 GB)", 9.73, 36.95, 38.4)])
    check("train medgem within", within, None)
    tr, within = parse_train(os.path.join(fx, "bench_train.txt"))
    check("train hf rows", len(tr), 15)
    check("train hf b8 liger", tr[-1], (8, "HF+PEFT+Liger", 10.60, 60.60, None))
    tr2, w2 = parse_train(os.path.join(fx, "bench_train_within.txt"))
    check("within line", w2, {"medgem": 10.53, "medgem_stack": "medgem (max 40 GB)", "medgem_batch": 4,
                              "hf": 4.71, "hf_stack": "HF+PEFT+Liger (grad. checkpointing)", "hf_batch": 4})
    check("within rows (OOM parsed as missing)", [r[2] for r in tr2], [10.53, 4.71, None])

    head, rows = build([fx])
    by = {(r["part"], r["name"], r["shape"]): r for r in rows}
    ceil_tf, ceil_gb = 700.0, 4000.0  # the hand-made fixture's ceilings
    r = by[("kernel fwd", "text q_proj", "M=11520 K=2560 N=2048")]
    check("kernel ms", r["medgem_ms"], 0.2)
    check("kernel % ceiling", r["pct_ceiling"], 100 * 603.98 / ceil_tf)
    check("kernel ratio", r["ratio"], 0.25 / 0.2)
    r = by[("kernel fwd", "text rmsnorm (hidden)", "M=11520 C=2560")]
    check("norm % of copy", r["pct_ceiling"], 100 * 3001.8 / ceil_gb)
    r = by[("kernel fwd", "text geglu", "M=11520 F=10240")]
    check("failed kernel not timed", (r["medgem_ms"], r["ratio"]), (None, None))
    check("failed kernel says so", "validation FAIL" in r["note"], True)
    # the LoRA branch (a real H200 run): a forward and a backward row per shape, against the copy ceiling
    lora = [r for r in rows if r["torch"].startswith("PEFT lora.Linear")]
    check("lora rows", len(lora), 18)
    r = by[("kernel bwd", "vision fc2 bwd", "M=16384 K=4304 N=1152 r=8")]
    check("lora bwd ms", r["medgem_ms"], 0.33294399082660675, 1e-9)
    check("lora bwd ratio", r["ratio"], 0.2447359934449196 / 0.33294399082660675, 1e-9)
    check("lora bwd % of copy", r["pct_ceiling"], 100 * 1384.164197875566 / ceil_gb, 1e-9)
    r = by[("kernel bwd", "text rmsnorm (hidden) bwd", "M=1408 C=2560")]
    check("bwd kernel row", (r["medgem_ms"], r["torch"], r["ratio"]), (0.02, "autograd Gemma3RMSNorm", 0.05 / 0.02))
    check("bwd kernel % of copy", r["pct_ceiling"], 100 * 1442.0 / ceil_gb)
    r = by[("attention fwd", "attention forward", S)]
    check("attn fwd picks cuDNN", (r["torch"], r["torch_ms"]), ("SDPA cudnn", 1.632))
    check("attn fwd ratio", r["ratio"], 1.632 / 2.514)
    check("attn fwd % ceiling", r["pct_ceiling"], 100 * 246.0 / ceil_tf)
    r = by[("attention bwd", "attention backward", G)]
    check("attn bwd ratio", r["ratio"], 0.429 / 0.730)
    r = by[("attention bwd", "attention backward", GI)]
    check("attn shape torch lacks", (r["torch_ms"], r["ratio"], r["note"]), (None, None, "torch: no row at this shape"))
    r = by[("eval", "eval prefill (medgem bench)", "batch 32, 360 tokens, per batch")]
    check("eval ratio", r["ratio"], 752.9 / 744.2)
    check("eval rate", r["rate"], 43.0)
    r = by[("eval", "eval prefill (medgem bench)", "batch 8, 360 tokens, per batch")]
    check("eval failed batch", (r["medgem_ms"], r["ratio"], r["note"].startswith("medgem failed: out of memory")),
          (None, None, True))
    r = by[("train", "train update (medgem)", "batch 4, per update")]
    check("train vs best HF at batch", (r["torch"], r["ratio"]), ("HF+PEFT", 6.57 / 7.21))
    check("train ms per update", r["medgem_ms"], 4e3 / 6.57)
    md = markdown(head, rows)
    check("table rows", md.count("\n| ") - 1, len(rows))  # minus the header row

    # parts skipped or failed: the rows say why, nothing else is filled in
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "bench_run.log"), "w") as f:
            f.write("== part kernels: exit 1 (3 s)\n== part kernels_bwd: skipped\n== part kernels_lora: skipped\n"
                    "== part attention_lab: skipped\n== part attention_torch: skipped\n"
                    "== part eval: skipped\n== part train: exit 137 (600 s)\n")
        head, rows = build([d])
        notes = [r["note"] for r in rows]
        check("missing parts", notes, ["kernels failed (exit 1)", "kernels_bwd skipped", "kernels_lora skipped",
                                       "attention_lab skipped", "eval skipped", "train failed (exit 137)"])
        check("missing parts: no numbers", any(r["medgem_ms"] or r["torch_ms"] or r["ratio"] for r in rows), False)
        # the lab failed (empty output) but torch's rows came: they stay, medgem's side says why
        open(os.path.join(d, "attn_lab.txt"), "w").close()
        with open(os.path.join(fx, "attn_torch.txt")) as src, open(os.path.join(d, "attn_torch.txt"), "w") as dst:
            dst.write(src.read())
        with open(os.path.join(d, "bench_run.log"), "a") as f:
            f.write("== part attention_lab: exit 127 (0 s)\n")
        head, rows = build([d])
        att = [r for r in rows if r["part"].startswith("attention")]
        check("torch rows without the lab", [(r["medgem_ms"], r["torch_ms"] is not None, r["note"]) for r in att],
              [(None, True, "medgem: attention_lab failed (exit 127); also flash 2.732 ms"),
               (None, True, "medgem: attention_lab failed (exit 127); also flash 0.105 ms"),
               (None, True, "medgem: attention_lab failed (exit 127); also flash bwd 8.667 ms"),
               (None, True, "medgem: attention_lab failed (exit 127); also flash bwd 0.579 ms")])
        # a second folder fills in what the first lacks (two device calls joined)
        head, rows = build([d, fx])
        check("joined folders", len([r for r in rows if r["part"] == "train"]) > 1, True)
    for f_ in fails:
        print("FAIL", f_)
    print(f"bench_table self-test: {'all passed' if not fails else f'{len(fails)} failed'}")
    return 0 if not fails else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="*", help="run_bench.sh output folders (the first holding a file wins)")
    ap.add_argument("--json", default=None, help="write the rows here too")
    ap.add_argument("--self-test", action="store_true", help="check the parsers on tests/bench/fixtures")
    args = ap.parse_args()
    if args.self_test:
        sys.exit(self_test())
    if not args.dirs:
        ap.error("give at least one output folder")
    head, rows = build(args.dirs)
    print(markdown(head, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": head, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
