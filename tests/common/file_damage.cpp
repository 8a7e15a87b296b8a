// Damage to files for the fuzz tests (tests/common/file_damage.hpp).
#include "common/file_damage.hpp"

#include "common/catch.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <limits>
#include <typeinfo>

#include "common/test_common.hpp"
#include "core/check.hpp"

namespace gpt2cc::test {

using nlohmann::json;

namespace {

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

}  // namespace

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  REQUIRE(out);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out);
}

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

// Runs `read` on `cases` damaged versions of `files` (the directory's files by name, rewritten in
// place before each case and restored after). `damage` changes the files' bytes (by name) and
// says what it did. Fails at the first case whose read throws anything but gpt2cc::Error.
void search(const std::string& what, const std::string& dir, const std::vector<std::string>& files, int cases,
            uint64_t seed, const FileDamage& damage, const std::function<void()>& read) {
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
FileDamage bytes_of(std::vector<std::string> names) {
  return [names](std::map<std::string, std::string>& files, std::mt19937_64& rng) {
    const std::string& name = names[rng() % names.size()];
    std::string what = name + ":";
    const int changes = 1 + int(rng() % 3);
    for (int i = 0; i < changes; ++i) what.append(" ").append(damage_bytes(files[name], rng)).append(";");
    return what;
  };
}

uint64_t load_le(const std::string& b, size_t at, int width) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) v |= uint64_t(uint8_t(b[at + i])) << (8 * i);
  return v;
}
void store_le(std::string& b, size_t at, int width, uint64_t v) {
  for (int i = 0; i < width; ++i) b[at + i] = char((v >> (8 * i)) & 0xFF);
}

std::string damage_json_at(std::string& bytes, size_t start, size_t& size, std::mt19937_64& rng) {
  json j = json::parse(bytes.substr(start, size));
  std::string what;
  const int changes = 1 + int(rng() % 2);
  for (int i = 0; i < changes; ++i) what.append(" ").append(damage_json(j, rng)).append(";");
  const std::string text = j.dump();
  bytes.replace(start, size, text);
  size = text.size();
  return what;
}

// Damage (1 or 2 changes) to the JSON inside file `name`, written back within its frame.
FileDamage json_of(std::string name, JsonFrame frame) {
  return [name, frame](std::map<std::string, std::string>& files, std::mt19937_64& rng) {
    std::string& b = files[name];
    size_t size = frame.size(b);
    const std::string what = name + ":" + damage_json_at(b, frame.start(b), size, rng);
    frame.set_size(b, size);
    frame.seal(b);
    return what;
  };
}

}  // namespace gpt2cc::test
