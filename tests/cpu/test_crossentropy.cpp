// cpu::crossentropy_forward / crossentropy_backward: hand-computed losses and gradients, padded
// columns and ignored targets, a finite-difference check, in-place backward, large logits and
// rejected targets.
#include <catch2/catch.hpp>

#include "core/check.hpp"
#include "cpu/crossentropy.hpp"
#include "tests/cpu/gradcheck.hpp"

using namespace gpt2cc;
using test::expect_close;

TEST_CASE("cross-entropy by hand over a padded vocabulary", "[cpu][crossentropy]") {
  // V = 3 real columns, Vp = 4 (column 3 is padding, set huge to show it never counts).
  // Row 0: logits (0, 0, 0), target 1: p = (1/3, 1/3, 1/3), loss = ln 3 = 1.0986123.
  // Row 1: logits (ln 1, ln 2, ln 5), target 2: p = (1/8, 2/8, 5/8), loss = -ln(5/8) = 0.4700036.
  // Row 2: target -1: ignored, loss 0.
  const float pad = 50.0f;
  std::vector<float> logits = {0, 0, 0, pad, 0, std::log(2.0f), std::log(5.0f), pad, 1, 2, 3, pad};
  std::vector<int> targets = {1, 2, -1};
  std::vector<float> losses(3);
  test::poison(losses.data(), 3);
  cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), 1, 3, 3, 4);
  expect_close(losses, {1.0986123f, 0.4700036f, 0.0f}, 1e-6, 1e-6, "losses");

  // dlogits = dloss (p - onehot), dloss = 0.5: row 0 (1/6, -1/3, 1/6, 0); row 1
  // 0.5 (1/8, 2/8, 5/8 - 1, 0) = (1/16, 1/8, -3/16, 0); row 2 all 0 (ignored).
  std::vector<float> dlogits(12);
  test::poison(dlogits.data(), 12);
  cpu::crossentropy_backward(dlogits.data(), 0.5f, logits.data(), targets.data(), 1, 3, 3, 4);
  expect_close(dlogits, {1.0f / 6, -1.0f / 3, 1.0f / 6, 0, 1.0f / 16, 1.0f / 8, -3.0f / 16, 0, 0, 0, 0, 0}, 1e-7,
               1e-6, "dlogits");

  // In place: dlogits == logits gives the same numbers.
  std::vector<float> inplace = logits;
  cpu::crossentropy_backward(inplace.data(), 0.5f, inplace.data(), targets.data(), 1, 3, 3, 4);
  expect_close(inplace, dlogits, 0, 0, "in-place dlogits");
}

TEST_CASE("cross-entropy gradient matches finite differences", "[cpu][crossentropy]") {
  // Odd B, T = 1 and T = 3, V not a multiple of 8, Vp > V, one ignored target.
  for (auto [B, T] : {std::pair{3, 3}, std::pair{1, 1}}) {
    CAPTURE(B, T);
    const int V = 11, Vp = 16;
    const size_t rows = static_cast<size_t>(B) * T;
    auto logits = test::random_vector(rows * Vp, 60, -2.0f, 2.0f);
    auto targets = test::random_tokens(rows, 61, V);
    if (rows > 1) targets[1] = cpu::kIgnoreIndex;
    const float dloss = 1.0f / static_cast<float>(rows);  // the mean over tokens
    std::vector<float> losses(rows), w(rows, dloss);
    auto objective = [&] {
      test::poison(losses.data(), rows);
      cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), B, T, V, Vp);
      return test::weighted_sum(losses.data(), w);
    };
    std::vector<float> dlogits(rows * Vp);
    test::poison(dlogits.data(), dlogits.size());
    cpu::crossentropy_backward(dlogits.data(), dloss, logits.data(), targets.data(), B, T, V, Vp);
    auto num = test::numeric_gradient(logits, objective);
    // dloss = 1/rows scales the gradients down; the tolerances scale with it.
    test::check_gradient(dlogits, num, "dlogits", 1e-3 * dloss, 1e-2);
    for (size_t r = 0; r < rows; ++r) {
      for (int j = V; j < Vp; ++j) REQUIRE(dlogits[r * Vp + j] == 0.0f);  // padded columns
    }
    // Written, not accumulated.
    auto first = dlogits;
    cpu::crossentropy_backward(dlogits.data(), dloss, logits.data(), targets.data(), B, T, V, Vp);
    expect_close(dlogits, first, 0, 0, "dlogits after a second backward call");
  }
}

TEST_CASE("cross-entropy is stable for large logits and rejects bad targets", "[cpu][crossentropy]") {
  // logits (1000, 1000): exp would overflow without subtracting the max; loss = ln 2.
  std::vector<float> logits = {1000.0f, 1000.0f};
  std::vector<int> targets = {0};
  float loss = test::kPoison;
  cpu::crossentropy_forward(&loss, logits.data(), targets.data(), 1, 1, 2, 2);
  CHECK(loss == Approx(std::log(2.0f)).epsilon(1e-6));

  targets = {2};  // == V: out of range
  CHECK_THROWS_AS(cpu::crossentropy_forward(&loss, logits.data(), targets.data(), 1, 1, 2, 2), gpt2cc::Error);
  targets = {-2};
  CHECK_THROWS_AS(cpu::crossentropy_backward(logits.data(), 1.0f, logits.data(), targets.data(), 1, 1, 2, 2),
                  gpt2cc::Error);
}
