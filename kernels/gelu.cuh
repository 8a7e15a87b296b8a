// GELU, tanh approximation, on the GPU; mirrors cpu::gelu_forward / gelu_backward (cpu/gelu.hpp):
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// Backward: dinp written (=). The forward may run in place (out == inp).
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

namespace gpt2cc::cuda {
void gelu_forward(float* out, const float* inp, size_t N, cudaStream_t stream);
void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N, cudaStream_t stream);
}  // namespace gpt2cc::cuda
