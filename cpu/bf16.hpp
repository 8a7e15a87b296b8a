// bfloat16 on the CPU: the bits of a bf16 value as a uint16_t (the high half of an fp32), its
// rounding from fp32 (to nearest even, as CUDA's __float2bfloat16_rn) and its exact widening,
// one at a time (core/bf16.hpp) and over arrays. What the CPU's bf16 backend
// (cpu/backend_bf16.cpp) stores its tensors in; its arithmetic is fp32.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/bf16.hpp"

namespace gpt2cc::cpu {

// The scalar forms (core/bf16.hpp), next to the array forms below.
using gpt2cc::round_to_bf16;
using gpt2cc::widen_bf16;

// dst[i] = round_to_bf16(src[i]) / widen_bf16(src[i]) for i < n, over the OpenMP threads when n is
// large. dst and src must not overlap.
void round_to_bf16(uint16_t* dst, const float* src, size_t n);
void widen_bf16(float* dst, const uint16_t* src, size_t n);

// An element of an fp32 tensor or of a bf16 one as a float, for loops templated over both; and
// a float stored into one (rounded, for bf16).
inline float as_float(float x) { return x; }
inline float as_float(uint16_t bits) { return widen_bf16(bits); }
inline void put_float(float& dst, float x) { dst = x; }
inline void put_float(uint16_t& dst, float x) { dst = round_to_bf16(x); }

}  // namespace gpt2cc::cpu
