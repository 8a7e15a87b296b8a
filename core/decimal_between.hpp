// A whole number written in decimal between fixed text, as file names and log lines carry one:
// "step_" 300 ".ckpt", "=== step " 12 " ===".
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>
#include <system_error>

namespace gpt2cc {

// The number `text` holds when it is exactly head + one or more decimal digits + tail; nullopt for
// any other text (a sign, a space, no digits). A number beyond 64 bits gives `too_large` (nullopt
// unless the caller names a value, e.g. the largest, for a number that must still order last).
inline std::optional<uint64_t> decimal_between(std::string_view text, std::string_view head, std::string_view tail,
                                               std::optional<uint64_t> too_large = std::nullopt) {
  if (text.size() <= head.size() + tail.size() || !text.starts_with(head) || !text.ends_with(tail)) return std::nullopt;
  const std::string_view digits = text.substr(head.size(), text.size() - head.size() - tail.size());
  uint64_t n = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (end != digits.data() + digits.size()) return std::nullopt;
  if (error == std::errc::result_out_of_range) return too_large;
  return error == std::errc() ? std::optional<uint64_t>(n) : std::nullopt;
}

}  // namespace gpt2cc
