#!/usr/bin/env python3
"""gpt2cc on the CPU side by side with PyTorch on the same CPU, in the same run.

train: for each preset:BxT and thread count, both do the same step on one random batch,
  repeated: zero the gradients, forward + cross-entropy + backward, clip the gradient norm to
  1.0, AdamW, in fp32. gpt2cc: build/benchmarks/cpu/bench_train_step (the trainer's CPU step).
  PyTorch: benchmarks/pytorch/gpt2_train.py --device cpu --dtype fp32 (the same GPT-2, eager;
  --compile adds a torch.compile column). speed-up = PyTorch ms / gpt2cc ms.
  --dtype bf16: mixed precision on both sides, fp32 master weights and AdamW moments (gpt2cc: its
  CPU bf16 backend, bf16 weights, activations and gradients, fp32 arithmetic; PyTorch: bf16
  autocast, which runs the matmuls and attention in bf16 and keeps fp32 weights and gradients).
generate: for each preset and thread count, greedy decoding with the KV cache, batch 1, a random
  prompt of --prompt-tokens then --new-tokens tokens. gpt2cc: build/benchmarks/generate/
  bench_generate; PyTorch: benchmarks/pytorch/gpt2_generate.py (Hugging Face transformers'
  GPT2LMHeadModel, in a plain loop and through generate()). speed-up = gpt2cc tokens/s / theirs.
  --dtype bf16: both sides hold the weights in bf16 (gpt2cc: its CPU bf16 backend, fp32
  arithmetic on bf16 weights, activations and KV cache; PyTorch: the model cast to bfloat16,
  computing in bf16 where its CPU kernels do).
Each run is a fresh process; within a round the sides alternate, which goes first switching from
round to round, so a machine that slows down (other load, heat) slows both alike. Reported per
row: the median over the rounds of each run's own median, and each process's peak resident memory
(the whole process: for PyTorch, its interpreter and libraries too). Above 1: gpt2cc is faster.

    python3 benchmarks/cpu/compare_pytorch.py train --python /path/to/venv/bin/python \\
        --configs d2:4x64,d4:4x64,gpt2:1x64 --threads 1,2 --rounds 3 --json train.json --md train.md
    python3 benchmarks/cpu/compare_pytorch.py generate --python /path/to/venv/bin/python \\
        --presets d4,gpt2 --threads 1,2 --rounds 3 --json generate.json --md generate.md

--python: an interpreter with torch (and transformers, for generate); default: this one.
--pytorch-huge-pages: PyTorch's CPU allocator asks for transparent huge pages too (its
  THP_MEM_ALLOC_ENABLE=1; off by default), as gpt2cc's CPU backend does from 4 MiB up.
--self-test checks the plumbing with stand-in programs (no torch, no build needed).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir))
PYTORCH_DIR = os.path.join(ROOT, "benchmarks", "pytorch")
sys.path.insert(0, PYTORCH_DIR)
# The atomic writes the PyTorch scripts use (bench_common needs only the standard library).
from bench_common import (PRESETS, cpu_machine, current_umask, output_flags_problem,  # noqa: E402
                          write_json_atomic, write_text_atomic)


def parse_configs(text):
    """'d2:4x64,gpt2:1x64' -> [('d2', 4, 64), ('gpt2', 1, 64)]; ValueError naming a bad entry."""
    configs = []
    for entry in text.split(","):
        try:
            preset, shape = entry.strip().split(":")
            b, t = (int(x) for x in shape.split("x"))
        except ValueError:
            raise ValueError(f"--configs: '{entry}' is not preset:BxT (e.g. d4:4x64)") from None
        if b < 1 or t < 1:
            raise ValueError(f"--configs: '{entry}': B and T must be >= 1")
        if preset not in PRESETS:
            raise ValueError(f"--configs: '{entry}': unknown preset '{preset}' (known: {', '.join(PRESETS)})")
        if t > 1024:
            raise ValueError(f"--configs: '{entry}': T = {t} is longer than the presets' context of 1024")
        configs.append((preset, b, t))
    return configs


def run_measured(cmd, env):
    """Runs cmd; (stdout, stderr, peak RSS of that process in MiB). RuntimeError if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {process.returncode}):\n{stderr[-2000:]}")
    return stdout, stderr, usage.ru_maxrss / 1024.0  # Linux: KiB


class Train:
    """The training step: cases are (preset, B, T); each side's run gives ms/step."""

    metric, higher_is_better = "ms", False

    def __init__(self, a):
        self.bench = os.path.join(a.build, "benchmarks", "cpu", "bench_train_step")
        self.python, self.warmup, self.steps, self.dtype = a.python, a.warmup, a.steps, a.dtype
        self.sides = ["gpt2cc", "pytorch"] + (["pytorch_compile"] if a.compile else [])
        self.cases = parse_configs(a.configs)

    def label(self, case):
        return f"{case[0]} {case[1]}x{case[2]}"

    def command(self, side, case, threads, json_path):
        preset, b, t = case
        common = ["--threads", str(threads), "--warmup", str(self.warmup), "--steps", str(self.steps),
                  "--dtype", self.dtype, "--json", json_path]
        if side == "gpt2cc":
            return [self.bench, "--configs", f"{preset}:{b}x{t}"] + common
        return [self.python, os.path.join(PYTORCH_DIR, "gpt2_train.py"), "--device", "cpu",
                "--preset", preset, "-B", str(b), "-T", str(t),
                "--compile" if side == "pytorch_compile" else "--no-compile"] + common

    def read(self, side, doc):
        if side == "gpt2cc":
            (r,) = doc  # bench_train_step writes a list, one entry per configuration
            return {"ms": r["ms_per_step_median"], "loss_last": r["loss_last"]}
        adamw = "fused" if doc.get("fused_adamw") else "default (foreach)"  # gpt2_train.py's choice
        return {"ms": doc["ms_per_step_median"], "loss_last": doc["final_loss"], "torch": doc["torch"], "adamw": adamw}

    def row(self, case, threads, medians):
        preset, b, t = case
        row = {"preset": preset, "B": b, "T": t, "threads": threads, "dtype": self.dtype, **medians}
        for side in self.sides:
            row[side]["tokens_per_s"] = b * t / (row[side]["ms"] / 1e3)
        for side in self.sides[1:]:
            row[f"speedup_vs_{side}"] = row[side]["ms"] / row["gpt2cc"]["ms"]
        return row

    def table(self, rows):
        compiled = "pytorch_compile" in self.sides
        head = "| preset | dtype | B×T | threads | gpt2cc ms/step | PyTorch eager ms/step | speed-up |"
        if compiled:
            head += " PyTorch compile ms/step | speed-up |"
        head += " gpt2cc tokens/s | peak RSS gpt2cc / PyTorch |"
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            line = (f"| {r['preset']} | {r['dtype']} | {r['B']}×{r['T']} | {r['threads']} | {r['gpt2cc']['ms']:.1f} | "
                    f"{r['pytorch']['ms']:.1f} | {r['speedup_vs_pytorch']:.2f}x |")
            if compiled:
                line += f" {r['pytorch_compile']['ms']:.1f} | {r['speedup_vs_pytorch_compile']:.2f}x |"
            line += (f" {r['gpt2cc']['tokens_per_s']:.0f} | {r['gpt2cc']['peak_rss_mib']:.0f} / "
                     f"{r['pytorch']['peak_rss_mib']:.0f} MiB |")
            lines.append(line)
        return "\n".join(lines) + "\n"


class Generate:
    """Greedy decoding with the KV cache: cases are presets; each run gives the prefill's ms and
    decode tokens/s (PyTorch: its loop's and generate()'s)."""

    def __init__(self, a):
        self.bench = os.path.join(a.build, "benchmarks", "generate", "bench_generate")
        self.python, self.repeats = a.python, a.repeats
        self.prompt_tokens, self.new_tokens, self.dtype = a.prompt_tokens, a.new_tokens, a.dtype
        self.sides = ["gpt2cc", "pytorch"]
        self.cases = [p.strip() for p in a.presets.split(",")]

    def label(self, case):
        return case

    def command(self, side, case, threads, json_path):
        common = ["--prompt-tokens", str(self.prompt_tokens), "--new-tokens", str(self.new_tokens), "--repeats",
                  str(self.repeats), "--threads", str(threads), "--dtype", self.dtype, "--json", json_path]
        if side == "gpt2cc":
            return [self.bench, "--presets", case, "--samples", "", "--skip-recompute"] + common
        return [self.python, os.path.join(PYTORCH_DIR, "gpt2_generate.py"), "--preset", case] + common

    def read(self, side, doc):
        if side == "gpt2cc":
            (r,) = doc  # bench_generate writes a list, one entry per preset
            return {"tokens_per_s": r["kv_tokens_per_s"], "prefill_ms": r["prefill_ms"]}
        return {"tokens_per_s": doc["loop_tokens_per_s"], "generate_tokens_per_s": doc["generate_tokens_per_s"],
                "prefill_ms": doc["prefill_ms"], "torch": doc["torch"], "transformers": doc["transformers"]}

    def row(self, case, threads, medians):
        row = {"preset": case, "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens,
               "threads": threads, "dtype": self.dtype, **medians}
        ours = row["gpt2cc"]["tokens_per_s"]
        row["speedup_vs_pytorch_loop"] = ours / row["pytorch"]["tokens_per_s"]
        row["speedup_vs_pytorch_generate"] = ours / row["pytorch"]["generate_tokens_per_s"]
        return row

    def table(self, rows):
        head = ("| preset | dtype | prompt → end | threads | gpt2cc tok/s | HF loop tok/s | speed-up | HF generate() tok/s "
                "| speed-up | prefill ms gpt2cc / HF | peak RSS gpt2cc / HF |")
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            g, t = r["gpt2cc"], r["pytorch"]
            lines.append(f"| {r['preset']} | {r['dtype']} | {r['prompt_tokens']} → "
                         f"{r['prompt_tokens'] + r['new_tokens']} | "
                         f"{r['threads']} | {g['tokens_per_s']:.1f} | {t['tokens_per_s']:.1f} | "
                         f"{r['speedup_vs_pytorch_loop']:.2f}x | {t['generate_tokens_per_s']:.1f} | "
                         f"{r['speedup_vs_pytorch_generate']:.2f}x | {g['prefill_ms']:.1f} / {t['prefill_ms']:.1f} | "
                         f"{g['peak_rss_mib']:.0f} / {t['peak_rss_mib']:.0f} MiB |")
        return "\n".join(lines) + "\n"


def measure(mode, threads_list, rounds, wait_policy="passive", log=print, pytorch_huge_pages=False):
    """Every case x thread count, `rounds` times, the sides alternating. Returns mode's rows: per
    side the median over the rounds of each number, the largest peak RSS and every round's runs.
    pytorch_huge_pages: PyTorch's CPU allocator asked for transparent huge pages
    (THP_MEM_ALLOC_ENABLE=1, off by default), as gpt2cc's CPU backend always asks for them."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in threads_list:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            env.pop("OMP_WAIT_POLICY", None)
            if wait_policy != "unset":
                env["OMP_WAIT_POLICY"] = wait_policy
            for case in mode.cases:
                runs = {side: [] for side in mode.sides}
                for r in range(rounds):
                    for side in mode.sides if r % 2 == 0 else mode.sides[::-1]:
                        path = os.path.join(tmp, f"{side}.json")
                        if os.path.exists(path):
                            os.remove(path)  # a run that wrote nothing must not read the last one's
                        torch_side = side != "gpt2cc"
                        side_env = dict(env)
                        side_env.pop("THP_MEM_ALLOC_ENABLE", None)  # a caller's own setting: not passed on
                        if torch_side and pytorch_huge_pages:
                            side_env["THP_MEM_ALLOC_ENABLE"] = "1"
                        _, _, rss = run_measured(mode.command(side, case, threads, path), side_env)
                        with open(path) as f:
                            result = dict(mode.read(side, json.load(f)), peak_rss_mib=rss, end_utc=utc_now())
                        if torch_side:
                            result["huge_pages"] = "THP_MEM_ALLOC_ENABLE=1" if pytorch_huge_pages else "off (default)"
                        runs[side].append(result)
                        numbers = ", ".join(f"{k} {v:.1f}" for k, v in result.items() if isinstance(v, float))
                        log(f"  {mode.label(case)}, {threads} thread(s), round {r + 1}: {side} {numbers}")
                medians = {}
                for side, results in runs.items():
                    medians[side] = {k: statistics.median(x[k] for x in results)
                                     for k, v in results[0].items() if isinstance(v, float)}
                    versions = ((k, v) for k, v in results[0].items() if isinstance(v, str) and k != "end_utc")
                    medians[side].update(versions)
                    medians[side]["peak_rss_mib"] = max(x["peak_rss_mib"] for x in results)
                    medians[side]["rounds"] = results
                rows.append(mode.row(case, threads, medians))
    return rows


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def source_commit():
    """The checkout's commit (-dirty when its files differ), or "unknown" outside a git checkout. The
    binaries under --build are whatever was last built there."""
    try:
        out = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


FAKE_GPT2CC = """import json, os, sys
a = sys.argv
threads = int(a[a.index("--threads") + 1])
out = a[a.index("--json") + 1]
assert "THP_MEM_ALLOC_ENABLE" not in os.environ
assert a[a.index("--dtype") + 1] == os.environ["FAKE_EXPECT_DTYPE"]
if "--configs" in a:
    json.dump([{"ms_per_step_median": 100.0 / threads, "loss_first": 10.8, "loss_last": 10.5}], open(out, "w"))
else:
    json.dump([{"kv_tokens_per_s": 300.0 * threads, "prefill_ms": 5.0}], open(out, "w"))
"""
FAKE_TORCH = """import json, os, sys
a = sys.argv
threads = int(a[a.index("--threads") + 1])
out = a[a.index("--json") + 1]
assert os.environ["OMP_NUM_THREADS"] == str(threads)
assert os.environ.get("THP_MEM_ALLOC_ENABLE") == os.environ.get("FAKE_EXPECT_THP"), "huge pages asked as told"
assert a[a.index("--dtype") + 1] == os.environ["FAKE_EXPECT_DTYPE"]
if os.path.basename(a[0]) == "gpt2_train.py":
    assert a[a.index("--device") + 1] == "cpu"
    assert os.environ["OMP_WAIT_POLICY"] == "passive"
    ms = (120.0 if "--no-compile" in a else 90.0) / threads
    json.dump({"ms_per_step_median": ms, "final_loss": 10.4, "torch": "fake", "fused_adamw": True}, open(out, "w"))
else:
    assert "OMP_WAIT_POLICY" not in os.environ
    json.dump({"loop_tokens_per_s": 100.0 * threads, "generate_tokens_per_s": 75.0 * threads, "prefill_ms": 20.0,
               "torch": "fake", "transformers": "fake"}, open(out, "w"))
"""


def self_test():
    """The plumbing on stand-ins for the four programs, which write JSON in the real ones' shape
    (their numbers from their arguments), through measure() and each mode's table."""
    global PYTORCH_DIR
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "benchmarks", "cpu"))
        os.makedirs(os.path.join(tmp, "benchmarks", "generate"))
        for bench in ("cpu/bench_train_step", "generate/bench_generate"):
            path = os.path.join(tmp, "benchmarks", bench)
            with open(path, "w") as f:
                f.write(f"#!{sys.executable}\n" + FAKE_GPT2CC)
            os.chmod(path, 0o755)
        for script in ("gpt2_train.py", "gpt2_generate.py"):
            with open(os.path.join(tmp, script), "w") as f:
                f.write(FAKE_TORCH)
        PYTORCH_DIR = tmp
        args = argparse.Namespace(build=tmp, python=sys.executable, warmup=1, steps=2, compile=True,
                                  configs="d2:4x64", repeats=2, prompt_tokens=64, new_tokens=32, presets="d4",
                                  dtype="fp32")
        os.environ["FAKE_EXPECT_DTYPE"] = "fp32"  # each side's --dtype, checked by the stand-ins
        order = []
        rows = measure(Train(args), [1, 2], 2, log=lambda line: order.append(line.split(": ")[1].split()[0]))
        assert order == ["gpt2cc", "pytorch", "pytorch_compile", "pytorch_compile", "pytorch", "gpt2cc"] * 2, order
        assert len(rows) == 2 and rows[1]["threads"] == 2, rows
        assert abs(rows[0]["speedup_vs_pytorch"] - 1.2) < 1e-9, rows[0]
        assert abs(rows[1]["speedup_vs_pytorch_compile"] - 0.9) < 1e-9, rows[1]
        assert rows[0]["gpt2cc"]["tokens_per_s"] == 4 * 64 / 0.1, rows[0]
        assert rows[0]["gpt2cc"]["peak_rss_mib"] > 0 and len(rows[0]["pytorch"]["rounds"]) == 2
        assert rows[0]["pytorch"]["torch"] == "fake", rows[0]["pytorch"]
        assert rows[0]["pytorch"]["adamw"] == "fused", rows[0]["pytorch"]
        assert "end_utc" not in rows[0]["pytorch"] and rows[0]["pytorch"]["rounds"][1]["end_utc"].endswith("Z")
        assert source_commit() != "", "a commit, or unknown"
        write_text_atomic(os.path.join(tmp, "table.md"), "x")
        assert os.stat(os.path.join(tmp, "table.md")).st_mode & 0o777 == 0o666 & ~current_umask(), "mode"
        text = Train(args).table(rows)
        assert "| d2 | fp32 | 4×64 | 2 | 50.0 | 60.0 | 1.20x | 45.0 | 0.90x | 5120 |" in text, text
        assert rows[0]["pytorch"]["huge_pages"] == "off (default)", rows[0]["pytorch"]
        args.dtype = os.environ["FAKE_EXPECT_DTYPE"] = "bf16"
        rows = measure(Train(args), [1], 1, log=lambda line: None)
        assert rows[0]["dtype"] == "bf16" and "| d2 | bf16 | 4×64 | 1 |" in Train(args).table(rows), rows[0]
        os.environ["OMP_WAIT_POLICY"] = "active"  # a caller's own setting: replaced, or removed for "unset"
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"  # likewise: passed to PyTorch only when asked for
        os.environ["FAKE_EXPECT_THP"] = "1"
        os.environ["FAKE_EXPECT_DTYPE"] = "bf16"
        rows = measure(Generate(args), [2], 3, "unset", log=lambda line: None, pytorch_huge_pages=True)
        assert rows[0]["pytorch"]["huge_pages"] == "THP_MEM_ALLOC_ENABLE=1", rows[0]["pytorch"]
        del os.environ["THP_MEM_ALLOC_ENABLE"], os.environ["FAKE_EXPECT_THP"], os.environ["FAKE_EXPECT_DTYPE"]
        assert rows[0]["speedup_vs_pytorch_loop"] == 3.0 and rows[0]["speedup_vs_pytorch_generate"] == 4.0, rows
        text = Generate(args).table(rows)
        assert "| d4 | bf16 | 64 → 96 | 2 | 600.0 | 200.0 | 3.00x | 150.0 | 4.00x | 5.0 / 20.0 |" in text, text
        for bad in ("d2", "d2:4", "d2:0x64", "d2:ax64"):
            try:
                parse_configs(bad)
                raise AssertionError(f"parse_configs accepted {bad!r}")
            except ValueError:
                pass
        try:
            run_measured([sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ))
            raise AssertionError("a failing run was not reported")
        except RuntimeError as e:
            assert "exit 3" in str(e)
    print("compare_pytorch.py self-test passed")
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="what", metavar="{train,generate}")
    parsers = {"train": sub.add_parser("train", help="the training step"),
               "generate": sub.add_parser("generate", help="greedy decoding with the KV cache")}
    for name, q in parsers.items():
        q.add_argument("--build", default=os.path.join(ROOT, "build"), help="gpt2cc build directory (default: build)")
        q.add_argument("--python", default=sys.executable, help="a Python with torch (default: this one)")
        q.add_argument("--threads", default="1,2", help="thread counts (default: 1,2)")
        q.add_argument("--rounds", type=int, default=3)
        q.add_argument("--json", help="write the rows to this JSON file")
        q.add_argument("--md", help="write the table to this Markdown file")
        q.add_argument("--omp-wait-policy", choices=["passive", "active", "unset"],
                       default="passive" if name == "train" else "unset",
                       help="OMP_WAIT_POLICY of both sides' runs (train: passive, as the other CPU step "
                            "figures; generate: unset, the OpenMP default, under which a decode step's many "
                            "short parallel regions do not each wake sleeping threads)")
        q.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                       help="fp32, or bf16 on both sides (train: mixed precision, fp32 master weights; "
                            "generate: the weights' dtype)")
        q.add_argument("--pytorch-huge-pages", action="store_true",
                       help="PyTorch's CPU allocator asks for transparent huge pages (THP_MEM_ALLOC_ENABLE=1; "
                            "off by default), as gpt2cc's CPU backend always does for 4 MiB and more")
    t = parsers["train"]
    t.add_argument("--configs", default="d2:4x64,d4:4x64,gpt2:1x64", help="preset:BxT list")
    t.add_argument("--warmup", type=int, default=1, help="untimed steps of each run")
    t.add_argument("--steps", type=int, default=5, help="timed steps of each run (their median is the run's)")
    t.add_argument("--compile", action="store_true", help="also PyTorch with torch.compile (slow to start)")
    g = parsers["generate"]
    g.add_argument("--presets", default="d4,gpt2")
    g.add_argument("--prompt-tokens", type=int, default=64)
    g.add_argument("--new-tokens", type=int, default=64)
    g.add_argument("--repeats", type=int, default=3, help="timed generations of each run (their median is the run's)")
    a = p.parse_args(argv)
    if a.self_test:
        return a, None
    if a.what is None:
        p.error("say what to compare: train or generate")
    q = parsers[a.what]
    try:
        mode = Train(a) if a.what == "train" else Generate(a)
    except ValueError as e:
        q.error(str(e))
    try:
        a.threads = [int(x) for x in a.threads.split(",")]
    except ValueError:
        q.error(f"--threads: '{a.threads}' is not a comma-separated list of whole numbers")
    counts = [a.rounds] + ([a.warmup, a.steps] if a.what == "train" else [a.repeats, a.prompt_tokens, a.new_tokens])
    if min(a.threads + counts) < 1:
        q.error("thread counts, --rounds and the step/token/repeat counts must be >= 1")
    if not os.access(mode.bench, os.X_OK):
        q.error(f"{mode.bench} not found: build it first (cmake --build {a.build} --target "
                f"{os.path.basename(mode.bench)})")
    if a.what == "generate":
        unknown = [c for c in mode.cases if c not in PRESETS]
        if unknown:
            q.error(f"--presets: unknown preset '{unknown[0]}' (known: {', '.join(PRESETS)})")
        # bench_generate validates and warms up on 4 new tokens: its context must hold those too.
        if a.prompt_tokens + max(a.new_tokens, 4) > 1024:
            q.error(f"--prompt-tokens {a.prompt_tokens} + --new-tokens {a.new_tokens} (at least 4: gpt2cc's "
                    "validation) exceed the presets' context of 1024")
    problem = output_flags_problem(a)
    if problem:
        q.error(problem)
    if not (os.path.isfile(a.python) and os.access(a.python, os.X_OK)) and shutil.which(a.python) is None:
        q.error(f"--python {a.python}: no such program")
    return a, mode


def main(argv=None):
    a, mode = parse_args(argv)
    if a.self_test:
        return self_test()
    modules = "torch" + (", transformers" if a.what == "generate" else "")
    check = subprocess.run([a.python, "-c", f"import {modules}; print(torch.__version__)"], capture_output=True,
                           text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"compare_pytorch.py: --python {a.python} cannot import {modules} ({last}); name one that can",
              file=sys.stderr)
        return 2  # the flag's value, as argparse's refusals
    info = cpu_machine()
    print(f"{info['cpu']}, {info['cpus']} CPUs, load average {info['load_average_at_start'][0]:.2f}; "
          f"torch {check.stdout.strip()}")
    started = utc_now()
    rows = measure(mode, a.threads, a.rounds, a.omp_wait_policy, pytorch_huge_pages=a.pytorch_huge_pages)
    text = mode.table(rows) + ("\nPyTorch's CPU allocator: transparent huge pages "
                               + ("asked for (THP_MEM_ALLOC_ENABLE=1)" if a.pytorch_huge_pages else "off (its default)")
                               + "; gpt2cc's: asked for from 4 MiB up.\n")
    print(text, end="")
    if a.json:
        settings = {k: v for k, v in vars(a).items() if k not in ("json", "md", "self_test", "build", "python")}
        write_json_atomic(a.json, {"benchmark": f"cpu_{a.what}_vs_pytorch", "source_commit": source_commit(),
                                   "started_utc": started, "finished_utc": utc_now(), "machine": info,
                                   "torch": check.stdout.strip(), "settings": settings, "rows": rows}, indent=1)
    if a.md:
        write_text_atomic(a.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
