// Hugging Face GPT-2 weights in and out (core/hf_gpt2.hpp). tests/make_hf_fixture.py saved a tiny
// transformers GPT2LMHeadModel (L=2, C=32, NH=2, V=300, maxT=32; every tensor random, so a swapped
// or untransposed one shows) as save_pretrained writes it (F32, "transformer." names, no lm_head),
// in the Hub's layout (no prefix, F16, with the old causal-mask buffers) and in BF16, with
// transformers' logits and loss on one batch for each. gpt2cc must load all three and compute
// those logits; what it exports must be the same tensors under Hugging Face's names and shapes,
// and load back bit for bit.
#include "common/catch.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/checkpoint.hpp"
#include "core/hf_gpt2.hpp"
#include "core/model.hpp"
#include "core/params.hpp"
#include "core/safetensors.hpp"
#include "core/trainer.hpp"

using namespace gpt2cc;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string& fixture_dir() {
  static const std::string dir = test::fixture_path("hf_gpt2_tiny");
  return dir;
}

json expected() {
  std::ifstream in(fixture_dir() + "/expected.json");
  INFO("regenerate with: python tests/make_hf_fixture.py (torch, transformers, safetensors)");
  REQUIRE(in.good());
  return json::parse(in);
}

// The loss and the first V logits of every row of the fixture's batch under `params`.
std::pair<float, std::vector<float>> run_model(const ModelConfig& config, const std::vector<float>& params,
                                               const json& e) {
  const int B = e["B"], T = e["T"];
  std::vector<int> tokens, targets;
  for (const auto& row : e["tokens"]) for (int t : row) tokens.push_back(t);
  for (const auto& row : e["targets"]) for (int t : row) targets.push_back(t);
  auto backend = make_cpu_backend(1);
  GPT2 model(config, *backend, B, T);
  model.set_parameters(params);
  const float loss = model.forward(tokens.data(), targets.data(), B, T);
  const auto padded = model.logits();
  std::vector<float> logits;
  for (int row = 0; row < B * T; ++row)
    for (int v = 0; v < config.vocab_size; ++v) logits.push_back(padded[size_t(row) * config.padded_vocab_size + v]);
  return {loss, logits};
}

// Every tensor of `file`, as safetensors::write_f32 takes them, their values held in `storage`
// (a vector's buffer stays where it is when `storage` grows: the pointers remain valid).
std::vector<safetensors::F32Tensor> tensors_of(const safetensors::File& file,
                                               std::vector<std::vector<float>>& storage) {
  std::vector<safetensors::F32Tensor> tensors;
  for (const auto& [name, info] : file.tensors()) {
    storage.push_back(file.read_float(name));
    tensors.push_back({name, info.shape, storage.back().data()});
  }
  return tensors;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace

TEST_CASE("Hugging Face GPT-2 weights load and give transformers' logits", "[model][hf]") {
  const json e = expected();
  struct Case {
    std::string path, reference;
  };
  for (const Case& c : {Case{fixture_dir(), "fp32"}, Case{fixture_dir() + "/model.safetensors", "fp32"},
                        Case{fixture_dir() + "/model_fp16_hub_layout.safetensors", "fp16_hub_layout"},
                        Case{fixture_dir() + "/model_bf16.safetensors", "bf16"}}) {
    INFO(c.path);
    REQUIRE(is_hf_gpt2(c.path));
    const Checkpoint ckpt = load_checkpoint(c.path, false);  // as train --init-from and generate load it
    CHECK(ckpt.config.num_layers == 2);
    CHECK(ckpt.config.num_heads == 2);
    CHECK(ckpt.config.channels == 32);
    CHECK(ckpt.config.vocab_size == 300);
    CHECK(ckpt.config.padded_vocab_size == 384);
    CHECK(ckpt.config.max_seq_len == 32);
    CHECK(ckpt.step == 0);
    CHECK(ckpt.m.empty());
    CHECK(ckpt.tokenizer_fingerprint == 0);
    CHECK(ckpt.tokenizer_dir.empty());  // the fixture holds no tokenizer
    // The padded vocabulary rows are zero (they never win and never learn).
    const ParameterLayout layout(ckpt.config);
    for (size_t i = size_t(300) * 32; i < size_t(384) * 32; ++i) REQUIRE(ckpt.params[layout[Param::wte].offset + i] == 0.0f);

    const auto [loss, logits] = run_model(ckpt.config, ckpt.params, e);
    const auto want = e[c.reference]["logits"].get<std::vector<float>>();
    REQUIRE(logits.size() == want.size());
    const double error = test::rel_error(logits, want);
    INFO("logits relative error " << error << ", loss " << loss << " vs " << e[c.reference]["loss"].get<double>());
    CHECK(error <= 1e-5);
    CHECK(std::abs(loss - e[c.reference]["loss"].get<double>()) <= 1e-5);
  }
  // Not Hugging Face weights: a gpt2cc checkpoint, a directory without model.safetensors, text.
  const std::string dir = test::temp_dir("hf_not");
  Checkpoint ckpt = load_checkpoint(fixture_dir(), false);
  save_checkpoint(dir + "/run.ckpt", ckpt);
  CHECK_FALSE(is_hf_gpt2(dir + "/run.ckpt"));
  CHECK_FALSE(is_hf_gpt2(dir));
  write_text(dir + "/notes.txt", "{\"looks\": \"like json\"}");
  CHECK_FALSE(is_hf_gpt2(dir + "/notes.txt"));
  CHECK_FALSE(is_hf_gpt2(dir + "/missing"));
  // ... and the gpt2cc checkpoint of the same weights computes the same logits.
  const Checkpoint again = load_checkpoint(dir + "/run.ckpt", false);
  CHECK(again.params == ckpt.params);
}

TEST_CASE("exported weights are Hugging Face's tensors, names and config, and load back bit for bit", "[model][hf]") {
  const Checkpoint ckpt = load_checkpoint(fixture_dir(), false);
  const std::string out = test::temp_dir("hf_export") + "/model";
  save_hf_gpt2(out, ckpt.config, ckpt.params);

  // The same tensors as save_pretrained wrote, under the Hub's names (no prefix), to the byte.
  const safetensors::File theirs(fixture_dir() + "/model.safetensors"), ours(out + "/model.safetensors");
  CHECK(ours.metadata().at("format") == "pt");
  REQUIRE(ours.tensors().size() == theirs.tensors().size());
  for (const auto& [name, info] : theirs.tensors()) {
    const std::string hub_name = name.substr(std::string("transformer.").size());
    INFO(name);
    REQUIRE(ours.contains(hub_name));
    CHECK(ours.info(hub_name).dtype == "F32");
    CHECK(ours.info(hub_name).shape == info.shape);
    CHECK(ours.read_float(hub_name) == theirs.read_float(name));
  }
  // The config fields transformers builds the model from.
  const json theirs_config = json::parse(test::read_bytes(fixture_dir() + "/config.json"));
  const json ours_config = json::parse(test::read_bytes(out + "/config.json"));
  for (const char* key : {"model_type", "n_layer", "n_head", "n_embd", "n_positions", "vocab_size",
                          "activation_function", "layer_norm_epsilon", "tie_word_embeddings"}) {
    INFO(key);
    CHECK(ours_config.at(key) == theirs_config.at(key));
  }
  CHECK(ours_config.at("architectures") == json::array({"GPT2LMHeadModel"}));
  // <|endoftext|>: the id of the tokenizer exported beside the weights (where a tokenizer trained
  // here has put it), else GPT-2's for its vocabulary size.
  CHECK(ours_config.at("eos_token_id") == (ckpt.config.vocab_size == 50257 ? json(50256) : json(nullptr)));
  save_hf_gpt2(out + "_eot", ckpt.config, ckpt.params, 0);
  const json with_eot = json::parse(test::read_bytes(out + "_eot/config.json"));
  CHECK(with_eot.at("eos_token_id") == 0);
  CHECK(with_eot.at("bos_token_id") == 0);
  {
    // Without a tokenizer's id, GPT-2's vocabulary size gets GPT-2's <|endoftext|>, 50256 (a
    // one-layer model 8 wide: the fixture's vocabulary of 300 gets null).
    ModelConfig gpt2_vocab{.max_seq_len = 4, .vocab_size = 50257, .padded_vocab_size = 50304, .num_layers = 1,
                           .num_heads = 1, .channels = 8};
    save_hf_gpt2(out + "_gpt2_vocab", gpt2_vocab, std::vector<float>(ParameterLayout(gpt2_vocab).total(), 0.0f));
    const json gpt2_config = json::parse(test::read_bytes(out + "_gpt2_vocab/config.json"));
    CHECK(gpt2_config.at("eos_token_id") == 50256);
    CHECK(gpt2_config.at("bos_token_id") == 50256);
  }

  const Checkpoint back = load_checkpoint(out, false);
  CHECK(back.config == ckpt.config);
  CHECK(back.params == ckpt.params);
  // Written again over itself: the old file is replaced whole (no .tmp left behind).
  save_hf_gpt2(out, back.config, back.params);
  CHECK_FALSE(fs::exists(out + "/model.safetensors.tmp"));
  CHECK(load_checkpoint(out, false).params == ckpt.params);
}

TEST_CASE("Hugging Face weights gpt2cc cannot compute are refused by name", "[model][hf]") {
  const Checkpoint ckpt = load_checkpoint(fixture_dir(), false);
  const std::string config_text = test::read_bytes(fixture_dir() + "/config.json");
  const json config = json::parse(config_text);
  // A copy of the fixture with config.json edited (value null: the key removed).
  const auto with_configs = [&](const std::string& name, const std::vector<std::pair<std::string, json>>& changes) {
    const std::string dir = test::temp_dir("hf_bad_" + name);
    fs::copy_file(fixture_dir() + "/model.safetensors", dir + "/model.safetensors");
    json c = config;
    for (const auto& [key, value] : changes) {
      if (value.is_null())
        c.erase(key);
      else
        c[key] = value;
    }
    write_text(dir + "/config.json", c.dump());
    return dir;
  };
  const auto with_config = [&](const std::string& name, const std::string& key, const json& value) {
    return with_configs(name, {{key, value}});
  };
  const auto refused = [](const std::string& path, const std::string& message) {
    INFO(path);
    CHECK_THROWS_AS(load_checkpoint(path, false), InputError);
    CHECK_THROWS_WITH(load_checkpoint(path, false), Catch::Contains(message));
  };
  refused(with_config("relu", "activation_function", "relu"), "activation_function is 'relu'");
  refused(with_config("eps", "layer_norm_epsilon", 1e-6), "layer_norm_epsilon");
  refused(with_config("untied", "tie_word_embeddings", false), "tie_word_embeddings is false");
  refused(with_config("cross", "add_cross_attention", true), "cross-attention");
  refused(with_config("layer_idx", "scale_attn_by_inverse_layer_idx", true), "scale_attn_by_inverse_layer_idx");
  refused(with_config("type", "model_type", "llama"), "model_type is 'llama'");
  refused(with_config("no_layers", "n_layer", nullptr), "needs an integer \"n_layer\"");
  // A whole number past 64 bits (read as a double): out of range, not "not an integer".
  refused(with_config("huge_layers", "n_layer", 1e30), "\"n_layer\" is 1e+30, outside 1..");
  // transformers' other names for the sizes (its attribute_map): read where the GPT-2 name is not
  // given, refused where both are and disagree (transformers would build the alias's model).
  const ModelConfig own = load_checkpoint(fixture_dir(), false).config;
  const std::string aliased = with_configs("aliases", {{"n_layer", nullptr}, {"num_hidden_layers", config["n_layer"]},
                                                       {"n_head", nullptr}, {"num_attention_heads", config["n_head"]},
                                                       {"n_embd", nullptr}, {"hidden_size", config["n_embd"]},
                                                       {"n_positions", nullptr},
                                                       {"max_position_embeddings", config["n_positions"]}});
  CHECK(load_checkpoint(aliased, false).config == own);
  refused(with_configs("alias_differs", {{"num_hidden_layers", 1}}),
          "\"n_layer\" is 2 and \"num_hidden_layers\" is 1: they name the same size; give one");
  // n_ctx, an older config's attention span, counts only where no n_positions is given.
  CHECK(load_checkpoint(with_configs("n_ctx_other", {{"n_ctx", 7}}), false).config == own);
  refused(with_config("three_layers", "n_layer", 3), "has no tensor 'transformer.h.2.ln_1.weight'");
  refused(with_config("wide", "n_embd", 64), "has shape [300, 32], expected [300, 64]");
  refused(with_config("heads", "n_head", 3), "/config.json: model: channels (C) = 32 must be divisible by num_heads");
  refused(with_config("inner", "n_inner", 96), "n_inner is 96; gpt2cc's MLP is 4 x n_embd = 128 wide");
  // Fields of the wrong type, out of range, or nested absurdly deep: refused naming file and field.
  refused(with_config("type_number", "model_type", 1), "\"model_type\" must be a string, got a JSON number");
  refused(with_config("eps_string", "layer_norm_epsilon", "1e-5"), "\"layer_norm_epsilon\" must be a number");
  refused(with_config("tie_string", "tie_word_embeddings", "yes"), "\"tie_word_embeddings\" must be true or false");
  refused(with_config("layers_big", "n_layer", 4294967298LL), "\"n_layer\" is 4294967298, outside 1..65536");
  refused(with_config("layers_zero", "n_layer", 0), "\"n_layer\" is 0, outside 1..65536");
  {
    // A config.json that is a directory, or an endless device: named, not read forever.
    const std::string folder = with_config("config_folder", "n_layer", 2);
    fs::remove(folder + "/config.json");
    fs::create_directories(folder + "/config.json");
    refused(folder, folder + "/config.json is a directory, not a file");
    const std::string endless = with_config("config_endless", "n_layer", 2);
    fs::remove(endless + "/config.json");
    fs::create_symlink("/dev/zero", endless + "/config.json");
    refused(endless, endless + "/config.json is larger than 16777216 bytes");
  }
  {
    const std::string dir = with_config("deep", "n_layer", 2);
    const std::string text = test::read_bytes(dir + "/config.json");
    write_text(dir + "/config.json", text.substr(0, text.size() - 1) + ", \"n_inner\": " + std::string(200000, '[') +
                                         std::string(200000, ']') + "}");
    refused(dir, "is not a JSON object (or nests deeper than a config does)");
  }
  // A config far larger than its weights: refused from the header's shapes, before gpt2cc
  // allocates the config's ~10^18 parameters.
  refused(with_configs("huge", {{"n_layer", 65536}, {"n_embd", 1 << 20}, {"n_head", 1}}),
          "has shape [300, 32], expected [300, 1048576]");
  // Sharded weights (model.safetensors.index.json and its parts): refused, saying how to save one file.
  {
    const std::string dir = test::temp_dir("hf_sharded");
    write_text(dir + "/config.json", config_text);
    write_text(dir + "/model.safetensors.index.json", "{\"weight_map\": {}}");
    REQUIRE(is_hf_gpt2(dir));
    refused(dir, "holds Hugging Face weights in shards (model.safetensors.index.json)");
  }
  CHECK(load_checkpoint(with_config("inner_4c", "n_inner", 128), false).params == ckpt.params);

  // No config.json beside the weights: the directory is not Hugging Face weights; the file names it.
  const std::string lonely = test::temp_dir("hf_lonely");
  fs::copy_file(fixture_dir() + "/model.safetensors", lonely + "/model.safetensors");
  CHECK_FALSE(is_hf_gpt2(lonely));
  refused(lonely + "/model.safetensors", "config.json");

  // Tensors: one missing, one of a dtype not read, one unknown, an lm_head that is not wte.
  const ParameterLayout layout(ckpt.config);
  const auto with_tensors = [&](const std::string& name, const std::vector<safetensors::F32Tensor>& tensors) {
    const std::string dir = test::temp_dir("hf_tensors_" + name);
    write_text(dir + "/config.json", config_text);
    safetensors::write_f32(dir + "/model.safetensors", tensors);
    return dir;
  };
  const std::string exported = test::temp_dir("hf_base") + "/m";
  save_hf_gpt2(exported, ckpt.config, ckpt.params);
  const safetensors::File base(exported + "/model.safetensors");
  std::vector<std::vector<float>> storage;
  const std::vector<safetensors::F32Tensor> all = tensors_of(base, storage);
  std::vector<safetensors::F32Tensor> missing;
  for (const auto& t : all)
    if (t.name != "h.1.mlp.c_proj.bias") missing.push_back(t);
  refused(with_tensors("missing", missing), "has no tensor 'h.1.mlp.c_proj.bias'");
  {
    // A tensor of a dtype gpt2cc does not read (I32: the same width, so the header stays
    // consistent): refused from the header, naming it.
    std::string bytes = test::read_bytes(exported + "/model.safetensors");
    const size_t entry = bytes.find("\"h.1.mlp.c_fc.weight\"");
    REQUIRE(entry != std::string::npos);
    const size_t dtype = bytes.find("\"F32\"", entry);
    REQUIRE(dtype != std::string::npos);
    bytes.replace(dtype, 5, "\"I32\"");
    const std::string dir = test::temp_dir("hf_tensors_i32");
    write_text(dir + "/config.json", config_text);
    write_text(dir + "/model.safetensors", bytes);
    refused(dir, "tensor 'h.1.mlp.c_fc.weight' is I32; gpt2cc reads F32, F16 and BF16");
  }
  std::vector<float> extra_values(32, 1.0f);
  auto extra = all;
  extra.push_back({"h.0.attn.q_norm.weight", {32}, extra_values.data()});
  refused(with_tensors("extra", extra), "tensor 'h.0.attn.q_norm.weight' is not part of a GPT-2");
  // Causal-mask buffers: accepted for a layer the model has, under the file's prefix only.
  std::vector<float> mask(16, 1.0f);
  auto buffers = all;
  buffers.push_back({"h.1.attn.bias", {4, 4}, mask.data()});
  buffers.push_back({"h.0.attn.masked_bias", {1}, mask.data()});
  CHECK(load_checkpoint(with_tensors("buffers", buffers), false).params == ckpt.params);
  int strays = 0;
  for (const char* stray : {"h.7.attn.bias", "whatever.attn.bias", "transformer.h.0.attn.bias", "h.+1.attn.bias",
                            "h.-0.attn.bias", "h.01.attn.bias"}) {
    auto with_stray = all;
    with_stray.push_back({stray, {1}, mask.data()});
    refused(with_tensors("stray_" + std::to_string(strays++), with_stray),
            std::string("tensor '") + stray + "' is not part of a GPT-2");
  }
  std::vector<float> head = base.read_float("wte.weight");
  head[5] += 1.0f;
  auto untied = all;
  untied.push_back({"lm_head.weight", {300, 32}, head.data()});
  refused(with_tensors("untied_head", untied), "lm_head.weight differs from wte.weight");
  auto tied = all;
  const std::vector<float> wte = base.read_float("wte.weight");
  tied.push_back({"lm_head.weight", {300, 32}, wte.data()});
  CHECK(load_checkpoint(with_tensors("tied_head", tied), false).params == ckpt.params);
  // The tied embedding under lm_head.weight alone (safetensors' save_model keeps one name of tensors
  // that share memory), with and without "transformer." before the other names: loaded as wte.
  for (const std::string prefix : {"", "transformer."}) {
    std::vector<safetensors::F32Tensor> head_only;
    for (const auto& t : all)
      if (t.name != "wte.weight") head_only.push_back({prefix + t.name, t.shape, t.data});
    head_only.push_back({"lm_head.weight", {300, 32}, wte.data()});
    INFO("prefix '" << prefix << "'");
    CHECK(load_checkpoint(with_tensors("head_only" + std::to_string(prefix.size()), head_only), false).params ==
          ckpt.params);
  }
  // An lm_head one row short (wte's first 299 rows, so equal as far as it goes): refused by its
  // shape, not loaded as tied to wte.
  auto short_head = all;
  short_head.push_back({"lm_head.weight", {299, 32}, wte.data()});
  refused(with_tensors("short_head", short_head),
          "lm_head.weight has shape [299, 32], expected [300, 32] (tied to wte)");
  // Older checkpoints' scalar attn.masked_bias buffer beside the weights: ignored, the same load.
  const float masked_bias = -1e4f;
  auto with_masked_bias = all;
  with_masked_bias.push_back({"h.0.attn.masked_bias", {}, &masked_bias});
  CHECK(load_checkpoint(with_tensors("masked_bias", with_masked_bias), false).params == ckpt.params);

  // A run directory that also holds Hugging Face weights (exported into it) resumes from its step
  // checkpoints; a directory of weights alone resolves to itself.
  const std::string run = test::temp_dir("hf_run");
  fs::create_directories(run + "/checkpoints");
  Checkpoint step7 = ckpt;
  step7.step = 7;
  save_checkpoint(run + "/checkpoints/step_00000007.ckpt", step7);
  save_hf_gpt2(run, ckpt.config, ckpt.params);
  REQUIRE(is_hf_gpt2(run));
  CHECK(resolve_checkpoint(run) == run + "/checkpoints/step_00000007.ckpt");
  CHECK(load_checkpoint(resolve_checkpoint(run), true).step == 7);
  CHECK(resolve_checkpoint(fixture_dir()) == fixture_dir());

  // --resume needs a gpt2cc run.
  CHECK_THROWS_WITH(load_checkpoint(fixture_dir(), true),
                    Catch::Contains("holds Hugging Face GPT-2 weights, not a gpt2cc checkpoint"));
}

TEST_CASE("Hugging Face weights stream into a model a tensor or a piece at a time", "[model][hf]") {
  // wte of 6.4M floats: more than one piece (kCheckpointPiece), so it is read, checked against a
  // saved lm_head and handed on in pieces.
  ModelConfig config{.max_seq_len = 16, .vocab_size = 50257, .padded_vocab_size = padded_vocab(50257),
                     .num_layers = 1, .num_heads = 2, .channels = 128};
  const ParameterLayout layout(config);
  const size_t N = layout.total(), V = config.vocab_size, C = config.channels;
  std::vector<float> params = test::random_vector(N, 31);
  const ParamTensor& wte = layout[Param::wte];
  REQUIRE(V * C > kCheckpointPiece);
  std::fill(params.begin() + std::ptrdiff_t(wte.offset + V * C),
            params.begin() + std::ptrdiff_t(wte.offset + wte.numel), 0.0f);
  const std::string dir = test::temp_dir("hf_stream") + "/m";
  save_hf_gpt2(dir, config, params);

  // Every parameter exactly once, in pieces of at most kCheckpointPiece, with the exported values.
  const auto check_stream = [&](const std::string& path) {
    const HfGpt2Weights weights(path);
    CHECK(weights.info().config == config);
    std::vector<int> seen(N, 0);
    std::vector<float> got(N, -7.0f);
    size_t largest = 0, next = 0;
    weights.read_params([&](CheckpointArray array, size_t offset, std::span<const float> piece) {
      REQUIRE(array == CheckpointArray::params);
      REQUIRE(offset + piece.size() <= N);
      CHECK(offset == next);  // in gpt2cc's order, as a checkpoint's pieces come (save_hf_gpt2 takes them so)
      next = offset + piece.size();
      largest = std::max(largest, piece.size());
      for (size_t i = 0; i < piece.size(); ++i) {
        ++seen[offset + i];
        got[offset + i] = piece[i];
      }
    });
    CHECK(largest == kCheckpointPiece);
    CHECK(std::count(seen.begin(), seen.end(), 1) == std::ptrdiff_t(N));
    const bool same = got == params;  // (Catch would print both vectors of a failed ==)
    CHECK(same);
  };
  check_stream(dir);

  // A ranged read of a tensor is the slice of the whole; past the end it is refused.
  const safetensors::File file(dir + "/model.safetensors");
  const std::vector<float> whole = file.read_float("wte.weight");
  std::vector<float> slice(1000);
  file.read_float("wte.weight", kCheckpointPiece - 500, slice);
  CHECK(std::equal(slice.begin(), slice.end(), whole.begin() + std::ptrdiff_t(kCheckpointPiece - 500)));
  CHECK_THROWS_WITH(file.read_float("wte.weight", V * C - 999, slice), Catch::Contains("past its"));

  // A saved lm_head equal to wte loads the same; one that differs in its second piece only is
  // refused, naming the file.
  std::vector<std::vector<float>> storage;
  std::vector<safetensors::F32Tensor> tensors = tensors_of(file, storage);
  std::vector<float> head = whole;
  tensors.push_back({"lm_head.weight", {V, C}, head.data()});
  safetensors::write_f32(dir + "/model.safetensors", tensors);
  check_stream(dir);
  head[kCheckpointPiece + 3] += 1.0f;
  safetensors::write_f32(dir + "/model.safetensors", tensors);
  const HfGpt2Weights untied(dir);
  size_t pieces = 0;
  CHECK_THROWS_WITH(untied.read_params([&](CheckpointArray, size_t, std::span<const float>) { ++pieces; }),
                    Catch::Contains("model.safetensors") && Catch::Contains("lm_head.weight differs"));
  CHECK(pieces == 1);  // wte's first piece, equal to lm_head's, went on before the second differed
}

// save_hf_gpt2 from a stream of the parameters (train --export-hf streams them from the
// checkpoint): pieces of any size, crossing the tensors' boundaries and splitting the Conv1D
// matrices it transposes, give the file the whole vector gives, byte for byte. A stream that skips
// parameters is a bug (Error); one that throws (a damaged checkpoint) passes its error on; either
// way no model is written and the old one survives.
TEST_CASE("exported weights stream from the parameters' pieces; a failed stream writes no model", "[model][hf]") {
  const Checkpoint ckpt = load_checkpoint(fixture_dir(), false);
  const std::vector<float>& params = ckpt.params;
  const size_t N = params.size();
  const std::string dir = test::temp_dir("hf_export_stream");
  save_hf_gpt2(dir + "/whole", ckpt.config, params);
  const auto in_pieces = [&](size_t size) {
    return [&params, size](const CheckpointSink& take) {
      for (size_t at = 0; at < params.size(); at += size)
        take(CheckpointArray::params, at,
             std::span<const float>(params.data() + at, std::min(size, params.size() - at)));
    };
  };
  // The fixture's c_fc weight is 32 x 128 = 4096 floats: 1000-float pieces split it.
  REQUIRE(ParameterLayout(ckpt.config)[Param::fcw].numel / 2 > 1000);
  for (const size_t size : {size_t(1), size_t(1000), N}) {
    INFO(size << "-float pieces");
    save_hf_gpt2(dir + "/streamed", ckpt.config, in_pieces(size));
    CHECK(test::read_bytes(dir + "/streamed/model.safetensors") == test::read_bytes(dir + "/whole/model.safetensors"));
    CHECK(test::read_bytes(dir + "/streamed/config.json") == test::read_bytes(dir + "/whole/config.json"));
  }
  CHECK(load_checkpoint(dir + "/streamed", false).params == params);

  const std::string kept = test::read_bytes(dir + "/streamed/model.safetensors");
  const auto skipping = [&](const CheckpointSink& take) {
    take(CheckpointArray::params, 0, std::span<const float>(params.data(), 10));
    take(CheckpointArray::params, 11, std::span<const float>(params.data() + 11, N - 11));
  };
  CHECK_THROWS_WITH(save_hf_gpt2(dir + "/streamed", ckpt.config, skipping),
                    Catch::Contains(format("parameters [11, {}) given where 10 of {} were expected next", N, N)));
  const auto short_stream = [&](const CheckpointSink& take) {
    take(CheckpointArray::params, 0, std::span<const float>(params.data(), N - 1));
  };
  CHECK_THROWS_WITH(save_hf_gpt2(dir + "/streamed", ckpt.config, short_stream),
                    Catch::Contains(format("{} of {} parameters given", N - 1, N)));
  const auto damaged = [&](const CheckpointSink& take) {
    take(CheckpointArray::params, 0, std::span<const float>(params.data(), N / 2));
    fail_input("checkpoint x.ckpt is corrupt");
  };
  CHECK_THROWS_AS(save_hf_gpt2(dir + "/streamed", ckpt.config, damaged), InputError);
  CHECK(test::read_bytes(dir + "/streamed/model.safetensors") == kept);
  CHECK_FALSE(fs::exists(dir + "/streamed/model.safetensors.tmp"));
  CHECK_THROWS_AS(save_hf_gpt2(dir + "/fresh", ckpt.config, damaged), InputError);
  CHECK_FALSE(fs::exists(dir + "/fresh/model.safetensors"));
  CHECK_FALSE(fs::exists(dir + "/fresh/config.json"));
}
