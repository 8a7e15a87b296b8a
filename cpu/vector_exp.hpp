// exp(x) in plain float arithmetic that the compiler turns into vector code inside a loop
// (`#pragma omp simd`), where std::exp is a scalar library call per element. For the CPU's
// fast paths (the classifier's losses, the vectorised GELU, the blocked attention's softmax); the
// reference layers keep std::exp.
//   exp(x) = 2^n exp(r),  n = round(x log2 e),  r = x - n ln2,  |r| <= ln2 / 2
//   exp(r) ~= 1 + r + r^2 P(r), P of degree 5 (Cephes' expf; relative error below 2e-7 for
//   |r| <= ln2/2)
// ln2 is split in two (ln2_hi has 9 significant bits, so n ln2_hi is exact) to keep r accurate.
// n is rounded by adding 1.5 * 2^23 (the integer lands in the low mantissa bits; no float-to-int
// conversion, which NaN would make undefined), and 2^n is built in the exponent bits.
// Range: 0 below ln(2^-125) = -86.64 (no subnormal results), +inf above ln(FLT_MAX) = 88.72;
// NaN gives NaN. Error within 2 ulp of the correctly rounded result
// (tests/cpu/test_crossentropy.cpp).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>

namespace gpt2cc::cpu {

inline float exp_vectorizable(float x) {
  constexpr float kLo = -86.6433976f, kHi = 88.7228391f;
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23
  const float xc = std::min(std::max(x, kLo), kHi);  // NaN passes through both
  const float t = xc * kLog2e + kShifter;
  const float n = t - kShifter;  // round(xc log2 e), in [-125, 128]
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float exp_r = p * r * r + r + 1.0f;
  // 2^n = 2^(n-1) * 2: n - 1 + 127 = n + 126 in [1, 254] is a normal exponent for every n in range.
  const uint32_t biased = std::bit_cast<uint32_t>(t) - std::bit_cast<uint32_t>(kShifter) + 126u;
  const float result = exp_r * std::bit_cast<float>(biased << 23) * 2.0f;
  return x < kLo ? 0.0f : (x > kHi ? std::numeric_limits<float>::infinity() : result);
}

}  // namespace gpt2cc::cpu
