// bfloat16 on the CPU: the bits of a bf16 value as a uint16_t (the high half of an fp32), its
// rounding from fp32 (to nearest even, as CUDA's __float2bfloat16_rn) and its exact widening,
// one at a time and over arrays. What the CPU's bf16 backend (cpu/backend_bf16.cpp) stores its
// tensors in; its arithmetic is fp32.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace gpt2cc::cpu {

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

// dst[i] = round_to_bf16(src[i]) / widen_bf16(src[i]) for i < n, over the OpenMP threads when n is
// large. dst and src must not overlap.
void round_to_bf16(uint16_t* dst, const float* src, size_t n);
void widen_bf16(float* dst, const uint16_t* src, size_t n);

}  // namespace gpt2cc::cpu
