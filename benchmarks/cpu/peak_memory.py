#!/usr/bin/env python3
"""Peak memory (RSS) of the commands a user runs, for one build or several side by side.

For each build, in order (each step reads what the one before it wrote):
  train_new      train a new --preset model for 2 steps of BxT (--batch), saving a checkpoint
  train_resume   train --resume that run to step 3 (loads the checkpoint with its moments, saves)
  eval_only      train --eval-only on that checkpoint over --eval-data (windows of --eval-batch)
  generate_fp32  generate 16 tokens from it with the KV cache (the checkpoint's weights only)
  generate_bf16  the same with --dtype bf16
Each command is a fresh process; its peak resident memory is the kernel's ru_maxrss for it
(os.wait4), its time the wall clock. Within a round the builds alternate, which goes first
switching from round to round. Reported: the median over the rounds of each command per build,
and whether the builds' outputs agree: the checkpoints byte for byte (each build writes its run
into the same folder, so the paths in the headers match), the evaluation's loss line, the
generated text.

    python3 benchmarks/cpu/peak_memory.py --build before=/tmp/old/build --build after=build \\
        --train-data /tmp/wp/train --eval-data /tmp/small/train \\
        --tokenizer ../shared/data/gpt2 --rounds 2 --json memory.json --md memory.md

--self-test checks the plumbing with stand-in programs (no build needed).
"""
import argparse
import filecmp
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
sys.path.insert(0, os.path.join(ROOT, "benchmarks", "pytorch"))
# The atomic writes the PyTorch scripts use (bench_common needs only the standard library).
from bench_common import cpu_machine, output_flags_problem, write_json_atomic, write_text_atomic  # noqa: E402

COMMANDS = ("train_new", "train_resume", "eval_only", "generate_fp32", "generate_bf16")


def parse_build(text):
    """'label=dir' (or 'dir', labelled by its name) -> (label, dir); ValueError naming a bad one."""
    label, sep, path = text.partition("=")
    if not sep:
        label, path = os.path.basename(os.path.normpath(text)), text
    for program in ("train", "generate"):
        if not os.access(os.path.join(path, program), os.X_OK):
            raise ValueError(f"--build {text}: no {program} program in {path} (build it: scripts/test.sh, or "
                             f"cmake --build {path} --target train generate)")
    return label, path


def parse_shape(text, flag):
    try:
        b, t = (int(x) for x in text.split("x"))
    except ValueError:
        raise ValueError(f"{flag}: '{text}' is not BxT (e.g. 1x64)") from None
    if b < 1 or t < 1:
        raise ValueError(f"{flag}: B and T must be >= 1, got '{text}'")
    return b, t


def commands(build, args, work):
    """The five commands for one build, as (name, argv, file whose bytes are compared or None)."""
    b, t = args.batch
    eb, et = args.eval_batch
    run = os.path.join(work, "run")
    ckpt = os.path.join(run, "checkpoints", "step_00000003.ckpt")
    threads = ["--threads", str(args.threads)]
    train, generate = os.path.join(build, "train"), os.path.join(build, "generate")
    gen = [generate, "--checkpoint", ckpt, "--prompt", "The history of", "--max-new-tokens", "16",
           "--tokenizer", args.tokenizer, "--seed", "5"] + threads
    return [
        ("train_new", [train, "--preset", args.preset, "--train-data", args.train_data, "--batch-size", str(b),
                       "--seq-len", str(t), "--steps", "2", "--run-dir", run] + threads, None),
        ("train_resume", [train, "--resume", run, "--steps", "3"] + threads, ckpt),
        ("eval_only", [train, "--eval-only", "--init-from", ckpt, "--val-data", args.eval_data, "--batch-size",
                       str(eb), "--seq-len", str(et)] + threads, None),
        ("generate_fp32", gen + ["--dtype", "fp32"], None),
        ("generate_bf16", gen + ["--dtype", "bf16"], None),
    ]


def run_one(argv, log):
    """Runs argv to the end: (peak RSS in MiB, wall seconds, stdout). RuntimeError when it fails,
    its exit code as `returncode`."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        failure = RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{stderr[-2000:]}")
        failure.returncode = proc.returncode
        raise failure
    log(f"  {os.path.basename(argv[0])} {argv[1]}: {usage.ru_maxrss / 1024:.1f} MiB, {seconds:.2f} s")
    return usage.ru_maxrss / 1024.0, seconds, stdout


def outputs_of(name, stdout):
    """What two builds must agree on in a command's output: the loss line, the generated text."""
    if name == "eval_only":
        return [line for line in stdout.splitlines() if line.startswith("loss:")]
    if name.startswith("generate"):
        return stdout
    return None


def measure(builds, args, work, log=print):
    """{label: {command: [(rss MiB, seconds), ...]}} over args.rounds, and the outputs compared."""
    rounds = {label: {name: [] for name in COMMANDS} for label, _ in builds}
    kept = {}  # (label, command) -> output of the last round, or the checkpoint's copy
    for r in range(args.rounds):
        order = builds if r % 2 == 0 else builds[::-1]
        for label, path in order:
            log(f"round {r + 1}, {label}")
            shutil.rmtree(os.path.join(work, "run"), ignore_errors=True)
            for name, argv, compared_file in commands(path, args, work):
                rss, seconds, stdout = run_one(argv, log)
                rounds[label][name].append((rss, seconds))
                kept[(label, name)] = outputs_of(name, stdout)
                if compared_file:
                    copy = os.path.join(work, f"{label}.{name}.ckpt")
                    shutil.copyfile(compared_file, copy)
                    kept[(label, name)] = copy
    agree = {}
    first = builds[0][0]
    for name in COMMANDS:
        values = [kept[(label, name)] for label, _ in builds]
        if values[0] is None:
            continue
        if name == "train_resume":
            agree["checkpoint"] = all(filecmp.cmp(values[0], v, shallow=False) for v in values[1:])
        else:
            agree[name] = all(v == kept[(first, name)] for v in values[1:])
    return rounds, agree


def summarise(builds, rounds):
    rows = []
    for name in COMMANDS:
        row = {"command": name}
        for label, _ in builds:
            samples = rounds[label][name]
            row[label] = {"peak_rss_mib": statistics.median(s[0] for s in samples),
                          "seconds": statistics.median(s[1] for s in samples),
                          "rounds": [{"peak_rss_mib": s[0], "seconds": s[1]} for s in samples]}
        rows.append(row)
    return rows


def table(builds, rows, agree):
    labels = [label for label, _ in builds]
    head = "| command | " + " | ".join(f"{label} peak RSS | {label} s" for label in labels)
    if len(labels) > 1:
        head += f" | RSS {labels[-1]} / {labels[0]}"
    head += " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        cells = [row["command"]]
        for label in labels:
            cells += [f"{row[label]['peak_rss_mib']:.0f} MiB", f"{row[label]['seconds']:.2f}"]
        if len(labels) > 1:
            cells.append(f"{row[labels[-1]]['peak_rss_mib'] / row[labels[0]]['peak_rss_mib']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if len(labels) > 1:
        lines.append("")
        lines.append("outputs the same in every build: " +
                     ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in agree.items()))
    return "\n".join(lines) + "\n"


FAKE_TRAIN = """import os, sys
a = sys.argv
def flag(name):
    return a[a.index(name) + 1]
grow = bytearray(int(os.environ["FAKE_MIB"]) << 20)  # touched: resident
for i in range(0, len(grow), 4096):
    grow[i] = 1
if "--eval-only" in a:
    print("loss: 4.2000")
    sys.exit(0)
run = flag("--run-dir") if "--run-dir" in a else flag("--resume")
steps = int(flag("--steps"))
os.makedirs(os.path.join(run, "checkpoints"), exist_ok=True)
with open(os.path.join(run, "checkpoints", "step_%08d.ckpt" % steps), "w") as f:
    f.write("checkpoint of %s at %d\\n" % (run, steps) + os.environ.get("FAKE_DIFFER", ""))
"""
FAKE_GENERATE = """import os, sys
a = sys.argv
assert os.path.exists(a[a.index("--checkpoint") + 1])
grow = bytearray(int(os.environ["FAKE_MIB"]) << 20)
for i in range(0, len(grow), 4096):
    grow[i] = 1
print("text in", a[a.index("--dtype") + 1])
"""


def self_test():
    """The plumbing on stand-in train and generate programs whose resident memory and outputs
    the test sets, per build, through the environment."""
    with tempfile.TemporaryDirectory() as tmp:
        builds = []
        for label, mib, differ in (("small", 20, ""), ("large", 80, "x")):
            path = os.path.join(tmp, label)
            os.makedirs(path)
            for program, text in (("train", FAKE_TRAIN), ("generate", FAKE_GENERATE)):
                with open(os.path.join(path, program), "w") as f:
                    # Each build's stand-ins hold their own amount of memory, the second's checkpoint differs.
                    f.write(f"#!{sys.executable}\nimport os\nos.environ['FAKE_MIB'] = '{mib}'\n"
                            f"os.environ['FAKE_DIFFER'] = '{differ}'\n" + text)
                os.chmod(os.path.join(path, program), 0o755)
            builds.append(parse_build(f"{label}={path}"))
        try:
            parse_build(os.path.join(tmp, "nowhere"))
            raise AssertionError("a build without programs was accepted")
        except ValueError as e:
            assert "no train program" in str(e), e
        for bad in ("1x", "0x64", "ax2"):
            try:
                parse_shape(bad, "--batch")
                raise AssertionError(f"'{bad}' was accepted")
            except ValueError as e:
                assert "--batch" in str(e), e
        args = argparse.Namespace(rounds=2, threads=1, preset="d2", batch=(1, 8), eval_batch=(2, 8), train_data="t",
                                  eval_data="e", tokenizer="tok")
        work = os.path.join(tmp, "work")
        os.makedirs(work)
        order = []
        rounds, agree = measure(builds, args, work, log=lambda line: order.append(line))
        firsts = [line.split(", ")[1] for line in order if line.startswith("round")]
        assert firsts == ["small", "large", "large", "small"], firsts
        rows = summarise(builds, rounds)
        for row in rows:
            small, large = row["small"]["peak_rss_mib"], row["large"]["peak_rss_mib"]
            assert large - small > 50, (row["command"], small, large)  # 60 MiB more, touched
            assert len(row["small"]["rounds"]) == 2
        assert agree == {"checkpoint": False, "eval_only": True, "generate_fp32": True, "generate_bf16": True}, agree
        text = table(builds, rows, agree)
        assert "| train_new |" in text and "checkpoint NO" in text and "RSS large / small" in text, text
        try:
            run_one([sys.executable, "-c", "import sys; sys.exit(3)"], log=lambda line: None)
            raise AssertionError("a failing command passed")
        except RuntimeError as e:
            assert "exited with 3" in str(e), e
    print("peak_memory.py self-test passed")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", action="append", default=[],
                   help="LABEL=DIR of a build (train and generate in it); repeat to compare builds")
    p.add_argument("--preset", default="gpt2", help="model preset of the new run (default gpt2)")
    p.add_argument("--batch", default="1x64", help="train's BxT (default 1x64)")
    p.add_argument("--eval-batch", default="4x64", help="--eval-only's BxT (default 4x64)")
    p.add_argument("--train-data", help="token shards to train on (prepare's train/)")
    p.add_argument("--eval-data", help="token shards --eval-only scores (all of them: keep it small)")
    p.add_argument("--tokenizer", help="the tokenizer directory generate uses (GPT-2's)")
    p.add_argument("--threads", type=int, default=2, help="--threads of every command (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every command per build (default 2)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--md", help="write the table here")
    p.add_argument("--self-test", action="store_true", help="check this script with stand-in programs")
    args = p.parse_args()
    if args.self_test:
        self_test()
        return 0
    try:
        if not args.build:
            raise ValueError("give at least one --build LABEL=DIR")
        builds = [parse_build(b) for b in args.build]
        if len({label for label, _ in builds}) != len(builds):
            raise ValueError("--build labels must differ")
        for flag in ("train_data", "eval_data", "tokenizer"):
            if not getattr(args, flag):
                raise ValueError(f"--{flag.replace('_', '-')} is required")
        if args.rounds < 1 or args.threads < 1:
            raise ValueError("--rounds and --threads must be >= 1")
        args.batch = parse_shape(args.batch, "--batch")
        args.eval_batch = parse_shape(args.eval_batch, "--eval-batch")
        problem = output_flags_problem(args)  # before the runs: a typo must not lose their measurements
        if problem:
            raise ValueError(problem)
    except ValueError as e:
        print(f"peak_memory.py: {e}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="gpt2cc_memory_") as work:
            start = cpu_machine()
            rounds, agree = measure(builds, args, work, log=lambda line: print(line, file=sys.stderr, flush=True))
    except RuntimeError as e:  # a command failed: its message, and its code where it refused its input (2)
        print(f"peak_memory.py: {e}", file=sys.stderr)
        return 2 if getattr(e, "returncode", 1) == 2 else 1
    rows = summarise(builds, rounds)
    text = table(builds, rows, agree)
    print(text, end="")
    result = {"machine": start, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "builds": [{"label": label, "dir": os.path.abspath(path)} for label, path in builds],
              "settings": {"preset": args.preset, "batch": list(args.batch), "eval_batch": list(args.eval_batch),
                           "threads": args.threads, "rounds": args.rounds, "train_data": args.train_data,
                           "eval_data": args.eval_data},
              "rows": rows, "outputs_agree": agree}
    if args.json:
        write_json_atomic(args.json, result)
    if args.md:
        write_text_atomic(args.md, text)
    return 0 if all(agree.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
