// Inverted dropout on the GPU with the CPU's counter-based masks; mirrors cpu::dropout_forward /
// dropout_backward (cpu/dropout.hpp): out[i] = keep(i) ? inp[i] / (1 - p) : 0, keep(i) from
// gpt2cc::DropoutParams (core/rng.hpp), so both backends drop the same elements. Backward: dinp
// written (=). In place allowed. p == 0 is the identity.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "core/rng.hpp"

namespace gpt2cc::cuda {
void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N, cudaStream_t stream);
void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N, cudaStream_t stream);
}  // namespace gpt2cc::cuda
