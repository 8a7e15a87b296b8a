#!/usr/bin/env bash
# scripts/bench_gpu.sh without a GPU: its argument errors, and a call on a bare device machine
# continuing from the results archive carried in the kit (the report then holds the earlier
# stages, and the archive it returns too). Run by ctest (label tooling) with the repository root.
set -uo pipefail
ROOT=${1:?usage: test_bench_gpu_script.sh REPO_ROOT}
SCRIPT="$ROOT/scripts/bench_gpu.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILURES=0
fail() {
  echo "FAILED: $*" >&2
  FAILURES=$((FAILURES + 1))
}

# Bad arguments exit 2 and name the problem.
out=$(bash "$SCRIPT" --stage nope 2>&1); rc=$?
[[ $rc == 2 && "$out" == *"unknown stage 'nope'"* ]] || fail "bad stage: exit $rc, '$out'"
out=$(bash "$SCRIPT" --kit "$TMP/none" 2>&1); rc=$?
[[ $rc == 2 && "$out" == *"--kit: no folder"* ]] || fail "missing kit: exit $rc, '$out'"
out=$(bash "$SCRIPT" --steps 0 2>&1); rc=$?
[[ $rc == 2 && "$out" == *"--steps must be a positive integer"* ]] || fail "bad --steps: exit $rc, '$out'"

# Results of an earlier call, as its archive comes back: bench-results/ with a training pair.
mkdir -p "$TMP/earlier/bench-results" "$TMP/kit" "$TMP/out"
cd "$TMP/earlier/bench-results" || exit 1
printf 'gpu: NVIDIA H100 80GB HBM3\ndate: 2026-11-22T00:00:00Z\n' >env.txt
printf 'train_bf16\t0\t90\n' >status.tsv
common='"T": 1024, "B": 16, "flops_per_token": 7.5e8, "ms_per_step_median": 100.0, "ms_per_step_mean": 101.0'
echo "{$common, \"tokens_per_s\": 240000.0, \"mfu\": 0.55, \"peak_memory_bytes\": 1073741824,
      \"backend\": \"cuda bf16\", \"device\": \"NVIDIA H100 80GB HBM3\", \"cuda_graphs\": true,
      \"recompute_gelu\": false, \"loss_first\": 10.9, \"loss_last\": 10.5}" >train_bf16.json
echo "{$common, \"tokens_per_s\": 200000.0, \"mfu\": 0.46, \"peak_memory_bytes\": 2147483648,
      \"torch\": \"2.11\", \"compile\": true, \"final_loss\": 10.4}" >pt_train_bf16.json
tar -czf "$TMP/kit/bench_gpu_results.tar.gz" -C "$TMP/earlier" bench-results
cd "$ROOT" || exit 1

# A bare machine: no build folder, no results. The report stage needs no binaries: no build.
log=$(OUT="$TMP/out" bash "$SCRIPT" --stage report --kit "$TMP/kit" --build-dir "$TMP/build-gpu" 2>&1); rc=$?
[[ $rc == 0 ]] || fail "report stage exit $rc: $log"
[[ "$log" == *"continuing from the results in $TMP/kit/bench_gpu_results.tar.gz"* ]] || fail "no restore: $log"
[[ "$log" != *"building first"* ]] || fail "the report stage started a build"
grep -q "NVIDIA H100 80GB HBM3" "$TMP/out/report.md" 2>/dev/null || fail "report.md lacks the earlier env.txt"
grep -q "1.20x (met)" "$TMP/out/report.md" 2>/dev/null || fail "report.md lacks the earlier training ratio"
tar -tzf "$TMP/out/bench_gpu_results.tar.gz" 2>/dev/null | grep -q "train_bf16.json" ||
  fail "the returned archive lacks the earlier results"
grep -q "^report	0	" "$TMP/out/status.tsv" 2>/dev/null || fail "status.tsv lacks the report stage"
grep -q "^train_bf16	0	" "$TMP/out/status.tsv" 2>/dev/null || fail "status.tsv lost the earlier stages"

# A warm machine (results present) does not unpack the archive over them.
log=$(OUT="$TMP/out" bash "$SCRIPT" --stage report --kit "$TMP/kit" --build-dir "$TMP/build-gpu" 2>&1); rc=$?
[[ $rc == 0 && "$log" != *"continuing from"* ]] || fail "second call: exit $rc, restored again: $log"

((FAILURES == 0)) && echo "bench_gpu.sh checks passed"
exit $((FAILURES > 0))
