#!/usr/bin/env bash
# Every program gpt2cc builds (the command-line tools and the benchmarks) answers --help with its
# usage and exit code 0, and an unknown flag with a message naming it and exit code 2 (the contract
# of core/cli.hpp). Arguments: the programs' paths; an empty one (a program this build lacks) is
# skipped. Run by ctest (label tooling).
set -uo pipefail
FAILURES=0
CHECKED=0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
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
  # The benchmarks refuse, before they run, what they once ignored or took after minutes of work:
  # a stray argument, a --json path that cannot be written, a malformed list item.
  bad=()
  case $name in
    bench_generate) bad=("extra" "--json $TMP" "--json $TMP/missing/x.json" "--samples 4,,16" "--samples abc"
      "--new-tokens 0" "--recompute-new-tokens -1" "--samples-new-tokens -3" "--repeats 0" "--presets d2,") ;;
    bench_train_step) bad=("extra" "--json $TMP" "--json $TMP/missing/x.json" "--configs d2:1x8x3"
      "--configs d2:1x8,") ;;
    bench_cpu_layers | bench_cpu_matmul) bad=("extra") ;;&
    bench_cpu_layers | bench_cpu_attention) bad+=("--json $TMP" "--json $TMP/missing/x.json") ;;
  esac
  for args in "${bad[@]}"; do
    # shellcheck disable=SC2086  # each entry is a few words, split on purpose
    out=$(timeout 60 "$program" $args 2>&1); rc=$?
    word=${args%% *}
    [[ $word == --* ]] || word="unexpected argument '$word'"
    if [[ $rc != 2 || "$out" != *"$word"* ]]; then
      echo "FAILED: $name $args: exit $rc (want 2 and '$word' named), output: ${out:0:300}" >&2
      FAILURES=$((FAILURES + 1))
    fi
  done
  CHECKED=$((CHECKED + 1))
done
if [[ $CHECKED == 0 ]]; then
  echo "FAILED: no program given" >&2
  exit 1
fi
echo "$CHECKED programs checked, $FAILURES failures"
[[ $FAILURES == 0 ]]
