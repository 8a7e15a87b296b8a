#!/usr/bin/env bash
# scripts/gpu_kit.sh without a network or a build (--no-shards --no-binaries, a stand-in apt-get
# first in PATH): a failed package download leaves the previous kit as it was (its shards, its
# binaries, the carried results) and no staging folder; a successful one replaces the packages and
# keeps what the options do not rebuild, saying so in MANIFEST.txt; a relative --out is the
# caller's; a flag without its value and an --out that is a file exit 2 with the script's message.
# Run by ctest (label tooling) with the repository root.
set -uo pipefail
ROOT=${1:?usage: test_gpu_kit_script.sh REPO_ROOT}
ROOT=$(cd "$ROOT" && pwd)
SCRIPT="$ROOT/scripts/gpu_kit.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILURES=0
fail() {
  echo "FAILED: $*" >&2
  FAILURES=$((FAILURES + 1))
}

# apt-get download: writes <pkg>_1.0_all.deb for each package, or fails ($FAKE_APT_FAIL=1).
mkdir -p "$TMP/bin"
cat >"$TMP/bin/apt-get" <<'EOF'
#!/usr/bin/env bash
[[ "$1" == download ]] || exit 100
shift
if [[ "${FAKE_APT_FAIL:-0}" == 1 ]]; then
  echo "E: Failed to fetch $1 (stand-in)" >&2
  exit 100
fi
for pkg in "$@"; do echo "new $pkg" >"${pkg}_1.0_all.deb"; done
EOF
chmod +x "$TMP/bin/apt-get"

# A previous kit: packages, shards, binaries, a carried results archive.
make_old_kit() {  # DIR
  rm -rf "$1"
  mkdir -p "$1/debs" "$1/parity-wikipedia"
  echo old >"$1/debs/catch2_0.9_all.deb"
  echo shards >"$1/parity-wikipedia/manifest.json"
  echo binaries >"$1/gpu-binaries.tar.gz"
  echo results >"$1/bench_gpu_results.tar.gz"
  printf '%s\n' "gpt2cc GPU kit, made earlier" "parity-wikipedia/: prepare --format wikiextractor of X" \
    "gpu-binaries.tar.gz: the binaries (sm_90, sources fingerprint abc)" >"$1/MANIFEST.txt"
}
kit_unchanged() {  # WHAT DIR
  [[ "$(cat "$2/debs/catch2_0.9_all.deb" 2>/dev/null)" == old ]] || fail "$1: the old packages are gone"
  [[ -f "$2/parity-wikipedia/manifest.json" ]] || fail "$1: the old shards are gone"
  [[ -f "$2/gpu-binaries.tar.gz" ]] || fail "$1: the old binaries are gone"
  [[ -f "$2/bench_gpu_results.tar.gz" ]] || fail "$1: the carried results are gone"
}
no_staging_left() {  # WHAT DIR
  if compgen -G "$2.new.*" >/dev/null || compgen -G "$2.old.*" >/dev/null; then
    fail "$1: a staging folder was left beside $2: $(ls -d "$2".*)"
  fi
}
kit() { PATH="$TMP/bin:$PATH" bash "$SCRIPT" "$@" 2>&1; }

# A failing download: exit 2, the previous kit untouched.
make_old_kit "$TMP/kit"
out=$(FAKE_APT_FAIL=1 kit --out "$TMP/kit" --no-shards --no-binaries); rc=$?
[[ $rc == 2 && "$out" == *"apt-get download of 'catch2' failed"*"unchanged"* ]] ||
  fail "failing download: exit $rc, '$out'"
kit_unchanged "failing download" "$TMP/kit"
no_staging_left "failing download" "$TMP/kit"

# A successful one: new packages, the shards and binaries kept and named so in the manifest.
out=$(kit --out "$TMP/kit" --no-shards --no-binaries); rc=$?
[[ $rc == 0 ]] || fail "download: exit $rc, '$out'"
[[ ! -e "$TMP/kit/debs/catch2_0.9_all.deb" && -f "$TMP/kit/debs/catch2_1.0_all.deb" ]] ||
  fail "the packages were not replaced: $(ls "$TMP/kit/debs")"
[[ -f "$TMP/kit/parity-wikipedia/manifest.json" ]] || fail "--no-shards dropped the old shards"
[[ -f "$TMP/kit/gpu-binaries.tar.gz" ]] || fail "--no-binaries dropped the old binaries"
[[ -f "$TMP/kit/bench_gpu_results.tar.gz" ]] || fail "the carried results archive was dropped"
grep -q "^parity-wikipedia/: prepare .* (kept from the previous kit)$" "$TMP/kit/MANIFEST.txt" ||
  fail "MANIFEST.txt does not name the kept shards: $(cat "$TMP/kit/MANIFEST.txt")"
grep -q "^gpu-binaries.tar.gz: .* (kept from the previous kit)$" "$TMP/kit/MANIFEST.txt" ||
  fail "MANIFEST.txt does not name the kept binaries: $(cat "$TMP/kit/MANIFEST.txt")"
no_staging_left "download" "$TMP/kit"

# A relative --out is the caller's folder's, not the repository's.
mkdir -p "$TMP/caller"
out=$(cd "$TMP/caller" && kit --out relative-kit --no-shards --no-binaries); rc=$?
[[ $rc == 0 && -d "$TMP/caller/relative-kit/debs" ]] || fail "relative --out: exit $rc, '$out'"
[[ ! -e "$ROOT/relative-kit" ]] || { fail "relative --out went to the repository"; rm -rf "$ROOT/relative-kit"; }

# Argument errors: exit 2 and the script's own message.
for flag in --out --data --build-dir --cuda-build-dir; do
  out=$(kit --no-shards "$flag"); rc=$?
  [[ $rc == 2 && "$out" == "gpu_kit.sh: $flag needs a directory"* ]] || fail "$flag without a value: exit $rc, '$out'"
done
echo file >"$TMP/afile"
out=$(kit --no-shards --no-binaries --out "$TMP/afile"); rc=$?
[[ $rc == 2 && "$out" == *"is not a directory"* ]] || fail "--out a file: exit $rc, '$out'"
out=$(kit --bogus); rc=$?
[[ $rc == 2 && "$out" == *"unknown argument '--bogus'"* ]] || fail "unknown flag: exit $rc, '$out'"

echo "gpu_kit.sh checks: $FAILURES failures"
[[ $FAILURES == 0 ]]
