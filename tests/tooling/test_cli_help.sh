#!/usr/bin/env bash
# Every program gpt2cc builds (the command-line tools and the benchmarks) answers --help with its
# usage and exit code 0, and an unknown flag with a message naming it and exit code 2 (the contract
# of core/cli.hpp). Arguments: the programs' paths; an empty one (a program this build lacks) is
# skipped. Run by ctest (label tooling).
set -uo pipefail
FAILURES=0
CHECKED=0
for program in "$@"; do
  [[ -n "$program" ]] || continue
  name=$(basename "$program")
  out=$(timeout 60 "$program" --help 2>&1); rc=$?
  if [[ $rc != 0 || ! "$out" =~ [Uu]sage ]]; then
    echo "FAILED: $name --help: exit $rc, output: ${out:0:300}" >&2
    FAILURES=$((FAILURES + 1))
  fi
  out=$(timeout 60 "$program" --no-such-flag 2>&1); rc=$?
  if [[ $rc != 2 || "$out" != *no-such-flag* ]]; then
    echo "FAILED: $name --no-such-flag: exit $rc (want 2 and the flag named), output: ${out:0:300}" >&2
    FAILURES=$((FAILURES + 1))
  fi
  CHECKED=$((CHECKED + 1))
done
if [[ $CHECKED == 0 ]]; then
  echo "FAILED: no program given" >&2
  exit 1
fi
echo "$CHECKED programs checked, $FAILURES failures"
[[ $FAILURES == 0 ]]
