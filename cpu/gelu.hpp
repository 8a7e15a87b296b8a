// GELU, tanh approximation (Hendrycks & Gimpel 2016), as GPT-2 uses:
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// Backward: dinp written (=). In-place (out == inp) is allowed for the forward.
#pragma once

#include <cstddef>

namespace gpt2cc::cpu {
void gelu_forward(float* out, const float* inp, size_t N);
void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N);
}  // namespace gpt2cc::cpu
