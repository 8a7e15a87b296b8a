// The training loop (see core/trainer.hpp): the optimizer step with gradient accumulation,
// evaluation, metrics, samples, checkpoints and stop signals. The setup and validation of a run
// are in core/trainer_setup.cpp.
#include "core/trainer.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/metrics.hpp"
#include "core/model_checkpoint.hpp"
#include "core/fnv1a.hpp"
#include "core/grad_clip.hpp"
#include "core/rng.hpp"
#include "core/shard.hpp"
#include "core/signal_cleanup.hpp"
#include "core/stopwatch.hpp"
#include "core/trainer_impl.hpp"

namespace gpt2cc {

namespace fs = std::filesystem;

uint64_t dropout_seed(uint64_t seed, uint64_t micro_step) { return splitmix64(seed ^ splitmix64(micro_step)); }

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
  const ModelMemory m = s.model->memory();
  const DType grad_dtype = s.model->options().fp32_gradients ? DType::fp32 : s.model->dtype();
  out += format("memory: {} held by the model: parameters {}, gradients {} ({}), AdamW moments {}, activations {} "
                "(logits {}), backward scratch {}\n",
                human_bytes(double(m.total())), human_bytes(double(m.parameters)), human_bytes(double(m.gradients)),
                dtype_name(grad_dtype), human_bytes(double(m.optimizer)), human_bytes(double(m.activations)),
                human_bytes(double(m.logits)), human_bytes(double(m.scratch)));
  if (!s.origin.empty()) {
    out += format("{} {} (step {})\n", s.resumed ? "resuming from" : "initialised from", s.origin, s.step);
  }
  out += format("train data: {} tokens in {} shard(s), {} windows of {}+1 tokens per epoch\n",
                s.train_loader->num_tokens(), s.train_shards.size(), s.train_loader->windows_per_epoch(), c.seq_len);
  if (!s.val_shards.empty()) {
    const std::string fewer = s.eval_batches < c.eval_batches
                                  ? format(" (all the split holds of the {} --eval-batches asked)", c.eval_batches)
                                  : std::string();
    out += format("validation: {} {}\n",
                  s.eval_batches > 0 ? format("{} batches{}", s.eval_batches, fewer) : std::string("the whole split"),
                  c.eval_every > 0 && c.eval_every < s.total_steps
                      ? format("every {} steps and at the end", c.eval_every)
                      : "at the end only");
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
  const std::string decay = s.schedule.decay == LrDecay::constant
                                ? std::string("then constant")
                                : format("{} decay to {}", c.schedule, s.schedule.min_lr);
  out += format("lr: {} warm-up {} steps, {}; AdamW betas ({}, {}) eps {} weight decay {}; clip {}\n", c.lr,
                c.warmup_steps, decay, c.beta1, c.beta2, c.eps, c.weight_decay, c.grad_clip);
  if (!s.mfu_basis.empty()) out += s.mfu_basis + "\n";
  return out;
}

// FNV-1a over each shard's token count and up to three windows of 4096 tokens (its start, middle
// and end): a shard of other tokens differs there unless it differs only elsewhere.
nlohmann::json split_identity(const std::vector<std::string>& shards) {
  Fnv1a hash;
  uint64_t tokens = 0;
  std::vector<uint32_t> window;
  for (const std::string& path : shards) {
    const MappedShard shard(path);
    const uint64_t n = shard.size(), w = std::min<uint64_t>(n, 4096);
    tokens += n;
    hash.add_u64(n);
    window.resize(w);
    for (const uint64_t begin : {uint64_t(0), (n - w) / 2, n - w}) {
      shard.copy(begin, w, window.data());
      hash.add(window.data(), w * sizeof(uint32_t));
    }
  }
  return {{"shards", shards.size()}, {"tokens", tokens}, {"sampled_contents", fingerprint_hex(hash.h)}};
}

nlohmann::json Trainer::data_identity() const {
  const Impl& s = *impl_;
  return {{"total_steps", s.total_steps},
          {"accumulation_steps", s.accum},
          {"train_data", s.train_identity},
          {"val_data", split_identity(s.val_shards)},
          {"tokenizer_fingerprint", fingerprint_hex(s.fingerprint)},
          {"eval_batches", s.eval_batches},
          {"checkpoint", s.origin_identity}};
}

StepResult Trainer::train_step() {
  Impl& s = *impl_;
  const int B = s.cfg.batch_size, T = s.cfg.seq_len;
  const size_t BT = s.micro_tokens();
  const Stopwatch clock;

  // The objective is the mean over every target of the total batch: a training window's targets
  // are all tokens (none ignored), so that is accum x B x T of them, and the micro-batches are read
  // one at a time (every rank reads them all, to keep its loader in step, and runs its own).
  const size_t total_targets = size_t(s.accum) * BT;
  const float dloss = 1.0f / float(total_targets);

  s.model->zero_grad();
  double loss_sum = 0;
  for (int micro = 0; micro < s.accum; ++micro) {
    s.train_loader->next(s.inputs, s.targets);
    if (micro % s.ranks != s.rank) continue;
    const uint64_t micro_step = s.step * uint64_t(s.accum) + uint64_t(micro);
    const float factor = dloss_factor_hook ? dloss_factor_hook(s.step, micro) : 1.0f;
    const float loss = s.model->forward_backward(s.inputs.data(), s.targets.data(), B, T, dloss * factor,
                                                 dropout_seed(s.cfg.seed, micro_step));
    ENSURE(size_t(s.model->num_targets()) == BT, "step {}: a training batch has ignored targets", s.step);
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
    hp.step = int(s.step - s.skipped_steps + 1);
    hp.grad_scale = clip_scale(r.grad_norm, s.cfg.grad_clip);
    s.model->adamw_step(hp);
    s.bad_streak = 0;
    s.finite_step = s.step;
  } else {
    s.bad_streak += 1;
    s.skipped_steps += 1;
  }
  s.step += 1;
  s.tokens_seen += uint64_t(s.accum) * BT;
  r.step = s.step;
  s.backend.synchronize();
  r.seconds = clock.seconds();
  return r;
}

EvalResult Trainer::evaluate() {
  Impl& s = *impl_;
  ENSURE(has_validation(), "evaluate() without validation data");
  const int B = s.cfg.batch_size, T = s.cfg.seq_len;
  if (s.eval_batches > 0) return evaluate_batches(*s.model, *s.val_loader, B, T, s.eval_batches, s.group);
  return evaluate_split(*s.model, s.val_shards, B, T, T, s.fingerprint, s.group);
}

CheckpointInfo Trainer::Impl::checkpoint_info() const {
  CheckpointInfo c;
  c.config = mcfg;
  c.step = step;
  c.tokens_seen = tokens_seen;
  c.skipped_steps = skipped_steps;
  c.loader = train_loader->position();
  c.seed = cfg.seed;
  c.tokenizer_fingerprint = fingerprint;
  c.tokenizer_dir = tokenizer_dir;
  c.train_config = cfg;
  c.train_data_contents = train_identity.at("sampled_contents").get<std::string>();
  c.dtype = cfg.dtype;
  return c;
}

std::string Trainer::save() {
  Impl& s = *impl_;
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lu.ckpt", static_cast<unsigned long>(s.step));
  fs::path path = s.checkpoint_dir() / name;
  s.last_saved = s.step;
  const bool root = s.group->is_root();
  if (root) fs::create_directories(s.checkpoint_dir());
  save_model_checkpoint(path.string(), s.checkpoint_info(), *s.model, root);
  if (root) {
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

nlohmann::json Trainer::Impl::run_config() const {
  return {{"train", cfg},
          {"model", mcfg},
          {"derived", {{"accumulation_steps", accum}, {"tokens_per_step", step_tokens()},
                       {"flops_per_token", flops_per_token},
                       {"peak_tflops_per_gpu", peak_tflops ? nlohmann::json(*peak_tflops) : nlohmann::json(nullptr)},
                       {"total_steps", total_steps}, {"ranks", ranks}}}};
}

void Trainer::Impl::fail_after_bad_steps(uint64_t at_step) const {
  const auto all = step_checkpoints(checkpoint_dir());
  const std::optional<size_t> finite = newest_finite_checkpoint(all);
  std::string where = format("no checkpoint was written up to step {}, the last whose weights gave a finite loss. "
                             "Try a lower --lr or a --grad-clip",
                             finite_step);
  if (finite) {
    // A resume of it is refused while newer checkpoints of the run are there (two histories).
    const size_t newer = all.size() - *finite - 1;
    const std::string path = all[*finite].string();
    where = format("the last checkpoint whose weights gave a finite loss is {}; to continue from it, {}run train "
                   "--resume {} with a lower --lr or a --grad-clip",
                   path,
                   newer ? format("move the {} newer one(s) out of {}, then ", newer, checkpoint_dir().string())
                         : std::string(),
                   shell_quote(path));
  }
  throw DivergedError(format("stopping: {} consecutive steps had a non-finite loss or gradient norm (the last at "
                             "step {}); {}",
                             bad_streak, at_step, where));
}

namespace {

void append_sample(const fs::path& file, uint64_t step, const std::string& text) {
  std::ofstream samples(file, std::ios::app);
  samples << format("=== step {} ===\n{}\n", step, text) << std::flush;
  if (!samples) throw Error(format("cannot append the sample of step {} to {}", step, file.string()));
}

}  // namespace

TrainStop Trainer::run() {
  Impl& s = *impl_;
  const TrainConfig& c = s.cfg;
  const bool root = s.group->is_root();  // writes the run directory and the console; the others train
  const fs::path dir(c.run_dir);
  std::optional<MetricsLog> metrics;
  std::optional<ProgressLine> progress;
  if (root) {
    fs::create_directories(dir);
    write_file_atomic((dir / "config.json").string(), s.run_config().dump(2) + "\n");
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
        s.fail_after_bad_steps(r.step);
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
      append_sample(dir / "samples.txt", r.step, text);
    }
    // Not after a skipped step: its weights are the ones that failed (the run's end saves anyway).
    if (!r.skipped && ((c.checkpoint_every && r.step % c.checkpoint_every == 0) || r.step == s.total_steps)) save();
  }
  if (root) progress->finish();
  if (s.last_saved != s.step) save();
  return reason;
}

}  // namespace gpt2cc
