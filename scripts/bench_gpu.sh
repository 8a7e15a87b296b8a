#!/usr/bin/env bash
# The one command a GPU session runs for issue 8's side-by-side comparison: builds gpt2cc with
# CUDA (or takes the binaries scripts/gpu_kit.sh built from the same sources), runs the CUDA tests,
# the kernel / attention / training benchmarks (bf16 and fp32) and the PyTorch references on the
# same shapes and batch, then benchmarks/gpu/report.py merges the JSON into <outdir>/report.md.
# Every stage runs under its own time limit and logs to <outdir>/<stage>.log; a failed stage is
# recorded in <outdir>/status.tsv and the next one still runs (after a failed build only the
# report does). Usage:
#   scripts/bench_gpu.sh [--stage all|device|LIST] [--out DIR] [--batch auto|N] [--steps N]
#                        [--fp32-steps N] [--build-dir DIR] [--budget SECONDS] [--quick]
#                        [--parity-steps N] [--parity-shards DIR] [--kit DIR] [--dry-run]
# LIST: a comma list of build test sanitize kernels attention train train_bf16 train_fp32 pytorch
# pt_bf16 pt_fp32 pt_attention profile designs parity report (train = train_bf16,train_fp32;
# pytorch = pt_bf16,pt_fp32,pt_attention). all: every stage in that order. device: the order for
# ONE call on the lent device machine (10 minutes per command, 15 minutes of device time in all):
#   test train_bf16 pt_bf16 attention pt_attention profile parity kernels sanitize designs
#   train_fp32 pt_fp32 report
# the issue's targets first (bf16 training, attention), then where a bf16 step's time goes in each
# framework (profile: ncu over gpt2cc's kernels, torch.profiler over PyTorch's; ~90 s, not yet
# timed there), then the correctness checks (parity, the kernels' validation, compute-sanitizer:
# ~45 s), then the bf16 step with each other kernel design (designs: 12 or 13 runs, ~180 s, not yet
# timed there), before the fp32 pair, which is slow (~100 s) and only a secondary figure: what the
# --budget leaves no time for is skipped from the end. Measured on an H200 (2026-12-04), seconds:
# kit binaries 10, test 20, train_bf16 21, pt_bf16 52, attention 12, pt_attention 7, parity 22,
# kernels 26, sanitize ~41 (memcheck layers 25, racecheck 10, memcheck bf16 6), train_fp32 87 and
# pt_fp32 over 61 at 20+5 steps (at 10+3: ~50 and 46), report ~2: ~310 s, ~400 s with the
# profile, ~580 s with the designs, where the 570 s budget leaves the stages ~510 s (60 s are kept
# for a kill's grace, packing and the report): at those times the fp32 pair is skipped (each needs
# 65 s to start) unless the profile and designs run faster; `--stage train_fp32,pt_fp32,report`
# on a later call measures it.
# --steps N: timed steps of the bf16 training runs, gpt2cc's and PyTorch's (default 20, after 5
# warm-up); --fp32-steps N: of the fp32 ones (default 10, after 3 warm-up: an fp32 step at B=128
# takes ~3 s, and torch.compile ~40 s first); the designs stage's runs take 10 after 3. --quick:
# 5 of each, 10 kernel repetitions.
# --dry-run prints the stages a call would run, and runs none. Relative paths given to --out,
# --build-dir, --kit and --parity-shards are the caller's; the defaults are the repository's.
# That machine reaches no package registry and ../shared does not travel: make the kit here first
# (scripts/gpu_kit.sh: the CUDA binaries, the Debian packages of the build dependencies, the parity
# shards) and carry ".gpu-kit". Its binaries are used when they were built from these very sources
# (scripts/gpu_common.sh's fingerprint) and run a kernel on the GPU there; else gpt2cc is built,
# with the kit's packages when CMake finds a dependency missing. A stage that needs the binaries
# builds (or unpacks) them first when they are missing (a fresh machine) or their FINGERPRINT (the
# kit's, or a build's here) is not these sources' (a warm machine keeps the build folder).
# With $OUT set the results live in <build-dir>/bench-results (ignored by git). After every stage
# their small files are packed into $OUT/bench_gpu_results.tar.gz (JSON, logs, metrics, report.md,
# parity.png: never a checkpoints/ folder, no file over 2 MiB, 12 MiB in all, what is left out
# named in pack-left-out.txt; a fraction of a second), with report.md and status.tsv beside it.
# The whole call keeps within --budget seconds (default 570 with $OUT set): a stage's limit is cut
# so that, even killed 15 s after its TERM and then packed, it leaves the report its 40 s; one with
# 30 s or less is skipped. The report runs at the end whatever is left (limit 20 s, it takes ~2).
# A step's results from an earlier call are removed when the step starts, and stay when it is
# skipped (status.tsv, appended to by every call, then shows its earlier run and "skipped").
# The machine goes back when idle, so a later call may find none of it: copy the returned archive
# into the kit (.gpu-kit/bench_gpu_results.tar.gz) and a call that finds no results unpacks it
# first, so later stages (pytorch's batch, the report) see the earlier ones. env.txt describes the
# last call; an earlier one's on another GPU, commit or sources is kept in env-earlier.txt, and the
# report names every device its result files come from.
set -uo pipefail

CALLER=$(pwd)
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
source scripts/gpu_common.sh
source scripts/deps.sh  # cpu_cores (only definitions: nothing is installed here)

STAGES="all"
OUTDIR=""
BATCH="auto"
STEPS=20
FP32_STEPS=10
BUILD_DIR="build-gpu"
QUICK=0
BUDGET=""
ATTN_SHAPES="8x12x1024x64,16x12x1024x64,8x12x1024x128,16x12x1024x128"
PARITY_STEPS=600
PARITY_SHARDS=""
KIT=""
DRY_RUN=0

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() {
  echo "bench_gpu.sh: $*" >&2
  exit 2
}
# The path $1 as the caller gave it (relative to the folder this script was run from).
from_caller() {
  if [[ "$1" = /* ]]; then echo "$1"; else echo "$CALLER/$1"; fi
}

while (($#)); do
  case "$1" in
    --stage|--out|--batch|--steps|--fp32-steps|--build-dir|--budget|--parity-steps|--parity-shards|--kit)
      (($# >= 2)) && [[ -n "$2" ]] || die "$1 needs a value (see --help)" ;;
  esac
  case "$1" in
    --stage) STAGES="$2"; shift 2 ;;
    --out) OUTDIR=$(from_caller "$2"); shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --fp32-steps) FP32_STEPS="$2"; shift 2 ;;
    --build-dir) BUILD_DIR=$(from_caller "$2"); shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --parity-steps) PARITY_STEPS="${2:?--parity-steps needs a number}"; shift 2 ;;
    --parity-shards) PARITY_SHARDS=$(from_caller "$2"); shift 2 ;;
    --kit) KIT=$(from_caller "$2"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[[ "$BATCH" == auto || "$BATCH" =~ ^[1-9][0-9]*$ ]] || die "--batch must be 'auto' or a positive integer, got '$BATCH'"
[[ "$STEPS" =~ ^[1-9][0-9]*$ ]] || die "--steps must be a positive integer, got '$STEPS'"
[[ "$FP32_STEPS" =~ ^[1-9][0-9]*$ ]] || die "--fp32-steps must be a positive integer, got '$FP32_STEPS'"
[[ "$PARITY_STEPS" =~ ^[1-9][0-9]*$ ]] || die "--parity-steps must be a positive integer, got '$PARITY_STEPS'"
[[ -z "$BUDGET" ]] && BUDGET=$([[ -n "${OUT:-}" ]] && echo 570 || echo 0)
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die "--budget must be a number of seconds (0: none), got '$BUDGET'"
if [[ -z "$KIT" ]]; then
  [[ -d .gpu-kit ]] && KIT="$ROOT/.gpu-kit"
else
  [[ -d "$KIT" ]] || die "--kit: no folder '$KIT' (scripts/gpu_kit.sh makes it)"
  KIT=$(cd "$KIT" && pwd)
fi
ALL_STAGES=(build test sanitize kernels attention train_bf16 train_fp32 pt_bf16 pt_fp32 pt_attention profile designs
  parity report)
DEVICE_STAGES=(test train_bf16 pt_bf16 attention pt_attention profile parity kernels sanitize designs train_fp32 pt_fp32
  report)
# The names given, each checked, then the aliases expanded.
RUN_STAGES=()
IFS=, read -r -a given_stages <<<"$STAGES"
for s in "${given_stages[@]}"; do
  case "$s" in
    all) RUN_STAGES+=("${ALL_STAGES[@]}") ;;
    device) RUN_STAGES+=("${DEVICE_STAGES[@]}") ;;
    train) RUN_STAGES+=(train_bf16 train_fp32) ;;
    pytorch) RUN_STAGES+=(pt_bf16 pt_fp32 pt_attention) ;;
    *)
      [[ -n "$s" && " ${ALL_STAGES[*]} " == *" $s "* ]] ||
        die "unknown stage '$s' (stages: ${ALL_STAGES[*]}; train, pytorch, all or device)"
      RUN_STAGES+=("$s") ;;
  esac
done
((${#RUN_STAGES[@]})) || die "--stage names no stage (stages: ${ALL_STAGES[*]}; train, pytorch, all or device)"

BIN="$ROOT/$BUILD_DIR"
[[ "$BUILD_DIR" = /* ]] && BIN="$BUILD_DIR"
# A fresh device machine has no build, and a warm one keeps the build folder of an earlier call,
# whose binaries may be of other sources: the stages that run gpt2cc's binaries build them first
# unless $BIN/FINGERPRINT (the kit's, or a build's here) names these sources.
if [[ ! " ${RUN_STAGES[*]} " == *" build "* ]]; then
  for s in "${RUN_STAGES[@]}"; do
    [[ " test sanitize kernels attention train_bf16 train_fp32 profile designs parity " == *" $s "* ]] || continue
    why=""
    if [[ ! -x "$BIN/benchmarks/gpu/bench_train_gpu" ]]; then
      why="no build in $BIN yet"
    elif [[ ! -f "$BIN/FINGERPRINT" ]]; then
      why="the binaries in $BIN have no FINGERPRINT (of the sources they were built from)"
    else
      have=$(head -1 "$BIN/FINGERPRINT") want=$(gpt2cc_source_fingerprint "$ROOT")
      [[ "$have" == "$want" ]] ||
        why="the binaries in $BIN were built from other sources (fingerprint $have, these $want)"
    fi
    if [[ -n "$why" ]]; then
      echo "bench_gpu.sh: $why: building (or unpacking the kit's binaries) first"
      RUN_STAGES=(build "${RUN_STAGES[@]}")
    fi
    break
  done
fi
if ((DRY_RUN)); then
  echo "bench_gpu.sh: stages ${RUN_STAGES[*]}"
  exit 0
fi
if [[ -z "$OUTDIR" ]]; then
  if [[ -n "${OUT:-}" ]]; then
    OUTDIR="$BIN/bench-results"
  else
    OUTDIR="benchmarks/results/gpu-$(date -u +%Y-%m-%d)"
  fi
fi
mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
if [[ ! -f "$OUTDIR/status.tsv" && -f "${KIT:-/nonexistent}/bench_gpu_results.tar.gz" ]]; then
  echo "bench_gpu.sh: continuing from the results in $KIT/bench_gpu_results.tar.gz"
  tar -xzf "$KIT/bench_gpu_results.tar.gz" --strip-components=1 -C "$OUTDIR" || die "cannot unpack $KIT/bench_gpu_results.tar.gz"
fi
export PYTHONUNBUFFERED=1

# Time limits per stage, in seconds (each call on the device machine has 600 in all).
if ((QUICK)); then
  STEPS=5
  FP32_STEPS=5
  KREPS=10
  AREPS=10
  DESIGN_STEPS=5
else
  KREPS=50
  AREPS=50
  DESIGN_STEPS=10
fi
LIMIT_BUILD=540
LIMIT_TEST=180    # per test executable
LIMIT_SANITIZE=240 # per tool run
LIMIT_KERNELS=300
LIMIT_ATTENTION=180
LIMIT_TRAIN=200   # per dtype
LIMIT_PYTORCH=240 # per run (torch.compile takes a minute or two)
LIMIT_REPORT=20   # report.py takes ~2 s
# With a --budget: a stage may run to its limit, then KILL_AFTER more before `timeout` kills it,
# then the results are packed (PACK_RESERVE, a fraction of a second in fact); what is left after
# that and the report's own reserve (the same three for it) is the most a stage may be given, and
# a stage that would get MIN_STAGE or less is skipped, and so is one that would get less than
# STAGE_NEED names for it: killed before it writes its JSON, it would spend its limit for nothing
# (the fp32 pair, ~50 s each on the H200 at 10 + 3 steps, with a 43 s limit, say). The report is
# never cut or skipped.
KILL_AFTER=15
PACK_RESERVE=5
REPORT_RESERVE=$((LIMIT_REPORT + KILL_AFTER + PACK_RESERVE))
MIN_STAGE=30
declare -A STAGE_NEED=([train_fp32]=65 [pt_train_fp32]=65)

FAILED=0
# run_step NAME LIMIT CMD...: runs CMD under `timeout`, appends its output to NAME.log and a line
# "NAME<TAB>exit code<TAB>seconds" to status.tsv. 124 / 137 in the status mean it timed out;
# "skipped" that the --budget had too little time left to start it (MIN_STAGE or less, or less
# than its STAGE_NEED); STEP_SKIPPED says which (1: skipped, 0: run). STEP_OUTPUT="FILE|FILE..."
# run_step ...: CMD writes those files (or folders), which are removed first when the step runs (a
# skipped step leaves an earlier call's).
STEP_SKIPPED=0
run_step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc
  STEP_SKIPPED=0
  if ((BUDGET > 0)) && [[ "$name" != report ]]; then
    local left=$((BUDGET - SECONDS - KILL_AFTER - PACK_RESERVE - REPORT_RESERVE)) need=${STAGE_NEED[$name]:-0}
    if ((left <= MIN_STAGE || left < need)); then
      echo "== $name skipped: ${left}s left for it of the ${BUDGET}s budget (${REPORT_RESERVE}s kept for the" \
        "report)$( ((need > 0)) && echo ", it needs ${need}s")" | tee -a "$OUTDIR/$name.log"
      printf '%s\t%s\t%s\n' "$name" skipped 0 >>"$OUTDIR/status.tsv"
      FAILED=1
      STEP_SKIPPED=1
      return 1
    fi
    ((limit > left)) && limit=$left
  fi
  # The step's results from an earlier call (unpacked from the kit's archive, or left on this
  # machine) go now, so that a step that fails or is cut short leaves none to be reported as its.
  if [[ -n "${STEP_OUTPUT:-}" ]]; then
    local outputs
    IFS='|' read -r -a outputs <<<"$STEP_OUTPUT"
    rm -rf "${outputs[@]}"
  fi
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUTDIR/$name.log"
  timeout --signal=TERM --kill-after="$KILL_AFTER" "$limit" "$@" 2>&1 | tee -a "$OUTDIR/$name.log"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$OUTDIR/status.tsv"
  if ((rc != 0)); then
    FAILED=1
    echo "== $name FAILED (exit $rc$( ((rc == 124 || rc == 137)) && echo ', timed out'))" | tee -a "$OUTDIR/$name.log"
  fi
  pack_results
  return "$rc"
}

# not_run NAME STATUS MESSAGE...: a stage (or step) that could not run: "== NAME: MESSAGE" in
# NAME.log, "NAME<TAB>STATUS<TAB>0" in status.tsv, and the call fails.
not_run() {
  echo "== $1: ${*:3}" | tee -a "$OUTDIR/$1.log"
  printf '%s\t%s\t%s\n' "$1" "$2" 0 >>"$OUTDIR/status.tsv"
  FAILED=1
}

# The path of CUDA tool NAME (compute-sanitizer, ncu): on the PATH, beside nvcc, in
# /usr/local/cuda/bin or in Nsight Compute's own folders; fails if none is there.
cuda_tool() {
  local candidate
  for candidate in "$(command -v "$1")" "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")/$1" \
    "/usr/local/cuda/bin/$1" /opt/nvidia/nsight-compute/*/"$1"; do
    [[ -n "$candidate" && -x "$candidate" ]] && { echo "$candidate"; return 0; }
  done
  return 1
}

# env.txt: this call's machine and sources. When an earlier call's env.txt names another GPU,
# commit or sources (results of several calls are merged in one folder), it is appended to
# env-earlier.txt first (blocks separated by an empty line), which report.py names.
record_env() {
  local env identity='^(gpu|commit|sources):'
  env=$(
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "sources: $(gpt2cc_source_fingerprint "$ROOT")"
    if command -v nvidia-smi >/dev/null; then
      echo "gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
      echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
      echo "gpu_memory: $(nvidia-smi --query-gpu=memory.total --format=csv,noheader | head -1)"
      echo "clocks_max_sm: $(nvidia-smi --query-gpu=clocks.max.sm --format=csv,noheader | head -1)"
      echo "power_limit: $(nvidia-smi --query-gpu=power.limit --format=csv,noheader | head -1)"
    fi
    command -v nvcc >/dev/null && echo "cuda: $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
    echo "torch: $(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'not installed')"
  )
  if [[ -f "$OUTDIR/env.txt" &&
    "$(grep -E "$identity" "$OUTDIR/env.txt")" != "$(grep -E "$identity" <<<"$env")" ]]; then
    { cat "$OUTDIR/env.txt"; echo; } >>"$OUTDIR/env-earlier.txt"
  fi
  printf '%s\n' "$env" >"$OUTDIR/env.txt"
}

# The kit's binaries (scripts/gpu_kit.sh) instead of a build, when they were built from these
# sources and run here: the libraries they link must resolve (with the kit's copies of the non-CUDA
# ones if this machine lacks some: then on the library path of gpt2cc's binaries only, BIN_ENV, not
# of PyTorch's) and one CUDA test must pass, which needs a driver for their CUDA runtime and a GPU
# their sm_90 code runs on. Returns 1 (and the build goes ahead) otherwise.
BIN_ENV=()
# BIN_ENV for later calls on this machine, an argument a line; no file when it is empty (a file
# holding the empty line printf writes for no arguments once read back as one empty argument, and
# every command then ran as `timeout N "" ...`: "failed to run command ''").
save_kit_env() {
  if ((${#BIN_ENV[@]})); then
    printf '%s\n' "${BIN_ENV[@]}" >"$BIN/kit-env"
  else
    rm -f "$BIN/kit-env"
  fi
}
load_kit_env() {
  local line
  BIN_ENV=()
  [[ -f "$BIN/kit-env" ]] || return 0
  while IFS= read -r line; do
    [[ -n "$line" ]] && BIN_ENV+=("$line")
  done <"$BIN/kit-env"
  return 0
}
# The "not found" lines of ldd over the binaries, with BIN_ENV's library path.
missing_libraries() {
  local exe
  for exe in "${GPT2CC_GPU_BINARIES[@]}"; do "${BIN_ENV[@]}" ldd "$BIN/$exe" 2>&1; done | grep "not found"
}
use_kit_binaries() {
  local archive="${KIT:-/nonexistent}/gpu-binaries.tar.gz" want have missing log="$OUTDIR/build.log"
  [[ -f "$archive" ]] || return 1
  want=$(gpt2cc_source_fingerprint "$ROOT")
  have=$(tar -xzOf "$archive" ./FINGERPRINT 2>/dev/null)
  if [[ "$have" != "$want" ]]; then
    echo "== build: the kit's binaries were built from other sources (fingerprint ${have:-none}, these $want)" | tee -a "$log"
    return 1
  fi
  mkdir -p "$BIN" && tar -xzf "$archive" -C "$BIN" || return 1
  BIN_ENV=()
  missing=$(missing_libraries)
  if [[ -n "$missing" ]]; then
    # The toolkit's own library folders too: its cuBLAS need not be on the loader's default path.
    local dirs="$BIN/kit-libs" toolkit
    toolkit=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
    for dir in "$toolkit/lib64" "$toolkit/lib" "$toolkit/targets/x86_64-linux/lib"; do
      [[ -d "$dir" ]] && dirs+=":$dir"
    done
    BIN_ENV=(env "LD_LIBRARY_PATH=$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
    missing=$(missing_libraries)
  fi
  if [[ -n "$missing" ]]; then
    echo "== build: the kit's binaries lack libraries here: $(sort -u <<<"$missing" | tr -s ' \t\n' ' ')" | tee -a "$log"
  else
    echo "== build: probing the kit's binaries: test_cuda_layers [gelu]" | tee -a "$log"
    timeout 120 "${BIN_ENV[@]}" "$BIN/tests/cuda/test_cuda_layers" "[gelu]" >>"$log" 2>&1 && {
      echo "== build: using the kit's binaries (sources fingerprint $want)" | tee -a "$log"
      save_kit_env
      printf '%s\t%s\t%s\n' build-kit 0 "$SECONDS" >>"$OUTDIR/status.tsv"
      return 0
    }
    echo "== build: the kit's binaries do not pass a CUDA test here (exit $?)" | tee -a "$log"
  fi
  echo "== build: building instead" | tee -a "$log"
  BIN_ENV=()
  rm -f "${GPT2CC_GPU_BINARIES[@]/#/$BIN/}" "$BIN/kit-env" "$BIN/FINGERPRINT"
  return 1
}

# A build here ends by writing $BIN/FINGERPRINT, the fingerprint of the sources when it started
# (sources changed meanwhile differ from it: the next call builds again); until it succeeds, the
# build folder has none.
stage_build() {
  use_kit_binaries && return 0
  local fingerprint
  fingerprint=$(gpt2cc_source_fingerprint "$ROOT")
  rm -f "$BIN/kit-env" "$BIN/FINGERPRINT"
  # Configure first: the device image may hold the dependencies outside Debian's package list
  # (cmake and ninja from pip). Only if CMake finds something missing are the kit's Debian
  # packages unpacked into the build folder (no root, nothing outside it touched) or, without a
  # kit, scripts/deps.sh's installed (which needs a network; offline it fails naming the packages).
  local configure=(cmake -S . -B "$BIN" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGPT2CC_CUDA=ON)
  local prefix="$BIN/kit-deps"
  # The packages' pkg-config files name /usr as their prefix: PCRE2 is then found by its header
  # and library on CMAKE_PREFIX_PATH instead (CMakeLists.txt).
  local kit_flags=("-DCMAKE_PREFIX_PATH=$prefix/usr" -DPKG_CONFIG_USE_CMAKE_PREFIX_PATH=OFF)
  if [[ -d "$prefix/usr" ]]; then
    configure+=("${kit_flags[@]}")
  elif ! timeout 120 "${configure[@]}" >"$OUTDIR/build-configure-probe.log" 2>&1; then
    if compgen -G "${KIT:-/nonexistent}/debs/*.deb" >/dev/null; then
      # dpkg-deb -x: the files only, no install scripts, nothing outside the build folder.
      run_step build-deps 60 bash -c 'rm -rf "$1" && mkdir -p "$1" || exit 1
        for deb in "$2"/debs/*.deb; do echo "unpacking ${deb##*/}"; dpkg-deb -x "$deb" "$1" || exit 1; done' \
        _ "$prefix" "$KIT" || return 1
      configure+=("${kit_flags[@]}")
      rm -f "$BIN/CMakeCache.txt"  # the probe cached the misses
    else
      run_step build-deps 300 bash -c 'source scripts/deps.sh && ensure_build_deps' || return 1
    fi
  fi
  run_step build-configure 120 "${configure[@]}" || return 1
  run_step build "$LIMIT_BUILD" cmake --build "$BIN" -j "$(cpu_cores)" || return 1
  echo "$fingerprint" >"$BIN/FINGERPRINT"
}

# Each CUDA test executable on its own (a line each in status.tsv), as ctest would run it (the
# environment of gpt2cc_add_test); not through ctest, whose files hold the paths of the machine
# that configured the build, which for the kit's binaries is not this one.
# Then the CLIs on the GPU, their test cases tagged [cuda] (they find train and generate in
# GPT2CC_BINARY_DIR): a train run stopped and resumed repeats an uninterrupted one bit for bit,
# generate prints the CPU's text. Without a usable device those cases only warn "nothing checked":
# here that is a failure.
stage_test() {
  local exe rc=0
  for exe in "${GPT2CC_GPU_BINARIES[@]}"; do
    [[ "$exe" == tests/cuda/* ]] || continue
    run_step "${exe##*/}" "$LIMIT_TEST" "${BIN_ENV[@]}" env GPT2CC_SOURCE_DIR="$ROOT" GPT2CC_BINARY_DIR="$BIN" \
      "$BIN/$exe" || rc=1
  done
  for exe in tests/train/test_train_cli tests/generate/test_generate_cli; do
    run_step "${exe##*/}_cuda" "$LIMIT_TEST" bash -c 'out=$("$@" 2>&1); rc=$?; printf "%s\n" "$out"
      [[ "$out" != *"nothing checked"* ]] || { echo "the [cuda] cases found no CUDA device"; exit 1; }
      exit "$rc"' _ "${BIN_ENV[@]}" env GPT2CC_SOURCE_DIR="$ROOT" GPT2CC_BINARY_DIR="$BIN" "$BIN/$exe" "[cuda]" || rc=1
  done
  return "$rc"
}

# compute-sanitizer over the CUDA tests: memcheck (out-of-bounds and misaligned accesses, API
# errors) on every layer test, racecheck (shared-memory hazards) on the kernels that share tiles
# (flash attention, the fused classifier, layernorm, the embedding backward's sort, the tiled
# attention's products). The whole-model tests are left out: too slow
# under the tool, and they run no kernel the layer tests do not; so are the bf16 tests at GPT-2
# scale ([scale]), which run the same kernels as the smaller shapes. On an H200: ~25, ~6 and ~10 s.
stage_sanitize() {
  local tool
  tool=$(cuda_tool compute-sanitizer) || { not_run sanitize missing-tool "compute-sanitizer not found"; return 1; }
  local common=("${BIN_ENV[@]}" "$tool" --error-exitcode 99 --print-limit 20)
  run_step sanitize_memcheck "$LIMIT_SANITIZE" "${common[@]}" --tool memcheck \
    "$BIN/tests/cuda/test_cuda_layers"
  run_step sanitize_memcheck_bf16 "$LIMIT_SANITIZE" "${common[@]}" --tool memcheck \
    "$BIN/tests/cuda/test_cuda_bf16" "~[model]~[scale]"
  run_step sanitize_racecheck "$LIMIT_SANITIZE" "${common[@]}" --tool racecheck \
    "$BIN/tests/cuda/test_cuda_bf16" "[flash]~[scale],[fused],[layernorm],[encoder],[tiled]"
}

stage_kernels() {
  STEP_OUTPUT="$OUTDIR/kernels.json" run_step kernels \
    "$LIMIT_KERNELS" "${BIN_ENV[@]}" "$BIN/benchmarks/kernels/bench_kernels" --reps "$KREPS" \
    --json "$OUTDIR/kernels.json"
}

stage_attention() {
  STEP_OUTPUT="$OUTDIR/attention.json" run_step attention \
    "$LIMIT_ATTENTION" "${BIN_ENV[@]}" "$BIN/benchmarks/kernels/bench_attention" --shapes "$ATTN_SHAPES" \
    --reps "$AREPS" --json "$OUTDIR/attention.json"
}

# Timed and warm-up steps of a training run of dtype $1, gpt2cc's and PyTorch's alike: fp32 has
# fewer (a step at B=128 takes ~3 s on an H200, 2.3 s in PyTorch after ~40 s of torch.compile).
steps_for() {
  if [[ "$1" == fp32 ]]; then
    echo "--steps $FP32_STEPS --warmup 3"
  else
    echo "--steps $STEPS --warmup 5"
  fi
}

train_dtype() {
  local steps
  read -r -a steps <<<"$(steps_for "$1")"
  STEP_OUTPUT="$OUTDIR/train_$1.json" run_step "train_$1" "$LIMIT_TRAIN" "${BIN_ENV[@]}" \
    "$BIN/benchmarks/gpu/bench_train_gpu" --dtype "$1" -B "$BATCH" -T 1024 "${steps[@]}" --json "$OUTDIR/train_$1.json"
}
stage_train_bf16() { train_dtype bf16; }
stage_train_fp32() { train_dtype fp32; }

# The batch gpt2cc ran at (its JSON), so PyTorch runs the same B x T; without a gpt2cc result,
# --batch (16 when auto).
batch_for() {
  local json="$OUTDIR/train_$1.json"
  if [[ -f "$json" ]]; then
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['B'])" "$json"
  elif [[ "$BATCH" == auto ]]; then
    echo 16
  else
    echo "$BATCH"
  fi
}

pytorch_dtype() {
  local dtype=$1 B steps log="$OUTDIR/pt_train_$1.log" logged
  B=$(batch_for "$dtype")
  read -r -a steps <<<"$(steps_for "$dtype")"
  # If PyTorch runs out of memory at gpt2cc's batch, try half of it once; the report then shows
  # both shapes and says that they differ. Only this attempt's part of the log is searched: the
  # log is appended to, and holds the earlier calls' attempts too. (grep reads it all: grep -q
  # would stop early, and tail's SIGPIPE fail the pipeline.)
  logged=$(stat -c %s "$log" 2>/dev/null || echo 0)
  if ! STEP_OUTPUT="$OUTDIR/pt_train_$dtype.json" run_step "pt_train_$dtype" "$LIMIT_PYTORCH" python3 \
    benchmarks/pytorch/gpt2_train.py --preset gpt2 \
    -B "$B" -T 1024 "${steps[@]}" --dtype "$dtype" --json "$OUTDIR/pt_train_$dtype.json"; then
    if ((B > 1)) && tail -c +"$((logged + 1))" "$log" | grep "out of memory" >/dev/null; then
      run_step "pt_train_$dtype" "$LIMIT_PYTORCH" python3 benchmarks/pytorch/gpt2_train.py --preset gpt2 \
        -B "$((B / 2))" -T 1024 "${steps[@]}" --dtype "$dtype" --json "$OUTDIR/pt_train_$dtype.json"
    fi
  fi
}
stage_pt_bf16() { pytorch_dtype bf16; }
stage_pt_fp32() { pytorch_dtype fp32; }

stage_pt_attention() {
  STEP_OUTPUT="$OUTDIR/pt_attention.json" run_step pt_attention \
    "$LIMIT_ATTENTION" python3 benchmarks/pytorch/attention_sdpa.py --shapes "$ATTN_SHAPES" \
    --reps "$AREPS" --json "$OUTDIR/pt_attention.json"
}

# Quality parity (issue 8): the same d6 model (HS 64: the flash path) trained on Wikipedia in fp32
# and in bf16 from the same seed and batches; benchmarks/gpu/compare_curves.py compares the train
# loss (means over 25-step windows) and the validation losses, tolerance 3%. Each run's final
# checkpoint (weights and AdamW state, hundreds of MB) is deleted: nothing reads it, and it must
# not reach the results archive.
stage_parity() {
  local shards="$PARITY_SHARDS" data="${GPT2CC_DATA_DIR:-$ROOT/../shared/data}" dtype rc
  [[ -z "$shards" && -f "${KIT:-/nonexistent}/parity-wikipedia/manifest.json" ]] && shards="$KIT/parity-wikipedia"
  if [[ -z "$shards" ]]; then
    shards="$BIN/parity-wikipedia"
    if [[ ! -f "$shards/manifest.json" ]]; then
      if [[ ! -d "$data/wikipedia" || ! -d "$data/gpt2" ]]; then
        not_run parity missing-data "no $data/wikipedia or $data/gpt2 (carry the kit of scripts/gpu_kit.sh," \
          "set GPT2CC_DATA_DIR, or give --parity-shards)"
        return 1
      fi
      run_step parity_prepare 240 "${BIN_ENV[@]}" "$BIN/prepare" --format wikiextractor --input "$data/wikipedia" \
        --val-fraction 0.01 --tokenizer "$data/gpt2" --out "$shards" || return 1
    fi
  fi
  # An earlier call's comparison goes when the first run (fp32) starts: a run that fails leaves
  # none to be reported. Each run's folder goes when that run starts; a skipped run leaves them.
  local compared="$OUTDIR/parity.json|$OUTDIR/parity.md|$OUTDIR/parity.png"
  for dtype in fp32 bf16; do
    STEP_OUTPUT="$compared|$OUTDIR/parity_$dtype" run_step "parity_$dtype" 270 "${BIN_ENV[@]}" "$BIN/train" \
      --device cuda --dtype "$dtype" --preset d6 \
      --train-data "$shards/train" --val-data "$shards/val" --batch-size 16 --seq-len 256 \
      --steps "$PARITY_STEPS" --lr 3e-3 --warmup-steps $((PARITY_STEPS / 10)) --eval-every $((PARITY_STEPS / 6)) \
      --eval-batches 16 --seed 1337 --log-every 50 --run-dir "$OUTDIR/parity_$dtype"
    rc=$?
    rm -rf "$OUTDIR/parity_$dtype/checkpoints"
    ((rc == 0)) || return 1
  done
  STEP_OUTPUT="$compared" run_step parity_compare \
    60 python3 benchmarks/gpu/compare_curves.py "$OUTDIR/parity_fp32/metrics.jsonl" \
    "$OUTDIR/parity_bf16/metrics.jsonl" --names fp32 bf16 --json "$OUTDIR/parity.json" \
    --markdown "$OUTDIR/parity.md" --plot "$OUTDIR/parity.png" --title "d6 on Wikipedia: fp32 vs bf16"
}

# Where one bf16 training step's time goes, gpt2cc vs PyTorch, by kernel category, at B=PROFILE_B
# (benchmarks/gpu/profile_step.py). gpt2cc: Nsight Compute (ncu; nsys does not run on the device
# machine) with one metric, gpu__time_duration.sum, over every kernel of a bench_train_gpu run of
# three steps that launch the same kernels (validation, warm-up, timed: an explicit -B, so no
# -B auto probes); profile_step.py keeps the last step. --no-cuda-graphs: the same kernels, and
# ncu runs them one at a time either way; --clock-control none --cache-control none: the clocks
# and L2 as in a normal run (by default ncu locks base clocks and flushes the caches before each
# kernel). The step's wall time comes from an unprofiled run at the same B (CUDA graphs on).
# PyTorch: gpt2_train.py at the same B, torch.compile as in pt_bf16, then 2 steps under
# torch.profiler. ncu's CSV is gzip'd afterwards (it can pass 2 MiB, which pack_results leaves
# out). B=64: a step of ~160 ms; ~90 s in all expected (ncu not yet timed there).
PROFILE_B=64
LIMIT_PROFILE_NCU=150  # ncu not yet timed there: a slow one must leave the later stages their time
stage_profile() {
  local bench="$BIN/benchmarks/gpu/bench_train_gpu" ncu inputs=()
  local csv="$OUTDIR/profile_ncu.csv"
  ncu=$(cuda_tool ncu)
  # Each step's files go when it starts (a skipped one leaves an earlier call's).
  STEP_OUTPUT="$OUTDIR/profile_train_bf16.json" run_step profile_train "$LIMIT_TRAIN" "${BIN_ENV[@]}" "$bench" \
    --dtype bf16 -B "$PROFILE_B" -T 1024 --steps 10 --warmup 3 --json "$OUTDIR/profile_train_bf16.json"
  if [[ -n "$ncu" ]]; then
    STEP_OUTPUT="$csv|$csv.gz" run_step profile_ncu "$LIMIT_PROFILE_NCU" "${BIN_ENV[@]}" "$ncu" \
      --metrics gpu__time_duration.sum --clock-control none --cache-control none --csv --print-units base \
      --log-file "$csv" "$bench" --dtype bf16 -B "$PROFILE_B" -T 1024 --steps 1 --warmup 1 --no-cuda-graphs
  else
    not_run profile_ncu missing-tool "ncu (Nsight Compute) not found"
  fi
  STEP_OUTPUT="$OUTDIR/profile_pt_train_bf16.json|$OUTDIR/profile_pt_bf16.json" run_step profile_pt \
    "$LIMIT_PYTORCH" python3 benchmarks/pytorch/gpt2_train.py --preset gpt2 -B "$PROFILE_B" -T 1024 --steps 5 \
    --warmup 3 --dtype bf16 --json "$OUTDIR/profile_pt_train_bf16.json" --profile-json "$OUTDIR/profile_pt_bf16.json"
  [[ -s "$csv" ]] && inputs+=(--ncu-csv "$csv" --gpt2cc-json "$OUTDIR/profile_train_bf16.json")
  [[ -s "$OUTDIR/profile_pt_bf16.json" ]] && inputs+=(--pytorch-json "$OUTDIR/profile_pt_bf16.json")
  if ((${#inputs[@]} == 0)); then
    not_run profile_step no-input "neither side produced a profile"
    return 1
  fi
  STEP_OUTPUT="$OUTDIR/profile.json|$OUTDIR/profile.md" run_step profile_step 30 python3 \
    benchmarks/gpu/profile_step.py "${inputs[@]}" --json "$OUTDIR/profile.json" --markdown "$OUTDIR/profile.md"
  local rc=$?
  [[ -f "$csv" ]] && gzip -f "$csv" && pack_results
  return "$rc"
}

# The bf16 step with each other kernel design GPT2CC_KERNELS can name (kernels/kernel_designs.cuh),
# one at a time, beside the automatic designs in the same stage: what each automatic choice is worth
# in a whole step at train_bf16's batch (bench_kernels and bench_attention time the designs as
# single kernels at B=8). One process each, DESIGN_STEPS timed steps after 3; report.py tabulates
# designs_*.json. ~15 s a run at B=256 (not yet timed there). First, after the automatic run, the
# classifier over all B*T rows at once (designs_classifier-rows-all: bench_train_gpu
# --classifier-rows 0, the automatic kernels), as before the model ran it in chunks of 8192 rows:
# what the chunks' memory saving costs or gains in time (it needs the logits of all rows, 24.6 GiB
# at 256 x 1024 in bf16: where that does not fit, the run fails and the report says so); and the
# gradients in fp32 (designs_fp32-gradients: --fp32-gradients, train's --grad-dtype fp32, PyTorch
# autocast's way): what they cost a step at this batch. Then the other designs. Last, when two or
# more designs beat
# the automatic run by more than the spread between the session's two automatic runs (report.py
# --best-designs), one run with all of them (designs_best): the best step this build showed, and
# what the automatic choices should become.
DESIGN_VARIANTS=(classifier=streamed layernorm-backward=two-pass flash-backward=fused flash-tile=64
  bias-grad=epilogue gemm-alignment=16 gemm-split-k=any gemm-workspace=256 gelu=separate)
LIMIT_DESIGN=90
stage_designs() {
  local B variant designs ran=0
  B=$(batch_for bf16)
  # Each run's JSON goes when it starts: a run the budget skips leaves an earlier call's.
  run_design() {  # NAME GPT2CC_KERNELS [bench_train_gpu flags...]
    STEP_OUTPUT="$OUTDIR/$1.json" run_step "$1" "$LIMIT_DESIGN" env "GPT2CC_KERNELS=$2" "${BIN_ENV[@]}" \
      "$BIN/benchmarks/gpu/bench_train_gpu" --dtype bf16 -B "$B" -T 1024 --steps "$DESIGN_STEPS" --warmup 3 \
      --json "$OUTDIR/$1.json" "${@:3}"
    local rc=$?
    ((STEP_SKIPPED)) || ran=1
    return "$rc"
  }
  # The automatic run, then the two runs of the defaults' own changes (before any alternative
  # design: a budget running out cuts the list from its end).
  run_design designs_automatic ""
  run_design designs_classifier-rows-all "" --classifier-rows 0
  run_design designs_fp32-gradients "" --fp32-gradients
  for variant in "${DESIGN_VARIANTS[@]}"; do
    run_design "designs_${variant//=/-}" "$variant"
  done
  designs=$(python3 benchmarks/gpu/report.py --best-designs "$OUTDIR") || designs=""
  if [[ -n "$designs" ]]; then
    run_design designs_best "$designs"
  else
    # An earlier call's combination is not the best of this call's runs (when the budget skipped
    # them all, the earlier runs' winners are the same and it stays).
    ((ran)) && rm -f "$OUTDIR/designs_best.json"
    echo "== designs_best: not run: fewer than two designs beat the automatic ones beyond the spread" |
      tee -a "$OUTDIR/designs_best.log"
  fi
}

stage_report() {
  run_step report "$LIMIT_REPORT" python3 benchmarks/gpu/report.py "$OUTDIR"
}

# Packs the results into $OUT: at most 8 files come back from there, each at most 16 MiB (a
# bigger one does not come back at all): the archive, report.md and status.tsv. The archive holds
# the results folder's small files only: never a checkpoints/ folder or a .ckpt, no file over
# PACK_FILE_MAX, and, smallest first, no more than PACK_TOTAL_MAX in all (so it stays well under
# 16 MiB even uncompressed); what is left out is named in pack-left-out.txt. Only a few MB of
# text to compress: a fraction of a second (whole folders with checkpoints once took minutes).
PACK_FILE_MAX=$((2 << 20))
PACK_TOTAL_MAX=$((12 << 20))
pack_results() {
  [[ -n "${OUT:-}" && -d "${OUT:-}" ]] || return 0
  local parent base chosen keep left_out
  parent=$(dirname "$OUTDIR")
  base=$(basename "$OUTDIR")
  # "size<TAB>path" of each candidate, smallest first; awk marks each K(eep) or L(eave out).
  chosen=$(cd "$parent" && find "$base" -name checkpoints -prune -o -type f ! -name '*.ckpt' \
    ! -path "$base/pack-left-out.txt" -printf '%s\t%p\n' | sort -n |
    awk -F'\t' -v file_max="$PACK_FILE_MAX" -v total_max="$PACK_TOTAL_MAX" '
      $1 <= file_max && total + $1 <= total_max { total += $1; print "K\t" $2; next }
      { print "L\t" $2 " (" $1 " bytes)" }')
  keep=$(sed -n 's/^K\t//p' <<<"$chosen" | LC_ALL=C sort)
  left_out=$(sed -n 's/^L\t//p' <<<"$chosen")
  if [[ -n "$left_out" ]]; then
    printf 'left out of bench_gpu_results.tar.gz (over %s bytes, or past %s in all):\n%s\n' \
      "$PACK_FILE_MAX" "$PACK_TOTAL_MAX" "$left_out" >"$OUTDIR/pack-left-out.txt"
    keep=${keep:+$keep$'\n'}"$base/pack-left-out.txt"
  else
    rm -f "$OUTDIR/pack-left-out.txt"
  fi
  # Written beside and renamed: a call killed while packing leaves the last whole archive.
  if tar -czf "$OUT/bench_gpu_results.tar.gz.part" -C "$parent" --no-recursion --verbatim-files-from -T - <<<"$keep"; then
    mv -f "$OUT/bench_gpu_results.tar.gz.part" "$OUT/bench_gpu_results.tar.gz"
  else
    rm -f "$OUT/bench_gpu_results.tar.gz.part"
  fi
  [[ -f "$OUTDIR/report.md" ]] && cp "$OUTDIR/report.md" "$OUT/report.md"
  cp "$OUTDIR/status.tsv" "$OUT/status.tsv" 2>/dev/null
  return 0
}

# Binaries an earlier call on this machine took from the kit keep the library path they needed.
load_kit_env
echo "bench_gpu.sh: stages ${RUN_STAGES[*]}; results in $OUTDIR"
record_env
for s in "${RUN_STAGES[@]}"; do
  if ! "stage_$s" && [[ "$s" == build ]]; then
    echo "bench_gpu.sh: the build failed; the later stages need it (see $OUTDIR/build*.log)" >&2
    [[ " ${RUN_STAGES[*]} " == *" report "* ]] && stage_report
    pack_results
    exit 1
  fi
done
pack_results
if ((FAILED)); then
  echo "bench_gpu.sh: some stages failed (see $OUTDIR/status.tsv and the stage logs)" >&2
  exit 1
fi
echo "bench_gpu.sh: done; results in $OUTDIR"
