#!/usr/bin/env python3
"""Merges the JSON that scripts/bench_gpu.sh writes into one markdown report (gpt2cc vs PyTorch).

Reads from the results directory (all optional; a missing file gives n/a, never a number):
  env.txt                      key: value lines (gpu, driver, cuda, torch, commit, sources, date)
  env-earlier.txt              earlier calls' env.txt on another GPU, commit or sources (blocks)
  status.tsv                   stage, exit code, seconds (one line per stage run, every call's)
  train_bf16.json, train_fp32.json         benchmarks/gpu/bench_train_gpu --json
  pt_train_bf16.json, pt_train_fp32.json   benchmarks/pytorch/gpt2_train.py --json
  attention.json               benchmarks/kernels/bench_attention --json (gpt2cc flash, bf16)
  pt_attention.json            benchmarks/pytorch/attention_sdpa.py --json (SDPA flash, bf16)
  kernels.json                 benchmarks/kernels/bench_kernels --json
  profile.json                 benchmarks/gpu/profile_step.py --json (one step's kernel time by category)
  designs_*.json               bench_train_gpu --json with GPT2CC_KERNELS set (stage designs)
Each result JSON's "device" is compared: results of several GPUs are said to be so.
Writes <dir>/report.md (atomically) and prints it. Targets (issue 8): training tokens/s >= 1.2x
PyTorch, bf16 MFU >= 50%, attention forward+backward within 1.3x of SDPA's time.
  report.py DIR          report.py --self-test   (synthetic inputs; needs no GPU)
"""
import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "pytorch"))
# The atomic writes of the PyTorch scripts (bench_common needs only the standard library): mode
# 0666 less the umask, as any file the user writes, not mkstemp's 0600.
from bench_common import current_umask, write_text_atomic  # noqa: E402

TRAIN_RATIO_TARGET = 1.2
MFU_TARGET = 0.50
ATTENTION_RATIO_TARGET = 1.3


def load_json(directory, name):
    """The JSON object in directory/name, or None (with a warning) where it is absent, unreadable,
    not JSON or not an object: a stage cut short leaves any of these."""
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        print(f"report.py: warning: cannot read {path}: {e}", file=sys.stderr)
        return None
    if not isinstance(value, dict):
        print(f"report.py: warning: {path} holds a JSON {type(value).__name__}, not an object", file=sys.stderr)
        return None
    return value


def read_lines(directory, name):
    """The lines of a text file the stages write (env.txt, status.tsv), undecodable bytes replaced."""
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


def parse_env(lines):
    env = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            env[key.strip()] = value.strip()
    return env


def load_env(directory):
    return parse_env(read_lines(directory, "env.txt"))


def load_earlier_envs(directory):
    """env-earlier.txt's blocks (separated by empty lines), each as load_env's dict: the earlier
    calls that ran on another GPU, commit or sources (scripts/bench_gpu.sh keeps them there)."""
    blocks, block = [], []
    for line in read_lines(directory, "env-earlier.txt") + [""]:
        if line.strip():
            block.append(line)
        elif block:
            blocks.append(parse_env(block))
            block = []
    return blocks


def load_status(directory):
    """status.tsv's rows as (stage, exit code, seconds); a line of another shape is kept whole as
    the stage, so that the table still shows it."""
    rows = []
    for line in read_lines(directory, "status.tsv"):
        parts = line.split("\t")
        if len(parts) == 3:
            rows.append(parts)
        elif line.strip():
            rows.append([line.replace("\t", " "), "?", "?"])
    return rows


def last_status(directory):
    """The last status.tsv line of each stage, as {stage: exit code} in the order of those lines.
    The results of several calls share the folder: a stage that ran in one call and was skipped
    (or failed) in the next has two lines, and only the last says what its files are now."""
    last = {}
    for stage, rc, _ in load_status(directory):
        last.pop(stage, None)
        last[stage] = rc
    return last


def result_devices(directory):
    """{device: [file names]} of the results directory's JSON files that name a "device" (every
    benchmark's does), in file-name order; unreadable files are skipped without a warning (the
    sections that read them warn)."""
    devices = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, ValueError):
            continue
        device = value.get("device") if isinstance(value, dict) else None
        if isinstance(device, str) and device:
            devices.setdefault(device, []).append(name)
    return devices


def real(x):
    """x as a float when it is a finite number (not a bool), else None: what the tables may print."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def num(x, fmt="{:.0f}"):
    x = real(x)
    return "n/a" if x is None else fmt.format(x)


def pct(x):
    x = real(x)
    return "n/a" if x is None else f"{100 * x:.1f}%"


def mib(x):
    x = real(x)
    return "n/a" if x is None else f"{x / 2**20:,.0f} MiB"


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def pair_devices(ours, theirs):
    """The devices a gpt2cc result and its PyTorch twin name, and whether they differ (results
    of several calls merged: then no ratio of the two gets a verdict)."""
    devices = [r.get("device") for r in (ours, theirs) if r and r.get("device")]
    return devices, len(set(devices)) > 1


def ratio_verdict(ratio, met, other_devices):
    """A ratio's cell: n/a, or the ratio with its verdict (`met`: against the target), or none
    across two devices."""
    if ratio is None:
        return "n/a"
    if other_devices:
        return f"{ratio:.2f}x (different devices: no verdict)"
    return f"{ratio:.2f}x ({verdict(met)})"


def train_section(directory):
    lines = ["## Training step: GPT-2 124M, gpt2cc CUDA backend vs PyTorch", "",
             "One step = zero_grad, forward + backward, global-norm clip 1.0, AdamW. tokens/s = B·T / median "
             "step time. MFU = tokens/s · FLOPs per token / peak (FLOPs per token = 6·N + 6·L·C·T, N = parameters "
             "without the padded vocabulary rows; peak from benchmarks/gpu/peaks.json: dense bf16 tensor cores for "
             "bf16, plain fp32 for fp32). gpt2cc memory = device memory in use at the peak minus before the backend "
             "existed (cudaMemGetInfo; CUDA context excluded), PyTorch memory = torch.cuda.max_memory_allocated "
             "(its allocator's live tensors; cache and context excluded): close but not identical measures.", "",
             f"| dtype | gpt2cc B×T | gpt2cc tokens/s | PyTorch B×T | PyTorch tokens/s | ratio (target ≥ "
             f"{TRAIN_RATIO_TARGET}x) | gpt2cc MFU (target ≥ {MFU_TARGET:.0%} bf16) | PyTorch MFU | "
             "gpt2cc peak mem | PyTorch peak mem |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for dtype in ("bf16", "fp32"):
        ours = load_json(directory, f"train_{dtype}.json")
        theirs = load_json(directory, f"pt_train_{dtype}.json")
        if ours is None and theirs is None:
            continue
        ratio = None
        if ours and theirs and real(ours.get("tokens_per_s")) and real(theirs.get("tokens_per_s")):
            ratio = real(ours["tokens_per_s"] / theirs["tokens_per_s"])
        mfu = real(ours.get("mfu")) if ours else None
        devices, other_devices = pair_devices(ours, theirs)
        ratio_text = ratio_verdict(ratio, ratio is not None and ratio >= TRAIN_RATIO_TARGET, other_devices)
        if dtype == "bf16":
            mfu_text = pct(mfu) + ("" if mfu is None else f" ({verdict(mfu >= MFU_TARGET)})")
        else:
            mfu_text = pct(mfu)
        shape = lambda r: f"{r.get('B', '?')}×{r.get('T', '?')}" if r else "n/a"
        lines.append(f"| {dtype} | {shape(ours)} | {num(ours.get('tokens_per_s') if ours else None)} | {shape(theirs)} "
                     f"| {num(theirs.get('tokens_per_s') if theirs else None)} | {ratio_text} | {mfu_text} "
                     f"| {pct(theirs.get('mfu') if theirs else None)} "
                     f"| {mib(ours.get('peak_memory_bytes') if ours else None)} "
                     f"| {mib(theirs.get('peak_memory_bytes') if theirs else None)} |")
        if other_devices:
            notes.append(f"{dtype}: the two ran on different devices ({devices[0]} vs {devices[1]}): the ratio "
                         "compares two GPUs as much as the two programs.")
        if ours and theirs:
            if ours.get("B") != theirs.get("B") or ours.get("T") != theirs.get("T"):
                notes.append(f"{dtype}: the two ran different shapes ({shape(ours)} vs {shape(theirs)}); "
                             "tokens/s is each one's own throughput.")
            if ours.get("flops_per_token") != theirs.get("flops_per_token"):
                notes.append(f"{dtype}: FLOPs per token differ ({ours.get('flops_per_token')} vs "
                             f"{theirs.get('flops_per_token')}): MFU figures are not directly comparable.")
        if ours:
            notes.append(f"{dtype} gpt2cc: {ours.get('backend', '?')}, CUDA graphs "
                         f"{'on' if ours.get('cuda_graphs') else 'off'}, recompute-gelu "
                         f"{'on' if ours.get('recompute_gelu') else 'off'}, ms/step median "
                         f"{num(ours.get('ms_per_step_median'), '{:.2f}')} mean "
                         f"{num(ours.get('ms_per_step_mean'), '{:.2f}')}, loss {num(ours.get('loss_first'), '{:.3f}')} "
                         f"-> {num(ours.get('loss_last'), '{:.3f}')}.")
        if theirs:
            notes.append(f"{dtype} PyTorch: torch {theirs.get('torch', '?')}, compile "
                         f"{'on' if theirs.get('compile') else 'off'}, ms/step median "
                         f"{num(theirs.get('ms_per_step_median'), '{:.2f}')}, final loss "
                         f"{num(theirs.get('final_loss'), '{:.3f}')}.")
    if len(lines) == 6:
        lines.append("| (no training results) | | | | | | | | | |")
    return lines + [""] + [f"- {n}" for n in notes] + [""]


def attention_section(directory):
    ours = load_json(directory, "attention.json")
    theirs = load_json(directory, "pt_attention.json")
    peak = (load_json(directory, "kernels.json") or {}).get("peak_bf16_dense_tflops")
    peak_text = f"{peak} TFLOP/s, benchmarks/gpu/peaks.json" if peak else "unknown: no kernels.json peak"
    lines = ["## Causal attention forward + backward (bf16): gpt2cc flash vs PyTorch SDPA (flash backend)", "",
             f"Median ms per call. ratio = gpt2cc time / SDPA time (target ≤ {ATTENTION_RATIO_TARGET}x: within "
             f"{ATTENTION_RATIO_TARGET}x of SDPA). gpt2cc's tiles: fwd+bwd ms with 64 and 128 rows a CTA forced, "
             "and the one its launchers take by themselves (auto, used in the other columns). gpt2cc's backward "
             "designs: bwd ms of the split one (7 products per tile pair) and the fused one (5, dQ summed in order "
             "between CTAs; scratch MiB of each after the times), and the one taken by default (auto). Roofline: "
             "fwd+bwd TFLOP/s of each (the same causal FLOP count for both) and its fraction of the dense bf16 "
             f"tensor-core peak ({peak_text}).", "",
             "| B | NH | T | HS | gpt2cc fwd ms | SDPA fwd ms | gpt2cc fwd+bwd ms | SDPA fwd+bwd ms | fwd+bwd ratio "
             "| fwd+bwd TFLOP/s gpt2cc / SDPA (of peak) | gpt2cc tiles 64 / 128 (auto) "
             "| gpt2cc bwd split / fused (auto) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    # Two GPUs (results of several calls merged): no verdict, and the peak is only the kernels' GPU's.
    devices, other_devices = pair_devices(ours, theirs)
    key = lambda r: (r["B"], r["NH"], r["T"], r["HS"])
    ours_rows = {key(r): r for r in (ours or {}).get("results", [])}
    theirs_rows = {key(r): r for r in (theirs or {}).get("results", [])}
    for k in sorted(set(ours_rows) | set(theirs_rows)):
        o, t = ours_rows.get(k), theirs_rows.get(k)
        o_valid = o is not None and o.get("valid", True) and "fwd_bwd_ms" in o
        ratio = o["fwd_bwd_ms"] / t["fwd_bwd_ms"] if o_valid and t else None
        ratio_text = ratio_verdict(ratio, ratio is not None and ratio <= ATTENTION_RATIO_TARGET, other_devices)
        o_state = "n/a" if o is None else ("not run: does not fit the device" if o.get("not_run") else "INVALID")
        o_fwd = num(o.get("fwd_ms"), "{:.3f}") if o_valid else o_state
        o_fb = num(o.get("fwd_bwd_ms"), "{:.3f}") if o_valid else o_state
        tiles = (f"{num(o.get('fwd_bwd_ms_rows64'), '{:.3f}')} / {num(o.get('fwd_bwd_ms_rows128'), '{:.3f}')} "
                 f"({o.get('tile_rows_auto', 'n/a')})") if o_valid else "n/a"
        o_tf = o.get("fwd_bwd_tflops") if o_valid else None
        t_tf = t.get("fwd_bwd_tflops") if t else None
        of_peak = lambda tf: "n/a" if tf is None or not peak else pct(tf / peak)
        roofline = (f"{num(o_tf, '{:.1f}')} / {num(t_tf, '{:.1f}')} ({of_peak(o_tf)} / {of_peak(t_tf)})"
                    if o_tf is not None or t_tf is not None else "n/a")
        mib = lambda b: num(None if b is None else b / 2**20, "{:.0f}")
        designs = (f"{num(o.get('bwd_ms_split'), '{:.3f}')} / {num(o.get('bwd_ms_fused'), '{:.3f}')} "
                   f"({o.get('bwd_design_auto', 'n/a')}); {mib(o.get('bwd_scratch_bytes_split'))} / "
                   f"{mib(o.get('bwd_scratch_bytes_fused'))} MiB") if o_valid else "n/a"
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {o_fwd} | {num(t and t.get('fwd_ms'), '{:.3f}')} "
                     f"| {o_fb} | {num(t and t.get('fwd_bwd_ms'), '{:.3f}')} | {ratio_text} | {roofline} | {tiles} "
                     f"| {designs} |")
    if not ours_rows and not theirs_rows:
        lines.append("| (no attention results) | | | | | | | | | | | |")
    lines.append("")
    if other_devices:
        lines += [f"gpt2cc's attention ran on {devices[0]}, PyTorch's on {devices[1]}: the ratios compare two GPUs as "
                  "much as the two kernels.", ""]
    accuracy = (theirs or {}).get("fixture_accuracy")
    if accuracy:
        lines += ["Accuracy on tests/fixtures/sdpa.json: relative L2 error against SDPA in float64 of PyTorch's SDPA "
                  "on this GPU (flash backend, bf16), and in brackets of PyTorch's bf16 SDPA on the CPU, to which "
                  "gpt2cc's `[pytorch]` tests hold its bf16 attention kernels on this GPU (test stage; bar in "
                  "tests/common/sdpa_fixture.hpp).", "",
                  "| case | B | T | NH | HS | out | dq | dk | dv |", "|---|---|---|---|---|---|---|---|---|"]
        for r in accuracy:
            cells = " | ".join(f"{num(r.get(p), '{:.2e}')} ({num(r.get('cpu_bf16', {}).get(p), '{:.2e}')})"
                               for p in ("out", "dq", "dk", "dv"))
            lines.append(f"| {r.get('case')} | {r.get('B')} | {r.get('T')} | {r.get('NH')} | {r.get('HS')} | {cells} |")
        lines.append("")
    return lines


def kernels_section(directory):
    k = load_json(directory, "kernels.json")
    lines = ["## Kernels: fraction of the machine's ceiling (bench_kernels)", ""]
    if k is None:
        return lines + ["(no kernel results)", ""]
    lines += [f"Ceilings: device-to-device copy {k['copy_bandwidth_gbps']:.0f} GB/s (measured, read + write), "
              f"cuBLAS sgemm {k['sgemm_tflops']:.1f} TFLOP/s (measured, TF32 off); peaks.json entry "
              f"{k.get('peaks_entry') or 'none'}: bf16 dense {num(k.get('peak_bf16_dense_tflops'), '{}')} TFLOP/s, "
              f"fp32 {num(k.get('peak_fp32_tflops'), '{}')} TFLOP/s, memory {num(k.get('datasheet_memory_gbps'), '{}')} "
              "GB/s (datasheet). Memory-bound kernels: achieved GB/s / measured copy bandwidth; matmul and "
              "attention: achieved TFLOP/s / datasheet peak of their dtype.", "",
              f"B={k['B']} T={k['T']}, median of {k['reps']}.", "",
              "| kernel | dtype | shape | ms | rate | roofline |", "|---|---|---|---|---|---|"]
    for r in k.get("kernels", []):
        if not r.get("valid"):
            # An infinite or NaN error is written as JSON null by nlohmann::json.
            err = "not finite" if r.get("rel_error") is None else f"{r['rel_error']:.2e}"
            lines.append(f"| {r['kernel']} | {r['dtype']} | {r['shape']} | INVALID (rel. error {err}) | | |")
            continue
        rate = f"{r['tflops']:.1f} TFLOP/s" if "tflops" in r else f"{r['gbps']:.0f} GB/s"
        lines.append(f"| {r['kernel']} | {r['dtype']} | {r['shape']} | {r['ms']:.4f} | {rate} "
                     f"| {pct(r.get('roofline_fraction'))} |")
    return lines + [""] + design_pairs(k.get("kernels", []))


# bench_kernels' rows of one layer's two designs: the automatic one's row, the other design's.
KERNEL_DESIGN_PAIRS = [("fused_classifier", "fused_classifier_streamed"),
                       ("layernorm_backward", "layernorm_backward_twopass"),
                       ("matmul_backward", "matmul_backward_bgradb"),
                       ("matmul_forward", "matmul_forward_align16"),
                       ("matmul_backward", "matmul_backward_align16"),
                       ("matmul_backward", "matmul_backward_splitk_any"),
                       ("matmul_backward", "matmul_backward_ws256"),
                       ("matmul_backward", "matmul_backward_fp32_dweight"),
                       ("matmul_forward_gelu", "matmul_forward_gelu_separate"),
                       ("matmul_backward_gelu", "matmul_backward_gelu_separate")]


def design_pairs(rows):
    """The kernels with two designs, side by side (same dtype and shape; a shape with a note
    after it, such as a declined epilogue, still pairs): the other design's time over the
    automatic one's. No table when no pair was timed."""
    valid = [r for r in rows if r.get("valid")]
    out = []
    for auto_name, other_name in KERNEL_DESIGN_PAIRS:
        for a in (r for r in valid if r["kernel"] == auto_name):
            for o in (r for r in valid if r["kernel"] == other_name and r["dtype"] == a["dtype"]):
                if o["shape"] == a["shape"] or o["shape"].startswith(a["shape"] + " ("):
                    out.append(f"| {auto_name} | {other_name} | {a['dtype']} | {o['shape']} | {a['ms']:.4f} "
                               f"| {o['ms']:.4f} | {o['ms'] / a['ms']:.2f}x |")
    if not out:
        return []
    return ["Each layer's two designs as single kernels (the whole step with each: the designs table above). "
            "ratio = the other design's time / the automatic one's: below 1 the other is faster.", "",
            "| automatic | other design | dtype | shape | ms | other ms | ratio |", "|---|---|---|---|---|---|---|"] + \
        out + [""]


PROFILE_HEADING = "## Where one training step's time goes"


def profile_section(directory):
    """One training step of each by kernel category (stage profile, benchmarks/gpu/profile_step.py,
    whose renderer draws the tables)."""
    profile = load_json(directory, "profile.json")
    if profile is None:
        return [PROFILE_HEADING, "", "n/a (no profile.json: the profile stage did not run or failed)", ""]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import profile_step
    finally:
        sys.path.pop(0)
    if profile.get("schema") != profile_step.SCHEMA or profile.get("version") != profile_step.VERSION:
        return [PROFILE_HEADING, "", f"n/a (profile.json is {profile.get('schema')} version {profile.get('version')}; "
                f"this report reads {profile_step.SCHEMA} version {profile_step.VERSION}: rerun profile_step.py)", ""]
    try:
        return profile_step.render_markdown(profile)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return [PROFILE_HEADING, "", f"n/a (profile.json is malformed: {type(e).__name__} {e})", ""]


DESIGNS_HEADING = "## One bf16 training step by kernel design (GPT2CC_KERNELS)"


BEST_DESIGNS_RUN = "designs_best.json"  # the winning designs together (stage designs)
DEFAULT_CLASSIFIER_ROWS = 8192  # ModelOptions::classifier_rows (core/model.hpp)


def classifier_rows_flag(run):
    """bench_train_gpu's --classifier-rows for a run: DEFAULT_CLASSIFIER_ROWS unless it said
    otherwise (runs from before the flag did not say; 0 = all rows at once)."""
    return run.get("classifier_rows_flag", DEFAULT_CLASSIFIER_ROWS)


def design_name(run):
    """A designs run as its table row names it: its GPT2CC_KERNELS and, when not the default,
    its --classifier-rows and --fp32-gradients; "(automatic)" for none of them."""
    parts = [run.get("kernel_designs") or ""]
    rows = classifier_rows_flag(run)
    if rows != DEFAULT_CLASSIFIER_ROWS:
        parts.append(f"--classifier-rows {rows}" + (" (all rows at once)" if rows == 0 else ""))
    if run.get("fp32_gradients"):
        parts.append("--fp32-gradients (fp32 gradients, PyTorch's)")
    return ", ".join(p for p in parts if p) or "(automatic)"
MIN_DESIGN_GAIN = 0.01  # a design must beat the automatic run by this fraction at least


def design_runs(directory):
    """The designs stage's runs: (all of them, the automatic one or None, its twin, the winners,
    the combined run or None). The twin is train_bf16's run when it has the automatic run's
    B×T: the same designs twice in the session. The winners are the single-design runs faster
    than the automatic run by more than the noise: the spread between the twins and
    MIN_DESIGN_GAIN at least, among the runs GPT2CC_KERNELS alone sets (the default classifier
    rows, bf16 gradients). The combined run is BEST_DESIGNS_RUN's (the winners together)."""
    names = sorted(n for n in os.listdir(directory) if n.startswith("designs_") and n.endswith(".json"))
    runs = [(n, r) for n, r in ((n, load_json(directory, n)) for n in names) if r]
    automatic = next((r for _, r in runs if design_name(r) == "(automatic)"), None)
    best = next((r for n, r in runs if n == BEST_DESIGNS_RUN), None)
    twin, winners = None, []
    if automatic:
        base = automatic["ms_per_step_median"]
        train = load_json(directory, "train_bf16.json")
        if train and train.get("B") == automatic["B"] and train.get("T") == automatic["T"]:
            twin = train
        spread = abs(twin["ms_per_step_median"] - base) if twin else 0.0
        threshold = max(spread, MIN_DESIGN_GAIN * base)
        winners = [r for n, r in runs if n != BEST_DESIGNS_RUN and r.get("kernel_designs")
                   and classifier_rows_flag(r) == DEFAULT_CLASSIFIER_ROWS and not r.get("fp32_gradients")
                   and base - r["ms_per_step_median"] > threshold]
    return [r for _, r in runs], automatic, twin, winners, best


def best_designs(directory):
    """GPT2CC_KERNELS for the winning designs together (design_runs), or "" when fewer than two
    won (one winner's run is already the best): what the designs stage runs last."""
    winners = design_runs(directory)[3]
    return ",".join(r["kernel_designs"] for r in winners) if len(winners) >= 2 else ""


def designs_section(directory):
    """The bf16 step with each other design GPT2CC_KERNELS names against the automatic ones, run
    in the same stage at the same batch and steps (kernels/kernel_designs.cuh). Runs that left no
    JSON are listed from status.tsv. No section when the stage did not run."""
    runs, automatic, twin, winners, best = design_runs(directory)
    failed = [(s, rc) for s, rc in last_status(directory).items()
              if s.startswith("designs_") and not os.path.exists(os.path.join(directory, s + ".json"))]
    if not runs and not failed:
        return []
    base = automatic["ms_per_step_median"] if automatic else None
    lines = [DESIGNS_HEADING, "",
             "The same bf16 step (bench_train_gpu) once with the automatic kernel designs and once with each other "
             "design the environment variable GPT2CC_KERNELS names (kernels/kernel_designs.cuh), one process each, "
             "same B×T and steps, once with the classifier over all rows at once (`--classifier-rows 0`; "
             "the model's default is chunks of 8192 rows), and once with the gradients in fp32 (`--fp32-gradients`, "
             "train's `--grad-dtype fp32`; bf16 by default). change = this run's median ms/step against the automatic "
             "run's: negative is faster, so the automatic choice should be the one with no negative row.", "",
             "| design | B×T | ms/step median | change | tokens/s | peak mem | loss first → last |",
             "|---|---|---|---|---|---|---|"]
    order = sorted(runs, key=lambda r: (r is not automatic, design_name(r)))
    for r in order:
        ms = r["ms_per_step_median"]
        change = "—" if r is automatic or base is None else f"{100 * (ms - base) / base:+.1f}%"
        declined = (r.get("bf16_gemm_paths") or {}).get("declined_by_cublaslt")
        name = design_name(r) + (
            f" ({declined} GEMMs declined by cuBLASLt: plain path)" if declined else "")
        lines.append(f"| {name} | {r['B']}×{r['T']} | {ms:.2f} | {change} "
                     f"| {num(r.get('tokens_per_s'))} | {mib(r.get('peak_memory_bytes'))} "
                     f"| {r['loss_first']:.3f} → {r['loss_last']:.3f} |")
    for stage, rc in failed:
        lines.append(f"| {stage[len('designs_'):]} | n/a: no result (exit {rc}; see {stage}.log) | | | | | |")
    if twin:
        lines += ["", f"The automatic designs twice in this session, for the spread between runs: "
                  f"{twin['ms_per_step_median']:.2f} ms/step (train_bf16, {twin.get('steps', '?')} steps) and "
                  f"{base:.2f} (here, {automatic.get('steps', '?')} steps)."]
    if winners:
        lines += ["", f"Faster than the automatic run by more than {'that spread and ' if twin else ''}1%: "
                  + ", ".join(f"`{r['kernel_designs']}`" for r in winners) + "."]
    if best:
        pt = load_json(directory, "pt_train_bf16.json")
        line = (f"Those together (`GPT2CC_KERNELS={best.get('kernel_designs')}`, the last run): "
                f"{best['ms_per_step_median']:.2f} ms/step, {num(best.get('tokens_per_s'))} tokens/s")
        if pt and pt.get("B") == best["B"] and pt.get("T") == best["T"] and pt.get("tokens_per_s"):
            line += f", {best['tokens_per_s'] / pt['tokens_per_s']:.2f}x PyTorch's bf16 step (pt_train_bf16)"
        lines += ["", line + ". Not the default configuration: the automatic designs are the targets' figures."]
    return lines + [""]


def parity_section(directory):
    """fp32 vs bf16 loss curves of the same model (stage parity, benchmarks/gpu/compare_curves.py)."""
    p = load_json(directory, "parity.json")
    lines = ["## Quality parity: fp32 vs bf16 loss curves (d6 on Wikipedia)", ""]
    if p is None:
        return lines + ["(no parity results)", ""]
    worst = max(p["max_rel_train"], p["max_rel_val"] if p["val"] else 0.0)
    lines += [f"{p['common_steps']} steps; train loss compared as means of {p['window']} steps, validation at every "
              f"evaluation. Largest relative difference {pct(worst)} (tolerance {pct(p['tolerance'])}): "
              f"{verdict(p['within_tolerance'])}.", "",
              "| step | fp32 val | bf16 val | rel. diff |", "|---|---|---|---|"]
    lines += [f"| {v['step']} | {v['a']:.4f} | {v['b']:.4f} | {pct(v['rel'])} |" for v in p["val"]]
    return lines + [""]


def make_report(directory):
    env = load_env(directory)
    devices = result_devices(directory)
    gpu = " and ".join(devices) or env.get("gpu") or "unknown GPU"
    lines = [f"# gpt2cc vs PyTorch on {gpu}", "",
             f"Driver {env.get('driver', 'n/a')}, CUDA {env.get('cuda', 'n/a')}, torch {env.get('torch', 'n/a')}, "
             f"commit {env.get('commit', 'n/a')}, date {env.get('date', 'n/a')} (env.txt: the last call's). Produced "
             "by scripts/bench_gpu.sh and benchmarks/gpu/report.py; every number below was measured in those "
             "calls, each file on the device named in it.", ""]
    if len(devices) > 1:
        lines += [f"**These results come from {len(devices)} different devices**: "
                  + "; ".join(f"{d} ({', '.join(names)})" for d, names in devices.items())
                  + ". Compare only figures measured on the same device.", ""]
    earlier = load_earlier_envs(directory)
    if earlier:
        lines += ["Earlier calls whose results may still be here ran on another GPU, commit or sources "
                  "(env-earlier.txt): " + "; ".join(
                      f"gpu {e.get('gpu', 'n/a')}, commit {e.get('commit', 'n/a')}, sources "
                      f"{e.get('sources', 'n/a')[:12]}, date {e.get('date', 'n/a')}" for e in earlier) + ".", ""]
    # A section whose files a stage cut short left malformed (a key missing, a string for a
    # number) says so and the report goes on: the other sections are still the run's.
    for section in (train_section, profile_section, designs_section, attention_section, kernels_section,
                    parity_section):
        try:
            lines += section(directory)
        except Exception as e:  # noqa: BLE001 (any malformed input: the report must still be written)
            what = section.__name__.replace("_section", "")
            print(f"report.py: warning: the {what} section's files are malformed: {type(e).__name__}: {e}",
                  file=sys.stderr)
            lines += [f"## {what}: not reported", "",
                      f"Its result files are malformed ({type(e).__name__}: {e}); they are in the results "
                      "directory as the run left them.", ""]
    status = load_status(directory)
    if status:
        lines += ["## Stages", "", "Every call's runs in order (status.tsv is appended to): a stage's last line is "
                  "its latest; \"skipped\" left an earlier run's results in place.", "",
                  "| stage | exit code | seconds |", "|---|---|---|"]
        lines += [f"| {s} | {rc}{' (timed out)' if rc in ('124', '137') else ''} | {sec} |" for s, rc, sec in status]
        lines.append("")
    return "\n".join(lines)


def self_test_verdict(script, failures):
    """Prints each failed check of a --self-test and a one-line verdict; returns the exit code
    (the number of failures). Also profile_step.py's."""
    for f in failures:
        print(f"self-test FAILED: {f}", file=sys.stderr)
    print(f"{script} self-test: {'all checks passed' if not failures else f'{len(failures)} check(s) failed'}")
    return len(failures)


def self_test():
    """Synthetic results through the whole report: ratios, targets, n/a for missing or invalid
    data. Returns the number of failed checks."""
    failures = []

    def expect(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as d:
        def put(name, obj):
            with open(os.path.join(d, name), "w") as f:
                json.dump(obj, f)

        empty = make_report(d)
        expect("(no training results)" in empty and "(no kernel results)" in empty, "empty dir gives n/a sections")
        expect(f"{PROFILE_HEADING}\n\nn/a (no profile.json" in empty, "no profile.json: the step breakdown is n/a")
        expect("# gpt2cc vs PyTorch on unknown GPU" in empty, "no GPU name anywhere")
        expect(DESIGNS_HEADING not in empty, "no designs section when the stage did not run")
        base = {"T": 1024, "flops_per_token": 7.5e8, "ms_per_step_median": 100.0, "ms_per_step_mean": 101.0}
        put("train_bf16.json", dict(base, B=16, tokens_per_s=240000.0, mfu=0.55, peak_memory_bytes=20 * 2**30,
                                    backend="cuda bf16", cuda_graphs=True, recompute_gelu=False, loss_first=10.9,
                                    loss_last=10.5, device="NVIDIA H100 80GB HBM3"))
        design_run = dict(base, B=16, steps=10, tokens_per_s=160000.0, peak_memory_bytes=20 * 2**30, loss_first=10.9,
                          loss_last=10.8)
        put("designs_automatic.json", dict(design_run, ms_per_step_median=102.0, kernel_designs=""))
        put("designs_classifier-streamed.json", dict(design_run, ms_per_step_median=104.04,
                                                     kernel_designs="classifier=streamed"))
        put("designs_bias-grad-epilogue.json",
            dict(design_run, ms_per_step_median=102.0, kernel_designs="bias-grad=epilogue",
                 bf16_gemm_paths={"cublaslt": 80, "plain": 16, "declined_by_cublaslt": 16}))
        put("designs_flash-tile-64.json", dict(design_run, ms_per_step_median=96.9, kernel_designs="flash-tile=64"))
        # The spread of the automatic runs (102 vs 100) is the bar: flash-tile=64 (-5.1 ms) beats it
        # alone, so nothing to combine; then gemm-split-k=any (-2.5) too, gemm-alignment=16 (-1.5) not.
        expect(best_designs(d) == "", "one winning design: no combined run")
        put("designs_gemm-split-k-any.json", dict(design_run, ms_per_step_median=99.5,
                                                  kernel_designs="gemm-split-k=any"))
        put("designs_gemm-alignment-16.json", dict(design_run, ms_per_step_median=100.5,
                                                   kernel_designs="gemm-alignment=16"))
        expect(best_designs(d) == "flash-tile=64,gemm-split-k=any", f"two winners together: '{best_designs(d)}'")
        # The classifier over all rows: faster here, but not a GPT2CC_KERNELS design, so neither the
        # automatic run nor one to combine.
        put("designs_classifier-rows-all.json", dict(design_run, ms_per_step_median=90.0, kernel_designs="",
                                                     classifier_rows_flag=0, classifier_rows=16384))
        expect(best_designs(d) == "flash-tile=64,gemm-split-k=any", "the all-rows classifier is not combined")
        expect(design_runs(d)[1]["ms_per_step_median"] == 102.0, "the all-rows classifier is not the automatic run")
        # fp32 gradients: faster here too (made up), but neither automatic nor a design to combine.
        put("designs_fp32-gradients.json", dict(design_run, ms_per_step_median=91.0, kernel_designs="",
                                                fp32_gradients=True))
        expect(best_designs(d) == "flash-tile=64,gemm-split-k=any", "the fp32-gradients run is not combined")
        expect(design_runs(d)[1]["ms_per_step_median"] == 102.0, "the fp32-gradients run is not the automatic run")
        put(BEST_DESIGNS_RUN, dict(design_run, ms_per_step_median=95.0, tokens_per_s=240000.0,
                                   kernel_designs="flash-tile=64,gemm-split-k=any"))
        expect(best_designs(d) == "flash-tile=64,gemm-split-k=any", "the combined run is not a winner of its own")
        put("pt_train_bf16.json", dict(base, B=16, tokens_per_s=200000.0, mfu=0.46, peak_memory_bytes=30 * 2**30,
                                       torch="2.11", compile=True, final_loss=10.4))
        put("train_fp32.json", dict(base, B=8, tokens_per_s=50000.0, mfu=None, peak_memory_bytes=2**30,
                                    backend="cuda fp32", cuda_graphs=True, recompute_gelu=False, loss_first=10.9,
                                    loss_last=10.6))
        put("pt_train_fp32.json", dict(base, B=4, tokens_per_s=50000.0, mfu=0.3, peak_memory_bytes=None,
                                       flops_per_token=7.6e8, torch="2.11", compile=True, final_loss=10.5))
        put("attention.json", {"results": [
            {"B": 8, "NH": 12, "T": 1024, "HS": 64, "valid": True, "fwd_ms": 0.5, "fwd_bwd_ms": 2.6,
             "fwd_bwd_tflops": 98.94,
             "tile_rows_auto": 128, "fwd_bwd_ms_rows64": 2.9, "fwd_bwd_ms_rows128": 2.6, "bwd_ms_split": 2.5,
             "bwd_ms_fused": 2.1, "bwd_design_auto": "fused", "bwd_scratch_bytes_split": 1.5 * 2**20,
             "bwd_scratch_bytes_fused": 25.5 * 2**20},
            {"B": 16, "NH": 12, "T": 1024, "HS": 64, "valid": False},
            {"B": 16, "NH": 12, "T": 1024, "HS": 128, "valid": False, "not_run": "needs more shared memory"}]})
        put("pt_attention.json", {"results": [
            {"B": 8, "NH": 12, "T": 1024, "HS": 64, "fwd_ms": 0.4, "fwd_bwd_ms": 2.0, "fwd_bwd_tflops": 128.6},
            {"B": 16, "NH": 12, "T": 1024, "HS": 64, "fwd_ms": 0.8, "fwd_bwd_ms": 4.0},
            {"B": 8, "NH": 12, "T": 1024, "HS": 128, "fwd_ms": 0.8, "fwd_bwd_ms": 4.0}],
            "fixture_accuracy": [{"case": "hs64", "B": 2, "T": 72, "NH": 2, "HS": 64, "out": 1.5e-3, "dq": 2e-3,
                                  "dk": 3e-3, "dv": None, "cpu_bf16": {"out": 1.9e-3, "dq": 2.5e-3, "dk": 3.2e-3,
                                                                      "dv": 3.2e-3}}]})
        put("kernels.json", {"copy_bandwidth_gbps": 3000.0, "sgemm_tflops": 50.0, "peaks_entry": "H100 SXM5",
                             "peak_bf16_dense_tflops": 989.4, "peak_fp32_tflops": 67, "datasheet_memory_gbps": 3350,
                             "B": 8, "T": 1024, "reps": 50, "kernels": [
                                 {"kernel": "gelu_forward", "dtype": "bf16", "shape": "N=1", "valid": True,
                                  "ms": 0.1, "gbps": 2400.0, "roofline_fraction": 0.8},
                                 {"kernel": "matmul_forward", "dtype": "bf16", "shape": "fc", "valid": True,
                                  "ms": 0.2, "tflops": 600.0, "roofline_fraction": None},
                                 {"kernel": "matmul_backward", "dtype": "bf16", "shape": "fc", "valid": True,
                                  "ms": 0.4, "tflops": 600.0, "roofline_fraction": 0.6},
                                 {"kernel": "matmul_backward_bgradb", "dtype": "bf16",
                                  "shape": "fc (cuBLASLt declined BGRADB: column sums)", "valid": True,
                                  "ms": 0.38, "tflops": 630.0, "roofline_fraction": 0.63},
                                 {"kernel": "matmul_backward_splitk_any", "dtype": "bf16", "shape": "fc",
                                  "valid": True, "ms": 0.3, "tflops": 800.0, "roofline_fraction": 0.8},
                                 {"kernel": "matmul_backward", "dtype": "fp32", "shape": "fc", "valid": True,
                                  "ms": 4.0, "tflops": 60.0, "roofline_fraction": 0.9},
                                 {"kernel": "matmul_forward_gelu", "dtype": "bf16", "shape": "fc", "valid": True,
                                  "ms": 0.25, "tflops": 480.0, "roofline_fraction": 0.49},
                                 {"kernel": "matmul_forward_gelu_separate", "dtype": "bf16", "shape": "fc",
                                  "valid": True, "ms": 0.2, "tflops": 600.0, "roofline_fraction": 0.61},
                                 {"kernel": "fused_classifier", "dtype": "bf16", "shape": "V", "valid": True,
                                  "ms": 0.7, "gbps": 2200.0, "roofline_fraction": 0.5},
                                 {"kernel": "fused_classifier_streamed", "dtype": "bf16", "shape": "V",
                                  "valid": False, "rel_error": 0.5},
                                 {"kernel": "layernorm_backward", "dtype": "fp32", "shape": "x", "valid": False,
                                  "rel_error": 0.5},
                                 {"kernel": "gelu_backward", "dtype": "bf16", "shape": "y", "valid": False,
                                  "rel_error": None}]})
        put("profile.json", {"schema": "gpt2cc_step_profile", "version": 0})
        expect("this report reads gpt2cc_step_profile version 1" in make_report(d), "old profile.json: n/a")
        put("profile.json", {"schema": "gpt2cc_step_profile", "version": 1, "gpt2cc": {"wall_ms": 1.0}})
        expect("n/a (profile.json is malformed: KeyError" in make_report(d), "a broken profile.json: n/a, no crash")
        side = lambda wall, total, cats, kernels: {
            "wall_ms": wall, "kernel_total_us": total, "launches": sum(k["calls"] for k in kernels),
            "by_category": cats, "kernels": kernels}
        put("profile.json", {
            "schema": "gpt2cc_step_profile", "version": 1, "B": 64, "T": 1024, "dtype": "bf16",
            "categories": [["matmul", "matmul"], ["attention", "attention"], ["gelu", "GELU"]], "notes": [],
            "gpt2cc": dict(side(170.0, 150000.0, {"matmul": 100000.0, "attention": 50000.0},
                                [{"name": "void k<1>(int)", "short": "k<1>", "category": "matmul", "calls": 48,
                                  "total_us": 100000.0}]), kernels_in_run=1300, kernels_before_step=866),
            "pytorch": dict(side(130.0, 125000.0, {"matmul": 90000.0, "attention": 35000.0},
                                 [{"name": "nvjet_x", "short": "nvjet_x", "category": "matmul", "calls": 50,
                                   "total_us": 90000.0}]), torch="2.11", compile=True, profiled_steps=2,
                            profiled_wall_ms=[140.0, 135.0], profiled_kernel_total_us=[126000.0, 125000.0])})
        with open(os.path.join(d, "env.txt"), "w") as f:
            f.write("gpu: NVIDIA H100 80GB HBM3\ndriver: 580.1\ndate: 2026-11-22T00:00:00Z\nnot a pair\n")
        with open(os.path.join(d, "status.tsv"), "w") as f:
            f.write("build\t0\t200\ntrain\t124\t240\ndesigns_automatic\t0\t15\n"
                    "designs_flash-backward-fused\t1\t20\n")
        text = make_report(d)
        expect("# gpt2cc vs PyTorch on NVIDIA H100 80GB HBM3\n" in text, "GPU name from the results")
        expect("different devices" not in text and "env-earlier.txt" not in text, "one device, no earlier call")
        expect("| 1.20x (met) |" in text, "bf16 tokens/s ratio 240000/200000 = 1.20x meets 1.2x")
        expect("55.0% (met)" in text, "bf16 MFU 55% meets 50%")
        expect("| 1.00x (NOT met) |" in text, "fp32 ratio 1.00x misses the target")
        expect("different shapes (8×1024 vs 4×1024)" in text, "fp32 shape mismatch noted")
        expect("FLOPs per token differ" in text, "fp32 FLOPs mismatch noted")
        expect("| 1.30x (met) | 98.9 / 128.6 (10.0% / 13.0%) | 2.900 / 2.600 (128) | 2.500 / 2.100 (fused); "
               "2 / 26 MiB |" in text, "attention 2.6/2.0 = 1.30x is within 1.3x, roofline, tiles, backward designs")
        expect("peak (989.4 TFLOP/s" in text, "attention roofline names the peak")
        expect("| 16 | 12 | 1024 | 64 | INVALID |" in text, "invalid gpt2cc attention row shown as INVALID")
        expect("| 16 | 12 | 1024 | 128 | not run: does not fit the device |" in text,
               "a shape the device cannot hold is not called invalid")
        expect("| 8 | 12 | 1024 | 128 | n/a | 0.800 | n/a | 4.000 | n/a | n/a | n/a | n/a |" in text,
               "SDPA-only shape gives n/a ratio")
        expect("| hs64 | 2 | 72 | 2 | 64 | 1.50e-03 (1.90e-03) | 2.00e-03 (2.50e-03) | 3.00e-03 (3.20e-03) "
               "| n/a (3.20e-03) |" in text, "SDPA accuracy row, a missing figure as n/a")
        expect(empty.count("Accuracy on tests/fixtures") == 0, "no accuracy table without the figures")
        expect("| gelu_forward | bf16 | N=1 | 0.1000 | 2400 GB/s | 80.0% |" in text, "kernel roofline row")
        expect("| matmul_forward | bf16 | fc | 0.2000 | 600.0 TFLOP/s | n/a |" in text, "unknown peak gives n/a")
        expect("INVALID (rel. error 5.00e-01)" in text, "invalid kernel row")
        expect("| matmul_backward | matmul_backward_bgradb | bf16 | fc (cuBLASLt declined BGRADB: column sums) "
               "| 0.4000 | 0.3800 | 0.95x |" in text, "a design pair, paired through the shape's note")
        expect(text.count("| matmul_backward | matmul_backward_bgradb |") == 1, "no pair across dtypes")
        expect("| matmul_backward | matmul_backward_splitk_any | bf16 | fc | 0.4000 | 0.3000 | 0.75x |" in text,
               "a GEMM design pair")
        expect("| matmul_forward_gelu | matmul_forward_gelu_separate | bf16 | fc | 0.2500 | 0.2000 | 0.80x |" in text,
               "the GELU designs' pair")
        expect("| fused_classifier | fused_classifier_streamed |" not in text, "an invalid design is not paired")
        expect("INVALID (rel. error not finite)" in text, "NaN error (JSON null) in an invalid kernel row")
        expect("| train | 124 (timed out) | 240 |" in text, "timed-out stage marked")
        expect(f"{PROFILE_HEADING} (B=64, T=1024, bf16)" in text, "step breakdown section")
        expect("| matmul | 100.00 | 66.7% | 90.00 | 72.0% | +10.00 |" in text, "matmul: 100 of 150 ms vs 90 of 125")
        expect("| **all kernels** | **150.00** | 100% | **125.00** | 100% | +25.00 |" in text, "kernel totals")
        expect("| outside kernels (wall − kernels) | 20.00 | 11.8% | 5.00 | 3.8% | +15.00 |" in text,
               "time outside kernels: 170 - 150 vs 130 - 125 ms")
        expect("| GELU |" not in text, "a category empty on both sides is left out")
        expect("| 1 | `k<1>` | matmul | 48 | 100.00 | 66.7% |" in text, "top kernels of gpt2cc")
        expect(text.index(PROFILE_HEADING) < text.index("## Causal attention"), "the breakdown follows training")
        expect("| (automatic) | 16×1024 | 102.00 | — | 160000 | 20,480 MiB | 10.900 → 10.800 |" in text,
               "the automatic designs' run first, the base of the changes")
        expect("| classifier=streamed | 16×1024 | 104.04 | +2.0% |" in text, "a slower design: +2.0%")
        expect("| flash-tile=64 | 16×1024 | 96.90 | -5.0% |" in text, "a faster design: -5.0%")
        expect("| --classifier-rows 0 (all rows at once) | 16×1024 | 90.00 | -11.8% |" in text,
               "the all-rows classifier's row")
        expect("| --fp32-gradients (fp32 gradients, PyTorch's) | 16×1024 | 91.00 | -10.8% |" in text,
               "the fp32 gradients' row")
        expect("| bias-grad=epilogue (16 GEMMs declined by cuBLASLt: plain path) | 16×1024 | 102.00 | +0.0% |" in text,
               "GEMMs cuBLASLt declined are named")
        expect("| flash-backward-fused | n/a: no result (exit 1; see designs_flash-backward-fused.log) |" in text,
               "a design run that failed is listed")
        expect("100.00 ms/step (train_bf16, ? steps) and 102.00 (here, 10 steps)" in text,
               "the two runs of the automatic designs side by side")
        expect("more than that spread and 1%: `flash-tile=64`, `gemm-split-k=any`." in text, "the winners named")
        expect("Those together (`GPT2CC_KERNELS=flash-tile=64,gemm-split-k=any`, the last run): 95.00 ms/step, "
               "240000 tokens/s, 1.20x PyTorch's bf16 step" in text, "the combined run against PyTorch")
        expect(text.index(PROFILE_HEADING) < text.index(DESIGNS_HEADING) < text.index("## Causal attention"),
               "the designs follow the step breakdown")
        expect("n/a MiB" not in text, "missing memory prints n/a")
        out = os.path.join(d, "report.md")
        write_text_atomic(out, text)
        with open(out) as f:
            expect(f.read() == text, "report.md written")
        expect(not [n for n in os.listdir(d) if n.startswith(".tmp-")], "no temporary file left")
        expect(os.stat(out).st_mode & 0o777 == 0o666 & ~current_umask(), "report.md's mode is the umask's")

    # Results of several calls in one folder: two GPUs (said in the header, no verdict across them),
    # an earlier call's environment, a design run that succeeded and then was skipped (its JSON
    # kept: one row) and one that failed and then was skipped (one "no result" row, the last).
    with tempfile.TemporaryDirectory() as d:
        def put_json(name, obj):
            with open(os.path.join(d, name), "w") as f:
                json.dump(obj, f)

        pair = {"B": 16, "T": 1024, "flops_per_token": 7.5e8, "ms_per_step_median": 100.0}
        put_json("train_bf16.json", dict(pair, tokens_per_s=240000.0, device="NVIDIA H100 80GB HBM3"))
        put_json("pt_train_bf16.json", dict(pair, tokens_per_s=200000.0, device="NVIDIA H200"))
        put_json("designs_automatic.json", dict(pair, tokens_per_s=1.0, loss_first=1.0, loss_last=0.9,
                                                kernel_designs="", device="NVIDIA H200"))
        shape = {"B": 8, "NH": 12, "T": 1024, "HS": 64, "fwd_ms": 1.0}
        put_json("attention.json", {"device": "NVIDIA H100 80GB HBM3", "results": [dict(shape, fwd_bwd_ms=3.6)]})
        put_json("pt_attention.json", {"device": "NVIDIA H200", "results": [dict(shape, fwd_bwd_ms=3.0)]})
        with open(os.path.join(d, "status.tsv"), "w") as f:
            f.write("designs_automatic\t0\t15\ndesigns_flash-tile-64\t1\t9\n"
                    "designs_automatic\tskipped\t0\ndesigns_flash-tile-64\tskipped\t0\n")
        with open(os.path.join(d, "env-earlier.txt"), "w") as f:
            f.write("date: 2026-11-22T00:00:00Z\ncommit: abc1234\ngpu: NVIDIA H100 80GB HBM3\n\n"
                    "date: 2026-11-23T00:00:00Z\ncommit: def5678 (modified)\nsources: 0123456789abcdef\n\n")
        text = make_report(d)
        expect("# gpt2cc vs PyTorch on NVIDIA H100 80GB HBM3 and NVIDIA H200" in text, "every device in the title")
        expect("**These results come from 2 different devices**: NVIDIA H100 80GB HBM3 (attention.json, "
               "train_bf16.json); NVIDIA H200 (designs_automatic.json, pt_attention.json, pt_train_bf16.json)."
               in text, "mixed devices said so")
        expect("| 1.20x (different devices: no verdict) |" in text.split("## Causal attention")[0],
               "no verdict across devices")
        expect("| 1.20x (different devices: no verdict) | " in text.split("## Causal attention")[1]
               and "gpt2cc's attention ran on NVIDIA H100 80GB HBM3, PyTorch's on NVIDIA H200" in text,
               "no attention verdict across devices")
        expect("- bf16: the two ran on different devices (NVIDIA H100 80GB HBM3 vs NVIDIA H200)" in text,
               "a pair on different devices noted")
        expect("(env-earlier.txt): gpu NVIDIA H100 80GB HBM3, commit abc1234, sources n/a, date "
               "2026-11-22T00:00:00Z; gpu n/a, commit def5678 (modified), sources 0123456789ab, date "
               "2026-11-23T00:00:00Z." in text, "the earlier calls' environments")
        expect("| automatic | n/a: no result" not in text and text.count("| (automatic) |") == 1,
               "a design run kept from an earlier call: its row only")
        expect(text.count("| flash-tile-64 |") == 1 and
               "| flash-tile-64 | n/a: no result (exit skipped; see designs_flash-tile-64.log) |" in text,
               "a failed design run skipped later: one row, its last status")

    # Files a stage cut short (or another version) left malformed: the report is still written,
    # each bad file or section said to be so, and no figure made of them.
    with tempfile.TemporaryDirectory() as d:
        def put_text(name, text, mode="w"):
            with open(os.path.join(d, name), mode) as f:
                f.write(text)

        put_text("train_bf16.json", "{}")
        put_text("pt_train_bf16.json", json.dumps({"B": 16, "T": 1024, "tokens_per_s": float("inf"), "mfu": "12.5"}))
        put_text("train_fp32.json", "[1, 2]")
        put_text("kernels.json", b"{\"device\": \"H\xff\"}", "wb")
        put_text("parity.json", "{}")
        put_text("designs_automatic.json", json.dumps({"B": 16, "T": 1024}))
        put_text("env.txt", b"gpu: NVIDIA H\xff200\n", "wb")
        put_text("status.tsv", "train_bf16\t0\t21\npt_train_bf16\t124\n")
        text = make_report(d)
        expect("# gpt2cc vs PyTorch on NVIDIA H\ufffd200" in text, "non-UTF-8 env.txt: replaced, not a crash")
        expect("| bf16 | n/a | n/a | 16×1024 | n/a | n/a | n/a | n/a |" in text,
               "an empty gpt2cc JSON, PyTorch's infinite tokens/s and string MFU: n/a, no verdict")
        expect("(met)" not in text and "inf" not in text, "no verdict or figure from non-finite values")
        expect("## parity: not reported" in text and "KeyError" in text, "a malformed parity.json: said so")
        expect("| pt_train_bf16 124 | ? | ? |" in text, "a status line of another shape kept")
        expect("(no kernel results)" in text, "non-UTF-8 kernels.json read as absent")
        put_text("designs_flash-tile-64.json", json.dumps({"B": 16, "T": 1024, "ms_per_step_median": "fast"}))
        text = make_report(d)
        expect("## designs: not reported" in text, "designs files without step times: said so")
        expect("## Training step" in text, "the other sections still there")
        with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.redirect_stderr(io.StringIO()):
            rc = main([d])
            expect(rc == 0 and os.path.isfile(os.path.join(d, "report.md")), "report.md written from malformed files")
            expect(main(["--best-designs", d]) == 0 and printed.getvalue().endswith("\n\n"),
                   "--best-designs on malformed designs files: nothing to combine, exit 0")
    return self_test_verdict("report.py", failures)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directory", nargs="?", help="results directory written by scripts/bench_gpu.sh")
    p.add_argument("--self-test", action="store_true", help="check the report on synthetic inputs and exit")
    p.add_argument("--best-designs", action="store_true",
                   help="print GPT2CC_KERNELS for the designs that beat the automatic ones in the directory's "
                        "designs stage, together (nothing when fewer than two did), and exit")
    a = p.parse_args(argv)
    if a.self_test:
        return 1 if self_test() else 0
    if not a.directory:
        p.error("give the results directory (or --self-test)")
    if not os.path.isdir(a.directory):
        p.error(f"{a.directory}: not a directory")
    if a.best_designs:
        try:
            print(best_designs(a.directory))
        except Exception as e:  # noqa: BLE001 (malformed designs files: no combined run, said why)
            print(f"report.py: warning: the designs' files are malformed ({type(e).__name__}: {e}): no best "
                  "designs", file=sys.stderr)
        return 0
    text = make_report(a.directory)
    write_text_atomic(os.path.join(a.directory, "report.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
