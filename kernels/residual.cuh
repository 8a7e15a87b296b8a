// Residual connection on the GPU; mirrors cpu::residual_forward / residual_backward
// (cpu/residual.hpp): out = inp1 + inp2; backward ACCUMULATES (+=) dout into dinp1 and dinp2.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

namespace gpt2cc::cuda {
void residual_forward(float* out, const float* inp1, const float* inp2, size_t N, cudaStream_t stream);
void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N, cudaStream_t stream);
}  // namespace gpt2cc::cuda
