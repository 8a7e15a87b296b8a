// AdamW (Loshchilov & Hutter 2019) over a contiguous slice of parameters, and the sum of squares
// behind the global gradient-norm clipping (cpu/adamw.hpp, AdamWParams in core/backend.hpp).
//   g = grad * grad_scale ; m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
//   p -= lr * ( mhat / (sqrt(vhat) + eps) + wd * p ),  mhat = m/(1-b1^step), vhat = v/(1-b2^step)
#include "cpu/adamw.hpp"

#include <cmath>

#include "core/check.hpp"

namespace gpt2cc::cpu {

// The update in the file header; the decay uses p before this step's change (decoupled decay).
void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp) {
  ENSURE(hp.step >= 1, "AdamW step is 1-based, got {}", hp.step);
  // Bias corrections in double: beta^step underflows gracefully and stays accurate near 1.
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta1), hp.step));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta2), hp.step));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < N; ++i) {
    const float g = grads[i] * hp.grad_scale;
    const float mi = hp.beta1 * m[i] + (1.0f - hp.beta1) * g;
    const float vi = hp.beta2 * v[i] + (1.0f - hp.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / bc1;
    const float vhat = vi / bc2;
    params[i] -= hp.lr * (mhat / (std::sqrt(vhat) + hp.eps) + hp.weight_decay * params[i]);
  }
}

// sum_i x_i^2 in double: a GPT-2 has ~1e8 gradients, too many for a float accumulator. The
// static schedule fixes each thread's slice, so the result is reproducible for a thread count.
double sum_of_squares(const float* x, size_t N) {
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (size_t i = 0; i < N; ++i) total += static_cast<double>(x[i]) * x[i];
  return total;
}

}  // namespace gpt2cc::cpu
