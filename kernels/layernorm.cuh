// LayerNorm over the channels on the GPU (eps = 1e-5); mirrors cpu::layernorm_forward /
// layernorm_backward (cpu/layernorm.hpp). inp, out (B,T,C); weight, bias (C); mean, rstd (B,T).
// Backward: dinp ACCUMULATES (+=, residual stream); dweight, dbias accumulate (+=), summed over
// rows in a fixed order (deterministic).
#pragma once

#include <cuda_runtime.h>

namespace gpt2cc::cuda {
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int B, int T, int C, cudaStream_t stream);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C,
                        cudaStream_t stream);
}  // namespace gpt2cc::cuda
