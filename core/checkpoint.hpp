// Checkpoints: everything needed to resume training bit-identically or to generate.
//
// File (little-endian): a header, then parameters, then (optionally) the AdamW moments m and v.
//   char magic[8] = "GPT2CKPT"; uint32 version; uint32 header_json_bytes; then header_json_bytes
//   of JSON (model config, dtype, step, the steps of them skipped (only when some were: AdamW's
//   step count is the others), data-loader position, the run seed (the RNG streams derive from
//   it), tokenizer fingerprint and directory, training config), then uint64
//   num_params and num_params float32 parameters, then uint8 has_optimizer and (if 1) num_params
//   float32 m and num_params float32 v, then a uint64 FNV-1a checksum of everything before it.
// The JSON (UTF-8) object's keys: "model" {"num_layers", "num_heads", "channels", "max_seq_len",
//   "vocab_size", "padded_vocab_size", "dropout"}, "dtype" ("fp32"/"bf16": the run's compute
//   dtype; the arrays are float32 either way), "step", "tokens_seen", "loader" {"epoch", "cursor"
//   (windows taken in that epoch), "windows" (per epoch; absent: not recorded)}, "seed",
//   "tokenizer_fingerprint" (an unsigned 64-bit JSON integer: a reader that parses numbers as
//   doubles loses its low bits; shards and manifests hold the same value, in hex in the manifest),
//   "tokenizer_dir", "train_config" (train's flags, as config.json's "train"), "skipped_steps"
//   only when non-zero, and "train_data_contents" (a hex fingerprint of the training data's sampled
//   contents, core/trainer.cpp's split_identity; absent in older files and outside train).
// Written to "<path>.tmp", flushed and fsync'ed, then renamed over <path>: a crash never leaves a
// half-written file in place of the last good checkpoint.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.hpp"
#include "core/dataloader.hpp"

namespace gpt2cc {

// Everything a checkpoint holds but its arrays.
struct CheckpointInfo {
  ModelConfig config;
  std::string dtype = "fp32";          // dtype the parameters were trained in (stored as fp32)
  uint64_t step = 0;                   // optimizer steps completed
  uint64_t skipped_steps = 0;          // of them, those whose update was skipped (non-finite)
  uint64_t tokens_seen = 0;
  LoaderPosition loader;               // train loader position after `step` steps
  uint64_t seed = 0;                   // run seed (dropout seeds derive from seed and step)
  uint64_t tokenizer_fingerprint = 0;  // 0: unknown
  std::string tokenizer_dir;           // where the tokenizer was loaded from, as given to train
  nlohmann::json train_config;         // the effective training configuration (informational)
  std::string train_data_contents;     // the train split's sampled contents (hex); empty: not recorded
};

struct Checkpoint : CheckpointInfo {
  std::vector<float> params;  // layout order (core/params.hpp)
  std::vector<float> m, v;    // AdamW moments; empty when saved without optimizer state
};

// A checkpoint's arrays a piece at a time, so that a save or a load never holds a second copy of
// them (gpt2's parameters and moments are 1.5 GB, gpt2-xl's 18 GB): a save asks `source` for each
// piece it writes, a load hands each piece it reads to `sink`. Pieces are at most kCheckpointPiece
// floats and cover each array once; `offset` is the index of the piece's first float in its
// array. A gpt2cc file's come in file order (all of params, then m, then v); Hugging Face
// weights' a tensor at a time (core/hf_gpt2.hpp).
enum class CheckpointArray { params, m, v };
constexpr size_t kCheckpointPiece = size_t(4) << 20;  // 16 MB of floats
using CheckpointSource = std::function<void(CheckpointArray array, size_t offset, std::span<float> piece)>;
using CheckpointSink = std::function<void(CheckpointArray array, size_t offset, std::span<const float> piece)>;
// The pieces of an array of n floats, in order: f(offset, count) for each, count at most
// kCheckpointPiece. Every streamed save and load cuts its arrays this way (a data-parallel save's
// ranks rely on cutting them alike: core/model_checkpoint.cpp).
template <class F>
void for_each_checkpoint_piece(size_t n, F&& f) {
  for (size_t at = 0; at < n; at += kCheckpointPiece) f(at, std::min(kCheckpointPiece, n - at));
}

// Atomic write (see above) of `info` and the arrays `source` gives: the parameters, and with
// `with_optimizer` the moments. Throws Error naming the path on I/O failure; the old file survives.
void save_checkpoint(const std::string& path, const CheckpointInfo& info, bool with_optimizer,
                     const CheckpointSource& source);
// The same from arrays in memory (m and v both empty: no optimizer state).
void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);

// A load in two steps, so that the caller can build the model the header describes before the
// arrays arrive: opening validates magic, version, header, config and every size (the file's
// length included), throwing InputError naming the file, what was expected and what was found;
// read_arrays then streams the arrays and checks the checksum, which covers the whole file. A
// path holding Hugging Face GPT-2 weights (core/hf_gpt2.hpp: a directory with model.safetensors,
// or that file) opens as their weights-only checkpoint at step 0 (its tensors checked when
// opened, then streamed, an lm_head.weight that is not wte refused on the way).
// The file stays open from the header to the checksum: a save renamed over it meanwhile is not
// mixed in.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path);
  ~CheckpointReader();
  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;

  const CheckpointInfo& info() const;
  bool has_optimizer() const;
  // Once per reader: the parameters, and with `with_optimizer` the moments, to `sink` (null: read
  // and checked only); the moments are read even when not wanted, as the checksum covers them.
  // with_optimizer on a file without them is an InputError before anything is read. A corrupt
  // file throws InputError after `sink` may have taken some of its pieces: what the sink filled
  // must then be discarded.
  void read_arrays(const CheckpointSink& sink, bool with_optimizer);
  // The file's checksum, once read_arrays has checked it (a copy of the file has the same one);
  // none before, and none for Hugging Face weights, which have no checksum.
  std::optional<uint64_t> checksum() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Opens and reads the whole checkpoint into memory. with_optimizer = false skips keeping m and v.
// Hugging Face weights load with with_optimizer = false only (no run to resume).
Checkpoint load_checkpoint(const std::string& path, bool with_optimizer = true);

// The step checkpoints of a directory: files named step_ + the step in decimal digits (zero-padded
// to 8 by the trainer) + .ckpt, oldest first; none when it is not a directory. Other names
// (a step_best.ckpt copied there by hand) are not step checkpoints: never resumed nor pruned.
std::vector<std::filesystem::path> step_checkpoints(const std::filesystem::path& dir);
// The step in a step checkpoint's name (step_00000300.ckpt: 300); nullopt for any other name.
std::optional<uint64_t> checkpoint_step_of(const std::filesystem::path& path);

class InputError;  // core/check.hpp
// Throws `e`, the error a run's step checkpoint `path` gave (damaged on disk), naming the run's
// previous step checkpoint beside it to continue from, when there is one.
[[noreturn]] void fail_naming_previous_checkpoint(const InputError& e, const std::string& path);

}  // namespace gpt2cc
