#!/usr/bin/env python3
"""How much validation loss does bf16 cost, and which rounding costs it? A PyTorch study on the CPU.

gpt2cc's bf16 path (docs/cuda.md) ended a 300-step Wikipedia run ~1% above fp32 on the emulated
device. This script trains the same small GPT-2 (same architecture, init and optimizer as
gpt2cc) from the same gpt2cc token shards under several precision schemes, with the same
initial weights and batches for every scheme of a seed, and several seeds, so a scheme's cost
can be told from the run-to-run spread:

  fp32       everything fp32 (the reference)
  fp32-ulp   fp32 from initial weights moved by one unit in the last place at random: how far
             two fp32 runs that differ only in rounding drift apart (the noise floor)
  autocast   what torch.autocast(bfloat16) does on a GPU: fp32 parameters, gradients and
             residual stream; linears (and so attention's inputs, GELU, logits) in bf16;
             LayerNorm and the cross-entropy in fp32
  bf16       gpt2cc's --dtype bf16: fp32 master weights and AdamW moments, but a bf16 compute
             copy of the parameters, bf16 activations including the residual stream, bf16
             gradients; LayerNorm and cross-entropy compute in fp32 from bf16 inputs
  bf16-res32 the same with the residual stream (and its gradient) kept in fp32

In the bf16 schemes an op reads bf16, computes in fp32 and rounds its output to bf16 (PyTorch's
CPU bf16 kernels accumulate in fp32), as gpt2cc's kernels do. PyTorch's matmul accumulation order is not
gpt2cc's, so this measures the schemes, not gpt2cc's kernels (those are checked bit for bit on
the emulator and against the CPU within tolerance by the tests).

    python3 benchmarks/pytorch/precision_study.py --train-data data/wiki/train \
        --val-data data/wiki/val --seeds 1337,1,2 --json study.json
"""
import argparse
import math
import pathlib
import statistics
import sys
import time

from bench_common import import_or_exit, write_json_atomic

torch = import_or_exit("torch")
np = import_or_exit("numpy", install="pip install numpy")
import torch.nn.functional as F  # noqa: E402 (after the check above, which says what is missing)

SCHEMES = ("fp32", "fp32-ulp", "autocast", "bf16", "bf16-res32")
PARAM_NAMES = ("wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
               "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb")
DECAYED = {"wte", "qkvw", "attprojw", "fcw", "fcprojw"}  # the tensors gpt2cc decays (not wpe)
SHARD_HEADER_BYTES = 64
SHARD_MAGIC = b"GPT2TOKS"


def fail(message):
    """Bad input: the message on stderr, exit status 2 (as gpt2cc's binaries)."""
    print(f"precision_study: {message}", file=sys.stderr)
    sys.exit(2)


def read_tokens(split_dir):
    """All shards of a gpt2cc split (core/dataloader.hpp format), concatenated in name order."""
    paths = sorted(pathlib.Path(split_dir).glob("*.bin"))
    if not paths:
        fail(f"no shard (*.bin) in {split_dir}")
    parts = []
    for path in paths:
        raw = path.read_bytes()
        if raw[:8] != SHARD_MAGIC:
            fail(f"{path} is not a gpt2cc token shard (bad magic)")
        token_bytes = int.from_bytes(raw[12:16], "little")
        num_tokens = int.from_bytes(raw[16:24], "little")
        dtype = {2: np.uint16, 4: np.uint32}.get(token_bytes)
        if dtype is None or len(raw) != SHARD_HEADER_BYTES + num_tokens * token_bytes:
            fail(f"{path}: unexpected token width {token_bytes} or truncated file")
        parts.append(np.frombuffer(raw, dtype=dtype, offset=SHARD_HEADER_BYTES, count=num_tokens))
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def init_params(L, C, V, Vp, T, seed):
    """GPT-2 init as gpt2cc's init_weights: N(0, 0.02), residual projections 0.02/sqrt(2L),
    LayerNorm weights 1, biases 0, wte's padded rows 0. Per layer tensors stacked on dim 0."""
    g = torch.Generator().manual_seed(seed)
    normal = lambda shape, std: torch.randn(shape, generator=g) * std
    residual_std = 0.02 / math.sqrt(2 * L)
    wte = torch.zeros(Vp, C)
    wte[:V] = normal((V, C), 0.02)
    return {
        "wte": wte, "wpe": normal((T, C), 0.02),
        "ln1w": torch.ones(L, C), "ln1b": torch.zeros(L, C),
        "qkvw": normal((L, 3 * C, C), 0.02), "qkvb": torch.zeros(L, 3 * C),
        "attprojw": normal((L, C, C), residual_std), "attprojb": torch.zeros(L, C),
        "ln2w": torch.ones(L, C), "ln2b": torch.zeros(L, C),
        "fcw": normal((L, 4 * C, C), 0.02), "fcb": torch.zeros(L, 4 * C),
        "fcprojw": normal((L, C, 4 * C), residual_std), "fcprojb": torch.zeros(L, C),
        "lnfw": torch.ones(C), "lnfb": torch.zeros(C),
    }


def forward_loss(p, idx, targets, scheme, NH, V):
    """Mean cross-entropy over the batch; p holds the tensors the scheme computes with."""
    bf16, fp32 = torch.bfloat16, torch.float32
    act = fp32 if scheme.startswith("fp32") else bf16            # linear outputs, attention, GELU
    res = bf16 if scheme == "bf16" else fp32  # the residual stream

    def linear(x, w, b):
        return F.linear(x.to(act), w.to(act), b.to(act))

    def layer_norm(x, w, b):
        # autocast runs LayerNorm in fp32 (fp32 out); the bf16 schemes normalise in fp32 and
        # store bf16, like gpt2cc's (residual +) LayerNorm kernels.
        y = F.layer_norm(x.float(), (x.shape[-1],), w.float(), b.float(), 1e-5)
        return y.to(bf16) if scheme.startswith("bf16") else y

    B, T = idx.shape
    C = p["wte"].shape[1]
    # Gathered from fp32 views: a token's (and a position's) gradient sums in fp32 and is rounded
    # once, as gpt2cc's encoder backward does, before adding to the classifier's wte gradient.
    x = (p["wte"].float()[idx] + p["wpe"].float()[:T]).to(res)
    for l in range(p["qkvw"].shape[0]):
        qkv = linear(layer_norm(x, p["ln1w"][l], p["ln1b"][l]), p["qkvw"][l], p["qkvb"][l])
        q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in qkv.split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = (x + linear(y, p["attprojw"][l], p["attprojb"][l])).to(res)
        h = F.gelu(linear(layer_norm(x, p["ln2w"][l], p["ln2b"][l]), p["fcw"][l], p["fcb"][l]), approximate="tanh")
        x = (x + linear(h, p["fcprojw"][l], p["fcprojb"][l])).to(res)
    logits = F.linear(layer_norm(x, p["lnfw"], p["lnfb"]).to(act), p["wte"].to(act))[..., :V]
    return F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1))


def lr_at(step, args):
    """gpt2cc's schedule (core/schedule.cpp) at 1-based step: linear warm-up reaching the peak at
    step W, then cosine from the peak at step W + 1 to min_lr_ratio * lr at the last step."""
    if step <= args.warmup_steps:
        return args.lr * step / args.warmup_steps
    decay_steps = args.steps - args.warmup_steps
    progress = min(1.0, (step - 1 - args.warmup_steps) / (decay_steps - 1)) if decay_steps > 1 else 0.0
    floor = args.lr * args.min_lr_ratio
    return floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * progress))


def run(scheme, seed, train, val, args):
    """Trains one scheme from seed's init and batch order; returns its loss curves."""
    V, Vp, L, C, NH, B, T = 50257, 50304, args.layers, args.channels, args.heads, args.batch_size, args.seq_len
    master = init_params(L, C, V, Vp, T, seed)
    if scheme == "fp32-ulp":
        jitter = torch.Generator().manual_seed(seed + 7)
        for k, w in master.items():
            up = torch.rand(w.shape, generator=jitter) < 0.5
            master[k] = torch.where(up, torch.nextafter(w, torch.full_like(w, math.inf)),
                                    torch.nextafter(w, torch.full_like(w, -math.inf)))
    # The bf16 schemes compute with a bf16 copy of the master weights, rewritten after each step.
    bf16_copy = scheme.startswith("bf16")
    compute = {k: (v.to(torch.bfloat16) if bf16_copy else v).requires_grad_(True) for k, v in master.items()}
    if not bf16_copy:
        master = compute  # the optimizer updates the fp32 parameters the model computes with
    m = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in master.items()}
    v2 = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in master.items()}
    windows = (len(train) - 1) // T
    order = torch.Generator().manual_seed(seed + 1_000_003)
    perm, cursor = torch.randperm(windows, generator=order), 0
    # The first eval_batches x B windows of the validation split, batched once: (B, T + 1) each.
    val_batches = [torch.stack([val[w * T: w * T + T + 1] for w in range(b * B, b * B + B)])
                   for b in range(args.eval_batches)]
    curve = {"step": [], "train_loss": [], "val_step": [], "val_loss": []}
    for step in range(1, args.steps + 1):
        rows = []
        for _ in range(B):
            if cursor == windows:
                perm, cursor = torch.randperm(windows, generator=order), 0
            w = int(perm[cursor]); cursor += 1
            rows.append(train[w * T: w * T + T + 1])
        batch = torch.stack(rows)
        loss = forward_loss(compute, batch[:, :-1], batch[:, 1:], scheme, NH, V)
        grads = torch.autograd.grad(loss, [compute[k] for k in PARAM_NAMES])
        grads = {k: g.float() for k, g in zip(PARAM_NAMES, grads)}
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
        clip = min(1.0, args.grad_clip / (norm + 1e-6)) if args.grad_clip > 0 else 1.0
        lr = lr_at(step, args)
        with torch.no_grad():
            for k in PARAM_NAMES:
                g = grads[k] * clip
                m[k].mul_(args.beta1).add_(g, alpha=1 - args.beta1)
                v2[k].mul_(args.beta2).addcmul_(g, g, value=1 - args.beta2)
                mhat = m[k] / (1 - args.beta1 ** step)
                vhat = v2[k] / (1 - args.beta2 ** step)
                if k in DECAYED:
                    master[k].mul_(1 - lr * args.weight_decay)
                master[k].sub_(lr * mhat / (vhat.sqrt() + args.eps))
                if bf16_copy:
                    compute[k].copy_(master[k].to(torch.bfloat16))
        curve["step"].append(step)
        curve["train_loss"].append(float(loss.detach()))
        if step % args.eval_every == 0 or step == args.steps:
            with torch.no_grad():
                losses = [float(forward_loss(compute, b[:, :-1], b[:, 1:], scheme, NH, V)) for b in val_batches]
            curve["val_step"].append(step)
            curve["val_loss"].append(statistics.fmean(losses))
    return curve


def relative_gap(a, b):
    """Largest |a - b| / b over paired points."""
    return max((abs(x - y) / y for x, y in zip(a, b)), default=math.nan)


def window_means(values, width):
    return [statistics.fmean(values[i:i + width]) for i in range(0, len(values) - width + 1, width)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-data", required=True, help="gpt2cc shard directory (prepare's train/)")
    p.add_argument("--val-data", required=True, help="gpt2cc shard directory (prepare's val/)")
    p.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma list of {', '.join(SCHEMES)}")
    p.add_argument("--seeds", default="1337", help="comma list; each seed: its own init and batch order")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup-steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--train-window", type=int, default=25, help="train loss compared in means of this many steps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--json", help="write every curve and the summary to this file")
    args = p.parse_args()
    schemes = args.schemes.split(",")
    bad = [s for s in schemes if s not in SCHEMES]
    if bad or "fp32" not in schemes:
        p.error(f"--schemes must name fp32 and only {', '.join(SCHEMES)} (got {args.schemes})")
    for name in ("layers", "channels", "heads", "batch_size", "seq_len", "steps", "eval_every",
                 "eval_batches", "train_window"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.channels % args.heads:
        p.error(f"--channels {args.channels} is not a multiple of --heads {args.heads}")
    if not 0 <= args.warmup_steps < args.steps:
        p.error(f"--warmup-steps must be in [0, --steps), got {args.warmup_steps}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be a comma list of integers, got {args.seeds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    train, val = read_tokens(args.train_data), read_tokens(args.val_data)
    if len(val) < args.eval_batches * args.batch_size * args.seq_len + 1:
        fail(f"{args.val_data} holds {len(val)} tokens, fewer than --eval-batches x --batch-size windows")
    if len(train) < args.seq_len + 1:
        fail(f"{args.train_data} holds {len(train)} tokens, less than one window of --seq-len + 1")

    curves = {}
    for seed in seeds:
        for scheme in schemes:
            start = time.perf_counter()
            curves[(scheme, seed)] = run(scheme, seed, train, val, args)
            print(f"seed {seed} {scheme:>10}: final val {curves[(scheme, seed)]['val_loss'][-1]:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)

    rows = []
    print(f"\n| scheme | final val loss, mean over seeds | vs fp32 (mean, per seed) | "
          f"largest val-curve gap to fp32 | largest train gap ({args.train_window}-step means) |")
    print("|---|---|---|---|---|")
    for scheme in schemes:
        finals = [curves[(scheme, s)]["val_loss"][-1] for s in seeds]
        deltas = [(curves[(scheme, s)]["val_loss"][-1] / curves[("fp32", s)]["val_loss"][-1] - 1) for s in seeds]
        val_gaps = [relative_gap(curves[(scheme, s)]["val_loss"], curves[("fp32", s)]["val_loss"]) for s in seeds]
        train_gaps = [relative_gap(window_means(curves[(scheme, s)]["train_loss"], args.train_window),
                                   window_means(curves[("fp32", s)]["train_loss"], args.train_window)) for s in seeds]
        rows.append({"scheme": scheme, "final_val": finals, "final_vs_fp32": deltas,
                     "val_gap": val_gaps, "train_gap": train_gaps})
        per_seed = ", ".join(f"{d:+.2%}" for d in deltas)
        print(f"| {scheme} | {statistics.fmean(finals):.4f} | {statistics.fmean(deltas):+.2%} ({per_seed}) | "
              f"{max(val_gaps):.2%} | {max(train_gaps):.2%} |")
    if args.json:
        write_json_atomic(args.json, {
            "config": vars(args), "torch": torch.__version__, "summary": rows,
            "curves": [{"scheme": k[0], "seed": k[1], **v} for k, v in curves.items()]})


if __name__ == "__main__":
    main()
