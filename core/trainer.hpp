// Trainer: one training run (or its continuation) from a TrainConfig.
//   an optimizer step = accumulation_steps() micro-batches of B x T; the loss is the mean over
//   every target of the whole total batch, so each token's loss gets weight dloss = 1 / (targets
//   in all micro-batches), counted before the first backward; then global-norm clipping, the LR
//   schedule and one AdamW update. A non-finite loss or gradient norm skips the update.
// Resume is exact: the checkpoint holds parameters, AdamW moments, the step, and the train
// loader's position; dropout seeds are a function of (seed, micro-step), so a resumed run
// draws the same batches and masks and computes the same losses as an uninterrupted one.
// Data parallel (core/distributed.hpp): with R ranks, each step's micro-batches k = 0..A-1 are
// drawn by every rank in the same order, and rank r runs those with k % R == r, so the run sees
// the batches, dropout masks and schedule of a one-process run with A accumulation steps (to
// rounding: the gradients are summed in another order). Rank 0 alone writes the run directory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <nlohmann/json.hpp>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/checkpoint.hpp"
#include "core/distributed.hpp"
#include "core/model.hpp"
#include "core/train_config.hpp"
#include "core/train_eval.hpp"

namespace gpt2cc {

struct StepResult {
  uint64_t step = 0;        // steps completed after this one
  double loss = 0;          // mean loss over the total batch
  double grad_norm = 0;     // before clipping
  double lr = 0;
  bool skipped = false;     // non-finite loss or gradient norm: no update was made
  double seconds = 0;       // wall time of the step
};

enum class TrainStop { finished, stop_at_step, interrupted };

// The run stopped by --max-bad-steps. Data parallel, every rank throws it at the same step (the
// loss and gradient norm are the ranks' sums): one failure for the job, not one per rank.
struct DivergedError : Error {
  using Error::Error;
};

class Trainer {
 public:
  // Opens the data, builds the model (preset, checkpoint to resume, or checkpoint to fine-tune)
  // and checks every combination: InputError for a mismatch between checkpoint and data
  // (tokenizer, vocabulary, sequence length), a run directory holding another run's checkpoints,
  // an eval or checkpoint interval longer than the run, and so on.
  // data_parallel: the collectives over the ranks of a data-parallel run (every rank builds its
  // Trainer with the same config), or null for one process.
  Trainer(const TrainConfig& config, Backend& backend, DeviceCollectives* data_parallel = nullptr);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  const TrainConfig& config() const;
  GPT2& model();
  uint64_t step() const;            // optimizer steps completed
  uint64_t total_steps() const;
  int accumulation_steps() const;  // micro-batches per step, over all ranks
  uint64_t tokens_per_step() const;
  std::string summary() const;      // the run's plan: model, data, batch, length, schedule
  // What this rank derived from its data and flags that every rank of a data-parallel run must
  // share: the run's length in steps, the micro-batches per step, each split's shards, tokens and
  // a fingerprint of samples of its contents, the tokenizer's fingerprint, the evaluation batches,
  // and the checkpoint it started from (path, step, checksum).
  nlohmann::json data_identity() const;

  // Trains to the end, to config.stop_at_step, or until a stop request (SIGINT/SIGTERM), then
  // writes a checkpoint. Creates the run directory with config.json and metrics.jsonl.
  // DivergedError after config.max_bad_steps non-finite steps in a row.
  TrainStop run();
  // One optimizer step without outputs (run() adds evaluation, logs and checkpoints).
  StepResult train_step();
  // Validation loss: config.eval_batches fixed batches, or the whole split when 0.
  EvalResult evaluate();
  bool has_validation() const;
  EvalResult last_evaluation() const;  // of the latest run() evaluation (tokens == 0: none yet)
  uint64_t last_evaluation_step() const;  // the step it was made after
  // Writes <run_dir>/checkpoints/step_<step>.ckpt, keeps the newest keep_checkpoints. Returns the
  // path. Data parallel: every rank calls it (the sharded state gathers on rank 0, which writes).
  std::string save();

  // Test hook: called before each micro-batch's backward with (step, micro); the returned factor
  // multiplies dloss (a NaN injects a non-finite gradient). Unset in normal runs.
  std::function<float(uint64_t step, int micro)> dloss_factor_hook;
  // Called every config.sample_every steps with the model; returns text to print and save.
  std::function<std::string(GPT2& model, uint64_t step)> sampler;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The dropout seed of micro-batch `micro_step` (step * accumulation_steps + micro) of a run: a
// pure function of the two, distinct for each micro-batch, so a resumed run draws the same masks.
uint64_t dropout_seed(uint64_t run_seed, uint64_t micro_step);

// The checkpoint a --resume argument names: the file itself, or the newest step_*.ckpt in a run
// directory (or its checkpoints/ folder). InputError when there is none.
std::string resolve_checkpoint(const std::string& path_or_run_dir);

}  // namespace gpt2cc
