// Peak rates of GPUs, for MFU (model FLOPs utilisation) and rooflines, from the table
// benchmarks/gpu/peaks.json (shared with the PyTorch scripts): built into the engine when CMake
// configures, or read from a file. Each entry's `pattern` is a regular expression searched in the
// CUDA device name (cudaDeviceProp::name); the first entry that matches wins. A figure the table
// leaves null (not confirmed) comes back empty: callers print n/a, never a guess.
//   MFU = tokens/s * training FLOPs per token / peak FLOP/s,
//   training FLOPs per token = 6N + 6*L*C*T: N parameters (without the padded vocabulary rows),
//   2 FLOPs forward and 4 backward for each per token; the attention's QK^T and PV, 4*C FLOPs
//   forward per position attended and 8*C backward, over the T/2 positions a causal row sees on
//   average (llm.c's count, and the MFU target's; PaLM's appendix B, Chowdhery et al. 2022, and
//   nanoGPT count all T positions: 12*L*C*T).
#pragma once

#include <optional>
#include <string>

#include "core/backend.hpp"
#include "core/config.hpp"

namespace gpt2cc {

struct DevicePeaks {
  bool matched = false;      // an entry's pattern matched the device name
  std::string name, source;  // the entry's name and where its figures come from
  std::optional<double> bf16_dense_tflops, fp32_tflops, hbm_gbps;
};

// The built-in table's text: benchmarks/gpu/peaks.json as it was when CMake last configured.
const char* built_in_peak_table();
// The entry for `device_name` in the table at `table_path`, or in the built-in one where the path
// is empty (the benchmarks' --peaks not given); throws InputError naming the file when it cannot
// be read or is malformed.
DevicePeaks lookup_device_peaks(const std::string& device_name, const std::string& table_path = "");

// The peak of the unit a training step's matmuls use at `dtype`: the dense bf16 tensor-core rate
// for bf16, the plain (non-tensor) fp32 rate for fp32, whose GEMMs keep TF32 off. Empty when the
// table has no confirmed figure.
std::optional<double> matmul_peak_tflops(const DevicePeaks& peaks, DType dtype);
const char* matmul_peak_kind(DType dtype);  // "bf16 dense tensor-core" | "fp32 non-tensor"

// 6N + 6*L*C*T, above.
double training_flops_per_token(const ModelConfig& config, int T);

}  // namespace gpt2cc
