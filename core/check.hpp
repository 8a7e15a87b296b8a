// Errors and invariant checks shared by every part of the engine.
//
//   ENSURE(cond, "wte must have shape ({}, {}), got ({}, {})", Vp, C, rows, cols);
//       an internal invariant; throws gpt2cc::Error (CLIs exit 1).
//   INPUT_CHECK(cond, "--lr must be > 0, got {}", lr);
//       bad user input (flags, files, configs); throws gpt2cc::InputError (CLIs exit 2).
//
// Messages use "{}" placeholders filled in order with operator<< (g++ 12 has no <format>; see
// format below for g++ 13 and later, which have).
// (ENSURE rather than CHECK: Catch2, which every test includes, owns the name CHECK.)
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace gpt2cc {

// Something the engine itself got wrong, or an environment failure (CUDA, out of memory).
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Device or host memory ran out (the message says how much was asked and free). Exit code 1; the
// programs add which of their flags use less (run_cli).
struct OutOfMemoryError : Error {
  using Error::Error;
};

// Something the user gave us is wrong: a flag, a file, a configuration. Exit code 2.
struct InputError : Error {
  using Error::Error;
};

namespace detail {
inline void format_into(std::ostringstream& os, std::string_view fmt) { os << fmt; }

template <class T, class... Rest>
void format_into(std::ostringstream& os, std::string_view fmt, const T& first, const Rest&... rest) {
  size_t at = fmt.find("{}");
  if (at == std::string_view::npos) {
    os << fmt;
    return;
  }
  os << fmt.substr(0, at) << first;
  format_into(os, fmt.substr(at + 2), rest...);
}

template <class... Args>
std::string format_pattern(std::string_view fmt, const Args&... args) {
  std::ostringstream os;
  format_into(os, fmt, args...);
  return os.str();
}
}  // namespace detail

// format("expected {} got {}", 3, 4) == "expected 3 got 4". One overload per kind of pattern, each
// taking it without a conversion, the arguments as forwarding references: g++ 13 and later
// declare std::format, which an unqualified call with an argument from std (a std::string) finds
// too, by argument-dependent lookup; its pattern needs a conversion, so these stay the better match.
template <class... Args>
std::string format(const char* fmt, Args&&... args) {
  return detail::format_pattern(fmt, args...);
}
template <class... Args>
std::string format(const std::string& fmt, Args&&... args) {
  return detail::format_pattern(fmt, args...);
}
template <class... Args>
std::string format(std::string_view fmt, Args&&... args) {
  return detail::format_pattern(fmt, args...);
}

// "1.50 GiB", "72.0 MiB", "8.0 KiB": the largest unit that is at least 1.
inline std::string human_bytes(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  for (; u < 4 && bytes >= 1024.0; ++u) bytes /= 1024.0;
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : bytes < 10 ? "%.2f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

// A byte as two lowercase hex digits ("1b"): messages show a byte that is not printable ASCII as
// \xNN (a NUL would cut them short, an escape sequence reach the terminal).
inline std::string hex_byte(unsigned char b) {
  constexpr const char* kDigits = "0123456789abcdef";
  return {kDigits[b >> 4], kDigits[b & 15]};
}

// `word` as a POSIX shell reads it back: bare when it holds only characters no shell treats
// specially, else in single quotes (a ' inside as '\''). For commands a program suggests.
inline std::string shell_quote(const std::string& word) {
  const auto plain = [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) ||
           std::string_view("_./-+:=,@%").find(ch) != std::string_view::npos;
  };
  const bool bare = !word.empty() && std::all_of(word.begin(), word.end(), plain);
  if (bare) return word;
  std::string quoted = "'";
  for (char ch : word) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

[[noreturn]] inline void fail_check(const char* file, int line, const char* expr, const std::string& message) {
  throw Error(format("{} ({}:{}, check `{}` failed)", message, file, line, expr));
}

[[noreturn]] inline void fail_input(const std::string& message) { throw InputError(message); }

}  // namespace gpt2cc

#define ENSURE(cond, ...)                                                               \
  do {                                                                                  \
    if (!(cond)) ::gpt2cc::fail_check(__FILE__, __LINE__, #cond, ::gpt2cc::format(__VA_ARGS__)); \
  } while (0)

#define INPUT_CHECK(cond, ...)                                         \
  do {                                                                 \
    if (!(cond)) ::gpt2cc::fail_input(::gpt2cc::format(__VA_ARGS__)); \
  } while (0)
