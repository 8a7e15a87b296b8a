// Array conversions between fp32 and bf16 (cpu/bf16.hpp): plain loops that GCC vectorises, over
// the OpenMP threads from kParallelFrom elements up (below that a parallel region costs more
// than it saves).
#include "cpu/bf16.hpp"

namespace gpt2cc::cpu {

namespace {
constexpr size_t kParallelFrom = size_t{1} << 16;
}

void round_to_bf16(uint16_t* dst, const float* src, size_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelFrom)
  for (size_t i = 0; i < n; ++i) dst[i] = round_to_bf16(src[i]);
}

void widen_bf16(float* dst, const uint16_t* src, size_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelFrom)
  for (size_t i = 0; i < n; ++i) dst[i] = widen_bf16(src[i]);
}

}  // namespace gpt2cc::cpu
