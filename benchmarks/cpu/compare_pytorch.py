#!/usr/bin/env python3
"""gpt2cc's CPU training step side by side with PyTorch's on the same CPU, in the same run.

For each preset:BxT and thread count, both do the same step on one random batch, repeated: zero
the gradients, forward + cross-entropy + backward, clip the gradient norm to 1.0, AdamW, in fp32.
gpt2cc: build/benchmarks/cpu/bench_train_step (the trainer's CPU step). PyTorch:
benchmarks/pytorch/gpt2_train.py --device cpu --dtype fp32 (the same GPT-2, eager; --compile adds
a torch.compile column). Each run is a fresh process; within a round the two alternate, which goes
first switching from round to round, so a machine that slows down (other load, heat) slows both
alike. Reported per row: the median over the rounds of each run's median ms/step, tokens/s, and
each process's peak resident memory (the run's whole process: for PyTorch, its interpreter and
libraries too). speed-up = PyTorch ms / gpt2cc ms (above 1: gpt2cc is faster).

    python3 benchmarks/cpu/compare_pytorch.py --build build --python /path/to/venv/bin/python \\
        --configs d2:4x64,d4:4x64,gpt2:1x64 --threads 1,2 --rounds 3 \\
        --json benchmarks/results/cpu_vs_pytorch.json --md benchmarks/results/cpu_vs_pytorch.md

--python: an interpreter with torch (default: this one). --self-test checks the plumbing with
stand-in programs (no torch, no build needed).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir))
TORCH_SCRIPT = os.path.join(ROOT, "benchmarks", "pytorch", "gpt2_train.py")


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


class Runners:
    """How each side is run: the commands, and reading one run's result from its JSON file."""

    def __init__(self, bench, python, warmup, steps):
        self.bench, self.python, self.warmup, self.steps = bench, python, warmup, steps

    def gpt2cc(self, preset, b, t, threads, json_path):
        return [self.bench, "--configs", f"{preset}:{b}x{t}", "--threads", str(threads), "--warmup",
                str(self.warmup), "--steps", str(self.steps), "--json", json_path]

    def pytorch(self, preset, b, t, threads, json_path, compile_model):
        return [self.python, TORCH_SCRIPT, "--device", "cpu", "--dtype", "fp32", "--preset", preset, "-B", str(b),
                "-T", str(t), "--threads", str(threads), "--warmup", str(self.warmup), "--steps", str(self.steps),
                "--compile" if compile_model else "--no-compile", "--json", json_path]


def one_run(cmd, threads, json_path, read):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="passive")
    _, _, rss = run_measured(cmd, env)
    with open(json_path) as f:
        result = read(json.load(f))
    result["peak_rss_mib"] = rss
    return result


def read_gpt2cc(doc):
    (r,) = doc  # bench_train_step writes a list, one entry per configuration
    return {"ms": r["ms_per_step_median"], "loss_first": r["loss_first"], "loss_last": r["loss_last"]}


def read_pytorch(doc):
    return {"ms": doc["ms_per_step_median"], "loss_last": doc["final_loss"], "torch": doc["torch"]}


def measure(runners, configs, threads_list, rounds, compile_model, log=print):
    """Every configuration x thread count, `rounds` times, the sides alternating. Returns rows."""
    sides = ["gpt2cc", "pytorch"] + (["pytorch_compile"] if compile_model else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in threads_list:
            for preset, b, t in configs:
                runs = {side: [] for side in sides}
                for r in range(rounds):
                    order = sides if r % 2 == 0 else sides[::-1]
                    for side in order:
                        path = os.path.join(tmp, f"{side}.json")
                        if side == "gpt2cc":
                            result = one_run(runners.gpt2cc(preset, b, t, threads, path), threads, path, read_gpt2cc)
                        else:
                            cmd = runners.pytorch(preset, b, t, threads, path, side == "pytorch_compile")
                            result = one_run(cmd, threads, path, read_pytorch)
                        runs[side].append(result)
                        log(f"  {preset} {b}x{t}, {threads} thread(s), round {r + 1}: {side} "
                            f"{result['ms']:.1f} ms/step, {result['peak_rss_mib']:.0f} MiB")
                row = {"preset": preset, "B": b, "T": t, "threads": threads, "rounds": rounds}
                for side in sides:
                    ms = statistics.median(x["ms"] for x in runs[side])
                    row[side] = {"ms_per_step": ms, "tokens_per_s": b * t / (ms / 1e3),
                                 "peak_rss_mib": max(x["peak_rss_mib"] for x in runs[side]),
                                 "ms_per_round": [x["ms"] for x in runs[side]],
                                 "loss_last": runs[side][-1]["loss_last"]}
                    if "torch" in runs[side][0]:
                        row[side]["torch"] = runs[side][0]["torch"]
                for side in sides[1:]:
                    row[f"speedup_vs_{side}"] = row[side]["ms_per_step"] / row["gpt2cc"]["ms_per_step"]
                rows.append(row)
    return rows


def table(rows):
    compiled = any("pytorch_compile" in r for r in rows)
    head = "| preset | B×T | threads | gpt2cc ms/step | PyTorch eager ms/step | speed-up |"
    rule = "|---|---|---|---|---|---|"
    if compiled:
        head += " PyTorch compile ms/step | speed-up |"
        rule += "---|---|"
    head += " gpt2cc tokens/s | peak RSS gpt2cc / PyTorch |"
    rule += "---|---|"
    lines = [head, rule]
    for r in rows:
        line = (f"| {r['preset']} | {r['B']}×{r['T']} | {r['threads']} | {r['gpt2cc']['ms_per_step']:.1f} | "
                f"{r['pytorch']['ms_per_step']:.1f} | {r['speedup_vs_pytorch']:.2f}x |")
        if compiled:
            line += f" {r['pytorch_compile']['ms_per_step']:.1f} | {r['speedup_vs_pytorch_compile']:.2f}x |"
        line += (f" {r['gpt2cc']['tokens_per_s']:.0f} | {r['gpt2cc']['peak_rss_mib']:.0f} / "
                 f"{r['pytorch']['peak_rss_mib']:.0f} MiB |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def machine():
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}


def self_test():
    """The plumbing on stand-ins: a fake bench_train_step and a fake gpt2_train.py that write
    JSON in the real ones' shape (ms/step from their arguments), through measure() and table()."""
    global TORCH_SCRIPT
    with tempfile.TemporaryDirectory() as tmp:
        fake_bench = os.path.join(tmp, "bench_train_step")
        with open(fake_bench, "w") as f:
            f.write(f"""#!{sys.executable}
import json, sys
a = sys.argv
threads = int(a[a.index("--threads") + 1])
json.dump([{{"ms_per_step_median": 100.0 / threads, "loss_first": 10.8, "loss_last": 10.5}}],
          open(a[a.index("--json") + 1], "w"))
""")
        os.chmod(fake_bench, 0o755)
        fake_torch = os.path.join(tmp, "gpt2_train.py")
        with open(fake_torch, "w") as f:
            f.write("""import json, sys
a = sys.argv
assert a[a.index("--device") + 1] == "cpu" and a[a.index("--dtype") + 1] == "fp32"
threads = int(a[a.index("--threads") + 1])
ms = (120.0 if "--no-compile" in a else 90.0) / threads
json.dump({"ms_per_step_median": ms, "final_loss": 10.4, "torch": "fake"}, open(a[a.index("--json") + 1], "w"))
""")
        TORCH_SCRIPT = fake_torch
        order = []
        runners = Runners(fake_bench, sys.executable, 1, 2)
        rows = measure(runners, parse_configs("d2:4x64"), [1, 2], 2, True,
                       log=lambda line: order.append(line.split(": ")[-1].split()[0]))
        assert order == ["gpt2cc", "pytorch", "pytorch_compile", "pytorch_compile", "pytorch", "gpt2cc"] * 2, order
        assert len(rows) == 2 and rows[1]["threads"] == 2, rows
        assert abs(rows[0]["speedup_vs_pytorch"] - 1.2) < 1e-9, rows[0]
        assert abs(rows[1]["speedup_vs_pytorch_compile"] - 0.9) < 1e-9, rows[1]
        assert rows[0]["gpt2cc"]["tokens_per_s"] == 4 * 64 / 0.1, rows[0]
        assert rows[0]["gpt2cc"]["peak_rss_mib"] > 0 and rows[0]["pytorch"]["torch"] == "fake"
        text = table(rows)
        assert "| d2 | 4×64 | 2 | 50.0 | 60.0 | 1.20x | 45.0 | 0.90x |" in text, text
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"), help="gpt2cc build directory (default: build)")
    p.add_argument("--python", default=sys.executable, help="a Python with torch (default: this one)")
    p.add_argument("--configs", default="d2:4x64,d4:4x64,gpt2:1x64", help="preset:BxT list")
    p.add_argument("--threads", default="1,2", help="thread counts (default: 1,2)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each run")
    p.add_argument("--steps", type=int, default=5, help="timed steps of each run (their median is the run's)")
    p.add_argument("--compile", action="store_true", help="also PyTorch with torch.compile (slow to start)")
    p.add_argument("--json", help="write the rows to this JSON file")
    p.add_argument("--md", help="write the table to this Markdown file")
    p.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.self_test:
        return self_test()
    try:
        configs = parse_configs(a.configs)
        threads = [int(x) for x in a.threads.split(",")]
    except ValueError as e:
        p.error(str(e))
    if any(n < 1 for n in threads) or a.rounds < 1 or a.warmup < 1 or a.steps < 1:
        p.error("--threads entries, --rounds, --warmup and --steps must be >= 1")
    bench = os.path.join(a.build, "benchmarks", "cpu", "bench_train_step")
    if not os.access(bench, os.X_OK):
        p.error(f"{bench} not found: build it first (cmake --build {a.build} --target bench_train_step)")
    check = subprocess.run([a.python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["no message"])[-1]
        p.error(f"--python {a.python} cannot import torch ({last}); name one that can")
    info = machine()
    print(f"{info['cpu']}, {info['cpus']} CPUs, load average {info['load_average_at_start'][0]:.2f}; "
          f"torch {check.stdout.strip()}")
    rows = measure(Runners(bench, a.python, a.warmup, a.steps), configs, threads, a.rounds, a.compile)
    text = table(rows)
    print(text, end="")
    if a.json:
        write_atomic(a.json, json.dumps({"benchmark": "cpu_train_step_vs_pytorch", "machine": info,
                                         "torch": check.stdout.strip(), "warmup": a.warmup, "steps": a.steps,
                                         "rows": rows}, indent=1) + "\n")
    if a.md:
        write_atomic(a.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
