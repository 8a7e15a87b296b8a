// AdamW update and the sum of squares behind global gradient-norm clipping, on the GPU; mirror
// cpu::adamw_update / sum_of_squares (cpu/adamw.hpp; the update is in gpt2cc::AdamWParams,
// core/backend.hpp). sum_of_squares accumulates in double with a fixed partition of the work and
// a fixed-order final sum, so it returns the same bits on every run; it synchronises `stream`.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "core/backend.hpp"

namespace gpt2cc::cuda {
void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp,
                  cudaStream_t stream);
double sum_of_squares(const float* x, size_t N, cudaStream_t stream);
}  // namespace gpt2cc::cuda
