# shellcheck shell=bash
# Sourced by scripts/gpu_kit.sh (which packs gpt2cc's CUDA binaries here, sm_90) and by
# scripts/bench_gpu.sh (which uses them on the device machine instead of building there, which
# would cost minutes of its device time): what is packed, the fingerprint that says whether
# binaries were built from the sources beside them, and the size of the tree a device call carries.

# The binaries the device stages run, relative to the build folder.
# shellcheck disable=SC2034  # used by the scripts that source this file
GPT2CC_GPU_BINARIES=(
  tests/cuda/test_cuda_layers tests/cuda/test_cuda_model tests/cuda/test_cuda_bf16
  tests/train/test_train_cli tests/generate/test_generate_cli
  benchmarks/kernels/bench_kernels benchmarks/kernels/bench_attention benchmarks/gpu/bench_train_gpu
  train prepare generate
)

# sha256 of every file the build reads (sources, headers, CMake files, the templates CMake fills
# in, and benchmarks/gpu/peaks.json, which core's build compiles into every binary as the built-in
# peak table) under the repository root given (default: the current folder), in path order; build
# folders, the docs and tests/emu (the CPU emulator's tests, in none of the binaries) are outside
# it, and so are the top-level folders git ignores, which the device machine's copy of the tree
# lacks (its copy holds what git tracks or would track): the hidden ones (.git, the kit, .deps'
# PCRE2 headers and CMake files, .tools, .whl), runs/ and out/. That copy may have no .git, so git
# is not asked.
gpt2cc_source_fingerprint() {
  local root="${1:-.}"
  (
    cd "$root" || exit 1
    find . \( -path './.*' -o -path './build*' -o -path './runs' -o -path './out' -o -path './docs' \
      -o -path './tests/emu' \) -prune -o \
      -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \
      -o -name 'CMakeLists.txt' -o -name '*.cmake' -o -name '*.in' -o -path './benchmarks/gpu/peaks.json' \) \
      -print | LC_ALL=C sort | xargs -d '\n' sha256sum |
      sha256sum | cut -d' ' -f1
  )
}

# The bytes of the working tree that a device call carries beside the kit, under the repository
# root given (default: the current folder): the files git tracks and the untracked ones it does
# not ignore, apparent sizes (a tracked file deleted here counts nothing). Nothing is printed
# where git cannot say (no checkout).
gpt2cc_tree_bytes() {
  local root="${1:-.}"
  git -C "$root" rev-parse --git-dir >/dev/null 2>&1 || return 0
  git -C "$root" ls-files -z --cached --others --exclude-standard |
    (cd "$root" && du -cb --files0-from=- 2>/dev/null) | tail -1 | cut -f1
  return 0
}
