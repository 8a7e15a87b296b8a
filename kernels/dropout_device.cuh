// Device code of the dropout forward and backward (kernels/dropout.cuh; mirrors cpu/dropout.cpp),
// float and bf16. The same masked scaling y = keep(i) * x / (1 - p) serves both directions.
// keep(i) draws lane i % 4 of the Philox block i / 4 (core/rng.hpp), so a thread handling elements
// 4j..4j+3 gets all four draws from ONE Philox call instead of four. The mask depends only on
// (seed, stream, i), never on the element type: float and bf16 drop exactly the same elements as
// the CPU. Included by kernels/dropout.cu (the launchers; tests/emu/hostcuda compiles it as host
// C++ for the CPU emulator), with the launch geometry at the end.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/rng.hpp"
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::dropout_kernels {

constexpr int kBlock = 256;

// y[i] = keep(i) ? x[i] * scale : 0 for i in [4j, 4j + 4) ∩ [0, N); thread j. In place safe.
template <class Elem>
__global__ void dropout_mask_four_per_thread_kernel(Elem* y, const Elem* x, DropoutParams dropout, size_t N) {
  const size_t j = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t i0 = 4 * j;
  if (i0 >= N) return;
  const Philox4 r = philox4x32_10(static_cast<uint32_t>(j), static_cast<uint32_t>(j >> 32), dropout.stream, 0u,
                                  static_cast<uint32_t>(dropout.seed), static_cast<uint32_t>(dropout.seed >> 32));
  const float scale = dropout.scale();
  for (int lane = 0; lane < 4 && i0 + lane < N; ++lane) {
    // Same test as DropoutParams::keep: uniform from the top 24 bits, kept when >= p.
    const float u = static_cast<float>(r.v[lane] >> 8) * (1.0f / 16777216.0f);
    y[i0 + lane] = from_float<Elem>(u >= dropout.p ? to_float(x[i0 + lane]) * scale : 0.0f);
  }
}

// ---------------------------------------------------------------------------------------------
// Launch geometry: used by the launchers in dropout.cu. (An inactive dropout,
// p == 0, launches nothing: the launcher copies, or does nothing in place.)
// ---------------------------------------------------------------------------------------------

// One thread per 4 elements (one Philox call), kBlock threads per block.
inline LaunchShape mask_launch(size_t N) {
  return {dim3(static_cast<unsigned>(ceil_div(ceil_div(N, 4), kBlock))), dim3(kBlock)};
}

}  // namespace gpt2cc::cuda::dropout_kernels
