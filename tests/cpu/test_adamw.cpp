// cpu::adamw_update and cpu::sum_of_squares: two hand-computed steps (decay, bias correction,
// grad_scale), weight_decay = 0 against an independent Adam in double, and the double-precision
// sum of squares, the same for any thread count.
#include "common/catch.hpp"

#include <omp.h>

#include "cpu/adamw.hpp"
#include "tests/cpu/gradcheck.hpp"

using namespace gpt2cc;
using test::expect_close;

TEST_CASE("AdamW: two steps by hand", "[cpu][adamw]") {
  // p = 1, grad = 0.5, grad_scale = 0.5 -> g = 0.25; lr 0.1, beta1 0.9, beta2 0.95, wd 0.1.
  // Step 1: m = 0.1 * 0.25 = 0.025, v = 0.05 * 0.0625 = 0.003125;
  //   mhat = 0.025 / (1 - 0.9) = 0.25, vhat = 0.003125 / (1 - 0.95) = 0.0625, sqrt = 0.25;
  //   p = 1 - 0.1 * (0.25 / 0.25 + 0.1 * 1) = 0.89
  // Step 2: m = 0.0225 + 0.025 = 0.0475, v = 0.00296875 + 0.003125 = 0.00609375;
  //   mhat = 0.0475 / 0.19 = 0.25, vhat = 0.00609375 / 0.0975 = 0.0625 -> again 1;
  //   p = 0.89 - 0.1 * (1 + 0.1 * 0.89) = 0.7811
  std::vector<float> p = {1.0f}, m = {0.0f}, v = {0.0f}, g = {0.5f};
  AdamWParams hp{0.1f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 0.5f};
  cpu::adamw_update(p.data(), m.data(), v.data(), g.data(), 1, hp);
  expect_close(m, {0.025f}, 0, 1e-6, "m after step 1");
  expect_close(v, {0.003125f}, 0, 1e-6, "v after step 1");
  expect_close(p, {0.89f}, 0, 1e-6, "p after step 1");
  hp.step = 2;
  cpu::adamw_update(p.data(), m.data(), v.data(), g.data(), 1, hp);
  expect_close(m, {0.0475f}, 0, 1e-6, "m after step 2");
  expect_close(v, {0.00609375f}, 0, 1e-6, "v after step 2");
  expect_close(p, {0.7811f}, 0, 1e-6, "p after step 2");
}

TEST_CASE("AdamW with weight_decay 0 is Adam; decay subtracts lr*wd*p", "[cpu][adamw]") {
  const size_t N = 1001;
  auto p0 = test::random_vector(N, 70), grad = test::random_vector(N, 71);
  auto m0 = test::random_vector(N, 72, -0.1f, 0.1f), v0 = test::random_vector(N, 73, 0.0f, 0.01f);
  AdamWParams hp{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 5, 0.7f};

  // Adam in double, written independently of the implementation.
  std::vector<double> expected(N);
  for (size_t i = 0; i < N; ++i) {
    double g = double(grad[i]) * 0.7;
    double m = 0.9 * m0[i] + 0.1 * g, v = 0.999 * v0[i] + 0.001 * g * g;
    double mhat = m / (1 - std::pow(0.9, 5)), vhat = v / (1 - std::pow(0.999, 5));
    expected[i] = p0[i] - 1e-3 * mhat / (std::sqrt(vhat) + 1e-8);
  }
  std::vector<float> p = p0, m = m0, v = v0;
  cpu::adamw_update(p.data(), m.data(), v.data(), grad.data(), N, hp);
  std::vector<double> got(p.begin(), p.end());
  expect_close(got.data(), expected.data(), N, 1e-7, 1e-6, "Adam step (weight_decay 0)");

  // With decay, each parameter moves by an extra -lr * wd * p (decoupled from the gradient).
  std::vector<float> pd = p0, md = m0, vd = v0;
  hp.weight_decay = 0.1f;
  cpu::adamw_update(pd.data(), md.data(), vd.data(), grad.data(), N, hp);
  std::vector<float> diff(N), decay(N);
  for (size_t i = 0; i < N; ++i) {
    diff[i] = pd[i] - p[i];
    decay[i] = -1e-3f * 0.1f * p0[i];
  }
  expect_close(diff, decay, 1e-8, 1e-3, "decoupled weight decay");
  expect_close(md, m, 0, 0, "m does not depend on the decay");
}

TEST_CASE("sum_of_squares accumulates in double", "[cpu][adamw]") {
  std::vector<float> x = {1, 2, 3};
  CHECK(cpu::sum_of_squares(x.data(), 3) == 14.0);
  // 3e6 values of 0.1f: a float accumulator drifts by ~1e-3 relative (it stops being able to add
  // 0.01 once the total is large); a double one stays within N * 1e-16 ~ 3e-10.
  const size_t N = 3000000;
  std::vector<float> big(N, 0.1f);
  const double exact = static_cast<double>(N) * double(0.1f) * double(0.1f);
  CHECK(std::fabs(cpu::sum_of_squares(big.data(), N) - exact) / exact < 1e-9);
}

TEST_CASE("sum_of_squares gives the same bits for any thread count", "[cpu][adamw][determinism]") {
  // Several 64K-element chunks and a ragged tail (cpu/adamw.cpp sums chunk by chunk, in order).
  const size_t N = 3 * 65536 + 37;
  const std::vector<float> x = test::random_vector(N, 41, -3.0f, 3.0f);
  double plain = 0.0;
  for (float value : x) plain += static_cast<double>(value) * value;
  const double one_thread = [&] {
    omp_set_num_threads(1);
    return cpu::sum_of_squares(x.data(), N);
  }();
  CHECK(std::fabs(one_thread - plain) / plain < 1e-12);
  const int threads = omp_get_max_threads();
  for (int n : {2, 3, 5}) {
    omp_set_num_threads(n);
    CHECK(cpu::sum_of_squares(x.data(), N) == one_thread);
  }
  omp_set_num_threads(threads);
  CHECK(cpu::sum_of_squares(x.data(), 0) == 0.0);
  double five = 0.0;  // under one vector step: the scalar tail alone, in order
  for (int i = 0; i < 5; ++i) five += double(x[i]) * x[i];
  CHECK(cpu::sum_of_squares(x.data(), 5) == five);
}
