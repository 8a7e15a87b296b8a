#!/usr/bin/env python3
"""Draw the training curves of one or several gpt2cc runs to a PNG.

Reads <run_dir>/metrics.jsonl (written by `train`: one JSON object per step with "step",
"tokens", "train_loss", "lr", and "val_loss" on evaluation steps) and draws train loss (thin)
and validation loss (markers) against steps or tokens, with the learning rate in a panel below.

    python3 scripts/plot_metrics.py runs/a runs/b -o curves.png
    python3 scripts/plot_metrics.py runs/a --x tokens --smooth 20 --title "d2 on Wikipedia"
"""
import argparse
import json
import math
import os
import sys


def read_metrics(run_dir):
    path = run_dir if run_dir.endswith(".jsonl") else os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"plot_metrics: {path} not found (give a run directory written by train)")
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"plot_metrics: {path}:{number}: not JSON ({e})")
    if not records:
        sys.exit(f"plot_metrics: {path} has no records yet")
    return records


def moving_average(values, window):
    """Mean of the last `window` finite values at each point (NaN steps, i.e. skipped ones, excluded)."""
    out, recent = [], []
    for v in values:
        if v is not None and math.isfinite(v):
            recent.append(v)
            recent = recent[-window:]
        out.append(sum(recent) / len(recent) if recent else float("nan"))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (or metrics.jsonl files)")
    parser.add_argument("-o", "--output", default="curves.png", help="PNG to write (default: curves.png)")
    parser.add_argument("--x", choices=["step", "tokens"], default="step", help="x axis (default: step)")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window for train loss (default: 1)")
    parser.add_argument("--title", default="", help="figure title")
    parser.add_argument("--labels", nargs="*", help="legend labels, one per run (default: directory names)")
    args = parser.parse_args()
    if args.smooth < 1:
        sys.exit("plot_metrics: --smooth must be >= 1")
    if args.labels and len(args.labels) != len(args.runs):
        sys.exit(f"plot_metrics: {len(args.labels)} labels for {len(args.runs)} runs")

    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, run in enumerate(args.runs):
        records = read_metrics(run)
        label = args.labels[i] if args.labels else os.path.basename(os.path.normpath(run))
        color = f"C{i}"
        x = [r[args.x] for r in records]
        train = moving_average([r.get("train_loss") for r in records], args.smooth)
        ax_loss.plot(x, train, color=color, linewidth=1, alpha=0.8, label=f"{label} train")
        val = [(r[args.x], r["val_loss"]) for r in records if r.get("val_loss") is not None]
        if val:
            ax_loss.plot(*zip(*val), color=color, marker="o", linestyle="--", label=f"{label} val")
        ax_lr.plot(x, [r["lr"] for r in records], color=color, linewidth=1)
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    if args.title:
        ax_loss.set_title(args.title)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("tokens" if args.x == "tokens" else "step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"plot_metrics: wrote {args.output}")


if __name__ == "__main__":
    main()
