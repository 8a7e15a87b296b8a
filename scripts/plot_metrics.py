#!/usr/bin/env python3
"""Draw the training curves of one or several gpt2cc runs to a PNG.

Reads <run_dir>/metrics.jsonl (written by `train`: one JSON object per step with "step",
"tokens", "train_loss", "lr", and "val_loss" on evaluation steps) and draws train loss (thin)
and validation loss (markers) against steps or tokens, with the learning rate in a panel below.
Skipped steps (train_loss null or not finite) are gaps in the curve. A last line cut short (a run
killed while writing it) is left out with a warning; a bad line before it is an error.

    python3 scripts/plot_metrics.py runs/a runs/b -o curves.png
    python3 scripts/plot_metrics.py runs/a --x tokens --smooth 20 --title "d2 on Wikipedia"

Exit codes: 0 written, 1 unreadable metrics or no matplotlib, 2 bad arguments.
`--self-test` checks the reading and smoothing (and the drawing, where matplotlib is installed).
"""
import argparse
import json
import math
import os
import sys


def fail(message, code=1):
    print(f"plot_metrics: {message}", file=sys.stderr)
    sys.exit(code)


def read_metrics(run_dir, x_key="step"):
    """The records of a run that have the x field, in file order."""
    path = run_dir if run_dir.endswith(".jsonl") else os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        fail(f"{path} not found (give a run directory written by train)")
    with open(path) as f:
        lines = [(number, line.strip()) for number, line in enumerate(f, 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == len(lines) - 1:
                # train --resume tolerates this too: a run killed mid-write leaves its last line torn.
                print(f"plot_metrics: warning: {path}:{number}: the last line is not a JSON record ({e}): "
                      "left out (a run stopped while writing it)", file=sys.stderr)
                break
            fail(f"{path}:{number}: not a JSON record ({e})")
        records.append(record)
    without = [r for r in records if not isinstance(r.get(x_key), (int, float))]
    if without:
        print(f"plot_metrics: warning: {path}: {len(without)} record(s) without a numeric '{x_key}' left out",
              file=sys.stderr)
    records = [r for r in records if isinstance(r.get(x_key), (int, float))]
    if not records:
        fail(f"{path} has no records with '{x_key}' yet")
    return records


def finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def moving_average(values, window):
    """Mean of the last `window` finite values at each finite point; NaN (a gap) where the value
    itself is missing or not finite (a skipped step)."""
    out, recent = [], []
    for v in values:
        if finite(v):
            recent.append(v)
            recent = recent[-window:]
            out.append(sum(recent) / len(recent))
        else:
            out.append(float("nan"))
    return out


def output_path(path):
    """The file written: a name without an extension gets .png (what savefig would add unsaid)."""
    return path if os.path.splitext(path)[1] else path + ".png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run directories (or metrics.jsonl files)")
    parser.add_argument("-o", "--output", default="curves.png", help="PNG to write (default: curves.png)")
    parser.add_argument("--x", choices=["step", "tokens"], default="step", help="x axis (default: step)")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window for train loss (default: 1)")
    parser.add_argument("--title", default="", help="figure title")
    parser.add_argument("--labels", nargs="*", help="legend labels, one per run (default: directory names)")
    parser.add_argument("--self-test", action="store_true", help="check this script on synthetic runs, and exit")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.runs:
        parser.error("give at least one run directory")
    if args.smooth < 1:
        parser.error("--smooth must be >= 1")
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"{len(args.labels)} labels for {len(args.runs)} runs")
    output = output_path(args.output)
    folder = os.path.dirname(output) or "."
    if not os.path.isdir(folder):
        parser.error(f"-o {args.output}: no directory '{folder}'")
    runs = [read_metrics(run, args.x) for run in args.runs]  # every file checked before drawing

    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as e:
        fail(f"drawing needs matplotlib ({e}): pip install matplotlib, or Debian's python3-matplotlib")

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    extension = os.path.splitext(output)[1][1:].lower()
    if extension not in fig.canvas.get_supported_filetypes():
        parser.error(f"-o {args.output}: matplotlib cannot write .{extension} files")
    for i, (run, records) in enumerate(zip(args.runs, runs)):
        label = args.labels[i] if args.labels else os.path.basename(os.path.normpath(run))
        color = f"C{i}"
        x = [r[args.x] for r in records]
        train = moving_average([r.get("train_loss") for r in records], args.smooth)
        ax_loss.plot(x, train, color=color, linewidth=1, alpha=0.8, label=f"{label} train")
        val = [(r[args.x], r["val_loss"]) for r in records if finite(r.get("val_loss"))]
        if val:
            ax_loss.plot(*zip(*val), color=color, marker="o", linestyle="--", label=f"{label} val")
        ax_lr.plot(x, [r["lr"] if finite(r.get("lr")) else float("nan") for r in records], color=color, linewidth=1)
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    if args.title:
        ax_loss.set_title(args.title)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("tokens" if args.x == "tokens" else "step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(output, dpi=120)
    except OSError as e:
        fail(f"cannot write {output}: {e}")
    print(f"plot_metrics: wrote {output}")
    return 0


def self_test():
    import subprocess
    import tempfile

    failures = []

    def expect(cond, what, detail=""):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)
            if detail:
                print(detail)

    def run(*args, env=None):
        p = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                           env=dict(os.environ, **(env or {})))
        return p.returncode, p.stdout + p.stderr

    avg = moving_average([4.0, None, float("nan"), 2.0], 2)
    expect(avg[0] == 4.0 and math.isnan(avg[1]) and math.isnan(avg[2]) and avg[3] == 3.0,
           "skipped steps are gaps, not the previous value carried on", str(avg))
    with tempfile.TemporaryDirectory() as tmp:
        def write(name, lines):
            os.makedirs(os.path.join(tmp, name), exist_ok=True)
            with open(os.path.join(tmp, name, "metrics.jsonl"), "w") as f:
                f.write("\n".join(lines))
            return os.path.join(tmp, name)

        good = ['{"step": 1, "tokens": 256, "train_loss": 10.9, "lr": 0.001}',
                '{"step": 2, "tokens": 512, "train_loss": null, "lr": 0.002}',
                '{"step": 3, "tokens": 768, "train_loss": 10.1, "lr": 0.003, "val_loss": 10.2}']
        torn = write("torn", good + ['{"step": 4, "tokens": 10'])
        records = read_metrics(torn)
        expect([r["step"] for r in records] == [1, 2, 3], "a torn last line is left out")
        middle = write("middle", good[:1] + ['{"step": 2, "tok'] + good[2:])
        code, out = run(middle, "-o", os.path.join(tmp, "m.png"))
        expect(code == 1 and "middle/metrics.jsonl:2: not a JSON record" in out, "a bad middle line: exit 1", out)
        sparse = write("sparse", ['{"tokens": 1, "train_loss": 1.0}'] + [line.replace('"lr": 0.002', '"x": 0')
                                                                         for line in good])
        records = read_metrics(sparse)
        expect([r["step"] for r in records] == [1, 2, 3], "a record without 'step' is left out")
        code, out = run(torn, "-o", os.path.join(tmp, "nowhere", "x.png"))
        expect(code == 2 and "no directory" in out and "Traceback" not in out, "-o into a missing folder: exit 2", out)
        fake = os.path.join(tmp, "fake")
        os.makedirs(os.path.join(fake, "matplotlib"))
        with open(os.path.join(fake, "matplotlib", "__init__.py"), "w") as f:
            f.write("raise ImportError('stand-in: no matplotlib')\n")
        code, out = run(torn, "-o", os.path.join(tmp, "x.png"), env={"PYTHONPATH": fake})
        expect(code == 1 and "needs matplotlib" in out and "Traceback" not in out, "no matplotlib: exit 1", out)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("skip the drawing checks: no matplotlib here")
        else:
            code, out = run(torn, sparse, "-o", os.path.join(tmp, "curves"), "--smooth", "2")
            expect(code == 0 and f"wrote {os.path.join(tmp, 'curves.png')}" in out and
                   os.path.isfile(os.path.join(tmp, "curves.png")), "-o without an extension writes and names .png", out)
            code, out = run(torn, "-o", os.path.join(tmp, "x.nope"))
            expect(code == 2 and "cannot write .nope" in out, "-o with an unknown format: exit 2", out)
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
