#!/usr/bin/env python3
"""Download the datasets that `prepare` reads, and GPT-2's weights, from their public hosts, with checksums and resume.

  data/download.py tinystories-v1 --out data/raw            # TinyStories v1 train/valid text
  data/download.py wikitext-103 gpt2-tokenizer --out data/raw
  data/download.py gpt2-124m --out models                    # OpenAI's GPT-2 weights (Hugging Face format)
  data/download.py tinystories-v1 --mirror ../shared/data --out /tmp/raw   # offline: local copies

The weights (gpt2-124m, gpt2-medium, gpt2-large, gpt2-xl: model.safetensors, config.json and the
tokenizer's vocab.json + merges.txt from the Hub's openai-community repositories) load as they are:
`generate --checkpoint models/gpt2-124m`, `train --init-from models/gpt2-124m` (docs/generate.md).

Downloads go through `curl -C -` into <file>.part (an interrupted run resumes), are checked
against a SHA-256 (pinned here, else the Hugging Face LFS hash of the file, else the mirror's
SHA256SUMS), or for a small file of a Hugging Face repository its git blob SHA-1 (the ETag the
Hub sends), and only then renamed. --mirror DIR (or $GPT2CC_DATA_MIRROR) copies files from a
local directory instead, verified the same way where a checksum is known (said "unverified" where
none is). A mirror's sample of a file (a part of it) is marked by <file>.sample beside it: a later
download without --mirror replaces it with the full file. WikiText needs pyarrow (checked before
anything is downloaded). Exit codes: 0 done, 2 bad arguments, 1 download / checksum failure.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

HF_HUB = "https://huggingface.co"
HF = f"{HF_HUB}/datasets"
GPT2 = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"
# OpenAI's GPT-2 checkpoints as the Hub keeps them: name -> repository.
GPT2_WEIGHTS = {"gpt2-124m": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
                "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}

# name -> files: (output name, urls (several parquet parts make one WikiText file), pinned sha256
# or None, mirror paths tried in order). A mirror path is a copy of the file itself, or
# (path, SAMPLE) for a part of it (../shared/data's TinyStories heads), or (path, TOKENS) for
# WikiText's tokenized variant of a .raw file, saved under its own name (wiki.*.tokens): with
# `<unk>` and ` @-@ `, another text, not a part of the raw one. Either is said when copied.
SAMPLE, TOKENS = "sample", "tokens"
SAMPLE_MARKER = ".sample"  # <file>.sample beside a file copied from a mirror's sample
DATASETS = {
    "tinystories-v1": [
        ("TinyStories-train.txt", [f"{HF}/roneneldan/TinyStories/resolve/main/TinyStories-train.txt"], None,
         ["TinyStories-train.txt", ("tinystories/train-head.txt", SAMPLE)]),
        ("TinyStories-valid.txt", [f"{HF}/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt"], None,
         ["TinyStories-valid.txt", ("tinystories/valid-head.txt", SAMPLE)]),
    ],
    "tinystories-v2": [
        ("TinyStoriesV2-GPT4-train.txt", [f"{HF}/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-train.txt"], None,
         ["TinyStoriesV2-GPT4-train.txt", ("tinystories/v2-sample.txt", SAMPLE)]),
        ("TinyStoriesV2-GPT4-valid.txt", [f"{HF}/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-valid.txt"], None,
         ["TinyStoriesV2-GPT4-valid.txt"]),
    ],
    "tinystories-json": [
        ("TinyStories_all_data.tar.gz", [f"{HF}/roneneldan/TinyStories/resolve/main/TinyStories_all_data.tar.gz"], None,
         ["TinyStories_all_data.tar.gz"]),
    ],
    "wikitext-2": [
        (f"wiki.{split}.raw", [f"{HF}/Salesforce/wikitext/resolve/main/wikitext-2-raw-v1/{p}" for p in parts], None,
         [f"wiki.{split}.raw", f"wikitext2/wiki.{split}.raw",
          (f"wikitext2/wiki.{split}.tokens", TOKENS)])
        for split, parts in [("train", ["train-00000-of-00001.parquet"]), ("valid", ["validation-00000-of-00001.parquet"]),
                             ("test", ["test-00000-of-00001.parquet"])]
    ],
    "wikitext-103": [
        (f"wiki.{split}.raw", [f"{HF}/Salesforce/wikitext/resolve/main/wikitext-103-raw-v1/{p}" for p in parts], None,
         [f"wiki.{split}.raw", f"wikitext103/wiki.{split}.raw",
          (f"wikitext103/wiki.{split}.tokens", TOKENS)])
        for split, parts in [("train", ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]),
                             ("valid", ["validation-00000-of-00001.parquet"]), ("test", ["test-00000-of-00001.parquet"])]
    ],
    "gpt2-tokenizer": [
        ("encoder.json", [f"{GPT2}/encoder.json"], "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
         ["encoder.json", "gpt2/encoder.json"]),
        ("vocab.bpe", [f"{GPT2}/vocab.bpe"], "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
         ["vocab.bpe", "gpt2/vocab.bpe"]),
    ],
}
for _name, _repo in GPT2_WEIGHTS.items():
    DATASETS[_name] = [(f, [f"{HF_HUB}/{_repo}/resolve/main/{f}"], None, [f"{_name}/{f}"])
                       for f in ("model.safetensors", "config.json", "vocab.json", "merges.txt")]


class Failure(Exception):
    """A download, copy or checksum failure (exit 1)."""


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def mirror_sums(mirror):
    """Checksums listed in <mirror>/SHA256SUMS ("<sha256>  <relative path>" lines)."""
    sums = {}
    path = os.path.join(mirror, "SHA256SUMS")
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    sums[parts[1].lstrip("*")] = parts[0]
    return sums


def git_blob_sha1(path):
    """The git object id of the file's bytes (what `git hash-object` prints)."""
    h = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hf_head(url):
    """The headers of a HEAD request for a Hugging Face file, redirects not followed, or None."""
    if not url.startswith(HF_HUB + "/"):
        return None
    request = urllib.request.Request(url, method="HEAD")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        return opener.open(request, timeout=30).headers
    except urllib.error.HTTPError as e:
        return e.headers  # the 302 to the CDN carries the LFS headers
    except (urllib.error.URLError, OSError):
        return None


def hf_lfs_sha256(url):
    """The SHA-256 Hugging Face records for an LFS file (its X-Linked-Etag), or None."""
    headers = hf_head(url)
    etag = ((headers.get("X-Linked-Etag") if headers else None) or "").strip('"')
    return etag if len(etag) == 64 else None


def hf_git_sha1(url):
    """The git blob SHA-1 of a small (non-LFS) Hugging Face file: its ETag, or None."""
    headers = hf_head(url)
    if headers is None or headers.get("X-Linked-Etag"):
        return None
    etag = (headers.get("ETag") or "").removeprefix("W/").strip('"')
    return etag if len(etag) == 40 else None


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def require_pyarrow():
    """WikiText comes as parquet: fail before downloading it when it could not be converted."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise Failure("converting WikiText parquet needs pyarrow: pip install pyarrow (nothing was downloaded)")


def safe_extract(tar, dest):
    """Extracts regular files and folders under dest only: tarfile's "data" filter where this Python
    has it (3.11.4+, 3.12), else the same checks by hand (no absolute path, no "..", no links or
    device files)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)
    members = []
    for m in tar.getmembers():
        target = os.path.realpath(os.path.join(root, m.name))
        if os.path.isabs(m.name) or (target != root and not target.startswith(root + os.sep)):
            raise Failure(f"{tar.name}: member {m.name!r} would be written outside {dest}")
        if not (m.isfile() or m.isdir()):
            raise Failure(f"{tar.name}: member {m.name!r} is not a regular file or folder")
        members.append(m)
    tar.extractall(dest, members=members)


def convert_parquet(parts, dest):
    """Hugging Face's WikiText parquet rows are the lines of the original wiki.*.raw file."""
    require_pyarrow()
    import pyarrow.parquet as pq
    tmp = dest + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        for p in parts:
            for line in pq.read_table(p, columns=["text"]).column("text").to_pylist():
                out.write(line)
    os.replace(tmp, dest)


def get_file(name, urls, pinned, mirror_paths, out_dir, mirror, sums, verify):
    dest = os.path.join(out_dir, name)
    if mirror:
        entries = [entry if isinstance(entry, tuple) else (entry, None) for entry in mirror_paths]
        for rel, kind in entries:
            src = os.path.join(mirror, rel)
            if os.path.isfile(src):
                # The pinned hash is the full file's: a sample or variant is checked by SHA256SUMS.
                expected = (pinned if kind is None else None) or sums.get(rel)
                if verify and expected and sha256(src) != expected:
                    raise Failure(f"checksum mismatch for {src}: expected {expected}, got {sha256(src)}")
                target = os.path.join(out_dir, os.path.basename(rel)) if kind == TOKENS else dest
                tmp = target + ".tmp"
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)
                # A sample is marked as such, so that a download later replaces it with the full file.
                if kind == SAMPLE:
                    with open(target + SAMPLE_MARKER, "w") as f:
                        f.write(f"{target} is a copy of {src}, a part of the full file: data/download.py "
                                "without --mirror replaces it with the full one\n")
                elif os.path.exists(target + SAMPLE_MARKER):
                    os.remove(target + SAMPLE_MARKER)
                note = {None: "", SAMPLE: " (the mirror's sample: a part of the full file)",
                        TOKENS: f" (the mirror has no {name}, only the tokenized variant: saved as "
                                f"{os.path.basename(rel)}, with <unk> and @-@ as WikiText's .tokens files "
                                "have them)"}[kind]
                check = (", sha256 ok" if expected else
                         ", unverified: no checksum known for it (none pinned, none in the mirror's SHA256SUMS)")
                print(f"{target} <- {src}{note}" + (check if verify else ", not verified (--no-verify)"))
                return True
        looked = ", ".join(rel for rel, _ in entries)
        print(f"{name}: not in mirror {mirror} (looked for {looked})", file=sys.stderr)
        return False
    sample = os.path.exists(dest + SAMPLE_MARKER)
    if os.path.isfile(dest) and sample:
        print(f"{dest}: a mirror's sample (a part of the full file): downloading the full file to replace it")
    elif os.path.isfile(dest) and pinned and sha256(dest) == pinned:
        print(f"{dest}: present, sha256 ok")
        return True
    elif os.path.isfile(dest) and not pinned:
        print(f"{dest}: present (delete it to download again)")
        return True
    parquet = urls[0].endswith(".parquet")
    if parquet:
        require_pyarrow()
    downloaded = []
    # Parts downloaded by an earlier run were checked then (renamed into place only once verified).
    checked = "checked when downloaded" if verify else "not verified (--no-verify)"
    for piece in urls:
        # WikiText comes as parquet parts, downloaded beside the file and converted to it.
        target = os.path.join(out_dir, os.path.basename(piece)) if parquet else dest
        if parquet and os.path.isfile(target):
            # Renamed into place only once complete (and verified): a re-run's conversion reuses it.
            print(f"{target}: present (downloaded before)")
            downloaded.append(target)
            continue
        part = target + ".part"
        if shutil.which("curl") is None:
            raise Failure(f"downloading {piece} needs curl, which is not in PATH (apt-get install curl)")
        cmd = ["curl", "-L", "--fail", "--retry", "3", "-C", "-", "-w", "%{http_code}", "-o", part, piece]
        print(" ".join(cmd), flush=True)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        # A 416 to `-C -`: the server has nothing past the .part's end (a whole file kept
        # unverified, say). --fail makes curl call that an error, which a re-run would repeat:
        # the checksum decides instead.
        if p.returncode != 0 and not (p.stdout.strip() == "416" and os.path.isfile(part)):
            resume = f"run again to resume from {part}" if os.path.isfile(part) else "nothing was kept"
            raise Failure(f"download of {piece} failed ({resume})")
        if verify:
            expected, digest = pinned or hf_lfs_sha256(piece), sha256
            if expected is None:
                expected, digest = hf_git_sha1(piece), git_blob_sha1
            if expected is None:
                raise Failure(f"no checksum known for {piece}; kept {part} (pass --no-verify to accept it)")
            got = digest(part)
            if got != expected:
                os.remove(part)
                raise Failure(f"checksum mismatch for {piece}: expected {expected}, got {got} (partial file removed)")
            checked = "sha256 ok" if digest is sha256 else "git blob SHA-1 ok"
        os.replace(part, target)
        downloaded.append(target)
    if parquet:
        convert_parquet(downloaded, dest)
    if sample:
        os.remove(dest + SAMPLE_MARKER)
    print(f"{dest}: done, {checked}" + (" (the full file, in place of the sample)" if sample else ""))
    return True


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="datasets: " + ", ".join(DATASETS))
    parser.add_argument("datasets", nargs="+", metavar="DATASET", help="one or more of: " + ", ".join(DATASETS))
    parser.add_argument("--out", required=True, help="directory that receives <dataset>/<files>")
    parser.add_argument("--mirror", default=os.environ.get("GPT2CC_DATA_MIRROR"),
                        help="copy from this local directory instead of downloading (default: $GPT2CC_DATA_MIRROR)")
    parser.add_argument("--allow-missing", action="store_true", help="with --mirror: skip files the mirror lacks")
    parser.add_argument("--no-verify", action="store_true", help="accept files without a known checksum")
    args = parser.parse_args(argv)  # exits 2 with a message on bad arguments
    for d in args.datasets:
        if d not in DATASETS:
            parser.error(f"unknown dataset '{d}' (choose from {', '.join(DATASETS)})")
    if args.mirror is not None and not os.path.isdir(args.mirror):
        parser.error(f"--mirror {args.mirror}: not a directory")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out}: not a directory")
    sums = mirror_sums(args.mirror) if args.mirror else {}
    missing = []
    try:
        for d in args.datasets:
            out_dir = os.path.join(args.out, d)
            os.makedirs(out_dir, exist_ok=True)
            for name, urls, pinned, mirror_paths in DATASETS[d]:
                if not get_file(name, urls, pinned, mirror_paths, out_dir, args.mirror, sums, not args.no_verify):
                    missing.append(f"{d}/{name}")
            if d == "tinystories-json" and os.path.isfile(os.path.join(out_dir, "TinyStories_all_data.tar.gz")):
                with tarfile.open(os.path.join(out_dir, "TinyStories_all_data.tar.gz")) as tar:
                    safe_extract(tar, os.path.join(out_dir, "json"))
                print(f"{out_dir}/json: extracted (prepare --format tinystories-json --input {out_dir}/json)")
    except (Failure, OSError, tarfile.TarError) as e:
        print(f"download: {e}", file=sys.stderr)
        return 1
    if missing and not args.allow_missing:
        print(f"download: not in the mirror: {', '.join(missing)} (pass --allow-missing to go on without them)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
