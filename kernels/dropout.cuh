// Inverted dropout on the GPU with the CPU's counter-based masks; mirrors cpu::dropout_forward /
// dropout_backward (cpu/dropout.hpp): out[i] = keep(i) ? inp[i] / (1 - p) : 0, keep(i) from
// gpt2cc::DropoutParams (core/rng.hpp), so both backends drop the same elements. Backward: dinp
// written (=). In place allowed. p == 0 is the identity. float and bf16 use the same masks (the
// mask depends only on seed, stream and index); a bf16 output is rounded once.
#pragma once

#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/rng.hpp"

namespace gpt2cc::cuda {
void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N, cudaStream_t stream);
void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N, cudaStream_t stream);

using bf16 = __nv_bfloat16;
void dropout_forward(bf16* out, const bf16* inp, const DropoutParams& dropout, size_t N, cudaStream_t stream);
void dropout_backward(bf16* dinp, const bf16* dout, const DropoutParams& dropout, size_t N, cudaStream_t stream);
}  // namespace gpt2cc::cuda
