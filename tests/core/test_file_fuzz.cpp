// Damaged files never crash the readers. A seeded random search over damage to valid files of
// every format the programs read: a checkpoint, Hugging Face weights (model.safetensors and
// config.json), a tokenizer (vocab.json and merges.txt), a token shard. Each case damages a copy
// of a valid file and reads it the way the programs do, to the end (every tensor and every token
// read, the tokenizer used); the read may succeed or throw gpt2cc::Error (every error the programs
// report with a message and exit code 2 or 1), nothing else: another exception (std::bad_alloc
// from a size taken on trust, std::length_error, nlohmann::json's own, std::out_of_range) fails
// the case, naming the damage, and a crash or a hang fails the test.
//
// The damage (tests/common/file_damage.hpp): to bytes, and to the JSON inside a file, written back
// with the container's length field (and a checkpoint's checksum) fixed so that the damage gets
// past the framing to the code that uses the values. Deterministic (fixed seeds); about 17,000
// cases in ~5 s. GPT2CC_FUZZ_LOG=1 prints every refusal with its damage.
#include "common/catch.hpp"

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/file_damage.hpp"
#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/checkpoint.hpp"
#include "core/config.hpp"
#include "core/dataloader.hpp"
#include "core/fnv1a.hpp"
#include "core/hf_gpt2.hpp"
#include "core/params.hpp"
#include "core/safetensors.hpp"
#include "core/shard.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace gpt2cc;
using namespace gpt2cc::test;
using nlohmann::json;

namespace {

// safetensors: the JSON's length (uint64 at byte 0), the JSON.
const JsonFrame kSafetensorsHeader{[](const std::string&) { return size_t{8}; },
                                   [](const std::string& file) { return size_t(load_le(file, 0, 8)); },
                                   [](std::string& file, size_t size) { store_le(file, 0, 8, size); }};

// A checkpoint's last 8 bytes: the FNV-1a checksum of everything before them (core/checkpoint.hpp),
// written again so that damage inside the file reaches the code after the checksum's check.
void seal_checkpoint(std::string& b) {
  if (b.size() < 8) return;
  Fnv1a sum;
  sum.add(b.data(), b.size() - 8);
  store_le(b, b.size() - 8, 8, sum.h);
}

// A tiny model: one layer, 8 channels, a vocabulary of 260.
ModelConfig tiny_config() {
  ModelConfig c;
  c.max_seq_len = 8;
  c.vocab_size = 260;
  c.padded_vocab_size = padded_vocab(c.vocab_size);
  c.num_layers = 1;
  c.num_heads = 2;
  c.channels = 8;
  return c;
}

}  // namespace

TEST_CASE("a damaged checkpoint is read or refused with a gpt2cc::Error", "[fuzz][checkpoint]") {
  const std::string dir = test::temp_dir("fuzz_checkpoint");
  std::vector<uint32_t> tokens(200);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t(i * 11 % 260);
  write_shard(dir + "/train.bin", tokens, 0x1234, 260);
  const int B = 2, T = 8;
  DataLoader loader({dir + "/train.bin"}, B, T, LoaderOrder::shuffled, 7);
  std::vector<int> inputs, targets;
  loader.next(inputs, targets);
  Checkpoint ckpt;
  ckpt.config = tiny_config();
  ckpt.step = 1;
  ckpt.tokens_seen = B * T;
  ckpt.loader = loader.position();
  ckpt.seed = 7;
  ckpt.tokenizer_fingerprint = 0x1234;
  ckpt.tokenizer_dir = "tok";
  ckpt.train_config = json{{"lr", 1e-3}, {"batch_size", B}};
  const size_t n = ParameterLayout(ckpt.config).total();
  ckpt.params = test::random_vector(n, 1);
  ckpt.m = test::random_vector(n, 2);
  ckpt.v = test::random_vector(n, 3, 0.0f, 1.0f);
  save_checkpoint(dir + "/step.ckpt", ckpt);
  // As --resume reads it: the arrays, then the loader put back where the run was.
  const auto read = [&] {
    const Checkpoint loaded = load_checkpoint(dir + "/step.ckpt");
    CHECK(loaded.params.size() == ParameterLayout(loaded.config).total());
    loader.restore(loaded.loader);
    loader.next(inputs, targets);
  };
  // "GPT2CKPT", version, the JSON's length (uint32 at byte 12), the JSON; the checksum last.
  const JsonFrame header{[](const std::string&) { return size_t{16}; },
                         [](const std::string& b) { return size_t(load_le(b, 12, 4)); },
                         [](std::string& b, size_t size) { store_le(b, 12, 4, size); }, seal_checkpoint};
  const auto sealed_bytes = [damage = bytes_of({"step.ckpt"})](std::map<std::string, std::string>& files,
                                                               std::mt19937_64& rng) {
    const std::string what = damage(files, rng);
    seal_checkpoint(files["step.ckpt"]);
    return what + " checksum written again";
  };
  SECTION("bytes") { search("checkpoint bytes", dir, {"step.ckpt"}, 1500, 11, bytes_of({"step.ckpt"}), read); }
  SECTION("bytes, the checksum written again") {
    search("checkpoint bytes, sealed", dir, {"step.ckpt"}, 1500, 12, sealed_bytes, read);
  }
  SECTION("header JSON, the checksum written again") {
    search("checkpoint header", dir, {"step.ckpt"}, 2000, 13, json_of("step.ckpt", header), read);
  }
}

TEST_CASE("damaged Hugging Face weights are read or refused with a gpt2cc::Error", "[fuzz][hf]") {
  const std::string dir = test::temp_dir("fuzz_hf");
  const ModelConfig config = tiny_config();
  const std::vector<float> params = test::random_vector(ParameterLayout(config).total(), 4);
  save_hf_gpt2(dir, config, params);
  const auto read = [&] {
    const Checkpoint loaded = load_hf_gpt2(dir);
    CHECK(loaded.params.size() == ParameterLayout(loaded.config).total());
  };
  const std::vector<std::string> files{"model.safetensors", "config.json"};
  SECTION("bytes") { search("HF bytes", dir, files, 1500, 21, bytes_of(files), read); }
  SECTION("safetensors header JSON") {
    search("safetensors header", dir, files, 1500, 22, json_of("model.safetensors", kSafetensorsHeader), read);
  }
  SECTION("config.json") { search("config.json", dir, files, 1000, 23, json_of("config.json", kWholeFile), read); }
}

TEST_CASE("a damaged safetensors file is read or refused with a gpt2cc::Error, tensor by tensor", "[fuzz][hf]") {
  const std::string dir = test::temp_dir("fuzz_safetensors");
  const std::vector<float> a = test::random_vector(12, 5), b = test::random_vector(5, 6);
  safetensors::write_f32(dir + "/t.safetensors", {{"a", {3, 4}, a.data()}, {"b.weight", {5}, b.data()}},
                         {{"format", "pt"}});
  const auto read = [&] {
    const safetensors::File file(dir + "/t.safetensors");
    for (const auto& [name, info] : file.tensors()) {
      const std::vector<float> all = file.read_float(name);
      CHECK(all.size() == info.numel());
      std::vector<float> piece(all.size() / 2);
      file.read_float(name, all.size() - piece.size(), piece);
    }
  };
  SECTION("bytes") {
    search("safetensors bytes", dir, {"t.safetensors"}, 1500, 31, bytes_of({"t.safetensors"}), read);
  }
  SECTION("header JSON") {
    search("safetensors header", dir, {"t.safetensors"}, 2000, 32, json_of("t.safetensors", kSafetensorsHeader), read);
  }
}

TEST_CASE("a damaged tokenizer is loaded or refused with a gpt2cc::Error", "[fuzz][tokenizer]") {
  const std::string dir = test::temp_dir("fuzz_tokenizer");
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, char(b)));
  tokens.insert(tokens.end(), {"ab", "abc", " t", "<|endoftext|>"});
  const Tokenizer valid = Tokenizer::from_parts(tokens, {{'a', 'b'}, {256, 'c'}, {' ', 't'}}, {259});
  valid.save(dir);
  const std::string text = "abc at the table\xC3\xA9<|endoftext|> ab";
  const auto read = [&] {
    const Tokenizer loaded = Tokenizer::load(dir);
    const std::vector<int> ids = loaded.encode(text);
    CHECK(!ids.empty());
    (void)loaded.decode(ids);
  };
  const std::vector<std::string> files{"vocab.json", "merges.txt"};
  SECTION("bytes") { search("tokenizer bytes", dir, files, 1500, 41, bytes_of(files), read); }
  SECTION("vocab.json") { search("vocab.json", dir, files, 1000, 42, json_of("vocab.json", kWholeFile), read); }
}

TEST_CASE("a damaged token shard is read or refused with a gpt2cc::Error", "[fuzz][data]") {
  const std::string dir = test::temp_dir("fuzz_shard");
  std::vector<uint32_t> tokens(300);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t(i * 7 % 260);
  write_shard(dir + "/shard.bin", tokens, 0x1234, 260);
  // As train reads a split (every window of one epoch, each id checked below the vocabulary: the
  // loader's InputError otherwise), and as the evaluation does.
  const auto read = [&] {
    const int B = 2, T = 16;
    DataLoader loader({dir + "/shard.bin"}, B, T, LoaderOrder::shuffled, 5);
    std::vector<int> inputs, targets;
    for (uint64_t w = 0; w < loader.windows_per_epoch(); w += B) loader.next(inputs, targets);
    EvalIterator eval({dir + "/shard.bin"}, B, T, T / 2);
    while (eval.next(inputs, targets) > 0) {
    }
  };
  search("shard bytes", dir, {"shard.bin"}, 1500, 51, bytes_of({"shard.bin"}), read);
}
