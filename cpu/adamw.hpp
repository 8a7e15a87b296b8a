// AdamW update (decoupled weight decay, bias correction) and the sum of squares used for the
// global gradient norm (clip factor = min(1, max_norm / sqrt(sum over all grads))).
// See gpt2cc::AdamWParams in core/backend.hpp for the exact update.
#pragma once

#include <cstddef>

#include "core/backend.hpp"

namespace gpt2cc::cpu {
void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp);
double sum_of_squares(const float* x, size_t N);  // accumulated in double
}  // namespace gpt2cc::cpu
