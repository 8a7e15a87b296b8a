// Token + position embedding on the GPU; mirrors cpu::encoder_forward / encoder_backward
// (cpu/encoder.hpp). out (B,T,C) = wte[inp[b,t]] + wpe[t]. Backward accumulates (+=) into dwte
// and dwpe, deterministically (no atomics; each output element is summed by one thread in a
// fixed order).
#pragma once

#include <cuda_runtime.h>

namespace gpt2cc::cuda {
void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C,
                     cudaStream_t stream);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C,
                      cudaStream_t stream);
}  // namespace gpt2cc::cuda
