// cpu::gelu_forward / gelu_backward: hand-computed values, in-place forward, a finite-difference
// gradient check and the rule that dinp is written (=), not accumulated.
#include <catch2/catch.hpp>

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
