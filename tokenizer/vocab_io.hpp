// Reading and writing tokenizer files: GPT-2's encoder.json + vocab.bpe and Hugging Face's
// vocab.json + merges.txt (the same format: a JSON object {mapped token: id} and a merges list
// "#version: 0.2" then one "left right" pair per line, tokens written with GPT-2's
// byte -> unicode map). Every error names the file and line.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gpt2cc::tok {

// A vocabulary as raw bytes: tokens[id] are the token's bytes (a special token's UTF-8 text),
// merges in rank order as (left id, right id), special_ids ascending.
struct VocabParts {
  std::vector<std::string> tokens;
  std::vector<std::pair<int, int>> merges;
  std::vector<int> special_ids;
};

// Reads dir/encoder.json + dir/vocab.bpe, or else dir/vocab.json + dir/merges.txt. A token
// that is neither a single byte nor the result of a merge is a special token (e.g. <|endoftext|>),
// its text taken literally, when could_be_ordinary(text) is false; otherwise the merges file
// lacks the merge that makes it (it is truncated, or belongs to another vocabulary), an error.
// Throws InputError naming the file and line.
VocabParts read_vocab_dir(const std::string& dir);

// True when `text` could be an ordinary token, one that merges build from bytes: read as written,
// or through GPT-2's byte alphabet, it is a single pre-token of ordinary text ("world", "Ġworld"
// = " world", "ĊĊ" = "\n\n"). Special tokens span several ("<|endoftext|>" = "<|" "endoftext"
// "|>", "<s>", "[PAD]"), so a special is never confused with a token whose merge is missing.
bool could_be_ordinary(std::string_view text);

// Writes dir/vocab.json + dir/merges.txt, each atomically (core/atomic_file.hpp).
void write_vocab_dir(const std::string& dir, const VocabParts& parts);

}  // namespace gpt2cc::tok
