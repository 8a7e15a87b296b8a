// The training loop (see core/trainer.hpp): setup and validation of a run, the optimizer step
// with gradient accumulation, evaluation, metrics, samples, checkpoints and stop signals.
#include "core/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/device_peaks.hpp"
#include "core/hf_gpt2.hpp"
#include "core/metrics.hpp"
#include "core/grad_clip.hpp"
#include "core/rng.hpp"
#include "core/signal_cleanup.hpp"

namespace gpt2cc {

namespace fs = std::filesystem;

uint64_t dropout_seed(uint64_t seed, uint64_t micro_step) { return splitmix64(seed ^ splitmix64(micro_step)); }

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path;
  INPUT_CHECK(fs::is_directory(path, ec), "checkpoint {} does not exist", path);
  for (const fs::path& dir : {fs::path(path) / "checkpoints", fs::path(path)}) {
    auto found = step_checkpoints(dir);
    if (!found.empty()) return found.back().string();
  }
  // A directory of Hugging Face weights (without step checkpoints: those win), which
  // load_checkpoint refuses to --resume by name.
  if (is_hf_gpt2(path)) return path;
  // A run's config.json (train writes it before the first step) holds its flags under "train"; a
  // Hugging Face model's config.json (weights missing) does not.
  bool configured = false;
  if (std::ifstream in(fs::path(path) / "config.json"); in) {
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    configured = j.is_object() && j.contains("train");
  }
  fail_input(format("no checkpoint (step_*.ckpt) in run directory {} or its checkpoints/ folder{}", path,
                    configured ? ": the run stopped before its first checkpoint; start it again with its flags "
                                 "(config.json there lists them) and the same --run-dir"
                               : ""));
}

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
  std::unique_ptr<DataLoader> train_loader, val_loader;
  uint64_t fingerprint = 0;
  std::string tokenizer_dir, origin;
  int accum = 1;  // micro-batches per step over all ranks; rank r runs those k with k % ranks == r
  int eval_batches = 0;
  uint64_t total_steps = 0;
  LrSchedule schedule;
  uint64_t step = 0, tokens_seen = 0;
  int bad_streak = 0;
  // The newest step whose parameters gave a finite loss and gradient norm (the run's start until
  // a step has): the checkpoints after it may hold diverged weights, so pruning keeps the newest
  // one up to it, and a run stopped by --max-bad-steps names it.
  uint64_t finite_step = 0;
  EvalResult last_eval;
  uint64_t last_eval_step = 0;
  bool resumed = false;
  uint64_t last_saved = UINT64_MAX;
  std::vector<int> inputs, targets;  // accum micro-batches of B x T
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
  fs::path checkpoint_dir() const { return fs::path(cfg.run_dir) / "checkpoints"; }
  // The newest of the run's step checkpoints `all` (step_checkpoints, oldest first) at or before
  // finite_step: its position in `all`, or none.
  std::optional<size_t> newest_finite_checkpoint(const std::vector<fs::path>& all) const {
    for (size_t i = all.size(); i-- > 0;)
      if (*checkpoint_step_of(all[i]) <= finite_step) return i;
    return std::nullopt;
  }
  bool from_checkpoint() const { return !cfg.resume.empty() || !cfg.init_from.empty(); }
  // setup(), in order: each step reads what the ones before it set.
  void setup();
  Checkpoint load_origin();
  void open_data_and_model(const Checkpoint& ckpt);
  void plan_batches_and_length();
  void check_run_directory(const Checkpoint& ckpt);
  void build_model(const Checkpoint& ckpt);
};

void Trainer::Impl::setup() {
  validate(cfg);
  INPUT_CHECK(!cfg.eval_only, "Trainer runs training; --eval-only is handled by evaluate_checkpoint (train_tasks.cpp)");
  const Checkpoint ckpt = load_origin();
  open_data_and_model(ckpt);
  plan_batches_and_length();
  check_run_directory(ckpt);
  build_model(ckpt);
  find_mfu_peak();
}

// The checkpoint the run starts from (--resume: the run's newest, with its optimizer state;
// --init-from: weights only), or an empty one for a new model.
Checkpoint Trainer::Impl::load_origin() {
  Checkpoint ckpt;
  if (!from_checkpoint()) return ckpt;
  resumed = !cfg.resume.empty();
  origin = resumed ? resolve_checkpoint(cfg.resume) : cfg.init_from;
  ckpt = load_checkpoint(origin, resumed);
  // Shape flags may repeat the checkpoint's shape (a resumed run's saved flags do), not change it.
  check_shape_flags(cfg, ckpt.config, origin);
  INPUT_CHECK(!resumed || (!ckpt.m.empty() && !ckpt.v.empty()),
              "checkpoint {} has no optimizer state, so it cannot be resumed exactly: use --init-from to "
              "fine-tune from it", origin);
  return ckpt;
}

// The training data and the model's shape: the checkpoint's, or the preset's with the shape flags
// and the data's vocabulary; the validation data checked against both.
void Trainer::Impl::open_data_and_model(const Checkpoint& ckpt) {
  const int B = cfg.batch_size, T = cfg.seq_len;
  train_shards = list_shards(cfg.train_data);
  train_loader = std::make_unique<DataLoader>(train_shards, B, T,
                                              cfg.shuffle ? LoaderOrder::shuffled : LoaderOrder::sequential,
                                              cfg.seed, ckpt.tokenizer_fingerprint, true);
  fingerprint = train_loader->tokenizer_fingerprint();
  // Recorded absolute: generate and --export-hf read it from other working directories.
  tokenizer_dir = cfg.tokenizer_dir.empty() ? ckpt.tokenizer_dir
                                            : fs::absolute(cfg.tokenizer_dir).lexically_normal().string();
  int data_vocab = int(train_loader->vocab_size());

  if (from_checkpoint()) {
    mcfg = ckpt.config;
    if (!resumed) mcfg.dropout = cfg.dropout;
    INPUT_CHECK(mcfg.vocab_size == data_vocab,
                "checkpoint {} is a model with a vocabulary of {} tokens, but the data {} was tokenized with a "
                "vocabulary of {}: prepare the data with the checkpoint's tokenizer",
                origin, mcfg.vocab_size, cfg.train_data, data_vocab);
  } else {
    mcfg = model_preset(cfg.preset);
    if (cfg.layers) mcfg.num_layers = cfg.layers;
    if (cfg.heads) mcfg.num_heads = cfg.heads;
    if (cfg.channels) mcfg.channels = cfg.channels;
    if (cfg.max_seq_len) mcfg.max_seq_len = cfg.max_seq_len;
    mcfg.dropout = cfg.dropout;
    mcfg.vocab_size = data_vocab;
    mcfg.padded_vocab_size = padded_vocab(data_vocab);
    validate(mcfg);
  }
  INPUT_CHECK(T <= mcfg.max_seq_len, "--seq-len {} is longer than the model's maximum sequence length {}{}", T,
              mcfg.max_seq_len, from_checkpoint() ? " (from the checkpoint)" : "");

  if (!cfg.val_data.empty()) {
    val_shards = list_shards(cfg.val_data);
    // The loaders check each split's tokenizer; the vocabulary is the model's, checked here for
    // validation too (a token beyond it would fail the first validation, steps later).
    const uint32_t val_vocab = read_shard_header(val_shards.front()).vocab_size;
    INPUT_CHECK(int(val_vocab) == mcfg.vocab_size,
                "the validation data {} was tokenized with a vocabulary of {} tokens, the model has {}", cfg.val_data,
                val_vocab, mcfg.vocab_size);
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

// Micro-batches per step (--total-batch over the ranks), the run's length in steps, the intervals
// measured against it, and the learning-rate schedule.
void Trainer::Impl::plan_batches_and_length() {
  const int T = cfg.seq_len;
  // --total-batch 0 is one micro-batch per rank; a run resumed from a checkpoint that recorded 0
  // was trained in one process (before the data-parallel runs, which record the resolved value).
  if (cfg.total_batch_tokens == 0) cfg.total_batch_tokens = uint64_t(resumed ? 1 : ranks) * micro_tokens();
  accum = int(cfg.total_batch_tokens / micro_tokens());
  INPUT_CHECK(resumed || accum % ranks == 0,
              "--total-batch {} tokens is {} micro-batch(es) of --batch-size x --seq-len = {} tokens, which {} ranks "
              "cannot share evenly: give a multiple of {} tokens",
              cfg.total_batch_tokens, accum, micro_tokens(), ranks, uint64_t(ranks) * micro_tokens());
  INPUT_CHECK(accum % ranks == 0,
              "checkpoint {} continues a run of {} micro-batch(es) of {} x {} tokens per step, which {} ranks cannot "
              "share evenly: resume it with a number of ranks that divides {}",
              origin, accum, cfg.batch_size, cfg.seq_len, ranks, accum);
  const uint64_t epoch_tokens = train_loader->windows_per_epoch() * uint64_t(T);
  if (cfg.steps) total_steps = cfg.steps;
  if (cfg.tokens) total_steps = (cfg.tokens + step_tokens() - 1) / step_tokens();
  if (cfg.epochs > 0) total_steps = uint64_t(std::ceil(cfg.epochs * double(epoch_tokens) / double(step_tokens())));
  total_steps = std::max<uint64_t>(total_steps, 1);

  INPUT_CHECK(val_shards.empty() || cfg.eval_every <= total_steps,
              "--eval-every {} is longer than the run ({} steps): no evaluation would happen before the end",
              cfg.eval_every, total_steps);
  INPUT_CHECK(cfg.checkpoint_every <= total_steps, "--checkpoint-every {} is longer than the run ({} steps)",
              cfg.checkpoint_every, total_steps);
  INPUT_CHECK(cfg.stop_at_step <= total_steps, "--stop-at-step {} is beyond the end of the run ({} steps)",
              cfg.stop_at_step, total_steps);
  INPUT_CHECK(cfg.sample_every <= total_steps, "--sample-every {} is longer than the run ({} steps)",
              cfg.sample_every, total_steps);

  schedule.max_lr = cfg.lr;
  schedule.min_lr = cfg.lr * cfg.min_lr_ratio;
  schedule.warmup_steps = cfg.warmup_steps;
  schedule.total_steps = total_steps;
  schedule.decay = parse_lr_decay(cfg.schedule);
  validate(schedule);
}

// A resume continues from the newest of this run's checkpoints; a new run starts in a directory
// without any.
void Trainer::Impl::check_run_directory(const Checkpoint& ckpt) {
  if (resumed) {
    INPUT_CHECK(ckpt.step < total_steps,
                "checkpoint {} is at step {}, already the end of this run ({} steps): give a longer run to continue",
                origin, ckpt.step, total_steps);
    INPUT_CHECK(cfg.stop_at_step == 0 || cfg.stop_at_step > ckpt.step,
                "--stop-at-step {} is not after the checkpoint's step {}", cfg.stop_at_step, ckpt.step);
    // The run directory's checkpoints must be this run's past: ones of another run would be
    // overwritten and pruned, and ones after the checkpoint (an older one resumed) would be taken
    // for the newest by --keep-checkpoints and by the next --resume of the directory.
    std::error_code ec;
    const fs::path own = fs::weakly_canonical(fs::path(origin).parent_path(), ec);
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
// from the checkpoint or freshly initialised.
void Trainer::Impl::build_model(const Checkpoint& ckpt) {
  const int B = cfg.batch_size, T = cfg.seq_len;
  ModelOptions options;
  options.recompute_gelu = cfg.recompute_gelu;
  options.cuda_graphs = cfg.cuda_graphs;
  options.data_parallel = ranks > 1 ? data_parallel : nullptr;
  options.shard_optimizer = cfg.zero_stage == 1;
  model = std::make_unique<GPT2>(mcfg, backend, B, T, ModelMode::training, options);
  if (from_checkpoint()) {
    model->set_parameters(ckpt.params);
  } else {
    model->init_weights(cfg.seed);
  }
  if (resumed) {
    model->set_optimizer_state(ckpt.m, ckpt.v);
    step = ckpt.step;
    tokens_seen = ckpt.tokens_seen;
    train_loader->restore(ckpt.loader);
    last_saved = step;
    finite_step = step;
  }
  inputs.resize(size_t(accum) * micro_tokens());
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

Trainer::Trainer(const TrainConfig& config, Backend& backend, DeviceCollectives* data_parallel)
    : impl_(std::make_unique<Impl>(config, backend, data_parallel)) {
  impl_->setup();
}
Trainer::~Trainer() = default;

const TrainConfig& Trainer::config() const { return impl_->cfg; }
GPT2& Trainer::model() { return *impl_->model; }
uint64_t Trainer::step() const { return impl_->step; }
uint64_t Trainer::total_steps() const { return impl_->total_steps; }
int Trainer::accumulation_steps() const { return impl_->accum; }
uint64_t Trainer::tokens_per_step() const { return impl_->step_tokens(); }
bool Trainer::has_validation() const { return !impl_->val_shards.empty(); }
EvalResult Trainer::last_evaluation() const { return impl_->last_eval; }
uint64_t Trainer::last_evaluation_step() const { return impl_->last_eval_step; }

std::string Trainer::summary() const {
  const Impl& s = *impl_;
  const TrainConfig& c = s.cfg;
  std::string out = format("model: {} on {}\n", describe(s.mcfg), s.backend.describe());
  if (!s.origin.empty()) {
    out += format("{} {} (step {})\n", s.resumed ? "resuming from" : "initialised from", s.origin, s.step);
  }
  out += format("train data: {} tokens in {} shard(s), {} windows of {}+1 tokens per epoch\n",
                s.train_loader->num_tokens(), s.train_shards.size(), s.train_loader->windows_per_epoch(), c.seq_len);
  if (!s.val_shards.empty()) {
    const std::string fewer = s.eval_batches < c.eval_batches
                                  ? format(" (all the split holds of the {} --eval-batches asked)", c.eval_batches)
                                  : std::string();
    out += format("validation: {} every {} steps and at the end\n",
                  s.eval_batches > 0 ? format("{} batches{}", s.eval_batches, fewer) : std::string("the whole split"),
                  c.eval_every);
  }
  out += format("batch: B={} x T={} = {} tokens per micro-batch, {} accumulation step(s) -> {} tokens per step\n",
                c.batch_size, c.seq_len, s.micro_tokens(), s.accum, tokens_per_step());
  if (s.ranks > 1) {
    const auto [first, last] = s.model->optimizer_part();
    out += format("data parallel: {} ranks, {} micro-batch(es) each per step; ZeRO stage {}: this rank keeps the AdamW "
                  "moments of {} of {} parameters\n",
                  s.ranks, s.accum / s.ranks, c.zero_stage, last - first, s.model->layout().total());
  }
  out += format("length: {} steps = {} tokens = {} epochs\n", s.total_steps, s.total_steps * tokens_per_step(),
                double(s.total_steps * tokens_per_step()) / double(s.train_loader->windows_per_epoch() * c.seq_len));
  out += format("lr: {} warm-up {} steps, {} decay to {}; AdamW betas ({}, {}) eps {} weight decay {}; clip {}\n",
                c.lr, c.warmup_steps, c.schedule, s.schedule.min_lr, c.beta1, c.beta2, c.eps, c.weight_decay,
                c.grad_clip);
  if (!s.mfu_basis.empty()) out += s.mfu_basis + "\n";
  return out;
}

StepResult Trainer::train_step() {
  Impl& s = *impl_;
  const int B = s.cfg.batch_size, T = s.cfg.seq_len;
  const size_t BT = s.micro_tokens();
  auto t0 = std::chrono::steady_clock::now();

  std::vector<int> in, tg;
  for (int micro = 0; micro < s.accum; ++micro) {
    s.train_loader->next(in, tg);
    std::copy(in.begin(), in.end(), s.inputs.begin() + std::ptrdiff_t(micro * BT));
    std::copy(tg.begin(), tg.end(), s.targets.begin() + std::ptrdiff_t(micro * BT));
  }
  // The objective is the mean over every target of the total batch: count them all first.
  size_t total_targets = size_t(std::count_if(s.targets.begin(), s.targets.end(), [](int t) { return t != -1; }));
  ENSURE(total_targets > 0, "step {}: the batch has no targets", s.step);
  const float dloss = 1.0f / float(total_targets);

  s.model->zero_grad();
  double loss_sum = 0;
  for (int micro = s.rank; micro < s.accum; micro += s.ranks) {
    const uint64_t micro_step = s.step * uint64_t(s.accum) + uint64_t(micro);
    const float factor = dloss_factor_hook ? dloss_factor_hook(s.step, micro) : 1.0f;
    const float loss = s.model->forward_backward(s.inputs.data() + micro * BT, s.targets.data() + micro * BT, B, T,
                                                 dloss * factor, dropout_seed(s.cfg.seed, micro_step));
    loss_sum += double(loss) * s.model->num_targets();
  }
  s.model->reduce_gradients();
  s.group->all_reduce_sum(std::span<double>(&loss_sum, 1));

  StepResult r;
  r.loss = loss_sum / double(total_targets);
  r.grad_norm = s.model->grad_norm();
  r.lr = s.schedule.at(s.step);
  r.skipped = !std::isfinite(r.loss) || !std::isfinite(r.grad_norm);
  if (!r.skipped) {
    AdamWParams hp;
    hp.lr = float(r.lr);
    hp.beta1 = float(s.cfg.beta1);
    hp.beta2 = float(s.cfg.beta2);
    hp.eps = float(s.cfg.eps);
    hp.weight_decay = float(s.cfg.weight_decay);
    hp.step = int(s.step + 1);
    hp.grad_scale = clip_scale(r.grad_norm, s.cfg.grad_clip);
    s.model->adamw_step(hp);
    s.bad_streak = 0;
    s.finite_step = s.step;
  } else {
    s.bad_streak += 1;
  }
  s.step += 1;
  s.tokens_seen += uint64_t(s.accum) * BT;
  r.step = s.step;
  s.backend.synchronize();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

EvalResult Trainer::evaluate() {
  Impl& s = *impl_;
  ENSURE(has_validation(), "evaluate() without validation data");
  const int B = s.cfg.batch_size, T = s.cfg.seq_len;
  if (s.eval_batches > 0) return evaluate_batches(*s.model, *s.val_loader, B, T, s.eval_batches, s.group);
  return evaluate_split(*s.model, s.val_shards, B, T, T, s.fingerprint, s.group);
}

Checkpoint Trainer::checkpoint() const {
  const Impl& s = *impl_;
  Checkpoint c;
  c.config = s.mcfg;
  c.step = s.step;
  c.tokens_seen = s.tokens_seen;
  c.loader = s.train_loader->position();
  c.seed = s.cfg.seed;
  c.tokenizer_fingerprint = s.fingerprint;
  c.tokenizer_dir = s.tokenizer_dir;
  c.train_config = s.cfg;
  c.dtype = s.cfg.dtype;
  c.params = s.model->parameters();
  s.model->optimizer_state(c.m, c.v);
  return c;
}

std::string Trainer::save() {
  Impl& s = *impl_;
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lu.ckpt", static_cast<unsigned long>(s.step));
  fs::path path = s.checkpoint_dir() / name;
  s.last_saved = s.step;
  if (!s.group->is_root()) {
    // This rank's parts of the sharded state to rank 0, in the order checkpoint() gathers them.
    if (s.model->master_sharded()) s.model->parameters();
    if (s.model->optimizer_sharded()) {
      std::vector<float> m, v;
      s.model->optimizer_state(m, v);
    }
  } else {
    const Checkpoint c = checkpoint();
    fs::create_directories(s.checkpoint_dir());
    save_checkpoint(path.string(), c);
    // Older ones go only after the new one is safely in place, but for the newest whose weights
    // gave a finite loss (beyond --keep-checkpoints while the newer ones may have diverged).
    const auto all = step_checkpoints(s.checkpoint_dir());
    const std::optional<size_t> finite = s.newest_finite_checkpoint(all);
    for (size_t i = 0; i + size_t(s.cfg.keep_checkpoints) < all.size(); ++i)
      if (i != finite) fs::remove(all[i]);
    // A temporary of a save that a kill cut short (SIGTERM, then SIGKILL in the stop's save) is
    // never written again when the run continues at other steps: removed here, under the run
    // directory's lock, so no other process is writing it.
    for (const auto& entry : fs::directory_iterator(s.checkpoint_dir())) {
      const std::string file = entry.path().filename().string();
      if (file.ends_with(".tmp") && checkpoint_step_of(file.substr(0, file.size() - 4))) fs::remove(entry.path());
    }
  }
  s.group->barrier();  // on every rank, save() returns with the checkpoint on disk
  return path.string();
}

TrainStop Trainer::run() {
  Impl& s = *impl_;
  const TrainConfig& c = s.cfg;
  const bool root = s.group->is_root();  // writes the run directory and the console; the others train
  fs::path dir(c.run_dir);
  std::optional<MetricsLog> metrics;
  std::optional<ProgressLine> progress;
  if (root) {
    fs::create_directories(dir);
    nlohmann::json saved = {{"train", c},
                            {"model", s.mcfg},
                            {"derived", {{"accumulation_steps", s.accum}, {"tokens_per_step", tokens_per_step()},
                                         {"flops_per_token", s.flops_per_token},
                                         {"peak_tflops_per_gpu", s.peak_tflops ? nlohmann::json(*s.peak_tflops)
                                                                               : nlohmann::json(nullptr)},
                                         {"total_steps", s.total_steps}, {"ranks", s.ranks}}}};
    write_file_atomic((dir / "config.json").string(), saved.dump(2) + "\n");
    metrics.emplace((dir / "metrics.jsonl").string(), s.resumed ? int64_t(s.step) : -1);
    keep_samples_through_step((dir / "samples.txt").string(), s.resumed ? int64_t(s.step) : -1);
    progress.emplace(c.log_every);
  }

  const uint64_t end = c.stop_at_step ? c.stop_at_step : s.total_steps;
  TrainStop reason = end < s.total_steps ? TrainStop::stop_at_step : TrainStop::finished;
  double avg_seconds = 0;  // running mean of step time, for the ETA
  uint64_t timed = 0;
  while (s.step < end) {
    // Every rank stops at the same step, whichever of them got the signal.
    if (s.group->any(stop_signal() != 0)) {
      reason = TrainStop::interrupted;
      break;
    }
    StepResult r = train_step();
    avg_seconds += (r.seconds - avg_seconds) / double(++timed);
    nlohmann::json record = {{"step", r.step},         {"tokens", s.tokens_seen},
                             {"train_loss", r.loss},   {"lr", r.lr},
                             {"grad_norm", r.grad_norm}, {"tokens_per_s", double(tokens_per_step()) / r.seconds},
                             {"ms_per_step", r.seconds * 1e3}, {"skipped", r.skipped}};
    ProgressInfo info{r.step, s.total_steps, r.loss, r.lr, double(tokens_per_step()) / r.seconds,
                      avg_seconds * double(s.total_steps - r.step)};
    info.skipped = r.skipped;
    if (const std::optional<double> mfu = s.mfu(r.seconds)) {
      record["mfu"] = *mfu;
      info.mfu = *mfu;
    }
    if (r.skipped) {
      if (root) {
        progress->message(format("step {}: non-finite {} (loss {}, gradient norm {}): update skipped, {} in a row",
                                 r.step, std::isfinite(r.loss) ? "gradient norm" : "loss", r.loss, r.grad_norm,
                                 s.bad_streak));
      }
      if (s.bad_streak >= c.max_bad_steps) {
        if (root) metrics->write(record);
        const auto all = step_checkpoints(s.checkpoint_dir());
        const std::optional<size_t> finite = s.newest_finite_checkpoint(all);
        std::string where = format("no checkpoint was written up to step {}, the last whose weights gave a finite "
                                   "loss. Try a lower --lr or a --grad-clip",
                                   s.finite_step);
        if (finite) {
          // A resume of it is refused while newer checkpoints of the run are there (two histories).
          const size_t newer = all.size() - *finite - 1;
          const std::string path = all[*finite].string();
          where = format("the last checkpoint whose weights gave a finite loss is {}; to continue from it, {}run "
                         "train --resume {} with a lower --lr or a --grad-clip",
                         path,
                         newer ? format("move the {} newer one(s) out of {}, then ", newer, s.checkpoint_dir().string())
                               : std::string(),
                         shell_quote(path));
        }
        throw Error(format("stopping: {} consecutive steps had a non-finite loss or gradient norm (the last at step "
                           "{}); {}",
                           s.bad_streak, r.step, where));
      }
    }
    if (has_validation() && ((c.eval_every && r.step % c.eval_every == 0) || r.step == s.total_steps)) {
      EvalResult e = evaluate();
      s.last_eval = e;
      s.last_eval_step = r.step;
      record["val_loss"] = e.loss;
      record["val_ppl"] = e.perplexity();
      info.val_loss = e.loss;
    }
    if (root) {
      metrics->write(record);
      progress->update(info);
    }
    if (root && sampler && c.sample_every && r.step % c.sample_every == 0) {
      std::string text = sampler(*s.model, r.step);
      progress->message(format("--- sample at step {} ---\n{}\n---", r.step, text));
      std::ofstream samples(dir / "samples.txt", std::ios::app);
      samples << format("=== step {} ===\n{}\n", r.step, text) << std::flush;
      if (!samples)
        throw Error(format("cannot append the sample of step {} to {}", r.step, (dir / "samples.txt").string()));
    }
    // Not after a skipped step: its weights are the ones that failed (the run's end saves anyway).
    if (!r.skipped && ((c.checkpoint_every && r.step % c.checkpoint_every == 0) || r.step == s.total_steps)) save();
  }
  if (root) progress->finish();
  if (s.last_saved != s.step) save();
  return reason;
}

}  // namespace gpt2cc
