// Checkpoints: everything needed to resume training bit-identically or to generate.
//
// File (little-endian): a header, then parameters, then (optionally) the AdamW moments m and v.
//   char magic[8] = "GPT2CKPT"; uint32 version; uint32 header_json_bytes; then header_json_bytes
//   of JSON (model config, dtype, step, data-loader position, the run seed (the RNG streams
//   derive from it), tokenizer fingerprint and directory, training config), then uint64
//   num_params and num_params float32 parameters, then uint8 has_optimizer and (if 1) num_params
//   float32 m and num_params float32 v, then a uint64 FNV-1a checksum of everything before it.
// Written to "<path>.tmp", flushed and fsync'ed, then renamed over <path>: a crash never leaves a
// half-written file in place of the last good checkpoint.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.hpp"
#include "core/dataloader.hpp"

namespace gpt2cc {

struct Checkpoint {
  ModelConfig config;
  std::string dtype = "fp32";          // dtype the parameters were trained in (stored as fp32)
  uint64_t step = 0;                   // optimizer steps completed
  uint64_t tokens_seen = 0;
  LoaderPosition loader;               // train loader position after `step` steps
  uint64_t seed = 0;                   // run seed (dropout seeds derive from seed and step)
  uint64_t tokenizer_fingerprint = 0;  // 0: unknown
  std::string tokenizer_dir;           // where the tokenizer was loaded from, as given to train
  nlohmann::json train_config;         // the effective training configuration (informational)
  std::vector<float> params;           // layout order (core/params.hpp)
  std::vector<float> m, v;             // AdamW moments; empty when saved without optimizer state
};

// Atomic write (see above). Throws Error naming the path on I/O failure; the old file survives.
void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// Validates magic, version, sizes, checksum and config; throws InputError naming the file, what
// was expected and what was found. with_optimizer = false skips reading m and v. A path holding
// Hugging Face GPT-2 weights (core/hf_gpt2.hpp: a directory with model.safetensors, or that file)
// loads as their weights-only checkpoint at step 0; with_optimizer = true refuses it (no run to
// resume).
Checkpoint load_checkpoint(const std::string& path, bool with_optimizer = true);

// The step checkpoints of a directory: files named step_ + the step in decimal digits (zero-padded
// to 8 by the trainer) + .ckpt, oldest first; none when it is not a directory. Other names
// (a step_best.ckpt copied there by hand) are not step checkpoints: never resumed nor pruned.
std::vector<std::filesystem::path> step_checkpoints(const std::filesystem::path& dir);
// The step in a step checkpoint's name (step_00000300.ckpt: 300); nullopt for any other name.
std::optional<uint64_t> checkpoint_step_of(const std::filesystem::path& path);

}  // namespace gpt2cc
