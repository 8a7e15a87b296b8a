"""What the PyTorch reference scripts share: the import of PyTorch with a clear error where it is
missing, GPT-2's presets, per-call timing, an atomic JSON write, and the GPU peak rates of
benchmarks/gpu/peaks.json (the one table the C++ benchmarks read too). Needs only the standard
library itself."""
import importlib
import json
import os
import platform
import re
import sys
import tempfile
import time

VOCAB = 50257  # GPT-2's vocabulary
MAX_T = 1024  # its context
# name: (layers L, channels C, heads NH); the same presets as gpt2cc's core/config.hpp.
PRESETS = {
    "d2": (2, 128, 4),
    "d4": (4, 256, 4),
    "d6": (6, 384, 6),
    "gpt2": (12, 768, 12),
    "gpt2-medium": (24, 1024, 16),
    "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
}


def import_or_exit(module, install="pip install torch"):
    """The module, imported; where it is missing, a one-line error naming it and how to install it
    (exit status 1) instead of a traceback: each script's --help included, which cannot run
    before its imports."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: needs {module.split('.')[0]} ({install}): {e}")

PEAKS_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "gpu", "peaks.json")


def load_peaks(path=PEAKS_JSON):
    """The entries of peaks.json, in file order (the first whose pattern matches a name wins)."""
    with open(path) as f:
        entries = json.load(f)["gpus"]
    for e in entries:
        for key in ("name", "pattern", "bf16_dense_tflops", "fp32_tflops", "hbm_gbps", "source"):
            if key not in e:
                raise ValueError(f"{path}: entry {e.get('name', '?')} lacks '{key}'")
    return entries


def lookup_peaks(device_name, path=PEAKS_JSON):
    """The peaks.json entry for a CUDA device name (regex search, first match), or None when no
    entry matches. A matched entry may still hold null figures (known variant, unconfirmed rates)."""
    for e in load_peaks(path):
        if re.search(e["pattern"], device_name):
            return e
    return None


def time_ms(fn, warmup, reps, cuda):
    """Wall time of each of `reps` calls of fn() in ms, after `warmup` untimed calls. On CUDA each
    call is bracketed by events and synchronised, so every figure is one complete call, not a
    pipelined average."""
    torch = import_or_exit("torch")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_text_atomic(path, text):
    """Writes text to a temporary file beside path, then renames it over path; mode 0666 less the
    umask, as any other file the user writes (not mkstemp's 0600)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def output_path_problem(path):
    """Why a result file cannot be written at path (None where it can): checked before a run, so
    that its measurements are not lost at the end to a typo in the path."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "is a directory"
    if not os.path.isdir(directory):
        return f"its folder {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"its folder {directory} is not writable"
    return None


def output_flags_problem(args, flags=("json", "md")):
    """The message ('--json PATH: why') for the first of the parsed args' result-file flags that
    cannot be written (output_path_problem); None where all can, or none is given."""
    for flag in flags:
        path = getattr(args, flag)
        problem = path and output_path_problem(path)
        if problem:
            return f"--{flag} {path}: {problem}"
    return None


def write_json_atomic(path, obj, indent=2):
    """obj as JSON through write_text_atomic."""
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def cpu_machine():
    """The CPU a benchmark ran on: its model name, core count and the load average at the start."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
