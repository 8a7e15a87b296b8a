// Trainer's setup (core/trainer.hpp): the checkpoint a run starts from, its data and model
// checked against each other, the batch plan and length, the run directory, the model built and
// the MFU basis. The training itself is in core/trainer.cpp.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/device_peaks.hpp"
#include "core/hf_gpt2.hpp"
#include "core/model_checkpoint.hpp"
#include "core/run_directory.hpp"
#include "core/trainer_impl.hpp"

namespace gpt2cc {

namespace fs = std::filesystem;

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path;
  INPUT_CHECK(fs::is_directory(path, ec), "checkpoint {} does not exist", path);
  for (const fs::path& dir : {fs::path(path) / "checkpoints", fs::path(path)}) {
    auto found = step_checkpoints(dir);
    if (!found.empty()) return found.back().string();
  }
  // A directory of Hugging Face weights (without step checkpoints: those win), which
  // refuse_resume_of_hf_gpt2 refuses to --resume by name.
  if (is_hf_gpt2(path)) return path;
  // A run's config.json (train writes it before the first step) holds its flags under "train"; a
  // Hugging Face model's config.json (weights missing) does not.
  bool configured = false;
  if (std::ifstream in(fs::path(path) / "config.json"); in) {
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    configured = j.is_object() && j.contains("train");
  }
  // A run still before its first checkpoint holds the directory's lock (core/run_directory.hpp).
  const std::string why = !configured ? ""
                          : directory_in_use(path)
                              ? ": a train process is running there and has not written its first checkpoint yet; "
                                "resume it once it has stopped"
                              : ": the run stopped before its first checkpoint; start it again with its flags "
                                "(config.json there lists them) and the same --run-dir";
  fail_input(format("no checkpoint (step_*.ckpt) in run directory {} or its checkpoints/ folder{}", path, why));
}

void Trainer::Impl::setup() {
  validate(cfg);
  ENSURE(!cfg.eval_only, "Trainer runs training; --eval-only is handled by evaluate_checkpoint (train_tasks.cpp)");
  std::optional<CheckpointReader> origin_file = open_origin();
  const CheckpointInfo ckpt = origin_file ? origin_file->info() : CheckpointInfo{};
  open_data_and_model(ckpt);
  plan_batches_and_length();
  check_run_directory(ckpt);
  check_intervals();
  build_model(ckpt, origin_file ? &*origin_file : nullptr);
  find_mfu_peak();
}

// The checkpoint the run starts from (--resume: the run's newest, with its optimizer state;
// --init-from: weights only), opened with its header checked, or none for a new model.
std::optional<CheckpointReader> Trainer::Impl::open_origin() {
  if (!from_checkpoint()) return std::nullopt;
  resumed = !cfg.resume.empty();
  origin = resumed ? resolve_checkpoint(cfg.resume) : cfg.init_from;
  if (resumed) refuse_resume_of_hf_gpt2(origin);
  std::optional<CheckpointReader> opened;
  reading_origin([&] { opened.emplace(origin); });
  CheckpointReader& reader = *opened;
  // Shape flags may repeat the checkpoint's shape (a resumed run's saved flags do), not change it;
  // --preset is the run's (resume_config) or refused (--init-from).
  check_shape_flags(cfg, reader.info().config, origin, false);
  INPUT_CHECK(!resumed || reader.has_optimizer(),
              "checkpoint {} has no optimizer state, so it cannot be resumed exactly: use --init-from to "
              "fine-tune from it", origin);
  return opened;
}

// The training data and the model's shape: the checkpoint's, or the preset's with the shape flags
// and the data's vocabulary; the validation data checked against both.
void Trainer::Impl::open_data_and_model(const CheckpointInfo& ckpt) {
  const int B = cfg.batch_size, T = cfg.seq_len;
  train_shards = list_shards(cfg.train_data);
  train_identity = split_identity(train_shards);
  train_loader = std::make_unique<DataLoader>(train_shards, B, T,
                                              cfg.shuffle ? LoaderOrder::shuffled : LoaderOrder::sequential,
                                              cfg.seed, ckpt.tokenizer_fingerprint, true);
  fingerprint = train_loader->tokenizer_fingerprint();
  if (resumed) {
    train_loader->restore(ckpt.loader);  // refuses data of another size
    const std::string contents = train_identity.at("sampled_contents").get<std::string>();
    INPUT_CHECK(ckpt.train_data_contents.empty() || ckpt.train_data_contents == contents,
                "the training data is not the run's: its sampled contents (fingerprint {}) differ from those the run "
                "trained on ({}), at the same size (resuming exactly needs the same data; start a new run with "
                "--init-from to train on other data)",
                contents, ckpt.train_data_contents);
  }
  // Recorded absolute: generate and --export-hf read it from other working directories.
  tokenizer_dir = cfg.tokenizer_dir.empty() ? ckpt.tokenizer_dir
                                            : fs::absolute(cfg.tokenizer_dir).lexically_normal().string();
  int data_vocab = int(train_loader->vocab_size());

  if (from_checkpoint()) {
    mcfg = ckpt.config;
    if (!resumed) mcfg.dropout = cfg.dropout;
    // Every id of the data must have a row. Fewer tokens than rows is a Hugging Face model's way
    // (rows past its tokenizer's tokens, which then never occur as inputs or targets); the data's
    // tokenizer is held to the checkpoint's by the loader's fingerprint check, and to the one
    // beside Hugging Face weights by train (check_tokenizer).
    INPUT_CHECK(data_vocab <= mcfg.vocab_size,
                "checkpoint {} is a model with a vocabulary of {} tokens, but the data {} was tokenized with a "
                "vocabulary of {}: prepare the data with the checkpoint's tokenizer",
                origin, mcfg.vocab_size, cfg.train_data, data_vocab);
  } else {
    mcfg = preset_shape(cfg);
    mcfg.dropout = cfg.dropout;
    mcfg.vocab_size = data_vocab;
    mcfg.padded_vocab_size = padded_vocab(data_vocab);
    validate(mcfg);
  }
  INPUT_CHECK(T <= mcfg.max_seq_len, "--seq-len {} is longer than the model's maximum sequence length {}{}", T,
              mcfg.max_seq_len, from_checkpoint() ? " (from the checkpoint)" : "");

  if (!cfg.val_data.empty()) {
    val_shards = list_shards(cfg.val_data);
    // The loaders check each split's tokenizer; the vocabulary is the training data's (within the
    // model's rows, above), checked here for validation too (a header of another vocabulary under
    // the same fingerprint is damaged; a token beyond the rows would fail the first validation).
    const uint32_t val_vocab = read_shard_header(val_shards.front()).vocab_size;
    INPUT_CHECK(int(val_vocab) == data_vocab,
                "the validation data {} was tokenized with a vocabulary of {} tokens, the training data {} with {}",
                cfg.val_data, val_vocab, cfg.train_data, data_vocab);
    if (cfg.eval_batches > 0) {
      val_loader = std::make_unique<DataLoader>(val_shards, B, T, LoaderOrder::sequential, 0, fingerprint, false);
      // Never more batches than the split holds: no window is counted twice.
      eval_batches = int(std::min<uint64_t>(uint64_t(cfg.eval_batches), val_loader->windows_per_epoch() / B));
    } else {
      // The whole split each time: its shards are checked now (tokenizer, size), not at the first
      // validation, after steps whose work a refusal then would lose.
      EvalIterator(val_shards, B, T, T, fingerprint);
    }
  }
}

// Micro-batches per step (--total-batch over the ranks), the run's length in steps and the
// learning-rate schedule.
void Trainer::Impl::plan_batches_and_length() {
  const int T = cfg.seq_len;
  // --total-batch 0 is one micro-batch per rank; a run resumed from a checkpoint that recorded 0
  // was trained in one process (before the data-parallel runs, which record the resolved value).
  if (cfg.total_batch_tokens == 0) cfg.total_batch_tokens = uint64_t(resumed ? 1 : ranks) * micro_tokens();
  const uint64_t micro_batches = cfg.total_batch_tokens / micro_tokens();
  INPUT_CHECK(micro_batches <= uint64_t(std::numeric_limits<int>::max()),
              "--total-batch {} tokens is {} micro-batches of --batch-size x --seq-len = {} tokens, more than the {} "
              "a step can count",
              cfg.total_batch_tokens, micro_batches, micro_tokens(), std::numeric_limits<int>::max());
  accum = int(micro_batches);
  INPUT_CHECK(resumed || accum % ranks == 0,
              "--total-batch {} tokens is {} micro-batch(es) of --batch-size x --seq-len = {} tokens, which {} ranks "
              "cannot share evenly: give a multiple of {} tokens",
              cfg.total_batch_tokens, accum, micro_tokens(), ranks, uint64_t(ranks) * micro_tokens());
  INPUT_CHECK(accum % ranks == 0,
              "checkpoint {} continues a run of {} micro-batch(es) of {} x {} tokens per step, which {} ranks cannot "
              "share evenly: resume it with a number of ranks that divides {}",
              origin, accum, cfg.batch_size, cfg.seq_len, ranks, accum);
  const uint64_t epoch_tokens = train_loader->windows_per_epoch() * uint64_t(T);
  // A run's steps are counted as AdamW's int step, and its tokens in 64 bits: a length past either
  // is refused, in the unit it was given, before it could wrap into a short run.
  const uint64_t max_steps = std::min<uint64_t>(std::numeric_limits<int>::max() - 1,
                                                std::numeric_limits<uint64_t>::max() / step_tokens());
  double steps = 0;
  std::string given;
  if (cfg.steps) steps = double(cfg.steps), given = format("--steps {}", cfg.steps);
  if (cfg.tokens) {
    steps = double(cfg.tokens / step_tokens() + (cfg.tokens % step_tokens() != 0));
    given = format("--tokens {}", cfg.tokens);
  }
  if (cfg.epochs > 0) {
    steps = std::ceil(cfg.epochs * double(epoch_tokens) / double(step_tokens()));
    given = format("--epochs {}", cfg.epochs);
  }
  INPUT_CHECK(steps <= double(max_steps), "{} is a run of {} steps of {} tokens, more than the {} a run can count",
              given, steps, step_tokens(), max_steps);
  total_steps = std::max<uint64_t>(uint64_t(steps), 1);

  schedule.max_lr = cfg.lr;
  schedule.min_lr = cfg.lr * cfg.min_lr_ratio;
  schedule.warmup_steps = cfg.warmup_steps;
  schedule.total_steps = total_steps;
  schedule.decay = parse_lr_decay(cfg.schedule);
  validate(schedule);
}

// The intervals measured against the run's length, after the run's own checks (a resumed run
// already at its end is told so, not that its recorded --eval-every is longer than the run). The
// default --eval-every that no flag gave is no error in a shorter run: it validates at the end.
void Trainer::Impl::check_intervals() const {
  INPUT_CHECK(val_shards.empty() || cfg.eval_every <= total_steps || !cfg.eval_every_given,
              "--eval-every {} is longer than the run ({} steps): no evaluation would happen before the end",
              cfg.eval_every, total_steps);
  INPUT_CHECK(cfg.checkpoint_every <= total_steps, "--checkpoint-every {} is longer than the run ({} steps)",
              cfg.checkpoint_every, total_steps);
  INPUT_CHECK(cfg.stop_at_step <= total_steps, "--stop-at-step {} is beyond the end of the run ({} steps)",
              cfg.stop_at_step, total_steps);
  INPUT_CHECK(cfg.sample_every <= total_steps, "--sample-every {} is longer than the run ({} steps)",
              cfg.sample_every, total_steps);
}

// A resume continues from the newest of this run's checkpoints; a new run starts in a directory
// without any.
void Trainer::Impl::check_run_directory(const CheckpointInfo& ckpt) {
  // Found now, not at the first save after the run's steps.
  std::error_code ec;
  INPUT_CHECK(!fs::exists(checkpoint_dir(), ec) || fs::is_directory(checkpoint_dir(), ec),
              "run directory {}: {} is not a directory, where the run's checkpoints go: move it away, or choose "
              "another --run-dir",
              cfg.run_dir, checkpoint_dir().string());
  // The files the run writes there: a folder in the place of one fails its first write.
  for (const char* file : {"config.json", "metrics.jsonl", "samples.txt"}) {
    const fs::path path = fs::path(cfg.run_dir) / file;
    INPUT_CHECK(!fs::is_directory(path, ec),
                "run directory {}: {} is a directory, where the run writes its {}: move it away, or choose another "
                "--run-dir",
                cfg.run_dir, path.string(), file);
  }
  if (resumed) {
    INPUT_CHECK(ckpt.step < total_steps,
                "checkpoint {} is at step {}, already the end of this run ({} steps): give a longer run to continue",
                origin, ckpt.step, total_steps);
    INPUT_CHECK(cfg.stop_at_step == 0 || cfg.stop_at_step > ckpt.step,
                "--stop-at-step {} is not after the checkpoint's step {}", cfg.stop_at_step, ckpt.step);
    // The run directory's checkpoints must be this run's past: ones of another run would be
    // overwritten and pruned, and ones after the checkpoint (an older one resumed) would be taken
    // for the newest by --keep-checkpoints and by the next --resume of the directory.
    const fs::path own = fs::weakly_canonical(fs::absolute(origin).parent_path(), ec);
    for (const fs::path& found : step_checkpoints(checkpoint_dir())) {
      INPUT_CHECK(fs::weakly_canonical(found.parent_path(), ec) == own,
                  "run directory {} holds checkpoints of another run ({}): continue {} in a --run-dir of its own",
                  cfg.run_dir, found.string(), origin);
      INPUT_CHECK(*checkpoint_step_of(found) <= ckpt.step,
                  "run directory {} holds a checkpoint after step {}, the one resumed: {}; continuing from step {} "
                  "would mix two histories. Move the later checkpoints out of {}, or continue in another --run-dir",
                  cfg.run_dir, ckpt.step, found.string(), ckpt.step, checkpoint_dir().string());
    }
  } else {
    INPUT_CHECK(step_checkpoints(checkpoint_dir()).empty(),
                "run directory {} already holds checkpoints of an earlier run: continue it with --resume {}, or "
                "choose another --run-dir",
                cfg.run_dir, cfg.run_dir);
  }
}

// The model on the backend, its weights (and, resumed, the optimizer state and data position)
// from the checkpoint, streamed into the model, or freshly initialised.
void Trainer::Impl::build_model(const CheckpointInfo& ckpt, CheckpointReader* origin_file) {
  const int B = cfg.batch_size, T = cfg.seq_len;
  ModelOptions options;
  options.recompute_gelu = cfg.recompute_gelu;
  options.classifier_rows = cfg.classifier_rows;
  options.fp32_gradients = cfg.grad_dtype == "fp32";  // no effect in fp32
  options.cuda_graphs = cfg.cuda_graphs;
  options.data_parallel = ranks > 1 ? data_parallel : nullptr;
  options.shard_optimizer = cfg.zero_stage == 1;
  model = std::make_unique<GPT2>(mcfg, backend, B, T, ModelMode::training, options);
  if (origin_file) {
    reading_origin([&] { read_into_model(*origin_file, *model, resumed); });
    const std::optional<uint64_t> checksum = origin_file->checksum();
    origin_identity = {{"path", origin},
                       {"step", ckpt.step},
                       {"checksum", checksum ? nlohmann::json(fingerprint_hex(*checksum)) : nlohmann::json(nullptr)}};
  } else {
    model->init_weights(cfg.seed);
  }
  if (resumed) {
    step = ckpt.step;
    tokens_seen = ckpt.tokens_seen;
    skipped_steps = ckpt.skipped_steps;
    // The loader's position: restored, and the data checked to be the run's, in
    // open_data_and_model, before the checkpoint's arrays are read.
    last_saved = step;
    finite_step = step;
  }
  inputs.resize(micro_tokens());
  targets.resize(inputs.size());
}

void Trainer::Impl::find_mfu_peak() {
  flops_per_token = training_flops_per_token(mcfg, cfg.seq_len);
  if (backend.kind() != DeviceKind::cuda) return;
  const std::string device = backend.device_name();
  const DevicePeaks peaks = lookup_device_peaks(device);
  const char* kind = matmul_peak_kind(backend.dtype());
  peak_tflops = matmul_peak_tflops(peaks, backend.dtype());
  if (peak_tflops) {
    mfu_basis = format("MFU: {} MFLOP per token (6N + 6*L*C*T) against the {} {} peak, {} TFLOP/s{}",
                       flops_per_token / 1e6, peaks.name, kind, *peak_tflops,
                       ranks > 1 ? format(" per GPU x {} ranks", ranks) : std::string());
  } else if (peaks.matched) {
    mfu_basis = format("MFU: n/a (the GPU peak table, benchmarks/gpu/peaks.json, has no confirmed {} peak for the {})",
                       kind, peaks.name);
  } else {
    mfu_basis = format("MFU: n/a ({} is not in the GPU peak table, benchmarks/gpu/peaks.json)", device);
  }
}

}  // namespace gpt2cc
