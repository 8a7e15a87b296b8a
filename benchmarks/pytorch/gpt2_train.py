#!/usr/bin/env python3
"""PyTorch reference for gpt2cc's training throughput: the same GPT-2 written out in plain PyTorch.

Architecture as in gpt2cc: pre-LayerNorm blocks, learned position embedding, biases everywhere,
GELU (tanh), wte tied to the output projection, vocabulary padded to Vp = 50304, causal attention
through F.scaled_dot_product_attention(is_causal=True). One step = forward + cross-entropy +
backward + grad-norm clip 1.0 + AdamW, on random tokens (AdamW decays every parameter, where
gpt2cc decays only wte and the four weight matrices: the same work per element either way).
Reports median tokens/s and ms/step over the timed steps, MFU against the peak in
benchmarks/gpu/peaks.json (dense bf16 tensor cores for bf16, plain fp32 for fp32), and peak
allocated memory.
--profile-json PATH: then --profile-steps more steps, each under torch.profiler, and the device
time and launch count of every CUDA kernel (and memcpy/memset) of each written to PATH, with the
step's wall time; benchmarks/gpu/profile_step.py compares them with gpt2cc's. On --device cpu
there are no kernels: the CPU ops' self times are written instead, marked time_source "cpu_ops".
"""
import argparse
import math
import re
import statistics
import sys

from bench_common import MAX_T, PRESETS, VOCAB, import_or_exit, lookup_peaks, time_ms, write_json_atomic

torch = import_or_exit("torch")
import torch.nn as nn  # noqa: E402 (after the check above, which says what is missing)
import torch.nn.functional as F  # noqa: E402

PADDED_VOCAB = 50304  # 50257 rounded up to a multiple of 128, as gpt2cc's ModelConfig does


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.attn_proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fc_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        # (B, T, C) -> (B, NH, T, HS) for SDPA
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, L, C, NH):
        super().__init__()
        self.wte = nn.Embedding(PADDED_VOCAB, C)
        self.wpe = nn.Embedding(MAX_T, C)
        self.blocks = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L), zero biases.
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied output projection, (B, T, Vp)
        # Over all Vp columns: the padded ones take part in this softmax (gpt2cc's reads the first
        # V only), 0.09% more work here than a slice's copy of the logits would cost; targets < VOCAB.
        return F.cross_entropy(logits.float().view(-1, PADDED_VOCAB), targets.view(-1))


def flops_per_token(n_params, L, C, T):
    """6·N + 6·L·C·T, the count issue 8 fixes and gpt2cc's bench_train_gpu uses: N = every
    parameter except the padded vocabulary rows (Vp - V rows of wte: zero and untrained in gpt2cc;
    here initialised and trained through the padded logits, and left out of N all the same),
    2 FLOPs forward + 4 backward per parameter per token; 6·L·C·T is the attention QKᵀ and AV with
    the causal mask halving the T positions (2 matmuls · 2 FLOPs · C · T/2 forward, twice that
    backward, per layer and token)."""
    return 6 * n_params + 6 * L * C * T


def peak_tflops(device_name, dtype):
    """Dense peak of the unit the step's matmuls use, from benchmarks/gpu/peaks.json: bf16 tensor
    cores for bf16, plain fp32 for fp32 (TF32 is off unless --allow-tf32). None when unknown."""
    entry = lookup_peaks(device_name)
    if entry is None:
        return None
    return entry["bf16_dense_tflops"] if dtype == "bf16" else entry["fp32_tflops"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="gpt2", choices=sorted(PRESETS))
    p.add_argument("-B", "--batch-size", type=int, default=16)
    p.add_argument("-T", "--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="bf16: autocast to bfloat16")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="torch.compile the model (default: on for cuda, off for cpu)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--peak-tflops", type=float, help="override the peak used for MFU")
    p.add_argument("--allow-tf32", action="store_true",
                   help="let fp32 matmuls use TF32 tensor cores (off: true fp32, as gpt2cc's fp32 backend)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for --device cpu (0: torch default)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.add_argument("--profile-json", help="after the timed steps, profile --profile-steps more with torch.profiler "
                                          "and write each one's kernel times to this JSON file")
    p.add_argument("--profile-steps", type=int, default=2, help="steps profiled for --profile-json (the last is used)")
    a = p.parse_args(argv)
    if a.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {a.batch_size}")
    if not 1 <= a.seq_len <= MAX_T:
        p.error(f"--seq-len must be in [1, {MAX_T}], got {a.seq_len}")
    if a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    if a.warmup < 1:
        p.error(f"--warmup must be >= 1, got {a.warmup}")
    if a.profile_steps < 1:
        p.error(f"--profile-steps must be >= 1, got {a.profile_steps}")
    if a.threads < 0:
        p.error(f"--threads must be >= 0, got {a.threads}")
    if a.peak_tflops is not None and not a.peak_tflops > 0:
        p.error(f"--peak-tflops must be > 0, got {a.peak_tflops}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible to PyTorch (use --device cpu)")
    if a.compile is None:
        a.compile = a.device == "cuda"
    return a


# Device "events" that are waits, not work on the GPU (CUPTI's synchronization records).
NOT_DEVICE_WORK = re.compile(r"^(context|stream|event|device) (sync|synchronize|wait)", re.IGNORECASE)


def device_us(evt):
    """Device time of one kernel / memcpy / memset event in us: its own interval (what
    device_time_total returns for a device event in torch >= 2.4, cuda_time_total before)."""
    time_range = getattr(evt, "time_range", None)
    if time_range is not None:
        return time_range.elapsed_us()
    for attr in ("device_time_total", "cuda_time_total"):
        if hasattr(evt, attr):
            return getattr(evt, attr)
    raise AttributeError(f"profiler event {evt.name!r} has no time_range, device_time_total or cuda_time_total")


def kernel_table(events, cuda):
    """(rows, skipped): rows = [{name, calls, total_us}] longest first, from torch.profiler's
    events: on CUDA every device event (kernels, memcpy, memset; waits go to `skipped`), on the
    CPU every op's self CPU time (no device there)."""
    from torch.autograd import DeviceType

    table, skipped = {}, {}
    for evt in events:
        if cuda:
            if evt.device_type != DeviceType.CUDA:
                continue
            us = device_us(evt)
            target = skipped if NOT_DEVICE_WORK.match(evt.name) else table
        else:
            if evt.device_type != DeviceType.CPU or getattr(evt, "is_async", False):
                continue
            us = evt.self_cpu_time_total
            target = table
        row = target.setdefault(evt.name, {"name": evt.name, "calls": 0, "total_us": 0.0})
        row["calls"] += 1
        row["total_us"] += float(us)
    order = lambda t: sorted(t.values(), key=lambda r: -r["total_us"])
    return order(table), order(skipped)


def profile_steps(step, n, cuda):
    """Runs `n` steps, each in its own torch.profiler session (CUDA activity only on a GPU: the
    kernels' times come from CUPTI and the host-side tracing stays out of the step), and returns
    (steps, activities): per step its wall ms (under the profiler), kernel table and total. If
    the CUDA-only session records no device events, the rest use CPU + CUDA activities."""
    from torch.profiler import ProfilerActivity, profile

    def profiled_step():
        with profile(activities=activities) as prof:
            wall_ms = time_ms(step, 0, 1, cuda)[0]
        return (wall_ms, *kernel_table(prof.events(), cuda))

    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    steps = []
    for i in range(n):
        wall_ms, rows, skipped = profiled_step()
        if cuda and not rows and ProfilerActivity.CPU not in activities:
            print("profile: no CUDA device events with CUDA activity alone; profiling with CPU + CUDA activities",
                  file=sys.stderr)
            activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
            wall_ms, rows, skipped = profiled_step()
        if not rows:
            what = "CUDA kernels" if cuda else "CPU ops"
            raise RuntimeError(f"torch.profiler recorded no {what} in profiled step {i + 1}")
        steps.append({"wall_ms": wall_ms, "total_us": sum(r["total_us"] for r in rows),
                      "launches": sum(r["calls"] for r in rows), "kernels": rows, "skipped": skipped})
    return steps, [str(x).split(".")[-1] for x in activities]


def bf16_reduction_setting():
    value = getattr(torch.backends.cuda.matmul, "allow_bf16_reduced_precision_reduction", None)
    return value if value is None or isinstance(value, bool) else str(value)


def main(argv=None):
    a = parse_args(argv)
    torch.manual_seed(a.seed)
    if a.device == "cpu" and a.threads:
        torch.set_num_threads(a.threads)
    cuda = a.device == "cuda"
    if cuda:
        # fp32 mode compares with gpt2cc's fp32 backend (cuBLAS sgemm, no TF32): TF32 stays off
        # unless asked for. bf16 autocast runs the matmuls in bf16 either way.
        torch.backends.cuda.matmul.allow_tf32 = a.allow_tf32
        torch.backends.cudnn.allow_tf32 = a.allow_tf32
    device = torch.device(a.device)
    L, C, NH = PRESETS[a.preset]
    B, T = a.batch_size, a.seq_len

    model = GPT2(L, C, NH).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_flops = n_params - (PADDED_VOCAB - VOCAB) * C  # N of the FLOPs count: padded wte rows excluded
    # fused=True: one kernel over all parameters, on CUDA and (since torch 2.4) on the CPU. A CPU
    # build that refuses it runs the default (foreach) implementation, and the result says so.
    def adamw(fused):
        return torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                                 fused=fused)
    try:
        optimizer, fused_adamw = adamw(True), True
    except RuntimeError:
        if cuda:
            raise
        optimizer, fused_adamw = adamw(None), False
    step_model = torch.compile(model) if a.compile else model
    autocast = torch.autocast(device_type=a.device, dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    # One random batch, reused every step: throughput does not depend on the token values.
    x = torch.randint(0, VOCAB, (B, T), device=device)
    y = torch.randint(0, VOCAB, (B, T), device=device)

    loss = None

    def step():
        nonlocal loss
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    for _ in range(a.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times_ms = time_ms(step, 0, a.steps, cuda)
    final_loss = loss.item()
    if not math.isfinite(final_loss):
        print(f"error: loss is {final_loss} after {a.warmup + a.steps} steps", file=sys.stderr)
        return 1

    ms = statistics.median(times_ms)
    tokens_per_s = B * T / (ms / 1e3)
    fpt = flops_per_token(n_flops, L, C, T)
    tflops = fpt * tokens_per_s / 1e12
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = a.peak_tflops if a.peak_tflops is not None else (peak_tflops(device_name, a.dtype) if cuda else None)
    mfu = tflops / peak if peak else None
    peak_mem = torch.cuda.max_memory_allocated(device) if cuda else None

    result = {
        "benchmark": "pytorch_gpt2_train_step", "torch": torch.__version__, "device": device_name,
        "preset": a.preset, "L": L, "C": C, "NH": NH, "V": VOCAB, "Vp": PADDED_VOCAB, "params": n_params,
        "params_flops": n_flops, "allow_tf32": a.allow_tf32,
        # Whether cuBLAS may add split-K parts in bf16 (PyTorch's default: yes); gpt2cc's
        # gemm-split-k design (kernels/matmul.cuh) is the same choice.
        "allow_bf16_reduced_precision_reduction": bf16_reduction_setting(),
        "B": B, "T": T, "dtype": a.dtype, "compile": a.compile, "fused_adamw": fused_adamw,
        "warmup": a.warmup, "steps": a.steps, "ms_per_step_median": ms,
        "ms_per_step_mean": statistics.fmean(times_ms), "ms_per_step_min": min(times_ms), "ms_per_step_max": max(times_ms),
        "tokens_per_s": tokens_per_s, "flops_per_token": fpt, "achieved_tflops": tflops,
        "peak_tflops": peak, "peak_kind": "bf16 dense tensor" if a.dtype == "bf16" else "fp32 non-tensor",
        "mfu": mfu, "peak_memory_bytes": peak_mem, "final_loss": final_loss,
    }
    mem = f"{peak_mem / 2**20:.0f} MiB" if peak_mem is not None else "n/a"
    mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "n/a (no peak known)"
    print(f"device {device_name}, torch {torch.__version__}, {a.dtype}"
          f"{' autocast' if a.dtype == 'bf16' else ''}, compile {'on' if a.compile else 'off'}, "
          f"AdamW {'fused' if fused_adamw else 'default'}")
    print(f"model {a.preset}: L={L} C={C} NH={NH} Vp={PADDED_VOCAB}, {n_params / 1e6:.1f}M params; "
          f"{fpt / 1e6:.1f} MFLOP/token (6*N + 6*L*C*T, N = {n_flops:,} params without padded vocab rows)")
    print("| preset | BxT | ms/step (median) | tokens/s | TFLOP/s | MFU | peak mem | loss |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {a.preset} | {B}x{T} | {ms:.2f} | {tokens_per_s:.0f} | {tflops:.3f} | {mfu_text} | {mem} "
          f"| {final_loss:.3f} |")
    if a.json:
        write_json_atomic(a.json, result)
    if a.profile_json:
        steps, activities = profile_steps(step, a.profile_steps, cuda)
        # ms_per_step_median: of the timed steps before, without the profiler (the step's wall time).
        profile = {k: result[k] for k in ("torch", "device", "preset", "B", "T", "dtype", "compile", "fused_adamw",
                                          "warmup", "ms_per_step_median")}
        profile.update(benchmark="pytorch_gpt2_train_step_profile", timed_steps=a.steps,
                       time_source="cuda_kernels" if cuda else "cpu_ops", activities=activities, steps=steps)
        write_json_atomic(a.profile_json, profile)
        last = steps[-1]
        what = "kernels" if cuda else "CPU ops (self time; no GPU on --device cpu)"
        print(f"profile: {len(steps)} step(s) under torch.profiler ({', '.join(activities)}); the last took "
              f"{last['wall_ms']:.2f} ms with {last['total_us'] / 1e3:.2f} ms in {last['launches']} {what}; "
              f"written to {a.profile_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
