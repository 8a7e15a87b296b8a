// Damaged files never crash the readers. A seeded random search over damage to valid files of
// every format the programs read: a checkpoint, Hugging Face weights (model.safetensors and
// config.json), a tokenizer (vocab.json and merges.txt), a token shard. Each case damages a copy
// of a valid file and reads it the way the programs do, to the end (every tensor and every token
// read, the tokenizer used); the read may succeed or throw gpt2cc::Error (every error the programs
// report with a message and exit code 2 or 1), nothing else: another exception (std::bad_alloc
// from a size taken on trust, std::length_error, nlohmann::json's own, std::out_of_range) fails
// the case, naming the damage, and a crash or a hang fails the test.
//
// Two kinds of damage: to bytes (bits flipped, bytes set to values parsers branch on, 4- or 8-byte
// fields overwritten with boundary integers, cuts, insertions, deletions, repeats), and to the
// JSON inside a file (a value anywhere in its tree replaced by a number at a limit, a value of
// another type, an empty or deeply nested container, a key dropped), written back with the
// container's length field (and a checkpoint's checksum) fixed so that the damage gets past the
// framing to the code that uses the values. Deterministic (fixed seeds); about 17,000 cases in
// ~5 s. GPT2CC_FUZZ_LOG=1 prints every refusal with its damage.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <typeinfo>
#include <vector>

#include <nlohmann/json.hpp>

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
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  REQUIRE(out);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out);
}

// ---- damage to bytes ----

// Integers at the limits of the fields a binary header holds (sizes, counts, offsets, versions).
const uint64_t kBoundaryIntegers[] = {0,
                                      1,
                                      2,
                                      7,
                                      0x7F,
                                      0xFF,
                                      0x7FFF,
                                      0xFFFF,
                                      0x10000,
                                      0x7FFFFFFF,
                                      0x80000000,
                                      0xFFFFFFFF,
                                      0x100000000,
                                      uint64_t{1} << 40,
                                      uint64_t{1} << 62,
                                      uint64_t{1} << 63,
                                      std::numeric_limits<uint64_t>::max(),
                                      std::numeric_limits<uint64_t>::max() - 7};
// Bytes that parsers branch on: JSON punctuation, digits and signs, UTF-8 lead and continuation
// bytes, a newline, a space, NUL.
const char kSyntaxBytes[] = {'\0', '\n', ' ',  '"',  '\\', '{',  '}',    '[',    ']',    ',',    ':',   '-',
                             '+',  '.',  'e',  '0',  '1',  '9',  '\x7F', '\x80', '\xBF', '\xC3', '\xE2', '\xF0',
                             '\xFF'};

// One random change to `bytes`; returns what it did.
std::string damage_bytes(std::string& bytes, std::mt19937_64& rng) {
  const auto pick = [&](size_t n) { return n == 0 ? size_t{0} : size_t(rng() % n); };
  const size_t n = bytes.size();
  switch (rng() % 8) {
    case 0: {
      if (n == 0) return "nothing to flip";
      const size_t at = pick(n);
      const int bit = int(rng() % 8);
      bytes[at] = char(uint8_t(bytes[at]) ^ (1u << bit));
      return format("bit {} of byte {} flipped", bit, at);
    }
    case 1: {
      if (n == 0) return "nothing to set";
      const size_t at = pick(n);
      const char c = kSyntaxBytes[pick(sizeof(kSyntaxBytes))];
      bytes[at] = c;
      return format("byte {} set to {}", at, unsigned(uint8_t(c)));
    }
    case 2:
    case 3: {  // a 4- or 8-byte little-endian field, more often at the start (the headers)
      const size_t width = rng() % 2 ? 8 : 4;
      if (n < width) return "too short for a field";
      const size_t at = rng() % 2 ? pick(std::min<size_t>(n - width + 1, 64)) : pick(n - width + 1);
      const uint64_t value = kBoundaryIntegers[pick(std::size(kBoundaryIntegers))];
      for (size_t i = 0; i < width; ++i) bytes[at + i] = char((value >> (8 * i)) & 0xFF);
      return format("{} bytes at {} set to {}", width, at, value);
    }
    case 4: {
      const size_t keep = pick(n + 1);
      bytes.resize(keep);
      return format("cut to {} of {} bytes", keep, n);
    }
    case 5: {
      const size_t at = pick(n + 1), count = 1 + pick(16);
      std::string inserted(count, '\0');
      for (char& c : inserted) c = rng() % 2 ? kSyntaxBytes[pick(sizeof(kSyntaxBytes))] : char(rng());
      bytes.insert(at, inserted);
      return format("{} bytes inserted at {}", count, at);
    }
    case 6: {
      if (n == 0) return "nothing to delete";
      const size_t at = pick(n), count = 1 + pick(std::min<size_t>(n - at, 64));
      bytes.erase(at, count);
      return format("{} bytes deleted at {}", count, at);
    }
    default: {
      if (n == 0) return "nothing to repeat";
      const size_t at = pick(n), count = 1 + pick(std::min<size_t>(n - at, 64));
      const std::string repeated = bytes.substr(at, count);
      bytes.insert(bytes.begin() + std::ptrdiff_t(at), repeated.begin(), repeated.end());
      return format("{} bytes at {} repeated", count, at);
    }
  }
}

// ---- damage to JSON ----

// Values a reader may not expect where it finds them.
json odd_value(std::mt19937_64& rng) {
  switch (rng() % 16) {
    case 0: return nullptr;
    case 1: return -1;
    case 2: return 0;
    case 3: return 1.5;
    case 4: return 1e300;
    case 5: return -1e300;
    case 6: return std::numeric_limits<uint64_t>::max();
    case 7: return std::numeric_limits<int64_t>::min();
    case 8: return uint64_t{1} << 31;
    case 9: return "";
    case 10: return "x";
    case 11: return json::array();
    case 12: return json::object();
    case 13: return true;
    case 14: return json::array({std::numeric_limits<uint64_t>::max(), -1});
    default: {
      json deep = json::array();
      for (int i = 0; i < 64; ++i) deep = json::array({deep});
      return deep;
    }
  }
}

// Every value in `j` (depth first), as JSON pointers.
void collect_pointers(const json& j, const json::json_pointer& at, std::vector<json::json_pointer>& out) {
  out.push_back(at);
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) collect_pointers(it.value(), at / it.key(), out);
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) collect_pointers(j[i], at / std::to_string(i), out);
  }
}

// One random change to the tree `j`; returns what it did.
std::string damage_json(json& j, std::mt19937_64& rng) {
  std::vector<json::json_pointer> pointers;
  collect_pointers(j, json::json_pointer(), pointers);
  const json::json_pointer at = pointers[rng() % pointers.size()];
  if (!at.empty() && rng() % 4 == 0) {
    json& parent = j[at.parent_pointer()];
    const std::string key = at.back();
    if (parent.is_object()) {
      parent.erase(key);
      return format("'{}' dropped", at.to_string());
    }
  }
  json value = odd_value(rng);
  const std::string text = value.dump();
  j[at] = std::move(value);
  return format("'{}' set to {}", at.to_string(), text.size() > 40 ? text.substr(0, 40) + "..." : text);
}

// ---- the search ----

// GPT2CC_FUZZ_LOG=1: each refusal's message and damage, and each search's count of reads, on
// stderr (to see how far into the readers the damage gets).
bool log_refusals() {
  static const bool on = [] {
    const char* v = std::getenv("GPT2CC_FUZZ_LOG");
    return v != nullptr && std::string(v) == "1";
  }();
  return on;
}

// Runs `read` on `cases` damaged versions of `files` (the directory's files by name, rewritten in
// place before each case and restored after). `damage` changes the files' bytes (by name) and
// says what it did. Fails at the first case whose read throws anything but gpt2cc::Error.
void search(const std::string& what, const std::string& dir, const std::vector<std::string>& files, int cases,
           uint64_t seed,
           const std::function<std::string(std::map<std::string, std::string>&, std::mt19937_64&)>& damage,
           const std::function<void()>& read) {
  std::map<std::string, std::string> valid;
  for (const std::string& f : files) valid[f] = read_bytes(dir + "/" + f);
  read();  // the undamaged files read
  std::mt19937_64 rng(seed);
  int succeeded = 0;  // the rest were refused
  for (int c = 0; c < cases; ++c) {
    std::map<std::string, std::string> bytes = valid;
    const std::string change = damage(bytes, rng);
    for (const auto& [name, content] : bytes) write_bytes(dir + "/" + name, content);
    std::string failure;
    try {
      read();
      ++succeeded;
    } catch (const Error& e) {
      // refused with a message: what the programs do with it
      if (log_refusals()) std::fprintf(stderr, "refused: %s | %s\n", e.what(), change.c_str());
    } catch (const std::exception& e) {
      failure = format("{} ({})", e.what(), typeid(e).name());
    } catch (...) {
      failure = "an exception not derived from std::exception";
    }
    if (!failure.empty()) {
      INFO(what << ", case " << c << " (seed " << seed << "): " << change);
      FAIL("not a gpt2cc::Error: " << failure);
    }
  }
  for (const auto& [name, content] : valid) write_bytes(dir + "/" + name, content);
  if (log_refusals()) std::fprintf(stderr, "%s: %d of %d damaged files read\n", what.c_str(), succeeded, cases);
}

// Damage to the bytes of one of `names`, 1 to 3 changes.
auto bytes_of(std::vector<std::string> names) {
  return [names](std::map<std::string, std::string>& files, std::mt19937_64& rng) {
    const std::string& name = names[rng() % names.size()];
    std::string what = name + ":";
    const int changes = 1 + int(rng() % 3);
    for (int i = 0; i < changes; ++i) what.append(" ").append(damage_bytes(files[name], rng)).append(";");
    return what;
  };
}

// The container around a JSON text: where it starts and how its length is written back.
struct JsonFrame {
  std::function<size_t(const std::string&)> start;  // offset of the JSON in the file
  std::function<size_t(const std::string&)> size;   // its length
  std::function<void(std::string&, size_t)> set_size;  // writes a new length into the header
  std::function<void(std::string&)> seal = [](std::string&) {};  // e.g. writes the checksum again
};
// A whole file of JSON.
const JsonFrame kWholeFile{[](const std::string&) { return size_t{0}; },
                           [](const std::string& b) { return b.size(); }, [](std::string&, size_t) {}};

uint64_t load_le(const std::string& b, size_t at, int width) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) v |= uint64_t(uint8_t(b[at + i])) << (8 * i);
  return v;
}
void store_le(std::string& b, size_t at, int width, uint64_t v) {
  for (int i = 0; i < width; ++i) b[at + i] = char((v >> (8 * i)) & 0xFF);
}

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

// Damage (1 or 2 changes) to the JSON inside file `name`, written back within its frame.
auto json_of(std::string name, JsonFrame frame) {
  return [name, frame](std::map<std::string, std::string>& files, std::mt19937_64& rng) {
    std::string& b = files[name];
    const size_t start = frame.start(b), size = frame.size(b);
    json j = json::parse(b.substr(start, size));
    std::string what = name + ":";
    const int changes = 1 + int(rng() % 2);
    for (int i = 0; i < changes; ++i) what.append(" ").append(damage_json(j, rng)).append(";");
    const std::string text = j.dump();
    b.replace(start, size, text);
    frame.set_size(b, text.size());
    frame.seal(b);
    return what;
  };
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
