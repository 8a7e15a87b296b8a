#!/usr/bin/env python3
"""Where one training step's time goes, gpt2cc vs PyTorch: GPU time per kernel category.

gpt2cc: the CSV that Nsight Compute prints for a run of bench_train_gpu with one metric,
  ncu --metrics gpu__time_duration.sum --csv --print-units base --log-file ncu.csv \\
      bench_train_gpu --dtype bf16 -B 64 -T 1024 --steps 1 --warmup 1 --no-cuda-graphs
which holds every kernel of the run: the validation step, the warm-up and the timed step run the
same kernels, and the last step is found as the longest tail of the launch sequence that repeats
--identical-steps times (2: the timed step equals the warm-up before it). bench_train_gpu has no
NVTX ranges, so this needs no change to it; an explicit -B keeps -B auto's probe steps out.
PyTorch: the JSON of benchmarks/pytorch/gpt2_train.py --profile-json (torch.profiler, CUDA kernel
times per profiled step); the last profiled step is used.
Each kernel is put in one category by its name (categorize(); gpt2cc's names are the __global__
functions of kernels/, checked by --self-test against the sources); a kernel that fuses several
ops counts under its main one (a Triton kernel fusing add + native_layer_norm is layernorm).
Writes profile.json (what benchmarks/gpu/report.py reads) and a markdown table: ms per category
and share of each side's kernel time, the step's wall time, and the 15 longest kernels of each.
  profile_step.py --ncu-csv ncu.csv --gpt2cc-json train.json --pytorch-json pt_profile.json \\
                  --json profile.json --markdown profile.md
  profile_step.py --self-test
"""
import argparse
import contextlib
import csv
import gzip
import io
import json
import os
import re
import sys
import tempfile

from report import self_test_verdict, write_text_atomic  # report.py beside this file

SCHEMA = "gpt2cc_step_profile"
VERSION = 1
TOP_KERNELS = 15

# (key, label), in the order of the table.
CATEGORIES = [
    ("matmul", "matmul (cuBLAS/cuBLASLt, CUTLASS, Triton templates)"),
    ("attention", "attention (flash forward/backward, layout)"),
    ("layernorm", "layernorm (fused residual add included)"),
    ("gelu", "GELU (not fused into a GEMM epilogue)"),
    ("classifier", "softmax / cross-entropy (classifier)"),
    ("optimizer", "optimizer (AdamW, clip scaling)"),
    ("reduction", "reductions (gradient norm, bias gradients)"),
    ("embedding", "embedding (encoder) forward/backward"),
    ("elementwise", "elementwise / copy / convert / bias / residual"),
    ("triton_fused", "fused elementwise (Triton, no named op)"),
    ("memcpy", "memcpy / memset (ncu does not see gpt2cc's)"),
    ("other", "other"),
]
CATEGORY_KEYS = [k for k, _ in CATEGORIES]
LABELS = dict(CATEGORIES)

# Matched against the lower-cased kernel name without its namespace and parameter list (see
# match_text), in this order: the first hit decides. Attention comes before matmul (gpt2cc's
# attention_head_gemm_tiled_kernel, PyTorch's fmha_cutlass*), matmul before GELU (a cuBLASLt GEMM
# with a GELU epilogue is a GEMM), the norm-specific reductions before the optimizer (PyTorch's
# clip_grad_norm_ runs multi_tensor_apply_kernel<...LpNormFunctor>).
ATTENTION = r"flash|fmha|sdpa|scaled_dot_product|attention|attn|kv_cache"
MATMUL = (r"gemm|nvjet|xmma|cutlass|cublas|splitkreduce|gemv|wgmma|^ampere_|^sm\d\d_|^volta_|^turing_"
          r"|^aten::(mm|addmm|bmm|baddbmm|linear|matmul)$")
REDUCTION = r"lpnorm|norm_?two|sum_of_squares|column_sum|linalg_vector_norm|reduce_kernel|^aten::(norm|sum)$"
OPTIMIZER = r"adam|multi_tensor_apply|foreach|lerp|addcdiv"
LAYERNORM = r"layer_?norm|gammabeta"
CLASSIFIER = r"crossentropy|cross_entropy|classifier|nll|softmax"
GELU = r"gelu"
# In this model only the embedding backward sorts and segments indices (PyTorch's eager path).
EMBEDDING = r"encoder_|embedding|indexing_backward|sum_and_scatter|grad_weight|segment|radixsort|radix_sort"
ELEMENTWISE = (r"elementwise|residual|bias|convert|widen|copy|fill|cast|dropout|catarray|index|scatter|where"
               r"|^aten::")
TRITON = [  # (category, pattern) for Triton kernels, matched on the fused op names in the kernel name
    ("attention", ATTENTION),
    ("layernorm", r"layer_norm"),
    ("classifier", r"nll_loss|log_softmax|softmax|cross_entropy"),
    ("gelu", r"gelu|tanh"),
    ("embedding", r"embedding"),
    ("optimizer", r"adam|lerp|addcdiv|foreach"),
    ("reduction", r"linalg_vector_norm|(^|_)norm(_|$)|(^|_)sum(_|\d|$)"),
]


def strip_parameters(name):
    """The name without a trailing parameter list: 'void f<1>(int*)' -> 'void f<1>'."""
    name = name.strip()
    if not name.endswith(")"):
        return name
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        if name[i] == ")":
            depth += 1
        elif name[i] == "(":
            depth -= 1
            if depth == 0:
                # 'Memset (Device)' is a profiler's label, not a function with parameters.
                return name[:i] if i > 0 and name[i - 1] != " " else name
    return name


def match_text(name):
    """What categorize() matches: lower case, no leading 'void ', no parameter list, no namespace
    before the function's own name (gpt2cc's add_bias_kernel lives in matmul_kernels::), but
    with the template arguments (PyTorch's functors: multi_tensor_apply_kernel<...FusedAdam...>)."""
    text = strip_parameters(name)
    if text.startswith("void "):
        text = text[5:]
    cut = text.find("<")
    head, tail = (text, "") if cut < 0 else (text[:cut], text[cut:])
    if not head.startswith("aten::"):
        head = head.rsplit("::", 1)[-1]
    return (head + tail).lower()


def categorize(name):
    """The category key of one kernel name (ncu's demangled names, PyTorch profiler names)."""
    lower = name.strip().lower()
    if lower.startswith(("memcpy", "memset")):
        return "memcpy"
    text = match_text(name)
    if text.startswith("triton_"):
        if text.startswith("triton_tem"):  # Inductor's templates: GEMMs, or flex attention
            return "attention" if re.search(ATTENTION, text) else "matmul"
        for category, pattern in TRITON:
            if re.search(pattern, text):
                return category
        return "triton_fused"
    for category, pattern in (("attention", ATTENTION), ("matmul", MATMUL), ("reduction", REDUCTION),
                              ("optimizer", OPTIMIZER), ("layernorm", LAYERNORM), ("classifier", CLASSIFIER),
                              ("gelu", GELU), ("embedding", EMBEDDING), ("elementwise", ELEMENTWISE)):
        if re.search(pattern, text):
            return category
    return "other"


def short_name(name, width=90):
    """A kernel name for a table: no 'void ', no parameter list, no namespaces (aten:: kept), at
    most `width` characters."""
    text = strip_parameters(name)
    if text.startswith("void "):
        text = text[5:]
    if not text.startswith("aten::"):
        text = re.sub(r"\b\w+::", "", text.replace("(anonymous namespace)::", ""))
    return text if len(text) <= width else text[:width - 3] + "..."


# ---- gpt2cc: Nsight Compute's CSV ----

UNIT_TO_US = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
              "second": 1e6, "s": 1e6}
METRIC = "gpu__time_duration.sum"


def parse_number(text):
    """ncu's number text: '1,234.5' (thousands separators) or '1234'; a lone comma with other
    than three digits after it is a decimal comma ('12,5')."""
    text = text.strip().replace("\u202f", "").replace(" ", "")
    if "," in text and "." in text:
        text = text.replace(",", "")
    elif "," in text:
        text = text.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+", text) else text.replace(",", ".")
    return float(text)


def read_ncu_csv(text):
    """The kernels of an ncu --csv report, in launch order: a list of dicts (id, name, grid,
    block, us). Takes the details page (one row per kernel and metric: "Metric Name", "Metric
    Unit", "Metric Value") and the raw page (a column per metric, then a units row). Lines that
    are not CSV rows of the report (==PROF== messages, the program's output) are skipped."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r'^\s*"?ID"?\s*,', line)), None)
    if start is None:
        head = "\n".join(lines[:8])
        raise ValueError(f"no ncu CSV header (a line starting with \"ID\",) in the file; it begins:\n{head}")
    body = [line for line in lines[start:] if line.strip() and not line.startswith("==")]
    if len(body) > 1 and not text.endswith("\n"):
        # ncu stopped mid-write (the stage's time ran out): a last row cut inside a value would read
        # as another number ("25,00" of "25,000" ns as a decimal comma), so a row that is not whole
        # (ncu quotes every field) is dropped.
        if not body[-1].rstrip().endswith('"') or len(next(csv.reader([body[-1]]))) != len(next(csv.reader(body))):
            body.pop()
    rows = list(csv.DictReader(io.StringIO("\n".join(body))))
    header = rows[0].keys() if rows else []
    for column in ("ID", "Kernel Name"):
        if column not in header:
            raise ValueError(f"the ncu CSV has no '{column}' column (columns: {', '.join(header)})")
    kernels = {}
    details = "Metric Name" in header
    if not details and METRIC not in header:
        raise ValueError(f"the ncu CSV has neither a 'Metric Name' column nor a '{METRIC}' one")
    unit = None
    for row in rows:
        ident = (row.get("ID") or "").strip()
        if not ident.isdigit():
            if not details and not ident:  # the raw page's units row
                unit = (row.get(METRIC) or "").strip()
            continue
        if details:
            if (row.get("Metric Name") or "").strip() != METRIC:
                continue
            value, row_unit = row.get("Metric Value") or "", (row.get("Metric Unit") or "").strip()
        else:
            value, row_unit = row.get(METRIC) or "", unit
        if row_unit not in UNIT_TO_US:
            raise ValueError(f"kernel {ident}: unknown unit '{row_unit}' of {METRIC} (want one of "
                             f"{', '.join(UNIT_TO_US)}; run ncu with --print-units base)")
        try:
            us = parse_number(value) * UNIT_TO_US[row_unit]
        except ValueError:
            raise ValueError(f"kernel {ident} ({short_name(row['Kernel Name'], 60)}): {METRIC} is '{value}', "
                             "not a number") from None
        kernels.setdefault(int(ident), {
            "id": int(ident), "name": row["Kernel Name"].strip(), "grid": (row.get("Grid Size") or "").strip(),
            "block": (row.get("Block Size") or "").strip(), "us": us})
    if not kernels:
        raise ValueError(f"the ncu CSV holds no {METRIC} values")
    return [kernels[i] for i in sorted(kernels)]


def last_step_length(keys, repeats):
    """K such that the last `repeats` blocks of K launches are the same sequence, the largest
    such K (<= len/repeats), or None. Why the largest is the step: a smaller K that also repeats
    is a run of identical launches inside the step (per-tensor kernels); a larger one would make
    the step a repetition of a shorter block (periods K and the step's length over one stretch:
    Fine and Wilf), which it is not while it has a launch that occurs once per step (the
    embedding), unless the launches before the steps are as many as a step's."""
    n = len(keys)
    for k in range(n // repeats, 0, -1):
        block = keys[n - k:]
        if all(keys[n - (r + 1) * k:n - r * k] == block for r in range(1, repeats)):
            return k
    return None


def aggregate(entries):
    """[{name, calls, total_us}] from (name, us) pairs, longest total first."""
    table = {}
    for name, us in entries:
        row = table.setdefault(name, {"name": name, "calls": 0, "total_us": 0.0})
        row["calls"] += 1
        row["total_us"] += us
    return sorted(table.values(), key=lambda r: -r["total_us"])


def side_summary(kernels, wall_ms, **extra):
    """One side of profile.json from its aggregated kernels."""
    by_category = {k: 0.0 for k in CATEGORY_KEYS}
    rows = []
    for k in kernels:
        category = categorize(k["name"])
        by_category[category] += k["total_us"]
        rows.append(dict(k, category=category, short=short_name(k["name"])))
    return dict(extra, wall_ms=wall_ms, kernel_total_us=sum(by_category.values()),
                launches=sum(k["calls"] for k in kernels), by_category=by_category, kernels=rows)


def gpt2cc_side(csv_path, train_json_path, repeats, min_step_kernels):
    opener = gzip.open if csv_path.endswith(".gz") else open
    with opener(csv_path, "rt", encoding="utf-8", errors="replace") as f:
        launches = read_ncu_csv(f.read())
    keys = [(k["name"], k["grid"], k["block"]) for k in launches]
    k = last_step_length(keys, repeats)
    if k is None or k < min_step_kernels:
        raise ValueError(f"{csv_path}: cannot find the last training step among its {len(launches)} kernels: no "
                         f"tail of at least {min_step_kernels} launches repeats {repeats} times (found "
                         f"{k}); were the steps identical (explicit -B, --warmup >= 1)?")
    step = launches[len(launches) - k:]
    train = None
    if train_json_path and os.path.exists(train_json_path):
        train = load_json(train_json_path)
    elif train_json_path:
        print(f"profile_step.py: warning: no {train_json_path}: gpt2cc's wall time and shape are n/a", file=sys.stderr)
    wall_ms = train.get("ms_per_step_median") if train else None
    return side_summary(aggregate((x["name"], x["us"]) for x in step), wall_ms,
                        source=f"Nsight Compute {METRIC} of each kernel of the last of the steps",
                        time_kind="gpu_kernels", kernels_in_run=len(launches), kernels_before_step=len(launches) - k,
                        B=train.get("B") if train else None, T=train.get("T") if train else None,
                        dtype=train.get("dtype") if train else None,
                        wall_source="bench_train_gpu median ms/step, unprofiled, CUDA graphs "
                                    f"{'on' if train and train.get('cuda_graphs') else 'off'}" if train else None)


def pytorch_side(json_path):
    p = load_json(json_path)
    steps = p.get("steps") or []
    if not steps:
        raise ValueError(f"{json_path}: no profiled steps")
    last = steps[-1]
    kind = p.get("time_source", "cuda_kernels")
    return side_summary(last["kernels"], p.get("ms_per_step_median"),
                        source=("torch.profiler (CUPTI) device time of each kernel" if kind == "cuda_kernels" else
                                "torch.profiler CPU self time of each op: NOT GPU kernels (a CPU run)"),
                        time_kind="gpu_kernels" if kind == "cuda_kernels" else "cpu_ops", B=p.get("B"), T=p.get("T"),
                        dtype=p.get("dtype"),
                        profiled_steps=len(steps), profiled_wall_ms=[s.get("wall_ms") for s in steps],
                        profiled_kernel_total_us=[s.get("total_us") for s in steps], torch=p.get("torch"),
                        compile=p.get("compile"), skipped_device_events=last.get("skipped", []),
                        wall_source="gpt2_train.py median ms/step of its timed steps, unprofiled")


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def make_profile(gpt2cc, pytorch):
    notes = []
    shapes = {name: (s.get("B"), s.get("T")) for name, s in (("gpt2cc", gpt2cc), ("PyTorch", pytorch))
              if s and s.get("B") is not None}
    if len(set(shapes.values())) > 1:
        notes.append("the two ran different shapes: " + ", ".join(f"{n} B={b} T={t}" for n, (b, t) in shapes.items()))
    if pytorch and pytorch["time_kind"] != "gpu_kernels":
        notes.append("PyTorch's figures are CPU op times from a CPU run, not GPU kernel times")
    B, T = next(iter(shapes.values()), (None, None))
    dtype = next((s.get("dtype") for s in (gpt2cc, pytorch) if s and s.get("dtype")), None)
    return {"schema": SCHEMA, "version": VERSION, "B": B, "T": T, "dtype": dtype, "categories": CATEGORIES,
            "gpt2cc": gpt2cc, "pytorch": pytorch, "notes": notes}


# ---- markdown ----

def ms(us):
    return "n/a" if us is None else f"{us / 1e3:.2f}"


def share(part, whole):
    return "n/a" if part is None or not whole else f"{100 * part / whole:.1f}%"


def code(name):
    """A kernel name as a code span in a table cell (< > stay literal; | is escaped)."""
    return "`" + name.replace("`", "'").replace("|", "\\|") + "`"


def render_markdown(profile, level=2):
    """The tables of one profile (profile.json's content) as markdown lines."""
    h = "#" * level
    g, p = profile.get("gpt2cc"), profile.get("pytorch")
    B, T, dtype = profile.get("B"), profile.get("T"), profile.get("dtype")
    shape = (f"B={B}, T={T}" if B else "shape unknown") + (f", {dtype}" if dtype else "")
    compiled = ("torch.compile" if p.get("compile") else "eager, no torch.compile") if p else "not profiled"
    lines = [f"{h} Where one training step's time goes ({shape})", "",
             "GPU time of each kernel of one training step, by category. gpt2cc: Nsight Compute "
             f"({METRIC}, --clock-control none --cache-control none; kernels run one at a time under it) over the "
             f"last step of a run whose steps launch the same kernels; PyTorch (gpt2_train.py, {compiled}): "
             "torch.profiler's CUPTI kernel times of one step after its timed ones. Shares are of each "
             "side's own kernel total. Step wall time: each benchmark's unprofiled median at this shape; what it "
             "holds beyond the kernels is launch gaps, host work and synchronisation. Memsets and copies are not "
             "kernels: ncu does not see gpt2cc's (zeroing gradients), PyTorch's profiler lists its own.", ""]
    for note in profile.get("notes") or []:
        lines += [f"Note: {note}.", ""]
    gk = g["kernel_total_us"] if g else None
    pk = p["kernel_total_us"] if p else None
    lines += ["| category | gpt2cc ms | gpt2cc share | PyTorch ms | PyTorch share | gpt2cc − PyTorch ms |",
              "|---|---|---|---|---|---|"]
    for key, label in profile.get("categories") or CATEGORIES:
        gv = g["by_category"].get(key, 0.0) if g else None
        pv = p["by_category"].get(key, 0.0) if p else None
        if not gv and not pv:
            continue
        diff = "n/a" if gv is None or pv is None else f"{(gv - pv) / 1e3:+.2f}"
        lines.append(f"| {label} | {ms(gv)} | {share(gv, gk)} | {ms(pv)} | {share(pv, pk)} | {diff} |")
    diff = "n/a" if gk is None or pk is None else f"{(gk - pk) / 1e3:+.2f}"
    whole = lambda total: "n/a" if total is None else "100%"
    lines.append(f"| **all kernels** | **{ms(gk)}** | {whole(gk)} | **{ms(pk)}** | {whole(pk)} | {diff} |")
    gw = g.get("wall_ms") if g else None
    pw = p.get("wall_ms") if p else None
    wall = lambda w: "n/a" if w is None else f"{w:.2f}"
    lines.append(f"| step wall time (unprofiled median) | {wall(gw)} | | {wall(pw)} | | "
                 f"{'n/a' if gw is None or pw is None else f'{gw - pw:+.2f}'} |")
    outside = lambda w, k: None if w is None or k is None else w * 1e3 - k
    go, po = outside(gw, gk), outside(pw, pk)
    lines.append(f"| outside kernels (wall − kernels) | {ms(go)} | {share(go, gw and gw * 1e3)} | {ms(po)} | "
                 f"{share(po, pw and pw * 1e3)} | {'n/a' if go is None or po is None else f'{(go - po) / 1e3:+.2f}'} |")
    lines.append("")
    details = []
    if g:
        details.append(f"gpt2cc: {g['launches']} kernel launches in the step ({g.get('kernels_in_run')} in the "
                       f"profiled run, {g.get('kernels_before_step')} before the step; `ncu --launch-skip "
                       f"{g.get('kernels_before_step')} --launch-count {g['launches']}` profiles this step alone).")
    if p:
        walls = ", ".join(wall(w) for w in p.get("profiled_wall_ms") or [])
        totals = ", ".join(ms(t) for t in p.get("profiled_kernel_total_us") or [])
        details.append(f"PyTorch: {p['launches']} kernel launches in the step; torch {p.get('torch', '?')}, compile "
                       f"{'on' if p.get('compile') else 'off'}; the {p.get('profiled_steps')} profiled steps took "
                       f"{walls} ms (under the profiler) with {totals} ms of kernels; the last is shown.")
        skipped = p.get("skipped_device_events") or []
        if skipped:
            details.append("PyTorch device events that are not work, left out: " +
                           ", ".join(f"{s['name']} ({ms(s['total_us'])} ms)" for s in skipped) + ".")
    lines += [f"- {d}" for d in details] + ([""] if details else [])
    for title, side in (("gpt2cc", g), ("PyTorch", p)):
        lines += [f"{h}# The {TOP_KERNELS} longest kernels of the step: {title}", ""]
        if not side:
            lines += ["n/a (no profile)", ""]
            continue
        lines += ["| # | kernel | category | calls | ms | share |", "|---|---|---|---|---|---|"]
        for i, k in enumerate(side["kernels"][:TOP_KERNELS], 1):
            lines.append(f"| {i} | {code(k['short'])} | {k['category']} | {k['calls']} | {ms(k['total_us'])} "
                         f"| {share(k['total_us'], side['kernel_total_us'])} |")
        lines.append("")
    return lines


# ---- self-test ----

SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)

# What each of gpt2cc's kernels (the __global__ functions of kernels/) is; --self-test checks that
# these land in their categories, and that no __global__ function in the sources lands in "other".
GPT2CC_KERNEL_CATEGORIES = {
    "encoder_forward_elementwise_kernel": "embedding", "encoder_forward_packed_kernel": "embedding",
    "encoder_backward_wpe_kernel": "embedding", "encoder_backward_wte_kernel": "embedding",
    "encoder_sort_tile_keys_kernel": "embedding", "encoder_merge_keys_kernel": "embedding",
    "layernorm_forward_warp_per_row_kernel": "layernorm", "layernorm_forward_cached_row_kernel": "layernorm",
    "layernorm_backward_dinp_warp_per_row_kernel": "layernorm",
    "layernorm_backward_param_partials_kernel": "layernorm", "layernorm_backward_param_finalize_kernel": "layernorm",
    "layernorm_backward_fused_kernel": "layernorm",
    "attention_head_gemm_tiled_kernel": "attention", "attention_softmax_warp_per_row_kernel": "attention",
    "attention_softmax_backward_warp_per_row_kernel": "attention",
    "kv_cache_store_kernel": "attention", "attention_decode_shared_scores_kernel": "attention",
    "attention_decode_online_softmax_kernel": "attention", "flash_attention_forward_kernel": "attention",
    "flash_attention_delta_kernel": "attention", "flash_attention_backward_dkdv_kernel": "attention",
    "flash_attention_backward_dq_kernel": "attention", "flash_attention_backward_fused_kernel": "attention",
    "add_bias_vec4_kernel": "elementwise", "add_bias_scalar_kernel": "elementwise",
    "add_bias_gradient_kernel": "elementwise",
    "column_sum_partials_kernel": "reduction", "column_sum_finalize_kernel": "reduction",
    "residual_forward_kernel": "elementwise", "residual_backward_kernel": "elementwise",
    "convert_kernel": "elementwise", "widen_kernel": "elementwise",
    "dropout_mask_four_per_thread_kernel": "elementwise",
    "adamw_update_kernel": "optimizer", "sum_of_squares_partials_kernel": "reduction",
    "sum_of_squares_finalize_kernel": "reduction", "crossentropy_forward_block_per_row_kernel": "classifier",
    "crossentropy_backward_block_per_row_kernel": "classifier", "fused_classifier_block_per_row_kernel": "classifier",
    "fused_classifier_cached_row_kernel": "classifier",
    "bias_gelu_kernel": "gelu", "dgelu_kernel": "gelu", "gelu_forward_kernel": "gelu", "gelu_backward_kernel": "gelu",
    "kernel_image_probe": "other",
}


def source_kernel_names(root):
    """The __global__ function names in root/kernels (None when the sources are not there)."""
    folder = os.path.join(root, "kernels")
    if not os.path.isdir(folder):
        return None
    names = set()
    for entry in sorted(os.listdir(folder)):
        if entry.endswith((".cu", ".cuh")):
            with open(os.path.join(folder, entry), encoding="utf-8") as f:
                text = f.read()
            names.update(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\s*\((?:[^()]|\([^()]*\))*\)\s*)?"
                                    r"(\w+)\s*\(", text))
    return names


# Kernel names as the tools print them, with their categories.
NAME_CASES = [
    # gpt2cc under ncu (demangled: namespace, template arguments, parameters)
    ("void gpt2cc::cuda::matmul_kernels::add_bias_vec4_kernel(float4 *, const float4 *, int, int)", "elementwise"),
    ("void gpt2cc::cuda::layernorm_kernels::layernorm_forward_cached_row_kernel<__nv_bfloat16, 8, true>"
     "(gpt2cc::cuda::layernorm_kernels::LayerNormForwardParams<__nv_bfloat16>)", "layernorm"),
    ("void gpt2cc::cuda::attention_kernels::attention_head_gemm_tiled_kernel<(gpt2cc::cuda::attention_kernels::"
     "HeadGemm)0, float, float>(gpt2cc::cuda::attention_kernels::HeadGemmParams<float, float>)", "attention"),
    ("void gpt2cc::cuda::flash::flash_attention_backward_dq_kernel<64, 128>(gpt2cc::cuda::flash::FlashBackwardParams)",
     "attention"),
    ("void gpt2cc::cuda::(anonymous namespace)::bias_gelu_kernel(__nv_bfloat16 *, __nv_bfloat16 *, const "
     "__nv_bfloat16 *, unsigned long, int)", "gelu"),
    ("void gpt2cc::cuda::adamw_kernels::adamw_update_kernel<__nv_bfloat16, __nv_bfloat16>(gpt2cc::cuda::adamw_kernels::"
     "AdamWKernelParams<__nv_bfloat16, __nv_bfloat16>)", "optimizer"),
    ("void gpt2cc::cuda::adamw_kernels::sum_of_squares_partials_kernel<__nv_bfloat16>(double *, const __nv_bfloat16 *, "
     "unsigned long)", "reduction"),
    # cuBLAS / cuBLASLt / CUTLASS
    ("nvjet_sm90_tst_256x128_64x4_2x1_v_bz_coopA_bias_TNT", "matmul"),
    ("nvjet_tst_192x192_64x3_2x1_v_bz_coopB_gelu_aux_NNT", "matmul"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off_kernel"
     "__5x_cublas", "matmul"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x1_tn_align8>(cutlass_80_wmma_"
     "tensorop_bf16_s161616gemm_bf16_32x32_128x1_tn_align8::Params)", "matmul"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16, true, false, false>"
     "(cublasLt::cublasSplitKParams<float>, const float *, const __nv_bfloat16 *, __nv_bfloat16 *, const float *, "
     "const float *, const __nv_bfloat16 *, const float *, __nv_bfloat16 *, void *, long, float *, int *)", "matmul"),
    # PyTorch: SDPA flash, fused AdamW, clip_grad_norm_, eager ops, Inductor's Triton kernels
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::bfloat16_t, "
     "Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, true, false, false, true, true, false, "
     "false>(pytorch_flash::Flash_fwd_params)", "attention"),
    ("void pytorch_flash::flash_bwd_dot_do_o_kernel<true, Flash_bwd_kernel_traits<64, 128, 128, 8, 4, 2, 2, false, "
     "false, cutlass::bfloat16_t, Flash_kernel_traits<64, 128, 128, 8, cutlass::bfloat16_t> > >"
     "(pytorch_flash::Flash_bwd_params)", "attention"),
    ("fmha_cutlassB_bf16_aligned_64x64_k64_sm80(PyTorchMemEffAttention::AttentionBackwardKernel<cutlass::arch::Sm80, "
     "cutlass::bfloat16_t, true, false, true, 64, 64, 64, false>::Params)", "attention"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4, "
     "(at::native::ADAM_MODE)1, false>, double*, double, double, double, double, double, bool, float*, float*>"
     "(at::native::(anonymous namespace)::FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::"
     "FusedAdamMathFunctor<float, 4, (at::native::ADAM_MODE)1, false>, double*, double, double, double, double, "
     "double, bool, float*, float*)", "optimizer"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "TensorListMetadata<1>, at::native::(anonymous namespace)::LpNormFunctor<float, (at::native::(anonymous "
     "namespace)::NormType)1, float, float>, float*, int>(at::native::(anonymous namespace)::TensorListMetadata<1>, "
     "at::native::(anonymous namespace)::LpNormFunctor<float, (at::native::(anonymous namespace)::NormType)1, float, "
     "float>, float*, int)", "reduction"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::NormTwoOps<float, float, float>, "
     "unsigned int, float, 4, 4> >(at::native::ReduceOp<float, at::native::NormTwoOps<float, float, float>, "
     "unsigned int, float, 4, 4>)", "reduction"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >"
     "(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)", "elementwise"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, at::native::(anonymous "
     "namespace)::LogSoftMaxForwardEpilogue>(float*, float const*, int)", "classifier"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>(int, float, "
     "c10::BFloat16 const*, c10::BFloat16 const*, c10::BFloat16 const*, float*, float*, c10::BFloat16*)",
     "layernorm"),
    ("void at::native::embedding_backward_feature_kernel<float, float, long>(long const*, float const*, float*, int, "
     "long, int)", "embedding"),
    ("triton_per_fused__to_copy_add_native_layer_norm_native_layer_norm_backward_12", "layernorm"),
    ("triton_red_fused__log_softmax__to_copy_nll_loss_forward_5", "classifier"),
    ("triton_poi_fused_gelu_gelu_backward_view_9", "gelu"),
    ("triton_poi_fused_add_mul_pow_tanh_view_3", "gelu"),
    ("triton_poi_fused_add_embedding_0", "embedding"),
    ("triton_poi_fused_embedding_dense_backward_1", "embedding"),
    ("triton_red_fused_sum_view_7", "reduction"),
    ("triton_per_fused_linalg_vector_norm_2", "reduction"),
    ("triton_poi_fused__to_copy_transpose_view_4", "triton_fused"),
    ("triton_tem_fused_mm_11", "matmul"),
    ("triton_poi_fused__scaled_dot_product_flash_attention_backward_cat_8", "attention"),
    ("Memcpy DtoD (Device -> Device)", "memcpy"),
    ("Memset (Device)", "memcpy"),
    # CPU op names (gpt2_train.py --device cpu --profile-json)
    ("aten::addmm", "matmul"), ("aten::mm", "matmul"), ("aten::native_layer_norm", "layernorm"),
    ("aten::_log_softmax", "classifier"), ("aten::gelu", "gelu"), ("aten::embedding_dense_backward", "embedding"),
    ("aten::_fused_adamw_", "optimizer"), ("aten::add_", "elementwise"),
]


def synthetic_ncu_csv(launches, page="details"):
    """An ncu --csv report of (name, grid, block, ns) launches, in ncu's format: ==PROF== lines,
    a header, quoted fields, numbers with thousands separators; the program's output in between."""
    out = io.StringIO()
    out.write("==PROF== Connected to process 4242 (/work/build-gpu/benchmarks/gpu/bench_train_gpu)\n")
    w = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    base = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size",
            "Grid Size", "Device", "CC"]
    if page == "details":
        w.writerow(base + ["Section Name", "Metric Name", "Metric Unit", "Metric Value", "Rule Name", "Rule Type",
                           "Rule Description", "Estimated Speedup Type", "Estimated Speedup"])
    else:
        w.writerow(base + ["device__attribute_display_name", METRIC])
        w.writerow([""] * len(base) + ["", "nsecond"])
    for i, (name, grid, block, ns) in enumerate(launches):
        ident = [str(i), "4242", "bench_train_gpu", "127.0.0.1", name, "1", "7", block, grid, "0", "9.0"]
        if page == "details":
            w.writerow(ident + ["Command line profiler metrics", METRIC, "nsecond", f"{ns:,}", "", "", "", "", ""])
        else:
            w.writerow(ident + ["NVIDIA H200", f"{ns:,}"])
        if i == 3:
            out.write("device NVIDIA H200 (driver 13000, runtime 13000), backend cuda bf16\n")
    out.write("==PROF== Disconnected from process 4242\n")
    return out.getvalue()


def self_test():
    """Returns the number of failed checks."""
    failures = []

    def expect(cond, what):
        if not cond:
            failures.append(what)

    for name, want in NAME_CASES:
        got = categorize(name)
        expect(got == want, f"categorize({short_name(name, 70)!r}) = {got}, expected {want}")
    for name, want in GPT2CC_KERNEL_CATEGORIES.items():
        got = categorize(f"void gpt2cc::cuda::x_kernels::{name}<float>(float *, int)")
        expect(got == want, f"gpt2cc kernel {name}: {got}, expected {want}")
    in_sources = source_kernel_names(SOURCE_DIR)
    if in_sources is not None:
        unplaced = sorted(n for n in in_sources - {"kernel_image_probe"}
                          if categorize(f"void gpt2cc::cuda::x_kernels::{n}<float>(float *)") == "other")
        expect(not unplaced, f"kernels/ has __global__ functions no category pattern takes: {', '.join(unplaced)} "
                             "(extend the patterns at the top of this file, and GPT2CC_KERNEL_CATEGORIES)")
        expect(len(in_sources) >= 30, f"only {len(in_sources)} __global__ functions found in kernels/")
    expect(strip_parameters("void f<(bool)1>(int, g(x))") == "void f<(bool)1>", "parameter list stripped")
    expect(match_text("void a::b_kernels::k<c::D>(e)") == "k<c::d>", "namespace dropped, template kept")
    expect(parse_number("1,234.5") == 1234.5 and parse_number("12,5") == 12.5 and parse_number("1,234") == 1234.0,
           "ncu number formats")

    # The step finder: launches before the steps, then 3 identical steps whose tail holds a run
    # of identical launches (the trap for the shortest repeating tail).
    pre = [("void gpt2cc::kernel_image_probe()", "(1, 1, 1)", "(1, 1, 1)", 2_000),
           ("void gpt2cc::cuda::convert_kernels::convert_kernel<true>(__nv_bfloat16 *, const float *, unsigned long)",
            "(1000, 1, 1)", "(256, 1, 1)", 50_000)]
    layer = [("void gpt2cc::cuda::layernorm_kernels::layernorm_forward_cached_row_kernel<__nv_bfloat16, 8, true>"
              "(gpt2cc::cuda::layernorm_kernels::LayerNormForwardParams<__nv_bfloat16>)", "(512, 1, 1)", "(256, 1, 1)",
              30_000),
             ("nvjet_sm90_tst_256x128_64x4_2x1_v_bz_coopA_bias_TNT", "(132, 1, 1)", "(384, 1, 1)", 400_000),
             ("void gpt2cc::cuda::flash::flash_attention_forward_kernel<64, 128>"
              "(gpt2cc::cuda::flash::FlashForwardParams)", "(8, 12, 64)", "(256, 1, 1)", 250_500)]
    step = ([("void gpt2cc::cuda::encoder_kernels::encoder_forward_packed_kernel<__nv_bfloat16, 8>(__nv_bfloat16 *, "
              "const int *, const __nv_bfloat16 *, const __nv_bfloat16 *, int, int, int)", "(96, 1, 1)", "(256, 1, 1)",
              10_000)] + layer * 3 +
            [("void gpt2cc::cuda::crossentropy_kernels::fused_classifier_block_per_row_kernel<__nv_bfloat16, true>"
              "(__nv_bfloat16 *, float *, const int *, float, int, int)", "(65536, 1, 1)", "(1024, 1, 1)", 1_000_000)] +
            [("void gpt2cc::cuda::adamw_kernels::adamw_update_kernel<__nv_bfloat16, __nv_bfloat16>(gpt2cc::cuda::"
              "adamw_kernels::AdamWKernelParams<__nv_bfloat16, __nv_bfloat16>)", "(4096, 1, 1)", "(256, 1, 1)",
              100_000)] * 4)
    first = [(n, g, b, ns + 999) for n, g, b, ns in step]  # the validation step: slower, the same launches
    launches = pre + first + step + step
    keys = [(n, g, b) for n, g, b, _ in launches]
    expect(last_step_length(keys, 2) == len(step), f"step length {last_step_length(keys, 2)}, expected {len(step)}")
    expect(last_step_length(keys, 3) == len(step), "three identical steps found")
    expect(last_step_length([("a",), ("b",)], 2) is None, "no repeat: None")
    step_us = sum(ns for *_, ns in step) / 1e3
    with tempfile.TemporaryDirectory() as d:
        for page in ("details", "raw"):
            csv_path = os.path.join(d, f"ncu_{page}.csv")
            with open(csv_path, "w") as f:
                f.write(synthetic_ncu_csv(launches, page))
            with gzip.open(csv_path + ".gz", "wt") as f:
                f.write(synthetic_ncu_csv(launches, page))
            expect(gpt2cc_side(csv_path + ".gz", None, 2, 5)["launches"] == len(step), f"{page} page, gzip'd")
            parsed = read_ncu_csv(synthetic_ncu_csv(launches, page))
            expect(len(parsed) == len(launches) and parsed[-1]["us"] == 100.0,
                   f"{page} page: {len(parsed)} launches parsed, last {parsed[-1]['us'] if parsed else None} us")
        train_path = os.path.join(d, "train.json")
        with open(train_path, "w") as f:
            json.dump({"B": 64, "T": 1024, "dtype": "bf16", "ms_per_step_median": 5.0, "cuda_graphs": True}, f)
        g = gpt2cc_side(csv_path, train_path, repeats=2, min_step_kernels=5)
        expect(abs(g["kernel_total_us"] - step_us) < 1e-6, f"gpt2cc step total {g['kernel_total_us']} us, "
                                                           f"expected {step_us} (the last step, not the first)")
        expect(g["launches"] == len(step) and g["kernels_before_step"] == len(pre) + 2 * len(step),
               "launch counts of the step")
        expect(abs(g["by_category"]["matmul"] - 3 * 400.0) < 1e-6, "3 GEMMs of 400 us = 1.2 ms matmul")
        expect(abs(g["by_category"]["attention"] - 3 * 250.5) < 1e-6, "3 flash forwards")
        expect(abs(g["by_category"]["optimizer"] - 400.0) < 1e-6 and g["kernels"][0]["category"] == "matmul",
               "4 AdamW launches; the GEMM is the longest kernel")
        expect(g["kernels"][0]["calls"] == 3, "calls counted per kernel")
        try:
            gpt2cc_side(csv_path, train_path, repeats=2, min_step_kernels=1000)
            expect(False, "a step shorter than --min-step-kernels is an error")
        except ValueError as e:
            expect("cannot find the last training step" in str(e), "error names the problem")
        try:
            read_ncu_csv("==PROF== Connected\n==ERROR== ERR_NVGPUCTRPERM\n")
            expect(False, "a log without CSV is an error")
        except ValueError as e:
            expect("no ncu CSV header" in str(e) and "ERR_NVGPUCTRPERM" in str(e), "error shows the log's start")
        # ncu killed mid-write: the last row cut inside its value ("100,0" of "100,000" ns would read
        # as 100.0 ns with a decimal comma) or after a whole field is dropped; whole rows are kept.
        whole = synthetic_ncu_csv(launches[-3:]).replace("==PROF== Disconnected from process 4242\n", "")
        for cut in (whole.rindex('"100,000"') + len('"100,0'), whole.rindex('"100,000"') + len('"100,000"')):
            parsed = read_ncu_csv(whole[:cut])
            expect([k["us"] for k in parsed] == [100.0, 100.0], f"a row cut at {cut}: dropped, got {parsed}")
        expect(len(read_ncu_csv(whole)) == 3, "the whole rows of a report ncu did not finish")
        try:
            read_ncu_csv(synthetic_ncu_csv(launches[:2]).replace('"50,000"', '"n/a"'))
            expect(False, "a duration that is not a number is an error")
        except ValueError as e:
            expect("kernel 1 (convert_kernel<true>)" in str(e) and "'n/a'" in str(e), f"names the kernel: {e}")

        pt_path = os.path.join(d, "pt_profile.json")
        kernels = [
            {"name": "nvjet_sm90_tst_256x128_64x4_2x1_v_bz_coopA_NNT", "calls": 48, "total_us": 2000.0},
            {"name": "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, "
                     "cutlass::bfloat16_t, Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, true, "
                     "false, false, true, true, false, false>(pytorch_flash::Flash_fwd_params)", "calls": 12,
             "total_us": 500.0},
            {"name": "triton_per_fused_add_native_layer_norm_3", "calls": 24, "total_us": 300.0},
            {"name": "triton_poi_fused__to_copy_1", "calls": 2, "total_us": 100.0},
            {"name": "Memset (Device)", "calls": 3, "total_us": 100.0}]
        with open(pt_path, "w") as f:
            json.dump({"B": 64, "T": 1024, "torch": "2.11.0+cu130", "compile": True, "ms_per_step_median": 4.0,
                       "time_source": "cuda_kernels",
                       "steps": [{"wall_ms": 9.0, "total_us": 1.0, "kernels": kernels[:1]},
                                 {"wall_ms": 4.5, "total_us": 3000.0, "kernels": kernels,
                                  "skipped": [{"name": "Context Sync", "calls": 1, "total_us": 50.0}]}]}, f)
        p = pytorch_side(pt_path)
        expect(p["kernel_total_us"] == 3000.0 and p["by_category"]["matmul"] == 2000.0, "PyTorch: the last step")
        expect(p["by_category"]["memcpy"] == 100.0 and p["by_category"]["triton_fused"] == 100.0,
               "memset and unnamed Triton kernels in their own categories")
        profile = make_profile(g, p)
        expect(profile["B"] == 64 and not profile["notes"], "same shape: no note")
        text = "\n".join(render_markdown(profile))
        expect("## Where one training step's time goes (B=64, T=1024, bf16)" in text, "heading")
        expect(f"| {LABELS['matmul']} | 1.20 | 34.8% | 2.00 | 66.7% | -0.80 |" in text,
               "matmul row: 1.2 of 3.4515 ms, 2.0 of 3.0 ms")
        expect("| **all kernels** | **3.45** | 100% | **3.00** | 100% | +0.45 |" in text, "totals row")
        expect("| step wall time (unprofiled median) | 5.00 | | 4.00 | | +1.00 |" in text, "wall row")
        expect("| outside kernels (wall − kernels) | 1.55 | 31.0% | 1.00 | 25.0% | +0.55 |" in text, "outside row")
        expect(f"| {LABELS['gelu']} |" not in text, "an empty category is left out")
        expect("`ncu --launch-skip 32 --launch-count 15`" in text, "launch-skip hint")
        expect("| 1 | `nvjet_sm90_tst_256x128_64x4_2x1_v_bz_coopA_bias_TNT` | matmul | 3 | 1.20 | 34.8% |" in text,
               "gpt2cc top kernel row")
        expect("| 2 | `fused_classifier_block_per_row_kernel<__nv_bfloat16, true>` | classifier | 1 | 1.00 | 29.0% |"
               in text, "namespaces dropped from the names shown")
        expect("`flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, bfloat16_t, Fla..."
               "` | attention | 12 | 0.50 | 16.7% |" in text, "long names cut, in code spans")
        expect("`Memset (Device)` | memcpy |" in text, "a profiler label keeps its brackets")
        expect("Context Sync (0.05 ms)" in text, "skipped device events named")
        only = "\n".join(render_markdown(make_profile(None, p)))
        expect("| **all kernels** | **n/a** | n/a | **3.00** | 100% | n/a |" in only and "n/a (no profile)" in only,
               "one side missing gives n/a")
        p2 = dict(p, B=32)
        expect(any("different shapes" in n for n in make_profile(g, p2)["notes"]), "shape mismatch noted")
        out_json, out_md = os.path.join(d, "profile.json"), os.path.join(d, "profile.md")
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["--ncu-csv", csv_path, "--gpt2cc-json", train_path, "--pytorch-json", pt_path, "--json",
                       out_json, "--markdown", out_md, "--min-step-kernels", "5"])
        expect(rc == 0, f"main returned {rc}")
        expect(load_json(out_json)["gpt2cc"]["launches"] == len(step), "profile.json written")
        with open(out_md) as f:
            expect(f.read().startswith("## Where one training step's time goes"), "profile.md written")
        expect(not [n for n in os.listdir(d) if n.startswith(".tmp-")], "no temporary file left")
    return self_test_verdict("profile_step.py", failures)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ncu-csv", help="ncu --csv output over a bench_train_gpu run (gpt2cc)")
    ap.add_argument("--gpt2cc-json", help="bench_train_gpu --json of an unprofiled run at the same shape (wall time)")
    ap.add_argument("--pytorch-json", help="gpt2_train.py --profile-json output")
    ap.add_argument("--identical-steps", type=int, default=2,
                    help="how many identical steps end the ncu run (default 2: warm-up and timed step)")
    ap.add_argument("--min-step-kernels", type=int, default=20,
                    help="fewest launches a training step can have (a shorter repeating tail is an error)")
    ap.add_argument("--json", help="write profile.json here")
    ap.add_argument("--markdown", help="write the tables here")
    ap.add_argument("--self-test", action="store_true", help="check on synthetic inputs and exit")
    a = ap.parse_args(argv)
    if a.self_test:
        return 1 if self_test() else 0
    if not a.ncu_csv and not a.pytorch_json:
        ap.error("give --ncu-csv, --pytorch-json or both (or --self-test)")
    if a.identical_steps < 2:
        ap.error(f"--identical-steps must be >= 2, got {a.identical_steps}")
    rc = 0
    gpt2cc = pytorch = None
    # Each side on its own: a file the other side's stage left malformed (cut short, another
    # version's fields) costs that side only, whatever the error.
    try:
        if a.ncu_csv:
            gpt2cc = gpt2cc_side(a.ncu_csv, a.gpt2cc_json, a.identical_steps, a.min_step_kernels)
    except Exception as e:  # noqa: BLE001
        print(f"profile_step.py: gpt2cc: {type(e).__name__}: {e}", file=sys.stderr)
        rc = 1
    try:
        if a.pytorch_json:
            pytorch = pytorch_side(a.pytorch_json)
    except Exception as e:  # noqa: BLE001
        print(f"profile_step.py: PyTorch: {type(e).__name__}: {e}", file=sys.stderr)
        rc = 1
    if gpt2cc is None and pytorch is None:
        return 1
    profile = make_profile(gpt2cc, pytorch)
    if a.json:
        write_text_atomic(a.json, json.dumps(profile, indent=1) + "\n")
    try:
        text = "\n".join(render_markdown(profile)) + "\n"
    except Exception as e:  # noqa: BLE001 (profile.json is written; report.py renders it again)
        print(f"profile_step.py: the tables: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if a.markdown:
        write_text_atomic(a.markdown, text)
    print(text)
    return rc


if __name__ == "__main__":
    sys.exit(main())
