// GPU peak rates from benchmarks/gpu/peaks.json, the one table that the C++ benchmarks and the
// PyTorch scripts (benchmarks/pytorch/bench_common.py) share. Each entry's `pattern` is a regular
// expression searched in the CUDA device name; the first entry that matches wins. A figure the
// table leaves null (unconfirmed) comes back empty, and the caller prints n/a instead of a guess.
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>

#include "core/check.hpp"

namespace gpt2cc::bench {

struct GpuPeaks {
  bool matched = false;  // an entry's pattern matched the device name
  std::string name, source;
  std::optional<double> bf16_dense_tflops, fp32_tflops, hbm_gbps;
};

inline std::optional<double> optional_number(const nlohmann::json& entry, const char* key) {
  const auto& v = entry.at(key);
  if (v.is_null()) return std::nullopt;
  return v.get<double>();
}

// peaks.json beside this header, in the source tree the benchmark was built from (__FILE__ is
// absolute: the project root is an absolute include directory). --peaks overrides it.
inline std::string default_peaks_path() {
  return (std::filesystem::path(__FILE__).parent_path() / "peaks.json").string();
}

// Throws InputError when the file is missing or malformed (it is a committed file: a user error).
inline GpuPeaks lookup_gpu_peaks(const std::string& device_name, const std::string& path) {
  std::ifstream f(path);
  INPUT_CHECK(f.good(), "cannot read the GPU peak table {} (--peaks)", path);
  GpuPeaks peaks;
  try {
    const nlohmann::json table = nlohmann::json::parse(f);
    for (const auto& entry : table.at("gpus")) {
      if (!std::regex_search(device_name, std::regex(entry.at("pattern").get<std::string>()))) continue;
      peaks.matched = true;
      peaks.name = entry.at("name").get<std::string>();
      peaks.source = entry.at("source").get<std::string>();
      peaks.bf16_dense_tflops = optional_number(entry, "bf16_dense_tflops");
      peaks.fp32_tflops = optional_number(entry, "fp32_tflops");
      peaks.hbm_gbps = optional_number(entry, "hbm_gbps");
      break;
    }
  } catch (const nlohmann::json::exception& e) {
    fail_input(format("malformed GPU peak table {}: {}", path, e.what()));
  } catch (const std::regex_error& e) {
    fail_input(format("malformed pattern in GPU peak table {}: {}", path, e.what()));
  }
  return peaks;
}

}  // namespace gpt2cc::bench
