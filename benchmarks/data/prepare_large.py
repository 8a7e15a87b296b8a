#!/usr/bin/env python3
"""Bounded memory of `prepare` on a generated multi-hundred-MB input (a ctest labelled slow, and
a benchmark). Writes two files into a temporary directory (never the repo):
  many.txt - --size-mb/2 MB of ~4 KB documents separated by "%%" lines
  one.txt  - --size-mb/2 MB forming a single document (exercises cutting documents into pieces)
The text is pseudo-random words and numbers, so the tokenizer sees varied pre-tokens.
Runs prepare on both and checks (never timing): exit 0, document counts, every shard valid and
the token count in the manifest, and peak RSS (wait4 rusage of the child) below --max-rss-mb, far
below the input size: the input is streamed. Prints tokens/s and peak RSS as JSON.
  benchmarks/data/prepare_large.py --prepare build/prepare [--tokenizer ../shared/data/gpt2]
--tokenizer defaults to $GPT2CC_DATA_DIR/gpt2 when that is set, else ../shared/data/gpt2 beside the
repository (where the tests find the shared data).
"""
import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have "
         "an they you were her she there been one all we their has would when if so no will more time can said "
         "story river model token little girl boy Lily Tom happy sad sun tree big dog cat ran jumped played "
         "É café naïve über 東京 данные").split()


def generate(path, megabytes, doc_bytes, separator, seed):
    rng = random.Random(seed)
    target = megabytes << 20
    # Build 64 distinct ~64 KB blocks once, then write them in random order: fast, still varied.
    blocks = []
    for _ in range(64):
        parts, size = [], 0
        while size < 65536:
            line = " ".join(rng.choice(WORDS) if rng.random() < 0.9 else str(rng.randrange(10**6))
                            for _ in range(rng.randrange(5, 25)))
            line = line[0].upper() + line[1:] + "."
            parts.append(line)
            size += len(line.encode()) + 1
        blocks.append("\n".join(parts) + "\n")
    written = docs = 0
    since_doc = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            b = blocks[rng.randrange(64)]
            if separator:
                # Cut each block into documents of ~doc_bytes at line ends.
                lines = b.split("\n")[:-1]
                for line in lines:
                    f.write(line + "\n")
                    since_doc += len(line) + 1
                    if since_doc >= doc_bytes:
                        f.write(separator + "\n")
                        docs += 1
                        since_doc = 0
            else:
                f.write(b)
            written += len(b.encode())
    if separator and since_doc:
        docs += 1
    return docs if separator else 1


def read_header(path):
    with open(path, "rb") as f:
        h = f.read(64)
    assert h[:8] == b"GPT2TOKS", path
    token_bytes, num_tokens = struct.unpack_from("<IQ", h, 12)
    assert os.path.getsize(path) == 64 + num_tokens * token_bytes, f"{path}: size does not match its header"
    return num_tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", required=True, help="the prepare program to run (e.g. build/prepare)")
    ap.add_argument("--tokenizer", default=None,
                    help="GPT-2 tokenizer directory (default: $GPT2CC_DATA_DIR/gpt2, else ../shared/data/gpt2)")
    ap.add_argument("--size-mb", type=int, default=400, help="input size in MB, half in each file (default 400)")
    ap.add_argument("--max-rss-mb", type=int, default=400,
                    help="prepare's peak resident memory must stay below this (default 400)")
    ap.add_argument("--workdir", default=None, help="default: a fresh temporary directory, removed afterwards")
    args = ap.parse_args()
    if args.tokenizer is None:
        repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        data = os.environ.get("GPT2CC_DATA_DIR") or os.path.join(repo, "..", "shared", "data")
        args.tokenizer = os.path.join(data, "gpt2")
    if args.size_mb < 2:
        ap.error(f"--size-mb must be >= 2 (half of it in each of two files), got {args.size_mb}")
    if args.max_rss_mb < 1:
        ap.error(f"--max-rss-mb must be >= 1, got {args.max_rss_mb}")
    if not (os.path.isfile(args.prepare) and os.access(args.prepare, os.X_OK)):
        ap.error(f"--prepare {args.prepare}: no such program (build it first)")
    if not os.path.isfile(os.path.join(args.tokenizer, "vocab.bpe")):
        ap.error(f"--tokenizer {args.tokenizer}: no GPT-2 tokenizer there (vocab.bpe)")
    work = args.workdir or tempfile.mkdtemp(prefix="gpt2cc-prepare-large-")
    os.makedirs(work, exist_ok=True)
    try:
        many_docs = generate(os.path.join(work, "many.txt"), args.size_mb // 2, 4096, "%%", 1)
        generate(os.path.join(work, "one.txt"), args.size_mb // 2, 0, None, 2)
        input_bytes = sum(os.path.getsize(os.path.join(work, n)) for n in ("many.txt", "one.txt"))
        results = {}
        for name, extra, docs in [("many", ["--separator", "%%"], many_docs), ("one", [], 1)]:
            out = os.path.join(work, "out-" + name)
            cmd = [args.prepare, "--format", "text", "--input", os.path.join(work, name + ".txt"), "--tokenizer",
                   args.tokenizer, "--out", out, "--val-fraction", "0", "--overwrite"] + extra
            log = open(os.path.join(work, name + ".log"), "w+")
            start = time.time()
            child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS (kB on Linux)
            seconds = time.time() - start
            peak_mb = usage.ru_maxrss / 1024
            log.seek(0)
            output = log.read()
            if os.waitstatus_to_exitcode(status) != 0:
                print(f"FAIL: {' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}\n{output}")
                return 1
            manifest = json.load(open(os.path.join(out, "manifest.json")))
            tokens = sum(read_header(os.path.join(out, s["file"])) for s in manifest["train"]["shards"])
            ok = manifest["train"]["documents"] == docs and tokens == manifest["train"]["tokens"]
            ok = ok and 0 < peak_mb <= args.max_rss_mb
            results[name] = {"input_mb": round(os.path.getsize(os.path.join(work, name + ".txt")) / 2**20, 1),
                             "documents": manifest["train"]["documents"], "tokens": tokens,
                             "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds),
                             "peak_rss_mb": round(peak_mb, 1)}
            print(("ok   " if ok else "FAIL ") + json.dumps({name: results[name]}), flush=True)
            if not ok:
                print(output)
                return 1
        print(json.dumps({"input_mb_total": round(input_bytes / 2**20, 1), "max_rss_mb_allowed": args.max_rss_mb,
                          "results": results}))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
