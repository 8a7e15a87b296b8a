// Helpers for the bf16-vs-CPU tests (issue 8), shared by every test_bf16_*.cpp file (the host-only
// conversions and comparisons are in bf16_host_util.hpp, included here).
// The pattern: draw float inputs, round them through bf16 (round_to_bf16) so the CPU reference
// sees exactly the values the GPU sees, upload with to_bf16 into a DeviceBuffer<bf16>, run the
// kernel, download and widen with from_bf16, and compare by relative L2 error (expect_rel_l2).
//   auto x = round_to_bf16(random_vector(n, 1));          // what both backends see
//   auto d_x = device_bf16(x); DeviceBuffer<bf16> d_out(n); d_out.poison();   // all NaN
//   ... kernel ...; expect_rel_l2(download_float(d_out), cpu_ref, 1e-2, "gelu bf16");
#pragma once

#include "common/catch.hpp"
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "bf16_host_util.hpp"
#include "cuda_test_util.hpp"

namespace gpt2cc::test {

using bf16 = __nv_bfloat16;

// A device copy of host values in bf16 (round them with round_to_bf16 first so the CPU reference
// sees the same numbers), and a download widened back to float.
inline DeviceBuffer<bf16> device_bf16(const std::vector<float>& x) { return DeviceBuffer<bf16>(to_bf16(x)); }
inline std::vector<float> download_float(const DeviceBuffer<bf16>& d) { return from_bf16(d.download()); }

// Float values as a buffer of Elem (bf16: rounded to nearest even), and back as floats (exact).
template <class Elem>
std::vector<Elem> as(const std::vector<float>& x) {
  if constexpr (std::is_same_v<Elem, float>) return x;
  else return to_bf16(x);
}
template <class Elem>
std::vector<float> widened(const std::vector<Elem>& x) {
  if constexpr (std::is_same_v<Elem, float>) return x;
  else return from_bf16(x);
}
template <class Elem>
std::vector<float> widened(const DeviceBuffer<Elem>& x) {
  return widened(x.download());
}

// Uniform random values in [lo, hi] rounded to bf16: exactly what both backends see.
inline std::vector<float> rounded_random(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  return round_to_bf16(random_vector(n, seed, lo, hi));
}

// One bf16 rounding of a float result (8 significant bits: at most 2^-8 ~ 3.9e-3 relative) plus
// the float arithmetic's own small differences, as an absolute floor relative to the largest
// reference value; `ulps` = 2 where both sides were rounded to bf16. Relative L2 <= 1e-2 too.
inline void expect_one_rounding(const std::vector<float>& actual, const std::vector<float>& expected,
                                const std::string& what, double atol_fraction = 1e-5, int ulps = 1) {
  expect_bf16_rounding(actual, expected, what, 4e-3 * ulps, atol_fraction * std::max(max_abs(expected), 1e-30));
  expect_rel_l2(actual, expected, 1e-2, what);
}

// Poisoning: all bytes 0xFF in a bf16 buffer read as NaN (exponent all ones, mantissa nonzero), like
// the float poison, so DeviceBuffer<bf16>::poison() works unchanged.

}  // namespace gpt2cc::test
