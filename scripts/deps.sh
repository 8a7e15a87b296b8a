# shellcheck shell=bash
# Sourced by the entry scripts: installs what the build needs, from Debian packages, when missing.
# Python packages (for plots and reference scripts) are installed by the scripts that use them.
GPT2CC_DEBIAN_PACKAGES=(cmake ninja-build g++ pkg-config catch2 libcxxopts-dev nlohmann-json3-dev libpcre2-dev mpich libmpich-dev)

ensure_build_deps() {
  local missing=()
  for pkg in "${GPT2CC_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "gpt2cc: installing missing packages: ${missing[*]}"
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}

# Configures and builds into $1 (default: build) in Release with all cores. The arguments after
# the directory go to CMake's configure step; those after a `--` name the targets to build
# (default: all of them).
#   build_gpt2cc build                                           everything (scripts/test.sh)
#   build_gpt2cc build -DGPT2CC_CUDA=ON -- prepare train generate   only what the demo runs
build_gpt2cc() {
  local dir="${1:-build}"
  shift || true
  local configure=()
  while (($#)) && [[ "$1" != -- ]]; do
    configure+=("$1")
    shift
  done
  (($#)) && shift  # the `--`
  local targets=()
  (($#)) && targets=(--target "$@")
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${configure[@]}"
  cmake --build "$dir" -j "$(nproc)" "${targets[@]}"
}

# Installs Python packages when they cannot be imported: with pip, else (pip refuses to install
# into a Python the system manages, PEP 668's "externally-managed-environment": Debian's python3)
# Debian's python3-<module> packages when apt has them all. Each argument is MODULE or MODULE:PIPNAME.
# Fails (status 1, after saying why) when a module is still missing: callers decide what that skips.
ensure_python_packages() {
  local missing=() modules=()
  for spec in "$@"; do
    local module="${spec%%=*}"
    module="${module%%:*}"
    local pkg="${spec#*:}"
    if ! python3 -c "import $module" 2>/dev/null; then
      missing+=("$pkg")
      modules+=("$module")
    fi
  done
  ((${#missing[@]})) || return 0
  echo "gpt2cc: installing Python packages: ${missing[*]}"
  python3 -m pip install -q "${missing[@]}" && return 0
  local debs=() sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  if command -v apt-get >/dev/null; then
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    for module in "${modules[@]}"; do
      apt-cache show "python3-$module" >/dev/null 2>&1 && debs+=("python3-$module")
    done
  fi
  if ((${#debs[@]} == ${#modules[@]})); then
    echo "gpt2cc: pip could not install them; installing Debian's ${debs[*]} instead"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${debs[@]}" || return 1
    for module in "${modules[@]}"; do
      python3 -c "import $module" 2>/dev/null || {
        echo "gpt2cc: $module is still not importable by $(command -v python3)" \
          "(Debian's package serves /usr/bin/python3)"
        return 1
      }
    done
    return 0
  fi
  echo "gpt2cc: could not install ${missing[*]} with pip (see above), and apt lacks a python3- package" \
    "for some of: ${modules[*]}"
  return 1
}
