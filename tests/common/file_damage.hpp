// Damage to files, for the tests that hold a reader to "read, or refused with gpt2cc::Error, never
// another exception or a crash" (tests/core/test_file_fuzz.cpp, tests/data/test_format_fuzz.cpp).
// Two kinds: to bytes (bits flipped, bytes set to values parsers branch on, 4- or 8-byte fields
// overwritten with boundary integers, cuts, insertions, deletions, repeats), and to the JSON inside
// a file (a value anywhere in its tree replaced by a number at a limit, a value of another type, an
// empty or deeply nested container, a key dropped), written back within its frame. Seeded:
// deterministic.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpt2cc::test {

void write_bytes(const std::string& path, const std::string& bytes);

// One random change to `bytes`, or to the tree `j`; returns what it did.
std::string damage_bytes(std::string& bytes, std::mt19937_64& rng);
std::string damage_json(nlohmann::json& j, std::mt19937_64& rng);

// A damage to a set of files (their bytes by name); returns what it did.
using FileDamage = std::function<std::string(std::map<std::string, std::string>& files, std::mt19937_64& rng)>;

// Runs `read` on the undamaged files, then on `cases` damaged versions of `files` (the directory's
// files by name, rewritten in place before each case and restored after). Fails the test case at
// the first read that throws anything but gpt2cc::Error, naming the damage. GPT2CC_FUZZ_LOG=1
// prints each refusal with its damage and each search's count of reads on stderr (to see how far
// into the reader the damage gets).
void search(const std::string& what, const std::string& dir, const std::vector<std::string>& files, int cases,
            uint64_t seed, const FileDamage& damage, const std::function<void()>& read);

// 1 to 3 changes to the bytes of one of `names`.
FileDamage bytes_of(std::vector<std::string> names);

// Little-endian integers of `width` bytes at `at`.
uint64_t load_le(const std::string& b, size_t at, int width);
void store_le(std::string& b, size_t at, int width, uint64_t v);

// The container around a JSON text in a file: where it starts and how its length is written back.
struct JsonFrame {
  std::function<size_t(const std::string&)> start;     // offset of the JSON in the file
  std::function<size_t(const std::string&)> size;      // its length
  std::function<void(std::string&, size_t)> set_size;  // writes a new length into the header
  std::function<void(std::string&)> seal = [](std::string&) {};  // e.g. writes a checksum again
};
// A whole file of JSON.
inline const JsonFrame kWholeFile{[](const std::string&) { return size_t{0}; },
                                  [](const std::string& b) { return b.size(); }, [](std::string&, size_t) {}};

// 1 or 2 changes to the JSON text bytes[start, start + size), written back in its place; `size`
// becomes the new text's length. Returns what it did.
std::string damage_json_at(std::string& bytes, size_t start, size_t& size, std::mt19937_64& rng);

// 1 or 2 changes to the JSON inside file `name`, written back within its frame (its length field
// and seal updated, so that the damage gets past the framing to the code that uses the values).
FileDamage json_of(std::string name, JsonFrame frame);

}  // namespace gpt2cc::test
