// cpu::encoder_forward / encoder_backward: a hand-computed case, finite-difference gradients of
// wte and wpe, the accumulation rule (repeated tokens, two backward calls) and awkward shapes.
#include "common/catch.hpp"

#include "cpu/encoder.hpp"
#include "tests/cpu/gradcheck.hpp"

using namespace gpt2cc;
using test::expect_close;

TEST_CASE("encoder forward and backward by hand", "[cpu][encoder]") {
  // Vp = 3, C = 2, B = 1, T = 2; tokens (2, 0).
  //   out[0] = wte[2] + wpe[0] = (5, 6) + (0.1, 0.2) = (5.1, 6.2)
  //   out[1] = wte[0] + wpe[1] = (1, 2) + (0.3, 0.4) = (1.3, 2.4)
  std::vector<float> wte = {1, 2, 3, 4, 5, 6}, wpe = {0.1f, 0.2f, 0.3f, 0.4f};
  std::vector<int> inp = {2, 0};
  std::vector<float> out(4);
  test::poison(out.data(), out.size());
  cpu::encoder_forward(out.data(), inp.data(), wte.data(), wpe.data(), 1, 2, 2);
  expect_close(out, {5.1f, 6.2f, 1.3f, 2.4f}, 1e-6, 1e-6, "out");

  // Tokens (2, 2): both rows land on wte[2], so dwte[2] = dout[0] + dout[1] = (1+3, 2+4) = (4, 6);
  // dwpe[t] = dout[t]. Starting from dwte = 0.5 everywhere, dwpe = 0 (accumulation).
  inp = {2, 2};
  std::vector<float> dout = {1, 2, 3, 4};
  std::vector<float> dwte(6, 0.5f), dwpe(4, 0.0f);
  cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), inp.data(), 1, 2, 2);
  expect_close(dwte, {0.5f, 0.5f, 0.5f, 0.5f, 4.5f, 6.5f}, 1e-6, 1e-6, "dwte");
  expect_close(dwpe, {1, 2, 3, 4}, 1e-6, 1e-6, "dwpe");
}

TEST_CASE("encoder gradients match finite differences", "[cpu][encoder]") {
  // Odd B, C not a multiple of 8, a repeated token; T = 1 as its own shape.
  for (auto [B, T, C] : {std::tuple{3, 4, 5}, std::tuple{1, 1, 7}}) {
    const int Vp = 6, maxT = T + 2;
    CAPTURE(B, T, C);
    auto wte = test::random_vector(static_cast<size_t>(Vp) * C, 1);
    auto wpe = test::random_vector(static_cast<size_t>(maxT) * C, 2);
    auto inp = test::random_tokens(static_cast<size_t>(B) * T, 3, Vp);
    inp[0] = Vp - 1;
    if (B * T > 1) inp[B * T - 1] = Vp - 1;
    auto w = test::random_vector(static_cast<size_t>(B) * T * C, 4);
    std::vector<float> out(w.size());
    auto objective = [&] {
      test::poison(out.data(), out.size());
      cpu::encoder_forward(out.data(), inp.data(), wte.data(), wpe.data(), B, T, C);
      return test::weighted_sum(out.data(), w);
    };
    objective();
    for (float v : out) REQUIRE(std::isfinite(v));

    std::vector<float> dwte(wte.size(), 0.0f), dwpe(wpe.size(), 0.0f);
    cpu::encoder_backward(dwte.data(), dwpe.data(), w.data(), inp.data(), B, T, C);
    auto num_wte = test::numeric_gradient(wte, objective);
    auto num_wpe = test::numeric_gradient(wpe, objective);
    test::check_gradient(dwte, num_wte, "dwte");
    test::check_gradient(dwpe, num_wpe, "dwpe");

    // Accumulation rule: a second backward adds the same gradients again.
    cpu::encoder_backward(dwte.data(), dwpe.data(), w.data(), inp.data(), B, T, C);
    expect_close(dwte, test::times(num_wte, 2.0f), 2e-3, 1e-2, "dwte after two backward calls");
    expect_close(dwpe, test::times(num_wpe, 2.0f), 2e-3, 1e-2, "dwpe after two backward calls");
  }
}
