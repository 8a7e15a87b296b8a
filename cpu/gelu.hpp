// GELU, tanh approximation (Hendrycks & Gimpel 2016), as GPT-2 uses:
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// Backward: dinp written (=). In-place (out == inp) is allowed for the forward, and for the
// backward dinp == dout.
// The *_vectorized pair is the same function as x sigmoid(2u) with a vectorised exp (the CPU
// backend's path; ~7% of a d4 training step went to the scalar tanhf): the plain pair stays its
// reference.
#pragma once

#include <cstddef>

namespace gpt2cc::cpu {
void gelu_forward(float* out, const float* inp, size_t N);
void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N);
void gelu_forward_vectorized(float* out, const float* inp, size_t N);
void gelu_backward_vectorized(float* dinp, const float* dout, const float* inp, size_t N);
}  // namespace gpt2cc::cpu
