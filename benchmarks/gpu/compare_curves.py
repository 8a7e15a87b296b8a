#!/usr/bin/env python3
"""Compares the loss curves of two training runs (metrics.jsonl written by `train`), e.g. the same
model trained in fp32 and in bf16 (issue 8: "loss curves within a few percent of each other").

Train losses are noisy per step, so they are compared as means over consecutive windows of
--window steps; validation losses are compared at every step both runs evaluated. The relative
difference of a point is |b - a| / a. Exit code 0 when the largest difference is within
--tolerance, 1 when not, 2 on bad input.

    compare_curves.py runs/fp32/metrics.jsonl runs/bf16/metrics.jsonl --names fp32 bf16 \
        --json parity.json --plot parity.png
    compare_curves.py --self-test
"""
import argparse
import json
import math
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "pytorch"))
# The atomic writes of the PyTorch scripts (bench_common needs only the standard library): mode
# 0666 less the umask, as any file the user writes, not mkstemp's 0600.
from bench_common import current_umask, write_json_atomic  # noqa: E402


def read_metrics(path):
    """(train {step: loss}, val {step: loss}) of one metrics.jsonl; exits 2 naming a bad file."""
    train, val = {}, {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    step = int(record["step"])
                except (ValueError, KeyError, TypeError) as e:
                    sys.exit(f"compare_curves: {path}:{number}: not a metrics record ({e})")
                loss = record.get("train_loss")
                if loss is not None and not record.get("skipped", False):
                    train[step] = float(loss)
                if record.get("val_loss") is not None:
                    val[step] = float(record["val_loss"])
    except OSError as e:
        print(f"compare_curves: cannot read {path}: {e.strerror}", file=sys.stderr)
        sys.exit(2)
    if not train:
        print(f"compare_curves: {path} holds no train losses", file=sys.stderr)
        sys.exit(2)
    return train, val


def window_means(train, steps, window):
    """Mean train loss over each full window of `window` consecutive common steps."""
    out = []
    for start in range(0, len(steps) - window + 1, window):
        chunk = steps[start:start + window]
        out.append((chunk[-1], sum(train[s] for s in chunk) / window))
    return out


def compare(a, b, window):
    """The comparison of runs a and b: per-window train means, val points, max relative diffs."""
    (train_a, val_a), (train_b, val_b) = a, b
    steps = sorted(set(train_a) & set(train_b))
    if len(steps) < window:
        raise ValueError(f"the runs share {len(steps)} train steps, fewer than one window of {window}")
    means_a = dict(window_means(train_a, steps, window))
    means_b = dict(window_means(train_b, steps, window))
    train_points = [{"step": s, "a": means_a[s], "b": means_b[s], "rel": abs(means_b[s] - means_a[s]) / means_a[s]}
                    for s in sorted(means_a)]
    val_points = [{"step": s, "a": val_a[s], "b": val_b[s], "rel": abs(val_b[s] - val_a[s]) / val_a[s]}
                  for s in sorted(set(val_a) & set(val_b))]
    worst = lambda points: max((p["rel"] for p in points), default=float("nan"))
    return {"window": window, "common_steps": len(steps), "train": train_points, "val": val_points,
            "max_rel_train": worst(train_points), "max_rel_val": worst(val_points)}


def report(result, names, tolerance):
    a, b = names
    lines = [f"| step | {a} train (mean of {result['window']}) | {b} | rel. diff |", "|---:|---:|---:|---:|"]
    for p in result["train"]:
        lines.append(f"| {p['step']} | {p['a']:.4f} | {p['b']:.4f} | {100 * p['rel']:.2f}% |")
    if result["val"]:
        lines += ["", f"| step | {a} val | {b} val | rel. diff |", "|---:|---:|---:|---:|"]
        for p in result["val"]:
            lines.append(f"| {p['step']} | {p['a']:.4f} | {p['b']:.4f} | {100 * p['rel']:.2f}% |")
    worst = max(result["max_rel_train"], result["max_rel_val"] if result["val"] else 0.0)
    verdict = "within" if worst <= tolerance else "NOT within"
    lines += ["", f"largest difference {100 * worst:.2f}% ({verdict} the {100 * tolerance:.1f}% tolerance) over "
                  f"{result['common_steps']} common steps"]
    return "\n".join(lines), worst <= tolerance


def plot(a, b, names, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("compare_curves: matplotlib is not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (train, val), name in zip((a, b), names):
        steps = sorted(train)
        ax.plot(steps, [train[s] for s in steps], lw=0.8, alpha=0.7, label=f"{name} train")
        if val:
            vs = sorted(val)
            ax.plot(vs, [val[s] for s in vs], "o-", label=f"{name} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def self_test():
    """Synthetic runs: a copy within 1% passes, a run 10% off fails, a missing overlap is an error."""
    base = [{"step": s, "train_loss": 5.0 - 0.003 * s + 0.05 * math.sin(s)} for s in range(1, 201)]
    for r in base:
        if r["step"] % 50 == 0:
            r["val_loss"] = r["train_loss"] + 0.1
    close = [dict(r, train_loss=r["train_loss"] * 1.005, **({"val_loss": r["val_loss"] * 0.995} if "val_loss" in r
                                                          else {})) for r in base]
    far = [dict(r, train_loss=r["train_loss"] * 1.10) for r in base]
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, records in (("base", base), ("close", close), ("far", far)):
            paths[name] = os.path.join(d, f"{name}.jsonl")
            with open(paths[name], "w") as f:
                f.write("\n".join(json.dumps(r) for r in records) + "\n")
        a = read_metrics(paths["base"])
        res = compare(a, read_metrics(paths["close"]), 20)
        assert len(res["train"]) == 10 and len(res["val"]) == 4, res
        assert abs(res["max_rel_train"] - 0.005) < 1e-9 and abs(res["max_rel_val"] - 0.005) < 1e-9, res
        assert report(res, ("a", "b"), 0.03)[1]
        res = compare(a, read_metrics(paths["far"]), 20)
        assert abs(res["max_rel_train"] - 0.10) < 1e-9 and not report(res, ("a", "b"), 0.03)[1], res
        try:
            compare(a, ({1: 1.0}, {}), 20)
            raise AssertionError("a run without a full window must be an error")
        except ValueError:
            pass
        out = os.path.join(d, "out.json")
        write_json_atomic(out, res)
        assert json.load(open(out))["window"] == 20
        assert os.stat(out).st_mode & 0o777 == 0o666 & ~current_umask(), "the JSON's mode is the umask's"
    print("compare_curves self-test: ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="two metrics.jsonl files: the reference run, then the other")
    parser.add_argument("--names", nargs=2, default=["fp32", "bf16"], help="labels of the two runs")
    parser.add_argument("--window", type=int, default=25, help="train steps averaged per point (default 25)")
    parser.add_argument("--tolerance", type=float, default=0.03, help="largest relative difference (default 0.03)")
    parser.add_argument("--json", help="write the comparison here (atomically)")
    parser.add_argument("--markdown", help="write the tables here")
    parser.add_argument("--plot", help="write a PNG of both curves here (needs matplotlib)")
    parser.add_argument("--title", default="loss curves", help="plot title")
    parser.add_argument("--self-test", action="store_true", help="check this script on synthetic runs")
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return 0
    if len(args.runs) != 2:
        parser.error("give two metrics.jsonl files (or --self-test)")
    if args.window < 1 or not (args.tolerance > 0):
        parser.error("--window must be >= 1 and --tolerance > 0")
    a, b = read_metrics(args.runs[0]), read_metrics(args.runs[1])
    try:
        result = compare(a, b, args.window)
    except ValueError as e:
        print(f"compare_curves: {e}", file=sys.stderr)
        return 2
    text, ok = report(result, args.names, args.tolerance)
    print(text)
    result.update({"names": args.names, "tolerance": args.tolerance, "within_tolerance": ok,
                   "runs": [os.path.abspath(p) for p in args.runs]})
    if args.json:
        write_json_atomic(args.json, result)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.plot:
        plot(a, b, args.names, args.plot, args.title)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
