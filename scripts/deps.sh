# shellcheck shell=bash
# Sourced by the entry scripts: installs what the build needs, from Debian packages, when missing.
# Python packages (for plots and reference scripts) are installed by the scripts that use them.
# python3: the PCRE2 download below, the demo's data step and plot, the emulated CUDA tests'
# translator and the tooling tests (a minimal Debian has none). curl: data/download.py's downloads
# and their test against a local server.
GPT2CC_DEBIAN_PACKAGES=(cmake ninja-build g++ pkg-config catch2 libcxxopts-dev nlohmann-json3-dev libpcre2-dev mpich libmpich-dev
  python3 curl)

# PCRE2 with Unicode 16's tables, as tiktoken's regex has: Debian 12's PCRE2 10.42 knows Unicode
# 14 and pre-tokenises the 9,392 letters and digits assigned since (CJK Extension I, Kawi, ...) as
# punctuation, which gives other ids than tiktoken's. When the system's PCRE2 is older than 10.45,
# ensure_pcre2 builds 10.47 (a static library with JIT) into .deps/pcre2-10.47, where CMake looks
# first. The source is the release the pcre2 Python package vendors in its source distribution on
# PyPI (reachable where PCRE2's own GitHub releases may not be), checked by its SHA-256. Without
# it (no network), the build goes on with the system's PCRE2, which CMake warns of.
# The machine's cores for a build's or ctest's -j: GNU nproc follows OMP_NUM_THREADS (a user
# who sets it to 1 for the programs built the whole project one job at a time).
cpu_cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

GPT2CC_PCRE2_PREFIX="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.deps/pcre2-10.47"
GPT2CC_PCRE2_SDIST_URL=https://files.pythonhosted.org/packages/c9/41/ba46e9906b7f1b7bfb7009e7997d1c32909bd48444945bc436b82b5949af/pcre2-0.7.1.tar.gz
GPT2CC_PCRE2_SDIST_SHA256=69ced4288892e2571dd792e7bfb12371bb059f226204bf03300664177c508b64

ensure_pcre2() {
  pkg-config --atleast-version=10.45 libpcre2-8 2>/dev/null && return 0
  [[ -f "$GPT2CC_PCRE2_PREFIX/lib/libpcre2-8.a" ]] && return 0
  echo "gpt2cc: building PCRE2 10.47 (Unicode 16) into $GPT2CC_PCRE2_PREFIX: the system's is older"
  local work
  work=$(mktemp -d) || return 1
  local sdist="$work/pcre2.tar.gz"
  python3 - "$GPT2CC_PCRE2_SDIST_URL" "$GPT2CC_PCRE2_SDIST_SHA256" "$sdist" <<'PY' || { rm -rf "$work"; return 1; }
import hashlib, sys, urllib.request
url, sha256, out = sys.argv[1:]
try:
    data = urllib.request.urlopen(url, timeout=120).read()
except OSError as e:  # no network, a proxy, a certificate: one line, not a traceback
    sys.exit(f"gpt2cc: cannot download {url}: {e}")
if hashlib.sha256(data).hexdigest() != sha256:
    sys.exit(f"gpt2cc: {url} does not have the expected SHA-256 {sha256}")
open(out, "wb").write(data)
PY
  tar -xzf "$sdist" -C "$work" pcre2-0.7.1/src/libpcre2 &&
    cmake -S "$work/pcre2-0.7.1/src/libpcre2" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$GPT2CC_PCRE2_PREFIX" -DCMAKE_INSTALL_LIBDIR=lib -DBUILD_SHARED_LIBS=OFF \
      -DBUILD_STATIC_LIBS=ON -DPCRE2_STATIC_PIC=ON -DPCRE2_SUPPORT_JIT=ON -DPCRE2_SUPPORT_UNICODE=ON \
      -DPCRE2_BUILD_PCRE2GREP=OFF -DPCRE2_BUILD_TESTS=OFF -DPCRE2_SHOW_REPORT=OFF >"$work/log" 2>&1 &&
    cmake --build "$work/build" -j "$(cpu_cores)" >>"$work/log" 2>&1 &&
    cmake --install "$work/build" >>"$work/log" 2>&1
  local status=$?
  ((status)) && { echo "gpt2cc: building PCRE2 failed:"; tail -20 "$work/log"; }
  rm -rf "$work"
  return $status
}

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
  ensure_pcre2 || echo "gpt2cc: warning: going on with the system's PCRE2 (older Unicode tables: see scripts/deps.sh)"
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
  cmake --build "$dir" -j "$(cpu_cores)" "${targets[@]}"
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
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${debs[@]}" || return 1
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
