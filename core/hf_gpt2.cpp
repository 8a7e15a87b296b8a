// Hugging Face GPT-2 weights <-> gpt2cc's parameter layout (names and layouts in core/hf_gpt2.hpp).
#include "core/hf_gpt2.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <set>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/json_number.hpp"
#include "core/tokenizer_files.hpp"
#include "core/params.hpp"
#include "core/safetensors.hpp"

namespace gpt2cc {
namespace {

namespace fs = std::filesystem;
using safetensors::shape_text;

constexpr const char* kWeightsFile = "model.safetensors";
constexpr const char* kShardIndex = "model.safetensors.index.json";  // weights split over several files

// The per-layer tensors: Hugging Face's name after "h.<i>.", gpt2cc's parameter, and whether the
// weight is a Conv1D [in, out] matrix to transpose into gpt2cc's (out, in).
struct LayerTensor {
  const char* hf_name;
  Param param;
  bool transpose;
};
constexpr LayerTensor kLayerTensors[] = {
    {"ln_1.weight", Param::ln1w, false},          {"ln_1.bias", Param::ln1b, false},
    {"attn.c_attn.weight", Param::qkvw, true},    {"attn.c_attn.bias", Param::qkvb, false},
    {"attn.c_proj.weight", Param::attprojw, true}, {"attn.c_proj.bias", Param::attprojb, false},
    {"ln_2.weight", Param::ln2w, false},          {"ln_2.bias", Param::ln2b, false},
    {"mlp.c_fc.weight", Param::fcw, true},        {"mlp.c_fc.bias", Param::fcb, false},
    {"mlp.c_proj.weight", Param::fcprojw, true},  {"mlp.c_proj.bias", Param::fcprojb, false},
};

// The shape of a layer tensor as Hugging Face stores it: transposed weights as [in, out].
std::vector<size_t> hf_shape(const ParamTensor& t, bool transpose) {
  std::vector<size_t> shape(t.shape.begin() + 1, t.shape.end());  // one layer's slice
  if (transpose) std::swap(shape[0], shape[1]);
  return shape;
}

// dst (rows x cols, row-major) = src^T, src (cols x rows).
void transpose_into(float* dst, const float* src, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) dst[r * cols + c] = src[c * rows + r];
}

// Every tensor gpt2cc needs: its name, its shape as Hugging Face lays it out, where it goes.
struct Part {
  std::string name;
  std::vector<size_t> shape;
  size_t offset;  // in gpt2cc's buffer
  bool transpose;
};

// Whether `name` is a causal-mask buffer older exports keep beside a layer's weights (no
// parameters): <prefix>h.<layer>.attn.bias or .attn.masked_bias, for a layer the model has, under the
// prefix of the file's other tensors.
bool mask_buffer(std::string_view name, const std::string& prefix, int layers) {
  if (!name.starts_with(prefix + "h.")) return false;
  name.remove_prefix(prefix.size() + 2);
  // The layer as transformers writes it: digits, no sign, no leading zero.
  const size_t digits = std::min(name.find_first_not_of("0123456789"), name.size());
  if (digits == 0 || (digits > 1 && name.front() == '0')) return false;
  int layer = -1;
  const auto [end, error] = std::from_chars(name.data(), name.data() + digits, layer);
  const std::string_view rest = name.substr(digits);
  return error == std::errc() && layer < layers && (rest == ".attn.bias" || rest == ".attn.masked_bias");
}

// fn(part) for every tensor of a GPT-2 of `cfg`, names after `prefix`, one at a time in gpt2cc's
// parameter order (core/params.hpp: wte, wpe, then each per-layer parameter for every layer in
// turn, ln_f), so by increasing offset. wte's part is its V rows; the padded ones are not stored.
template <class F>
void for_each_part(const ModelConfig& cfg, const std::string& prefix, F&& fn) {
  const ParameterLayout layout(cfg);
  const size_t L = size_t(cfg.num_layers);
  fn(Part{prefix + "wte.weight", {size_t(cfg.vocab_size), size_t(cfg.channels)}, layout[Param::wte].offset, false});
  fn(Part{prefix + "wpe.weight", layout[Param::wpe].shape, layout[Param::wpe].offset, false});
  for (const LayerTensor& lt : kLayerTensors) {
    const ParamTensor& t = layout[lt.param];
    for (size_t l = 0; l < L; ++l)
      fn(Part{prefix + "h." + std::to_string(l) + "." + lt.hf_name, hf_shape(t, lt.transpose),
              t.offset + l * (t.numel / L), lt.transpose});
  }
  fn(Part{prefix + "ln_f.weight", layout[Param::lnfw].shape, layout[Param::lnfw].offset, false});
  fn(Part{prefix + "ln_f.bias", layout[Param::lnfb].shape, layout[Param::lnfb].offset, false});
}

fs::path weights_path(const std::string& path) {
  return fs::is_directory(path) ? fs::path(path) / kWeightsFile : fs::path(path);
}

// The directory the weights file is in (config.json and any tokenizer beside it).
fs::path weights_dir(const fs::path& weights) {
  return weights.parent_path().empty() ? fs::path(".") : weights.parent_path();
}

nlohmann::json read_config(const fs::path& file) {
  // A config is a few hundred bytes.
  const std::string text =
      read_whole_file(file.string(), "the Hugging Face model's config (beside its weights)", 16u << 20);
  nlohmann::json j = safetensors::parse_untrusted_json(text, 8);
  INPUT_CHECK(!j.is_discarded() && j.is_object(), "{} is not a JSON object (or nests deeper than a config does)",
              file.string());
  return j;
}

// Typed reads of config.json's fields: a field of another type is refused naming the file and key
// (nlohmann's own type_error would say neither).
struct ConfigReader {
  const nlohmann::json& j;
  const std::string& file;

  const nlohmann::json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  std::string string(const char* key, const char* fallback) const {
    const nlohmann::json* v = find(key);
    if (v == nullptr) return fallback;
    INPUT_CHECK(v->is_string(), "{}: \"{}\" must be a string, got a JSON {}", file, key, v->type_name());
    return v->get<std::string>();
  }
  double number(const char* key, double fallback) const {
    const nlohmann::json* v = find(key);
    if (v == nullptr) return fallback;
    INPUT_CHECK(v->is_number(), "{}: \"{}\" must be a number, got a JSON {}", file, key, v->type_name());
    return v->get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    const nlohmann::json* v = find(key);
    if (v == nullptr) return fallback;
    INPUT_CHECK(v->is_boolean(), "{}: \"{}\" must be true or false, got a JSON {}", file, key, v->type_name());
    return v->get<bool>();
  }
  // A required integer in [1, max] under `key` or its other names (`aliases`: transformers'
  // attribute_map, num_hidden_layers for n_layer, ...). Where several are given they must agree:
  // transformers takes the alias, which would otherwise build another model than gpt2cc's.
  int integer(const char* key, long long max, std::initializer_list<const char*> aliases = {}) const {
    const nlohmann::json* v = find(key);
    const char* name = key;
    for (const char* alias : aliases) {
      const nlohmann::json* a = find(alias);
      if (a == nullptr) continue;
      INPUT_CHECK(v == nullptr || *v == *a, "{}: \"{}\" is {} and \"{}\" is {}: they name the same size; give one",
                  file, name, v ? v->dump() : "", alias, a->dump());
      if (v == nullptr) v = a, name = alias;
    }
    // A whole number past 64 bits reads as a float: named as the out-of-range number it is.
    INPUT_CHECK(v == nullptr || !v->is_number_float() || std::fabs(v->get<double>()) < 0x1p63 ||
                    std::trunc(v->get<double>()) != v->get<double>(),
                "{}: \"{}\" is {}, outside 1..{}", file, name, v ? v->dump() : "", max);
    INPUT_CHECK(v != nullptr && v->is_number_integer(), "{}: needs an integer \"{}\"", file, key);
    const std::optional<int> n = whole_number<int>(*v);
    INPUT_CHECK(n && *n >= 1 && *n <= max, "{}: \"{}\" is {}, outside 1..{}", file, name, v->dump(), max);
    return *n;
  }
};

// The ModelConfig of a Hugging Face GPT-2 config.json, refusing what gpt2cc does not compute.
ModelConfig model_config(const nlohmann::json& j, const std::string& file) {
  const ConfigReader r{j, file};
  const std::string model_type = r.string("model_type", "gpt2");
  INPUT_CHECK(model_type == "gpt2", "{}: model_type is '{}'; gpt2cc loads GPT-2 (\"gpt2\") only", file, model_type);
  const std::string activation = r.string("activation_function", "gelu_new");
  INPUT_CHECK(activation == "gelu_new" || activation == "gelu_pytorch_tanh",
              "{}: activation_function is '{}'; gpt2cc computes GPT-2's tanh GELU (gelu_new)", file, activation);
  const double eps = r.number("layer_norm_epsilon", 1e-5);
  INPUT_CHECK(std::abs(eps - 1e-5) <= 1e-12, "{}: layer_norm_epsilon is {}; gpt2cc's LayerNorm uses 1e-5", file, eps);
  INPUT_CHECK(r.boolean("tie_word_embeddings", true), "{}: tie_word_embeddings is false; GPT-2 (and gpt2cc) ties the "
              "output projection to wte", file);
  INPUT_CHECK(!r.boolean("add_cross_attention", false), "{}: add_cross_attention is true; gpt2cc has no cross-attention",
              file);
  INPUT_CHECK(!r.boolean("scale_attn_by_inverse_layer_idx", false),
              "{}: scale_attn_by_inverse_layer_idx is true; gpt2cc scales attention by 1/sqrt(head size) only", file);
  INPUT_CHECK(r.boolean("scale_attn_weights", true), "{}: scale_attn_weights is false; gpt2cc scales attention by "
              "1/sqrt(head size)", file);
  // Bounds far above any GPT-2 that keep every size computed from them inside 64 bits
  // (core/config.hpp); the tensors' shapes in the weights file then decide.
  ModelConfig c;
  c.num_layers = r.integer("n_layer", kMaxLayers, {"num_hidden_layers"});
  c.num_heads = r.integer("n_head", kMaxHeads, {"num_attention_heads"});
  c.channels = r.integer("n_embd", kMaxChannels, {"hidden_size"});
  // n_ctx (older configs' attention span, which need not be n_positions) only where neither is given.
  c.max_seq_len = r.find("n_positions") || r.find("max_position_embeddings") || !r.find("n_ctx")
                      ? r.integer("n_positions", kMaxSeqLen, {"max_position_embeddings"})
                      : r.integer("n_ctx", kMaxSeqLen);
  c.vocab_size = r.integer("vocab_size", kMaxVocabSize);
  if (const nlohmann::json* inner = r.find("n_inner")) {
    INPUT_CHECK(inner->is_number_integer() && inner->get<long long>() == 4LL * c.channels,
                "{}: n_inner is {}; gpt2cc's MLP is 4 x n_embd = {} wide", file,
                inner->is_number() ? inner->dump() : std::string("a JSON ") + inner->type_name(), 4LL * c.channels);
  }
  c.padded_vocab_size = padded_vocab(c.vocab_size);
  c.dropout = 0.0f;  // a starting point: dropout, if any, is the training run's choice (--dropout)
  try {
    validate(c);
  } catch (const InputError& e) {
    fail_input(format("{}: {}", file, e.what()));
  }
  return c;
}

// A file of a tokenizer's pair there: the directory is then the weights' tokenizer, and where its
// other file is missing, the tokenizer's reader says which (not "records no tokenizer").
bool holds_tokenizer(const fs::path& dir) { return tokenizer_file_pair(dir) != nullptr; }

}  // namespace

bool is_hf_gpt2(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    return fs::exists(dir / "config.json", ec) &&
           (fs::exists(dir / kWeightsFile, ec) || fs::exists(dir / kShardIndex, ec));
  }
  std::ifstream in(path, std::ios::binary);
  unsigned char start[9];
  if (!in.read(reinterpret_cast<char*>(start), 9)) return false;
  // An 8-byte little-endian header length (under 2^32: no real header is larger), then '{'.
  return start[4] == 0 && start[5] == 0 && start[6] == 0 && start[7] == 0 && start[8] == '{';
}

void refuse_resume_of_hf_gpt2(const std::string& path) {
  INPUT_CHECK(!is_hf_gpt2(path),
              "{} holds Hugging Face GPT-2 weights, not a gpt2cc checkpoint: --resume continues a gpt2cc run (start "
              "one from these weights with --init-from)",
              path);
}

void refuse_incomplete_hf_gpt2(const std::string& dir) {
  std::error_code ec;
  const fs::path d(dir);
  const bool has_config = fs::exists(d / "config.json", ec);
  const bool has_weights = fs::exists(d / kWeightsFile, ec) || fs::exists(d / kShardIndex, ec);
  INPUT_CHECK(!has_weights || has_config, "{} holds {} but no config.json: Hugging Face GPT-2 weights need both", dir,
              fs::exists(d / kWeightsFile, ec) ? kWeightsFile : kShardIndex);
  INPUT_CHECK(!has_config || has_weights,
              "{} holds config.json but no {} (nor {}): Hugging Face GPT-2 weights need both", dir, kWeightsFile,
              kShardIndex);
}

std::string hf_gpt2_tokenizer_dir(const std::string& path) {
  const fs::path dir = weights_dir(weights_path(path));
  return holds_tokenizer(dir) ? fs::absolute(dir).lexically_normal().string() : std::string();
}

struct HfGpt2Weights::Impl {
  CheckpointInfo info;
  fs::path weights;
  std::optional<safetensors::File> file;
  std::vector<Part> parts;  // wte first
  bool has_lm_head = false;
};

HfGpt2Weights::HfGpt2Weights(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  const fs::path weights = s.weights = weights_path(path);
  const fs::path dir = weights_dir(weights);
  std::error_code ec;
  INPUT_CHECK(fs::exists(weights, ec) || !fs::exists(dir / kShardIndex, ec),
              "{} holds Hugging Face weights in shards ({}); gpt2cc reads one {}: save them with a larger "
              "max_shard_size (save_pretrained)",
              dir.string(), kShardIndex, kWeightsFile);
  const fs::path config_file = dir / "config.json";
  CheckpointInfo& ckpt = s.info;
  ckpt.config = model_config(read_config(config_file), config_file.string());
  const ModelConfig& cfg = ckpt.config;
  // Absolute: a run fine-tuned from these weights records it, and generate reads it from elsewhere.
  ckpt.tokenizer_dir = hf_gpt2_tokenizer_dir(path);
  ckpt.train_config = nlohmann::json{{"init_from_hf", weights.string()}};

  s.file.emplace(weights.string());
  const safetensors::File& file = *s.file;
  // save_pretrained's names carry "transformer."; the Hub's files do not. wpe tells, as wte may be
  // absent (below).
  const bool prefixed = file.contains("transformer.wte.weight") || file.contains("transformer.wpe.weight");
  const std::string prefix = prefixed ? "transformer." : "";
  const size_t V = cfg.vocab_size, C = cfg.channels;

  // Each checked against the header as it is listed, before anything is allocated: present, with
  // its shape (the header's shapes are tied to the file's bytes, so the allocation below is bounded
  // by the file) and a dtype gpt2cc reads. Listed one by one, so that a config of 65536 layers
  // beside a small file fails at the first tensor missing, not after listing 786,432 names.
  std::vector<Part>& parts = s.parts;
  std::set<std::string> expected;
  const auto add = [&](Part part) {
    // The tied embedding saved under its other name only: safetensors' save_model keeps one name
    // of tensors that share memory, the first in order, lm_head.weight (transformers ties it back).
    if (part.name == prefix + "wte.weight" && !file.contains(part.name) && file.contains("lm_head.weight"))
      part.name = "lm_head.weight";
    INPUT_CHECK(file.contains(part.name), "{} has no tensor '{}' ({} describes a {}-layer GPT-2)", weights.string(),
                part.name, config_file.string(), cfg.num_layers);
    const safetensors::TensorInfo& info = file.info(part.name);
    INPUT_CHECK(info.shape == part.shape, "{}: tensor '{}' has shape {}, expected {} for the model of {}",
                weights.string(), part.name, shape_text(info.shape), shape_text(part.shape), config_file.string());
    file.check_readable_as_float(part.name);
    expected.insert(part.name);
    parts.push_back(std::move(part));
  };
  for_each_part(cfg, prefix, add);
  // Nothing unknown beside them.
  for (const auto& [name, info] : file.tensors()) {
    if (expected.count(name)) continue;
    if (name == "lm_head.weight") {
      INPUT_CHECK(info.shape == std::vector<size_t>({V, C}),
                  "{}: lm_head.weight has shape {}, expected [{}, {}] (tied to wte)", weights.string(),
                  shape_text(info.shape), V, C);
      s.has_lm_head = true;
      continue;
    }
    INPUT_CHECK(mask_buffer(name, prefix, cfg.num_layers), "{}: tensor '{}' is not part of a GPT-2 gpt2cc computes "
                "(config {})", weights.string(), name, config_file.string());
  }

}

HfGpt2Weights::~HfGpt2Weights() = default;
HfGpt2Weights::HfGpt2Weights(HfGpt2Weights&&) noexcept = default;
HfGpt2Weights& HfGpt2Weights::operator=(HfGpt2Weights&&) noexcept = default;
const CheckpointInfo& HfGpt2Weights::info() const { return impl_->info; }

void HfGpt2Weights::read_params(const CheckpointSink& sink) const {
  const Impl& s = *impl_;
  const safetensors::File& file = *s.file;
  const ModelConfig& cfg = s.info.config;
  std::vector<float> piece, head;
  const auto give = [&](size_t offset, const float* values, size_t n) {
    for_each_checkpoint_piece(n, [&](size_t at, size_t count) {
      sink(CheckpointArray::params, offset + at, std::span<const float>(values + at, count));
    });
  };
  for (const Part& part : s.parts) {
    const size_t n = safetensors::numel(part.shape);
    if (part.transpose) {  // a layer's matrix: whole, to transpose it ([in, out] -> (out, in))
      const std::vector<float> values = file.read_float(part.name);
      piece.resize(n);
      transpose_into(piece.data(), values.data(), part.shape[1], part.shape[0]);
      give(part.offset, piece.data(), n);
      continue;
    }
    // In pieces (wte is the largest tensor), each of wte's checked against lm_head's when saved.
    const bool wte = &part == &s.parts.front();
    for_each_checkpoint_piece(n, [&](size_t at, size_t count) {
      piece.resize(count);
      file.read_float(part.name, at, piece);
      if (wte && s.has_lm_head) {
        head.resize(count);
        file.read_float("lm_head.weight", at, head);
        INPUT_CHECK(head == piece,
                    "{}: lm_head.weight differs from wte.weight; gpt2cc ties the output projection to the token "
                    "embedding (GPT-2's own weights do)",
                    s.weights.string());
      }
      give(part.offset + at, piece.data(), count);
    });
    if (!wte) continue;
    // wte's padded rows (V..Vp-1, fewer than 128) are zeros, as in any gpt2cc model.
    piece.assign(size_t(cfg.padded_vocab_size - cfg.vocab_size) * size_t(cfg.channels), 0.0f);
    give(part.offset + n, piece.data(), piece.size());
  }
}

Checkpoint load_hf_gpt2(const std::string& path) {
  const HfGpt2Weights weights(path);
  Checkpoint ckpt;
  static_cast<CheckpointInfo&>(ckpt) = weights.info();
  ckpt.params.resize(num_parameters(ckpt.config));
  weights.read_params([&](CheckpointArray, size_t offset, std::span<const float> piece) {
    std::copy(piece.begin(), piece.end(), ckpt.params.begin() + std::ptrdiff_t(offset));
  });
  return ckpt;
}

void save_hf_gpt2(const std::string& dir, const ModelConfig& config, const std::vector<float>& params,
                  std::optional<int> eot_id) {
  const size_t N = ParameterLayout(config).total();
  ENSURE(params.size() == N, "save_hf_gpt2: {} parameters for a model of {}", params.size(), N);
  const auto stream = [&](const CheckpointSink& take) {
    for_each_checkpoint_piece(params.size(), [&](size_t at, size_t count) {
      take(CheckpointArray::params, at, std::span<const float>(params.data() + at, count));
    });
  };
  save_hf_gpt2(dir, config, stream, eot_id);
}

void save_hf_gpt2(const std::string& dir, const ModelConfig& config,
                  const std::function<void(const CheckpointSink& take)>& params, std::optional<int> eot_id) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(format("cannot create {}: {}", dir, ec.message()));

  std::vector<Part> parts;
  for_each_part(config, "", [&](Part part) { parts.push_back(std::move(part)); });
  std::vector<safetensors::F32TensorSpec> specs;
  for (const Part& part : parts) specs.push_back({part.name, part.shape});
  const size_t N = ParameterLayout(config).total();
  // The parameters come in gpt2cc's order, which is the parts' order: each part's values go to the
  // file as they come, but for a Conv1D weight, gathered whole to be transposed ((out, in) -> [in,
  // out]); the values before a part's offset (wte's padded rows) are not exported.
  const auto produce = [&](const safetensors::F32Writer& write) {
    size_t at = 0, next = 0;  // the next parameter expected; the part it belongs to
    std::vector<float> matrix, transposed;
    params([&](CheckpointArray array, size_t offset, std::span<const float> piece) {
      ENSURE(array == CheckpointArray::params && offset == at && piece.size() <= N - at,
             "save_hf_gpt2: parameters [{}, {}) given where {} of {} were expected next", offset,
             offset + piece.size(), at, N);
      at += piece.size();
      while (!piece.empty() && next < parts.size()) {
        const Part& part = parts[next];
        if (offset < part.offset) {
          const size_t skip = std::min(piece.size(), part.offset - offset);
          piece = piece.subspan(skip);
          offset += skip;
          continue;
        }
        const size_t n = safetensors::numel(part.shape), into = offset - part.offset;
        const size_t count = std::min(piece.size(), n - into);
        if (!part.transpose) {
          write(piece.first(count));
        } else {
          matrix.resize(n);
          std::copy_n(piece.begin(), count, matrix.begin() + std::ptrdiff_t(into));
          if (into + count == n) {
            transposed.resize(n);
            transpose_into(transposed.data(), matrix.data(), part.shape[0], part.shape[1]);
            write(transposed);
          }
        }
        piece = piece.subspan(count);
        offset += count;
        next += into + count == n;
      }
    });
    ENSURE(at == N && next == parts.size(), "save_hf_gpt2: {} of {} parameters given", at, N);
  };
  safetensors::write_f32((fs::path(dir) / kWeightsFile).string(), specs, produce, {{"format", "pt"}});

  nlohmann::json j = {{"architectures", {"GPT2LMHeadModel"}},
                      {"model_type", "gpt2"},
                      {"n_layer", config.num_layers},
                      {"n_head", config.num_heads},
                      {"n_embd", config.channels},
                      {"n_positions", config.max_seq_len},
                      {"n_ctx", config.max_seq_len},
                      {"vocab_size", config.vocab_size},
                      {"activation_function", "gelu_new"},
                      {"layer_norm_epsilon", 1e-5},
                      {"resid_pdrop", 0.0},
                      {"embd_pdrop", 0.0},
                      {"attn_pdrop", 0.0},
                      {"tie_word_embeddings", true},
                      {"torch_dtype", "float32"}};
  // <|endoftext|>: the exported tokenizer's; without one, 50256 for GPT-2's vocabulary size
  // (transformers' default), else none (that default would lie outside the vocabulary).
  const nlohmann::json eot = eot_id ? nlohmann::json(*eot_id)
                             : config.vocab_size == 50257 ? nlohmann::json(50256)
                                                          : nlohmann::json(nullptr);
  j["bos_token_id"] = eot;
  j["eos_token_id"] = eot;
  write_file_atomic((fs::path(dir) / "config.json").string(), j.dump(2) + "\n");
}

}  // namespace gpt2cc
