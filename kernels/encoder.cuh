// Token + position embedding on the GPU; mirrors cpu::encoder_forward / encoder_backward
// (cpu/encoder.hpp). out (B,T,C) = wte[inp[b,t]] + wpe[t]. Backward accumulates (+=) into dwte
// and dwpe, deterministically (no atomics; each output element is summed by one thread in a
// fixed order). bf16: sums in float, one rounding per output / per += (a bf16 dwte row gets one
// rounding per call however many positions hold its token). The backward sorts the positions by
// token in stream-ordered scratch of 16 * B * T bytes (cuda_check.cuh ScratchBuffer).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace gpt2cc::cuda {
void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C,
                     cudaStream_t stream);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C,
                      cudaStream_t stream);

using bf16 = __nv_bfloat16;
void encoder_forward(bf16* out, const int* inp, const bf16* wte, const bf16* wpe, int B, int T, int C,
                     cudaStream_t stream);
void encoder_backward(bf16* dwte, bf16* dwpe, const bf16* dout, const int* inp, int B, int T, int C,
                      cudaStream_t stream);
// The gradients in fp32 (a bf16 model's fp32 gradients): the same sums, added unrounded.
void encoder_backward(float* dwte, float* dwpe, const bf16* dout, const int* inp, int B, int T, int C,
                      cudaStream_t stream);
}  // namespace gpt2cc::cuda
