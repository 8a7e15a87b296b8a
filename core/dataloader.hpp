// Token shards and the data loader.
//
// Shard file (little-endian): a 64-byte header, then `num_tokens` tokens of `token_bytes` each.
//   char magic[8] = "GPT2TOKS"; uint32 version = 1; uint32 token_bytes (2 or 4);
//   uint64 num_tokens; uint64 tokenizer_fingerprint; uint32 vocab_size; 28 bytes zero.
// Documents are separated by <|endoftext|>. Shards are memory-mapped when read.
//
// DataLoader yields B x T inputs and the targets shifted by one, from non-overlapping windows of
// T+1 tokens over all shards (window w covers tokens [w*T, w*T + T], so consecutive windows
// share one token; W = floor((N-1)/T) windows: tokens 1 .. W*T are each a target exactly once per
// epoch, the last (N-1) mod T tokens never).
// Sequential mode walks windows in order; shuffled mode walks a seeded permutation of all
// windows, a new one each epoch. position()/restore() are exact.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace gpt2cc {

struct ShardHeader {
  uint32_t version = 1;
  uint32_t token_bytes = 2;
  uint64_t num_tokens = 0;
  uint64_t tokenizer_fingerprint = 0;
  uint32_t vocab_size = 0;
};

// Writes a shard atomically (temporary file, flush, rename). token_bytes 2 requires ids < 65536.
void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, uint64_t tokenizer_fingerprint,
                 uint32_t vocab_size);
// Reads and validates a header; InputError naming the file for a bad magic, version, token
// width, or a size that does not match num_tokens (truncated / corrupt).
ShardHeader read_shard_header(const std::string& path);
// A tokenizer fingerprint as every message and the data manifest show it: 16 lowercase hex digits.
std::string fingerprint_hex(uint64_t fingerprint);
// Shard paths of a split: a file, a directory (its *.bin in name order, runs of digits compared as
// numbers: shard_1000000 after shard_999999) or a glob (the same order). InputError for shards
// in a folder that holds prepare's marker of a move it has not finished (below).
std::vector<std::string> list_shards(const std::string& path_or_pattern);
// prepare's staging folder in its --out, and the marker in it of a move into --out that has not
// finished (data/output_dir.hpp); while the move runs, each of <out>/train and <out>/val holds the
// marker .prepare-moving too (part of the old dataset and part of the new one are there), which
// list_shards refuses.
inline constexpr const char* kPrepareStagingName = ".prepare.tmp";
inline constexpr const char* kPrepareMoveMarker = "COMMITTING";
inline constexpr const char* kPrepareMovingMarker = ".prepare-moving";

enum class LoaderOrder { sequential, shuffled };

struct LoaderPosition {
  uint64_t epoch = 0;  // completed passes
  uint64_t cursor = 0; // windows consumed in this epoch
  // Windows per epoch of the split it was taken from (0: not recorded, checkpoints before it):
  // restore() refuses a split of another size, whose batches would not be the run's.
  uint64_t windows = 0;
  bool operator==(const LoaderPosition&) const = default;
};

class DataLoader {
 public:
  // Throws InputError when there are no shards, fewer than B windows, mixed tokenizers, or
  // (when expected_fingerprint != 0) a fingerprint that does not match the model's tokenizer.
  DataLoader(const std::vector<std::string>& shards, int B, int T, LoaderOrder order, uint64_t seed,
             uint64_t expected_fingerprint = 0, bool prefetch = true);
  ~DataLoader();

  // Fills inputs and targets (B*T each, row-major (B,T)). Wraps to the next epoch as needed.
  void next(std::vector<int>& inputs, std::vector<int>& targets);
  LoaderPosition position() const;
  void restore(const LoaderPosition& position);

  uint64_t windows_per_epoch() const;
  uint64_t num_tokens() const;
  uint64_t tokenizer_fingerprint() const;
  uint32_t vocab_size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Covers a whole split once for evaluation: windows of T tokens starting every `stride`
// (stride == T: non-overlapping). In overlapping windows only targets not scored by an earlier
// window count (the others are -1), so every token after the first is scored exactly once.
class EvalIterator {
 public:
  EvalIterator(const std::vector<std::string>& shards, int B, int T, int stride, uint64_t expected_fingerprint = 0);
  ~EvalIterator();
  // Fills up to B rows; returns the number of rows filled (0 at the end). Unfilled rows get -1 targets.
  int next(std::vector<int>& inputs, std::vector<int>& targets);
  uint64_t tokens_to_score() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The rule of overlapping windows, shared by EvalIterator and score (core/generation.hpp):
// `targets` holds one window's predictions of tokens first, first+1, ... (at least one); those at
// or before `scored_until`, the last token an earlier window scored (0 before the first window:
// token 0 is never a target), become -1, ignored by the loss. Returns the new scored_until.
uint64_t mask_scored_targets(std::span<int> targets, uint64_t first, uint64_t scored_until);

}  // namespace gpt2cc
