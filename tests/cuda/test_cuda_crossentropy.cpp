// cuda::crossentropy_forward / crossentropy_backward against cpu:: over the padded vocabulary:
// GPT-2's V = 50257 in Vp = 50304, a tiny V, T = 1, ignored targets (-1), the backward in place
// over the logits, and logits near 1000. Padded columns and ignored rows must get exactly 0.
#include "common/catch.hpp"

#include <algorithm>
#include <cmath>

#include "cpu/crossentropy.hpp"
#include "cuda_test_util.hpp"
#include "kernels/crossentropy.cuh"

using namespace gpt2cc;
using test::DeviceBuffer;

TEST_CASE("cuda crossentropy matches cpu", "[cuda][crossentropy]") {
  struct Shape {
    int B, T, V, Vp;
  };
  const Shape shape = GENERATE(Shape{1, 1, 1, 1}, Shape{1, 1, 5, 8}, Shape{3, 5, 37, 128}, Shape{2, 3, 50257, 50304});
  const int B = shape.B, T = shape.T, V = shape.V, Vp = shape.Vp;
  INFO("B=" << B << " T=" << T << " V=" << V << " Vp=" << Vp);
  const size_t rows = size_t(B) * T, n = rows * Vp;
  auto logits = test::random_vector(n, 101, -4.0f, 4.0f);
  auto targets = test::random_tokens(rows, 102, V);
  if (rows > 2) targets[1] = cpu::kIgnoreIndex;
  const float dloss = 1.0f / static_cast<float>(rows);
  std::vector<float> losses(rows), dlogits(n);
  cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), B, T, V, Vp);
  cpu::crossentropy_backward(dlogits.data(), dloss, logits.data(), targets.data(), B, T, V, Vp);

  DeviceBuffer<float> d_logits(logits), d_losses(rows), d_dlogits(n);
  DeviceBuffer<int> d_targets(targets);
  d_losses.poison();
  d_dlogits.poison();
  cuda::crossentropy_forward(d_losses.get(), d_logits.get(), d_targets.get(), B, T, V, Vp, test::test_stream());
  cuda::crossentropy_backward(d_dlogits.get(), dloss, d_logits.get(), d_targets.get(), B, T, V, Vp,
                              test::test_stream());
  test::expect_matches(d_losses.download(), losses, "losses");
  const auto g = d_dlogits.download();
  test::expect_matches(g, dlogits, "dlogits");
  for (size_t r = 0; r < rows; ++r) {
    for (int j = V; j < Vp; ++j) REQUIRE(g[r * Vp + j] == 0.0f);
    if (targets[r] == cpu::kIgnoreIndex) {
      for (int j = 0; j < Vp; ++j) REQUIRE(g[r * Vp + j] == 0.0f);
    }
  }
  // In place: dlogits written over the logits.
  cuda::crossentropy_backward(d_logits.get(), dloss, d_logits.get(), d_targets.get(), B, T, V, Vp, test::test_stream());
  test::expect_matches(d_logits.download(), dlogits, "dlogits in place");
}

TEST_CASE("cuda crossentropy keeps its precision when the logits are large", "[cuda][crossentropy]") {
  // Logits near 1000: log(sum) + max - l_y rounds to max's spacing (6e-5) before l_y comes off,
  // a relative error of ~1e-5 on losses near 2; log(sum) - (l_y - max) keeps float's 1e-7.
  const int T = 8, V = 64, Vp = 64;
  auto logits = test::random_vector(size_t(T) * Vp, 105, -4.0f, 4.0f);
  for (float& l : logits) l += 1000.0f;
  const auto targets = test::random_tokens(T, 106, V);
  DeviceBuffer<float> d_logits(logits), d_losses(T);
  DeviceBuffer<int> d_targets(targets);
  cuda::crossentropy_forward(d_losses.get(), d_logits.get(), d_targets.get(), 1, T, V, Vp, test::test_stream());
  const auto losses = d_losses.download();
  for (int r = 0; r < T; ++r) {
    const float* row = logits.data() + size_t(r) * Vp;
    const double maxval = *std::max_element(row, row + V);
    double sum = 0.0;
    for (int j = 0; j < V; ++j) sum += std::exp(double(row[j]) - maxval);
    const double exact = std::log(sum) - (double(row[targets[r]]) - maxval);
    INFO("row " << r << ": exact " << exact << ", cuda " << losses[r]);
    CHECK(std::abs(losses[r] - exact) <= 1e-6 * exact);
  }
}

TEST_CASE("cuda crossentropy marks an out-of-range target with NaN", "[cuda][crossentropy]") {
  const int V = 5, Vp = 8;
  const auto logits = test::random_vector(2 * Vp, 103);
  DeviceBuffer<float> d_logits(logits), d_losses(2);
  DeviceBuffer<int> d_targets(std::vector<int>{2, 7});
  cuda::crossentropy_forward(d_losses.get(), d_logits.get(), d_targets.get(), 1, 2, V, Vp, test::test_stream());
  const auto losses = d_losses.download();
  CHECK(std::isfinite(losses[0]));
  CHECK(std::isnan(losses[1]));
}

TEST_CASE("cuda crossentropy rejects a vocabulary larger than its padding", "[cuda][crossentropy]") {
  // Typed null logits: the float and bf16 overloads would both accept a bare nullptr.
  const float* no_logits = nullptr;
  CHECK_THROWS_WITH(cuda::crossentropy_forward(nullptr, no_logits, nullptr, 1, 1, 9, 8, test::test_stream()),
                    Catch::Contains("V <= Vp"));
  CHECK_THROWS_WITH(cuda::crossentropy_backward(static_cast<float*>(nullptr), 1.0f, no_logits, nullptr, 1, 1, 9, 8,
                                                test::test_stream()),
                    Catch::Contains("V <= Vp"));
}
