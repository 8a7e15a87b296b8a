// Tiny training setups shared by the trainer and CLI tests: generated shards (a vocabulary of
// 64, a repeating pattern with noise, so a model can learn something) and a TrainConfig for a
// 2-layer, 16-wide model that trains a step in milliseconds.
#pragma once

#include <string>
#include <vector>

#include "core/dataloader.hpp"
#include "core/rng.hpp"
#include "core/train_config.hpp"

namespace gpt2cc::test {

inline constexpr uint64_t kTinyFingerprint = 0x1234ABCDull;
inline constexpr int kTinyVocab = 64;

// Writes dir/train.bin and dir/val.bin (n tokens each, different noise).
inline void write_tiny_shards(const std::string& dir, size_t n = 4096, uint64_t fingerprint = kTinyFingerprint,
                              int vocab = kTinyVocab) {
  for (int split = 0; split < 2; ++split) {
    std::vector<uint32_t> tokens(n);
    for (size_t i = 0; i < n; ++i) {
      uint32_t noise = philox_bits(uint64_t(split + 7), 0, i);
      tokens[i] = (noise % 5 == 0) ? noise % uint32_t(vocab) : uint32_t((i * 7) % size_t(vocab));
    }
    write_shard(dir + (split == 0 ? "/train.bin" : "/val.bin"), tokens, fingerprint, uint32_t(vocab));
  }
}

inline TrainConfig tiny_train_config(const std::string& data_dir, const std::string& run_dir) {
  TrainConfig c;
  c.preset = "d2";
  c.layers = 2;
  c.heads = 2;
  c.channels = 16;
  c.max_seq_len = 32;
  c.train_data = data_dir + "/train.bin";
  c.val_data = data_dir + "/val.bin";
  c.batch_size = 4;
  c.seq_len = 16;
  c.lr = 1e-3;
  c.warmup_steps = 2;
  c.steps = 8;
  c.eval_every = 4;
  c.eval_batches = 2;
  c.run_dir = run_dir;
  c.threads = 1;
  return c;
}

}  // namespace gpt2cc::test
