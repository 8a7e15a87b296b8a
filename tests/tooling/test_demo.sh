#!/usr/bin/env bash
# scripts/demo.sh, the README's main command, end to end on a tiny run (DESIGN.md's testing tier
# 5): on the CPU, 20 steps of d2 instead of 1000, with the programs of the build ctest runs in
# (the demo's build step finds nothing to do) and its data and runs in a folder of this test's
# own ($GPT2CC_DEMO_DIR), so that a user's demo runs in <build>/demo are not touched. Checks what
# the demo promises: exit 0, the validation perplexity, a story after the prompt, the run folder
# (train.log, config.json, metrics.jsonl, curves.png, generate.log, the last checkpoint); then
# that bad flags exit 2 naming the problem, and that --device cuda on a machine without a GPU
# exits 2 before building anything.
# Arguments: the repository root, the build directory. Run by ctest (label tooling), alone.
set -uo pipefail
ROOT="$1"
BUILD="$(cd "$2" && pwd)"
WORK="$BUILD/tests/tooling/demo"
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

run_demo() {  # ARGS...: the demo's output in $OUT, its exit code in $RC
  OUT=$(GPT2CC_BUILD_DIR="$BUILD" GPT2CC_DEMO_DIR="$WORK" GPT2CC_DATA_DIR="$DATA" \
        timeout 600 bash scripts/demo.sh "$@" 2>&1)
  RC=$?
}

run_demo --steps 20 --threads 2
run="$WORK/run-d2"
if [[ $RC != 0 ]]; then
  fail "demo --steps 20 exited $RC: ${OUT: -2000}"
else
  [[ "$OUT" =~ validation\ loss\ [0-9.]+,\ perplexity\ [0-9.]+ ]] || fail "no validation perplexity in: ${OUT: -1500}"
  [[ "$OUT" == *"demo: done."* ]] || fail "the demo did not say it was done: ${OUT: -1500}"
  # The story: the line after the demo names the checkpoint starts with the prompt and goes on.
  story=$(printf '%s\n' "$OUT" | awk '/^demo: a story from/ { getline; print; exit }')
  [[ "$story" =~ ^Once\ upon\ a\ time.{20,} ]] || fail "no story after the prompt: '$story'"
  for file in train.log config.json metrics.jsonl curves.png generate.log checkpoints/step_00000020.ckpt; do
    [[ -s "$run/$file" ]] || fail "the run folder $run lacks $file"
  done
  grep -q '^done: step 20/20' "$run/train.log" || fail "train.log does not end the 20 steps"
  [[ ! -e "$run.partial" ]] || fail "the attempt folder $run.partial was left behind"
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
expect_usage_error "--preset must be a preset name" --preset ../elsewhere
expect_usage_error "unknown argument '--bogus'" --bogus
expect_usage_error "--threads needs a value" --threads
if ! nvidia-smi -L >/dev/null 2>&1; then
  expect_usage_error "--device cuda needs an NVIDIA GPU" --device cuda
fi

echo "demo checks: $FAILURES failures"
[[ $FAILURES == 0 ]]
