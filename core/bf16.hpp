// bfloat16 bits (a uint16_t: the high half of an fp32) to and from float, one value at a time:
// what the CPU's bf16 backend stores (cpu/bf16.hpp adds the array forms) and the safetensors
// reader widens.
#pragma once

#include <bit>
#include <cstdint>

namespace gpt2cc {

// The nearest bf16 to x, ties to even; a NaN stays a NaN (quiet, its sign and top payload bits
// kept), as does +-inf, and a finite value beyond bf16's largest rounds to +-inf.
inline uint16_t round_to_bf16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t lsb = (bits >> 16) & 1u;
  return static_cast<uint16_t>((bits + 0x7fffu + lsb) >> 16);
}

// Exact: a bf16 is an fp32 with 16 zero bits below it.
inline float widen_bf16(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

}  // namespace gpt2cc
