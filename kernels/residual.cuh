// Residual connection on the GPU; mirrors cpu::residual_forward / residual_backward
// (cpu/residual.hpp): out = inp1 + inp2; backward ACCUMULATES (+=) dout into dinp1 and dinp2.
// float and bf16 (arithmetic in float, one rounding per bf16 output element).
// The fused residual + LayerNorm forward is residual_layernorm_forward in kernels/layernorm.cuh.
#pragma once

#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace gpt2cc::cuda {
void residual_forward(float* out, const float* inp1, const float* inp2, size_t N, cudaStream_t stream);
void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N, cudaStream_t stream);

using bf16 = __nv_bfloat16;
void residual_forward(bf16* out, const bf16* inp1, const bf16* inp2, size_t N, cudaStream_t stream);
void residual_backward(bf16* dinp1, bf16* dinp2, const bf16* dout, size_t N, cudaStream_t stream);
// out = inp1 + inp2 with inp2 in fp32 (a sum kept in fp32, added in with one rounding).
void residual_forward(bf16* out, const bf16* inp1, const float* inp2, size_t N, cudaStream_t stream);
}  // namespace gpt2cc::cuda
