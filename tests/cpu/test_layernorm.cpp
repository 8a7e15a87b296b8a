// cpu::layernorm_forward / layernorm_backward: a hand-computed case, finite-difference gradients
// of inp, weight and bias, the accumulation rule (dinp accumulates: residual stream) and shapes;
// the vectorised pair the backend runs against them, on every thread count.
#include <omp.h>

#include "common/catch.hpp"

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
  // x = 1000 + noise: the two-pass mean/variance keeps the normalised row at mean 0, variance 1
  // (a one-pass E[x^2] - mean^2 loses the variance to cancellation). C = 37 and 300: the
  // vectorised forward's 32-wide rounds, 8-wide steps and scalar tail.
  // (The plain forward's one running sum loses the mean's last digits by C = 300: 3e-4 here.)
  for (const bool vectorized : {false, true})
    for (const int C : vectorized ? std::vector<int>{37, 300} : std::vector<int>{37}) {
      CAPTURE(vectorized, C);
      auto x = test::random_vector(C, 20);
      for (float& v : x) v += 1000.0f;
      std::vector<float> weight(C, 1.0f), bias(C, 0.0f), out(C), mean(1), rstd(1);
      (vectorized ? cpu::layernorm_forward_vectorized : cpu::layernorm_forward)(
          out.data(), mean.data(), rstd.data(), x.data(), weight.data(), bias.data(), 1, 1, C);
      double m = 0, v = 0;
      for (float o : out) m += o;
      m /= C;
      for (float o : out) v += (o - m) * (o - m);
      v /= C;
      CHECK(std::fabs(m) < 1e-4);
      CHECK(std::fabs(v - 1.0) < 1e-3);
    }
}

// LayerNorm forward (test::layernorm_in_double) and backward in double, from the formulas in
// cpu/layernorm.cpp; the backward's dinp, dweight, dbias accumulate onto the given values.
struct ExactLayerNorm {
  test::LayerNormInDouble forward;
  std::vector<double> dinp, dweight, dbias;
};
ExactLayerNorm exact_layernorm(const std::vector<float>& x, const std::vector<float>& weight,
                               const std::vector<float>& bias, const std::vector<float>& dout,
                               const std::vector<float>& dinp0, const std::vector<float>& dweight0,
                               const std::vector<float>& dbias0, size_t rows, int C) {
  const auto widen = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  ExactLayerNorm e{test::layernorm_in_double(x, weight, bias, rows, C), widen(dinp0), widen(dweight0),
                   widen(dbias0)};
  for (size_t r = 0; r < rows; ++r) {
    const double m = e.forward.mean[r], s = e.forward.rstd[r];
    double g_mean = 0, gx_mean = 0;
    for (int c = 0; c < C; ++c) {
      const double xhat = (x[r * C + c] - m) * s, g = double(dout[r * C + c]) * weight[c];
      g_mean += g / C;
      gx_mean += g * xhat / C;
      e.dweight[c] += dout[r * C + c] * xhat;
      e.dbias[c] += dout[r * C + c];
    }
    for (int c = 0; c < C; ++c) {
      const double xhat = (x[r * C + c] - m) * s;
      e.dinp[r * C + c] += s * (double(dout[r * C + c]) * weight[c] - g_mean - xhat * gx_mean);
    }
  }
  return e;
}

// Both pairs against LayerNorm in double, within float rounding: rows of mean 3 and spread 2,
// where the mean's rounding (a few 1e-7 of 3) reaches every output near it, and dweight / dbias
// sum that over up to 70 rows. Shapes: C across the vector loops' cases (under 8, one 8-wide
// step, 32-wide rounds with and without a tail, GPT-2's 768) and row counts across the
// backward's 32-row tasks; dinp, dweight and dbias start nonzero (they accumulate). The
// vectorised pair gives the same bits on 1, 2 and 3 threads.
TEST_CASE("layernorm_*_vectorized and the plain pair agree with LayerNorm in double, on every thread count",
          "[cpu][layernorm]") {
  const int threads_before = omp_get_max_threads();
  for (auto [B, T, C] : {std::tuple{1, 1, 5}, std::tuple{2, 3, 8}, std::tuple{1, 31, 33}, std::tuple{2, 16, 64},
                         std::tuple{3, 11, 100}, std::tuple{1, 70, 768}}) {
    CAPTURE(B, T, C);
    const size_t rows = size_t(B) * T, N = rows * C;
    auto x = test::random_vector(N, 30, 1.0f, 5.0f);
    auto weight = test::random_vector(C, 31, 0.5f, 1.5f), bias = test::random_vector(C, 32);
    auto dout = test::random_vector(N, 33), dinp0 = test::random_vector(N, 34);
    auto dweight0 = test::random_vector(C, 35), dbias0 = test::random_vector(C, 36);
    const ExactLayerNorm exact = exact_layernorm(x, weight, bias, dout, dinp0, dweight0, dbias0, rows, C);
    struct Result {
      std::vector<float> out, mean, rstd, dinp, dweight, dbias;
    };
    auto run = [&](bool vectorized, int threads) {
      omp_set_num_threads(threads);
      Result r{std::vector<float>(N), std::vector<float>(rows), std::vector<float>(rows), dinp0, dweight0, dbias0};
      test::poison(r.out.data(), N);
      (vectorized ? cpu::layernorm_forward_vectorized : cpu::layernorm_forward)(
          r.out.data(), r.mean.data(), r.rstd.data(), x.data(), weight.data(), bias.data(), B, T, C);
      (vectorized ? cpu::layernorm_backward_vectorized : cpu::layernorm_backward)(
          r.dinp.data(), r.dweight.data(), r.dbias.data(), dout.data(), r.mean.data(), r.rstd.data(), x.data(),
          weight.data(), B, T, C);
      return r;
    };
    for (const bool vectorized : {false, true}) {
      CAPTURE(vectorized);
      const Result r = run(vectorized, 1);
      expect_close(r.out, test::to_float(exact.forward.out), 1e-5, 1e-5, "out");
      expect_close(r.mean, test::to_float(exact.forward.mean), 0, 4e-6, "mean");
      expect_close(r.rstd, test::to_float(exact.forward.rstd), 0, 1e-5, "rstd");
      expect_close(r.dinp, test::to_float(exact.dinp), 2e-5, 1e-5, "dinp");
      expect_close(r.dweight, test::to_float(exact.dweight), 1e-4, 1e-5, "dweight");
      expect_close(r.dbias, test::to_float(exact.dbias), 1e-5, 1e-5, "dbias");
    }
    const Result one_thread = run(true, 1);
    for (int threads : {2, 3}) {
      CAPTURE(threads);
      const Result other = run(true, threads);
      CHECK(other.out == one_thread.out);
      CHECK(other.rstd == one_thread.rstd);
      CHECK(other.dinp == one_thread.dinp);
      CHECK(other.dweight == one_thread.dweight);
      CHECK(other.dbias == one_thread.dbias);
    }
  }
  omp_set_num_threads(threads_before);
}
