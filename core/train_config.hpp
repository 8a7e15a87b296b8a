// TrainConfig: every setting of a training or evaluation run, with its default and valid range.
// train fills it from flags (train_flags.cpp; when resuming, over the checkpoint's saved copy),
// validate() rejects impossible values with the flag's name, and the run saves it as JSON in its
// directory.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "core/config.hpp"
#include "core/schedule.hpp"

namespace gpt2cc {

struct TrainConfig {
  // ---- model ----
  std::string preset = "d4";   // a model preset (core/config.hpp) when not from a checkpoint
  int layers = 0;              // override L of the preset, >= 0 (0: keep the preset's)
  int heads = 0;               // override NH, >= 0 (0: keep)
  int channels = 0;            // override C, >= 0 (0: keep)
  int max_seq_len = 0;         // override maxT, >= 0 (0: keep); must be >= seq_len
  float dropout = 0.0f;        // dropout probability, [0, 1)
  std::string init_from;       // checkpoint to start from (weights only: fine-tuning), or ""
  std::string resume;          // checkpoint (or run directory: its latest) to continue exactly, or ""

  // ---- device ----
  std::string device = "cpu";  // cpu | cuda
  int threads = 0;             // CPU threads, >= 0 (0: OpenMP default)
  int cuda_device = 0;         // GPU index, >= 0
  std::string dtype = "fp32";  // compute dtype: fp32 | bf16 (bf16: mixed precision; cuda sm_80+, or the cpu)
  // parameter gradients: auto (the compute dtype's) | bf16 | fp32 (with --dtype bf16: summed across
  // micro-steps unrounded, 2 more bytes per parameter; ModelOptions::fp32_gradients)
  std::string grad_dtype = "auto";
  bool recompute_gelu = false; // recompute GELU in the backward instead of storing it per layer (saves memory)
  int classifier_rows = 8192;  // rows of logits computed at once for a loss, 0: all (ModelOptions::classifier_rows)
  bool cuda_graphs = true;     // replay each training step as a CUDA graph (--device cuda, no dropout)
  // ---- data parallel (several ranks, launched by mpiexec) ----
  int zero_stage = 1;          // 1: the AdamW moments sharded over the ranks (ZeRO-1); 0: whole on every rank

  // ---- data ----
  std::string train_data;      // train shards: a file, a directory or a glob (required for training)
  std::string val_data;        // validation shards, or "" (no validation)
  bool shuffle = true;         // shuffled windows each epoch (false: sequential)
  uint64_t seed = 1337;        // run seed: init, shuffling, dropout

  // ---- batch ----
  int batch_size = 8;               // B, micro-batch rows, >= 1
  int seq_len = 128;                // T, tokens per row, >= 1
  uint64_t total_batch_tokens = 0;  // tokens per optimizer step, a multiple of ranks*B*T (0: ranks*B*T)

  // ---- optimiser ----
  double lr = 6e-4;            // peak learning rate, > 0
  double min_lr_ratio = 0.1;   // decay floor as a fraction of lr, [0, 1]
  uint64_t warmup_steps = 0;   // linear warm-up steps, < the run's steps
  std::string schedule = "cosine";  // cosine | linear | constant
  double beta1 = 0.9;          // AdamW beta1, [0, 1)
  double beta2 = 0.95;         // AdamW beta2, [0, 1)
  double eps = 1e-8;           // AdamW epsilon, > 0
  double weight_decay = 0.1;   // decoupled decay on the weight matrices (not wpe), >= 0
  double grad_clip = 1.0;      // clip the global gradient norm to this, >= 0 (0: no clipping)

  // ---- length: exactly one of these is > 0 ----
  uint64_t steps = 0;          // optimizer steps
  double epochs = 0;           // passes over the train split, > 0
  uint64_t tokens = 0;         // train tokens (rounded up to whole steps)
  uint64_t stop_at_step = 0;   // stop with a checkpoint after this step, keeping the whole run's schedule (0: at the end)

  // ---- evaluation ----
  uint64_t eval_every = 100;   // validate every N steps and at the end, >= 0 (0: only at the end); <= steps
  bool eval_every_given = true;  // false: eval_every is the default no flag set (train's CLI), which a
                                 // shorter run takes as "at the end only" (not saved with the run)
  int eval_batches = 20;       // batches of B x T per validation, >= 0 (0: the whole split)
  bool eval_only = false;      // evaluate a checkpoint (--init-from/--resume) over all of val_data and exit
  int eval_stride = 0;         // eval-only window stride, 1..T (0: T, non-overlapping windows)

  // ---- outputs ----
  std::string run_dir = "runs/run";  // config.json, metrics.jsonl, checkpoints
  uint64_t checkpoint_every = 0;     // checkpoint every N steps (and always at the end), >= 0 (0: end only)
  int keep_checkpoints = 3;          // keep the newest K step checkpoints, >= 1
  uint64_t log_every = 10;           // console line every N steps when not a terminal, >= 1
  int max_bad_steps = 5;             // stop after this many consecutive non-finite steps, >= 1
  std::string tokenizer_dir;         // tokenizer recorded in checkpoints (and used for samples), or ""
  std::string export_hf;             // write the --init-from/--resume weights as Hugging Face GPT-2 here and exit, or ""
  uint64_t sample_every = 0;         // print and save a generated sample every N steps (0: never; needs tokenizer_dir)
  int sample_tokens = 64;            // tokens per sample, >= 1
};

// InputError naming the flag for values outside their range (checks that need the data, such as
// the eval interval against the run length, happen once the data is open: see Trainer). `ranks`:
// the data-parallel run's, named where a new run's --total-batch must be a multiple of them.
void validate(const TrainConfig& config, int ranks = 1);
// The preset's model with the shape flags (--layers, --heads, --channels, --max-seq-len) applied:
// a new run's shape, before the data gives it its vocabulary.
ModelConfig preset_shape(const TrainConfig& config);
// The shape flags beside a checkpoint whose model `has` that shape: each may be 0 (not given) or
// repeat it, not change it (InputError naming the flag and `origin`, the checkpoint). With
// `preset_given` (a task that reads a checkpoint: --eval-only, --export-hf), preset_shape too.
void check_shape_flags(const TrainConfig& config, const ModelConfig& has, const std::string& origin,
                       bool preset_given);
void to_json(nlohmann::json& j, const TrainConfig& config);
void from_json(const nlohmann::json& j, TrainConfig& config);
// Multi-line "name = value" listing for the console.
std::string describe(const TrainConfig& config);

}  // namespace gpt2cc
