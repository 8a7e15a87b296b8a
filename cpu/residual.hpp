// Residual connection: out = inp1 + inp2. Backward passes dout through, ACCUMULATING (+=) into
// both dinp1 and dinp2 (the residual stream accumulates).
#pragma once

#include <cstddef>

namespace gpt2cc::cpu {
void residual_forward(float* out, const float* inp1, const float* inp2, size_t N);
void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N);
}  // namespace gpt2cc::cpu
