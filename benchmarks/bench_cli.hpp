// What the CPU benchmarks' command lines share beyond core/cli.hpp: a --json FILE checked before
// the benchmark runs (minutes of it), so that a path that cannot be written is refused at once
// (exit 2) rather than after the run, and comma-separated lists of whole numbers read strictly
// ("4,,16" and "4x" are refused, where std::stoi took "4x" as 4 and threw a bare "stoi" on "").
// The write itself, at the end, is write_file_atomic's (core/atomic_file.hpp): a failure there
// (disk full) is exit 1 naming the file. And the one median every benchmark reports.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/check.hpp"

namespace gpt2cc::bench {

// The median of a benchmark's samples: the middle one, or the mean of the two middle ones when
// there is an even number of them (the upper one alone would be the maximum of two). None: NaN.
template <class T>
double median(std::vector<T> values) {
  const size_t n = values.size();
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  return n % 2 ? double(values[n / 2]) : 0.5 * (double(values[n / 2 - 1]) + double(values[n / 2]));
}

// FILE is not a directory and can be created or replaced: where write_file_atomic writes (through
// a link to the file behind it) the directory exists and is writable, or the device or FIFO
// already there (/dev/null) is writable in place.
inline void check_output_file(const std::string& flag, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  INPUT_CHECK(!path.empty(), "{} is empty: give a file name", flag);
  INPUT_CHECK(!fs::is_directory(path, ec), "{} {} is a directory, not a file", flag, path);
  const WriteTarget target = resolve_write_target(path);
  if (target.in_place) {
    INPUT_CHECK(::access(target.path.c_str(), W_OK) == 0, "{} {} is not writable", flag, path);
    return;
  }
  const fs::path parent = fs::path(target.path).parent_path();
  const std::string dir = parent.empty() ? "." : parent.string();
  INPUT_CHECK(fs::is_directory(dir, ec), "{} {}: the directory {} does not exist", flag, path, dir);
  INPUT_CHECK(::access(dir.c_str(), W_OK) == 0, "{} {}: the directory {} is not writable", flag, path, dir);
}

// `text` is one whole number and nothing else (no space, no trailing characters) that fits an int.
inline bool parse_int(std::string_view text, int& value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return !text.empty() && error == std::errc() && end == text.data() + text.size();
}

// "a,b" -> {"a", "b"}; an empty item (",a", "a,,b", and "a," too) is an InputError naming the flag.
// An empty list is empty.
inline std::vector<std::string> split_list(const std::string& flag, const std::string& list) {
  std::vector<std::string> items;
  if (list.empty()) return items;
  for (size_t begin = 0;;) {
    const size_t comma = list.find(',', begin);
    items.push_back(list.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin));
    INPUT_CHECK(!items.back().empty(), "{}: an empty item in '{}' (a comma too many?)", flag, list);
    if (comma == std::string::npos) return items;
    begin = comma + 1;
  }
}

// "4,16" -> {4, 16}; each item a whole number >= 1, else InputError naming the flag and the item.
// An empty list is empty (the flag's "skip").
inline std::vector<int> parse_count_list(const std::string& flag, const std::string& list) {
  std::vector<int> counts;
  for (const std::string& item : split_list(flag, list)) {
    int n = 0;
    INPUT_CHECK(parse_int(item, n) && n >= 1, "{}: '{}' in '{}' is not a whole number >= 1", flag, item, list);
    counts.push_back(n);
  }
  return counts;
}

}  // namespace gpt2cc::bench
