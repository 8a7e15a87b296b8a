// Trainer's private state (core/trainer.hpp), shared by core/trainer_setup.cpp (the setup and
// validation of a run) and core/trainer.cpp (the steps, evaluation, checkpoints and the loop).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/checkpoint.hpp"
#include "core/dataloader.hpp"
#include "core/trainer.hpp"

namespace gpt2cc {

struct Trainer::Impl {
  TrainConfig cfg;
  Backend& backend;
  DeviceCollectives* data_parallel;      // null: one process
  std::unique_ptr<ProcessGroup> single;  // the group of one when there is no data_parallel
  ProcessGroup* group;
  int ranks = 1, rank = 0;
  ModelConfig mcfg;
  std::unique_ptr<GPT2> model;
  std::vector<std::string> train_shards, val_shards;
  nlohmann::json train_identity;  // split_identity(train_shards), taken once
  std::unique_ptr<DataLoader> train_loader, val_loader;
  uint64_t fingerprint = 0;
  std::string tokenizer_dir, origin;
  // The checkpoint the run started from (--resume, --init-from): its path, step and checksum (null
  // for Hugging Face weights); null for a fresh run. Ranks compare it (data_identity).
  nlohmann::json origin_identity;
  int accum = 1;  // micro-batches per step over all ranks; rank r runs those k with k % ranks == r
  int eval_batches = 0;
  uint64_t total_steps = 0;
  LrSchedule schedule;
  uint64_t step = 0, tokens_seen = 0;
  // Steps whose update was skipped (a non-finite loss or gradient): AdamW's step count, which its
  // bias correction divides by, is the updates applied, step - skipped_steps (as PyTorch's
  // GradScaler leaves an optimizer's step count alone when it skips).
  uint64_t skipped_steps = 0;
  int bad_streak = 0;
  // The newest step whose parameters gave a finite loss and gradient norm (the run's start until
  // a step has): the checkpoints after it may hold diverged weights, so pruning keeps the newest
  // one up to it, and a run stopped by --max-bad-steps names it.
  uint64_t finite_step = 0;
  EvalResult last_eval;
  uint64_t last_eval_step = 0;
  bool resumed = false;
  uint64_t last_saved = UINT64_MAX;
  std::vector<int> inputs, targets;  // one micro-batch of B x T
  // MFU (core/device_peaks.hpp): the model's training FLOPs per token, and the peak of one GPU
  // (the root's stands for every rank's); none on the CPU or for a GPU without a confirmed peak.
  double flops_per_token = 0;
  std::optional<double> peak_tflops;
  std::string mfu_basis;  // the summary's line on it; empty on the CPU

  Impl(const TrainConfig& config, Backend& be, DeviceCollectives* dp)
      : cfg(config),
        backend(be),
        data_parallel(dp),
        single(dp ? nullptr : ProcessGroup::single()),
        group(dp ? &dp->group() : single.get()),
        ranks(group->size()),
        rank(group->rank()) {}
  uint64_t micro_tokens() const { return uint64_t(cfg.batch_size) * uint64_t(cfg.seq_len); }
  uint64_t step_tokens() const { return uint64_t(accum) * micro_tokens(); }  // over all ranks
  // The fraction of the ranks' peak that a step of `seconds` came to.
  std::optional<double> mfu(double seconds) const {
    if (!peak_tflops) return std::nullopt;
    return double(step_tokens()) / seconds * flops_per_token / (*peak_tflops * 1e12 * ranks);
  }
  void find_mfu_peak();
  std::filesystem::path checkpoint_dir() const { return std::filesystem::path(cfg.run_dir) / "checkpoints"; }
  // The newest of the run's step checkpoints `all` (step_checkpoints, oldest first) at or before
  // finite_step: its position in `all`, or none.
  std::optional<size_t> newest_finite_checkpoint(const std::vector<std::filesystem::path>& all) const {
    for (size_t i = all.size(); i-- > 0;)
      if (*checkpoint_step_of(all[i]) <= finite_step) return i;
    return std::nullopt;
  }
  bool from_checkpoint() const { return !cfg.resume.empty() || !cfg.init_from.empty(); }
  // setup(), in order: each step reads what the ones before it set.
  void setup();
  std::optional<CheckpointReader> open_origin();
  // Runs `read`, which reads the origin checkpoint (its header, or its arrays); an InputError of a
  // resumed run's (a damaged file) then names the run's previous checkpoint to continue from.
  template <class Read>
  void reading_origin(Read&& read) {
    try {
      read();
    } catch (const InputError& e) {
      if (resumed) fail_naming_previous_checkpoint(e, origin);
      throw;
    }
  }
  void open_data_and_model(const CheckpointInfo& ckpt);
  void plan_batches_and_length();
  void check_intervals() const;
  void check_run_directory(const CheckpointInfo& ckpt);
  void build_model(const CheckpointInfo& ckpt, CheckpointReader* origin_file);
  // The checkpoint's header fields for the state after `step` steps (the arrays come from the model).
  CheckpointInfo checkpoint_info() const;
  // The run directory's config.json: the run's flags, the model and what was derived from them.
  nlohmann::json run_config() const;
  // Throws the error of a run stopped by --max-bad-steps at `at_step`, naming the checkpoint to
  // continue from (the newest one at or before finite_step), or none.
  [[noreturn]] void fail_after_bad_steps(uint64_t at_step) const;
};

// What identifies a split's data, cheap at any size: {"shards", "tokens", "sampled_contents" (hex)}
// (core/trainer.cpp). A resume compares the train split's contents with its checkpoint's, and the
// ranks of a data-parallel run compare both splits' with the root's.
nlohmann::json split_identity(const std::vector<std::string>& shards);

}  // namespace gpt2cc
