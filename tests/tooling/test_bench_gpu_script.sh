#!/usr/bin/env bash
# scripts/bench_gpu.sh without a GPU: its argument errors, the stages a call runs (aliases, the
# one-call device plan, the build a bare machine needs first), a call on a bare device machine
# continuing from the results archive carried in the kit (the report then holds the earlier
# stages, and the archive it returns too), and the kit's prebuilt binaries: used when their
# fingerprint is these sources' and a CUDA test passes, else a build (here a stand-in cmake that
# fails, so nothing is built). Run by ctest (label tooling) with the repository root.
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

# The stages a call runs.
out=$(bash "$SCRIPT" --stage device --dry-run --build-dir "$TMP/none" 2>&1); rc=$?
want="stages build test train_bf16 pt_bf16 attention pt_attention parity kernels train_fp32 pt_fp32 sanitize report"
[[ $rc == 0 && "$out" == *"$want" ]] || fail "device plan: exit $rc, '$out'"
out=$(bash "$SCRIPT" --stage train,pytorch --dry-run --build-dir "$TMP/none" 2>&1); rc=$?
[[ $rc == 0 && "$out" == *"stages build train_bf16 train_fp32 pt_bf16 pt_fp32 pt_attention" ]] ||
  fail "aliases: exit $rc, '$out'"
out=$(bash "$SCRIPT" --stage report,pt_attention --dry-run --build-dir "$TMP/none" 2>&1); rc=$?
[[ $rc == 0 && "$out" == "bench_gpu.sh: stages report pt_attention" ]] || fail "no build needed: exit $rc, '$out'"
[[ ! -e "$TMP/none" ]] || fail "--dry-run created the build folder"

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
# (the listing first: grep -q closing the pipe early would fail tar, and the pipeline, with SIGPIPE)
listing=$(tar -tzf "$TMP/out/bench_gpu_results.tar.gz" 2>/dev/null)
[[ "$listing" == *"train_bf16.json"* ]] || fail "the returned archive lacks the earlier results"
grep -q "^report	0	" "$TMP/out/status.tsv" 2>/dev/null || fail "status.tsv lacks the report stage"
grep -q "^train_bf16	0	" "$TMP/out/status.tsv" 2>/dev/null || fail "status.tsv lost the earlier stages"

# A warm machine (results present) does not unpack the archive over them.
log=$(OUT="$TMP/out" bash "$SCRIPT" --stage report --kit "$TMP/kit" --build-dir "$TMP/build-gpu" 2>&1); rc=$?
[[ $rc == 0 && "$log" != *"continuing from"* ]] || fail "second call: exit $rc, restored again: $log"

# The kit's binaries: stand-ins (scripts) at the paths scripts/gpu_common.sh lists, each test
# executable passing unless told otherwise (PROBE_EXIT: test_cuda_layers' exit code; WARN: the
# CLI tests print the warning of their [cuda] cases without a device); a cmake that fails at once,
# so no build starts.
source "$ROOT/scripts/gpu_common.sh"
make_binaries_kit() {  # DIR FINGERPRINT PROBE_EXIT [WARN]
  local stage="$TMP/stage-${1##*/}" exe
  mkdir -p "$1" "$stage/kit-libs"
  echo "$2" >"$stage/FINGERPRINT"
  for exe in "${GPT2CC_GPU_BINARIES[@]}"; do
    mkdir -p "$stage/$(dirname "$exe")"
    {
      echo '#!/bin/sh'
      echo 'echo "stand-in $0 $*"'
      [[ -n "${4:-}" && $exe == *_cli ]] && echo 'echo "no CUDA device here, nothing checked"'
      echo "exit $([[ $exe == */test_cuda_layers ]] && echo "$3" || echo 0)"
    } >"$stage/$exe"
    chmod +x "$stage/$exe"
  done
  tar -czf "$1/gpu-binaries.tar.gz" -C "$stage" .
}
mkdir -p "$TMP/fakebin" "$TMP/out-ok" "$TMP/out-stale" "$TMP/out-nogpu" "$TMP/out-warn"
printf '#!/bin/sh\necho "stand-in cmake: no build here" >&2\nexit 1\n' >"$TMP/fakebin/cmake"
chmod +x "$TMP/fakebin/cmake"
fingerprint=$(gpt2cc_source_fingerprint "$ROOT")
[[ "$fingerprint" =~ ^[0-9a-f]{64}$ ]] || fail "fingerprint '$fingerprint'"

make_binaries_kit "$TMP/kit-ok" "$fingerprint" 0
log=$(OUT="$TMP/out-ok" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage test --kit "$TMP/kit-ok" \
  --build-dir "$TMP/build-ok" 2>&1); rc=$?
[[ $rc == 0 && "$log" == *"using the kit's binaries (sources fingerprint $fingerprint)"* ]] || fail "kit binaries: exit $rc: $log"
for exe in build-kit test_cuda_layers test_cuda_bf16 test_cuda_model test_train_cli_cuda test_generate_cli_cuda; do
  grep -q "^$exe	0	" "$TMP/out-ok/status.tsv" 2>/dev/null || fail "status.tsv lacks '$exe 0' (kit binaries)"
done
[[ "$log" == *"stand-in $TMP/build-ok/tests/cuda/test_cuda_model"* ]] || fail "the test stage did not run the kit's binaries"
[[ "$log" == *"stand-in $TMP/build-ok/tests/generate/test_generate_cli [cuda]"* ]] || fail "the CLI tests' [cuda] cases did not run"

# A CLI test whose [cuda] cases only warn (no device) fails the stage.
make_binaries_kit "$TMP/kit-warn" "$fingerprint" 0 warn
log=$(OUT="$TMP/out-warn" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage test --kit "$TMP/kit-warn" \
  --build-dir "$TMP/build-warn" 2>&1); rc=$?
[[ $rc == 1 && "$log" == *"the [cuda] cases found no CUDA device"* ]] || fail "warning CLI tests: exit $rc: $log"
grep -q "^test_train_cli_cuda	1	" "$TMP/out-warn/status.tsv" 2>/dev/null || fail "status.tsv lacks 'test_train_cli_cuda 1'"

make_binaries_kit "$TMP/kit-stale" "0000" 0
log=$(OUT="$TMP/out-stale" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage build --kit "$TMP/kit-stale" \
  --build-dir "$TMP/build-stale" 2>&1); rc=$?
[[ $rc == 1 && "$log" == *"built from other sources (fingerprint 0000"* && "$log" == *"the build failed"* ]] ||
  fail "stale kit binaries: exit $rc: $log"

make_binaries_kit "$TMP/kit-nogpu" "$fingerprint" 77
log=$(OUT="$TMP/out-nogpu" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage build --kit "$TMP/kit-nogpu" \
  --build-dir "$TMP/build-nogpu" 2>&1); rc=$?
[[ $rc == 1 && "$log" == *"do not pass a CUDA test here (exit 77)"* && "$log" == *"building instead"* ]] ||
  fail "kit binaries without a GPU: exit $rc: $log"
[[ ! -e "$TMP/build-nogpu/tests/cuda/test_cuda_layers" ]] || fail "binaries that failed the probe were left in the build folder"

((FAILURES == 0)) && echo "bench_gpu.sh checks passed"
exit $((FAILURES > 0))
