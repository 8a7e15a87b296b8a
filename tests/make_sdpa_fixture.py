#!/usr/bin/env python3
"""Writes the PyTorch scaled_dot_product_attention fixture for the attention tests (read by
tests/common/sdpa_fixture.cpp: tests/cpu/test_attention.cpp, the tiled and flash attention tests
of tests/cuda and tests/emu, tag [pytorch]).

For each case (B, T, NH, HS, range): qkv ~ U(-range, range) and dout ~ U(-1, 1), rounded to bf16
(so a bf16 kernel and the fp32 CPU reference see exactly these values), laid out as gpt2cc's
(B, T, 3C) [q | k | v] with head h in channels h*HS .. h*HS+HS-1. torch.nn.functional.
scaled_dot_product_attention(is_causal=True) runs on them in float64 and is differentiated with
dout: out (B, T, C) and dqkv (B, T, 3C) are stored as float32. The same call on the bf16 tensors
(PyTorch's own bf16 path on the CPU) gives each case's "torch_bf16_rel_l2": the relative L2 error
||x - x64|| / ||x64|| of its out, dq, dk and dv, the accuracy a bf16 kernel is held to beside it.
T = 72, 100 and 65 end in a partial 64-row tile (65: a 1-row one); range 4 gives peaked rows.

Regenerate (deterministic; CPU, needs only torch and numpy):
    python3 tests/make_sdpa_fixture.py            # writes tests/fixtures/sdpa.{json,bin}

Format: sdpa.json holds the cases and an index {name: {"offset": bytes, "shape": [...],
"dtype": "bfloat16"|"float32"}} into sdpa.bin (little-endian raw arrays; bfloat16 as its 16 bits).
"""
import numpy as np
import torch
import torch.nn.functional as F

from fixture_io import write_array_fixture

# name, B, T, NH, HS, range of q, k, v
CASES = [("hs64", 2, 72, 2, 64, 1.5),
         ("hs128", 1, 100, 1, 128, 1.5),
         ("hs64_peaked", 1, 65, 1, 64, 4.0)]


def heads(x, B, T, NH, HS):
    """(B, T, C) -> (B, NH, T, HS), the layout SDPA takes."""
    return x.reshape(B, T, NH, HS).transpose(1, 2)


def packed(t, B, T, C):
    """(B, NH, T, HS) -> (B, T, C)."""
    return t.transpose(1, 2).reshape(B, T, C)


def sdpa(qkv, dout, B, T, NH, HS):
    """out and dqkv of causal SDPA on qkv (B, T, 3C) in qkv's dtype, dout (B, T, C)."""
    C = NH * HS
    qkv = qkv.detach().clone().requires_grad_(True)
    q, k, v = (heads(qkv[..., i * C:(i + 1) * C], B, T, NH, HS) for i in range(3))
    out = packed(F.scaled_dot_product_attention(q, k, v, is_causal=True), B, T, C)
    out.backward(dout)
    return out.detach(), qkv.grad.detach()


def bf16_bits(t):
    """A bfloat16 tensor as its 16 bits: the top half of each value widened to float32 (exact)."""
    return (t.float().numpy().view(np.uint32) >> 16).astype(np.uint16)


def rel_l2(got, ref):
    got, ref = got.double(), ref.double()
    return float((got - ref).norm() / ref.norm())


def main():
    gen = torch.Generator().manual_seed(2024)
    arrays, cases = {}, []
    for name, B, T, NH, HS, rng in CASES:
        C = NH * HS
        qkv = ((torch.rand(B, T, 3 * C, generator=gen, dtype=torch.float64) * 2 - 1) * rng).bfloat16()
        dout = (torch.rand(B, T, C, generator=gen, dtype=torch.float64) * 2 - 1).bfloat16()
        out64, dqkv64 = sdpa(qkv.double(), dout.double(), B, T, NH, HS)
        out16, dqkv16 = sdpa(qkv, dout, B, T, NH, HS)
        errors = {"out": rel_l2(out16, out64)}
        for i, part in enumerate(("dq", "dk", "dv")):
            errors[part] = rel_l2(dqkv16[..., i * C:(i + 1) * C], dqkv64[..., i * C:(i + 1) * C])
        arrays[f"{name}.qkv"] = ("bfloat16", bf16_bits(qkv))
        arrays[f"{name}.dout"] = ("bfloat16", bf16_bits(dout))
        arrays[f"{name}.out"] = ("float32", out64.float().numpy())
        arrays[f"{name}.dqkv"] = ("float32", dqkv64.float().numpy())
        cases.append({"name": name, "B": B, "T": T, "NH": NH, "HS": HS, "range": rng,
                      "torch_bf16_rel_l2": errors})
        print("%-12s B=%d T=%d NH=%d HS=%d range %.1f: torch bf16 rel L2 %s" %
              (name, B, T, NH, HS, rng, {k: "%.2e" % v for k, v in errors.items()}))

    meta = {"generator": "tests/make_sdpa_fixture.py (torch %s)" % torch.__version__,
            "op": "torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True), "
                  "float64 on the CPU; torch_bf16_rel_l2: the same on bf16 tensors",
            "cases": cases}
    offset = write_array_fixture("sdpa", arrays, meta)
    print("%d bytes" % offset)


if __name__ == "__main__":
    main()
