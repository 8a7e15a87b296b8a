// cpu::crossentropy_forward / crossentropy_backward: hand-computed losses and gradients, padded
// columns and ignored targets, a finite-difference check, in-place backward, large logits and
// rejected targets. cpu::fused_classifier against the pair, and its exp (cpu/vector_exp.hpp)
// against the correctly rounded exp over its whole range. cpu::crossentropy_forward_vectorized
// against exact losses, the reference and fused_classifier (bit for bit), and CpuBackend's
// forward-only cross-entropy against it.
#include "common/catch.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/check.hpp"
#include "cpu/backend.hpp"
#include "cpu/crossentropy.hpp"
#include "cpu/vector_exp.hpp"
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

TEST_CASE("every path takes the row maximum over all V columns, the first and the last included",
          "[cpu][crossentropy]") {
  // The largest logit (1000) at column 0 and at column V-1: left out of the maximum, it would
  // overflow exp. The target is that column, so the loss is ~0 and its gradient ~0.
  const int V = 5, Vp = 8;
  const float nan = test::kPoison;
  for (int col : {0, V - 1}) {
    INFO("large logit at column " << col);
    std::vector<float> logits(Vp, 0.0f);
    logits[size_t(col)] = 1000.0f;
    for (int j = V; j < Vp; ++j) logits[size_t(j)] = nan;  // padding: never read as a logit
    const std::vector<int> targets = {col};
    float loss = nan, loss_vectorized = nan, loss_fused = nan;
    cpu::crossentropy_forward(&loss, logits.data(), targets.data(), 1, 1, V, Vp);
    cpu::crossentropy_forward_vectorized(&loss_vectorized, logits.data(), targets.data(), 1, 1, V, Vp);
    std::vector<float> dlogits(Vp, nan), fused = logits;
    cpu::crossentropy_backward(dlogits.data(), 1.0f, logits.data(), targets.data(), 1, 1, V, Vp);
    cpu::fused_classifier(fused.data(), &loss_fused, targets.data(), 1.0f, 1, 1, V, Vp);
    for (float l : {loss, loss_vectorized, loss_fused}) {
      CHECK(std::isfinite(l));
      CHECK(l == Approx(0.0f).margin(1e-6));
    }
    for (const std::vector<float>* d : {&dlogits, &fused}) {
      for (int j = 0; j < Vp; ++j) {
        INFO("column " << j);
        CHECK(std::isfinite((*d)[size_t(j)]));
        CHECK((*d)[size_t(j)] == Approx(0.0f).margin(1e-6));
      }
    }
  }
}

TEST_CASE("exp_vectorizable: within 2 ulp of exp over its range; zero, infinity and NaN beyond it",
          "[cpu][crossentropy]") {
  // Every 97th float in [-86.64, 88.72] (about 10 million values, both signs, every exponent):
  // the error in units of the spacing of floats at the exact (double) value.
  double worst = 0.0;
  float worst_x = 0.0f;
  size_t tested = 0;
  for (float lo : {-86.64f, 0.0f}) {
    const float hi = lo < 0.0f ? -0.0f : 88.72f;
    const float from = std::min(std::abs(lo), std::abs(hi)), to = std::max(std::abs(lo), std::abs(hi));
    for (uint32_t bits = std::bit_cast<uint32_t>(from); bits <= std::bit_cast<uint32_t>(to); bits += 97) {
      const float x = std::copysign(std::bit_cast<float>(bits), lo < 0.0f ? -1.0f : 1.0f);
      const double exact = std::exp(double(x));
      const float rounded = float(exact);
      const double ulp = double(std::nextafter(rounded, std::numeric_limits<float>::infinity())) - double(rounded);
      const double err = std::abs(double(cpu::exp_vectorizable(x)) - exact) / ulp;
      if (err > worst) worst = err, worst_x = x;
      ++tested;
    }
  }
  INFO("worst error " << worst << " ulp at x = " << worst_x << " over " << tested << " values");
  CHECK(tested > 5000000);
  CHECK(worst <= 2.0);
  CHECK(cpu::exp_vectorizable(0.0f) == 1.0f);
  CHECK(cpu::exp_vectorizable(-0.0f) == 1.0f);
  CHECK(cpu::exp_vectorizable(-86.7f) == 0.0f);  // below 2^-125: no subnormal results
  CHECK(cpu::exp_vectorizable(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(cpu::exp_vectorizable(88.73f) == std::numeric_limits<float>::infinity());
  CHECK(cpu::exp_vectorizable(std::numeric_limits<float>::infinity()) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(cpu::exp_vectorizable(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("fused_classifier: the pair's losses and dlogits in one pass, closer to exact than the pair",
          "[cpu][crossentropy]") {
  struct Shape {
    int B, T, V, Vp;
    float spread;  // logits uniform in [-spread, spread]
  };
  // GPT-2's vocabulary (V = 50257 of Vp = 50304), a tiny one, V == Vp, and logits large enough
  // that exp would overflow without the max.
  for (const Shape& s : {Shape{2, 3, 50257, 50304, 8.0f}, Shape{3, 5, 11, 16, 2.0f}, Shape{1, 4, 64, 64, 3.0f},
                         Shape{2, 2, 1000, 1024, 300.0f}}) {
    CAPTURE(s.B, s.T, s.V, s.Vp, s.spread);
    const size_t rows = size_t(s.B) * s.T;
    const std::vector<float> logits = test::random_vector(rows * s.Vp, 91, -s.spread, s.spread);
    std::vector<int> targets = test::random_tokens(rows, 92, s.V);
    targets[rows / 2] = cpu::kIgnoreIndex;
    targets[0] = s.V - 1;  // the last real column
    const float dloss = 1.0f / float(rows);

    // The exact values, in double.
    std::vector<float> exact_losses(rows, 0.0f), exact(rows * s.Vp, 0.0f);
    for (size_t r = 0; r < rows; ++r) {
      if (targets[r] == cpu::kIgnoreIndex) continue;
      const float* row = logits.data() + r * s.Vp;
      const double maxval = *std::max_element(row, row + s.V);
      double sum = 0.0;
      for (int j = 0; j < s.V; ++j) sum += std::exp(double(row[j]) - maxval);
      exact_losses[r] = float(std::log(sum) - (double(row[targets[r]]) - maxval));
      for (int j = 0; j < s.V; ++j)
        exact[r * s.Vp + j] = float(dloss * (std::exp(double(row[j]) - maxval) / sum - (j == targets[r] ? 1.0 : 0.0)));
    }

    std::vector<float> losses(rows), got = logits;
    test::poison(losses.data(), rows);
    cpu::fused_classifier(got.data(), losses.data(), targets.data(), dloss, s.B, s.T, s.V, s.Vp);
    // Each probability carries the exp's rounding (2 ulp) and the sum's (blocks of 512).
    expect_close(losses, exact_losses, 1e-6, 1e-6, "fused losses vs exact");
    expect_close(got, exact, 1e-12, 1e-6, "fused dlogits vs exact");
    for (size_t r = 0; r < rows; ++r) {
      for (int j = s.V; j < s.Vp; ++j) REQUIRE(got[r * s.Vp + j] == 0.0f);  // padding
      if (targets[r] == cpu::kIgnoreIndex) {
        CHECK(losses[r] == 0.0f);
        for (int j = 0; j < s.Vp; ++j) REQUIRE(got[r * s.Vp + j] == 0.0f);
      }
    }

    // The pair it replaces, run in place as the model did: its one-at-a-time sum over 50257
    // terms strays further (some 1e-5 relative), within what the model tests allow.
    std::vector<float> pair_losses(rows), pair = logits;
    cpu::crossentropy_forward(pair_losses.data(), logits.data(), targets.data(), s.B, s.T, s.V, s.Vp);
    cpu::crossentropy_backward(pair.data(), dloss, pair.data(), targets.data(), s.B, s.T, s.V, s.Vp);
    expect_close(losses, pair_losses, 1e-5, 2e-5, "fused losses vs the pair");
    expect_close(got, pair, 1e-12, 1e-4, "fused dlogits vs the pair");
  }
  // A -inf logit (a masked token) has probability 0 and gradient 0; the rest of the row is as
  // usual.
  std::vector<float> masked = {1.0f, -std::numeric_limits<float>::infinity(), 2.0f, 0.0f};
  std::vector<int> first = {0};
  float want_loss = 0.0f, masked_loss = 0.0f;
  cpu::crossentropy_forward(&want_loss, masked.data(), first.data(), 1, 1, 4, 4);
  cpu::fused_classifier(masked.data(), &masked_loss, first.data(), 1.0f, 1, 1, 4, 4);
  CHECK(std::isfinite(masked_loss));
  CHECK(masked_loss == Approx(want_loss).epsilon(1e-6));
  CHECK(masked[1] == 0.0f);
  CHECK(std::isfinite(masked[0] + masked[2] + masked[3]));
  // A NaN logit makes its row's loss NaN (the trainer's non-finite check sees it), as in the pair.
  std::vector<float> logits = {1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f, 0.0f};
  std::vector<int> targets = {0};
  float loss = 0.0f;
  cpu::fused_classifier(logits.data(), &loss, targets.data(), 1.0f, 1, 1, 4, 4);
  CHECK(std::isnan(loss));
  targets = {4};
  CHECK_THROWS_AS(cpu::fused_classifier(logits.data(), &loss, targets.data(), 1.0f, 1, 1, 4, 4), gpt2cc::Error);
}

namespace {
// The exact losses, in double: log(sum_j exp(l_j - max)) - (l_y - max) over the first V columns;
// 0 for ignored rows.
std::vector<float> exact_losses(const std::vector<float>& logits, const std::vector<int>& targets, int V, int Vp) {
  std::vector<float> losses(targets.size(), 0.0f);
  for (size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] == cpu::kIgnoreIndex) continue;
    const float* row = logits.data() + r * Vp;
    const double maxval = *std::max_element(row, row + V);
    double sum = 0.0;
    for (int j = 0; j < V; ++j) sum += std::exp(double(row[j]) - maxval);
    losses[r] = float(std::log(sum) - (double(row[targets[r]]) - maxval));
  }
  return losses;
}
}  // namespace

TEST_CASE("crossentropy_forward_vectorized: exact losses, read-only logits, fused_classifier's losses bit for bit",
          "[cpu][crossentropy]") {
  struct Shape {
    int B, T, V, Vp;
    float spread;  // logits uniform in [-spread, spread]
  };
  // GPT-2's vocabulary (V = 50257 of Vp = 50304: 99 blocks of 512 and a ragged one), ragged small
  // vocabularies (below one vector, one block and a tail of 7, V == Vp), and logits large enough
  // that exp would overflow without the max.
  for (const Shape& s : {Shape{2, 3, 50257, 50304, 8.0f}, Shape{3, 5, 11, 16, 2.0f}, Shape{2, 2, 519, 520, 4.0f},
                         Shape{1, 4, 64, 64, 3.0f}, Shape{2, 2, 1000, 1024, 300.0f}}) {
    CAPTURE(s.B, s.T, s.V, s.Vp, s.spread);
    const size_t rows = size_t(s.B) * s.T;
    std::vector<float> logits = test::random_vector(rows * s.Vp, 93, -s.spread, s.spread);
    // Padded columns are never read: NaN there would make a loss NaN.
    for (size_t r = 0; r < rows; ++r) test::poison(logits.data() + r * s.Vp + s.V, size_t(s.Vp - s.V));
    std::vector<int> targets = test::random_tokens(rows, 94, s.V);
    targets[rows / 2] = cpu::kIgnoreIndex;
    targets[0] = s.V - 1;  // the last real column
    const std::vector<float> original = logits;

    std::vector<float> losses(rows);
    test::poison(losses.data(), rows);
    cpu::crossentropy_forward_vectorized(losses.data(), logits.data(), targets.data(), s.B, s.T, s.V, s.Vp);
    // The exp's rounding (2 ulp) and the blocked sum's: as fused_classifier.
    expect_close(losses, exact_losses(logits, targets, s.V, s.Vp), 1e-6, 1e-6, "vectorized losses vs exact");
    CHECK(losses[rows / 2] == 0.0f);  // the ignored row
    CHECK(test::same_bits(logits, original));  // the logits are only read

    // The reference, with its one float sum per row: some 1e-5 relative at GPT-2's vocabulary.
    std::vector<float> reference(rows);
    cpu::crossentropy_forward(reference.data(), logits.data(), targets.data(), s.B, s.T, s.V, s.Vp);
    expect_close(losses, reference, 1e-5, 2e-5, "vectorized losses vs the reference");

    // The same arithmetic as training's classifier (one row_loss for both): equal bit for bit.
    std::vector<float> fused_losses(rows), fused = logits;
    cpu::fused_classifier(fused.data(), fused_losses.data(), targets.data(), 1.0f / float(rows), s.B, s.T, s.V,
                          s.Vp);
    CHECK(test::same_bits(losses, fused_losses));
  }
}

TEST_CASE("crossentropy_forward_vectorized: -inf and large logits give finite exact losses; bad targets throw",
          "[cpu][crossentropy]") {
  const float inf = std::numeric_limits<float>::infinity();
  // V = 5 of Vp = 8 (padding NaN). Row 0: a -inf logit (a masked token: exp gives 0); row 1: +-80
  // (exp(-160) underflows to 0 and must not matter; loss ~ 160 for the -80 target); row 2: around
  // 1000 (overflows without the max); row 3: all equal at -80 (loss ln 5); row 4: ignored (its
  // inf and NaN are never read).
  const int V = 5, Vp = 8;
  const float nan = test::kPoison;
  std::vector<float> logits = {1.0f,    -inf,   2.0f,     0.5f,    -3.0f,  nan, nan, nan,  //
                               80.0f,   -80.0f, 0.0f,     80.0f,   -80.0f, nan, nan, nan,  //
                               1000.0f, 999.0f, -1000.0f, 1000.5f, 998.0f, nan, nan, nan,  //
                               -80.0f,  -80.0f, -80.0f,   -80.0f,  -80.0f, nan, nan, nan,  //
                               inf,     nan,    -inf,     0.0f,    0.0f,   nan, nan, nan};
  const std::vector<int> targets = {2, 1, 3, 4, cpu::kIgnoreIndex};
  const size_t rows = targets.size();
  std::vector<float> losses(rows);
  test::poison(losses.data(), rows);
  cpu::crossentropy_forward_vectorized(losses.data(), logits.data(), targets.data(), 1, int(rows), V, Vp);
  for (float loss : losses) CHECK(std::isfinite(loss));
  expect_close(losses, exact_losses(logits, targets, V, Vp), 1e-6, 1e-6, "losses vs exact");
  CHECK(losses[1] == Approx(160.0f + std::log(2.0f)).epsilon(1e-6));  // two maxima: log 2 - (-80 - 80)
  CHECK(losses[3] == Approx(std::log(5.0f)).epsilon(1e-6));
  CHECK(losses[4] == 0.0f);

  // A NaN logit makes its row's loss NaN (the trainer's non-finite check sees it), as in the pair.
  std::vector<float> with_nan = {1.0f, nan, 2.0f, 0.0f};
  std::vector<int> first = {0};
  float loss = 0.0f;
  cpu::crossentropy_forward_vectorized(&loss, with_nan.data(), first.data(), 1, 1, 4, 4);
  CHECK(std::isnan(loss));

  // Targets are checked before anything is written.
  for (int bad : {V, -2}) {
    CAPTURE(bad);
    std::vector<int> wrong = targets;
    wrong[2] = bad;
    test::poison(losses.data(), rows);
    CHECK_THROWS_AS(
        cpu::crossentropy_forward_vectorized(losses.data(), logits.data(), wrong.data(), 1, int(rows), V, Vp),
        gpt2cc::Error);
    for (float l : losses) CHECK(std::isnan(l));
  }
}

TEST_CASE("CpuBackend::crossentropy_forward is the vectorised forward", "[cpu][crossentropy]") {
  // At GPT-2's vocabulary the reference's float sum differs from the blocked one in the last
  // digits of some rows, so the backend's losses tell which of the two it ran.
  const int B = 2, T = 4, V = 50257, Vp = 50304;
  const size_t rows = size_t(B) * T;
  const std::vector<float> logits = test::random_vector(rows * Vp, 95, -8.0f, 8.0f);
  const std::vector<int> targets = test::random_tokens(rows, 96, V);
  std::vector<float> vectorized(rows), reference(rows), backend(rows);
  cpu::crossentropy_forward_vectorized(vectorized.data(), logits.data(), targets.data(), B, T, V, Vp);
  cpu::crossentropy_forward(reference.data(), logits.data(), targets.data(), B, T, V, Vp);
  REQUIRE_FALSE(test::same_bits(vectorized, reference));
  cpu::CpuBackend cpu_backend;
  cpu_backend.crossentropy_forward(backend.data(), logits.data(), targets.data(), B, T, V, Vp);
  CHECK(test::same_bits(backend, vectorized));
}
