// cuda::layernorm_forward / _backward, residual_layernorm_forward and residual_forward /
// _backward (kernels/layernorm.cuh, kernels/residual.cuh) run on the CPU emulator: the kernels of
// kernels/layernorm_device.cuh and residual_device.cuh compiled as host C++, launched on the grid
// and down the branch the CUDA launchers take (cached_row_launch, backward_dinp_packed,
// elementwise_launch, ...). Same argument lists minus the stream; pointers are host memory.
// Misuse found while running (see cuda_emu.hpp) throws emu::Violation.
#pragma once

#include <cuda_bf16.h>

#include <cstddef>

namespace gpt2cc::emu {

using bf16 = __nv_bfloat16;

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int B, int T, int C);
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight, const bf16* bias,
                       int B, int T, int C);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C);
void layernorm_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const float* mean,
                        const float* rstd, const bf16* inp, const bf16* weight, int B, int T, int C);
void residual_layernorm_forward(float* residual, float* out, float* mean, float* rstd, const float* inp1,
                                const float* inp2, const float* weight, const float* bias, int B, int T, int C);
void residual_layernorm_forward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* inp1,
                                const bf16* inp2, const bf16* weight, const bf16* bias, int B, int T, int C);

void residual_forward(float* out, const float* inp1, const float* inp2, size_t N);
void residual_forward(bf16* out, const bf16* inp1, const bf16* inp2, size_t N);
void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N);
void residual_backward(bf16* dinp1, bf16* dinp2, const bf16* dout, size_t N);

}  // namespace gpt2cc::emu
