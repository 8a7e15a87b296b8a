#!/usr/bin/env python3
"""Tokenizer throughput beside tiktoken and Hugging Face `tokenizers`, in one run on the same text.

Encode (1 and 2 threads) and decode MB/s (MB = 1e6 bytes of input text) on several MB of the
Wikipedia corpus and on the TinyStories text in ../shared/data; BPE training time, CPU time and
peak memory (max RSS of the process) to a 32k vocabulary on the whole Wikipedia corpus, ours
beside Hugging Face's BpeTrainer. Token counts are cross-checked (they must be equal).
  python3 benchmarks/tokenizer/compare.py --build build [--mb 8] [--skip-train]
Prints a markdown table (paste into benchmarks/results/tokenizer.md) and writes compare.json.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))


def read_corpus(files, mb):
    text = ""
    for f in files:
        with open(f, encoding="utf-8") as fh:
            text += fh.read()
        if len(text.encode()) >= mb * 1e6:
            break
    data = text.encode()
    if len(data) > mb * 1e6:
        cut = data.find(b"\n", int(mb * 1e6))
        data = data[:cut + 1] if cut >= 0 else data
    return data.decode()


def safe_chunks(text, size=1 << 18):
    """Documents for the batch APIs: cut at '\\n' after a visible ASCII char (same tokens as whole)."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        while end < len(text) and not (text[end] == "\n" and "!" <= text[end - 1] <= "~"):
            end += 1
        out.append(text[start:end])
        start = end
    return out


def timed(fn, reps=3):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2], r


def tiktoken_run(text, gpt2_dir):
    from make_tokenizer_fixture import gpt2_encoding
    enc = gpt2_encoding(gpt2_dir)
    mb = len(text.encode()) / 1e6
    docs = safe_chunks(text)
    t1, ids = timed(lambda: enc.encode(text, allowed_special="all"))
    c0 = time.thread_time()
    enc.encode(text, allowed_special="all")
    c1 = time.thread_time() - c0
    t2, batch = timed(lambda: enc.encode_batch(docs, num_threads=2, allowed_special="all"))
    assert sum(len(b) for b in batch) == len(ids)
    td, _ = timed(lambda: enc.decode_bytes(ids))
    return {"tokens": len(ids), "encode_1t_mbs": mb / t1, "encode_1t_cpu_mbs": mb / c1, "encode_2t_mbs": mb / t2, "decode_mbs": mb / td}


def hf_worker(args):
    """Runs in a subprocess with RAYON_NUM_THREADS set (Hugging Face reads it once at start)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    with open(args.text_file, encoding="utf-8") as f:
        text = f.read()
    g = args.gpt2
    tk = Tokenizer(models.BPE.from_file(os.path.join(g, "encoder.json"), os.path.join(g, "vocab.bpe")))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<|endoftext|>"])
    mb = len(text.encode()) / 1e6
    docs = safe_chunks(text)
    t, encs = timed(lambda: tk.encode_batch(docs))
    ids = [i for e in encs for i in e.ids]
    td, _ = timed(lambda: tk.decode(ids))
    print(json.dumps({"tokens": len(ids), "encode_mbs": mb / t, "decode_mbs": mb / td}))


def hf_run(text, gpt2_dir, threads, work):
    path = os.path.join(work, "hf_text.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, __file__, "--hf-worker", "--text-file", path, "--gpt2", gpt2_dir],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours_run(bench, text, gpt2_dir, work):
    path = os.path.join(work, "ours_text.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    out = subprocess.run([bench, "--tokenizer", gpt2_dir, "--mb", "1000", "--threads", "2", path],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measured(cmd, env=None):
    """Wall time, CPU time and peak RSS (MiB) of one command, from GNU time (a small parent, so
    the RSS is the command's own, not that of a forked copy of this Python process)."""
    r = subprocess.run(["/usr/bin/time", "-f", "GPT2CC_TIME %e %U %S %M"] + cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} failed: {r.stderr}")
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("GPT2CC_TIME ")][-1].split()
    return {"wall_s": float(line[1]), "cpu_s": float(line[2]) + float(line[3]), "peak_rss_mib": int(line[4]) / 1024,
            "log": r.stderr}


def hf_train_worker(args):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train(args.files, trainer)
    tk.model.save(args.out)
    print(f"hf vocab size {tk.get_vocab_size()}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build", help="build directory holding benchmarks/ and tokenizer/")
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "data"))
    ap.add_argument("--mb", type=float, default=8)
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-encode", action="store_true")
    ap.add_argument("--work", default="/tmp/gpt2cc_tokenizer_bench")
    ap.add_argument("--hf-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hf-train-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--text-file", help=argparse.SUPPRESS)
    ap.add_argument("--gpt2", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hf_worker:
        return hf_worker(args)
    if args.hf_train_worker:
        return hf_train_worker(args)

    os.makedirs(args.work, exist_ok=True)
    gpt2 = os.path.join(args.data, "gpt2")
    bench = os.path.join(args.build, "benchmarks", "tokenizer", "bench_tokenizer")
    cli = os.path.join(args.build, "tokenizer", "tokenizer")
    wiki_files = sorted(glob.glob(os.path.join(args.data, "wikipedia", "wiki_*")))
    corpora = {
        "Wikipedia": read_corpus(wiki_files, args.mb),
        "TinyStories": read_corpus([os.path.join(args.data, "tinystories", f) for f in ("train-head.txt", "valid-head.txt")],
                                   args.mb),
    }
    results = {"encode": {}, "train": {}}
    rows = ["| corpus | MB | tokens | impl | encode 1 thread MB/s | 1 thread MB per CPU-s | encode 2 threads MB/s | decode MB/s |",
            "|---|---|---|---|---|---|---|---|"]
    for name, text in corpora.items():
        if args.skip_encode:
            break
        mb = len(text.encode()) / 1e6
        ours = ours_run(bench, text, gpt2, args.work)
        tt = tiktoken_run(text, gpt2)
        hf1 = hf_run(text, gpt2, 1, args.work)
        hf2 = hf_run(text, gpt2, 2, args.work)
        counts = {ours["tokens"], tt["tokens"], hf1["tokens"], hf2["tokens"]}
        assert len(counts) == 1, f"{name}: token counts differ: ours {ours['tokens']}, tiktoken {tt['tokens']}, hf {hf1['tokens']}"
        results["encode"][name] = {"mb": mb, "ours": ours, "tiktoken": tt, "hf_1t": hf1, "hf_2t": hf2}
        rows.append(f"| {name} | {mb:.1f} | {ours['tokens']} | gpt2cc | {ours['encode_1t_mbs']:.1f} | {ours['encode_1t_cpu_mbs']:.1f} | "
                    f"{ours['encode_nt_mbs']:.1f} | {ours['decode_mbs']:.0f} |")
        rows.append(f"| | | | tiktoken {tt_version()} | {tt['encode_1t_mbs']:.1f} | {tt['encode_1t_cpu_mbs']:.1f} | {tt['encode_2t_mbs']:.1f} | "
                    f"{tt['decode_mbs']:.0f} |")
        rows.append(f"| | | | HF tokenizers {hf_version()} | {hf1['encode_mbs']:.1f} | – | {hf2['encode_mbs']:.1f} | "
                    f"{hf1['decode_mbs']:.0f} |")
        print("\n".join(rows[-3:]), flush=True)

    if not args.skip_train:
        out_ours = os.path.join(args.work, "train_ours")
        out_hf = os.path.join(args.work, "train_hf")
        os.makedirs(out_hf, exist_ok=True)
        ours = measured([cli, "train", "--out", out_ours, "--vocab-size", str(args.vocab_size), "--threads", "2",
                         "--min-frequency", "2"] + wiki_files)
        hf = measured([sys.executable, __file__, "--hf-train-worker", "--out", out_hf, "--vocab-size",
                       str(args.vocab_size)] + wiki_files, env=dict(os.environ, RAYON_NUM_THREADS="2"))
        # Quality: tokens per byte on held-out text (WikiText-2 test, other articles), both
        # vocabularies encoded by our encoder; and how many tokens the two vocabularies share.
        held_out = os.path.join(args.data, "wikitext2", "wiki.test.raw")
        for r, d in ((ours, out_ours), (hf, out_hf)):
            st = subprocess.run([cli, "stats", "--tokenizer", d, held_out], capture_output=True, text=True, check=True)
            r["held_out_tokens_per_byte"] = float(st.stdout.split("tokens/byte")[0].split(",")[-1])
        with open(os.path.join(out_ours, "vocab.json"), encoding="utf-8") as f1, \
                open(os.path.join(out_hf, "vocab.json"), encoding="utf-8") as f2:
            shared = len(set(json.load(f1)) & set(json.load(f2)))
        results["train"] = {"ours": ours, "hf": hf, "shared_tokens": shared}
        mb = sum(os.path.getsize(f) for f in wiki_files) / 1e6
        rows += ["", f"BPE training, {mb:.1f} MB Wikipedia, vocab {args.vocab_size}, 2 threads:", "",
                 "| impl | wall s | CPU s | peak RSS MiB | tokens/byte on WikiText-2 test |", "|---|---|---|---|---|",
                 f"| gpt2cc | {ours['wall_s']:.1f} | {ours['cpu_s']:.1f} | {ours['peak_rss_mib']:.0f} | "
                 f"{ours['held_out_tokens_per_byte']:.4f} |",
                 f"| HF tokenizers {hf_version()} | {hf['wall_s']:.1f} | {hf['cpu_s']:.1f} | {hf['peak_rss_mib']:.0f} | "
                 f"{hf['held_out_tokens_per_byte']:.4f} |",
                 "", f"The two vocabularies share {shared} of {args.vocab_size} tokens."]
    print("\n" + "\n".join(rows))
    with open(os.path.join(args.work, "compare.json"), "w") as f:
        json.dump(results, f, indent=1)


def tt_version():
    import tiktoken
    return tiktoken.__version__


def hf_version():
    import tokenizers
    return tokenizers.__version__


if __name__ == "__main__":
    sys.exit(main())
