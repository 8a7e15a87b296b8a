// AdamW update (decoupled weight decay, bias correction) and the sum of squares used for the
// global gradient norm sqrt(sum of squares over all grads), from which clip_scale
// (core/grad_clip.hpp) makes the clip factor.
// See gpt2cc::AdamWParams in core/backend.hpp for the exact update.
#pragma once

#include <cstddef>

#include "core/backend.hpp"

namespace gpt2cc::cpu {
void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp);
double sum_of_squares(const float* x, size_t N);  // accumulated in double
}  // namespace gpt2cc::cpu
