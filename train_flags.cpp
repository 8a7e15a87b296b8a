// train's flags and the configuration of a resumed run (train_flags.hpp).
#include "train_flags.hpp"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/checkpoint.hpp"
#include "core/cli.hpp"
#include "core/dataloader.hpp"
#include "core/hf_gpt2.hpp"
#include "core/json_number.hpp"
#include "core/trainer.hpp"

namespace gpt2cc {

namespace {
// A field's value as cxxopts parses it back: strings bare, numbers as JSON prints them.
template <class T>
std::string show(const T& value) {
  nlohmann::json j = value;
  return j.is_string() ? j.get<std::string>() : j.dump();
}

}  // namespace

cxxopts::Options make_train_options(TrainConfig& c) {
  cxxopts::Options o("train", "Train a GPT-2 on token shards, or evaluate a checkpoint (--eval-only).");
  auto add = [&o](const std::string& group, const std::string& name, const std::string& help, auto& field) {
    using T = std::remove_reference_t<decltype(field)>;
    auto value = cxxopts::value<T>(field)->default_value(show(field));
    if constexpr (std::is_same_v<T, bool>) value->implicit_value("true");
    o.add_option(group, cxxopts::Option(name, help, value));
  };
  add("model", "preset", "model preset: gpt2, gpt2-medium, gpt2-large, gpt2-xl, d2, d4, d6", c.preset);
  add("model", "layers", "number of layers L (0: the preset's)", c.layers);
  add("model", "heads", "attention heads NH (0: the preset's)", c.heads);
  add("model", "channels", "width C (0: the preset's)", c.channels);
  add("model", "max-seq-len", "position embedding rows (0: the preset's)", c.max_seq_len);
  add("model", "dropout", "dropout probability in [0, 1)", c.dropout);
  add("model", "init-from",
      "checkpoint to start from, weights only (fine-tuning), or a Hugging Face GPT-2 directory (model.safetensors + "
      "config.json)",
      c.init_from);
  add("model", "resume", "checkpoint, or run directory (its newest), to continue exactly", c.resume);
  add("device", "device", "cpu or cuda", c.device);
  add("device", "threads",
      "CPU threads, 0 to 1024 (0: $OMP_NUM_THREADS, each rank's under mpiexec; unset, all cores, shared among the "
      "ranks on the machine)",
      c.threads);
  add("device", "cuda-device", "GPU index", c.cuda_device);
  add("device", "dtype",
      "compute dtype: fp32 or bf16 (mixed, fp32 master weights; cuda on sm_80 or newer, or the cpu)", c.dtype);
  add("device", "grad-dtype",
      "parameter gradients: auto (the --dtype's), bf16 or fp32 (with --dtype bf16: summed over micro-steps "
      "without bf16 rounding, 2 more bytes per parameter)",
      c.grad_dtype);
  add("device", "recompute-gelu", "recompute GELU in the backward instead of storing it (less memory)",
      c.recompute_gelu);
  add("device", "classifier-rows",
      "rows of logits computed at once for a loss: fewer hold less memory, in smaller GEMMs (0: all B*T)",
      c.classifier_rows);
  add("device", "cuda-graphs", "replay each step as a CUDA graph (--cuda-graphs=false: launch every op)",
      c.cuda_graphs);
  add("device", "zero-stage",
      "under mpiexec: 1 shards the AdamW moments over the ranks (ZeRO-1), 0 keeps them whole on every rank",
      c.zero_stage);
  add("data", "train-data", "train shards: a .bin file, a directory of them, or a glob", c.train_data);
  add("data", "val-data", "validation shards (empty: no validation)", c.val_data);
  add("data", "shuffle", "shuffled windows each epoch (--shuffle=false: in order)", c.shuffle);
  add("data", "seed", "run seed: initialisation, shuffling, dropout", c.seed);
  add("batch", "batch-size", "micro-batch rows B", c.batch_size);
  add("batch", "seq-len", "sequence length T", c.seq_len);
  add("batch", "total-batch", "tokens per optimizer step, a multiple of ranks*B*T (0: ranks*B*T)",
      c.total_batch_tokens);
  add("optimizer", "lr", "peak learning rate", c.lr);
  add("optimizer", "min-lr-ratio", "final learning rate as a fraction of --lr", c.min_lr_ratio);
  add("optimizer", "warmup-steps", "linear warm-up steps", c.warmup_steps);
  add("optimizer", "schedule", "decay after warm-up: cosine, linear or constant", c.schedule);
  add("optimizer", "beta1", "AdamW beta1", c.beta1);
  add("optimizer", "beta2", "AdamW beta2", c.beta2);
  add("optimizer", "eps", "AdamW epsilon", c.eps);
  add("optimizer", "weight-decay", "decoupled weight decay on the weight matrices (not wpe)", c.weight_decay);
  add("optimizer", "grad-clip", "clip the global gradient norm (0: off)", c.grad_clip);
  add("length", "steps", "run length in optimizer steps", c.steps);
  add("length", "epochs", "run length in passes over the train data", c.epochs);
  add("length", "tokens", "run length in train tokens", c.tokens);
  add("length", "stop-at-step", "stop (with a checkpoint) at this step, keeping the whole run's schedule",
      c.stop_at_step);
  add("eval", "eval-every", "validate every N steps (0: only at the end)", c.eval_every);
  add("eval", "eval-batches", "validation batches (0: the whole split)", c.eval_batches);
  add("eval", "eval-only", "evaluate the --init-from/--resume checkpoint on all of --val-data and exit", c.eval_only);
  add("eval", "eval-stride", "eval-only window stride (0: --seq-len, non-overlapping)", c.eval_stride);
  add("output", "run-dir", "run directory: config.json, metrics.jsonl, checkpoints/", c.run_dir);
  add("output", "checkpoint-every", "checkpoint every N steps (0: only at the end)", c.checkpoint_every);
  add("output", "keep-checkpoints",
      "newest step checkpoints to keep (and, beyond them, the newest whose weights gave a finite loss)",
      c.keep_checkpoints);
  add("output", "log-every", "progress line every N steps when stdout is not a terminal", c.log_every);
  add("output", "max-bad-steps", "stop after this many non-finite steps in a row", c.max_bad_steps);
  add("output", "tokenizer",
      "tokenizer directory the data was prepared with (checked; recorded; needed for --sample-every)", c.tokenizer_dir);
  add("output", "sample-every", "print and save a generated sample every N steps (0: never)", c.sample_every);
  add("output", "sample-tokens", "tokens per sample (at most --seq-len - 1)", c.sample_tokens);
  add("output", "export-hf",
      "write the --init-from/--resume weights as Hugging Face GPT-2 (model.safetensors, config.json, the tokenizer) "
      "into this directory and exit",
      c.export_hf);
  o.add_options()("h,help", "show this help");
  return o;
}

namespace {

// The run directory a resumed run writes to: the one --resume names, or the one whose checkpoints/
// folder holds the checkpoint it names (a file, or that folder itself: RUN/checkpoints is RUN's).
// Not the directory the checkpoint records: a copied run would write into the original's (and a
// relative recorded path depends on the working directory of the first run).
std::string resumed_run_dir(const std::string& given, const std::string& checkpoint) {
  namespace fs = std::filesystem;
  // The folder as written ("runs/a/checkpoints"), or, for a checkpoint named from inside it
  // ("step_00000024.ckpt", "./step_00000024.ckpt"), its absolute path.
  const fs::path written = fs::path(checkpoint).parent_path();
  const fs::path folder =
      written.filename() == "checkpoints" ? written : fs::absolute(checkpoint).lexically_normal().parent_path();
  std::error_code ec;
  if (fs::is_directory(given) && !(folder.filename() == "checkpoints" && fs::equivalent(folder, given, ec)))
    return given;
  INPUT_CHECK(folder.filename() == "checkpoints",
              "--resume {}: the checkpoint is not in a run's checkpoints/ folder, so there is no run directory to "
              "continue in: give the continued run's --run-dir",
              given);
  const fs::path run = folder.parent_path();
  return run.empty() ? "." : run.string();
}

}  // namespace

TrainConfig resume_config(const TrainConfig& given, int argc, char** argv) {
  const std::string path = resolve_checkpoint(given.resume);
  refuse_resume_of_hf_gpt2(path);
  // The header only (its sizes checked): the trainer reads the arrays once, and names the run's
  // previous checkpoint if they turn out damaged, as this does for a damaged header.
  std::optional<CheckpointReader> reader;
  try {
    reader.emplace(path);
  } catch (const InputError& e) {
    fail_naming_previous_checkpoint(e, path);
  }
  const CheckpointInfo& ckpt = reader->info();
  TrainConfig c = read_json_checked(format("checkpoint {} holds an unreadable training configuration", path),
                                     [&] { return ckpt.train_config.get<TrainConfig>(); });
  c.resume = given.resume;
  // The tokenizer as the checkpoint records it, absolute: the saved flag is as typed, relative to
  // the first run's working directory.
  c.tokenizer_dir = ckpt.tokenizer_dir;
  c.init_from.clear();  // the run may have started as a fine-tune: its weights now come from the checkpoint
  c.stop_at_step = 0;
  TrainConfig base = c;
  auto options = make_train_options(c);
  const cxxopts::ParseResult parsed = parse_flags(options, argc, argv);
  if (c.total_batch_tokens == 0) c.total_batch_tokens = base.total_batch_tokens;  // 0: the run's own
  // A run length given now replaces the run's, in whichever unit it is given.
  if (parsed.count("steps") || parsed.count("epochs") || parsed.count("tokens")) {
    if (!parsed.count("steps")) c.steps = 0;
    if (!parsed.count("epochs")) c.epochs = 0;
    if (!parsed.count("tokens")) c.tokens = 0;
  }
  // Settings that would change the batches, the random draws or the arithmetic: a value given now
  // must be the run's own, and the one that is not is named with the run's value.
  const auto keep = [&](const char* flag, const auto& now, const auto& run) {
    INPUT_CHECK(now == run,
                "--{} {}: --resume continues the run with its own --{} {} (from the checkpoint); drop the flag, or "
                "start a new run with --init-from",
                flag, now, flag, run);
  };
  const auto on_off = [](bool b) { return std::string(b ? "true" : "false"); };
  // --grad-dtype as it acts: fp32 gradients or the compute dtype's (auto and bf16 are one in bf16,
  // and every value is one in fp32).
  const auto gradients = [](const TrainConfig& t) {
    return t.grad_dtype == "fp32" || parse_dtype(t.dtype) == DType::fp32 ? std::string("fp32") : t.dtype;
  };
  keep("batch-size", c.batch_size, base.batch_size);
  keep("seq-len", c.seq_len, base.seq_len);
  keep("total-batch", c.total_batch_tokens, base.total_batch_tokens);
  keep("seed", c.seed, base.seed);
  keep("shuffle", on_off(c.shuffle), on_off(base.shuffle));
  keep("dropout", c.dropout, base.dropout);
  keep("dtype", c.dtype, base.dtype);
  if (gradients(c) != gradients(base)) keep("grad-dtype", c.grad_dtype, base.grad_dtype);
  INPUT_CHECK(c.preset == base.preset,
              "--preset {}: the model shape comes from the checkpoint {} (its run's --preset {}); drop --preset",
              c.preset, path, base.preset);
  if (!parsed.count("run-dir")) c.run_dir = resumed_run_dir(given.resume, path);
  // The run's data paths are as its first command typed them: from another working directory (or
  // after a move) they may name nothing, which the error then says, with the flag to give.
  for (const auto& [flag, value] : {std::pair{"train-data", &c.train_data}, std::pair{"val-data", &c.val_data}}) {
    if (parsed.count(flag) || value->empty()) continue;
    try {
      list_shards(*value);
    } catch (const InputError& e) {
      fail_input(format("{}: the resumed run's --{}, as its checkpoint records it (relative paths are the first "
                        "run's); give --{} PATH{}",
                        e.what(), flag, flag, std::string(flag) == "val-data" ? ", or --val-data '' for none" : ""));
    }
  }
  return c;
}

void check_task_flags(const TrainConfig& c, const cxxopts::ParseResult& parsed) {
  INPUT_CHECK(!parsed.count("cuda-device") || c.device == "cuda",
              "--cuda-device picks a GPU: with --device {} it does nothing; drop it, or add --device cuda", c.device);
  if (!c.eval_only && c.export_hf.empty()) {
    for (const char* flag : {"eval-every", "eval-batches"})
      INPUT_CHECK(!parsed.count(flag) || !c.val_data.empty(),
                  "--{} sets how the validation data is evaluated: without --val-data it does nothing", flag);
    // The default (64) is cut to what a sample can hold; a number given is refused past it.
    INPUT_CHECK(!parsed.count("sample-tokens") || c.sample_tokens <= c.seq_len - 1,
                "--sample-tokens {} is more than a sample holds: --seq-len - 1 = {} (the training model's positions)",
                c.sample_tokens, c.seq_len - 1);
    return;
  }
  // What each task reads; the shape flags may repeat the checkpoint's (check_shape_flags).
  static const std::vector<std::string> shape = {"preset", "layers", "heads", "channels", "max-seq-len"};
  static const std::vector<std::string> eval = {"eval-only", "init-from",   "resume", "val-data", "batch-size",
                                                "seq-len",   "eval-stride", "device", "threads",  "cuda-device",
                                                "dtype",     "cuda-graphs", "classifier-rows"};
  static const std::vector<std::string> exporting = {"export-hf", "init-from", "resume", "tokenizer"};
  const std::vector<std::string>& reads = c.eval_only ? eval : exporting;
  for (const cxxopts::KeyValue& given : parsed.arguments()) {
    const std::string& flag = given.key();
    INPUT_CHECK(std::find(reads.begin(), reads.end(), flag) != reads.end() ||
                    std::find(shape.begin(), shape.end(), flag) != shape.end(),
                "--{} has no effect on {}, which {}: drop it", flag, c.eval_only ? "--eval-only" : "--export-hf",
                c.eval_only ? "scores a checkpoint on --val-data" : "writes a checkpoint's weights out");
  }
}

}  // namespace gpt2cc
