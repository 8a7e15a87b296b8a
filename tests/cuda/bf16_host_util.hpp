// The host-only half of the bf16 test helpers: conversions through cuda_bf16.h's host functions
// and the relative-L2 comparison of issue 8. No CUDA runtime: also used by the CPU emulator's
// tests (tests/emu), which run the flash attention kernels without a GPU.
#pragma once

#include "common/catch.hpp"
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "common/test_common.hpp"

namespace gpt2cc::test {

using bf16 = __nv_bfloat16;

// bf16 conversions on the host (cuda_bf16.h's conversions are __host__ __device__):
// float -> bf16 rounds to nearest even, bf16 -> float is exact.
inline std::vector<bf16> to_bf16(const std::vector<float>& x) {
  std::vector<bf16> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = __float2bfloat16_rn(x[i]);
  return out;
}
inline std::vector<float> from_bf16(const std::vector<bf16>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = __bfloat162float(x[i]);
  return out;
}
// Each value rounded through bf16 and back: the exact input a bf16 kernel works on.
inline std::vector<float> round_to_bf16(const std::vector<float>& x) { return from_bf16(to_bf16(x)); }

// Bit patterns, for the tests that check a rounding bit for bit.
inline uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
}
inline float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}
inline uint16_t bf16_bits(bf16 x) {
  uint16_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
}
// Round to nearest even on the bit pattern, written independently of cuda_bf16.h (which the
// kernels use): add half an ulp of the kept 16 bits (0x7FFF), plus 1 when the kept part is odd,
// so an exact tie rounds to the even neighbour; a carry out of the mantissa bumps the exponent
// (max float -> inf). Finite inputs only.
inline uint16_t rne_bits(float x) {
  const uint32_t u = float_bits(x);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// N floats that probe a float -> bf16 rounding: random upper halves with the lower 16 bits
// cycling through exact ties, just below and above a tie, exact bf16 values and all-ones; then
// special values at the front (as many as N holds).
inline std::vector<float> rounding_inputs(size_t N) {
  const auto base = random_vector(N, 331, -100.0f, 100.0f);
  const uint32_t lows[] = {0x8000u, 0x7FFFu, 0x8001u, 0x0000u, 0xFFFFu};
  std::vector<float> x(N);
  for (size_t i = 0; i < N; ++i) x[i] = bits_float((float_bits(base[i]) & 0xFFFF0000u) | lows[i % 5]);
  const uint32_t specials[] = {0x7F7FFFFFu,   // max float: rounds up to +inf
                               0xFF7FFFFFu,   // -max float: -inf
                               0x3F808000u,   // 1 + 2^-8, a tie: down to 1 (even)
                               0x3F818000u,   // 1 + 3*2^-8, a tie: up to 1 + 2^-6 (even)
                               0x00808000u,   // smallest normal + a tie: down (even)
                               0x00818000u,   // a tie above an odd bf16: up to 0x0082
                               0x80000000u,   // -0
                               0x7F800000u};  // +inf
  for (size_t i = 0; i < std::size(specials) && i < N; ++i) x[i] = bits_float(specials[i]);
  return x;
}
inline float round_to_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// ||actual - expected|| / ||expected|| in double; NaN if either holds a NaN/Inf or the sizes differ
// (so a comparison against it fails). An all-zero `expected` gives ||actual|| (absolute error).
inline double rel_l2(const std::vector<float>& actual, const std::vector<float>& expected) {
  if (actual.size() != expected.size()) return std::nan("");
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!std::isfinite(actual[i]) || !std::isfinite(expected[i])) return std::nan("");
    const double d = static_cast<double>(actual[i]) - expected[i];
    diff += d * d;
    norm += static_cast<double>(expected[i]) * expected[i];
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

// The issue-8 acceptance check: relative L2 error <= tol, and every value finite (a poisoned
// output element that the kernel forgot to write stays NaN and fails here).
inline void expect_rel_l2(const std::vector<float>& actual, const std::vector<float>& expected, double tol,
                          const std::string& what) {
  REQUIRE(actual.size() == expected.size());
  const double err = rel_l2(actual, expected);
  INFO(what << ": relative L2 error " << err << " (tolerance " << tol << ", NaN = non-finite value)");
  CHECK(std::isfinite(err));
  CHECK(err <= tol);
}

// Element-wise check for ops whose only error is the final rounding to bf16: |a - e| <= rtol * |e| +
// atol for every element (bf16 has 8 significant bits: one round-to-nearest is <= 2^-8 ~ 3.9e-3
// relative, so the default rtol 4e-3 allows one rounding and a little float arithmetic error).
inline void expect_bf16_rounding(const std::vector<float>& actual, const std::vector<float>& expected,
                                 const std::string& what, double rtol = 4e-3, double atol = 1e-6) {
  expect_close(actual, expected, atol, rtol, what);
}

}  // namespace gpt2cc::test
