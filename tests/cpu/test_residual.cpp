// cpu::residual_forward / residual_backward: by hand, finite differences, and the rule that both
// input gradients accumulate (+=): they are the residual stream.
#include "common/catch.hpp"

#include "cpu/residual.hpp"
#include "tests/cpu/gradcheck.hpp"

using namespace gpt2cc;
using test::expect_close;

TEST_CASE("residual by hand, accumulating backward", "[cpu][residual]") {
  // out = a + b = (1+10, 2+20, 3+30) ; backward of dout = (1, 2, 3) onto dinp1 = (5, 5, 5) and
  // dinp2 = (0, 0, 0): (6, 7, 8) and (1, 2, 3).
  std::vector<float> a = {1, 2, 3}, b = {10, 20, 30}, out(3);
  test::poison(out.data(), 3);
  cpu::residual_forward(out.data(), a.data(), b.data(), 3);
  expect_close(out, {11, 22, 33}, 0, 0, "out");
  std::vector<float> dout = {1, 2, 3}, d1(3, 5.0f), d2(3, 0.0f);
  cpu::residual_backward(d1.data(), d2.data(), dout.data(), 3);
  expect_close(d1, {6, 7, 8}, 0, 0, "dinp1");
  expect_close(d2, {1, 2, 3}, 0, 0, "dinp2");
  cpu::residual_backward(d1.data(), d2.data(), dout.data(), 3);
  expect_close(d2, {2, 4, 6}, 0, 0, "dinp2 after two backward calls");
}

TEST_CASE("residual gradients match finite differences", "[cpu][residual]") {
  const size_t N = 23;
  auto a = test::random_vector(N, 40), b = test::random_vector(N, 41), w = test::random_vector(N, 42);
  std::vector<float> out(N);
  auto objective = [&] {
    test::poison(out.data(), N);
    cpu::residual_forward(out.data(), a.data(), b.data(), N);
    return test::weighted_sum(out.data(), w);
  };
  std::vector<float> d1(N, 0.0f), d2(N, 0.0f);
  cpu::residual_backward(d1.data(), d2.data(), w.data(), N);
  test::check_gradient(d1, test::numeric_gradient(a, objective), "dinp1");
  test::check_gradient(d2, test::numeric_gradient(b, objective), "dinp2");
}
