// Device code of the residual forward and backward (kernels/residual.cuh; mirrors
// cpu/residual.cpp), float and bf16: out = inp1 + inp2 ; dinp1 += dout, dinp2 += dout.
// Memory bound: one 16-byte pack per operand per thread (4 floats, 8 bf16) when N is a multiple of
// the pack and every pointer is 16-byte aligned (one 128-bit access instead of 4 or 8), one element
// per thread otherwise. Arithmetic in float; a bf16 output is rounded once per call.
// Included by kernels/residual.cu (the launchers, which launch it by use_packs / elementwise_launch
// of common.cuh; tests/emu/hostcuda compiles it as host C++ for the CPU emulator).
#pragma once

#include <cstddef>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::residual_kernels {

// out = inp1 + inp2; thread i handles elements [kWidth i, kWidth (i + 1)), N % kWidth == 0.
// inp2 may be fp32 where Elem is bf16 (In2).
template <class Elem, int kWidth, class In2 = Elem>
__global__ void residual_forward_kernel(Elem* out, const Elem* inp1, const In2* inp2, size_t N) {
  const size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= N) return;
  float a[kWidth], b[kWidth];
  load_floats(a, inp1 + i);
  load_floats(b, inp2 + i);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) a[k] += b[k];
  store_floats(out + i, a);
}

// dinp1 += dout ; dinp2 += dout
template <class Elem, int kWidth>
__global__ void residual_backward_kernel(Elem* dinp1, Elem* dinp2, const Elem* dout, size_t N) {
  const size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= N) return;
  float g[kWidth], a[kWidth], b[kWidth];
  load_floats(g, dout + i);
  load_floats(a, dinp1 + i);
  load_floats(b, dinp2 + i);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) {
    a[k] += g[k];
    b[k] += g[k];
  }
  store_floats(dinp1 + i, a);
  store_floats(dinp2 + i, b);
}

}  // namespace gpt2cc::cuda::residual_kernels
