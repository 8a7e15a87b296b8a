// Reading untrusted JSON (checkpoint headers, saved settings, configs) strictly: a number as the
// integer type it must fit (nlohmann's get<T> truncates 2.5 to 2 and wraps -1 or 2^32 + 1 without
// a word), and a reader's errors as bad input naming what was read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/check.hpp"

namespace gpt2cc {

// `v` as a T when it is a whole number that T holds, else nullopt (a fraction, a string, out of
// range). nlohmann stores a JSON integer >= 0 as unsigned and a negative one as signed.
template <class T>
std::optional<T> whole_number(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (std::in_range<T>(u)) return static_cast<T>(u);
  } else if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (std::in_range<T>(i)) return static_cast<T>(i);
  }
  return std::nullopt;
}

// What a JSON library error says, without its "[json.exception.type_error.302] " tag: "type must
// be number, but is string", "key 'model' not found", "parse error at line 1, column 9: ...".
inline std::string json_error_text(const nlohmann::json::exception& e) {
  const std::string what = e.what();
  const size_t tag_end = what.find("] ");
  return what.starts_with("[json.exception.") && tag_end != std::string::npos ? what.substr(tag_end + 2) : what;
}

// Runs read(), which reads untrusted JSON: a JSON library error it throws (a missing key, a value
// of the wrong type) or an InputError of its own checks becomes InputError "<context>: <what>".
template <class Read>
decltype(auto) read_json_checked(const std::string& context, Read&& read) {
  try {
    return read();
  } catch (const nlohmann::json::exception& e) {
    fail_input(context + ": " + json_error_text(e));
  } catch (const InputError& e) {
    fail_input(context + ": " + e.what());
  }
}

}  // namespace gpt2cc
