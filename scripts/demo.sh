#!/usr/bin/env bash
# The gpt2cc demo: installs what it needs, builds the three programs it runs (prepare, train,
# generate), prepares TinyStories with GPT-2's tokenizer, trains a small GPT-2, reports validation
# perplexity, draws the loss curves and generates a story.
#   scripts/demo.sh                  CPU: preset d2, 1000 steps of batch 4 x 64 tokens
#   scripts/demo.sh --device cuda    GPU: preset d6, 2000 steps of batch 16 x 256 tokens
#   scripts/demo.sh --steps 400 --preset d4 --threads 8
#   scripts/demo.sh --dtype bf16     CPU in bf16 (mixed precision; faster where the CPU has
#                                    AVX512-BF16 or AMX, docs/training.md)
# Flags: --device cpu|cuda (default cpu); --dtype fp32|bf16 (default fp32; train's and
# generate's); --preset NAME (default d2 on cpu, d6 on cuda; the others: train --help); --steps
# N >= 1 (default 1000 on cpu, 2000 on cuda); --batch-size N and --seq-len N >= 1 (default 4 x 64
# on cpu, 16 x 256 on cuda; at most the preset's 1024 positions); --threads N CPU threads
# (default 0: $OMP_NUM_THREADS, else all cores).
# Programs: built into the build directory, unless $GPT2CC_DEMO_PROGRAMS names a folder that
# holds prepare, train and generate already built (an install, another build): the demo then
# runs those and builds nothing (nor looks for a GPU first: train does).
# Time on 2 cores: a first run builds the three programs (1.5 to 2 minutes), then trains d2 (1 to
# 3.5 minutes: the more other work shares the cores, the longer); a re-run reuses the build and
# the prepared data (prepared again when the text or tokenizer copied in changed).
# Data: $GPT2CC_DATA_DIR, else ../shared/data when present (a local copy of the TinyStories sample
# and GPT-2's vocabulary), else downloaded from their public hosts by data/download.py; copied
# into <build>/demo/raw/ and tokenized into <build>/demo/tinystories/.
# Outputs: <build>/demo/run-<preset>/ (build dir: $GPT2CC_BUILD_DIR, default build; the demo's
# folder: $GPT2CC_DEMO_DIR, default <build>/demo): story.txt, train.log, config.json,
# metrics.jsonl, curves.png, generate.log, checkpoints/. A run that fails leaves the previous one
# of that preset in place. One demo at a time runs in a demo folder (a second is refused, exit 2).
# A Ctrl-C or kill while it trains stops train after its step, with a checkpoint in
# run-<preset>.partial/, and the demo exits 128 + the signal. Relative paths in these variables
# are the caller's. The plot needs matplotlib: when it cannot be installed (or the plot fails) the
# demo says so and goes on to the story.
set -euo pipefail
# The caller's relative paths, made absolute before the cd below.
for var in GPT2CC_DEMO_DIR GPT2CC_DEMO_PROGRAMS GPT2CC_DATA_DIR GPT2CC_BUILD_DIR; do
  if [[ -n "${!var:-}" && "${!var}" != /* ]]; then
    printf -v "$var" '%s' "$(pwd)/${!var}"
  fi
done
cd "$(dirname "$0")/.."

usage_error() {
  echo "demo: $1 (see scripts/demo.sh --help)" >&2
  exit 2
}
# Fails naming the flag $1 unless $2 is a whole number from $3 to 2^31 - 1 (train's int flags).
# check_whole_number FLAG VALUE MIN [MAX [WHY]]: VALUE a whole number in MIN..MAX (default 2^31 - 1).
check_whole_number() {
  local max=${4:-2147483647}
  if ! [[ "$2" =~ ^0*[0-9]{1,10}$ ]] || ((10#$2 < $3 || 10#$2 > max)); then
    usage_error "$1 must be a whole number from $3 to $max${5:+ ($5)}, got '$2'"
  fi
}

device=cpu
dtype=fp32
steps=""
preset=""
batch=""
seq=""
threads=0
while (($#)); do
  case "$1" in
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    --device|--dtype|--steps|--preset|--batch-size|--seq-len|--threads)
      (($# >= 2)) || usage_error "$1 needs a value" ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
  case "$1" in
    --device) device="$2" ;;
    --dtype) dtype="$2" ;;
    --steps) check_whole_number "$1" "$2" 1; steps=$((10#$2)) ;;
    --preset)
      # It names the run's directory: a name, not a path (train checks that the preset exists).
      [[ "$2" =~ ^[A-Za-z0-9_.-]+$ ]] || usage_error "--preset must be a preset name such as d4, got '$2'"
      preset="$2" ;;
    --batch-size) check_whole_number "$1" "$2" 1; batch=$((10#$2)) ;;
    --seq-len) check_whole_number "$1" "$2" 1 1024 "the presets' positions"; seq=$((10#$2)) ;;
    --threads) check_whole_number "$1" "$2" 0 1024 "0: \$OMP_NUM_THREADS, else all cores"; threads=$((10#$2)) ;;
  esac
  shift 2
done
[[ "$device" == cpu || "$device" == cuda ]] || usage_error "--device must be cpu or cuda, got '$device'"
[[ "$dtype" == fp32 || "$dtype" == bf16 ]] || usage_error "--dtype must be fp32 or bf16, got '$dtype'"
# A data copy named but not there is a mistake to report, not a reason to download.
if [[ -n "${GPT2CC_DATA_DIR:-}" && ! -d "$GPT2CC_DATA_DIR" ]]; then
  usage_error "GPT2CC_DATA_DIR=$GPT2CC_DATA_DIR is not a directory (unset it to use ../shared/data or download)"
fi
programs="${GPT2CC_DEMO_PROGRAMS:-}"
if [[ -n "$programs" ]]; then
  for program in prepare train generate; do
    [[ -x "$programs/$program" ]] || usage_error "GPT2CC_DEMO_PROGRAMS=$programs holds no program '$program'"
  done
elif [[ "$device" == cuda ]]; then
  # Before the build: train checks the GPU itself, but only after minutes of compiling.
  gpus="$(nvidia-smi -L 2>/dev/null)" || gpus=""
  if ! grep -q '^GPU ' <<<"$gpus"; then
    echo "demo: --device cuda needs an NVIDIA GPU, and 'nvidia-smi -L' lists none on this machine" \
      "(without --device cuda the demo runs on the CPU)" >&2
    exit 2
  fi
fi
# A CPU run stays at a few minutes; a GPU affords a wider model and many more steps.
if [[ "$device" == cuda ]]; then
  preset="${preset:-d6}"; steps="${steps:-2000}"; batch="${batch:-16}"; seq="${seq:-256}"; eval_every=250
else
  preset="${preset:-d2}"; steps="${steps:-1000}"; batch="${batch:-4}"; seq="${seq:-64}"; eval_every=100
fi
eval_every=$((steps < eval_every ? steps : eval_every))

# shellcheck source=scripts/deps.sh
source scripts/deps.sh
build_dir="${GPT2CC_BUILD_DIR:-build}"
if [[ -z "$programs" ]]; then
  ensure_build_deps
  configure=()
  if [[ "$device" == cuda ]]; then configure=(-DGPT2CC_CUDA=ON); fi
  build_gpt2cc "$build_dir" "${configure[@]}" -- prepare train generate
  programs="$build_dir"
fi

work="${GPT2CC_DEMO_DIR:-$build_dir/demo}"
mkdir -p "$work"
# One demo at a time in a demo folder: a second would remove the first's training in progress.
exec {demo_lock}>"$work/.demo.lock"
if ! flock -n "$demo_lock"; then
  echo "demo: another demo is running in $work (it holds $work/.demo.lock): wait for it to end, or set" \
    "GPT2CC_DEMO_DIR to another folder" >&2
  exit 2
fi
data_dir="${GPT2CC_DATA_DIR:-../shared/data}"
mirror=()
if [[ -d "$data_dir" ]]; then
  mirror=(--mirror "$data_dir")
  echo "demo: taking data from the local copy in $data_dir"
else
  echo "demo: no local data copy: downloading TinyStories and GPT-2's vocabulary (set GPT2CC_DATA_DIR to use a copy)"
fi
python3 data/download.py tinystories-v1 gpt2-tokenizer --out "$work/raw" "${mirror[@]}"

# The shards are prepared again only when the text or the tokenizer they come from changed (another
# GPT2CC_DATA_DIR, say): their checksums are kept beside the shards.
shards="$work/tinystories"
inputs=$(cd "$work/raw" && sha256sum tinystories-v1/TinyStories-train.txt tinystories-v1/TinyStories-valid.txt \
  gpt2-tokenizer/*)
if [[ -f "$shards/manifest.json" && "$(cat "$shards/inputs.sha256" 2>/dev/null)" == "$inputs" ]]; then
  echo "demo: the token shards in $shards are of these inputs: reusing them"
else
  if [[ -e "$shards" ]]; then
    echo "demo: the token shards in $shards are of other inputs: preparing them again"
    rm -rf "$shards"
  fi
  echo "demo: blank lines separate both stories and paragraphs in the validation sample, so its stories" \
    "are split at paragraphs: prepare's warning about it is expected"
  "$programs/prepare" --format tinystories --input "$work/raw/tinystories-v1/TinyStories-train.txt" \
    --val-files "$work/raw/tinystories-v1/TinyStories-valid.txt" --tokenizer "$work/raw/gpt2-tokenizer" \
    --out "$shards"
  printf '%s\n' "$inputs" >"$shards/inputs.sha256"
fi

# Train into a new directory; it replaces the previous run of this preset only once complete.
run="$work/run-$preset"
attempt="$run.partial"
rm -rf "$attempt"  # left by a demo that failed or was stopped
mkdir -p "$attempt"
echo "demo: training preset $preset on $device ($dtype) for $steps steps of $batch x $seq tokens"
# train runs in the background, its output shown as it is written to train.log, so that the demo
# hands a Ctrl-C or a kill on to it: train then stops after its current step, with a checkpoint
# (a background job of a script has SIGINT ignored, so both reach it as SIGTERM), and the demo
# leaves no train running behind it. The log exists before either starts: tail, started at once,
# found no file when the background job had not opened it yet, and showed nothing.
: >"$attempt/train.log"
"$programs/train" --train-data "$shards/train" --val-data "$shards/val" --preset "$preset" \
  --batch-size "$batch" --seq-len "$seq" --steps "$steps" --lr 3e-3 --warmup-steps $((steps / 10)) \
  --eval-every "$eval_every" --eval-batches 16 --run-dir "$attempt" --device "$device" --dtype "$dtype" \
  --threads "$threads" --tokenizer "$work/raw/gpt2-tokenizer" --log-every 10 >>"$attempt/train.log" &
train_pid=$!
tail -n +1 -f --pid="$train_pid" "$attempt/train.log" &
tail_pid=$!
stopped_by=0  # the exit code a signal to the demo asks for: 128 + its number
stop_training() {
  stopped_by=$1
  kill -TERM "$train_pid" 2>/dev/null || true
}
trap 'stop_training 130' INT
trap 'stop_training 143' TERM
trap 'stop_training 129' HUP
status=0
while :; do
  wait "$train_pid" && status=0 || status=$?
  kill -0 "$train_pid" 2>/dev/null || break  # else a trapped signal ended the wait: wait on
done
wait "$tail_pid" || true
trap - INT TERM HUP
# train exits 0 also when a signal stopped it early; only a run that printed "done:" is complete.
if ((status)) || ! grep -q '^done: ' "$attempt/train.log"; then
  kept="no earlier run of $preset to keep"
  if [[ -d "$run" ]]; then kept="the previous run stays in $run"; fi
  why="train exited with $status"
  ((status)) || why="train stopped before its last step"
  ((stopped_by)) && why="stopped by a signal"
  echo "demo: training did not complete ($why): $kept; this attempt's output is in $attempt" >&2
  ((stopped_by)) && exit "$stopped_by"
  exit $((status ? status : 1))
fi
where="in $run"
if [[ -d "$run" ]]; then
  where="in $run, replacing the previous one"
  rm -rf "$run"
fi
mv "$attempt" "$run"
echo "demo: training complete: the run is $where"

# The plot is optional: without matplotlib (or if it fails) the demo goes on to the story.
if ! ensure_python_packages matplotlib; then
  echo "demo: the Python package matplotlib could not be installed: the loss curves (curves.png) are skipped" \
    "(the numbers are in $run/metrics.jsonl)"
elif ! python3 scripts/plot_metrics.py "$run" -o "$run/curves.png" --labels "$preset" \
  --title "gpt2cc $preset on TinyStories ($device, $dtype, $steps steps)"; then
  echo "demo: plot_metrics.py failed (see above): the loss curves (curves.png) are skipped"
fi

checkpoints=("$run"/checkpoints/step_*.ckpt)
checkpoint="${checkpoints[-1]}"  # the newest: step numbers are zero-padded
prompt="Once upon a time"
echo "demo: a story from $checkpoint (the prompt, then the model's continuation):"
# generate prints only the continuation: the prompt goes first, and generate's report (model,
# sampling, throughput) to a file, so that the story reads as one text.
# The story is kept in story.txt too.
status=0
{
  printf '%s' "$prompt"
  "$programs/generate" --checkpoint "$checkpoint" --prompt "$prompt" --max-new-tokens 100 --top-k 40 \
    --device "$device" --dtype "$dtype" --threads "$threads" 2>"$run/generate.log"
} | tee -i "$run/story.txt" || status=$?
if ((status)); then
  echo
  cat "$run/generate.log" >&2
  exit "$status"
fi
plot=""
[[ -f "$run/curves.png" ]] && plot=" curves.png,"
echo "demo: done. The run (story.txt, train.log, metrics.jsonl,$plot generate.log, checkpoints/): $run"
