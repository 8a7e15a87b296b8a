// PyTorch's causal scaled_dot_product_attention on fixed inputs (tests/make_sdpa_fixture.py,
// tests/fixtures/sdpa.{json,bin}): the reference every attention implementation (cpu::, the CUDA
// fp32 and tiled bf16 kernels, flash attention) is checked against besides the CPU one.
#pragma once

#include <string>
#include <vector>

namespace gpt2cc::test {

struct SdpaCase {
  std::string name;
  int B = 0, T = 0, NH = 0, HS = 0;
  double range = 0.0;              // q, k, v ~ U(-range, range) before rounding to bf16
  std::vector<float> qkv, dout;    // (B,T,3C) and (B,T,C): bf16 values, so exact in float
  std::vector<float> out, dqkv;    // SDPA in float64 (rounded to float) and its gradient given dout
  // PyTorch's own bf16 SDPA on the same inputs: relative L2 error of out, dq, dk, dv against the
  // float64 result (what a bf16 kernel's accuracy is compared with).
  double torch_bf16_out = 0.0, torch_bf16_dq = 0.0, torch_bf16_dk = 0.0, torch_bf16_dv = 0.0;

  int C() const { return NH * HS; }
};

// Every case of the fixture (a Catch2 REQUIRE fails, naming the file, when it is missing or bad).
std::vector<SdpaCase> load_sdpa_cases();

// How much larger than the error of PyTorch's own bf16 SDPA a bf16 kernel's relative L2 error
// against the float64 SDPA may be, for out and for dq, dk, dv separately. (Seen on the CPU
// emulator, 2026-12-04: the flash kernels at 0.66x to 1.03x of PyTorch's.)
inline constexpr double kTorchBf16ErrorFactor = 1.25;

// A bf16 kernel's out (B,T,C) and dqkv (B,T,3C) on case c's inputs, widened to float (anything
// past those sizes, a guard band, ignored): out, dq, dk and dv each no further from the float64
// SDPA, in relative L2, than kTorchBf16ErrorFactor x PyTorch's bf16 SDPA.
void check_as_accurate_as_torch_bf16(const std::vector<float>& out, const std::vector<float>& dqkv, const SdpaCase& c,
                                     const std::string& what);

}  // namespace gpt2cc::test
