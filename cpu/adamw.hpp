// AdamW update (decoupled weight decay, bias correction) and the sum of squares used for the
// global gradient norm sqrt(sum of squares over all grads), from which clip_scale
// (core/grad_clip.hpp) makes the clip factor.
// See gpt2cc::AdamWParams in core/backend.hpp for the exact update.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/backend.hpp"

namespace gpt2cc::cpu {
void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp);
// The same update of the fp32 master from bf16 gradients (cpu/bf16.hpp), each updated value also
// rounded into the bf16 compute copy `params`, in one pass: the bits of widening the gradients,
// updating and rounding the master afterwards.
void adamw_update(float* master, uint16_t* params, float* m, float* v, const uint16_t* grads, size_t N,
                  const AdamWParams& hp);
// The same from fp32 gradients (a bf16 model's, kept in fp32: ModelOptions::fp32_gradients).
void adamw_update(float* master, uint16_t* params, float* m, float* v, const float* grads, size_t N,
                  const AdamWParams& hp);
// Accumulated in double; of fp32 or of bf16 values (the same sum of the same values either way).
double sum_of_squares(const float* x, size_t N);
double sum_of_squares(const uint16_t* x, size_t N);
}  // namespace gpt2cc::cpu
