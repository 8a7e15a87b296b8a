// AdamW (Loshchilov & Hutter 2019) over a contiguous slice of parameters, and the sum of squares
// behind the global gradient-norm clipping (cpu/adamw.hpp, AdamWParams in core/backend.hpp).
//   g = grad * grad_scale ; m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
//   p -= lr * ( mhat / (sqrt(vhat) + eps) + wd * p ),  mhat = m/(1-b1^step), vhat = v/(1-b2^step)
#include "cpu/adamw.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "core/check.hpp"
#include "cpu/bf16.hpp"

namespace gpt2cc::cpu {

namespace {
// The update in the file header over i < N; the decay uses p before this step's change (decoupled
// decay). Gradients fp32 or bf16 (as_float widens them exactly); with `params`, the bf16 compute
// copy of the parameters, each updated master value is also rounded into it, in the same pass
// (Params: uint16_t*, or std::nullptr_t for none, known at compile time: a run-time test in the
// loop kept g++ from vectorising it, 1.5x slower fp32 steps).
template <class G, class Params>
void update(float* master, Params params, float* m, float* v, const G* grads, size_t N, const AdamWParams& hp) {
  ENSURE(hp.step >= 1, "AdamW step is 1-based, got {}", hp.step);
  // Bias corrections in double: beta^step underflows gracefully and stays accurate near 1.
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta1), hp.step));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta2), hp.step));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < N; ++i) {
    const float g = as_float(grads[i]) * hp.grad_scale;
    const float mi = hp.beta1 * m[i] + (1.0f - hp.beta1) * g;
    const float vi = hp.beta2 * v[i] + (1.0f - hp.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / bc1;
    const float vhat = vi / bc2;
    const float p = master[i] - hp.lr * (mhat / (std::sqrt(vhat) + hp.eps) + hp.weight_decay * master[i]);
    master[i] = p;
    if constexpr (!std::is_same_v<Params, std::nullptr_t>) params[i] = round_to_bf16(p);
  }
}
}  // namespace

void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp) {
  update(params, nullptr, m, v, grads, N, hp);
}

void adamw_update(float* master, uint16_t* params, float* m, float* v, const uint16_t* grads, size_t N,
                  const AdamWParams& hp) {
  update(master, params, m, v, grads, N, hp);
}

void adamw_update(float* master, uint16_t* params, float* m, float* v, const float* grads, size_t N,
                  const AdamWParams& hp) {
  update(master, params, m, v, grads, N, hp);
}

// sum_i x_i^2 in double: a GPT-2 has ~1e8 gradients, too many for a float accumulator. Summed in
// fixed chunks of 64K elements, each with four 4-wide double accumulators (the float -> double
// conversion and the FMA vectorise), then the chunks' sums in chunk order: the same bits for any
// thread count, as the gradients themselves are.
namespace {
typedef double vec4d __attribute__((vector_size(32)));

template <class E>
double chunk_sum_of_squares(const E* x, size_t n) {
  vec4d acc[4] = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int v = 0; v < 4; ++v) {
      // Four floats widened one by one: g++ 12 compiles this to one 4-wide conversion from memory
      // (vcvtps2pd), where __builtin_convertvector of a 4-float vector became two 2-wide ones
      // merged into registers that each iteration depended on: 6.8 GB/s against 9.8 (a plain
      // read of the same 0.5 GB: 11.4) over gpt2's gradients at one thread. The same values.
      const E* f = x + i + 4 * v;
      const vec4d d = {as_float(f[0]), as_float(f[1]), as_float(f[2]), as_float(f[3])};
      acc[v] += d * d;
    }
  }
  const vec4d total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  double sum = (total[0] + total[1]) + (total[2] + total[3]);
  for (; i < n; ++i) sum += static_cast<double>(as_float(x[i])) * as_float(x[i]);
  return sum;
}

template <class E>
double chunked_sum_of_squares(const E* x, size_t N) {
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
}  // namespace

double sum_of_squares(const float* x, size_t N) { return chunked_sum_of_squares(x, N); }
double sum_of_squares(const uint16_t* x, size_t N) { return chunked_sum_of_squares(x, N); }

}  // namespace gpt2cc::cpu
