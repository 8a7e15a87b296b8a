#!/usr/bin/env bash
# Data-parallel training on the CPU, side by side in one run: the same total batch trained
#   alone   one process, all threads, A accumulation steps;
#   zero1   mpiexec -n R, threads/R each, ZeRO stage 1 (AdamW moments sharded);
#   zero0   mpiexec -n R, threads/R each, ZeRO stage 0 (moments whole on every rank).
# Reports per run the median tokens/s of the steps after the first (from metrics.jsonl), the
# peak RSS of each process (/usr/bin/time), and the last step's loss (the three runs see the
# same batches, so their losses agree to rounding). Writes <out>/data_parallel.{md,json} (by default
# under the build folder: --out benchmarks/results replaces the committed figures).
#   benchmarks/cpu/bench_data_parallel.sh [--build build] [--preset gpt2] [--ranks 2]
#       [--batch-size 4] [--seq-len 64] [--steps 6] [--threads 2] [--out BUILD/bench-data-parallel]
# Data: GPT-2 tokens of the TinyStories sample in $GPT2CC_DATA_DIR (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/../.."

build=build preset=gpt2 ranks=2 batch=4 seq=64 steps=6 threads=2 out=
while (($#)); do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --preset) preset="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --seq-len) seq="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_data_parallel: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for tool in mpiexec /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "bench_data_parallel: $tool is needed" >&2; exit 2; }
done
[[ -x "$build/train" && -x "$build/prepare" ]] || { echo "bench_data_parallel: no $build/train (build first)" >&2; exit 2; }
for n in "$ranks" "$steps" "$threads" "$batch" "$seq"; do
  [[ "$n" =~ ^(0|[1-9][0-9]*)$ ]] || { echo "bench_data_parallel: '$n' is not a whole number (see --help)" >&2; exit 2; }
done
((ranks >= 1)) || { echo "bench_data_parallel: --ranks must be >= 1" >&2; exit 2; }
# The first step is left out of the median (it pays for the set-up): at least one more is needed.
((steps >= 2)) || { echo "bench_data_parallel: --steps must be >= 2 (the first is not timed)" >&2; exit 2; }
((threads % ranks == 0)) || { echo "bench_data_parallel: --threads $threads is not a multiple of --ranks $ranks" >&2; exit 2; }
data_dir="${GPT2CC_DATA_DIR:-../shared/data}"
[[ -f "$data_dir/tinystories/train-head.txt" ]] || { echo "bench_data_parallel: no $data_dir/tinystories" >&2; exit 2; }

work="$build/bench-data-parallel"
out="${out:-$work}"
mkdir -p "$work" "$out"
shards="$work/shards"
if [[ ! -f "$shards/manifest.json" ]]; then
  "$build/prepare" --format tinystories --input "$data_dir/tinystories/train-head.txt" \
    --tokenizer "$data_dir/gpt2" --out "$shards" >"$work/prepare.log"
fi

total=$((ranks * batch * seq))
common=(--train-data "$shards/train" --preset "$preset" --batch-size "$batch" --seq-len "$seq" --steps "$steps"
        --total-batch "$total" --lr 1e-4 --log-every 1)
export OMP_WAIT_POLICY=passive  # shared cores: no spinning at OpenMP barriers (benchmarks/results/cpu.md)
rank_var='${PMI_RANK:-${OMPI_COMM_WORLD_RANK:-0}}'
run() {  # name, launcher (empty: one process), threads, extra flags...
  local name="$1" launcher="$2" run_threads="$3"
  shift 3
  rm -rf "$work/$name"
  mkdir -p "$work/$name"
  local cmd=("$build/train" "${common[@]}" --threads "$run_threads" --run-dir "$work/$name/run" "$@")
  echo "bench_data_parallel: $name: ${launcher:+$launcher }${cmd[*]}"
  local status=0
  if [[ -z "$launcher" ]]; then
    /usr/bin/time -f %M -o "$work/$name/rss.0" "${cmd[@]}" >"$work/$name/log" 2>&1 || status=$?
  else
    # shellcheck disable=SC2086
    $launcher sh -c "/usr/bin/time -f %M -o $work/$name/rss.$rank_var \"\$@\"" sh "${cmd[@]}" >"$work/$name/log" 2>&1 ||
      status=$?
  fi
  if ((status != 0)); then  # the run's own message, not only that it failed
    echo "bench_data_parallel: $name failed (exit $status); the end of $work/$name/log:" >&2
    tail -n 5 "$work/$name/log" >&2
    exit "$status"
  fi
}
run alone "" "$threads"
run zero1 "mpiexec -n $ranks" $((threads / ranks)) --zero-stage 1
run zero0 "mpiexec -n $ranks" $((threads / ranks)) --zero-stage 0

python3 - "$work" "$out" "$preset" "$ranks" "$batch" "$seq" "$steps" "$threads" <<'EOF'
import json, os, statistics, subprocess, sys, datetime
work, out, preset, ranks, batch, seq, steps, threads = sys.argv[1:]
rows = []
for name, label in [("alone", f"1 process x {threads} threads, {ranks} accumulation steps"),
                    ("zero1", f"{ranks} ranks x {int(threads) // int(ranks)} thread(s), ZeRO-1"),
                    ("zero0", f"{ranks} ranks x {int(threads) // int(ranks)} thread(s), ZeRO-0")]:
    records = [json.loads(l) for l in open(os.path.join(work, name, "run", "metrics.jsonl"))]
    rss = sorted(int(open(os.path.join(work, name, f)).read().split()[-1]) // 1024
                 for f in os.listdir(os.path.join(work, name)) if f.startswith("rss."))
    rows.append({"run": name, "setup": label,
                 "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records[1:]),
                 "peak_rss_mib_per_process": rss, "last_loss": records[-1]["train_loss"]})
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
load = open("/proc/loadavg").read().split()[0]
meta = {"preset": preset, "ranks": int(ranks), "batch_size": int(batch), "seq_len": int(seq), "steps": int(steps),
        "threads": int(threads), "commit": commit, "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_after": float(load), "cpu": subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | cut -d: -f2"],
                                                              capture_output=True, text=True).stdout.strip()}
json.dump({"meta": meta, "runs": rows}, open(os.path.join(out, "data_parallel.json"), "w"), indent=2)
lines = [f"Data-parallel training on the CPU: {preset}, total batch {int(ranks) * int(batch)} x {seq} tokens, "
         f"{steps} steps ({meta['date']}, commit {commit}, {meta['cpu']}, load average {load} after the runs)", "",
         "| run | tokens/s (median, steps 2..) | peak RSS per process (MiB) | last loss |", "|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['setup']} | {r['tokens_per_s']:.1f} | {', '.join(map(str, r['peak_rss_mib_per_process']))} "
                 f"| {r['last_loss']:.6f} |")
open(os.path.join(out, "data_parallel.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
