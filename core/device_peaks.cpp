// The GPU peak table (core/device_peaks.hpp): parsing and checking benchmarks/gpu/peaks.json
// (built in, or a file), the lookup by device name, and the FLOP count per token behind MFU.
#include "core/device_peaks.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "core/check.hpp"
#include "core/device_peaks_table.hpp"  // generated: kDevicePeaksJson
#include "core/json_number.hpp"

namespace gpt2cc {
namespace {

std::optional<double> optional_number(const nlohmann::json& entry, const char* key) {
  const auto& v = entry.at(key);
  if (v.is_null()) return std::nullopt;
  return v.get<double>();
}

// `origin` names the table in messages.
DevicePeaks lookup(const std::string& device_name, std::istream& table_text, const std::string& origin) {
  DevicePeaks peaks;
  try {
    const nlohmann::json table = nlohmann::json::parse(table_text);
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
    fail_input(format("malformed GPU peak table {}: {}", origin, json_error_text(e)));
  } catch (const std::regex_error& e) {
    fail_input(format("malformed pattern in GPU peak table {}: {}", origin, e.what()));
  }
  return peaks;
}

}  // namespace

const char* built_in_peak_table() { return detail::kDevicePeaksJson; }

DevicePeaks lookup_device_peaks(const std::string& device_name, const std::string& table_path) {
  if (table_path.empty()) {
    std::istringstream text(detail::kDevicePeaksJson);
    return lookup(device_name, text, "built in from benchmarks/gpu/peaks.json");
  }
  std::ifstream f(table_path);
  INPUT_CHECK(f.good(), "cannot read the GPU peak table {}", table_path);
  return lookup(device_name, f, table_path);
}

std::optional<double> matmul_peak_tflops(const DevicePeaks& peaks, DType dtype) {
  return dtype == DType::bf16 ? peaks.bf16_dense_tflops : peaks.fp32_tflops;
}

const char* matmul_peak_kind(DType dtype) {
  return dtype == DType::bf16 ? "bf16 dense tensor-core" : "fp32 non-tensor";
}

double training_flops_per_token(const ModelConfig& c, int T) {
  return 6.0 * double(num_trained_parameters(c)) + 6.0 * double(c.num_layers) * double(c.channels) * double(T);
}

}  // namespace gpt2cc
