// Byte-level BPE trainer (Sennrich et al. 2016, GPT-2's byte-level variant): learns merges from
// text with the same pre-tokenisation as the encoder.
//   1. text is split at special tokens, the pieces pre-tokenised, unique pre-tokens counted;
//   2. pair counts over unique pre-tokens weighted by frequency, kept up to date incrementally;
//   3. repeatedly merge the most frequent pair; ties: the lexicographically greatest pair as byte
//      strings (left token first, then right), e.g. ("p","ug") beats ("hug","s") at equal count.
// Vocabulary ids: special tokens in the order given, then the 256 single bytes in byte order,
// then one token per merge in merge order. Special tokens are never split or merged.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.hpp"

namespace gpt2cc {

struct TrainerConfig {
  int vocab_size = 32000;  // final V, specials and the 256 bytes included; >= 256 + #specials
  // Each >= 2 bytes, valid UTF-8, unique, and more than one pre-token (tok::could_be_ordinary):
  // "<|endoftext|>", "<s>" or "[PAD]", not "MASK".
  std::vector<std::string> special_tokens{"<|endoftext|>"};
  uint64_t min_frequency = 2;  // stop early when the best pair occurs fewer times (>= 1)
  int threads = 2;             // threads for counting pre-tokens (>= 1)
  size_t block_bytes = 16 << 20;  // files are read in blocks of about this size (bounded memory)
};

struct MergeRecord {
  int left, right, id;  // the merged pair and the new token's id
  uint64_t count;       // its frequency when it was chosen
};

struct TrainStats {
  uint64_t bytes = 0;            // text bytes counted (special tokens excluded)
  uint64_t pretokens = 0;        // pre-tokens counted
  uint64_t unique_pretokens = 0;
  double count_seconds = 0, merge_seconds = 0;
};

class BpeTrainer {
 public:
  explicit BpeTrainer(TrainerConfig config);

  // Counts the pre-tokens of some text / a whole file (read in blocks, cut at safe points).
  void add_text(std::string_view text);
  void add_file(const std::string& path);

  // Learns the merges. `progress(merges_done, merges_wanted)` is called every 1000 merges.
  // The trainer's counts are left as they were, so train() may be called again. Throws
  // InputError, naming the files added, when they held no text (special tokens aside).
  Tokenizer train(std::vector<MergeRecord>* merges = nullptr, TrainStats* stats = nullptr,
                  const std::function<void(int, int)>& progress = {}) const;

  const TrainerConfig& config() const { return config_; }

 private:
  void count_block(std::string_view text);
  TrainerConfig config_;
  std::vector<std::string> files_;  // added with add_file, for messages
  std::unordered_map<std::string, uint64_t> counts_;
  TrainStats stats_;
};

}  // namespace gpt2cc
