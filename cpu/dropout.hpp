// Inverted dropout with counter-based masks (core/rng.hpp): out[i] = keep(i) ? inp[i]/(1-p) : 0.
// The mask is a function of (seed, stream, i), so backward regenerates it instead of storing it
// and the CUDA kernel reproduces it exactly. Backward: dinp written (=). In place allowed.
#pragma once

#include <cstddef>

#include "core/rng.hpp"

namespace gpt2cc::cpu {
void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N);
void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N);
}  // namespace gpt2cc::cpu
