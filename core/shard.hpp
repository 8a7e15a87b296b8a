// Token shard I/O below the data loader: a read-only memory map of one shard, and a streaming
// writer for shards too large to hold in memory (prepare writes billions of tokens this way).
// The file format is in core/dataloader.hpp: 64-byte header, then num_tokens ids of token_bytes.
// Both validate like read_shard_header and name the file in every error.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "core/dataloader.hpp"

namespace gpt2cc {

inline constexpr size_t kShardHeaderBytes = 64;
inline constexpr char kShardMagic[8] = {'G', 'P', 'T', '2', 'T', 'O', 'K', 'S'};

// 2 bytes per token when every id fits (vocab_size <= 65536), else 4.
inline uint32_t shard_token_bytes(uint32_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// A validated shard mapped read-only for its lifetime (move-only).
class MappedShard {
 public:
  explicit MappedShard(const std::string& path);
  ~MappedShard();
  MappedShard(MappedShard&& other) noexcept;
  MappedShard& operator=(MappedShard&&) = delete;
  MappedShard(const MappedShard&) = delete;

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  uint64_t size() const { return header_.num_tokens; }
  // Token i (i < size()), widened to 32 bits.
  uint32_t at(uint64_t i) const {
    return header_.token_bytes == 2 ? reinterpret_cast<const uint16_t*>(tokens_)[i]
                                    : reinterpret_cast<const uint32_t*>(tokens_)[i];
  }
  // Copies tokens [begin, begin + count) into out.
  void copy(uint64_t begin, uint64_t count, uint32_t* out) const;

 private:
  std::string path_;
  ShardHeader header_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;
};

// Appends tokens to "<path>.tmp" and on finish() writes the final header, flushes, fsyncs and
// renames to <path>: a crash never leaves a partial file under the final name. A failed write
// (disk full) throws Error naming the file and removes the temporary file.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, uint64_t tokenizer_fingerprint, uint32_t vocab_size);
  ~ShardWriter();  // without finish(): removes the temporary file
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void append(const uint32_t* tokens, size_t n);  // Error for an id >= vocab_size
  uint64_t size() const { return count_; }
  void finish();

 private:
  std::string path_, tmp_path_;
  std::FILE* file_ = nullptr;
  uint64_t fingerprint_;
  uint32_t vocab_size_, token_bytes_;
  uint64_t count_ = 0;
};

}  // namespace gpt2cc
