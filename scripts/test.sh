#!/usr/bin/env bash
# Builds gpt2cc (Release, warnings on, all cores) and runs every test with ctest.
# Installs missing build dependencies first. Tests labelled `cuda` need a GPU: without one they
# report themselves skipped (exit 77), and the summary below says so. Those labelled `cuda` and
# `emu` are built only where the CUDA toolkit is installed (not from Debian's main archive): the
# summary says when they were not.
#   scripts/test.sh                 build into ./build and run all tests
#   GPT2CC_BUILD_DIR=dir scripts/test.sh    another build directory (a relative one: the caller's)
#   scripts/test.sh -L cpu          extra arguments go to ctest (here: only the cpu label); a
#                                   filter that selects no test fails
#   scripts/test.sh --help          this text (nothing is installed or built)
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi
build_dir="${GPT2CC_BUILD_DIR:-}"
if [[ -n "$build_dir" && "$build_dir" != /* ]]; then build_dir="$(pwd)/$build_dir"; fi
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_build_deps
# The Hugging Face compatibility test of the tokenizer needs the `tokenizers` Python package
# (it reports itself skipped without it).
ensure_python_packages tokenizers:tokenizers ||
  echo "gpt2cc: could not install the Python package 'tokenizers': its compatibility test will be skipped"
build_dir="${build_dir:-build}"
build_gpt2cc "$build_dir"

status=0
# A filter that selects nothing (-L CPU for -L cpu) is an error, not a pass.
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$(cpu_cores)" "$@" || status=$?

# The CUDA code's tests exist only where the CUDA toolkit is (nvcc for `cuda`, its headers for the
# emulated `emu`), which this script cannot install: say so rather than pass without them.
registered() { ctest --test-dir "$build_dir" -N -L "$1" 2>/dev/null | grep -c 'Test *#' || true; }
if (($(registered emu) == 0)); then
  echo "gpt2cc: the CUDA toolkit was not found: the tests of the CUDA code (labels cuda and emu) were not" \
    "built, so none of them ran (README.md, The two commands)."
elif nvidia-smi -L >/dev/null 2>&1; then
  echo "gpt2cc: a GPU is present: the cuda-labelled tests among those selected ran on it."
else
  echo "gpt2cc: no GPU on this machine: the cuda-labelled tests among those selected (if any) did not run" \
    "(reported as skipped above)."
fi
exit $status
