"""What both PyTorch reference benchmarks share: per-call timing and an atomic JSON write."""
import json
import os
import tempfile
import time

import torch


def time_ms(fn, warmup, reps, cuda):
    """Wall time of each of `reps` calls of fn() in ms, after `warmup` untimed calls. On CUDA each
    call is bracketed by events and synchronised, so every figure is one complete call, not a
    pipelined average."""
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


def write_json_atomic(path, obj):
    """Writes obj as JSON to a temporary file beside path, then renames it over path."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
