// Hugging Face GPT-2 weights <-> gpt2cc's parameter layout (names and layouts in core/hf_gpt2.hpp).
#include "core/hf_gpt2.hpp"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/params.hpp"
#include "core/safetensors.hpp"

namespace gpt2cc {
namespace {

namespace fs = std::filesystem;
using safetensors::shape_text;

constexpr const char* kWeightsFile = "model.safetensors";

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

fs::path weights_path(const std::string& path) {
  return fs::is_directory(path) ? fs::path(path) / kWeightsFile : fs::path(path);
}

nlohmann::json read_config(const fs::path& file) {
  std::ifstream in(file);
  INPUT_CHECK(in.good(), "cannot open {} (the Hugging Face model's config, beside {}): {}", file.string(),
              kWeightsFile, std::strerror(errno));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  INPUT_CHECK(!j.is_discarded() && j.is_object(), "{} is not a JSON object", file.string());
  return j;
}

// The ModelConfig of a Hugging Face GPT-2 config.json, refusing what gpt2cc does not compute.
ModelConfig model_config(const nlohmann::json& j, const std::string& file) {
  auto integer = [&](const char* key, const char* alt = nullptr) {
    const char* found = j.contains(key) ? key : alt != nullptr && j.contains(alt) ? alt : nullptr;
    INPUT_CHECK(found != nullptr && j[found].is_number_integer(), "{}: needs an integer \"{}\"", file, key);
    return j[found].get<int>();
  };
  const std::string model_type = j.value("model_type", std::string("gpt2"));
  INPUT_CHECK(model_type == "gpt2", "{}: model_type is '{}'; gpt2cc loads GPT-2 (\"gpt2\") only", file, model_type);
  const std::string activation = j.value("activation_function", std::string("gelu_new"));
  INPUT_CHECK(activation == "gelu_new" || activation == "gelu_pytorch_tanh",
              "{}: activation_function is '{}'; gpt2cc computes GPT-2's tanh GELU (gelu_new)", file, activation);
  const double eps = j.value("layer_norm_epsilon", 1e-5);
  INPUT_CHECK(std::abs(eps - 1e-5) <= 1e-12, "{}: layer_norm_epsilon is {}; gpt2cc's LayerNorm uses 1e-5", file, eps);
  INPUT_CHECK(j.value("tie_word_embeddings", true), "{}: tie_word_embeddings is false; GPT-2 (and gpt2cc) ties the "
              "output projection to wte", file);
  INPUT_CHECK(!j.value("add_cross_attention", false), "{}: add_cross_attention is true; gpt2cc has no cross-attention",
              file);
  INPUT_CHECK(!j.value("scale_attn_by_inverse_layer_idx", false),
              "{}: scale_attn_by_inverse_layer_idx is true; gpt2cc scales attention by 1/sqrt(head size) only", file);
  INPUT_CHECK(j.value("scale_attn_weights", true), "{}: scale_attn_weights is false; gpt2cc scales attention by "
              "1/sqrt(head size)", file);
  ModelConfig c;
  c.num_layers = integer("n_layer");
  c.num_heads = integer("n_head");
  c.channels = integer("n_embd");
  c.max_seq_len = integer("n_positions", "n_ctx");
  c.vocab_size = integer("vocab_size");
  INPUT_CHECK(c.vocab_size >= 1 && c.channels >= 1 && c.num_layers >= 1 && c.num_heads >= 1 && c.max_seq_len >= 1,
              "{}: n_layer, n_head, n_embd, n_positions and vocab_size must be >= 1", file);
  const nlohmann::json inner = j.value("n_inner", nlohmann::json(nullptr));
  INPUT_CHECK(inner.is_null() || (inner.is_number_integer() && inner.get<long long>() == 4LL * c.channels),
              "{}: n_inner is {}; gpt2cc's MLP is 4 x n_embd = {} wide", file, inner.dump(), 4LL * c.channels);
  c.padded_vocab_size = padded_vocab(c.vocab_size);
  c.dropout = 0.0f;  // a starting point: dropout, if any, is the training run's choice (--dropout)
  validate(c);
  return c;
}

bool holds_tokenizer(const fs::path& dir) {
  return (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) ||
         (fs::exists(dir / "encoder.json") && fs::exists(dir / "vocab.bpe"));
}

}  // namespace

bool is_hf_gpt2(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return fs::exists(fs::path(path) / kWeightsFile, ec);
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

Checkpoint load_hf_gpt2(const std::string& path) {
  const fs::path weights = weights_path(path);
  const fs::path dir = weights.parent_path().empty() ? fs::path(".") : weights.parent_path();
  const fs::path config_file = dir / "config.json";
  Checkpoint ckpt;
  ckpt.config = model_config(read_config(config_file), config_file.string());
  const ModelConfig& cfg = ckpt.config;
  if (holds_tokenizer(dir)) ckpt.tokenizer_dir = dir.string();
  ckpt.train_config = nlohmann::json{{"init_from_hf", weights.string()}};

  const safetensors::File file(weights.string());
  const std::string prefix = file.contains("transformer.wte.weight") ? "transformer." : "";
  const ParameterLayout layout(cfg);
  ckpt.params.assign(layout.total(), 0.0f);
  std::set<std::string> used;

  // Reads tensor `name` of the expected shape (as Hugging Face lays it out).
  auto read = [&](const std::string& name, const std::vector<size_t>& shape) {
    const std::string full = prefix + name;
    INPUT_CHECK(file.contains(full), "{} has no tensor '{}' ({} describes a {}-layer GPT-2)", weights.string(), full,
                config_file.string(), cfg.num_layers);
    const safetensors::TensorInfo& info = file.info(full);
    INPUT_CHECK(info.shape == shape, "{}: tensor '{}' has shape {}, expected {} for the model of {}", weights.string(),
                full, shape_text(info.shape), shape_text(shape), config_file.string());
    used.insert(full);
    return file.read_float(full);
  };
  const size_t V = cfg.vocab_size, C = cfg.channels;
  const std::vector<float> wte = read("wte.weight", {V, C});
  std::copy(wte.begin(), wte.end(), ckpt.params.begin() + layout[Param::wte].offset);  // rows V..Vp-1 stay 0
  const ParamTensor& wpe = layout[Param::wpe];
  const std::vector<float> wpe_values = read("wpe.weight", wpe.shape);
  std::copy(wpe_values.begin(), wpe_values.end(), ckpt.params.begin() + wpe.offset);
  for (int l = 0; l < cfg.num_layers; ++l) {
    for (const LayerTensor& lt : kLayerTensors) {
      const ParamTensor& t = layout[lt.param];
      const size_t slice = t.numel / cfg.num_layers;
      float* dst = ckpt.params.data() + t.offset + l * slice;
      const std::vector<size_t> shape = hf_shape(t, lt.transpose);
      const std::vector<float> values = read("h." + std::to_string(l) + "." + lt.hf_name, shape);
      if (lt.transpose)
        transpose_into(dst, values.data(), t.shape[1], t.shape[2]);
      else
        std::copy(values.begin(), values.end(), dst);
    }
  }
  for (Param p : {Param::lnfw, Param::lnfb}) {
    const ParamTensor& t = layout[p];
    const std::vector<float> values = read(p == Param::lnfw ? "ln_f.weight" : "ln_f.bias", t.shape);
    std::copy(values.begin(), values.end(), ckpt.params.begin() + t.offset);
  }
  if (file.contains("lm_head.weight")) {
    INPUT_CHECK(file.info("lm_head.weight").shape == std::vector<size_t>({V, C}),
                "{}: lm_head.weight has shape {}, expected [{}, {}] (tied to wte)", weights.string(),
                shape_text(file.info("lm_head.weight").shape), V, C);
    INPUT_CHECK(file.read_float("lm_head.weight") == wte, "{}: lm_head.weight differs from wte.weight; gpt2cc ties the output projection to the "
                "token embedding (GPT-2's own weights do)", weights.string());
  }
  for (const auto& [name, info] : file.tensors()) {
    if (used.count(name) || name == "lm_head.weight") continue;
    const bool mask_buffer = name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias");
    INPUT_CHECK(mask_buffer, "{}: tensor '{}' is not part of a GPT-2 gpt2cc computes (config {})", weights.string(),
                name, config_file.string());
  }
  return ckpt;
}

void save_hf_gpt2(const std::string& dir, const ModelConfig& config, const std::vector<float>& params) {
  const ParameterLayout layout(config);
  ENSURE(params.size() == layout.total(), "save_hf_gpt2: {} parameters for a model of {}", params.size(),
         layout.total());
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(format("cannot create {}: {}", dir, ec.message()));

  const size_t V = config.vocab_size, C = config.channels;
  std::vector<std::vector<float>> transposed;  // keeps the transposed copies alive until written
  std::vector<safetensors::F32Tensor> tensors;
  const float* base = params.data();
  tensors.push_back({"wte.weight", {V, C}, base + layout[Param::wte].offset});
  tensors.push_back({"wpe.weight", layout[Param::wpe].shape, base + layout[Param::wpe].offset});
  transposed.reserve(static_cast<size_t>(config.num_layers) * std::size(kLayerTensors));
  for (int l = 0; l < config.num_layers; ++l) {
    for (const LayerTensor& lt : kLayerTensors) {
      const ParamTensor& t = layout[lt.param];
      const float* src = base + t.offset + l * (t.numel / config.num_layers);
      const std::string name = "h." + std::to_string(l) + "." + lt.hf_name;
      const std::vector<size_t> shape = hf_shape(t, lt.transpose);
      if (lt.transpose) {
        // gpt2cc (out, in) = (shape[1], shape[0]) -> Hugging Face [in, out].
        std::vector<float>& copy = transposed.emplace_back(t.numel / config.num_layers);
        transpose_into(copy.data(), src, shape[0], shape[1]);
        src = copy.data();
      }
      tensors.push_back({name, shape, src});
    }
  }
  tensors.push_back({"ln_f.weight", layout[Param::lnfw].shape, base + layout[Param::lnfw].offset});
  tensors.push_back({"ln_f.bias", layout[Param::lnfb].shape, base + layout[Param::lnfb].offset});
  safetensors::write_f32((fs::path(dir) / kWeightsFile).string(), tensors, {{"format", "pt"}});

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
  // GPT-2's tokenizer: <|endoftext|> is 50256, transformers' default; for another vocabulary none
  // (that default would lie outside it).
  const nlohmann::json eot = config.vocab_size == 50257 ? nlohmann::json(50256) : nlohmann::json(nullptr);
  j["bos_token_id"] = eot;
  j["eos_token_id"] = eot;
  const fs::path config_path = fs::path(dir) / "config.json";
  const std::string tmp = config_path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << j.dump(2) << "\n";
    out.flush();
    if (!out) throw Error(format("cannot write {}", tmp));
  }
  fs::rename(tmp, config_path, ec);
  if (ec) throw Error(format("cannot write {}: {}", config_path.string(), ec.message()));
}

}  // namespace gpt2cc
