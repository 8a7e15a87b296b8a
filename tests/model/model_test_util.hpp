// Shared setup for the whole-model tests: tiny awkward configurations (C not a multiple of the
// vector width, V far from Vp), random weights large enough that every gradient is well above
// float round-off, and batches with an ignored target.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "common/test_common.hpp"
#include "core/model.hpp"

namespace gpt2cc::test {

// L=2, C=12, NH=3 (HS=4), V=37 padded to Vp=128, maxT=8.
inline ModelConfig tiny_config(float dropout = 0.0f) {
  ModelConfig c;
  c.num_layers = 2;
  c.channels = 12;
  c.num_heads = 3;
  c.vocab_size = 37;
  c.padded_vocab_size = padded_vocab(c.vocab_size);
  c.max_seq_len = 8;
  c.dropout = dropout;
  return c;
}

// Weights uniform in [-0.3, 0.3), LayerNorm weights 1 +- 0.2, biases +- 0.1, padded wte rows 0:
// far from GPT-2's N(0, 0.02) init on purpose, so attention is not uniform and the gradients of
// every tensor are O(1e-3..1e-1) rather than lost in round-off.
inline std::vector<float> random_parameters(const ParameterLayout& layout, const ModelConfig& c, uint64_t seed) {
  std::vector<float> p = random_vector(layout.total(), seed, -0.3f, 0.3f);
  for (const ParamTensor& t : layout.tensors()) {
    const bool is_ln_weight = t.name == "ln1w" || t.name == "ln2w" || t.name == "lnfw";
    const bool is_bias = t.name.back() == 'b' && t.name != "wte";
    for (size_t k = 0; k < t.numel; ++k) {
      float& x = p[t.offset + k];
      if (is_ln_weight) x = 1.0f + x * (0.2f / 0.3f);
      else if (is_bias) x *= 0.1f / 0.3f;
    }
  }
  const ParamTensor& wte = layout[Param::wte];
  for (size_t k = size_t(c.vocab_size) * c.channels; k < wte.numel; ++k) p[wte.offset + k] = 0.0f;
  return p;
}

// random_parameters with the matrices and embeddings scaled by sqrt(36 / C): fan-in scaling, as
// a real initialisation has, so that pre-activations, attention scores and logits keep the size
// of the C = 36 case at every width. Why: bf16 rounds each value to a relative 2^-9, and softmax
// and GELU turn that into an error proportional to the size of their inputs; with unscaled
// weights the C = 128 model's scores and logits are about twice as large and its error exceeds
// the bf16 tests' tolerances (measured on the CPU emulator: logits 1.2%, gradients up to 3.7%;
// 0.8% and 1.2% scaled), while saying nothing about the kernels.
inline std::vector<float> fan_in_scaled_parameters(const ParameterLayout& layout, const ModelConfig& c,
                                                   uint64_t seed) {
  std::vector<float> p = random_parameters(layout, c, seed);
  const float scale = std::sqrt(36.0f / static_cast<float>(c.channels));
  for (const ParamTensor& t : layout.tensors()) {
    const bool is_ln_weight = t.name == "ln1w" || t.name == "ln2w" || t.name == "lnfw";
    const bool is_bias = t.name.back() == 'b' && t.name != "wte";
    if (is_ln_weight || is_bias) continue;
    for (size_t k = 0; k < t.numel; ++k) p[t.offset + k] *= scale;
  }
  return p;
}

// A (B, T) batch with structure to learn, so that a loss moves within a few steps: row b repeats
// a random phrase of `phrase` tokens, and each target is the phrase's next token.
inline void phrase_batch(std::vector<int>& inputs, std::vector<int>& targets, int B, int T, int phrase,
                         uint64_t seed, int vocab) {
  const auto words = random_tokens(size_t(B) * phrase, seed, vocab);
  inputs.assign(size_t(B) * T, 0);
  targets.assign(size_t(B) * T, 0);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      inputs[size_t(b) * T + t] = words[size_t(b) * phrase + t % phrase];
      targets[size_t(b) * T + t] = words[size_t(b) * phrase + (t + 1) % phrase];
    }
}

// Targets of a batch: random tokens with every 5th target ignored (-1).
inline std::vector<int> targets_with_ignored(size_t n, uint64_t seed, int vocab) {
  std::vector<int> t = random_tokens(n, seed, vocab);
  for (size_t i = 3; i < n; i += 5) t[i] = -1;
  return t;
}

// The first `len` tokens of each row of seq (B rows of seq_T): a (B, len) batch.
inline std::vector<int> row_prefixes(const std::vector<int>& seq, int B, int seq_T, int len) {
  std::vector<int> prefix(size_t(B) * len);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < len; ++t) prefix[size_t(b) * len + t] = seq[size_t(b) * seq_T + t];
  return prefix;
}

// Logits (B, V) of the last position of the first `len` tokens of each row of seq (B rows of
// seq_T), by a full forward: the reference for KV-cache prefill and decode.
inline std::vector<float> full_forward_last_logits(GPT2& model, const std::vector<int>& seq, int B, int seq_T,
                                                   int len) {
  const std::vector<int> prefix = row_prefixes(seq, B, seq_T, len);
  model.forward(prefix.data(), nullptr, B, len);
  const auto all = model.logits();
  const int V = model.config().vocab_size, Vp = model.config().padded_vocab_size;
  std::vector<float> last(size_t(B) * V);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < V; ++i) last[size_t(b) * V + i] = all[(size_t(b) * len + len - 1) * Vp + i];
  return last;
}

}  // namespace gpt2cc::test
