// ModelConfig presets, validation and JSON.
#include "core/config.hpp"

#include <charconv>
#include <map>
#include <tuple>
#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/json_number.hpp"

namespace gpt2cc {

int padded_vocab(int vocab_size) { return (vocab_size + 127) / 128 * 128; }

namespace {
ModelConfig make(int L, int NH, int C, int maxT) {
  ModelConfig config;
  config.num_layers = L;
  config.num_heads = NH;
  config.channels = C;
  config.max_seq_len = maxT;
  config.vocab_size = 50257;
  config.padded_vocab_size = padded_vocab(config.vocab_size);
  return config;
}

const std::map<std::string, ModelConfig>& presets() {
  static const std::map<std::string, ModelConfig> table = {
      {"gpt2", make(12, 12, 768, 1024)},         {"gpt2-medium", make(24, 16, 1024, 1024)},
      {"gpt2-large", make(36, 20, 1280, 1024)},  {"gpt2-xl", make(48, 25, 1600, 1024)},
      {"d2", make(2, 4, 128, 1024)},             {"d4", make(4, 4, 256, 1024)},
      {"d6", make(6, 6, 384, 1024)},
  };
  return table;
}
}  // namespace

std::vector<std::string> model_preset_names() {
  return {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "d2", "d4", "d6"};
}

ModelConfig model_preset(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string known;
    for (const auto& n : model_preset_names()) known += (known.empty() ? "" : ", ") + n;
    fail_input(format("unknown model preset '{}' (known: {})", name, known));
  }
  return it->second;
}

void validate(const ModelConfig& c) {
  for (auto [name, value, max] : {std::tuple{"num_layers (L)", c.num_layers, kMaxLayers},
                                  std::tuple{"num_heads (NH)", c.num_heads, kMaxHeads},
                                  std::tuple{"channels (C)", c.channels, kMaxChannels},
                                  std::tuple{"max_seq_len", c.max_seq_len, kMaxSeqLen},
                                  std::tuple{"vocab_size (V)", c.vocab_size, kMaxVocabSize},
                                  std::tuple{"padded_vocab_size (Vp)", c.padded_vocab_size, kMaxVocabSize}})
    INPUT_CHECK(value >= 1 && value <= max, "model: {} must be in 1..{}, got {}", name, max, value);
  INPUT_CHECK(c.channels % c.num_heads == 0, "model: channels (C) = {} must be divisible by num_heads (NH) = {}",
              c.channels, c.num_heads);
  INPUT_CHECK(c.padded_vocab_size >= c.vocab_size, "model: padded_vocab_size (Vp) = {} must be >= vocab_size (V) = {}",
              c.padded_vocab_size, c.vocab_size);
  INPUT_CHECK(c.dropout >= 0.0f && c.dropout < 1.0f, "model: dropout must be in [0, 1), got {}", c.dropout);
}

size_t num_parameters(const ModelConfig& c) {
  size_t L = c.num_layers, C = c.channels;
  size_t per_layer = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C);
  return size_t(c.padded_vocab_size) * C + size_t(c.max_seq_len) * C + L * per_layer + 2 * C;
}

size_t num_trained_parameters(const ModelConfig& c) {
  return num_parameters(c) - size_t(c.padded_vocab_size - c.vocab_size) * size_t(c.channels);
}

std::string describe(const ModelConfig& c) {
  double millions = double(num_parameters(c)) / 1e6;
  return format("L={} C={} NH={} V={} (Vp {}) maxT={} dropout={}, {}M parameters", c.num_layers, c.channels,
                c.num_heads, c.vocab_size, c.padded_vocab_size, c.max_seq_len, c.dropout,
                double(int(millions * 10 + 0.5)) / 10);
}

void to_json(nlohmann::json& j, const ModelConfig& c) {
  j = nlohmann::json{{"max_seq_len", c.max_seq_len}, {"vocab_size", c.vocab_size},
                     {"padded_vocab_size", c.padded_vocab_size}, {"num_layers", c.num_layers},
                     {"num_heads", c.num_heads}, {"channels", c.channels}, {"dropout", shortest_double(c.dropout)}};
}

double shortest_double(float x) {
  char text[32];
  const char* end = std::to_chars(text, text + sizeof(text), x).ptr;
  double value = x;
  std::from_chars(text, end, value);
  // The shortest text can round back to a neighbour through a double (7.038531e-26f, the one
  // positive float that does): that float is then written in full.
  return float(value) == x ? value : double(x);
}

namespace {
// A size as written: a whole number that fits an int (nlohmann would cast 1.5 to 1 and wrap
// 2^32 + 1 to 1). validate() then checks its range.
int whole_int(const nlohmann::json& j, const char* key) {
  const nlohmann::json& v = j.at(key);
  const std::optional<int> n = whole_number<int>(v);
  INPUT_CHECK(n.has_value(), "model config: \"{}\" must be a whole number that fits an int, got {}", key, v.dump());
  return *n;
}
}  // namespace

void from_json(const nlohmann::json& j, ModelConfig& c) {
  c.max_seq_len = whole_int(j, "max_seq_len");
  c.vocab_size = whole_int(j, "vocab_size");
  c.padded_vocab_size = whole_int(j, "padded_vocab_size");
  c.num_layers = whole_int(j, "num_layers");
  c.num_heads = whole_int(j, "num_heads");
  c.channels = whole_int(j, "channels");
  c.dropout = j.value("dropout", 0.0f);
}

}  // namespace gpt2cc
