#!/usr/bin/env bash
# Every script a user runs (scripts/*.sh but the two that others source) answers --help with its
# usage and exit code 0 at once: nothing installed, configured or built first (its build folders,
# pointed at a scratch directory here, are not made). race_check.sh, which takes no arguments,
# refuses another one with exit code 2. The PyTorch reference scripts (benchmarks/pytorch), with
# torch made unimportable, say in one line that they need it (exit code 1), not a traceback.
# Argument: the source tree. Run by ctest (label tooling).
set -uo pipefail
ROOT=$1
FAILURES=0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export GPT2CC_BUILD_DIR="$TMP/build" GPT2CC_RACE_BUILD_DIR="$TMP/build-race" GPT2CC_DEMO_DIR="$TMP/demo"
for script in "$ROOT"/scripts/*.sh; do
  name=$(basename "$script")
  [[ $name == deps.sh || $name == gpu_common.sh ]] && continue
  out=$(timeout 20 bash "$script" --help 2>&1); rc=$?
  if [[ $rc != 0 || $(wc -l <<<"$out") -lt 3 || "$out" != *"scripts/$name"* ]]; then
    echo "FAILED: $name --help: exit $rc (want 0 and a usage naming scripts/$name), output: ${out:0:300}" >&2
    FAILURES=$((FAILURES + 1))
  fi
  if [[ -n "$(ls -A "$TMP")" ]]; then
    echo "FAILED: $name --help made $(ls -A "$TMP" | tr '\n' ' ')" >&2
    FAILURES=$((FAILURES + 1))
    rm -rf "${TMP:?}"/*
  fi
done
out=$(timeout 20 bash "$ROOT/scripts/race_check.sh" --bogus 2>&1); rc=$?
if [[ $rc != 2 || "$out" != *"unknown argument '--bogus'"* ]]; then
  echo "FAILED: race_check.sh --bogus: exit $rc (want 2 naming it), output: ${out:0:300}" >&2
  FAILURES=$((FAILURES + 1))
fi
for script in "$ROOT"/benchmarks/pytorch/*.py; do
  name=$(basename "$script")
  [[ $name == bench_common.py ]] && continue
  out=$(timeout 20 python3 -c 'import runpy, sys
sys.modules["torch"] = None  # an import of torch now raises ImportError, installed or not
sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0])
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")' "$script" 2>&1); rc=$?
  if [[ $rc != 1 || "$out" != "$name: needs torch (pip install torch): "* || $(wc -l <<<"$out") != 1 ]]; then
    echo "FAILED: $name --help without torch: exit $rc (want 1 and one line saying it needs torch), output: ${out:0:300}" >&2
    FAILURES=$((FAILURES + 1))
  fi
done
((FAILURES == 0)) && echo "every script answered --help"
exit $((FAILURES > 0))
