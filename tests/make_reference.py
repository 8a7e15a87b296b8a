#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures for tests/model/test_reference.cpp.

A plain PyTorch GPT-2 (written out below: no imported model class), float32, dropout off, in two
shapes: `reference`, L=2, C=64, NH=4, V=500 padded to Vp=512, maxT=32, one fixed batch B=3 x T=24;
`reference_tiles`, shapes no preset has, L=2, C=40, NH=5 (head size 8), V=7 padded to 128, maxT=80,
B=2 x T=70 (two 64-row attention tiles, the second partial), with a few ignored (-1) targets. Each
records the logits, the mean loss, every parameter gradient (in gpt2cc's parameter layout order and
shapes, core/params.hpp), and the losses of 10 AdamW steps (torch.optim.AdamW, weight decay on the
weight matrices wte/qkvw/attprojw/fcw/fcprojw only, linear warm-up,
torch.nn.utils.clip_grad_norm_).

Regenerate (deterministic; CPU, needs only torch and numpy):
    python3 tests/make_reference.py            # writes tests/fixtures/reference{,_tiles}.{json,bin}

Format: reference.json holds the configuration, hyperparameters, scalars and an index
{name: {"offset": bytes, "shape": [...], "dtype": "float32"|"int32"}} into reference.bin
(little-endian raw arrays).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from fixture_io import write_array_fixture

# name: (L, C, NH, V, maxT, B, T)
SHAPES = {"reference": (2, 64, 4, 500, 32, 3, 24), "reference_tiles": (2, 40, 5, 7, 80, 2, 70)}
L, C, NH, V, MAXT, B, T = SHAPES["reference"]
VP = (V + 127) // 128 * 128
STEPS, WARMUP, MAX_LR = 10, 4, 3e-3
BETAS, EPS, WEIGHT_DECAY, MAX_NORM = (0.9, 0.95), 1e-8, 0.1, 1.0

# gpt2cc's layout order (core/params.hpp); per-layer tensors are stacked over L.
ORDER = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
         "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]
PER_LAYER_SHAPES = {"ln1w": (C,), "ln1b": (C,), "qkvw": (3 * C, C), "qkvb": (3 * C,),
                    "attprojw": (C, C), "attprojb": (C,), "ln2w": (C,), "ln2b": (C,),
                    "fcw": (4 * C, C), "fcb": (4 * C,), "fcprojw": (C, 4 * C), "fcprojb": (C,)}
DECAYED = {"wte", "qkvw", "attprojw", "fcw", "fcprojw"}


def make_parameters(gen):
    """GPT-2 init (N(0, 0.02), residual projections / sqrt(2L)), with LayerNorm weights and all
    biases randomised too so that every gradient path is exercised; padded wte rows are 0."""
    def normal(*shape, std):
        return torch.randn(*shape, generator=gen) * std
    p = {}
    wte = normal(VP, C, std=0.02)
    wte[V:] = 0.0
    p["wte"] = wte
    p["wpe"] = normal(MAXT, C, std=0.02)
    for l in range(L):
        p[f"ln1w.{l}"] = 1.0 + normal(C, std=0.1)
        p[f"ln1b.{l}"] = normal(C, std=0.02)
        p[f"qkvw.{l}"] = normal(3 * C, C, std=0.02)
        p[f"qkvb.{l}"] = normal(3 * C, std=0.02)
        p[f"attprojw.{l}"] = normal(C, C, std=0.02 / math.sqrt(2 * L))
        p[f"attprojb.{l}"] = normal(C, std=0.02)
        p[f"ln2w.{l}"] = 1.0 + normal(C, std=0.1)
        p[f"ln2b.{l}"] = normal(C, std=0.02)
        p[f"fcw.{l}"] = normal(4 * C, C, std=0.02)
        p[f"fcb.{l}"] = normal(4 * C, std=0.02)
        p[f"fcprojw.{l}"] = normal(C, 4 * C, std=0.02 / math.sqrt(2 * L))
        p[f"fcprojb.{l}"] = normal(C, std=0.02)
    p["lnfw"] = 1.0 + normal(C, std=0.1)
    p["lnfb"] = normal(C, std=0.02)
    return {k: v.float().requires_grad_(True) for k, v in p.items()}


def attention(qkv):
    """Causal multi-head self-attention; qkv (B,T,3C) = [q | k | v], head h in channels h*HS.."""
    b, t, _ = qkv.shape
    hs = C // NH
    q, k, v = qkv.split(C, dim=2)
    q, k, v = (x.view(b, t, NH, hs).transpose(1, 2) for x in (q, k, v))  # (B,NH,T,HS)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v
    return y.transpose(1, 2).contiguous().view(b, t, C)


def forward(p, tokens, targets):
    """GPT-2 pre-LN forward; returns logits (B,T,Vp) and the mean loss over targets != -1."""
    t = tokens.shape[1]
    x = p["wte"][tokens] + p["wpe"][:t]
    for l in range(L):
        h = F.layer_norm(x, (C,), p[f"ln1w.{l}"], p[f"ln1b.{l}"], eps=1e-5)
        qkv = h @ p[f"qkvw.{l}"].T + p[f"qkvb.{l}"]
        x = x + attention(qkv) @ p[f"attprojw.{l}"].T + p[f"attprojb.{l}"]
        h = F.layer_norm(x, (C,), p[f"ln2w.{l}"], p[f"ln2b.{l}"], eps=1e-5)
        h = F.gelu(h @ p[f"fcw.{l}"].T + p[f"fcb.{l}"], approximate="tanh")
        x = x + h @ p[f"fcprojw.{l}"].T + p[f"fcprojb.{l}"]
    x = F.layer_norm(x, (C,), p["lnfw"], p["lnfb"], eps=1e-5)
    logits = x @ p["wte"].T  # tied output projection, no bias
    # Cross-entropy over the real vocabulary only: the padded columns never take part.
    loss = F.cross_entropy(logits[..., :V].reshape(-1, V), targets.reshape(-1), ignore_index=-1)
    return logits, loss


def flatten(p, use_grad):
    """One float32 vector in gpt2cc's layout order (per-layer tensors stacked over L)."""
    parts = []
    for name in ORDER:
        if name in PER_LAYER_SHAPES:
            tensors = [p[f"{name}.{l}"] for l in range(L)]
        else:
            tensors = [p[name]]
        for t in tensors:
            parts.append((t.grad if use_grad else t).detach().reshape(-1))
    return torch.cat(parts).numpy().astype(np.float32)


def lr_at(step0):
    """Linear warm-up to MAX_LR over WARMUP steps, then constant (as core/schedule.hpp with
    decay 'constant'): lr(step) = MAX_LR * (step + 1) / WARMUP for 0-based step < WARMUP."""
    return MAX_LR * (step0 + 1) / WARMUP if step0 < WARMUP else MAX_LR


def write_fixture(name):
    global L, C, NH, V, MAXT, B, T, VP, PER_LAYER_SHAPES
    L, C, NH, V, MAXT, B, T = SHAPES[name]
    VP = (V + 127) // 128 * 128
    PER_LAYER_SHAPES = {"ln1w": (C,), "ln1b": (C,), "qkvw": (3 * C, C), "qkvb": (3 * C,),
                        "attprojw": (C, C), "attprojb": (C,), "ln2w": (C,), "ln2b": (C,),
                        "fcw": (4 * C, C), "fcb": (4 * C,), "fcprojw": (C, 4 * C), "fcprojb": (C,)}
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    p = make_parameters(gen)
    tokens = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    targets[0, 5] = -1
    targets[1, :3] = -1
    targets[B - 1, T - 1] = -1

    params0 = flatten(p, use_grad=False)
    logits, loss = forward(p, tokens, targets)
    loss.backward()
    grads = flatten(p, use_grad=True)
    logits0 = logits.detach()[..., :V].contiguous().numpy().astype(np.float32)
    loss0 = float(loss.item())

    decay = [t for k, t in p.items() if k.split(".")[0] in DECAYED]
    no_decay = [t for k, t in p.items() if k.split(".")[0] not in DECAYED]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=MAX_LR, betas=BETAS, eps=EPS, foreach=False)
    losses, norms, lrs = [], [], []
    for step0 in range(STEPS):
        opt.zero_grad(set_to_none=True)
        _, loss = forward(p, tokens, targets)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(p.values()), MAX_NORM)
        for group in opt.param_groups:
            group["lr"] = lr_at(step0)
        opt.step()
        losses.append(float(loss.item()))
        norms.append(float(norm.item()))
        lrs.append(lr_at(step0))

    arrays = {
        "tokens": tokens.numpy().astype(np.int32),
        "targets": targets.numpy().astype(np.int32),
        "params": params0,
        "logits": logits0,
        "grads": grads,
    }
    meta = {
        "generator": "tests/make_reference.py (torch %s)" % torch.__version__,
        "config": {"num_layers": L, "channels": C, "num_heads": NH, "vocab_size": V,
                   "padded_vocab_size": VP, "max_seq_len": MAXT},
        "batch": {"B": B, "T": T},
        "adamw": {"betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY,
                  "max_norm": MAX_NORM, "lrs": lrs},
        "loss": loss0,
        "step_losses": losses,
        "step_grad_norms": norms,
    }
    offset = write_array_fixture(name, arrays, meta)
    print("%s: loss %.6f; step losses %s; grad norms %s; %d bytes" %
          (name, loss0, ["%.5f" % x for x in losses], ["%.3f" % x for x in norms], offset))


def main():
    for name in SHAPES:
        write_fixture(name)


if __name__ == "__main__":
    main()
