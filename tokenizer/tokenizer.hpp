// Byte-level BPE tokenizer, GPT-2 compatible (Radford et al. 2019; Sennrich et al. 2016).
//   encode: text -> special tokens split out -> GPT-2 regex pre-tokens -> bytes -> merges by rank
//   decode: ids -> bytes (concatenated; may be invalid UTF-8 mid-sequence, exact on round trip)
// Loads GPT-2's encoder.json + vocab.bpe, or Hugging Face vocab.json + merges.txt, and saves the
// latter. fingerprint() identifies the tokenizer in token shards and checkpoints.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gpt2cc {

class Tokenizer {
 public:
  // A directory holding encoder.json + vocab.bpe (GPT-2) or vocab.json + merges.txt (Hugging
  // Face). Special tokens: those in the vocabulary of the form <|...|> (GPT-2: <|endoftext|>).
  // Throws InputError naming the file (and line) for a missing or malformed file.
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

}  // namespace gpt2cc
