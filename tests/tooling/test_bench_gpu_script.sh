#!/usr/bin/env bash
# scripts/bench_gpu.sh without a GPU: its argument errors (a bad stage named as given, a flag
# without its value), the stages a call runs (aliases, the one-call device plan, the build a bare
# machine needs first), a relative --out (the caller's), a call on a bare device machine continuing
# from the results archive carried in the kit (the report then holds the earlier stages, and the
# archive it returns too; an earlier call's environment kept in env-earlier.txt), the returned
# archive's contents (no checkpoints, no big file, under its size cap), the --budget (the report
# runs when it is used up; a skipped step, profile, designs or parity run leaves an earlier call's
# results), and the kit's prebuilt binaries: used when their fingerprint is these sources' and a
# CUDA test passes, else a build (here a stand-in cmake that fails, so nothing is built; one that
# succeeds, to see the build's FINGERPRINT written); binaries of other sources in a warm build
# folder built again; their library path (kit-env) carried to a later call, an empty one as no
# argument at all; the training steps per dtype; PyTorch's retry at half the batch only after its
# own out-of-memory error; the parity stage deleting its checkpoints, and an earlier comparison
# when a run fails; the profile stage's calls (ncu over an unprofiled and a profiled
# bench_train_gpu, PyTorch's profile, profile_step.py) and its missing ncu; the designs stage's
# runs, each with its GPT2CC_KERNELS; the size of the working tree a device call carries beside the
# kit. Run by ctest (label tooling) with the repository root.
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
out=$(bash "$SCRIPT" --fp32-steps x 2>&1); rc=$?
[[ $rc == 2 && "$out" == *"--fp32-steps must be a positive integer"* ]] || fail "bad --fp32-steps: exit $rc, '$out'"
# The name given, as given (not what an alias turned it into).
out=$(bash "$SCRIPT" --stage pytorchx 2>&1); rc=$?
[[ $rc == 2 && "$out" == *"unknown stage 'pytorchx'"* ]] || fail "bad stage pytorchx: exit $rc, '$out'"
out=$(bash "$SCRIPT" --stage train,trainx --dry-run 2>&1); rc=$?
[[ $rc == 2 && "$out" == *"unknown stage 'trainx'"* ]] || fail "bad stage trainx: exit $rc, '$out'"
# A flag without its value: the script's message, exit 2.
for flag in --out --stage --kit --build-dir --steps; do
  out=$(bash "$SCRIPT" --dry-run "$flag" 2>&1); rc=$?
  [[ $rc == 2 && "$out" == "bench_gpu.sh: $flag needs a value"* ]] || fail "$flag without a value: exit $rc, '$out'"
done

# The stages a call runs.
out=$(bash "$SCRIPT" --stage device --dry-run --build-dir "$TMP/none" 2>&1); rc=$?
want="stages build test train_bf16 pt_bf16 attention pt_attention profile parity kernels sanitize designs train_fp32"
want+=" pt_fp32 report"
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
# The earlier call's env.txt (another GPU or sources than this call's) is kept, and named.
grep -q "^gpu: NVIDIA H100 80GB HBM3" "$TMP/build-gpu/bench-results/env-earlier.txt" 2>/dev/null ||
  fail "the earlier call's env.txt was not kept in env-earlier.txt"
grep -q "(env-earlier.txt): gpu NVIDIA H100 80GB HBM3" "$TMP/out/report.md" 2>/dev/null ||
  fail "report.md does not name the earlier call's environment"

# A relative --out is the caller's folder's, not the repository's.
mkdir -p "$TMP/caller"
log=$(cd "$TMP/caller" && bash "$SCRIPT" --stage report --out rel-results --build-dir "$TMP/build-gpu" 2>&1); rc=$?
[[ -f "$TMP/caller/rel-results/status.tsv" ]] || fail "relative --out: exit $rc, no $TMP/caller/rel-results/status.tsv: $log"
[[ ! -e "$ROOT/rel-results" ]] || { fail "relative --out went to the repository"; rm -rf "$ROOT/rel-results"; }

# A warm machine (results present) does not unpack the archive over them.
log=$(OUT="$TMP/out" bash "$SCRIPT" --stage report --kit "$TMP/kit" --build-dir "$TMP/build-gpu" 2>&1); rc=$?
[[ $rc == 0 && "$log" != *"continuing from"* ]] || fail "second call: exit $rc, restored again: $log"
# Its environment is this one's: env-earlier.txt still holds the first call's only.
blocks=$(grep -c "^date:" "$TMP/build-gpu/bench-results/env-earlier.txt" 2>/dev/null)
[[ "$blocks" == 1 ]] || fail "a call on the same machine and sources grew env-earlier.txt to '$blocks' blocks"

# The returned archive holds the small files only (at most 16 MiB comes back): no checkpoints/
# (a parity run's: hundreds of MB), no file over 2 MiB, 12 MiB in all; the rest is named in
# pack-left-out.txt. (Sparse stand-ins: large to find, nothing to read or compress.)
res="$TMP/res-pack"
mkdir -p "$res/parity_fp32/checkpoints" "$TMP/out-pack"
cp "$TMP/earlier/bench-results/"* "$res/"
echo '{"step": 1, "train_loss": 10.9}' >"$res/parity_fp32/metrics.jsonl"
echo '{}' >"$res/parity_fp32/config.json"
truncate -s 400M "$res/parity_fp32/checkpoints/step_00000600.ckpt"
truncate -s 3M "$res/huge.log"
for i in 1 2 3 4 5 6 7; do truncate -s 1900K "$res/filler_$i.log"; done  # 13.3 MiB together
log=$(OUT="$TMP/out-pack" bash "$SCRIPT" --stage report --out "$res" --build-dir "$TMP/build-gpu" 2>&1); rc=$?
[[ $rc == 0 ]] || fail "report with big files: exit $rc: $log"
listing=$(tar -tvzf "$TMP/out-pack/bench_gpu_results.tar.gz" 2>/dev/null)
for name in res-pack/parity_fp32/metrics.jsonl res-pack/parity_fp32/config.json res-pack/report.md \
  res-pack/status.tsv res-pack/env.txt res-pack/train_bf16.json res-pack/pack-left-out.txt res-pack/filler_1.log; do
  [[ "$listing" == *" $name"* ]] || fail "the archive lacks $name: $listing"
done
[[ "$listing" != *checkpoints* && "$listing" != *huge.log* ]] || fail "the archive holds a checkpoint or a big file: $listing"
packed=$(awk '{s += $3} END {print s + 0}' <<<"$listing")
((packed <= 12 << 20)) || fail "the archive holds $packed bytes, over 12 MiB"
if [[ "$listing" != *filler_1* || "$listing" == *filler_7* ]]; then
  fail "the 12 MiB cap should take some of the fillers, not all: $listing"
fi
grep -q "huge.log (3145728 bytes)" "$res/pack-left-out.txt" 2>/dev/null || fail "pack-left-out.txt lacks huge.log"
[[ ! -e "$TMP/out-pack/bench_gpu_results.tar.gz.part" ]] || fail "a .part file was left in \$OUT"

# A --budget used up: the other stages are skipped, the report still runs (and comes back).
mkdir -p "$TMP/out-budget"
log=$(OUT="$TMP/out-budget" bash "$SCRIPT" --stage pt_attention,report --budget 1 --out "$TMP/res-budget" \
  --build-dir "$TMP/build-gpu" 2>&1); rc=$?
[[ $rc == 1 && "$log" == *"pt_attention skipped"* ]] || fail "used-up budget: exit $rc: $log"
grep -q "^pt_attention	skipped	" "$TMP/res-budget/status.tsv" 2>/dev/null || fail "status.tsv lacks 'pt_attention skipped'"
grep -q "^report	0	" "$TMP/res-budget/status.tsv" 2>/dev/null || fail "the report did not run on a used-up budget"
[[ -f "$TMP/out-budget/report.md" ]] || fail "no report.md came back on a used-up budget"

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
      echo 'echo "stand-in $0 $*${KIT_ENV_MARK:+ (kit env: $KIT_ENV_MARK)}\'
      echo '${GPT2CC_KERNELS:+ (kernels: $GPT2CC_KERNELS)}"'
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
# For every later call: a build that a call starts by itself (binaries of other sources in the
# build folder: sources edited meanwhile, say) must not run the real cmake.
export PATH="$TMP/fakebin:$PATH"
fingerprint=$(gpt2cc_source_fingerprint "$ROOT")
[[ "$fingerprint" =~ ^[0-9a-f]{64}$ ]] || fail "fingerprint '$fingerprint'"
# The fingerprint of the sources alone: the folders git ignores, which the device machine's copy
# lacks (.deps' PCRE2 headers and CMake files, a build), do not change it; a source does.
mkdir -p "$TMP/tree/core" "$TMP/tree/kernels"
echo 'int f();' >"$TMP/tree/core/a.hpp"
echo 'add_library(x a.cpp)' >"$TMP/tree/CMakeLists.txt"
tree_print=$(gpt2cc_source_fingerprint "$TMP/tree")
mkdir -p "$TMP/tree/.deps/pcre2-10.47/include" "$TMP/tree/.deps/pcre2-10.47/lib/cmake" "$TMP/tree/.tools" \
  "$TMP/tree/build-gpu" "$TMP/tree/runs/x"
echo '#define PCRE2_MAJOR 10' >"$TMP/tree/.deps/pcre2-10.47/include/pcre2.h"
echo 'set(x 1)' >"$TMP/tree/.deps/pcre2-10.47/lib/cmake/pcre2-config.cmake"
echo 'int g();' >"$TMP/tree/.tools/t.cpp"
echo 'int h();' >"$TMP/tree/build-gpu/generated.hpp"
echo 'int r();' >"$TMP/tree/runs/x/r.cpp"
[[ "$(gpt2cc_source_fingerprint "$TMP/tree")" == "$tree_print" ]] ||
  fail "ignored folders (.deps, .tools, build-gpu, runs) changed the sources' fingerprint"
echo '__global__ void k();' >"$TMP/tree/kernels/k.cuh"
[[ "$(gpt2cc_source_fingerprint "$TMP/tree")" != "$tree_print" ]] || fail "a new source left the fingerprint as it was"
# The peak table and the templates CMake fills in are compiled into the binaries too.
for read_by_build in benchmarks/gpu/peaks.json core/table.hpp.in; do
  before=$(gpt2cc_source_fingerprint "$TMP/tree")
  mkdir -p "$TMP/tree/$(dirname "$read_by_build")"
  echo '{}' >"$TMP/tree/$read_by_build"
  [[ "$(gpt2cc_source_fingerprint "$TMP/tree")" != "$before" ]] || fail "$read_by_build left the fingerprint as it was"
done

make_binaries_kit "$TMP/kit-ok" "$fingerprint" 0
log=$(OUT="$TMP/out-ok" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage test --kit "$TMP/kit-ok" \
  --build-dir "$TMP/build-ok" 2>&1); rc=$?
[[ $rc == 0 && "$log" == *"using the kit's binaries (sources fingerprint $fingerprint)"* ]] || fail "kit binaries: exit $rc: $log"
for exe in build-kit test_cuda_layers test_cuda_bf16 test_cuda_model test_train_cli_cuda test_generate_cli_cuda; do
  grep -q "^$exe	0	" "$TMP/out-ok/status.tsv" 2>/dev/null || fail "status.tsv lacks '$exe 0' (kit binaries)"
done
[[ "$log" == *"stand-in $TMP/build-ok/tests/cuda/test_cuda_model"* ]] || fail "the test stage did not run the kit's binaries"
[[ "$log" == *"stand-in $TMP/build-ok/tests/generate/test_generate_cli [cuda]"* ]] || fail "the CLI tests' [cuda] cases did not run"
[[ "$(cat "$TMP/build-ok/FINGERPRINT" 2>/dev/null)" == "$fingerprint" ]] ||
  fail "the kit's FINGERPRINT was not unpacked"

# A warm machine keeps the build folder of an earlier call: binaries of other sources (their
# FINGERPRINT), or of unknown ones (none), are built (or unpacked) first by a stage that runs them.
mkdir -p "$TMP/build-warm/benchmarks/gpu"
printf '#!/bin/sh\n' >"$TMP/build-warm/benchmarks/gpu/bench_train_gpu"
chmod +x "$TMP/build-warm/benchmarks/gpu/bench_train_gpu"
gpt2cc_source_fingerprint "$ROOT" >"$TMP/build-warm/FINGERPRINT"
out=$(bash "$SCRIPT" --stage kernels --dry-run --build-dir "$TMP/build-warm" 2>&1); rc=$?
[[ $rc == 0 && "$out" == "bench_gpu.sh: stages kernels" ]] || fail "binaries of these sources: exit $rc, '$out'"
echo 0000 >"$TMP/build-warm/FINGERPRINT"
out=$(bash "$SCRIPT" --stage kernels --dry-run --build-dir "$TMP/build-warm" 2>&1); rc=$?
[[ $rc == 0 && "$out" == *"were built from other sources (fingerprint 0000, these "*"stages build kernels" ]] ||
  fail "binaries of other sources: exit $rc, '$out'"
rm "$TMP/build-warm/FINGERPRINT"
out=$(bash "$SCRIPT" --stage kernels --dry-run --build-dir "$TMP/build-warm" 2>&1); rc=$?
[[ $rc == 0 && "$out" == *"have no FINGERPRINT"*"stages build kernels" ]] ||
  fail "binaries of unknown sources: exit $rc, '$out'"

# A build from the sources writes their FINGERPRINT once it succeeds, and first removes the one of
# the binaries it replaces (a stand-in cmake that succeeds, then the one that fails; no kit).
mkdir -p "$TMP/fakebin-cmake-ok" "$TMP/kit-empty" "$TMP/build-src"
printf '#!/bin/sh\necho "stand-in cmake $*"\n' >"$TMP/fakebin-cmake-ok/cmake"
chmod +x "$TMP/fakebin-cmake-ok/cmake"
echo 0000 >"$TMP/build-src/FINGERPRINT"
log=$(PATH="$TMP/fakebin-cmake-ok:$PATH" bash "$SCRIPT" --stage build --kit "$TMP/kit-empty" \
  --build-dir "$TMP/build-src" --out "$TMP/res-src" 2>&1); rc=$?
[[ $rc == 0 && "$(cat "$TMP/build-src/FINGERPRINT" 2>/dev/null)" == "$fingerprint" ]] ||
  fail "a build did not write these sources' FINGERPRINT: exit $rc: $log"
log=$(bash "$SCRIPT" --stage build --kit "$TMP/kit-empty" --build-dir "$TMP/build-src" --out "$TMP/res-src" 2>&1); rc=$?
[[ $rc == 1 && ! -e "$TMP/build-src/FINGERPRINT" ]] || fail "a failed build left a FINGERPRINT: exit $rc: $log"

# Their library path for later calls on this machine: none needed here, so no kit-env file; one
# holding an empty line (as once written) is no argument either, a real one is used.
[[ ! -e "$TMP/build-ok/kit-env" ]] || fail "binaries that need no library path left a kit-env"
echo >"$TMP/build-ok/kit-env"
log=$(OUT="$TMP/out-ok" bash "$SCRIPT" --stage test --build-dir "$TMP/build-ok" 2>&1); rc=$?
[[ $rc == 0 && "$log" != *"failed to run command"* && "$log" != *"build"*"probing"* ]] ||
  fail "later call with an empty kit-env: exit $rc: $log"
printf 'env\nKIT_ENV_MARK=carried\n' >"$TMP/build-ok/kit-env"
log=$(OUT="$TMP/out-ok" bash "$SCRIPT" --stage test --build-dir "$TMP/build-ok" 2>&1); rc=$?
[[ $rc == 0 && "$log" == *"stand-in $TMP/build-ok/tests/cuda/test_cuda_bf16 "*"(kit env: carried)"* ]] || fail "later call with a kit-env: exit $rc: $log"
rm -f "$TMP/build-ok/kit-env"

# Training: bf16 20 timed steps after 5, fp32 10 after 3 (its steps are slow).
log=$(OUT="$TMP/out-ok" bash "$SCRIPT" --stage train --build-dir "$TMP/build-ok" 2>&1); rc=$?
[[ $rc == 0 && "$log" == *"bench_train_gpu --dtype bf16 -B auto -T 1024 --steps 20 --warmup 5 "* &&
  "$log" == *"bench_train_gpu --dtype fp32 -B auto -T 1024 --steps 10 --warmup 3 "* ]] ||
  fail "training steps: exit $rc: $log"
# The --budget cuts a stage's limit to leave the kill grace (15 s), packing (5 s) and the report
# (40 s); the fp32 step, which needs 65 s, is skipped rather than started with the ~40 s left.
log=$(OUT="$TMP/out-ok" bash "$SCRIPT" --stage train --build-dir "$TMP/build-ok" --out "$TMP/res-need" --budget 100 \
  2>&1); rc=$?
limit=$(sed -n 's/^== train_bf16 (limit \([0-9]*\)s).*/\1/p' <<<"$log")
if [[ ! "$limit" =~ ^[0-9]+$ ]] || ((limit <= 30 || limit > 40)); then
  fail "--budget 100 gave train_bf16 a limit of '$limit' s"
fi
skip="s left for it of the 100s budget (40s kept for the report), it needs 65s"
[[ $rc == 1 && "$log" =~ "== train_fp32 skipped: "[0-9]+"$skip" ]] ||
  fail "--budget 100: train_fp32 not skipped for its 65 s: exit $rc: $log"
grep -q "^train_fp32	skipped	" "$TMP/res-need/status.tsv" 2>/dev/null || fail "status.tsv lacks 'train_fp32 skipped'"

# PyTorch runs out of memory at gpt2cc's batch: one more try at half of it. Only this attempt's
# error counts: the log holds the earlier calls' too (a stand-in gpt2_train.py that fails, saying
# "out of memory" when told to).
mkdir -p "$TMP/fakepy" "$TMP/res-oom"
{
  echo '#!/bin/sh'
  echo 'case "$1" in *gpt2_train.py) echo "stand-in gpt2_train.py $*"'
  echo '  [ -n "$PT_OOM" ] && echo "torch.OutOfMemoryError: CUDA out of memory"; exit 1 ;; esac'
  echo "exec $(command -v python3) \"\$@\""
} >"$TMP/fakepy/python3"
chmod +x "$TMP/fakepy/python3"
echo '{"B": 16, "T": 1024}' >"$TMP/res-oom/train_bf16.json"
echo "torch.OutOfMemoryError: CUDA out of memory (an earlier call's)" >"$TMP/res-oom/pt_train_bf16.log"
log=$(PATH="$TMP/fakepy:$PATH" bash "$SCRIPT" --stage pt_bf16 --build-dir "$TMP/build-ok" --out "$TMP/res-oom" 2>&1)
runs=$(grep -c "^pt_train_bf16	" "$TMP/res-oom/status.tsv" 2>/dev/null)
[[ "$runs" == 1 && "$log" != *"-B 8 -T 1024"* ]] || fail "an earlier call's out-of-memory error retried PyTorch: $log"
log=$(PT_OOM=1 PATH="$TMP/fakepy:$PATH" bash "$SCRIPT" --stage pt_bf16 --build-dir "$TMP/build-ok" \
  --out "$TMP/res-oom" 2>&1)
[[ "$log" == *"gpt2_train.py --preset gpt2 -B 16 -T 1024"*"gpt2_train.py --preset gpt2 -B 8 -T 1024"* ]] ||
  fail "out of memory at B=16: no retry at B=8: $log"

# A step's result file from an earlier call goes when the step runs (the stand-in writes none: a
# step cut short leaves nothing to be reported as its), and stays when the budget skips the step.
mkdir -p "$TMP/res-stale"
echo '{"kernels": "stale"}' >"$TMP/res-stale/kernels.json"
OUT="$TMP/out-ok" bash "$SCRIPT" --stage kernels --build-dir "$TMP/build-ok" --out "$TMP/res-stale" >/dev/null 2>&1
[[ ! -e "$TMP/res-stale/kernels.json" ]] || fail "an earlier call's kernels.json outlived the kernels step"
echo '{"kernels": "earlier"}' >"$TMP/res-stale/kernels.json"
OUT="$TMP/out-ok" bash "$SCRIPT" --stage kernels --build-dir "$TMP/build-ok" --out "$TMP/res-stale" --budget 1 \
  >/dev/null 2>&1
grep -q earlier "$TMP/res-stale/kernels.json" 2>/dev/null || fail "a skipped kernels step removed an earlier result"

# Parity: the runs' checkpoints are deleted once they are done (a stand-in train writing a run
# directory; the comparison of its made-up metrics may fail).
cat >"$TMP/build-ok/train" <<'STANDIN'
#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = --run-dir ] && dir=$2; shift; done
mkdir -p "$dir/checkpoints" && echo weights >"$dir/checkpoints/step_00000600.ckpt"
echo '{"step": 600, "train_loss": 5.0}' >"$dir/metrics.jsonl"
exit "${TRAIN_EXIT:-0}"
STANDIN
mkdir -p "$TMP/shards" "$TMP/out-parity"
log=$(OUT="$TMP/out-parity" bash "$SCRIPT" --stage parity --parity-shards "$TMP/shards" --build-dir "$TMP/build-ok" \
  --out "$TMP/res-parity" 2>&1)
for dtype in fp32 bf16; do
  grep -q "^parity_$dtype	0	" "$TMP/res-parity/status.tsv" 2>/dev/null || fail "parity_$dtype did not run: $log"
  [[ -f "$TMP/res-parity/parity_$dtype/metrics.jsonl" ]] || fail "parity_$dtype lost its metrics"
  [[ ! -e "$TMP/res-parity/parity_$dtype/checkpoints" ]] || fail "parity_$dtype's checkpoints were kept"
done
listing=$(tar -tzf "$TMP/out-parity/bench_gpu_results.tar.gz" 2>/dev/null)
[[ "$listing" == *"res-parity/parity_bf16/metrics.jsonl"* ]] || fail "the archive lacks the parity metrics: $listing"
# A run skipped (budget) leaves the earlier call's comparison and runs; a run that fails removes
# the comparison, which the report would otherwise show as this call's.
for f in parity.json parity.md parity.png; do echo earlier >"$TMP/res-parity/$f"; done
OUT="$TMP/out-parity" bash "$SCRIPT" --stage parity --parity-shards "$TMP/shards" --build-dir "$TMP/build-ok" \
  --out "$TMP/res-parity" --budget 1 >/dev/null 2>&1
for f in parity.json parity.md parity.png parity_fp32/metrics.jsonl parity_bf16/metrics.jsonl; do
  [[ -e "$TMP/res-parity/$f" ]] || fail "a skipped parity run removed the earlier call's $f"
done
log=$(OUT="$TMP/out-parity" TRAIN_EXIT=1 bash "$SCRIPT" --stage parity --parity-shards "$TMP/shards" \
  --build-dir "$TMP/build-ok" --out "$TMP/res-parity" 2>&1)
[[ "$(tail -1 "$TMP/res-parity/status.tsv")" == "parity_fp32	1	"* ]] || fail "the failing parity run: $log"
for f in parity.json parity.md parity.png; do
  [[ ! -e "$TMP/res-parity/$f" ]] || fail "an earlier call's $f outlived a failed parity run"
done

# Profile: ncu (a stand-in writing a CSV to its --log-file) over the stand-in bench_train_gpu with
# the settings that keep clocks and caches as in a normal run; the CSV gzip'd afterwards. Without
# ncu the stage says so (status missing-tool) and the PyTorch side still runs.
cat >"$TMP/fakebin/ncu" <<'STANDIN'
#!/bin/sh
echo "stand-in ncu $*"
while [ $# -gt 0 ]; do [ "$1" = --log-file ] && log=$2; shift; done
echo '"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"' >"$log"
STANDIN
chmod +x "$TMP/fakebin/ncu"
mkdir -p "$TMP/out-profile"
log=$(OUT="$TMP/out-profile" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage profile --build-dir "$TMP/build-ok" \
  --out "$TMP/res-profile" 2>&1)
for step in profile_train profile_ncu; do
  grep -q "^$step	0	" "$TMP/res-profile/status.tsv" 2>/dev/null || fail "$step did not run: $log"
done
grep -q "^profile_pt	" "$TMP/res-profile/status.tsv" 2>/dev/null || fail "PyTorch's profile did not run: $log"
[[ "$log" == *"stand-in ncu --metrics gpu__time_duration.sum --clock-control none --cache-control none"* &&
  "$log" == *"bench_train_gpu --dtype bf16 -B 64 -T 1024 --steps 1 --warmup 1 --no-cuda-graphs"* ]] ||
  fail "ncu's command line: $log"
[[ -f "$TMP/res-profile/profile_ncu.csv.gz" && ! -e "$TMP/res-profile/profile_ncu.csv" ]] ||
  fail "ncu's CSV was not gzip'd: $(ls "$TMP/res-profile")"
rm "$TMP/fakebin/ncu"
if ! command -v ncu >/dev/null; then
  log=$(OUT="$TMP/out-profile" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage profile --build-dir "$TMP/build-ok" \
    --out "$TMP/res-profile-noncu" 2>&1)
  grep -q "^profile_ncu	missing-tool	" "$TMP/res-profile-noncu/status.tsv" 2>/dev/null || fail "no ncu: $log"
  grep -q "^profile_pt	" "$TMP/res-profile-noncu/status.tsv" 2>/dev/null || fail "no ncu: PyTorch skipped: $log"
fi

# The budget skipping the profile and the designs leaves the earlier call's results of both.
mkdir -p "$TMP/res-keep"
for f in profile.json profile.md profile_ncu.csv.gz profile_pt_bf16.json designs_automatic.json \
  designs_flash-tile-64.json designs_best.json; do
  echo earlier >"$TMP/res-keep/$f"
done
OUT="$TMP/out-profile" bash "$SCRIPT" --stage profile,designs --build-dir "$TMP/build-ok" --out "$TMP/res-keep" \
  --budget 1 >/dev/null 2>&1
for f in profile.json profile.md profile_ncu.csv.gz profile_pt_bf16.json designs_automatic.json \
  designs_flash-tile-64.json designs_best.json; do
  [[ -e "$TMP/res-keep/$f" ]] || fail "a skipped profile or designs stage removed the earlier call's $f"
done

# Designs: the bf16 step at train_bf16's batch (its JSON) with the automatic designs (no
# GPT2CC_KERNELS) and then with each other one, 10 timed steps after 3, one JSON each.
mkdir -p "$TMP/res-designs" "$TMP/out-designs"
echo '{"B": 256}' >"$TMP/res-designs/train_bf16.json"
# An earlier call's: gone once the runs start (the stand-in writes none), and the combined run
# too when this call has no winners.
echo earlier | tee "$TMP/res-designs/designs_automatic.json" "$TMP/res-designs/designs_best.json" >/dev/null
log=$(OUT="$TMP/out-designs" bash "$SCRIPT" --stage designs --build-dir "$TMP/build-ok" --out "$TMP/res-designs" 2>&1)
rc=$?
[[ $rc == 0 ]] || fail "designs: exit $rc: $log"
for variant in automatic classifier=streamed layernorm-backward=two-pass flash-backward=fused flash-tile=64 \
  bias-grad=epilogue gemm-alignment=16 gemm-split-k=any gemm-workspace=256 gelu=separate; do
  name="designs_${variant//=/-}"
  grep -q "^$name	0	" "$TMP/res-designs/status.tsv" 2>/dev/null || fail "$name did not run: $log"
  line=$(grep "stand-in .*bench_train_gpu .*/$name.json" <<<"$log" | head -1)
  [[ "$line" == *"--dtype bf16 -B 256 -T 1024 --steps 10 --warmup 3 --json"* ]] || fail "$name's command: '$line'"
  if [[ $variant == automatic ]]; then
    [[ "$line" != *"(kernels:"* ]] || fail "the automatic run had GPT2CC_KERNELS set: '$line'"
  else
    [[ "$line" == *"(kernels: $variant)" ]] || fail "$name ran without GPT2CC_KERNELS=$variant: '$line'"
  fi
done
# The classifier over all rows at once: the automatic kernels, --classifier-rows 0.
grep -q "^designs_classifier-rows-all	0	" "$TMP/res-designs/status.tsv" 2>/dev/null ||
  fail "designs_classifier-rows-all did not run: $log"
line=$(grep "stand-in .*bench_train_gpu .*/designs_classifier-rows-all.json" <<<"$log" | head -1)
[[ "$line" == *"--dtype bf16 -B 256 -T 1024 --steps 10 --warmup 3 --json "*" --classifier-rows 0" ]] ||
  fail "designs_classifier-rows-all's command: '$line'"
# The gradients in fp32: the automatic kernels, --fp32-gradients.
grep -q "^designs_fp32-gradients	0	" "$TMP/res-designs/status.tsv" 2>/dev/null ||
  fail "designs_fp32-gradients did not run: $log"
line=$(grep "stand-in .*bench_train_gpu .*/designs_fp32-gradients.json" <<<"$log" | head -1)
[[ "$line" == *"--dtype bf16 -B 256 -T 1024 --steps 10 --warmup 3 --json "*" --fp32-gradients" ]] ||
  fail "designs_fp32-gradients' command: '$line'"
# The defaults' own changes right after the automatic run, before the alternatives (a budget cuts
# the list from its end).
order=$(grep -o '^designs_[^	]*' "$TMP/res-designs/status.tsv" | head -4 | tr '\n' ' ')
[[ "$order" == "designs_automatic designs_classifier-rows-all designs_fp32-gradients designs_classifier-streamed " ]] ||
  fail "the designs' order: '$order'"
# No step times (the stand-ins write no JSON): no design won, nothing to combine.
[[ "$log" == *"designs_best: not run: fewer than two designs beat the automatic ones"* ]] ||
  fail "designs_best without winners: $log"
grep -q "^designs_best	" "$TMP/res-designs/status.tsv" && fail "designs_best ran without winners"
[[ ! -e "$TMP/res-designs/designs_automatic.json" && ! -e "$TMP/res-designs/designs_best.json" ]] ||
  fail "an earlier call's designs results outlived this call's runs"

# Two designs beat the automatic run by more than the spread (a stand-in writing step times:
# automatic 100 ms, train_bf16 100.5, classifier=streamed and flash-tile=64 95, the rest 101):
# one more run with both, last.
cp -r "$TMP/build-ok" "$TMP/build-designs"
cat >"$TMP/build-designs/benchmarks/gpu/bench_train_gpu" <<'EOF2'
#!/bin/sh
json=""; prev=""; rows=8192
for a in "$@"; do [ "$prev" = --json ] && json=$a; [ "$prev" = --classifier-rows ] && rows=$a; prev=$a; done
case "$GPT2CC_KERNELS" in
  "") ms=100 ;;
  classifier=streamed|flash-tile=64) ms=95 ;;
  *,*) ms=90 ;;
  *) ms=101 ;;
esac
echo "stand-in $0 $*${GPT2CC_KERNELS:+ (kernels: $GPT2CC_KERNELS)}"
printf '{"B": 256, "T": 1024, "ms_per_step_median": %s, "kernel_designs": "%s", "tokens_per_s": 1.0,
  "loss_first": 1.0, "loss_last": 0.9, "classifier_rows_flag": %s}\n' "$ms" "$GPT2CC_KERNELS" "$rows" >"$json"
EOF2
mkdir -p "$TMP/res-best" "$TMP/out-best"
echo '{"B": 256, "T": 1024, "ms_per_step_median": 100.5}' >"$TMP/res-best/train_bf16.json"
log=$(OUT="$TMP/out-best" bash "$SCRIPT" --stage designs --build-dir "$TMP/build-designs" --out "$TMP/res-best" 2>&1)
rc=$?
[[ $rc == 0 ]] || fail "designs with winners: exit $rc: $log"
line=$(grep "stand-in .*bench_train_gpu .*/designs_best.json" <<<"$log" | head -1)
[[ "$line" == *"(kernels: classifier=streamed,flash-tile=64)" ]] || fail "designs_best's command: '$line': $log"
[[ $(tail -1 "$TMP/res-best/status.tsv") == "designs_best	0	"* ]] || fail "designs_best is not the last run"

# A CLI test whose [cuda] cases only warn (no device) fails the stage.
make_binaries_kit "$TMP/kit-warn" "$fingerprint" 0 warn
log=$(OUT="$TMP/out-warn" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage test --kit "$TMP/kit-warn" \
  --build-dir "$TMP/build-warn" 2>&1); rc=$?
[[ $rc == 1 && "$log" == *"the [cuda] cases found no CUDA device"* ]] || fail "warning CLI tests: exit $rc: $log"
grep -q "^test_train_cli_cuda	1	" "$TMP/out-warn/status.tsv" 2>/dev/null || fail "status.tsv lacks 'test_train_cli_cuda 1'"

make_binaries_kit "$TMP/kit-stale" "0000" 0
log=$(OUT="$TMP/out-stale" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage build,report --kit "$TMP/kit-stale" \
  --build-dir "$TMP/build-stale" 2>&1); rc=$?
[[ $rc == 1 && "$log" == *"built from other sources (fingerprint 0000"* && "$log" == *"the build failed"* ]] ||
  fail "stale kit binaries: exit $rc: $log"
grep -q "^report	0	" "$TMP/out-stale/status.tsv" 2>/dev/null || fail "no report after a failed build"

make_binaries_kit "$TMP/kit-nogpu" "$fingerprint" 77
log=$(OUT="$TMP/out-nogpu" PATH="$TMP/fakebin:$PATH" bash "$SCRIPT" --stage build --kit "$TMP/kit-nogpu" \
  --build-dir "$TMP/build-nogpu" 2>&1); rc=$?
[[ $rc == 1 && "$log" == *"do not pass a CUDA test here (exit 77)"* && "$log" == *"building instead"* ]] ||
  fail "kit binaries without a GPU: exit $rc: $log"
[[ ! -e "$TMP/build-nogpu/tests/cuda/test_cuda_layers" ]] || fail "binaries that failed the probe were left in the build folder"
[[ ! -e "$TMP/build-nogpu/FINGERPRINT" ]] || fail "binaries that failed the probe left their FINGERPRINT"

# The working tree a device call carries beside the kit (scripts/gpu_kit.sh sizes the kit to what
# it leaves of 64 MiB): what git tracks and the untracked files it does not ignore.
if command -v git >/dev/null; then
  mkdir -p "$TMP/gittree/build"
  printf '/build/\n' >"$TMP/gittree/.gitignore"  # 8 bytes
  head -c 1000 /dev/zero >"$TMP/gittree/tracked.bin"
  head -c 300 /dev/zero >"$TMP/gittree/untracked.txt"
  head -c 5000 /dev/zero >"$TMP/gittree/build/ignored.bin"
  git -C "$TMP/gittree" init -q && git -C "$TMP/gittree" add tracked.bin
  tree_bytes=$(gpt2cc_tree_bytes "$TMP/gittree")
  [[ "$tree_bytes" == 1308 ]] || fail "the working tree's size: '$tree_bytes' bytes, not 1308"
fi

((FAILURES == 0)) && echo "bench_gpu.sh checks passed"
exit $((FAILURES > 0))
