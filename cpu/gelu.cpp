// GELU with the tanh approximation, forward and backward (cpu/gelu.hpp).
//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
// Backward: dinp written (=). The forward may run in place (out == inp).
#include "cpu/gelu.hpp"

#include <cmath>

namespace gpt2cc::cpu {

namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kCubic = 0.044715f;
}  // namespace

// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
void gelu_forward(float* out, const float* inp, size_t N) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < N; ++i) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    out[i] = 0.5f * x * (1.0f + std::tanh(u));
  }
}

// Product rule on 0.5 x (1 + tanh u), with d tanh(u)/du = 1 - tanh^2 u = sech^2 u:
//   dgelu/dx = 0.5 (1 + tanh u) + 0.5 x sech^2(u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//   dinp = dout * dgelu/dx
void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < N; ++i) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    const float th = std::tanh(u);
    const float sech2 = 1.0f - th * th;
    const float local = 0.5f * (1.0f + th) + 0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    dinp[i] = dout[i] * local;
  }
}

}  // namespace gpt2cc::cpu
