// cpu::layernorm_forward / layernorm_backward: a hand-computed case, finite-difference gradients
// of inp, weight and bias, the accumulation rule (dinp accumulates: residual stream) and shapes.
#include <catch2/catch.hpp>

#include "cpu/layernorm.hpp"
#include "tests/cpu/gradcheck.hpp"

using namespace gpt2cc;
using test::expect_close;

TEST_CASE("layernorm forward and backward by hand", "[cpu][layernorm]") {
  // One row, C = 4: x = (0, 2, 0, 2): mean 1, var = (1+1+1+1)/4 = 1, rstd = 1/sqrt(1 + 1e-5)
  // = 0.999995, xhat = (-1, 1, -1, 1) * rstd. weight (2, 1, 1, 1), bias (0, 0.5, 0, 0):
  // out = xhat * weight + bias = (-2, 1, -1, 1) * rstd + (0, 0.5, 0, 0).
  const float r = 0.999995f;
  std::vector<float> x = {0, 2, 0, 2}, weight = {2, 1, 1, 1}, bias = {0, 0.5f, 0, 0};
  std::vector<float> out(4), mean(1), rstd(1);
  test::poison(out.data(), 4);
  test::poison(mean.data(), 1);
  test::poison(rstd.data(), 1);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), weight.data(), bias.data(), 1, 1, 4);
  expect_close(out, {-2 * r, r + 0.5f, -r, r}, 1e-6, 1e-6, "out");
  expect_close(mean, {1.0f}, 1e-7, 0, "mean");
  expect_close(rstd, {r}, 1e-7, 1e-6, "rstd");

  // dout = (1, 0, 0, 0): g = dout * weight = (2, 0, 0, 0), mean(g) = 0.5,
  // mean(g * xhat) = (2 * -1)/4 = -0.5 (rstd ~ 1), dx_c = rstd (g_c - 0.5 - xhat_c * -0.5):
  //   dx = (2 - 0.5 - 0.5, 0 - 0.5 + 0.5, 0 - 0.5 - 0.5, 0 - 0.5 + 0.5) = (1, 0, -1, 0) * rstd
  // dweight = dout * xhat = (-1, 0, 0, 0) ; dbias = dout = (1, 0, 0, 0).
  // dinp starts at (10, 10, 10, 10): it accumulates.
  std::vector<float> dout = {1, 0, 0, 0}, dinp(4, 10.0f), dweight(4, 0.0f), dbias(4, 0.0f);
  cpu::layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), mean.data(), rstd.data(), x.data(),
                          weight.data(), 1, 1, 4);
  expect_close(dinp, {10 + r, 10, 10 - r, 10}, 1e-5, 1e-6, "dinp");
  expect_close(dweight, {-r, 0, 0, 0}, 1e-5, 1e-6, "dweight");
  expect_close(dbias, {1, 0, 0, 0}, 1e-6, 1e-6, "dbias");
}

TEST_CASE("layernorm gradients match finite differences", "[cpu][layernorm]") {
  for (auto [B, T, C] : {std::tuple{3, 2, 5}, std::tuple{1, 1, 11}}) {
    CAPTURE(B, T, C);
    const size_t N = static_cast<size_t>(B) * T * C;
    auto x = test::random_vector(N, 10);
    auto weight = test::random_vector(C, 11, 0.5f, 1.5f);
    auto bias = test::random_vector(C, 12);
    auto w = test::random_vector(N, 13);
    std::vector<float> out(N), mean(B * T), rstd(B * T);
    auto objective = [&] {
      test::poison(out.data(), N);
      cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), weight.data(), bias.data(), B, T, C);
      return test::weighted_sum(out.data(), w);
    };
    objective();

    // dinp starts from a random residual-stream gradient and must end at that plus the gradient.
    auto dinp0 = test::random_vector(N, 14);
    std::vector<float> dinp = dinp0, dweight(C, 0.0f), dbias(C, 0.0f);
    cpu::layernorm_backward(dinp.data(), dweight.data(), dbias.data(), w.data(), mean.data(), rstd.data(), x.data(),
                            weight.data(), B, T, C);
    auto num_x = test::numeric_gradient(x, objective);
    auto num_weight = test::numeric_gradient(weight, objective);
    auto num_bias = test::numeric_gradient(bias, objective);
    objective();  // restores mean, rstd for the second backward
    std::vector<float> dx(N);
    for (size_t i = 0; i < N; ++i) dx[i] = dinp[i] - dinp0[i];
    test::check_gradient(dx, num_x, "dinp");
    test::check_gradient(dweight, num_weight, "dweight");
    test::check_gradient(dbias, num_bias, "dbias");

    // Second backward: every gradient accumulates once more.
    cpu::layernorm_backward(dinp.data(), dweight.data(), dbias.data(), w.data(), mean.data(), rstd.data(), x.data(),
                            weight.data(), B, T, C);
    expect_close(dinp, test::plus(dinp0, test::times(num_x, 2.0f)), 2e-3, 1e-2, "dinp after two backward calls");
    expect_close(dweight, test::times(num_weight, 2.0f), 2e-3, 1e-2, "dweight after two backward calls");
    expect_close(dbias, test::times(num_bias, 2.0f), 2e-3, 1e-2, "dbias after two backward calls");
  }
}

TEST_CASE("layernorm output is normalised for a large offset", "[cpu][layernorm]") {
  // x = 1000 + noise: the two-pass mean/variance keeps the normalised row at mean 0, variance 1.
  const int C = 37;
  auto x = test::random_vector(C, 20);
  for (float& v : x) v += 1000.0f;
  std::vector<float> weight(C, 1.0f), bias(C, 0.0f), out(C), mean(1), rstd(1);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), weight.data(), bias.data(), 1, 1, C);
  double m = 0, v = 0;
  for (float o : out) m += o;
  m /= C;
  for (float o : out) v += (o - m) * (o - m);
  v /= C;
  CHECK(std::fabs(m) < 1e-4);
  CHECK(std::fabs(v - 1.0) < 1e-3);
}
