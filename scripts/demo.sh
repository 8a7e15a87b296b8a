#!/usr/bin/env bash
# The gpt2cc demo: installs what it needs, builds the three programs it runs (prepare, train,
# generate), prepares TinyStories with GPT-2's tokenizer, trains a small GPT-2, reports validation
# perplexity, draws the curves and generates a story. On 2 cores a first run builds for about 2
# minutes, then trains for 1.5 to 3.5 (the more other work shares the cores, the longer).
#   scripts/demo.sh                    CPU: preset d2
#   scripts/demo.sh --device cuda      the same on a GPU (a larger model and more steps)
#   scripts/demo.sh --steps 400 --preset d4 --threads 8
# Data: $GPT2CC_DATA_DIR, else ../shared/data when present (a local copy: the TinyStories sample
# and GPT-2's vocabulary), else downloaded from their public hosts by data/download.py.
# Outputs go to <build>/demo/ (build dir: $GPT2CC_BUILD_DIR, default build).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cpu
steps=""
preset=""
threads=0
while (($#)); do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --preset) preset="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument '$1' (see scripts/demo.sh --help)" >&2; exit 2 ;;
  esac
done
if [[ "$device" != cpu && "$device" != cuda ]]; then
  echo "demo: --device must be cpu or cuda, got '$device'" >&2
  exit 2
fi
# A CPU run stays at a few minutes; a GPU affords a wider model and many more steps.
if [[ "$device" == cuda ]]; then
  preset="${preset:-d6}"; steps="${steps:-2000}"; batch=16; seq=256; eval_every=250
else
  preset="${preset:-d2}"; steps="${steps:-1000}"; batch=4; seq=64; eval_every=100
fi
eval_every=$((steps < eval_every ? steps : eval_every))

source scripts/deps.sh
ensure_build_deps
build_dir="${GPT2CC_BUILD_DIR:-build}"
configure=()
if [[ "$device" == cuda ]]; then configure=(-DGPT2CC_CUDA=ON); fi
build_gpt2cc "$build_dir" "${configure[@]}" -- prepare train generate

work="$build_dir/demo"
mkdir -p "$work"
data_dir="${GPT2CC_DATA_DIR:-../shared/data}"
mirror=()
if [[ -d "$data_dir" ]]; then
  mirror=(--mirror "$data_dir")
  echo "demo: taking data from the local copy in $data_dir"
else
  echo "demo: no local data copy: downloading TinyStories and GPT-2's vocabulary (set GPT2CC_DATA_DIR to use a copy)"
fi
python3 data/download.py tinystories-v1 gpt2-tokenizer --out "$work/raw" "${mirror[@]}"

shards="$work/tinystories"
if [[ ! -f "$shards/manifest.json" ]]; then
  "$build_dir/prepare" --format tinystories --input "$work/raw/tinystories-v1/TinyStories-train.txt" \
    --val-files "$work/raw/tinystories-v1/TinyStories-valid.txt" --tokenizer "$work/raw/gpt2-tokenizer" \
    --out "$shards"
fi

run="$work/run"
rm -rf "$run"  # the demo's own run directory: each demo starts afresh
echo "demo: training preset $preset on $device for $steps steps of $batch x $seq tokens"
"$build_dir/train" --train-data "$shards/train" --val-data "$shards/val" --preset "$preset" \
  --batch-size "$batch" --seq-len "$seq" --steps "$steps" --lr 3e-3 --warmup-steps $((steps / 10)) \
  --eval-every "$eval_every" --eval-batches 16 --run-dir "$run" --device "$device" --threads "$threads" \
  --tokenizer "$work/raw/gpt2-tokenizer" --log-every 10 | tee "$work/train.log"
grep -E "^validation loss" "$work/train.log" | sed 's/^/demo: /'

ensure_python_packages matplotlib
python3 scripts/plot_metrics.py "$run" -o "$work/curves.png" --title "gpt2cc $preset on TinyStories ($device)"

checkpoint="$(ls "$run"/checkpoints/step_*.ckpt | tail -n 1)"
if [[ -x "$build_dir/generate" ]]; then
  echo "demo: a story from $checkpoint, continuing \"Once upon a time\":"
  "$build_dir/generate" --checkpoint "$checkpoint" --prompt "Once upon a time" --max-new-tokens 100 --top-k 40 \
    --device "$device" --threads "$threads"
  echo
else
  echo "demo: $build_dir/generate is not built: no story this time"
fi
echo "demo: done. Curves: $work/curves.png; metrics: $run/metrics.jsonl; checkpoint: $checkpoint"
