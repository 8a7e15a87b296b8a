// ModelConfig: the shape of a GPT-2 model, from a preset, from flags, or from a checkpoint.
// Dimension letters used everywhere: B batch, T time, C channels, NH heads, HS = C/NH head
// size, V vocab, Vp padded vocab, L layers.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace gpt2cc {

struct ModelConfig {
  int max_seq_len = 1024;         // maxT: rows of the position embedding, >= 1
  int vocab_size = 50257;         // V: real tokens, >= 1 (GPT-2: 50257)
  int padded_vocab_size = 50304;  // Vp: V rounded up to a multiple of 128 for speed; padded logits never win
  int num_layers = 12;            // L, >= 1
  int num_heads = 12;             // NH, >= 1, must divide C
  int channels = 768;             // C, >= 1
  float dropout = 0.0f;           // embedding, attention and residual dropout probability, in [0, 1)

  int head_size() const { return channels / num_heads; }
  bool operator==(const ModelConfig&) const = default;
};

// Upper bounds far above any GPT-2 (gpt2-xl: L 48, NH 25, C 1600, maxT 1024, V 50257) that keep
// every size computed from a ModelConfig inside 64 bits, so that a corrupt checkpoint, shard
// header or config.json cannot pass as a model of plausible size. V and Vp: at most 2^24 (as a
// tokenizer's ids).
inline constexpr int kMaxLayers = 1 << 16, kMaxHeads = 1 << 16, kMaxChannels = 1 << 20, kMaxSeqLen = 1 << 24,
                     kMaxVocabSize = 1 << 24;

// Vp for a vocabulary: the next multiple of 128 (50257 -> 50304); vocab_size in 1..kMaxVocabSize.
int padded_vocab(int vocab_size);

// Presets: gpt2 (124M), gpt2-medium (350M), gpt2-large (774M), gpt2-xl (1558M), and the small
// CPU presets d2 (2 layers, 128 wide), d4 (4, 256), d6 (6, 384). Throws InputError listing the
// known names for an unknown one.
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

// Throws InputError naming the field and the value for an impossible configuration
// (C not divisible by NH, sizes <= 0 or above the bounds above, Vp < V, dropout outside [0, 1)).
void validate(const ModelConfig& config);

// Parameter count, the padded vocabulary rows included (what the model holds), and without them
// (the count GPT-2 papers quote, V rows: the padded rows are zeros that never train).
size_t num_parameters(const ModelConfig& config);
size_t num_trained_parameters(const ModelConfig& config);

// One line: "L=12 C=768 NH=12 V=50257 (Vp 50304) maxT=1024 dropout=0, 124.5M parameters".
std::string describe(const ModelConfig& config);
void to_json(nlohmann::json& j, const ModelConfig& config);
// A float as the double its shortest decimal form reads as (0.1f gives 0.1, not
// 0.10000000149011612), so JSON shows the value that was typed; read back into a float it is the
// same float (where the shortest form would not be, the float's own double).
double shortest_double(float x);
void from_json(const nlohmann::json& j, ModelConfig& config);

}  // namespace gpt2cc
