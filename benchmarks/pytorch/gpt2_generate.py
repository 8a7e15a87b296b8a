#!/usr/bin/env python3
"""PyTorch reference for gpt2cc's generation speed: Hugging Face transformers' GPT-2 on the CPU.

The model is transformers' GPT2LMHeadModel at a gpt2cc preset's shape (random weights: speed does
not depend on them; vocabulary 50257, where gpt2cc pads its classifier to 50304), in eval mode
under torch.inference_mode, fp32 (--dtype bf16: the model cast to torch.bfloat16, its weights,
activations and KV cache bf16, as gpt2cc's --dtype bf16 holds them; PyTorch's CPU kernels then
compute in bf16 or accumulate in fp32 as each does). As gpt2cc's bench_generate does: one random prompt of
--prompt-tokens, then --new-tokens greedy tokens with the KV cache, batch 1. Two ways:
  loop      the model called once per token with its KV cache, argmax in between: the same
            algorithm as gpt2cc's decoding, with nothing else around it; its prefill computes
            the last position's logits only, as gpt2cc's does (where transformers can);
  generate  model.generate(do_sample=False, use_cache=True): what a user of transformers runs,
            its logits processors and bookkeeping included.
Reported: the loop's prefill (the prompt's forward) in ms, and new tokens per second after the
prefill (loop: its own timing of the decode steps; generate: the new tokens after the first over
generate's time less that of a one-token generate). Each the median of --repeats runs after one
warm-up run.
"""
import argparse
import inspect
import statistics
import sys
import time

from bench_common import MAX_T, PRESETS, VOCAB, import_or_exit, write_json_atomic

torch = import_or_exit("torch")
transformers = import_or_exit("transformers", install="pip install transformers")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="gpt2", choices=sorted(PRESETS))
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each way (the median is reported)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the model's dtype")
    p.add_argument("--json", help="also write the result to this JSON file")
    a = p.parse_args(argv)
    if a.prompt_tokens < 1 or a.new_tokens < 1 or a.repeats < 1:
        p.error("--prompt-tokens, --new-tokens and --repeats must be >= 1")
    if a.prompt_tokens + a.new_tokens > MAX_T:
        p.error(f"prompt + new tokens ({a.prompt_tokens + a.new_tokens}) exceed the context of {MAX_T}")
    if a.threads < 0:
        p.error(f"--threads must be >= 0, got {a.threads}")
    return a


def cache_argument(model):
    """The name of the forward's KV-cache argument and output: `cache` from transformers 5.x on
    (past_key_values deprecated), past_key_values before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def last_row_only(model):
    """The forward's argument that computes the logits of the last position only, as gpt2cc's
    prefill does (`logits_to_keep`, `num_logits_to_keep` in older transformers), or {} if none."""
    parameters = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in parameters:
            return {name: 1}
    return {}


def greedy_loop(model, prompt, new_tokens):
    """(prefill ms, decode tokens/s, tokens): the prompt's forward, then one call per new token."""
    name, prefill_arguments = cache_argument(model), last_row_only(model)  # outside the timing
    t0 = time.perf_counter()
    out = model(prompt, use_cache=True, **prefill_arguments)
    token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
    t1 = time.perf_counter()
    tokens = [int(token)]
    for _ in range(new_tokens - 1):
        out = model(token, use_cache=True, **{name: getattr(out, name)})
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        tokens.append(int(token))
    t2 = time.perf_counter()
    # The first new token comes from the prefill; the rate is over the new_tokens - 1 decode steps
    # after it (at least one, so that a rate exists): per step, as gpt2cc's bench_generate's.
    return (t1 - t0) * 1e3, max(new_tokens - 1, 1) / max(t2 - t1, 1e-9), tokens


def main(argv=None):
    a = parse_args(argv)
    torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    L, C, NH = PRESETS[a.preset]
    # No end-of-text token: generate() must run all --new-tokens, as the loop does, whatever it picks.
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=MAX_T, n_embd=C, n_layer=L, n_head=NH,
                                     activation_function="gelu_new", bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config).eval()
    if a.dtype == "bf16":
        model = model.to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    prompt = torch.randint(0, VOCAB, (1, a.prompt_tokens))
    with torch.inference_mode():
        greedy_loop(model, prompt, a.new_tokens)  # warm-up: allocator, thread pool, first-touch pages
        loop_runs = [greedy_loop(model, prompt, a.new_tokens) for _ in range(a.repeats)]
        loop_tokens = loop_runs[0][2]

        def run_generate(new_tokens):
            t0 = time.perf_counter()
            ids = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, use_cache=True,
                                 max_new_tokens=new_tokens, pad_token_id=0)
            return time.perf_counter() - t0, ids[0, a.prompt_tokens:].tolist()

        run_generate(a.new_tokens)  # warm-up
        generate_runs = [run_generate(a.new_tokens) for _ in range(a.repeats)]
        generate_s, generated = [r[0] for r in generate_runs], generate_runs[0][1]
        # generate()'s own prefill (it may keep the last position's logits only, or not): one token.
        generate_prefill_s = [run_generate(1)[0] for _ in range(a.repeats)]
    if generated != loop_tokens:
        print(f"error: generate() and the loop chose different greedy tokens ({generated[:8]}... vs "
              f"{loop_tokens[:8]}...)", file=sys.stderr)
        return 1
    prefill_ms = statistics.median(r[0] for r in loop_runs)
    loop_tps = statistics.median(r[1] for r in loop_runs)
    generate_decode_s = statistics.median(generate_s) - statistics.median(generate_prefill_s)
    generate_tps = max(a.new_tokens - 1, 1) / max(generate_decode_s, 1e-9)
    result = {"benchmark": "pytorch_gpt2_generate", "torch": torch.__version__,
              "transformers": transformers.__version__, "threads": torch.get_num_threads(), "preset": a.preset,
              "dtype": a.dtype, "params": params, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens, "repeats": a.repeats,
              "prefill_ms": prefill_ms, "loop_tokens_per_s": loop_tps, "generate_tokens_per_s": generate_tps,
              "generate_ms_median": statistics.median(generate_s) * 1e3,
              "generate_prefill_ms_median": statistics.median(generate_prefill_s) * 1e3,
              "loop_logits": "last position" if last_row_only(model) else "every position"}
    print(f"transformers {transformers.__version__} GPT2LMHeadModel, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {a.dtype}; greedy, prompt {a.prompt_tokens}, batch 1")
    print("| preset | params | new | prefill ms | loop tok/s | generate() tok/s |")
    print("|---|---|---|---|---|---|")
    print(f"| {a.preset} | {params / 1e6:.1f}M | {a.new_tokens} | {prefill_ms:.1f} | {loop_tps:.1f} | "
          f"{generate_tps:.1f} |")
    if a.json:
        write_json_atomic(a.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
