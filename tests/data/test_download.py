#!/usr/bin/env python3
"""data/download.py argument handling and --mirror / $GPT2CC_DATA_MIRROR (never the network):
bad arguments exit 2, mirror copies are checksum-verified (pinned hashes, the mirror's
SHA256SUMS), a tampered file fails with exit 1, files missing from the mirror are reported."""
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

SOURCE = os.environ.get("GPT2CC_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(SOURCE, "data", "download.py")
DATA = os.environ.get("GPT2CC_DATA_DIR", os.path.join(SOURCE, "..", "shared", "data"))
failures = []


def run(args, env=None):
    e = dict(os.environ)
    e.pop("GPT2CC_DATA_MIRROR", None)
    e.update(env or {})
    p = subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, env=e)
    return p.returncode, p.stdout + p.stderr


def expect(cond, what, output=""):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
        print(output)


def main():
    if not os.path.isdir(DATA):
        print(f"FAIL: shared data not found at {DATA} (set GPT2CC_DATA_DIR)")
        return 1
    tmp = tempfile.mkdtemp(prefix="gpt2cc-download-")
    try:
        for args, fragment in [([], "required"), (["tinystories-v1"], "--out"),
                               (["imagenet", "--out", tmp], "unknown dataset 'imagenet'"),
                               (["gpt2-tokenizer", "--out", tmp, "--mirror", tmp + "/nope"], "not a directory"),
                               (["gpt2-tokenizer", "--out", tmp, "--bogus"], "--bogus")]:
            code, out = run(args)
            expect(code == 2 and fragment in out, f"bad arguments {args} exit 2 mentioning {fragment!r}", out)
        code, out = run(["--help"])
        expect(code == 0 and "--mirror" in out and "wikitext-103" in out, "--help lists options and datasets", out)

        out_dir = os.path.join(tmp, "out")
        code, out = run(["gpt2-tokenizer", "tinystories-v1", "--out", out_dir, "--mirror", DATA])
        expect(code == 0 and "sha256 ok" in out, "gpt2-tokenizer + tinystories-v1 from the shared mirror", out)
        for rel, src in [("gpt2-tokenizer/vocab.bpe", "gpt2/vocab.bpe"),
                         ("tinystories-v1/TinyStories-train.txt", "tinystories/train-head.txt")]:
            with open(os.path.join(out_dir, rel), "rb") as a, open(os.path.join(DATA, src), "rb") as b:
                expect(a.read() == b.read(), f"{rel} is a copy of {src}")
        lines = out.splitlines()
        flagged = [line for line in lines if "sample" in line]
        expect(len(flagged) == 2 and all("TinyStories-" in line for line in flagged),
               "the TinyStories heads, and only they, are flagged as samples", out)
        expect(all("sha256 ok" in line for line in lines if "gpt2/" in line), "the GPT-2 files verify", out)

        # WikiText-2 from the shared mirror: its raw test file as it is; valid and test as the
        # tokenized variant only where no raw file exists, under the .tokens name (another text).
        code, out = run(["wikitext-2", "--out", out_dir, "--mirror", DATA, "--allow-missing"])
        wt2 = os.path.join(out_dir, "wikitext-2")
        expect(code == 0 and os.path.isfile(os.path.join(wt2, "wiki.test.raw")) and
               not os.path.exists(os.path.join(wt2, "wiki.valid.raw")) and
               os.path.isfile(os.path.join(wt2, "wiki.valid.tokens")), "wikitext-2: raw test, tokenized valid", out)
        expect(not any("wiki.test.raw <-" in line and "(" in line for line in out.splitlines()),
               "wikitext-2: the raw test file is not flagged", out)
        expect(any("wiki.valid.tokens <-" in line and "tokenized variant" in line for line in out.splitlines()),
               "wikitext-2: the tokenized valid file is flagged as such", out)

        # A mirror whose file does not match its SHA256SUMS.
        bad = os.path.join(tmp, "bad-mirror")
        os.makedirs(os.path.join(bad, "tinystories"))
        with open(os.path.join(bad, "tinystories", "train-head.txt"), "w") as f:
            f.write("tampered\n")
        with open(os.path.join(bad, "SHA256SUMS"), "w") as f:
            f.write(hashlib.sha256(b"original\n").hexdigest() + "  tinystories/train-head.txt\n")
        code, out = run(["tinystories-v1", "--out", os.path.join(tmp, "o2"), "--allow-missing"],
                        env={"GPT2CC_DATA_MIRROR": bad})
        expect(code == 1 and "checksum mismatch" in out, "a tampered mirror file fails with exit 1", out)
        with open(os.path.join(bad, "SHA256SUMS"), "w") as f:
            f.write(hashlib.sha256(b"tampered\n").hexdigest() + "  tinystories/train-head.txt\n")
        code, out = run(["tinystories-v1", "--out", os.path.join(tmp, "o3")], env={"GPT2CC_DATA_MIRROR": bad})
        expect(code == 1 and "TinyStories-valid.txt" in out and "--allow-missing" in out,
               "$GPT2CC_DATA_MIRROR is used; files missing from it are reported", out)
        code, out = run(["tinystories-v1", "--out", os.path.join(tmp, "o4"), "--allow-missing"],
                        env={"GPT2CC_DATA_MIRROR": bad})
        expect(code == 0 and os.path.isfile(os.path.join(tmp, "o4", "tinystories-v1", "TinyStories-train.txt")),
               "--allow-missing copies what the mirror has", out)
        # A wrong pinned hash cannot be worked around by the mirror.
        os.makedirs(os.path.join(bad, "gpt2"))
        with open(os.path.join(bad, "gpt2", "vocab.bpe"), "w") as f:
            f.write("not the GPT-2 merges\n")
        code, out = run(["gpt2-tokenizer", "--out", os.path.join(tmp, "o5"), "--mirror", bad])
        expect(code == 1 and "checksum mismatch" in out, "the pinned GPT-2 hashes are enforced", out)

        # GPT-2's weights (Hugging Face format) from a mirror: the four files of the repository.
        weights = os.path.join(tmp, "weights-mirror", "gpt2-124m")
        os.makedirs(weights)
        fixture = os.path.join(SOURCE, "tests", "fixtures", "hf_gpt2_tiny")
        for name in ("model.safetensors", "config.json"):
            shutil.copyfile(os.path.join(fixture, name), os.path.join(weights, name))
        for name, text in (("vocab.json", '{"a": 0}'), ("merges.txt", "#version: 0.2\n")):
            with open(os.path.join(weights, name), "w") as f:
                f.write(text)
        code, out = run(["gpt2-124m", "--out", os.path.join(tmp, "o6"), "--mirror", os.path.dirname(weights)])
        expect(code == 0, "gpt2-124m from a mirror", out)
        for name in ("model.safetensors", "config.json", "vocab.json", "merges.txt"):
            with open(os.path.join(tmp, "o6", "gpt2-124m", name), "rb") as a, open(os.path.join(weights, name), "rb") as b:
                expect(a.read() == b.read(), f"gpt2-124m/{name} is a copy of the mirror's")
        code, out = run(["gpt2-xl", "--out", os.path.join(tmp, "o7"), "--mirror", os.path.dirname(weights)])
        expect(code == 1 and "gpt2-xl/model.safetensors" in out, "gpt2-xl missing from the mirror is reported", out)

        # The git blob SHA-1 that small Hugging Face files are checked against (git hash-object).
        spec = importlib.util.spec_from_file_location("download", SCRIPT)
        download = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(download)
        hello = os.path.join(tmp, "hello.txt")
        with open(hello, "wb") as f:
            f.write(b"hello\n")
        expect(download.git_blob_sha1(hello) == "ce013625030ba8dba906f756967f9e9ca394464a",
               "git_blob_sha1 is git hash-object's id")
        expect(download.DATASETS["gpt2-124m"][0][1] ==
               ["https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors"],
               "gpt2-124m comes from the Hub's openai-community/gpt2")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
