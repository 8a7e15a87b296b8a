#!/usr/bin/env python3
"""Registers, spills and instruction counts of every CUDA kernel, read from the compiled code.

Runs without a GPU: cuobjdump reads the sm_90 cubins in the kernels library of a CUDA build.
For each kernel: registers per thread, the stack frame and local memory, static shared memory
(from `cuobjdump -res-usage`; on sm_90 that figure counts the 1 KiB system reserve: the flash
kernels, which declare none but the fused backward's 16-byte ticket, show 1024 and 1040), and
from its SASS the local-memory loads and stores (LDL/STL: spills), the tensor-core instructions
(HMMA) and ldmatrix loads (LDSM). Prints a Markdown table.

    python3 scripts/kernel_resources.py [--build build] [--filter flash] [--cuobjdump PATH]

cuobjdump: --cuobjdump, else the one on PATH or in the CUDA toolkit, else PyPI's
nvidia-cuda-cuobjdump (with nvidia-cuda-nvdisasm, which `cuobjdump -sass` runs from the same
folder) installed into .tools/cuobjdump (pip install --target; this is how the figures in
docs/cuda.md were made on a machine whose toolkit had no cuobjdump).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_cuobjdump(given):
    if given:
        return given
    for candidate in (shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    target = ROOT / ".tools" / "cuobjdump"
    found = sorted(target.glob("nvidia/*/bin/cuobjdump"))
    if not found:
        print("kernel_resources: no cuobjdump; installing PyPI's nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm "
              "(which cuobjdump -sass runs) into .tools/cuobjdump", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target),
                        "nvidia-cuda-cuobjdump", "nvidia-cuda-nvdisasm"], check=True)
        found = sorted(target.glob("nvidia/*/bin/cuobjdump"))
    if not found:
        sys.exit("kernel_resources: nvidia-cuda-cuobjdump installed no cuobjdump binary")
    return str(found[-1])


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def short(name):
    """gpt2cc::cuda::flash::flash_attention_forward_kernel<64, 128>(...) -> flash_attention_forward_kernel<64, 128>"""
    name = re.sub(r"\(.*\)$", "", name)
    name = re.sub(r"^(void )?", "", name)
    return re.sub(r"^gpt2cc::cuda::(\w+::)*", "", name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build", help="a CUDA build directory (default: build)")
    parser.add_argument("--filter", default="", help="only kernels whose name contains this")
    parser.add_argument("--cuobjdump", default="", help="the cuobjdump to use")
    args = parser.parse_args()
    library = Path(args.build) / "kernels" / "libgpt2cc_kernels.a"
    if not library.is_file():
        sys.exit(f"kernel_resources: {library} not found: build with CUDA first (GPT2CC_CUDA=ON)")
    cuobjdump = find_cuobjdump(args.cuobjdump)

    usage = subprocess.run([cuobjdump, "-res-usage", str(library)], capture_output=True, text=True, check=True).stdout
    resources, function = {}, None
    for line in usage.splitlines():
        match = re.match(r"\s*Function (\S+):", line)
        if match:
            function = match.group(1)
            continue
        if function and "REG:" in line:
            fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            resources[function] = fields
            function = None

    sass_run = subprocess.run([cuobjdump, "-sass", str(library)], capture_output=True, text=True)
    if sass_run.returncode != 0:
        sys.exit(f"kernel_resources: {cuobjdump} -sass failed (it needs nvdisasm beside it or on PATH): "
                 f"{sass_run.stderr.strip()}")
    sass = sass_run.stdout
    counts = collections.defaultdict(collections.Counter)
    function = None
    for line in sass.splitlines():
        match = re.match(r"\s*Function : (\S+)", line)
        if match:
            function = match.group(1)
            continue
        if function is None:
            continue
        match = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(\.[A-Z0-9_.]+)?\s", line)
        if match:
            counts[function][match.group(1)] += 1

    names = demangle(sorted(resources))
    rows = []
    for mangled, fields in resources.items():
        name = short(names[mangled])
        if args.filter not in name:
            continue
        c = counts.get(mangled, collections.Counter())
        rows.append((name, fields.get("REG", "?"), fields.get("STACK", "?"), fields.get("LOCAL", "?"),
                     fields.get("SHARED", "?"), c["STL"], c["LDL"], c["HMMA"], c["LDSM"]))
    rows.sort()
    print(f"Kernels of {library} (sm_90 cubins), read by {cuobjdump}: REG registers per thread, STACK and")
    print("LOCAL bytes of stack frame and local memory, SHARED cuobjdump's static shared memory bytes (on")
    print("sm_90 with the 1 KiB system reserve where a kernel uses shared memory); in the SASS, STL / LDL local")
    print("stores and loads (spills), HMMA tensor-core instructions, LDSM ldmatrix loads.\n")
    print("| kernel | REG | STACK | LOCAL | SHARED | STL | LDL | HMMA | LDSM |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| `" + row[0] + "` | " + " | ".join(str(v) for v in row[1:]) + " |")


if __name__ == "__main__":
    main()
