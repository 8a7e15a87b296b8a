// AdamW update and the sum of squares behind global gradient-norm clipping, on the GPU; mirror
// cpu::adamw_update / sum_of_squares (cpu/adamw.hpp; the update is in gpt2cc::AdamWParams,
// core/backend.hpp). sum_of_squares accumulates in double with a fixed partition of the work and
// a fixed-order final sum, so it returns the same bits on every run; it synchronises `stream`.
// Mixed precision (bf16 params): the update runs on fp32 master weights and moments exactly as
// the fp32 overload does, then the bf16 copy is refreshed, params[i] = bf16_rn(master[i]).
#pragma once

#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/backend.hpp"

namespace gpt2cc::cuda {
using bf16 = __nv_bfloat16;

void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp,
                  cudaStream_t stream);
// grad = float(grads[i]) * hp.grad_scale (the clip factor applied in the same pass).
void adamw_update(float* master, bf16* params, float* m, float* v, const bf16* grads, size_t N,
                  const AdamWParams& hp, cudaStream_t stream);
// The same from fp32 gradients (a bf16 model's, ModelOptions::fp32_gradients).
void adamw_update(float* master, bf16* params, float* m, float* v, const float* grads, size_t N,
                  const AdamWParams& hp, cudaStream_t stream);
double sum_of_squares(const float* x, size_t N, cudaStream_t stream);
double sum_of_squares(const bf16* x, size_t N, cudaStream_t stream);
}  // namespace gpt2cc::cuda
