// GELU, tanh approximation, on the GPU; mirrors cpu::gelu_forward / gelu_backward (cpu/gelu.hpp):
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// Backward: dinp written (=). Either may run in place (out == inp; dinp == dout). float and bf16
// (arithmetic in float, one rounding per bf16 output).
#pragma once

#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace gpt2cc::cuda {
void gelu_forward(float* out, const float* inp, size_t N, cudaStream_t stream);
void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N, cudaStream_t stream);

using bf16 = __nv_bfloat16;
void gelu_forward(bf16* out, const bf16* inp, size_t N, cudaStream_t stream);
void gelu_backward(bf16* dinp, const bf16* dout, const bf16* inp, size_t N, cudaStream_t stream);
}  // namespace gpt2cc::cuda
