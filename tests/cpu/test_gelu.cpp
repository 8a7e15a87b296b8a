// cpu::gelu_forward / gelu_backward: hand-computed values, in-place forward, a finite-difference
// gradient check and the rule that dinp is written (=), not accumulated. The vectorised pair
// against exact (double) values, the plain pair, in place and at the extremes.
#include "common/catch.hpp"

#include <cmath>
#include <limits>

#include "cpu/gelu.hpp"
#include "tests/cpu/gradcheck.hpp"

using namespace gpt2cc;
using test::expect_close;

TEST_CASE("gelu by hand", "[cpu][gelu]") {
  // u = sqrt(2/pi) (x + 0.044715 x^3); gelu = 0.5 x (1 + tanh u)
  //   x = 1: u = 0.7978846 * 1.044715 = 0.8335620, tanh u = 0.6823840, gelu = 0.8411920
  //   x = 2: u = 0.7978846 * 2.357720 = 1.8811884, tanh u = 0.9545977, gelu = 1.9545977
  //   x = -1: gelu(-x) = gelu(x) - x, so -0.1588080 ; x = 0: 0
  // gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
  //   x = 1: 0.8411920 + 0.5 * 0.5343521 * 0.7978846 * 1.134145 = 1.0829641
  //   x = 2: 0.9772988 + 1.0 * 0.0887432 * 0.7978846 * 1.53658 = 1.0860993
  //   x = -1: 1 - gelu'(1) = -0.0829641 ; x = 0: 0.5
  std::vector<float> x = {-1, 0, 1, 2}, out(4), dinp(4);
  test::poison(out.data(), 4);
  cpu::gelu_forward(out.data(), x.data(), 4);
  expect_close(out, {-0.1588080f, 0.0f, 0.8411920f, 1.9545977f}, 1e-6, 1e-6, "gelu");
  std::vector<float> dout = {1, 1, 1, 2};
  dinp = {100, 100, 100, 100};  // written, not accumulated
  cpu::gelu_backward(dinp.data(), dout.data(), x.data(), 4);
  expect_close(dinp, {-0.0829641f, 0.5f, 1.0829641f, 2 * 1.0860993f}, 1e-6, 1e-6, "dinp");

  // In place: out == inp.
  std::vector<float> y = x;
  cpu::gelu_forward(y.data(), y.data(), 4);
  expect_close(y, out, 0, 0, "in-place forward");
}

TEST_CASE("gelu gradient matches finite differences", "[cpu][gelu]") {
  for (size_t N : {size_t{1}, size_t{13}, size_t{67}}) {
    CAPTURE(N);
    auto x = test::random_vector(N, 30, -3.0f, 3.0f);
    auto w = test::random_vector(N, 31);
    std::vector<float> out(N), dinp(N);
    auto objective = [&] {
      test::poison(out.data(), N);
      cpu::gelu_forward(out.data(), x.data(), N);
      return test::weighted_sum(out.data(), w);
    };
    test::poison(dinp.data(), N);
    cpu::gelu_backward(dinp.data(), w.data(), x.data(), N);
    auto num = test::numeric_gradient(x, objective);
    if (N > 1) test::check_gradient(dinp, num, "dinp");
    else expect_close(dinp, num, 1e-3, 1e-2, "dinp (N = 1)");
    // Written, not accumulated: a second call gives the same values.
    auto first = dinp;
    cpu::gelu_backward(dinp.data(), w.data(), x.data(), N);
    expect_close(dinp, first, 0, 0, "dinp after a second backward call");
  }
}

TEST_CASE("gelu_*_vectorized: exact to a few ulp, the plain pair to its own rounding", "[cpu][gelu]") {
  // x in [-12, 12] every 1/1024 (24577 values: both tails, where gelu and its slope go to 0 or x
  // and 1), and +-100 (far out in both).
  std::vector<float> x;
  for (int i = -12 * 1024; i <= 12 * 1024; ++i) x.push_back(float(i) / 1024.0f);
  for (float v : {-100.0f, 100.0f}) x.push_back(v);
  const size_t N = x.size();
  // Exact values in double, in the sigmoid form (the tanh form cancels in double too, past x = -7).
  std::vector<float> exact(N), exact_slope(N);
  for (size_t i = 0; i < N; ++i) {
    const double xi = x[i], k = std::sqrt(2.0 / M_PI), u = k * (xi + 0.044715 * xi * xi * xi);
    const double e = std::exp(-2.0 * u), s = 1.0 / (1.0 + e);
    const double one_minus_s = e > 1.0 ? 1.0 / (1.0 + 1.0 / e) : e / (1.0 + e);  // e may be inf
    exact[i] = float(xi * s);
    exact_slope[i] = float(s + 2.0 * xi * s * one_minus_s * k * (1.0 + 3.0 * 0.044715 * xi * xi));
  }
  std::vector<float> out(N), dinp(N, 100.0f), ones(N, 1.0f);
  test::poison(out.data(), N);
  cpu::gelu_forward_vectorized(out.data(), x.data(), N);
  cpu::gelu_backward_vectorized(dinp.data(), ones.data(), x.data(), N);
  // In the left tail gelu ~ x exp(-2u): u rounded to float carries |2u| 6e-8 of relative error
  // into it whatever computes the exp (at x = -5, u = -8.4: 1e-6), hence 1e-5 relative. The
  // slope crosses 0 near x = -0.75 as the difference of terms ~0.3: 1e-7 absolute there.
  expect_close(out, exact, 1e-30, 1e-5, "gelu vs exact");
  expect_close(dinp, exact_slope, 1e-7, 1e-5, "gelu' vs exact");

  // The plain pair: the same function, with 1 + tanh u cancelling at negative x (absolute error
  // there ~ |x| 6e-8).
  std::vector<float> plain(N), plain_slope(N);
  cpu::gelu_forward(plain.data(), x.data(), N);
  cpu::gelu_backward(plain_slope.data(), ones.data(), x.data(), N);
  expect_close(out, plain, 1e-6, 1e-6, "gelu vs the plain forward");
  expect_close(dinp, plain_slope, 1e-6, 1e-6, "gelu' vs the plain backward");

  // In place (the model's matmul_backward_gelu runs dinp == dout), and dout scales.
  std::vector<float> y = x;
  cpu::gelu_forward_vectorized(y.data(), y.data(), N);
  expect_close(y, out, 0, 0, "in-place forward");
  std::vector<float> d(N, 2.0f);
  cpu::gelu_backward_vectorized(d.data(), d.data(), x.data(), N);
  for (size_t i = 0; i < N; ++i) REQUIRE(d[i] == 2.0f * dinp[i]);
  // Far negative x: gelu -0 and slope 0 (exp(-2u) is inf there), not NaN; NaN stays NaN.
  CHECK(out[N - 2] == 0.0f);
  CHECK(dinp[N - 2] == 0.0f);
  CHECK(out[N - 1] == 100.0f);
  CHECK(dinp[N - 1] == 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float r = 0.0f, g = 0.0f, one = 1.0f;
  cpu::gelu_forward_vectorized(&r, &nan, 1);
  cpu::gelu_backward_vectorized(&g, &one, &nan, 1);
  CHECK(std::isnan(r));
  CHECK(std::isnan(g));
}
