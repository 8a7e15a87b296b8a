#!/usr/bin/env bash
# The GPU benchmarks' own code on the emulated device, so that a GPU session (minutes, rarely lent)
# does not find their faults first: bench_attention, bench_kernels and bench_train_gpu, built from
# the unchanged sources against the host CUDA runtime (emu-bin/), validate, time and write their
# JSON at small shapes; bench_train_gpu -B auto, on an emulated device of a few hundred MiB
# (GPT2CC_EMU_DEVICE_MIB), probes down from 512 rows through out-of-memory failures to a batch that
# then trains with CUDA graphs, while twice that batch fails with a clear message; GPT2CC_KERNELS'
# designs run and are named in the JSON; bad arguments exit 2; benchmarks/gpu/report.py turns the
# JSON into the report a session would paste. Timings here are the emulator's and mean nothing:
# what is checked is that every path runs, every kernel validates against the CPU, and the files
# the report reads agree with it.
# Usage: rehearse_benchmarks.sh REPO_ROOT EMU_BIN_DIR (run by ctest as emu_bench_rehearsal).
set -uo pipefail
ROOT=${1:?usage: rehearse_benchmarks.sh REPO_ROOT EMU_BIN_DIR}
BIN=${2:?usage: rehearse_benchmarks.sh REPO_ROOT EMU_BIN_DIR}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
FAILURES=0
fail() {
  echo "FAILED: $*" >&2
  FAILURES=$((FAILURES + 1))
}
# check_json FILE PYTHON-EXPRESSION: the expression (lines may break anywhere), over the parsed file
# as j, must be true.
check_json() {
  python3 - "$1" "$2" <<'EOF' || fail "$1: $2"
import json, math, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
EOF
}
# run NAME CMD...: runs CMD, its output into $OUT/NAME.log; fails the rehearsal unless it exits 0.
run() {
  local name=$1
  shift
  echo "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  ((rc == 0)) || { fail "$name exited $rc"; tail -20 "$OUT/$name.log" >&2; }
  return "$rc"
}
# expect_error NAME PATTERN CMD...: CMD must exit 2 with PATTERN in its output.
expect_error() {
  local name=$1 pattern=$2 out rc
  shift 2
  out=$("$@" 2>&1)
  rc=$?
  [[ $rc == 2 && "$out" == *"$pattern"* ]] || fail "$name: expected exit 2 and '$pattern', got exit $rc: $out"
}

# Attention: both head sizes, a T that is not a multiple of the tiles (T = 130: three Q tiles, so
# the fused backward's CTAs hand dQ sums to each other), 64 and 128 rows a CTA, both backward designs.
run attention "$BIN/bench_attention" --shapes 1x2x64x64,1x1x130x128 --reps 1 --warmup 1 \
  --json "$OUT/attention.json" &&
  check_json "$OUT/attention.json" \
    "len(j['results']) == 2 and all(r['valid'] and r['fwd_bwd_ms'] > 0 and r['fwd_bwd_ms_rows64'] > 0
     and r['fwd_bwd_ms_rows128'] > 0 and r['bwd_ms_split'] > 0 and r['bwd_ms_fused'] > 0
     and r['bwd_design_auto'] == 'split' and r['bwd_scratch_bytes_fused'] > r['bwd_scratch_bytes_split'] > 0
     and all(e[p] <= 1e-2 for e in (r['rel_error'], r['rel_error_other_design']) for p in ('out', 'dq', 'dk', 'dv'))
     and r['rel_error']['tiles_agree'] and r['rel_error_other_design']['tiles_agree'] for r in j['results'])"

# On an emulated RTX 4090 (sm_89, 99 KiB of shared memory per block: GPT2CC_EMU_GPU) HS 128's
# kernels do not fit: that shape is reported as not run, with the reason, and the HS 64 one runs.
GPT2CC_EMU_GPU=rtx4090 GPT2CC_CUDA_ARCHITECTURES=89 \
  run attention_rtx4090 "$BIN/bench_attention" --shapes 1x2x64x64,1x1x130x128 --reps 1 --warmup 1 \
  --json "$OUT/attention_rtx4090.json" &&
  check_json "$OUT/attention_rtx4090.json" \
    "len(j['results']) == 2 and j['results'][0]['valid'] and j['results'][0]['fwd_bwd_ms'] > 0
     and 'not_run' not in j['results'][0] and not j['results'][1]['valid'] and 'fwd_ms' not in j['results'][1]
     and 'more shared memory per block than' in j['results'][1]['not_run']"

# Every kernel, fp32 and bf16, validated against cpu:: and timed (the fixed GPT-2 124M AdamW and
# conversion sizes included; the four biased layers' backward with the BGRADB epilogue too, taken
# by the host cuBLASLt, and each of the five bf16 layers with the other GEMM designs: forward and
# backward with 16-byte alignment promised, backward with any split-K sums and with a 256 MiB
# workspace; the MLP's GELU in its own kernels, forward and backward; and the lm_head's backward
# into an fp32 dweight, through cuBLASLt); the ceilings measured first.
run kernels "$BIN/bench_kernels" -b 1 -t 16 --reps 1 --warmup 0 --json "$OUT/kernels.json" &&
  check_json "$OUT/kernels.json" \
    "len(j['kernels']) >= 70 and all(k['valid'] and k['ms'] > 0 for k in j['kernels'])
     and sum(k['kernel'] == 'matmul_backward_bgradb' and 'declined' not in k['shape'] for k in j['kernels']) == 4
     and all(sum(k['kernel'] == name and k['dtype'] == 'bf16' for k in j['kernels']) == 5
             for name in ('matmul_forward_align16', 'matmul_backward_align16', 'matmul_backward_splitk_any',
                          'matmul_backward_ws256'))
     and all(sum(k['kernel'] == name for k in j['kernels']) == 1
             for name in ('matmul_forward_gelu_separate', 'matmul_backward_gelu_separate'))
     and all(k['dtype'] == 'bf16' for k in j['kernels'] if k['kernel'].endswith('_gelu_separate'))
     and [(k['dtype'], k['shape'].split()[0], 'declined' in k['shape']) for k in j['kernels']
          if k['kernel'] == 'matmul_backward_fp32_dweight'] == [('bf16', 'lm_head', False)]
     and {k['dtype'] for k in j['kernels']} == {'fp32', 'bf16'} and j['copy_bandwidth_gbps'] > 0
     and j['sgemm_tflops'] > 0"

# A training step per dtype with CUDA graphs (the default): the scratch of the replayed steps is
# graph memory.
for dtype in bf16 fp32; do
  run "train_$dtype" "$BIN/bench_train_gpu" --preset d2 --dtype "$dtype" -B 2 -T 32 --steps 2 --warmup 1 \
    --json "$OUT/train_$dtype.json" &&
    check_json "$OUT/train_$dtype.json" \
      "j['dtype'] == '$dtype' and j['B'] == 2 and not j['B_auto'] and j['tokens_per_s'] > 0
       and math.isfinite(j['loss_last']) and j['loss_last'] < j['loss_first'] and j['peak_memory_bytes'] > 0
       and j['graph_mem_used_high_bytes'] > 0 and j['cuda_graphs']"
done

# The classifier in chunks (--classifier-rows: 16 of the 64 rows at a time, recorded in a CUDA graph),
# and all rows at once (0), as the designs stage runs it.
for rows in 16 0; do
  run "train_classifier_rows_$rows" "$BIN/bench_train_gpu" --preset d2 --dtype bf16 -B 2 -T 32 --steps 2 \
    --warmup 1 --classifier-rows "$rows" --json "$OUT/train_classifier_rows_$rows.json" &&
    check_json "$OUT/train_classifier_rows_$rows.json" \
      "j['classifier_rows_flag'] == $rows and j['classifier_rows'] == ($rows or 64) and j['cuda_graphs']
       and j['model_memory_bytes']['logits'] == ($rows or 64) * j['Vp'] * 2
       and j['model_memory_bytes']['total'] == sum(v for k, v in j['model_memory_bytes'].items()
                                                   if k not in ('total', 'logits'))
       and math.isfinite(j['loss_last']) and j['loss_last'] < j['loss_first']"
done

# The gradients in fp32 (--fp32-gradients), as the designs stage runs it: 4 bytes each, where the
# parameters take 6 (the fp32 master and the bf16 copy).
run train_fp32_gradients "$BIN/bench_train_gpu" --preset d2 --dtype bf16 -B 2 -T 32 --steps 2 --warmup 1 \
  --fp32-gradients --json "$OUT/train_fp32_gradients.json" &&
  check_json "$OUT/train_fp32_gradients.json" \
    "j['fp32_gradients'] and j['cuda_graphs']
     and 3 * j['model_memory_bytes']['gradients'] == 2 * j['model_memory_bytes']['parameters']
     and math.isfinite(j['loss_last']) and j['loss_last'] < j['loss_first']"
expect_error "fp32 only" "--fp32-gradients is for --dtype bf16" "$BIN/bench_train_gpu" --preset d2 --dtype fp32 \
  -B 2 -T 32 --steps 1 --fp32-gradients

# GPT2CC_KERNELS (kernels/kernel_designs.cuh): a run with every other design trains and names them
# in its JSON, as the automatic run names none (the report's designs table reads both); a malformed
# value exits 2 naming the variable. The flash designs need flash's head size (64: d4; d2's 32
# runs the tiled attention, where they are refused), so they run apart (out of the report).
all_designs=classifier=streamed,layernorm-backward=two-pass,bias-grad=epilogue
all_designs+=,gemm-alignment=16,gemm-split-k=any,gemm-workspace=256,gelu=separate
flash_designs=flash-backward=fused,flash-tile=64
GPT2CC_KERNELS=$all_designs run designs_all "$BIN/bench_train_gpu" --preset d2 --dtype bf16 -B 2 -T 32 --steps 2 \
  --warmup 1 --json "$OUT/designs_all.json" &&
  check_json "$OUT/designs_all.json" \
    "j['kernel_designs'] == '$all_designs' and j['backend'].endswith('; kernel designs $all_designs')
     and math.isfinite(j['loss_last']) and j['loss_last'] < j['loss_first']
     and j['bf16_gemm_paths']['cublaslt'] > 0 and j['bf16_gemm_paths']['declined_by_cublaslt'] == 0"
[[ -f "$OUT/train_bf16.json" ]] && check_json "$OUT/train_bf16.json" "j['kernel_designs'] == ''" &&
  cp "$OUT/train_bf16.json" "$OUT/designs_automatic.json"
GPT2CC_KERNELS=flash-tile=32 expect_error "kernel designs" "GPT2CC_KERNELS: flash-tile=32 is not a design" \
  "$BIN/bench_train_gpu" --preset d2 --dtype bf16 -B 2 -T 32 --steps 1
GPT2CC_KERNELS=$flash_designs run flash_designs "$BIN/bench_train_gpu" --preset d4 --dtype bf16 -B 1 -T 32 \
  --steps 2 --warmup 1 --json "$OUT/flash_designs.json" &&
  check_json "$OUT/flash_designs.json" \
    "j['kernel_designs'] == '$flash_designs' and math.isfinite(j['loss_last']) and j['loss_last'] < j['loss_first']"
GPT2CC_KERNELS=$flash_designs expect_error "flash designs at head size 32" "head size 32 runs the tiled attention" \
  "$BIN/bench_train_gpu" --preset d2 --dtype bf16 -B 2 -T 32 --steps 1

# -B auto on a small device: the probes from 512 rows down fail for memory until one fits; that
# batch then trains with CUDA graphs; twice it fails (exit 1) saying so.
export GPT2CC_EMU_DEVICE_MIB=200
if run train_auto "$BIN/bench_train_gpu" --preset d2 --dtype bf16 -T 16 --steps 1 --warmup 1 \
  --json "$OUT/train_auto.json"; then
  check_json "$OUT/train_auto.json" "j['B_auto'] and 1 <= j['B'] < 512 and j['memory_total_bytes'] == 200 << 20
    and j['B'] in (j['B_probed'], j['B_probed'] // 2)"
  auto_b=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['B'])" "$OUT/train_auto.json")
  out=$("$BIN/bench_train_gpu" --preset d2 --dtype bf16 -T 16 -B $((2 * auto_b)) --steps 1 --warmup 0 2>&1)
  rc=$?
  [[ $rc != 0 && "$out" == *"out of memory"* ]] ||
    fail "twice the auto batch ($((2 * auto_b))) on the same device: expected an out-of-memory error, got exit $rc: $out"
fi
unset GPT2CC_EMU_DEVICE_MIB

# On an emulated Tesla T4 (sm_75, a build for 75): bench_kernels runs the fp32 kernels only and says
# why, or refuses --dtype bf16; bench_attention (flash only) and bf16 training are refused by name;
# fp32 training runs.
export GPT2CC_EMU_GPU=t4 GPT2CC_CUDA_ARCHITECTURES=75
if run kernels_t4 "$BIN/bench_kernels" -b 1 -t 16 --reps 1 --warmup 0 --json "$OUT/kernels_t4.json"; then
  grep -qF "is sm_75: the bf16 kernels need sm_80 or newer, so only the fp32 ones run" "$OUT/kernels_t4.log" ||
    fail "kernels_t4: no note that the bf16 kernels were left out"
  check_json "$OUT/kernels_t4.json" \
    "len(j['kernels']) >= 20 and all(k['valid'] and k['ms'] > 0 and k['dtype'] == 'fp32' for k in j['kernels'])"
fi
expect_error "kernels bf16 on a T4" "--dtype bf16 needs a GPU of compute capability 8.0 or newer" \
  "$BIN/bench_kernels" --dtype bf16 -b 1 -t 16 --reps 1
expect_error "attention on a T4" "flash attention does not run on gpt2cc CPU emulator (Tesla T4) (sm_75)" \
  "$BIN/bench_attention" --shapes 1x2x64x64 --reps 1
expect_error "bf16 training on a T4" "--dtype bf16 needs a GPU of compute capability 8.0 or newer" \
  "$BIN/bench_train_gpu" --preset d2 --dtype bf16 -B 2 -T 32 --steps 1
run train_fp32_t4 "$BIN/bench_train_gpu" --preset d2 --dtype fp32 -B 2 -T 32 --steps 2 --warmup 1 \
  --json "$OUT/train_fp32_t4.json" &&
  check_json "$OUT/train_fp32_t4.json" "j['dtype'] == 'fp32' and j['tokens_per_s'] > 0 and j['loss_last'] < j['loss_first']"
unset GPT2CC_EMU_GPU GPT2CC_CUDA_ARCHITECTURES

# Bad arguments.
expect_error "attention head size" "head size 32 is not supported" "$BIN/bench_attention" --shapes 1x1x64x32
expect_error "kernels dtype" "--dtype must be all, fp32 or bf16" "$BIN/bench_kernels" --dtype fp16
expect_error "train steps" "--steps must be >= 1" "$BIN/bench_train_gpu" --steps 0
expect_error "train batch" "--batch-size must be an integer >= 1 or 'auto'" "$BIN/bench_train_gpu" -B many

# The report over what the benchmarks wrote (no PyTorch results here: those columns say n/a).
printf 'date: %s\ngpu: gpt2cc CPU emulator\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$OUT/env.txt"
printf 'attention\t0\t1\nkernels\t0\t1\ntrain_bf16\t0\t1\ntrain_fp32\t0\t1\n' >"$OUT/status.tsv"
if run report python3 "$ROOT/benchmarks/gpu/report.py" "$OUT"; then
  for want in "| bf16 | 2×32 |" "| fp32 | 2×32 |" "| 1 | 2 | 64 | 64 |" "| 1 | 1 | 130 | 128 |" \
    "| fused_classifier | bf16 |" "| adamw_update | fp32 |" "| (automatic) | 2×32 |" "| $all_designs | 2×32 |"; do
    grep -qF -- "$want" "$OUT/report.md" || fail "report.md has no row '$want'"
  done
fi

if ((FAILURES)); then
  echo "$FAILURES check(s) failed; logs were in $OUT" >&2
  exit 1
fi
echo "rehearsal passed: every benchmark path ran on the emulated device"
