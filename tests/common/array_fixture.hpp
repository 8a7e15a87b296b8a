// A fixture written by one of tests/make_*.py: <stem>.json (what was generated, and an index
// "arrays": {name: {"offset": bytes, "shape": [...], "dtype": ...}}) beside <stem>.bin (the
// little-endian raw arrays) in tests/fixtures. Every failure names the file and how to
// regenerate it.
#pragma once

#include "common/catch.hpp"

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gpt2cc::test {

// The fixture's name of the dtype an array is read as (bfloat16 is read as its 16 bits).
template <class T>
const char* fixture_dtype();
template <>
inline const char* fixture_dtype<float>() { return "float32"; }
template <>
inline const char* fixture_dtype<int32_t>() { return "int32"; }
template <>
inline const char* fixture_dtype<uint16_t>() { return "bfloat16"; }

struct ArrayFixture {
  std::string stem;        // tests/fixtures/<stem>.{json,bin}
  std::string regenerate;  // the command that writes it
  nlohmann::json meta;
  std::vector<char> blob;

  // Array `name`, which must hold expected_count elements of T's dtype.
  template <class T>
  std::vector<T> array(const std::string& name, size_t expected_count) const {
    INFO("array '" << name << "' of fixture " << stem << " (regenerate with: " << regenerate << ")");
    REQUIRE(meta["arrays"].contains(name));
    const nlohmann::json& entry = meta["arrays"][name];
    REQUIRE(entry["dtype"].get<std::string>() == fixture_dtype<T>());
    size_t count = 1;
    for (size_t d : entry["shape"].get<std::vector<size_t>>()) count *= d;
    REQUIRE(count == expected_count);
    const size_t offset = entry["offset"].get<size_t>();
    REQUIRE(offset + count * sizeof(T) <= blob.size());
    std::vector<T> out(count);
    std::memcpy(out.data(), blob.data() + offset, count * sizeof(T));
    return out;
  }
};

// Reads tests/fixtures/<stem>.json and <stem>.bin (a REQUIRE fails, naming them, when either is
// missing or the JSON does not parse).
ArrayFixture load_array_fixture(const std::string& stem, const std::string& regenerate);

}  // namespace gpt2cc::test
