// The files of a GPT-2 tokenizer directory: OpenAI's encoder.json + vocab.bpe, or Hugging Face's
// vocab.json + merges.txt. Where a directory holds files of both pairs, OpenAI's is the one read.
// One rule for the tokenizer's reader (tokenizer/vocab_io.cpp), the Hugging Face loader, which
// takes a directory's tokenizer along (core/hf_gpt2.cpp), and train --export-hf, which must not
// write one pair beside the other.
#pragma once

#include <array>
#include <filesystem>

namespace gpt2cc {

struct TokenizerFilePair {
  const char* vocab;
  const char* merges;
  const char* origin;  // for messages
};

inline constexpr std::array<TokenizerFilePair, 2> kTokenizerFilePairs = {
    {{"encoder.json", "vocab.bpe", "GPT-2"}, {"vocab.json", "merges.txt", "Hugging Face"}}};

// The pair a reader of `dir` takes: the first with either of its files present (the other one
// may be missing: the reader says so); null when the directory holds none of them.
inline const TokenizerFilePair* tokenizer_file_pair(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const TokenizerFilePair& pair : kTokenizerFilePairs) {
    if (std::filesystem::exists(dir / pair.vocab, ec) || std::filesystem::exists(dir / pair.merges, ec)) return &pair;
  }
  return nullptr;
}

}  // namespace gpt2cc
