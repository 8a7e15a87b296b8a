#!/usr/bin/env bash
# The race check of the CUDA kernels: the emulated CUDA tests (tests/emu) built with
# ThreadSanitizer, which makes the emulator a race detector for the kernels it runs
# (docs/cuda.md, "Races"). Any report fails the run. Not part of scripts/test.sh: it needs a
# second build and runs for about 15 minutes on 2 cores. Installs missing build dependencies first.
#   scripts/race_check.sh                          build into ./build-race and run
#   GPT2CC_RACE_BUILD_DIR=dir scripts/race_check.sh another build directory
#   scripts/race_check.sh --help                   this text (nothing is installed or built)
set -euo pipefail
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "race_check.sh: unknown argument '$1' (it takes none; see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_build_deps
build_dir="${GPT2CC_RACE_BUILD_DIR:-build-race}"
# -g: file and line in each frame of a report.
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-g -DGPT2CC_SANITIZE=thread \
  -DGPT2CC_CUDA=OFF -DGPT2CC_MPI=OFF
cmake --build "$build_dir" -j "$(cpu_cores)" --target test_emu test_emu_attention_heads emu_cuda_layers emu_cuda_model \
  emu_cuda_bf16
# The detector's own test (its races are expected: it counts them), every kernel of test_emu (fp32
# and bf16) and its attention head-size branches, the unchanged tests/cuda layer and model tests
# (the whole fp32 model on the CUDA backend: host code, graphs, cuBLAS calls and kernels), and the
# flash tests one block at a time and with four blocks resident at once (the fused backward's
# hand-over between blocks). OpenMP's runtime is not instrumented: one thread keeps the CPU
# references' parallel loops out of the reports.
OMP_NUM_THREADS=1 ctest --test-dir "$build_dir" --output-on-failure -j "$(cpu_cores)" \
  -R '^(emu_race_detector|test_emu|test_emu_attention_heads|emu_cuda_layers|emu_cuda_model|emu_cuda_bf16_flash|emu_cuda_bf16_resident)$'
