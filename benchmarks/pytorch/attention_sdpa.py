#!/usr/bin/env python3
"""PyTorch reference for gpt2cc's attention kernels: causal F.scaled_dot_product_attention timed
forward and forward+backward at GPT-2 shapes. On CUDA the FlashAttention backend is forced (an
error, not a silent fallback, if it cannot run the shape); on CPU whichever backend PyTorch picks.
Inputs are (B, NH, T, HS) tensors; each figure is the median over --reps after --warmup runs.
"""
import argparse
import os
import statistics
import sys

from bench_common import import_or_exit, time_ms, write_json_atomic

torch = import_or_exit("torch")
import torch.nn.functional as F  # noqa: E402 (after the check above, which says what is missing)
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

DEFAULT_SHAPES = "8x12x1024x64,16x12x1024x64,8x12x1024x128,16x12x1024x128"
TESTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests")
DEFAULT_FIXTURE = os.path.join(TESTS_DIR, "fixtures", "sdpa.json")


def attention_flops(B, NH, T, HS):
    """Causal attention FLOPs, matmuls only (softmax and masking ignored).
    Forward: two matmuls, S = Q·Kᵀ and O = P·V, each 2·B·NH·T²·HS, of which the causal mask keeps
    half: fwd = 2 · 2·B·NH·T²·HS / 2. Backward: five matmuls of that size (dV = Pᵀ·dO, dP = dO·Vᵀ,
    dQ = dS·K, dK = dSᵀ·Q, and the recomputation of S = Q·Kᵀ that FlashAttention does), i.e. 2.5x fwd.
    Returns (fwd, fwd + bwd)."""
    fwd = 2 * 2 * B * NH * T * T * HS / 2
    return fwd, fwd * 3.5


def parse_shapes(text, parser):
    shapes = []
    for entry in filter(None, text.split(",")):
        parts = entry.split("x")
        if len(parts) != 4 or not all(p.isdigit() and int(p) >= 1 for p in parts):
            parser.error(f"--shapes: expected entries like 8x12x1024x64 (BxNHxTxHS, all >= 1), got '{entry}'")
        shapes.append(tuple(int(p) for p in parts))
    if not shapes:
        parser.error("--shapes must name at least one BxNHxTxHS shape")
    return shapes


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma-separated BxNHxTxHS (default {DEFAULT_SHAPES})")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"],
                   help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--reps", type=int, default=50, help="timed repetitions per figure (median reported)")
    p.add_argument("--warmup", type=int, default=10, help="untimed repetitions first")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for --device cpu (0: torch default)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--fixture", default=DEFAULT_FIXTURE,
                   help="tests/make_sdpa_fixture.py's sdpa.json: SDPA's error on its cases against float64, "
                        "beside PyTorch's CPU bf16 error that gpt2cc's attention tests are held to "
                        "('none': skip; default: the repository's, skipped if missing)")
    a = p.parse_args(argv)
    a.shapes = parse_shapes(a.shapes, p)
    if a.reps < 1:
        p.error(f"--reps must be >= 1, got {a.reps}")
    if a.warmup < 1:
        p.error(f"--warmup must be >= 1, got {a.warmup}")
    if a.threads < 0:
        p.error(f"--threads must be >= 0, got {a.threads}")
    if a.fixture not in ("none", DEFAULT_FIXTURE) and not os.path.exists(a.fixture):
        p.error(f"--fixture {a.fixture}: no such file")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible to PyTorch (use --device cpu)")
    if a.dtype is None:
        a.dtype = "bf16" if a.device == "cuda" else "fp32"
    if a.device == "cuda" and a.dtype == "fp32":
        p.error("--dtype fp32: the FlashAttention backend takes bf16 or fp16 only")
    return a


def bench_shape(B, NH, T, HS, a, device, dtype):
    cuda = a.device == "cuda"
    q, k, v = (torch.randn(B, NH, T, HS, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad_out = torch.randn(B, NH, T, HS, device=device, dtype=dtype)

    def forward():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward_backward():
        # Gradients set to None first so no accumulation kernel is timed.
        q.grad = k.grad = v.grad = None
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(grad_out)

    backends = [SDPBackend.FLASH_ATTENTION] if cuda else list(SDPBackend.__members__.values())
    with sdpa_kernel(backends):
        fwd_ms = statistics.median(time_ms(forward, a.warmup, a.reps, cuda))
        fwdbwd_ms = statistics.median(time_ms(forward_backward, a.warmup, a.reps, cuda))
    fwd_flops, fwdbwd_flops = attention_flops(B, NH, T, HS)
    return {
        "B": B, "NH": NH, "T": T, "HS": HS,
        "fwd_ms": fwd_ms, "fwd_tflops": fwd_flops / (fwd_ms / 1e3) / 1e12,
        "fwd_bwd_ms": fwdbwd_ms, "fwd_bwd_tflops": fwdbwd_flops / (fwdbwd_ms / 1e3) / 1e12,
    }


def fixture_errors(path, a, device, dtype):
    """Relative L2 error of SDPA (out, dq, dk, dv) on this device and dtype against the fixture's
    float64 result, per case, with the fixture's PyTorch CPU bf16 figures beside it. The call and
    the error are tests/make_sdpa_fixture.py's own."""
    sys.path.insert(0, TESTS_DIR)
    from fixture_io import read_array_fixture
    from make_sdpa_fixture import rel_l2, sdpa
    meta, arrays = read_array_fixture(path)
    backends = [SDPBackend.FLASH_ATTENTION] if a.device == "cuda" else list(SDPBackend.__members__.values())
    rows = []
    for c in meta["cases"]:
        n, B, T, NH, HS = c["name"], c["B"], c["T"], c["NH"], c["HS"]
        C = NH * HS
        on_device = lambda name: torch.from_numpy(arrays[f"{n}.{name}"].copy()).to(device=device, dtype=dtype)
        with sdpa_kernel(backends):
            out, dqkv = sdpa(on_device("qkv"), on_device("dout"), B, T, NH, HS)
        out64, dqkv64 = (torch.from_numpy(arrays[f"{n}.{name}"]) for name in ("out", "dqkv"))
        row = {"case": n, "B": B, "T": T, "NH": NH, "HS": HS, "range": c["range"],
               "out": rel_l2(out.cpu(), out64), "cpu_bf16": c["torch_bf16_rel_l2"]}
        for i, part in enumerate(("dq", "dk", "dv")):
            row[part] = rel_l2(dqkv.cpu()[..., i * C:(i + 1) * C], dqkv64[..., i * C:(i + 1) * C])
        rows.append(row)
    return rows


def main(argv=None):
    a = parse_args(argv)
    torch.manual_seed(1337)
    if a.device == "cpu" and a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    device_name = torch.cuda.get_device_name(device) if a.device == "cuda" else "cpu"
    backend = "flash (forced)" if a.device == "cuda" else "torch default"
    print(f"device {device_name}, torch {torch.__version__}, {a.dtype}, SDPA backend {backend}, "
          f"median of {a.reps} after {a.warmup} warm-up")
    print("| B | NH | T | HS | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for B, NH, T, HS in a.shapes:
        try:
            r = bench_shape(B, NH, T, HS, a, device, dtype)
        except RuntimeError as e:
            # A shape the forced backend rejects, or out of memory: name it and stop.
            print(f"error: shape {B}x{NH}x{T}x{HS}: {str(e).splitlines()[0]}", file=sys.stderr)
            return 1
        rows.append(r)
        print(f"| {B} | {NH} | {T} | {HS} | {r['fwd_ms']:.3f} | {r['fwd_tflops']:.2f} "
              f"| {r['fwd_bwd_ms']:.3f} | {r['fwd_bwd_tflops']:.2f} |")
    accuracy = None
    if a.fixture != "none" and os.path.exists(a.fixture):
        accuracy = fixture_errors(a.fixture, a, device, dtype)
        print(f"\naccuracy on {os.path.relpath(a.fixture)} (relative L2 against SDPA in float64; "
              f"in brackets PyTorch's CPU bf16, the reference of gpt2cc's [pytorch] attention tests):")
        print("| case | B | T | NH | HS | out | dq | dk | dv |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in accuracy:
            cells = " | ".join(f"{r[p]:.2e} ({r['cpu_bf16'][p]:.2e})" for p in ("out", "dq", "dk", "dv"))
            print(f"| {r['case']} | {r['B']} | {r['T']} | {r['NH']} | {r['HS']} | {cells} |")
    if a.json:
        write_json_atomic(a.json, {"benchmark": "pytorch_sdpa_causal", "torch": torch.__version__,
                                   "device": device_name, "dtype": a.dtype, "backend": backend,
                                   "reps": a.reps, "warmup": a.warmup, "results": rows,
                                   "fixture_accuracy": accuracy})
    return 0


if __name__ == "__main__":
    sys.exit(main())
