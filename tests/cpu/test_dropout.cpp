// cpu::dropout_forward / dropout_backward: mask statistics, that the mask is the documented
// function of (seed, stream, index), forward/backward consistency (finite differences), in-place
// use, and that p = 0 is the identity.
#include "common/catch.hpp"

#include "cpu/dropout.hpp"
#include "tests/cpu/gradcheck.hpp"

using namespace gpt2cc;
using test::expect_close;

TEST_CASE("dropout keeps 1-p of the elements, scaled by 1/(1-p), at the documented indices", "[cpu][dropout]") {
  const size_t N = 200000;
  const DropoutParams dropout{0.1f, 1234, 7};
  std::vector<float> x(N, 2.0f), out(N);
  test::poison(out.data(), N);
  cpu::dropout_forward(out.data(), x.data(), dropout, N);
  size_t dropped = 0, wrong = 0;
  for (size_t i = 0; i < N; ++i) {
    const bool keep = philox_uniform(1234, 7, i) >= 0.1f;  // the mask as core/rng.hpp defines it
    dropped += out[i] == 0.0f;
    wrong += keep ? out[i] != 2.0f / 0.9f : out[i] != 0.0f;
  }
  CHECK(wrong == 0);
  // Binomial(N, 0.1): sd = sqrt(N p (1-p)) = 134; allow 5 sd.
  CHECK(std::fabs(static_cast<double>(dropped) - 0.1 * N) < 5 * 134.0);
  // Inverted dropout preserves the mean: E[out] = x.
  double mean = 0;
  for (float v : out) mean += v;
  mean /= N;
  CHECK(std::fabs(mean - 2.0) < 0.01);

  // Another stream or seed draws another mask.
  std::vector<float> other(N);
  cpu::dropout_forward(other.data(), x.data(), DropoutParams{0.1f, 1234, 8}, N);
  size_t differ = 0;
  for (size_t i = 0; i < N; ++i) differ += other[i] != out[i];
  CHECK(differ > N / 10);
}

TEST_CASE("dropout backward uses the forward's mask; in place; p = 0 is the identity", "[cpu][dropout]") {
  const size_t N = 37;
  const DropoutParams dropout{0.3f, 99, 2};
  auto x = test::random_vector(N, 50), w = test::random_vector(N, 51);
  std::vector<float> out(N), dinp(N);
  auto objective = [&] {
    test::poison(out.data(), N);
    cpu::dropout_forward(out.data(), x.data(), dropout, N);
    return test::weighted_sum(out.data(), w);
  };
  test::poison(dinp.data(), N);
  cpu::dropout_backward(dinp.data(), w.data(), dropout, N);
  test::check_gradient(dinp, test::numeric_gradient(x, objective), "dinp");

  // In place gives the same results in both directions.
  objective();
  std::vector<float> y = x, dy = w;
  cpu::dropout_forward(y.data(), y.data(), dropout, N);
  cpu::dropout_backward(dy.data(), dy.data(), dropout, N);
  expect_close(y, out, 0, 0, "in-place forward");
  expect_close(dy, dinp, 0, 0, "in-place backward");

  // p = 0: out == inp exactly, and dinp == dout.
  const DropoutParams off{0.0f, 99, 2};
  test::poison(out.data(), N);
  cpu::dropout_forward(out.data(), x.data(), off, N);
  expect_close(out, x, 0, 0, "p = 0 forward");
  test::poison(dinp.data(), N);
  cpu::dropout_backward(dinp.data(), w.data(), off, N);
  expect_close(dinp, w, 0, 0, "p = 0 backward");
}
