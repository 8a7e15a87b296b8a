// Device code of the GELU forward and backward (kernels/gelu.cuh; mirrors cpu/gelu.cpp), float and
// bf16: out = gelu(inp) ; dinp = dout * gelu'(inp) (written, =), with gelu and gelu_grad from
// kernels/gelu_math.cuh. Element-wise and memory bound: when N is a multiple of the 16-byte pack
// (4 floats, 8 bf16) and the pointers are 16-byte aligned, each thread moves one pack per operand
// (one 128-bit load instead of 4 or 8); otherwise one element per thread. Arithmetic in float, one
// rounding on a bf16 store. Included by kernels/gelu.cu (the launchers, which launch it by
// use_packs / elementwise_launch of common.cuh; tests/emu/hostcuda compiles it as host C++ for the
// CPU emulator).
#pragma once

#include <cstddef>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/gelu_math.cuh"

namespace gpt2cc::cuda::gelu_kernels {

// Thread i handles elements [kWidth i, kWidth (i + 1)); the launcher guarantees N % kWidth == 0.
template <class Elem, int kWidth>
__global__ void gelu_forward_kernel(Elem* out, const Elem* inp, size_t N) {
  const size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= N) return;
  float x[kWidth];
  load_floats(x, inp + i);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) x[k] = gelu(x[k]);
  store_floats(out + i, x);
}

// dinp = dout * gelu'(inp), written: the chain rule through the element-wise gelu (gelu' by the
// product rule on 0.5 x (1 + tanh u): gelu_grad in kernels/gelu_math.cuh, derived there).
template <class Elem, int kWidth>
__global__ void gelu_backward_kernel(Elem* dinp, const Elem* dout, const Elem* inp, size_t N) {
  const size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= N) return;
  float x[kWidth], g[kWidth];
  load_floats(x, inp + i);
  load_floats(g, dout + i);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) g[k] *= gelu_grad(x[k]);
  store_floats(dinp + i, g);
}

}  // namespace gpt2cc::cuda::gelu_kernels
