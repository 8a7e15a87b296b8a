// cuda::gelu_forward / _backward, dropout_forward / _backward, convert / widen and
// encoder_forward / _backward (kernels/gelu.cuh, dropout.cuh, convert.cuh, encoder.cuh) run on
// the CPU emulator: the kernels of the matching kernels/*_device.cuh compiled as host C++, launched
// on the grid and down the branch the CUDA launchers take. Same argument lists minus the stream;
// pointers are host memory. Misuse found while running (see cuda_emu.hpp) throws emu::Violation.
#pragma once

#include <cuda_bf16.h>

#include <cstddef>

#include "core/rng.hpp"

namespace gpt2cc::emu {

using bf16 = __nv_bfloat16;

void gelu_forward(float* out, const float* inp, size_t N);
void gelu_forward(bf16* out, const bf16* inp, size_t N);
void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N);
void gelu_backward(bf16* dinp, const bf16* dout, const bf16* inp, size_t N);

void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N);
void dropout_forward(bf16* out, const bf16* inp, const DropoutParams& dropout, size_t N);
void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N);
void dropout_backward(bf16* dinp, const bf16* dout, const DropoutParams& dropout, size_t N);

void convert(bf16* dst, const float* src, size_t N);
void widen(float* dst, const bf16* src, size_t N);

void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C);
void encoder_forward(bf16* out, const int* inp, const bf16* wte, const bf16* wpe, int B, int T, int C);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C);
void encoder_backward(bf16* dwte, bf16* dwpe, const bf16* dout, const int* inp, int B, int T, int C);

}  // namespace gpt2cc::emu
