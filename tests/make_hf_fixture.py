#!/usr/bin/env python3
"""Writes the Hugging Face GPT-2 fixture in tests/fixtures/hf_gpt2_tiny/.

A tiny transformers.GPT2LMHeadModel (float32, dropout off, gelu_new, tied embeddings):
L=2, NH=2, C=64/2=32, V=300 (not padded), maxT=32. Every parameter is overwritten with random
values (weights and biases N(0, 0.1), LayerNorm weights 1 + N(0, 0.1)) so that a loader that
transposes or swaps a tensor gets the logits visibly wrong. Files written:

  model.safetensors                  save_pretrained(safe_serialization=True): float32, keys
                                     "transformer.*" (what transformers saves; whether the tied
                                     lm_head.weight is present is printed when it runs)
  config.json                        the GPT2Config save_pretrained wrote
  model_fp16_hub_layout.safetensors  the same weights in float16 with the "transformer." prefix
                                     stripped (the layout of the Hub's openai-community/gpt2),
                                     plus the old causal-mask buffers h.{i}.attn.bias [1,1,32,32]
                                     (lower-triangular ones); no lm_head.weight
  model_bf16.safetensors             the keys of model.safetensors, in bfloat16
  expected.json                      config, tokens, targets and, for "fp32", "fp16_hub_layout"
                                     and "bf16", the mean cross-entropy loss and the logits
                                     (flat, row-major [B, T, V]). A variant's reference is the
                                     model with its weights rounded to that dtype, run in float32.

Batch: B=2 x T=7 fixed tokens; targets are the tokens shifted by one, last targets 9 and 11.
Floats in expected.json are float32 values in their shortest round-trip decimal form.

Regenerate (deterministic; CPU, needs torch, transformers, safetensors and numpy):
    /path/to/venv/bin/python tests/make_hf_fixture.py
The script checks itself: model.safetensors reloads into a fresh model with identical logits,
and the fp16 file (mask buffers ignored, nothing else missing or extra) lands near fp32.
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

L, NH, C, MAXT, V = 2, 2, 32, 32, 300
TOKENS = [[5, 17, 299, 0, 42, 42, 128],
          [250, 3, 77, 199, 1, 64, 31]]
LAST_TARGETS = [9, 11]
PREFIX = "transformer."
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "fixtures", "hf_gpt2_tiny")
KEEP = {"model.safetensors", "config.json", "model_fp16_hub_layout.safetensors",
        "model_bf16.safetensors", "expected.json"}


def make_config():
    return GPT2Config(n_layer=L, n_head=NH, n_embd=C, n_positions=MAXT, vocab_size=V,
                      activation_function="gelu_new", layer_norm_epsilon=1e-5,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      tie_word_embeddings=True)


def make_model():
    torch.manual_seed(1234)
    model = GPT2LMHeadModel(make_config()).float()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        # named_parameters() lists the tied wte/lm_head weight once.
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.1
            is_ln_weight = name.endswith(".weight") and ".ln_" in name
            p.copy_(1.0 + noise if is_ln_weight else noise)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    return model.eval()


def run(model, tokens, targets):
    with torch.no_grad():
        logits = model(input_ids=tokens).logits.float()
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    return logits, loss


def load_into_fp32(state, strip_prefix):
    """A fresh float32 model holding `state` (any float dtype, widened). With strip_prefix the
    keys are Hub-layout: "transformer." is put back and the h.*.attn.bias masks are dropped."""
    state = dict(state)
    if strip_prefix:
        masks = [k for k in state if k.startswith("h.") and k.endswith(".attn.bias")]
        assert sorted(masks) == ["h.%d.attn.bias" % i for i in range(L)], masks
        for k in masks:
            m = state.pop(k)
            assert list(m.shape) == [1, 1, MAXT, MAXT]
            assert torch.equal(m.float(), torch.tril(torch.ones(MAXT, MAXT)).view(1, 1, MAXT, MAXT))
        state = {PREFIX + k: v for k, v in state.items()}
    model = GPT2LMHeadModel(make_config()).float().eval()
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()},
                                                strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= {"lm_head.weight"}, missing  # tied to wte
    model.tie_weights()
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    return model


def describe(path):
    with safe_open(path, framework="pt") as f:
        print("%s (metadata %s):" % (os.path.basename(path), f.metadata()))
        for k in f.keys():
            sl = f.get_slice(k)
            print("  %-40s %-16s %s" % (k, sl.get_shape(), sl.get_dtype()))


def f32_list(t):
    # Shortest decimal that round-trips the float32 value (json writes it unchanged).
    return [float(str(x)) for x in t.detach().numpy().astype(np.float32).ravel()]


def main():
    transformers.logging.set_verbosity_error()  # config warns about bos/eos ids >= V
    os.makedirs(OUT_DIR, exist_ok=True)
    model = make_model()
    tokens = torch.tensor(TOKENS, dtype=torch.long)
    targets = torch.cat([tokens[:, 1:], torch.tensor(LAST_TARGETS).view(-1, 1)], dim=1)
    logits, loss = run(model, tokens, targets)

    # 1. What transformers itself writes.
    model.save_pretrained(OUT_DIR, safe_serialization=True)
    for name in sorted(os.listdir(OUT_DIR)):
        if name not in KEEP:
            os.remove(os.path.join(OUT_DIR, name))
    main_path = os.path.join(OUT_DIR, "model.safetensors")
    saved = load_file(main_path)
    reloaded = load_into_fp32(saved, strip_prefix=False)
    assert torch.equal(run(reloaded, tokens, targets)[0], logits), "reload changed the logits"
    assert all(v.dtype == torch.float32 for v in saved.values())

    # 2. Hub layout in float16, with the old causal-mask buffers.
    hub = {k[len(PREFIX):]: v.to(torch.float16).contiguous()
           for k, v in model.state_dict().items() if k.startswith(PREFIX)}
    for i in range(L):
        hub["h.%d.attn.bias" % i] = torch.tril(torch.ones(MAXT, MAXT, dtype=torch.float16)) \
            .view(1, 1, MAXT, MAXT).contiguous()
    fp16_path = os.path.join(OUT_DIR, "model_fp16_hub_layout.safetensors")
    save_file(hub, fp16_path, metadata={"format": "pt"})

    # 3. The keys of model.safetensors in bfloat16.
    bf16 = {k: v.to(torch.bfloat16).contiguous() for k, v in saved.items()}
    bf16_path = os.path.join(OUT_DIR, "model_bf16.safetensors")
    save_file(bf16, bf16_path, metadata={"format": "pt"})

    results = {"fp32": (logits, loss)}
    for label, path, strip in (("fp16_hub_layout", fp16_path, True), ("bf16", bf16_path, False)):
        results[label] = run(load_into_fp32(load_file(path), strip), tokens, targets)
        diff = (results[label][0] - logits).abs().max().item()
        print("%-16s loss %.6f  max |logit - fp32| %.3g" % (label, results[label][1].item(), diff))
        assert 0.0 < diff < (0.02 if label == "fp16_hub_layout" else 0.1), (label, diff)

    meta = {
        "generator": "tests/make_hf_fixture.py (torch %s, transformers %s)"
                     % (torch.__version__, transformers.__version__),
        "config": {"num_layers": L, "num_heads": NH, "channels": C, "vocab_size": V,
                   "max_seq_len": MAXT, "activation": "gelu_new", "layer_norm_epsilon": 1e-5,
                   "tie_word_embeddings": True},
        "B": len(TOKENS), "T": len(TOKENS[0]),
        "tokens": tokens.tolist(),
        "targets": targets.tolist(),
    }
    for label, (lg, ls) in results.items():
        meta[label] = {"loss": float(str(np.float32(ls.item()))), "logits": f32_list(lg)}
    path = os.path.join(OUT_DIR, "expected.json")
    with open(path + ".tmp", "w") as f:
        json.dump(meta, f, separators=(",", ":"))
        f.write("\n")
    os.replace(path + ".tmp", path)

    for p in (main_path, fp16_path, bf16_path):
        describe(p)
    with open(main_path, "rb") as f:
        head = f.read(8 + 200)
    print("model.safetensors first 16 bytes:", head[:16].hex(" "))
    print("header starts:", head[8:].decode("utf-8", "replace"))
    total = sum(os.path.getsize(os.path.join(OUT_DIR, n)) for n in os.listdir(OUT_DIR))
    print("fp32 loss %.6f; files %s; %d bytes in all" %
          (loss.item(), sorted(os.listdir(OUT_DIR)), total))


if __name__ == "__main__":
    main()
