#!/usr/bin/env python3
"""A tokenizer trained by `tokenizer train` loads in Hugging Face `tokenizers` and encodes the same.

Also loads GPT-2's own files in Hugging Face and compares with `tokenizer encode` on them.
Exit codes: 0 pass, 1 fail, 77 skipped (the `tokenizers` package is not installed).
  check_hf_compat.py --cli build/tokenizer/tokenizer [--data ../shared/data] [--work DIR]
"""
import argparse
import os
import subprocess
import sys
import tempfile


def run(cmd, stdin=None):
    r = subprocess.run(cmd, input=stdin, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
    return r.stdout


def cli_encode(cli, tok_dir, text):
    out = run([cli, "encode", "--tokenizer", tok_dir, "--no-special"], stdin=text.encode("utf-8"))
    return [int(x) for x in out.split()]


def hf_byte_level(vocab, merges, specials):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    tk = Tokenizer(models.BPE.from_file(vocab, merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(specials)
    return tk


def compare(name, ours, theirs):
    if ours != theirs:
        i = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        sys.exit(f"FAIL: {name}: ids differ at index {i} (ours {ours[i:i+5]}, Hugging Face {theirs[i:i+5]}); "
                 f"{len(ours)} vs {len(theirs)} ids")
    print(f"ok: {name}: {len(ours)} ids identical")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--data", default=os.environ.get("GPT2CC_DATA_DIR", os.path.join(here, "..", "..", "..", "shared", "data")))
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        print("SKIPPED: the Python package `tokenizers` is not installed (pip install tokenizers)")
        return 77
    if not os.path.isdir(args.data):
        sys.exit(f"FAIL: shared data directory {args.data} not found (set GPT2CC_DATA_DIR)")
    work = args.work or tempfile.mkdtemp(prefix="gpt2cc_hf_")
    os.makedirs(work, exist_ok=True)

    with open(os.path.join(args.data, "tinystories", "train-head.txt"), encoding="utf-8") as f:
        corpus = f.read()[:300000]
    corpus_path = os.path.join(work, "corpus.txt")
    with open(corpus_path, "w", encoding="utf-8") as f:
        f.write(corpus.replace("\n\n\n", "\n<|endoftext|>\n"))
    tok_dir = os.path.join(work, "trained")
    run([args.cli, "train", "--out", tok_dir, "--vocab-size", "2000", "--special", "<|endoftext|>", corpus_path])

    with open(os.path.join(args.data, "tinystories", "valid-head.txt"), encoding="utf-8") as f:
        sample = f.read()[:60000]
    sample += " Unicode: café, 中文, 😀👍🏽, \u00a0nbsp, tabs\t\tand   spaces \r\n it's IT'S 12345 "

    hf = hf_byte_level(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"), ["<|endoftext|>"])
    if hf.get_vocab_size() != 2000 or hf.token_to_id("<|endoftext|>") != 0:
        sys.exit(f"FAIL: Hugging Face sees vocab size {hf.get_vocab_size()}, <|endoftext|> = {hf.token_to_id('<|endoftext|>')}")
    ours = cli_encode(args.cli, tok_dir, sample)
    compare("trained 2000-token vocabulary", ours, hf.encode(sample).ids)
    if hf.decode(ours) != sample:
        sys.exit("FAIL: Hugging Face does not decode our ids back to the text")
    print("ok: Hugging Face decodes our ids back to the text")

    gpt2 = os.path.join(args.data, "gpt2")
    hf2 = hf_byte_level(os.path.join(gpt2, "encoder.json"), os.path.join(gpt2, "vocab.bpe"), ["<|endoftext|>"])
    compare("GPT-2 vocabulary", cli_encode(args.cli, gpt2, sample), hf2.encode(sample).ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
