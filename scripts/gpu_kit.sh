#!/usr/bin/env bash
# Packs what the lent GPU machine lacks into one folder to carry there (run it here, with internet
# or a Debian mirror): gpt2cc's CUDA binaries built here for sm_90 (a build there would take minutes
# of the session's 15 of device time), the Debian packages of the build dependencies (that machine
# reaches no package registry: for a build there when the binaries cannot run) and the Wikipedia
# token shards of the parity run (../shared does not travel). scripts/bench_gpu.sh finds the kit in
# .gpu-kit/ by itself (or --kit DIR): it runs the binaries when they were built from the same
# sources and pass a CUDA test there, and unpacks the packages only when it must build and CMake
# finds a dependency missing. Usage:
#   scripts/gpu_kit.sh [--out DIR] [--data DIR] [--cuda-build-dir DIR] [--build-dir DIR (--no-binaries)]
#                      [--no-shards] [--no-binaries]
# then name the folder in the device call's carry (".gpu-kit"; git ignores it). 64 MiB travel at
# most, the working tree and the kit together: a kit over what the tree leaves is refused. Rerun
# it after any change to the sources: binaries of other sources are not used.
# Relative paths in the options and in $GPT2CC_DATA_DIR are the caller's; the defaults are the
# repository's. The new kit is assembled in a folder beside it and replaces it only once all of it
# was made: a failure leaves the previous kit as it was. What the options do not rebuild
# (--no-shards: the parity shards, --no-binaries: gpu-binaries.tar.gz) and any other file in it (a
# carried bench_gpu_results.tar.gz) are kept.
set -euo pipefail

CALLER=$(pwd)
cd "$(dirname "$0")/.."
source scripts/deps.sh
source scripts/gpu_common.sh

die() {
  echo "gpu_kit.sh: $*" >&2
  exit 2
}
# The path $1 as given by the caller (relative to the folder this script was run from).
from_caller() {
  if [[ "$1" = /* ]]; then echo "$1"; else echo "$CALLER/$1"; fi
}

KIT=".gpu-kit"
DATA="../shared/data"
[[ -n "${GPT2CC_DATA_DIR:-}" ]] && DATA=$(from_caller "$GPT2CC_DATA_DIR")
BUILD_DIR="build"
CUDA_BUILD_DIR="build-gpu-kit"
SHARDS=1
BINARIES=1
# The libraries CMake looks for (scripts/deps.sh's list without the tools, which the device image
# has: cmake, ninja, g++), and libpcre2-8-0 for the shared library that libpcre2-dev's link points at.
KIT_PACKAGES=(catch2 libcxxopts-dev nlohmann-json3-dev libpcre2-dev libpcre2-8-0)
# What one device call carries in all: the working tree (gpt2cc_tree_bytes, ~8 MiB) and the kit.
CARRY_BYTES=$((64 << 20))
TREE_HEADROOM=$((1 << 20))  # the tree may grow a little between this kit and the call

while (($#)); do
  case "$1" in
    --out|--data|--build-dir|--cuda-build-dir)
      (($# >= 2)) && [[ -n "$2" ]] || die "$1 needs a directory (see --help)" ;;
  esac
  case "$1" in
    --out) KIT=$(from_caller "$2"); shift 2 ;;
    --data) DATA=$(from_caller "$2"); shift 2 ;;
    --build-dir) BUILD_DIR=$(from_caller "$2"); shift 2 ;;
    --cuda-build-dir) CUDA_BUILD_DIR=$(from_caller "$2"); shift 2 ;;
    --no-shards) SHARDS=0; shift ;;
    --no-binaries) BINARIES=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
if ((SHARDS)); then
  [[ -d "$DATA/wikipedia" && -d "$DATA/gpt2" ]] ||
    die "no $DATA/wikipedia or $DATA/gpt2 for the parity shards (give --data DIR, or --no-shards)"
fi
KIT=${KIT%/}
[[ ! -e "$KIT" || -d "$KIT" ]] || die "--out $KIT is not a directory"

# The new kit, beside the old one (the same file system: hard links, and a rename to swap).
mkdir -p "$(dirname "$KIT")"
NEW=$(mktemp -d "$KIT.new.XXXXXX")
bin_stage=""
cleanup() { rm -rf "$NEW" ${bin_stage:+"$bin_stage"}; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
# Everything of the old kit (hard links: no copy), less what this run remakes.
if [[ -d "$KIT" ]]; then
  cp -al "$KIT/." "$NEW/" 2>/dev/null || cp -a "$KIT/." "$NEW/"
fi
rm -rf "$NEW/debs" "$NEW/MANIFEST.txt"
((SHARDS)) && rm -rf "$NEW/parity-wikipedia"
((BINARIES)) && rm -f "$NEW/gpu-binaries.tar.gz"
mkdir -p "$NEW/debs"
echo "gpu_kit.sh: downloading ${KIT_PACKAGES[*]}"
# apt-get download writes into the current folder; as root it warns that the _apt user cannot
# write there, which is harmless.
(cd "$NEW/debs" && apt-get download "${KIT_PACKAGES[@]}" 2>&1 | grep -v "couldn't be accessed by user '_apt'") ||
  true
for pkg in "${KIT_PACKAGES[@]}"; do
  compgen -G "$NEW/debs/${pkg}_*.deb" >/dev/null ||
    die "apt-get download of '$pkg' failed (see above); the kit in $KIT is unchanged"
done

if ((BINARIES)); then
  ensure_build_deps
  fingerprint=$(gpt2cc_source_fingerprint .)
  # For the lent machine's H100 or H200, whatever GPU (or none) this machine has. Without MPI
  # and NCCL: the binaries would need libmpich and libnccl there, and one GPU runs no data parallel.
  cmake -S . -B "$CUDA_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGPT2CC_CUDA=ON \
    -DGPT2CC_CUDA_ARCHITECTURES=90 -DGPT2CC_MPI=OFF -DGPT2CC_NCCL=OFF >/dev/null
  # Built by their paths (Ninja file targets), not target names: exactly these files, whatever
  # aliases CMake's Ninja generator makes (an emulated bench_kernels once shadowed the real one).
  cmake --build "$CUDA_BUILD_DIR" -j "$(cpu_cores)" -- "${GPT2CC_GPU_BINARIES[@]}"
  [[ "$(gpt2cc_source_fingerprint .)" == "$fingerprint" ]] || die "the sources changed during the build: run it again"
  bin_stage=$(mktemp -d)
  stage=$bin_stage
  echo "$fingerprint" >"$stage/FINGERPRINT"
  for exe in "${GPT2CC_GPU_BINARIES[@]}"; do
    mkdir -p "$stage/$(dirname "$exe")"
    strip --strip-unneeded -o "$stage/$exe" "$CUDA_BUILD_DIR/$exe"
  done
  # Copies of the libraries they link that are neither the C library nor CUDA's (which come with
  # the driver and the toolkit there): used there only if that machine lacks them.
  mkdir -p "$stage/kit-libs"
  for exe in "${GPT2CC_GPU_BINARIES[@]}"; do ldd "$CUDA_BUILD_DIR/$exe"; done |
    awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
    { grep -vE '^(libc|libm|libdl|libpthread|librt|ld-linux[^ ]*|libcuda|libcudart|libcublas|libcublasLt)\.so' || true; } |
    while read -r soname path; do cp -L "$path" "$stage/kit-libs/$soname"; done
  tar -czf "$NEW/gpu-binaries.tar.gz" -C "$stage" .
  echo "gpu_kit.sh: gpu-binaries.tar.gz: $(du -h "$NEW/gpu-binaries.tar.gz" | cut -f1), kit-libs: $(ls "$stage/kit-libs" | tr '\n' ' ')"
fi

if ((SHARDS)); then
  # prepare: the one built with the binaries, else a build of it alone.
  prepare="$CUDA_BUILD_DIR/prepare"
  if ((!BINARIES)); then
    ensure_build_deps
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD_DIR" -j "$(cpu_cores)" --target prepare
    prepare="$BUILD_DIR/prepare"
  fi
  "$prepare" --format wikiextractor --input "$DATA/wikipedia" --val-fraction 0.01 \
    --tokenizer "$DATA/gpt2" --out "$NEW/parity-wikipedia"
fi

bytes=$(du -sb "$NEW" | cut -f1)
tree_bytes=$(gpt2cc_tree_bytes .)
if [[ -z "$tree_bytes" ]]; then
  tree_bytes=$((16 << 20))
  echo "gpu_kit.sh: git cannot list the working tree here: assuming it is $((tree_bytes >> 20)) MiB"
fi
max_kit_bytes=$((CARRY_BYTES - tree_bytes - TREE_HEADROOM))
((bytes <= max_kit_bytes)) ||
  die "the new kit is $((bytes >> 20)) MiB, over the $((max_kit_bytes >> 20)) MiB a device call can carry beside" \
    "the $((tree_bytes >> 20)) MiB working tree ($((CARRY_BYTES >> 20)) MiB in all); the kit in $KIT is unchanged"
# What was kept from the old kit is described by the old manifest's lines.
kept_line() {
  grep "^$1" "$KIT/MANIFEST.txt" 2>/dev/null | sed 's/ (kept from the previous kit)$//; s/$/ (kept from the previous kit)/'
}
{
  echo "gpt2cc GPU kit, made $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $(git rev-parse --short HEAD)"
  echo "debs/: $(cd "$NEW/debs" && ls | tr '\n' ' ')"
  if ((SHARDS)); then
    echo "parity-wikipedia/: prepare --format wikiextractor --val-fraction 0.01 of $DATA/wikipedia"
  elif [[ -d "$NEW/parity-wikipedia" ]]; then
    kept_line parity-wikipedia/ || echo "parity-wikipedia/: kept from the previous kit"
  fi
  if ((BINARIES)); then
    echo "gpu-binaries.tar.gz: ${GPT2CC_GPU_BINARIES[*]} (sm_90, sources fingerprint $fingerprint) and kit-libs/"
  elif [[ -f "$NEW/gpu-binaries.tar.gz" ]]; then
    kept_line gpu-binaries.tar.gz || echo "gpu-binaries.tar.gz: kept from the previous kit"
  fi
  echo "size: $((bytes >> 20)) MiB"
} >"$NEW/MANIFEST.txt"
# The swap: two renames.
if [[ -d "$KIT" ]]; then
  old=$(mktemp -d "$KIT.old.XXXXXX")
  mv "$KIT" "$old/kit"
  mv "$NEW" "$KIT"
  rm -rf "$old"
else
  mv "$NEW" "$KIT"
fi
cat "$KIT/MANIFEST.txt"
echo "gpu_kit.sh: done; carry \"$KIT\" in the device call (scripts/bench_gpu.sh finds it)"
