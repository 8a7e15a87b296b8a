// The model the generation tests run (test_generation, test_batch_generation): 2 layers, 2 heads,
// C = 32, a context of 16 tokens and a vocabulary of 61, not a multiple of anything, so the padded
// logit columns 61..127 exist.
#pragma once

#include "core/config.hpp"

namespace gpt2cc::test {

inline constexpr int kTinyVocab = 61;

inline ModelConfig tiny_config() {
  ModelConfig c;
  c.max_seq_len = 16;
  c.vocab_size = kTinyVocab;
  c.padded_vocab_size = 128;
  c.num_layers = 2;
  c.num_heads = 2;
  c.channels = 32;
  return c;
}

}  // namespace gpt2cc::test
