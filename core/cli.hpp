// The exit-code contract of every gpt2cc command-line program, in one place:
//   0 success; 2 bad input (InputError, or any cxxopts error: unknown flag, unparsable value,
//   missing argument); 1 anything else (I/O failure, out of memory, an internal error).
// Usage:  int main(int argc, char** argv) { return gpt2cc::run_cli("train", argc, argv, run); }
// Out of memory (OutOfMemoryError, or the host's std::bad_alloc) prints the program's
// `memory_hint` too, when it gives one: which of its own flags use less.
// An unparsable value names its flag ("--lr: 'abc' is not a valid value"), which cxxopts does not.
// Under mpiexec, agree_on_failure lets the ranks of a job report a setup error once, together.
#pragma once

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstddef>
#include <cstring>
#include <cxxopts.hpp>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "core/backend.hpp"  // kMaxThreads, the bound of every --threads
#include "core/check.hpp"
#include "core/distributed.hpp"

namespace gpt2cc {

// How parsing a prefix of argv ended (parse_flags' search for the word that failed).
enum class PrefixParse { ok, bad_value, other_error };

// The value in cxxopts' "Argument ‘abc’ failed to parse" (cxxopts 3.1, Debian 12: curved quotes)
// or "Argument 'abc' failed to parse" (3.2, Debian 13); nothing for another message.
inline std::optional<std::string> unparsed_value(const std::string& message) {
  constexpr std::string_view head = "Argument ", tail = " failed to parse";
  const size_t at = message.find(head), end = message.rfind(tail);
  if (at == std::string::npos || end == std::string::npos || end < at + head.size()) return std::nullopt;
  const std::string_view quoted = std::string_view(message).substr(at + head.size(), end - at - head.size());
  for (const auto& [open, close] : {std::pair<std::string_view, std::string_view>{"\u2018", "\u2019"}, {"'", "'"}}) {
    if (quoted.size() >= open.size() + close.size() && quoted.starts_with(open) && quoted.ends_with(close))
      return std::string(quoted.substr(open.size(), quoted.size() - open.size() - close.size()));
  }
  return std::nullopt;
}

// Whether `text` is a whole number as typed: one sign at most, then decimal digits.
inline bool is_whole_number_text(std::string_view text) {
  if (text.starts_with('+') || text.starts_with('-')) text.remove_prefix(1);
  return !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
}

// The words for an integer type's values, as the out-of-range messages give them.
template <class Int>
std::string whole_number_range() {
  return format("a whole number from {} to {}", std::numeric_limits<Int>::min(), std::numeric_limits<Int>::max());
}

// cxxopts reports "Argument ‘abc’ failed to parse" without the flag; find which flag got it.
// With `parse_prefix` (how parsing argv[0, k) alone ends: parse_flags), the shortest prefix that
// fails on a bad value ends at the bad word (found by bisection: a prefix fails so from that word
// on); the word holds the value (--lr=abc, -Babc) or is the value of the flag before it, which
// then left argv[0, k - 1) waiting for its value (--lr abc), or else of no flag (a positional
// argument). Without `parse_prefix`, the first `--flag abc` or `--flag=abc` in argv, which may be
// a flag given the same text that parsed (--lr 0.5 --batch-size 0.5) or a flag's value.
// `range_of` gives an integer flag's range, by its name as typed (--steps, -B): a whole number that
// failed to parse is then said to be out of it.
inline std::string name_bad_value(
    const std::string& message, int argc, char** argv, const std::function<PrefixParse(int)>& parse_prefix = nullptr,
    const std::function<std::optional<std::string>(const std::string&)>& range_of = nullptr) {
  const std::optional<std::string> unparsed = unparsed_value(message);
  if (!unparsed) return message;
  const std::string& value = *unparsed;
  const auto named = [&](const std::string& flag) {
    if (range_of && is_whole_number_text(value))
      if (const std::optional<std::string> range = range_of(flag))
        return format("{}: '{}' is out of range ({})", flag, value, *range);
    return format("{}: '{}' is not a valid value", flag, value);
  };
  if (parse_prefix && argc >= 2 && parse_prefix(argc) == PrefixParse::bad_value) {
    int lo = 2, hi = argc;  // the shortest failing prefix is in [lo, hi]; argv[0, hi) fails
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (parse_prefix(mid) == PrefixParse::bad_value) hi = mid;
      else lo = mid + 1;
    }
    const std::string word = argv[hi - 1];
    if (word.size() > value.size() && word.ends_with(value) && word.starts_with("-")) {
      std::string flag = word.substr(0, word.size() - value.size());
      if (flag.ends_with('=')) flag.pop_back();
      return named(flag);
    }
    if (word == value && hi >= 3 && parse_prefix(hi - 1) == PrefixParse::other_error) return named(argv[hi - 2]);
    if (word == value) return format("'{}' is not a valid value for an argument given without a flag", value);
  }
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.starts_with("--") && arg.ends_with("=" + value)) return named(arg.substr(0, arg.find('=')));
    if (arg.starts_with("--") && i + 1 < argc && argv[i + 1] == value) return named(arg);
  }
  return message;
}

// cxxopts 3.1's integer parser misses most overflows (it checks each partial result against the
// next, which a wrap can pass): --steps 30000000000000000000 became 11553255926290448384 and
// --max-new-tokens 10000000000 became 1410065408. After a parse, this reads every decimal value
// given to an integer flag again, with std::from_chars into the flag's own type: a value that does
// not fit is refused (InputError naming the flag and the type's range). cxxopts 3.2 (Debian 13)
// refuses them itself, as values that failed to parse, and parse_flags names the range then
// (integer_flag_range): the same message either way.
namespace cli_detail {
// A flag's value as a T, or nothing when the flag has another type (cxxopts' as<T> throws then).
template <class T>
std::optional<T> value_as(const cxxopts::ParseResult& result, const std::string& key) {
  try {
    return result[key].as<T>();
  } catch (const std::bad_cast&) {
    return std::nullopt;
  }
}

template <class Int>
bool check_integer_flag(const cxxopts::ParseResult& result, const cxxopts::KeyValue& given) {
  const std::optional<Int> parsed = value_as<Int>(result, given.key());
  if (!parsed) return false;
  std::string_view text = given.value();
  if (text.starts_with('+')) text.remove_prefix(1);
  Int exact{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), exact);
  const bool fits = error == std::errc() && end == text.data() + text.size() && exact == *parsed;
  INPUT_CHECK(fits, "--{}: '{}' is out of range ({})", given.key(), given.value(), whole_number_range<Int>());
  return true;
}

template <class Int>
std::optional<std::string> range_if(const cxxopts::ParseResult& result, const std::string& key) {
  if (!value_as<Int>(result, key)) return std::nullopt;
  return whole_number_range<Int>();
}
}  // namespace cli_detail

// The range of an integer flag (by its name as typed: --steps, -B), or nothing for a flag of another
// type: "flag 0" parsed alone, its value asked for as each integer type. It parses into the
// options' bound variables: for a run that ends at a bad flag.
inline std::optional<std::string> integer_flag_range(cxxopts::Options& options, const char* program,
                                                     const std::string& flag) {
  std::string program_word = program, flag_word = flag, zero = "0";
  char* probe[] = {program_word.data(), flag_word.data(), zero.data()};
  cxxopts::ParseResult result;
  try {
    result = options.parse(3, probe);
  } catch (const cxxopts::exceptions::exception&) {
    return std::nullopt;
  }
  if (result.arguments().empty()) return std::nullopt;
  const std::string key = result.arguments().front().key();
  for (const auto& range_of : {cli_detail::range_if<int>, cli_detail::range_if<unsigned>, cli_detail::range_if<long>,
                               cli_detail::range_if<unsigned long>, cli_detail::range_if<long long>,
                               cli_detail::range_if<unsigned long long>})
    if (std::optional<std::string> range = range_of(result, key)) return range;
  return std::nullopt;
}

inline void check_integer_flags(const cxxopts::ParseResult& result) {
  const std::vector<cxxopts::KeyValue>& arguments = result.arguments();
  for (size_t i = 0; i < arguments.size(); ++i) {
    const cxxopts::KeyValue& given = arguments[i];
    // A flag given again: its value is the last one's.
    const auto again = [&](const cxxopts::KeyValue& later) { return later.key() == given.key(); };
    if (std::any_of(arguments.begin() + static_cast<std::ptrdiff_t>(i) + 1, arguments.end(), again)) continue;
    if (!is_whole_number_text(given.value())) continue;
    (cli_detail::check_integer_flag<int>(result, given) || cli_detail::check_integer_flag<unsigned>(result, given) ||
     cli_detail::check_integer_flag<long>(result, given) ||
     cli_detail::check_integer_flag<unsigned long>(result, given) ||
     cli_detail::check_integer_flag<long long>(result, given) ||
     cli_detail::check_integer_flag<unsigned long long>(result, given));
  }
}

// cxxopts reads a floating-point value with a stringstream and ignores what follows the number:
// --val-fraction 0.2oops became 0.2, --grad-clip 0x5 became 0. This reads every value given to a
// float or double flag again, as a decimal number (std::from_chars' general format: no hex, no
// leading space), and refuses one with anything after it (InputError naming the flag).
namespace cli_detail {
template <class Real>
bool check_real_flag(const cxxopts::ParseResult& result, const cxxopts::KeyValue& given) {
  if (!value_as<Real>(result, given.key())) return false;  // the flag has another type
  std::string_view text = given.value();
  if (text.starts_with('+')) text.remove_prefix(1);
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::general);
  INPUT_CHECK(!text.empty() && error != std::errc::invalid_argument && end == text.data() + text.size(),
              "--{}: '{}' is not a number", given.key(), given.value());
  // A float flag's value that only a double holds: --temperature 1e-50 would be 0 (and then be
  // refused as "got 0", or taken as 0).
  if constexpr (std::is_same_v<Real, float>)
    INPUT_CHECK(value == 0 || float(value) != 0, "--{}: '{}' is too small for a float (it would be 0)", given.key(),
                given.value());
  return true;
}
}  // namespace cli_detail

inline void check_real_flags(const cxxopts::ParseResult& result) {
  for (const cxxopts::KeyValue& given : result.arguments())
    cli_detail::check_real_flag<double>(result, given) || cli_detail::check_real_flag<float>(result, given);
}

// Every value given to a repeatable flag (or to the positional arguments, by their option's name),
// as typed, in order. cxxopts's own vector<string> value splits each at its commas: --stop
// "Hello, world" would be two stop strings, a file named "a,b.txt" two files.
inline std::vector<std::string> values_as_typed(const cxxopts::ParseResult& result, const std::string& name) {
  std::vector<std::string> values;
  for (const cxxopts::KeyValue& given : result.arguments())
    if (given.key() == name) values.push_back(given.value());
  return values;
}

// Whether a switch (a flag without a value, cxxopts's bool) is on: given, and not given "=false"
// (--greedy=false is off; count() alone would call it on).
inline bool switch_on(const cxxopts::ParseResult& result, const std::string& name) {
  return result.count(name) > 0 && result[name].as<bool>();
}

// options.parse, then check_integer_flags and check_real_flags: how every gpt2cc program reads its
// flags.
inline cxxopts::ParseResult parse_flags(cxxopts::Options& options, int argc, char** argv) {
  cxxopts::ParseResult result;
  try {
    result = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    // Which flag: prefixes of argv parsed again (the run ends here, so what those parses store
    // into the options' bound variables does not matter).
    const auto parse_prefix = [&](int k) {
      try {
        options.parse(k, argv);
      } catch (const cxxopts::exceptions::incorrect_argument_type&) {
        return PrefixParse::bad_value;
      } catch (const cxxopts::exceptions::exception&) {
        return PrefixParse::other_error;
      }
      return PrefixParse::ok;
    };
    const auto range_of = [&](const std::string& flag) { return integer_flag_range(options, argv[0], flag); };
    throw cxxopts::exceptions::parsing(name_bad_value(e.what(), argc, argv, parse_prefix, range_of));
  }
  check_integer_flags(result);
  check_real_flags(result);
  return result;
}

// The environment variables a program that runs the model reads, for the end of its --help
// (cxxopts lists flags only). Kept to pointers: the variables' full syntax lives in the docs.
// `ranks_share_cores`: the program's --threads 0, without OMP_NUM_THREADS, divides a machine's
// cores among its MPI ranks (train; generate is one process).
inline std::string environment_help(bool ranks_share_cores) {
  return std::string(R"( environment:
  GPT2CC_KERNELS=NAME=VALUE,...  --device cuda: a layer's kernel design in place of the
                                 automatic one (names and values: docs/cuda.md, "Kernel
                                 designs"); malformed: exit 2
  GPT2CC_REQUIRE_CUBLASLT=1      --dtype bf16: a GEMM cuBLASLt declines is an error instead of
                                 the cublasGemmEx fallback (default 0)
  OMP_NUM_THREADS                CPU threads when --threads is 0)") +
         (ranks_share_cores ? R"( (each rank's under mpiexec;
                                 unset, the ranks on a machine share its cores)
)"
                            : "\n");
}

// One line to stderr in one write, so that the lines of several ranks of one job never interleave.
inline void print_error_line(const std::string& line) { std::cerr << (line + "\n") << std::flush; }

// How a program ends on an exception: its exit code and the lines it prints, each to follow the
// program's name and ": ". `command` is the bare program name (for "see train --help").
struct CliFailure {
  int code = 1;
  std::vector<std::string> lines;
};
inline CliFailure describe_failure(std::exception_ptr error, const std::string& command, int argc, char** argv,
                                   const char* memory_hint) {
  const auto out_of_memory = [&](const std::string& what) {
    CliFailure f{1, {"error: " + what}};
    if (memory_hint != nullptr) f.lines.push_back(memory_hint);
    return f;
  };
  try {
    std::rethrow_exception(error);
  } catch (const OutOfMemoryError& e) {
    return out_of_memory(e.what());
  } catch (const std::bad_alloc&) {
    return out_of_memory("out of host memory (an allocation failed)");
  } catch (const InputError& e) {
    return {2, {e.what()}};
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    return {2, {name_bad_value(e.what(), argc, argv) + " (see " + command + " --help)"}};
  } catch (const cxxopts::exceptions::exception& e) {
    return {2, {std::string(e.what()) + " (see " + command + " --help)"}};
  } catch (const std::filesystem::filesystem_error& e) {
    // A path that names no file (a link loop, a file where a directory should be, too long, gone)
    // is bad input wherever std::filesystem met it; other errors (EIO, ...) are the machine's.
    const std::error_code code = e.code();
    const bool errno_code = code.category() == std::generic_category() || code.category() == std::system_category();
    const int value = code.value();
    if (errno_code && (value == ELOOP || value == ENOTDIR || value == ENAMETOOLONG || value == ENOENT)) {
      if (e.path1().empty()) return {2, {e.what()}};
      const std::string second = e.path2().empty() ? "" : " (to " + e.path2().string() + ")";
      return {2, {format("{}{}: {}", e.path1().string(), second, code.message())}};
    }
    return {1, {std::string("error: ") + e.what()}};
  } catch (const std::system_error& e) {
    // std::thread's failure to start one (a data loader's, a writer's) where memory or the
    // process's thread limit ran out: out of memory, with its hint, rather than the bare errno text.
    if (e.code() == std::errc::resource_unavailable_try_again || e.code() == std::errc::not_enough_memory)
      return out_of_memory(format("cannot start a thread: {} (too little memory, or the thread limit reached)",
                                  e.code().message()));
    return {1, {std::string("error: ") + e.what()}};
  } catch (const std::exception& e) {
    return {1, {std::string("error: ") + e.what()}};
  }
}

// A failure the ranks of a job have agreed on (agree_on_failure): every rank ends with `code`,
// and prints `lines` as they are, which only the root has.
struct AgreedFailure {
  int code = 1;
  std::vector<std::string> lines;
};

// Throws Error when what the program printed to stdout did not all arrive (a full disk behind
// `> file`, a pipe whose reader left: train ignores SIGPIPE): without it the exit's own flush
// would fail in silence, after exit code 0.
inline void flush_standard_output() {
  errno = 0;
  const bool failed = !std::cout.flush() || std::fflush(stdout) != 0 || std::ferror(stdout);
  // errno names the cause when this flush failed; an earlier write's failure left only the flag.
  if (failed) {
    struct stat out {};
    const bool pipe = ::fstat(STDOUT_FILENO, &out) == 0 && (S_ISFIFO(out.st_mode) || S_ISSOCK(out.st_mode));
    throw Error(format("writing standard output failed: {}",
                       errno  ? std::strerror(errno)
                       : pipe ? "a write to it failed (its reader closed the pipe?)"
                              : "a write to it failed (a full disk?)"));
  }
}

// Runs a program's `run(argc, argv)`: its exceptions become one error line each and an exit code
// (describe_failure); a run that returns 0 must have written its stdout (flush_standard_output).
// SIGXFSZ is ignored first: a write past the file-size limit (ulimit -f) then fails with EFBIG
// like one to a full disk (exit 1, a message naming the file, the temporary file removed) instead
// of killing the program with no word and its temporary file left behind.
template <class Run>
int run_cli(const char* program, int argc, char** argv, Run&& run, const char* memory_hint = nullptr) {
  const std::string name = program;                            // e.g. "train (rank 1 of 4)"
  const std::string command = name.substr(0, name.find(' '));  // "train"
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    const int code = run(argc, argv);
    if (code == 0) flush_standard_output();
    return code;
  } catch (const AgreedFailure& f) {
    for (const std::string& line : f.lines) print_error_line(line);
    return f.code;
  } catch (const std::exception&) {
    const CliFailure f = describe_failure(std::current_exception(), command, argc, argv, memory_hint);
    for (const std::string& line : f.lines) print_error_line(name + ": " + line);
    return f.code;
  }
}

// Runs `step` on every rank of `group`, then the ranks agree on how it went: when it threw on any
// of them, every rank throws AgreedFailure with the exit code of the first rank that failed, the
// root's carrying each distinct failure once, named with the ranks that had it
// (merge_rank_failures). A bad flag under `mpiexec -n 8` is then one line and exit code 2 on every
// rank, where each rank would print it and abort the others. `step` must call no collective (a
// rank that failed before it would leave the others waiting there): the agreement is the only one.
template <class Step>
void agree_on_failure(ProcessGroup& group, const std::string& command, int argc, char** argv, const char* memory_hint,
                      Step&& step) {
  if (group.size() == 1) {
    step();  // its error is run_cli's to print, as in any program
    return;
  }
  std::string mine;  // "<code> <line>\n<line>...", or "" where the step succeeded
  try {
    step();
  } catch (const std::exception&) {
    const CliFailure f = describe_failure(std::current_exception(), command, argc, argv, memory_hint);
    mine = std::to_string(f.code);
    for (size_t i = 0; i < f.lines.size(); ++i) mine += (i ? "\n" : " ") + f.lines[i];
  }
  AgreedFailure agreed;
  int code = 0;
  if (group.is_root()) {
    std::vector<std::string> failures = group.gather_strings(mine);
    for (std::string& failure : failures) {
      if (failure.empty()) continue;
      const size_t space = failure.find(' ');
      if (code == 0) code = std::stoi(failure.substr(0, space));
      failure.erase(0, space + 1);
      if (failure.empty()) failure = "(an error without a message)";  // "" is a rank that succeeded
    }
    agreed.lines = merge_rank_failures(command, failures);
  } else {
    group.gather_strings(mine);
  }
  group.broadcast(&code, sizeof code);
  if (code == 0) return;
  agreed.code = code;
  throw agreed;
}

}  // namespace gpt2cc
