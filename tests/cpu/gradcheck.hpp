// Finite-difference gradient checking for the cpu:: layer tests.
//
// Every test checks a layer's backward against the scalar objective f = sum_i out[i] * w[i]
// (w random, so every output element matters with its own weight): its gradient with respect to
// out is exactly w, which is therefore the dout fed to the backward. The numeric gradient is a
// central difference (f(x+h) - f(x-h)) / (2h), evaluated through the same fp32 forward but
// summed and divided in double.
//
// Tolerances (used by check_gradient): fp32 rounding of the outputs makes f uncertain by about
// 6e-8 * sqrt(#outputs) * |out| ~ 1e-6 for our sizes, i.e. ~5e-5 in the quotient at h = 1e-2;
// the truncation error h^2/6 * f''' is ~2e-4 for the most curved layers (softmax, layernorm with
// few channels). atol 1e-3 + rtol 1e-2 leaves a margin of ~5x over both, while a wrong
// derivative (a missing term, a factor of 2, a transposed index) is off by O(1).
#pragma once

#include "common/catch.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/test_common.hpp"

namespace gpt2cc::test {

// f = sum_i out[i] * w[i], accumulated in double.
inline double weighted_sum(const float* out, const std::vector<float>& w) {
  double sum = 0.0;
  for (size_t i = 0; i < w.size(); ++i) sum += static_cast<double>(out[i]) * w[i];
  return sum;
}

// df/dx[i] for every i by central differences; objective() recomputes f from the current x.
// The step actually taken is (x+h) - (x-h) as rounded to float, so the quotient uses it.
template <class Objective>
std::vector<float> numeric_gradient(std::vector<float>& x, Objective&& objective, float h = 1e-2f) {
  std::vector<float> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float x0 = x[i];
    const float xp = x0 + h, xm = x0 - h;
    x[i] = xp;
    const double fp = objective();
    x[i] = xm;
    const double fm = objective();
    x[i] = x0;
    grad[i] = static_cast<float>((fp - fm) / (static_cast<double>(xp) - static_cast<double>(xm)));
  }
  return grad;
}

// The analytic gradient matches the numeric one element-wise (tolerances in the header), and the
// numeric one is not trivially zero (a check on all-zero gradients could never fail).
inline void check_gradient(const std::vector<float>& analytic, const std::vector<float>& numeric,
                           const std::string& what, double atol = 1e-3, double rtol = 1e-2) {
  REQUIRE(analytic.size() == numeric.size());
  float largest = 0.0f;
  for (float g : numeric) largest = std::max(largest, std::fabs(g));
  INFO(what << ": largest numeric gradient " << largest);
  CHECK(largest > 1e-2f);
  expect_close(analytic, numeric, atol, rtol, what + " (analytic vs finite differences)");
}

// a + b element-wise: the expected result of accumulating b onto a.
inline std::vector<float> plus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] + b[i];
  return r;
}

// k * a element-wise.
inline std::vector<float> times(const std::vector<float>& a, float k) {
  std::vector<float> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] * k;
  return r;
}

}  // namespace gpt2cc::test
