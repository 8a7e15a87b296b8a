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

# Installs Python packages with pip when they cannot be imported.
ensure_python_packages() {
  local missing=()
  for spec in "$@"; do
    local module="${spec%%=*}"
    module="${module%%:*}"
    local pkg="${spec#*:}"
    python3 -c "import $module" 2>/dev/null || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "gpt2cc: installing Python packages: ${missing[*]}"
    python3 -m pip install -q "${missing[@]}"
  fi
}
