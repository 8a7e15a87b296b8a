#!/usr/bin/env bash
# scripts/demo.sh, the README's main command, end to end on a tiny run (DESIGN.md's testing tier
# 5): on the CPU, 20 steps of d2 instead of 1000, with the programs of the build ctest runs in
# (the demo's build step finds nothing to do) and its data and runs in a folder of this test's
# own ($GPT2CC_DEMO_DIR), so that a user's demo runs in <build>/demo are not touched. Checks what
# the demo promises: exit 0, the validation perplexity, a story after the prompt, the run folder
# (story.txt, train.log, config.json, metrics.jsonl, curves.png, generate.log, the last checkpoint),
# and the same for a short run in bf16 (--dtype bf16) on the shards prepared before; a second demo
# refused while the folder is locked; the shards prepared again from another data copy; a kill
# while training (train stops with a checkpoint, none left running, exit 143); then that bad flags
# exit 2 naming the problem, and that --device cuda on a machine without a GPU
# exits 2 before building anything. Then, where matplotlib cannot be installed, that the plot is
# skipped and the story still told, and that relative path variables are the caller's. With a
# third argument, the folder of train and generate built against the CUDA emulator
# (tests/emu/hostcuda: emu-bin), the demo's --device cuda path
# too, through $GPT2CC_DEMO_PROGRAMS, on 3 steps of 2 x 32 tokens (the emulator runs ~50 tokens/s).
# Arguments: the repository root, the build directory[, the emulated programs' folder]. Run by
# ctest (label tooling), alone.
set -uo pipefail
ROOT="$1"
BUILD="$(cd "$2" && pwd)"
WORK="$BUILD/tests/tooling/demo"
EMULATED="${3:-}"
DATA="${GPT2CC_DATA_DIR:-$ROOT/../shared/data}"
FAILURES=0
fail() {
  echo "FAILED: $*" >&2
  FAILURES=$((FAILURES + 1))
}
if [[ ! -d "$DATA/tinystories" || ! -d "$DATA/gpt2" ]]; then
  echo "FAILED: the shared data (TinyStories sample, GPT-2 vocabulary) is not in $DATA (set GPT2CC_DATA_DIR)" >&2
  exit 1
fi
cd "$ROOT" || exit 1
rm -rf "$WORK"
mkdir -p "$WORK"

run_demo() {  # ARGS...: the demo's output in $OUT, its exit code in $RC (environment: DEMO_DIR, DEMO_DATA)
  OUT=$(GPT2CC_BUILD_DIR="$BUILD" GPT2CC_DEMO_DIR="${DEMO_DIR:-$WORK}" GPT2CC_DATA_DIR="${DEMO_DATA:-$DATA}" \
        timeout 600 bash scripts/demo.sh "$@" 2>&1)
  RC=$?
}

# A completed demo: exit 0, its report, the story, the run folder of `steps` steps.
check_demo() {  # WHAT RUN_FOLDER STEPS
  local what="$1" run="$2" steps="$3"
  if [[ $RC != 0 ]]; then
    fail "$what exited $RC: ${OUT: -2000}"
    return
  fi
  [[ "$OUT" =~ validation\ loss\ [0-9.]+,\ perplexity\ [0-9.]+ ]] ||
    fail "$what: no validation perplexity in: ${OUT: -1500}"
  [[ "$OUT" == *"demo: done."* ]] || fail "$what did not say it was done: ${OUT: -1500}"
  # The story: the line after the demo names the checkpoint starts with the prompt and goes on.
  local story
  story=$(printf '%s\n' "$OUT" | awk '/^demo: a story from/ { getline; print; exit }')
  [[ "$story" =~ ^Once\ upon\ a\ time.{20,} ]] || fail "$what: no story after the prompt: '$story'"
  local file checkpoint
  checkpoint="checkpoints/step_$(printf '%08d' "$steps").ckpt"
  for file in story.txt train.log config.json metrics.jsonl curves.png generate.log "$checkpoint"; do
    [[ -s "$run/$file" ]] || fail "$what: the run folder $run lacks $file"
  done
  [[ "$(head -n 1 "$run/story.txt" 2>/dev/null)" == "$story" ]] || fail "$what: story.txt is not the story told"
  grep -q "^done: step $steps/$steps" "$run/train.log" || fail "$what: train.log does not end the $steps steps"
  [[ ! -e "$run.partial" ]] || fail "$what: the attempt folder $run.partial was left behind"
}

run_demo --steps 20 --threads 2
check_demo "demo --steps 20" "$WORK/run-d2" 20
# In bf16 on the CPU: train and generate both take it (the run replaces the one above), on the
# shards prepared above.
run_demo --dtype bf16 --steps 4 --threads 2
check_demo "demo --dtype bf16" "$WORK/run-d2" 4
[[ "$OUT" == *"demo: the token shards in $WORK/tinystories are of these inputs: reusing them"* ]] ||
  fail "demo --dtype bf16 did not reuse the shards: ${OUT:0:1500}"
grep -q "cpu bf16" "$WORK/run-d2/train.log" 2>/dev/null || fail "demo --dtype bf16: train.log does not say cpu bf16"
grep -q "cpu bf16" "$WORK/run-d2/generate.log" 2>/dev/null || fail "demo --dtype bf16: generate.log does not say cpu bf16"

# A second demo in the same folder while one runs (its lock held here): refused, nothing touched.
exec {held}>"$WORK/.demo.lock"
flock -n "$held" || fail "the demo left its folder locked"
run_demo --steps 1 --threads 2
[[ $RC == 2 && "$OUT" == *"demo: another demo is running in $WORK"* ]] ||
  fail "a demo beside a running one: exit $RC (want 2, 'another demo is running'): ${OUT: -1000}"
[[ -s "$WORK/run-d2/checkpoints/step_00000004.ckpt" ]] || fail "a refused demo touched the run before it"
exec {held}>&-

# Another copy of the data (a shorter story file): the shards are prepared again from it.
mkdir -p "$WORK/data2"
cp -r "$DATA/gpt2" "$WORK/data2/"
mkdir -p "$WORK/data2/tinystories"
head -n 3000 "$DATA/tinystories/train-head.txt" >"$WORK/data2/tinystories/train-head.txt"
cp "$DATA/tinystories/valid-head.txt" "$WORK/data2/tinystories/"
DEMO_DATA="$WORK/data2" run_demo --steps 1 --threads 2
[[ $RC == 0 && "$OUT" == *"demo: the token shards in $WORK/tinystories are of other inputs: preparing them again"* ]] ||
  fail "demo on another data copy: exit $RC, shards not prepared again: ${OUT:0:1500}"
grep -q '"tokens": ' "$WORK/tinystories/manifest.json" 2>/dev/null &&
  [[ "$(grep -c '' "$WORK/raw/tinystories-v1/TinyStories-train.txt")" == 3000 ]] ||
  fail "demo on another data copy: the raw story file is not the copy's"

# A kill (or Ctrl-C) while it trains: train stops after its step with a checkpoint and says so,
# no train is left running, and the demo exits 128 + the signal.
OUT_FILE="$WORK/killed.out"
GPT2CC_BUILD_DIR="$BUILD" GPT2CC_DEMO_DIR="$WORK" GPT2CC_DATA_DIR="$DATA" \
  bash scripts/demo.sh --steps 100000 --threads 1 >"$OUT_FILE" 2>&1 &
demo_pid=$!
for _ in $(seq 1 600); do
  grep -q "^step *10/" "$WORK/run-d2.partial/train.log" 2>/dev/null && break
  sleep 0.1
done
kill -TERM "$demo_pid"
wait "$demo_pid"
RC=$?
[[ $RC == 143 ]] || fail "a killed demo exited $RC, want 143: $(tail -c 1500 "$OUT_FILE")"
grep -q "stopped by a signal at step" "$WORK/run-d2.partial/train.log" 2>/dev/null ||
  fail "a killed demo's train.log does not say train stopped: $(tail -c 1000 "$WORK/run-d2.partial/train.log")"
grep -q "demo: training did not complete (stopped by a signal)" "$OUT_FILE" ||
  fail "a killed demo did not say training was stopped: $(tail -c 1000 "$OUT_FILE")"
! pgrep -f -- "--run-dir $WORK/run-d2.partial" >/dev/null || fail "a killed demo left train running"

# Without matplotlib, where pip refuses to install it (PEP 668, a stand-in python3 first in PATH;
# apt-get and apt-cache stand-ins that fail, so that nothing is installed): the demo says the plot
# is skipped and still tells the story. Run from a folder of its own, with every path variable
# relative (the caller's) and the programs of the run above.
caller="$WORK/caller"
stub="$WORK/no-matplotlib"
mkdir -p "$caller" "$stub"
cat >"$stub/python3" <<STUB
#!/usr/bin/env bash
case "\$*" in
  "-c import matplotlib") exit 1 ;;
  "-m pip install"*) echo "error: externally-managed-environment (stand-in)" >&2; exit 1 ;;
esac
exec "$(command -v python3)" "\$@"
STUB
printf '#!/bin/sh\nexit 100\n' >"$stub/apt-get"
cp "$stub/apt-get" "$stub/apt-cache"
chmod +x "$stub/python3" "$stub/apt-get" "$stub/apt-cache"
OUT=$(cd "$caller" && PATH="$stub:$PATH" GPT2CC_DEMO_PROGRAMS="$(realpath --relative-to=. "$BUILD")" \
      GPT2CC_DEMO_DIR=relative-demo GPT2CC_DATA_DIR="$(realpath --relative-to=. "$DATA")" \
      timeout 300 bash "$ROOT/scripts/demo.sh" --steps 2 --threads 2 2>&1)
RC=$?
[[ $RC == 0 && "$OUT" == *"matplotlib could not be installed: the loss curves (curves.png) are skipped"* ]] ||
  fail "demo without matplotlib: exit $RC (want 0 and the plot skipped): ${OUT: -1500}"
story=$(printf '%s\n' "$OUT" | awk '/^demo: a story from/ { getline; print; exit }')
[[ "$story" =~ ^Once\ upon\ a\ time.{20,} ]] || fail "demo without matplotlib: no story after the prompt: '$story'"
[[ -s "$caller/relative-demo/run-d2/checkpoints/step_00000002.ckpt" ]] ||
  fail "relative GPT2CC_DEMO_DIR: no run in $caller/relative-demo (the caller's folder)"
if [[ -e "$ROOT/relative-demo" ]]; then
  fail "relative GPT2CC_DEMO_DIR went to the repository"
  rm -rf "$ROOT/relative-demo"
fi

if [[ -n "$EMULATED" ]]; then
  # prepare is the build's (the CPU's alone); train and generate run on the emulated device.
  programs="$WORK/emulated-programs"
  mkdir -p "$programs"
  ln -sf "$BUILD/prepare" "$programs/prepare"
  ln -sf "$(cd "$EMULATED" && pwd)/train" "$programs/train"
  ln -sf "$(cd "$EMULATED" && pwd)/generate" "$programs/generate"
  DEMO_DIR="$WORK/cuda" GPT2CC_DEMO_PROGRAMS="$programs" \
    run_demo --device cuda --preset d2 --steps 3 --batch-size 2 --seq-len 32
  check_demo "demo --device cuda (emulated)" "$WORK/cuda/run-d2" 3
  grep -q "on cuda fp32 (device 0: gpt2cc CPU emulator" "$WORK/cuda/run-d2/train.log" 2>/dev/null ||
    fail "the emulated demo's train.log does not say it trained on the emulated device"
  grep -q "cuda" "$WORK/cuda/run-d2/generate.log" 2>/dev/null ||
    fail "the emulated demo's generate.log does not name the cuda backend"
  GPT2CC_DEMO_PROGRAMS="$WORK/nowhere" run_demo --steps 1
  [[ $RC == 2 && "$OUT" == *"GPT2CC_DEMO_PROGRAMS=$WORK/nowhere holds no program 'prepare'"* ]] ||
    fail "GPT2CC_DEMO_PROGRAMS without the programs: exit $RC, output: ${OUT:0:500}"
fi

# Bad flags: exit 2, the flag named, before any work.
expect_usage_error() {  # MESSAGE ARGS...
  local message="$1"
  shift
  run_demo "$@"
  [[ $RC == 2 && "$OUT" == *"$message"* ]] || fail "demo $*: exit $RC (want 2 and '$message'), output: ${OUT:0:500}"
}
expect_usage_error "--steps must be a whole number from 1" --steps 0
expect_usage_error "--device must be cpu or cuda, got 'tpu'" --device tpu
expect_usage_error "--dtype must be fp32 or bf16, got 'fp16'" --dtype fp16
expect_usage_error "--dtype needs a value" --dtype
expect_usage_error "--preset must be a preset name" --preset ../elsewhere
expect_usage_error "unknown argument '--bogus'" --bogus
expect_usage_error "--threads needs a value" --threads
expect_usage_error "--batch-size must be a whole number from 1" --batch-size 0
expect_usage_error "--seq-len must be a whole number from 1" --seq-len x
expect_usage_error "--seq-len must be a whole number from 1 to 1024 (the presets' positions), got '5000'" --seq-len 5000
expect_usage_error "--threads must be a whole number from 0 to 1024" --threads 5000
expect_usage_error "--threads must be a whole number from 0 to 1024 (0: \$OMP_NUM_THREADS" --threads -1
DEMO_DATA="$WORK/no_such_data" expect_usage_error "GPT2CC_DATA_DIR=$WORK/no_such_data is not a directory" --steps 2
if ! nvidia-smi -L >/dev/null 2>&1; then
  expect_usage_error "--device cuda needs an NVIDIA GPU" --device cuda
fi

echo "demo checks: $FAILURES failures"
[[ $FAILURES == 0 ]]
