// The exit-code contract of every gpt2cc command-line program, in one place:
//   0 success; 2 bad input (InputError, or any cxxopts error: unknown flag, unparsable value,
//   missing argument); 1 anything else (I/O failure, out of memory, an internal error).
// Usage:  int main(int argc, char** argv) { return gpt2cc::run_cli("train", argc, argv, run); }
// Out of memory (OutOfMemoryError, or the host's std::bad_alloc) prints the program's
// `memory_hint` too, when it gives one: which of its own flags use less.
// An unparsable value names its flag ("--lr: 'abc' is not a valid value"), which cxxopts does not.
#pragma once

#include <cxxopts.hpp>
#include <iostream>
#include <new>
#include <string>

#include "core/check.hpp"

namespace gpt2cc {

// cxxopts reports "Argument ‘abc’ failed to parse" without the flag; find which flag got it.
inline std::string name_bad_value(const std::string& message, int argc, char** argv) {
  const size_t open = message.find("\u2018"), close = message.find("\u2019");
  if (open == std::string::npos || close == std::string::npos) return message;
  const std::string value = message.substr(open + 3, close - open - 3);  // the quotes are 3 bytes in UTF-8
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string flag;
    if (arg.starts_with("--") && arg.ends_with("=" + value)) flag = arg.substr(0, arg.find('='));
    if (arg.starts_with("--") && i + 1 < argc && argv[i + 1] == value) flag = arg;
    if (!flag.empty()) return format("{}: '{}' is not a valid value", flag, value);
  }
  return message;
}

// One line to stderr in one write, so that the lines of several ranks of one job never interleave.
inline void print_error_line(const std::string& line) { std::cerr << (line + "\n") << std::flush; }

template <class Run>
int run_cli(const char* program, int argc, char** argv, Run&& run, const char* memory_hint = nullptr) {
  const std::string name = program;                       // e.g. "train (rank 1 of 4)"
  const std::string command = name.substr(0, name.find(' '));  // "train"
  const auto out_of_memory = [&](const std::string& what) {
    print_error_line(name + ": error: " + what);
    if (memory_hint != nullptr) print_error_line(name + ": " + memory_hint);
    return 1;
  };
  try {
    return run(argc, argv);
  } catch (const OutOfMemoryError& e) {
    return out_of_memory(e.what());
  } catch (const std::bad_alloc&) {
    return out_of_memory("out of host memory (an allocation failed)");
  } catch (const InputError& e) {
    print_error_line(name + ": " + e.what());
    return 2;
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    print_error_line(name + ": " + name_bad_value(e.what(), argc, argv) + " (see " + command + " --help)");
    return 2;
  } catch (const cxxopts::exceptions::exception& e) {
    print_error_line(name + ": " + e.what() + " (see " + command + " --help)");
    return 2;
  } catch (const std::exception& e) {
    print_error_line(name + ": error: " + e.what());
    return 1;
  }
}

}  // namespace gpt2cc
