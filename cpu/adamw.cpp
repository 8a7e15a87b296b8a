// AdamW (Loshchilov & Hutter 2019) over a contiguous slice of parameters, and the sum of squares
// behind the global gradient-norm clipping (cpu/adamw.hpp, AdamWParams in core/backend.hpp).
//   g = grad * grad_scale ; m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
//   p -= lr * ( mhat / (sqrt(vhat) + eps) + wd * p ),  mhat = m/(1-b1^step), vhat = v/(1-b2^step)
#include "cpu/adamw.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

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

// sum_i x_i^2 in double: a GPT-2 has ~1e8 gradients, too many for a float accumulator. Summed in
// fixed chunks of 64K elements, each with four 4-wide double accumulators (the float -> double
// conversion and the FMA vectorise), then the chunks' sums in chunk order: the same bits for any
// thread count, as the gradients themselves are.
namespace {
typedef double vec4d __attribute__((vector_size(32)));

double chunk_sum_of_squares(const float* x, size_t n) {
  vec4d acc[4] = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int v = 0; v < 4; ++v) {
      // Four floats widened one by one: g++ 12 compiles this to one 4-wide conversion from memory
      // (vcvtps2pd), where __builtin_convertvector of a 4-float vector became two 2-wide ones
      // merged into registers that each iteration depended on: 6.8 GB/s against 9.8 (a plain
      // read of the same 0.5 GB: 11.4) over gpt2's gradients at one thread. The same values.
      const float* f = x + i + 4 * v;
      const vec4d d = {f[0], f[1], f[2], f[3]};
      acc[v] += d * d;
    }
  }
  const vec4d total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  double sum = (total[0] + total[1]) + (total[2] + total[3]);
  for (; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  return sum;
}
}  // namespace

double sum_of_squares(const float* x, size_t N) {
  constexpr size_t kChunk = size_t{1} << 16;
  const size_t chunks = (N + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks);
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < chunks; ++c) {
    const size_t begin = c * kChunk;
    partial[c] = chunk_sum_of_squares(x + begin, std::min(kChunk, N - begin));
  }
  double total = 0.0;
  for (double part : partial) total += part;
  return total;
}

}  // namespace gpt2cc::cpu
