// TrainConfig: range validation with the flag's name, JSON (saved in the run directory and in
// every checkpoint), and the listing printed at the start of a run.
#include "core/train_config.hpp"

#include <cmath>
#include <limits>
#include <type_traits>
#include <tuple>
#include <nlohmann/json.hpp>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/json_number.hpp"

namespace gpt2cc {

// Every field, once: JSON keys are the field names. Keys missing from a saved config keep their
// defaults, so a checkpoint written before a field existed still loads.
#define GPT2CC_TRAIN_CONFIG_FIELDS(X) X(preset) X(layers) X(heads) X(channels) X(max_seq_len) X(dropout) \
   X(init_from) X(resume) X(device) X(threads) X(cuda_device) X(dtype) X(grad_dtype) X(recompute_gelu) \
   X(classifier_rows) X(cuda_graphs) X(zero_stage) X(train_data) X(val_data) X(shuffle) X(seed) \
   X(batch_size) X(seq_len) X(total_batch_tokens) X(lr) X(min_lr_ratio) X(warmup_steps) X(schedule) X(beta1) \
   X(beta2) X(eps) X(weight_decay) X(grad_clip) X(steps) X(epochs) X(tokens) X(stop_at_step) X(eval_every) \
   X(eval_batches) X(eval_only) X(eval_stride) X(run_dir) X(checkpoint_every) X(keep_checkpoints) \
   X(log_every) X(max_bad_steps) X(tokenizer_dir) X(sample_every) X(sample_tokens) X(export_hf)

namespace {
template <class T>
const T& json_value(const T& value) {
  return value;
}
double json_value(float value) { return shortest_double(value); }
}  // namespace

void to_json(nlohmann::json& j, const TrainConfig& c) {
  j = nlohmann::json::object();
#define X(field) j[#field] = json_value(c.field);
  GPT2CC_TRAIN_CONFIG_FIELDS(X)
#undef X
}

namespace {
// A saved setting read back as what its field holds: a number of another kind (2.5 or -1 for a
// count, 2^31 for an int) is refused instead of truncated or wrapped.
template <class T>
void read_setting(const nlohmann::json& j, const char* key, T& field) {
  const nlohmann::json& v = j.at(key);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    const std::optional<T> n = whole_number<T>(v);
    INPUT_CHECK(n.has_value(), "saved setting \"{}\" must be a whole number from {} to {}, got {}", key,
                std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), v.dump());
    field = *n;
  } else if constexpr (std::is_floating_point_v<T>) {
    INPUT_CHECK(v.is_number(), "saved setting \"{}\" must be a number, got {}", key, v.dump());
    field = v.get<T>();
  } else {
    v.get_to(field);
  }
}
}  // namespace

void from_json(const nlohmann::json& j, TrainConfig& c) {
#define X(field) \
  if (j.contains(#field)) read_setting(j, #field, c.field);
  GPT2CC_TRAIN_CONFIG_FIELDS(X)
#undef X
}

void validate(const TrainConfig& c, int ranks) {
  INPUT_CHECK(c.layers >= 0, "--layers must be >= 0 (0 keeps the preset's), got {}", c.layers);
  INPUT_CHECK(c.heads >= 0, "--heads must be >= 0 (0 keeps the preset's), got {}", c.heads);
  INPUT_CHECK(c.channels >= 0, "--channels must be >= 0 (0 keeps the preset's), got {}", c.channels);
  INPUT_CHECK(c.max_seq_len >= 0, "--max-seq-len must be >= 0 (0 keeps the preset's), got {}", c.max_seq_len);
  // A value typed below 1 may round to 1 as a float (0.99999999): the message says which is the largest.
  INPUT_CHECK(c.dropout >= 0.0f && c.dropout < 1.0f,
              "--dropout must be in [0, 1) (a float: 0.99999994 at most), got {}", c.dropout);
  INPUT_CHECK(c.init_from.empty() || c.resume.empty(), "--init-from and --resume cannot be combined");
  INPUT_CHECK(c.device == "cpu" || c.device == "cuda", "--device must be cpu or cuda, got '{}'", c.device);
  check_thread_count(c.threads);
  INPUT_CHECK(c.cuda_device >= 0, "--cuda-device must be >= 0, got {}", c.cuda_device);
  parse_dtype(c.dtype);
  INPUT_CHECK(c.grad_dtype == "auto" || c.grad_dtype == "bf16" || c.grad_dtype == "fp32",
              "--grad-dtype must be auto, bf16 or fp32, got '{}'", c.grad_dtype);
  // The training run's checks of flags --eval-only and --export-hf ignore are left to their task
  // (train's check_task_flags names them as doing nothing there, not as wanting another flag).
  const bool training = !c.eval_only && c.export_hf.empty();
  INPUT_CHECK(!training || !(c.grad_dtype == "bf16" && parse_dtype(c.dtype) == DType::fp32),
              "--grad-dtype bf16 needs --dtype bf16: fp32 training keeps fp32 gradients");
  INPUT_CHECK(c.classifier_rows >= 0, "--classifier-rows must be >= 0 (0: all rows at once), got {}",
              c.classifier_rows);

  INPUT_CHECK(c.zero_stage == 0 || c.zero_stage == 1, "--zero-stage must be 0 or 1, got {}", c.zero_stage);

  INPUT_CHECK(c.batch_size >= 1, "--batch-size must be >= 1, got {}", c.batch_size);
  INPUT_CHECK(c.seq_len >= 1, "--seq-len must be >= 1, got {}", c.seq_len);
  uint64_t micro_tokens = uint64_t(c.batch_size) * uint64_t(c.seq_len);
  // With ranks the message names the multiple a new run needs; the ranks' share itself is checked
  // with the run's plan (a resumed run's steps need not split as a new run's).
  const std::string ranks_factor = ranks == 1 ? "" : "ranks x ", ranks_value = ranks == 1 ? "" : format("{} x ", ranks);
  INPUT_CHECK(c.total_batch_tokens % micro_tokens == 0,
              "--total-batch ({} tokens) must be a multiple of {}--batch-size x --seq-len = {}{} x {} = {}",
              c.total_batch_tokens, ranks_factor, ranks_value, c.batch_size, c.seq_len, uint64_t(ranks) * micro_tokens);

  INPUT_CHECK(std::isfinite(c.lr) && c.lr > 0, "--lr must be a finite number > 0, got {}", c.lr);
  INPUT_CHECK(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1, "--min-lr-ratio must be in [0, 1], got {}",
              c.min_lr_ratio);
  parse_lr_decay(c.schedule);
  INPUT_CHECK(c.beta1 >= 0 && c.beta1 < 1, "--beta1 must be in [0, 1), got {}", c.beta1);
  INPUT_CHECK(c.beta2 >= 0 && c.beta2 < 1, "--beta2 must be in [0, 1), got {}", c.beta2);
  INPUT_CHECK(c.eps > 0 && std::isfinite(c.eps), "--eps must be > 0, got {}", c.eps);
  INPUT_CHECK(c.weight_decay >= 0 && std::isfinite(c.weight_decay), "--weight-decay must be >= 0, got {}",
              c.weight_decay);
  // AdamW takes them as floats: --beta1 0.99999999 would be 1 there, --eps 1e-50 would be 0.
  for (auto [flag, value, upper] : {std::tuple{"--lr", c.lr, false}, std::tuple{"--beta1", c.beta1, true},
                                    std::tuple{"--beta2", c.beta2, true}, std::tuple{"--eps", c.eps, false},
                                    std::tuple{"--weight-decay", c.weight_decay, false}}) {
    const float f = float(value);
    INPUT_CHECK(std::isfinite(f) && (f > 0 || value == 0) && (!upper || f < 1),
                "{} {} is {} as the float AdamW computes with, outside the flag's range: give a value further inside",
                flag, nlohmann::json(value).dump(), f);
  }
  INPUT_CHECK(c.grad_clip >= 0 && std::isfinite(c.grad_clip), "--grad-clip must be >= 0 (0: off), got {}",
              c.grad_clip);

  INPUT_CHECK(c.epochs >= 0 && std::isfinite(c.epochs), "--epochs must be > 0, got {}", c.epochs);
  if (!c.export_hf.empty()) {
    INPUT_CHECK(!c.init_from.empty() || !c.resume.empty(),
                "--export-hf needs the checkpoint to export: give it with --init-from (or --resume)");
    INPUT_CHECK(!c.eval_only, "--export-hf and --eval-only are separate runs: give one of them");
  } else if (!c.eval_only) {
    int given = (c.steps > 0) + (c.epochs > 0) + (c.tokens > 0);
    INPUT_CHECK(given == 1, "give the run length with exactly one of --steps, --epochs, --tokens ({} given)",
                given);
    INPUT_CHECK(!c.train_data.empty(), "--train-data is required (token shards written by prepare)");
  } else {
    INPUT_CHECK(!c.val_data.empty(), "--eval-only needs --val-data: the split to evaluate");
    INPUT_CHECK(!c.init_from.empty() || !c.resume.empty(),
                "--eval-only needs a checkpoint to evaluate: give it with --init-from (or --resume)");
  }
  INPUT_CHECK(c.eval_batches >= 0, "--eval-batches must be >= 0 (0: the whole split), got {}", c.eval_batches);
  INPUT_CHECK(c.eval_stride == 0 || !training,
              "--eval-stride {} sets --eval-only's window stride; a training run's evaluation takes non-overlapping "
              "windows: drop it, or add --eval-only",
              c.eval_stride);
  INPUT_CHECK(c.eval_stride >= 0 && c.eval_stride <= c.seq_len,
              "--eval-stride must be in 1..--seq-len = {} (0: non-overlapping windows), got {}", c.seq_len,
              c.eval_stride);
  INPUT_CHECK(!c.run_dir.empty(), "--run-dir must not be empty");
  INPUT_CHECK(c.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1, got {}", c.keep_checkpoints);
  INPUT_CHECK(c.log_every >= 1, "--log-every must be >= 1, got {}", c.log_every);
  INPUT_CHECK(c.max_bad_steps >= 1, "--max-bad-steps must be >= 1, got {}", c.max_bad_steps);
  INPUT_CHECK(c.sample_every == 0 || !training || !c.tokenizer_dir.empty(),
              "--sample-every needs --tokenizer (the directory to decode samples with)");
  INPUT_CHECK(c.sample_tokens >= 1, "--sample-tokens must be >= 1, got {}", c.sample_tokens);
}

std::string describe(const TrainConfig& c) {
  nlohmann::json j = c;
  std::string out;
  for (auto it = j.begin(); it != j.end(); ++it) out += format("  {} = {}\n", it.key(), it.value().dump());
  return out;
}

ModelConfig preset_shape(const TrainConfig& c) {
  ModelConfig m = model_preset(c.preset);
  if (c.layers) m.num_layers = c.layers;
  if (c.heads) m.num_heads = c.heads;
  if (c.channels) m.channels = c.channels;
  if (c.max_seq_len) m.max_seq_len = c.max_seq_len;
  return m;
}

void check_shape_flags(const TrainConfig& c, const ModelConfig& m, const std::string& origin, bool preset_given) {
  for (auto [flag, given, has] : {std::tuple{"--layers", c.layers, m.num_layers},
                                  std::tuple{"--heads", c.heads, m.num_heads},
                                  std::tuple{"--channels", c.channels, m.channels},
                                  std::tuple{"--max-seq-len", c.max_seq_len, m.max_seq_len}}) {
    INPUT_CHECK(given == 0 || given == has, "the model shape comes from the checkpoint {}: {} {} differs from its {}",
                origin, flag, given, has);
  }
  if (!preset_given) return;
  const ModelConfig p = preset_shape(c);
  INPUT_CHECK(p.num_layers == m.num_layers && p.num_heads == m.num_heads && p.channels == m.channels &&
                  p.max_seq_len == m.max_seq_len,
              "the model shape comes from the checkpoint {} (L={} NH={} C={} maxT={}): --preset {} is L={} NH={} C={} "
              "maxT={}; drop --preset",
              origin, m.num_layers, m.num_heads, m.channels, m.max_seq_len, c.preset, p.num_layers, p.num_heads,
              p.channels, p.max_seq_len);
}

}  // namespace gpt2cc
