// Byte-level BPE tokenizer, GPT-2 compatible (Radford et al. 2019; Sennrich et al. 2016).
//   encode: text -> special tokens split out -> GPT-2 regex pre-tokens -> bytes -> merges by rank
//   decode: ids -> bytes (concatenated; may be invalid UTF-8 mid-sequence, exact on round trip)
// Loads GPT-2's encoder.json + vocab.bpe, or Hugging Face vocab.json + merges.txt, and saves the
// latter. fingerprint() identifies the tokenizer in token shards and checkpoints.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gpt2cc {

class Tokenizer {
 public:
  // A directory holding encoder.json + vocab.bpe (GPT-2) or vocab.json + merges.txt (Hugging
  // Face). Special tokens: those neither a byte nor made by a merge, whose text spans pre-tokens
  // (GPT-2: <|endoftext|>; tok::read_vocab_dir). Throws InputError naming the file (and line)
  // for a missing or malformed file, or a merges file that does not make every other token.
  static Tokenizer load(const std::string& dir);

  // allow_special: recognise special-token text (e.g. "<|endoftext|>") in the input as the
  // special token; otherwise it is encoded as plain text.
  std::vector<int> encode(std::string_view text, bool allow_special = true) const;
  std::string decode(std::span<const int> ids) const;
  std::string token_bytes(int id) const;  // the raw bytes of one token

  int vocab_size() const;                              // V (specials included)
  std::optional<int> special_id(std::string_view text) const;
  int eot_id() const;                                  // <|endoftext|>; throws if absent
  uint64_t fingerprint() const;                        // hash of vocab + merges + specials

  // Saves vocab.json + merges.txt into dir (Hugging Face format).
  void save(const std::string& dir) const;

  // --- additions beyond the agreed API (docs/tokenizer.md) ---

  // A tokenizer from raw parts: tokens[id] = bytes (a special's text), merges in rank order as
  // (left id, right id), special_ids = ids of special tokens. Every byte needs a one-byte token.
  static Tokenizer from_parts(std::vector<std::string> tokens, std::vector<std::pair<int, int>> merges,
                              std::vector<int> special_ids);

  // Same ids as encode(), using `threads` threads on inputs of 1 MiB or more. The text is cut
  // only where pre-tokenisation provably does not cross (a '\n' after a visible ASCII character,
  // outside special tokens), so the result is identical to the one-thread encode.
  std::vector<int> encode_parallel(std::string_view text, bool allow_special, int threads) const;

  // Encodes a stream in blocks of about block_bytes cut at the same safe points, handing each
  // block's ids to sink in order. Memory stays O(block_bytes) unless a single line is longer.
  // Returns the number of bytes read. A stream that goes bad (an I/O error) throws Error.
  uint64_t encode_stream(std::istream& in, bool allow_special, int threads,
                         const std::function<void(std::span<const int>)>& sink, size_t block_bytes = 8 << 20) const;

  std::vector<int> special_ids() const;                // ascending
  std::vector<std::pair<int, int>> merges() const;     // rank order

  struct Impl;
  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  Tokenizer(const Tokenizer&);
  Tokenizer& operator=(const Tokenizer&);

 private:
  std::unique_ptr<Impl> impl_;
};

// The tokenizer in `dir`, for the model of checkpoint `checkpoint`: InputError unless it is the
// one the checkpoint recorded by its fingerprint (`recorded`; 0: a checkpoint that recorded none,
// nothing to check) and has at most `model_vocab` tokens (fewer is a Hugging Face model's way:
// rows past the tokenizer's are padding).
Tokenizer load_checkpoint_tokenizer(const std::string& dir, uint64_t recorded, int model_vocab,
                                    const std::string& checkpoint);

}  // namespace gpt2cc
