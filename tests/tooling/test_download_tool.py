#!/usr/bin/env python3
"""data/download.py beyond tests/data/test_download.py, never the network (a stand-in curl first
in PATH, a stand-in pyarrow on PYTHONPATH): the tar extraction without tarfile's "data" filter
(Python before 3.11.4) refuses paths outside its folder and links; a mirror's sample is marked and a
later download replaces it; WikiText checks pyarrow before downloading and reuses complete parquet
parts; a mirror file with no known checksum is said to be unverified; a failed download names a
.part file only when one exists; --out naming a file exits 2. Run by ctest (label tooling)."""
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

SOURCE = os.environ.get("GPT2CC_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(SOURCE, "data", "download.py")
DATA = os.environ.get("GPT2CC_DATA_DIR", os.path.join(SOURCE, "..", "shared", "data"))
failures = []

FAKE_CURL = """#!/bin/sh
# curl -L --fail --retry 3 -C - -o PART URL: writes a line naming URL, or fails ($FAKE_CURL_FAIL).
out=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in -o) out="$2"; shift 2 ;; *) url="$1"; shift ;; esac
done
echo "$url" >>"$FAKE_CURL_LOG"
[ -n "$FAKE_CURL_FAIL" ] && exit 22
echo "full text of $url" >"$out"
"""
# pyarrow.parquet.read_table(path, columns=["text"]).column("text").to_pylist(): the file's lines.
FAKE_PARQUET = """
class _Column(list):
    def to_pylist(self):
        return list(self)
class _Table:
    def __init__(self, lines):
        self.lines = lines
    def column(self, name):
        return _Column(self.lines)
def read_table(path, columns=None):
    with open(path) as f:
        return _Table(f.readlines())
"""


def expect(cond, what, output=""):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
        print(output)


def main():
    tmp = tempfile.mkdtemp(prefix="gpt2cc-download-tool-")
    try:
        bin_dir = os.path.join(tmp, "bin")
        os.makedirs(bin_dir)
        with open(os.path.join(bin_dir, "curl"), "w") as f:
            f.write(FAKE_CURL)
        os.chmod(os.path.join(bin_dir, "curl"), 0o755)
        log = os.path.join(tmp, "curl.log")
        pyarrow_dir = os.path.join(tmp, "fake-pyarrow")
        os.makedirs(os.path.join(pyarrow_dir, "pyarrow"))
        open(os.path.join(pyarrow_dir, "pyarrow", "__init__.py"), "w").close()
        with open(os.path.join(pyarrow_dir, "pyarrow", "parquet.py"), "w") as f:
            f.write(FAKE_PARQUET)

        def run(args, pyarrow=False, **env):
            e = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"], FAKE_CURL_LOG=log)
            e.pop("GPT2CC_DATA_MIRROR", None)
            e.pop("PYTHONPATH", None)
            if pyarrow:
                e["PYTHONPATH"] = pyarrow_dir
            e.update(env)
            if os.path.exists(log):
                os.remove(log)
            p = subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, env=e)
            return p.returncode, p.stdout + p.stderr

        def curl_calls():
            return open(log).read().split() if os.path.exists(log) else []

        # (a) The extraction, with and without tarfile's data filter.
        spec = importlib.util.spec_from_file_location("download", SCRIPT)
        download = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(download)

        def archive(name, link=False):
            path = os.path.join(tmp, "a.tar")
            with tarfile.open(path, "w") as tar:
                info = tarfile.TarInfo(name)
                if link:
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    tar.addfile(info)
                else:
                    info.size = 3
                    tar.addfile(info, io.BytesIO(b"abc"))
            return path

        saved = getattr(tarfile, "data_filter", None)
        for with_filter in ([True, False] if saved else [False]):
            if not with_filter and saved:
                del tarfile.data_filter
            try:
                what = "with the data filter" if with_filter else "checked by hand"
                dest = os.path.join(tmp, f"x-{with_filter}")
                with tarfile.open(archive("json/data00.json")) as tar:
                    download.safe_extract(tar, dest)
                expect(open(os.path.join(dest, "json", "data00.json")).read() == "abc", f"extracts a file ({what})")
                for name, link in (("../evil.txt", False), ("/tmp/gpt2cc-evil-abs.txt", False), ("link", True)):
                    try:
                        with tarfile.open(archive(name, link)) as tar:
                            download.safe_extract(tar, dest)
                        refused = False
                    except (download.Failure, tarfile.TarError):
                        refused = True
                    # (the data filter writes an absolute name inside the folder instead: safe too)
                    inside = name.startswith("/") and os.path.exists(os.path.join(dest, name.lstrip("/")))
                    expect((refused or inside) and not os.path.exists(os.path.join(tmp, "evil.txt")) and
                           not os.path.lexists("/tmp/gpt2cc-evil-abs.txt"), f"writes nothing outside for {name!r} ({what})")
            finally:
                if saved and not hasattr(tarfile, "data_filter"):
                    tarfile.data_filter = saved

        # (b) A mirror's sample is marked, and a download without --mirror replaces it.
        out = os.path.join(tmp, "out")
        train = os.path.join(out, "tinystories-v1", "TinyStories-train.txt")
        if os.path.isdir(DATA):
            code, text = run(["tinystories-v1", "--out", out, "--mirror", DATA])
            expect(code == 0 and os.path.isfile(train + ".sample"), "a mirror's sample is marked .sample", text)
            code, text = run(["tinystories-v1", "--out", out, "--no-verify"])
            expect(code == 0 and "a mirror's sample" in text and "in place of the sample" in text,
                   "a download replaces the sample, saying so", text)
            expect(open(train).read().startswith("full text of https://") and not os.path.exists(train + ".sample"),
                   "the full file replaced the sample, and its mark", text)
            code, text = run(["tinystories-v1", "--out", out, "--no-verify"])
            expect(code == 0 and "present (delete it to download again)" in text and not curl_calls(),
                   "the full file is then kept", text)
        else:
            print(f"skip the sample checks: no shared data in {DATA}")

        # (c) WikiText: pyarrow checked first; complete parquet parts reused.
        code, text = run(["wikitext-103", "--out", out, "--no-verify"])
        expect(code == 1 and "needs pyarrow" in text and not curl_calls(),
               "without pyarrow: exit 1 before any download", text)
        wt = os.path.join(out, "wikitext-103")
        os.makedirs(wt, exist_ok=True)
        with open(os.path.join(wt, "train-00000-of-00002.parquet"), "w") as f:
            f.write("first part\n")
        code, text = run(["wikitext-103", "--out", out, "--no-verify"], pyarrow=True)
        calls = curl_calls()
        expect(code == 0 and len(calls) == 3 and not any("train-00000" in c for c in calls),
               "a complete parquet part is not downloaded again", text + "\n".join(calls))
        expect(open(os.path.join(wt, "wiki.train.raw")).read().startswith("first part\nfull text of"),
               "the reused part goes into the converted file", text)

        # (d) A mirror file with no known checksum is said to be unverified.
        weights = os.path.join(tmp, "mirror", "gpt2-124m")
        os.makedirs(weights)
        for name in ("model.safetensors", "config.json", "vocab.json", "merges.txt"):
            with open(os.path.join(weights, name), "w") as f:
                f.write("x\n")
        code, text = run(["gpt2-124m", "--out", out, "--mirror", os.path.dirname(weights)])
        expect(code == 0 and text.count("unverified: no checksum known") == 4, "unverified mirror copies said so", text)

        # (e) A failed download without a .part; --out naming a file.
        code, text = run(["gpt2-tokenizer", "--out", os.path.join(tmp, "o2")], FAKE_CURL_FAIL="1")
        expect(code == 1 and "nothing was kept" in text and "resume from" not in text,
               "a failed download with no .part does not offer to resume", text)
        afile = os.path.join(tmp, "afile")
        open(afile, "w").close()
        code, text = run(["gpt2-tokenizer", "--out", afile])
        expect(code == 2 and "not a directory" in text, "--out naming a file: exit 2", text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
