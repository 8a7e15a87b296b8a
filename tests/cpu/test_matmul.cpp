// cpu::matmul_forward / matmul_backward (the plain loops, the oracle) and their *_blocked
// versions: a hand case, finite-difference gradients of inp, weight and bias for both, the
// accumulation rule, fast vs reference on awkward shapes (edges of every tile and cache block),
// and determinism.
#include "common/catch.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/matmul.hpp"
#include "tests/cpu/gradcheck.hpp"

using namespace gpt2cc;
using test::expect_close;

namespace {
using Forward = void (*)(float*, const float*, const float*, const float*, int, int, int, int);
using Backward = void (*)(float*, float*, float*, const float*, const float*, const float*, int, int, int, int);
struct Impl {
  const char* name;
  Forward forward;
  Backward backward;
};
const Impl kImpls[] = {{"reference", cpu::matmul_forward, cpu::matmul_backward},
                       {"blocked", cpu::matmul_forward_blocked, cpu::matmul_backward_blocked}};
}  // namespace

TEST_CASE("matmul by hand", "[cpu][matmul]") {
  // inp (1,2,3) = [[1,2,3],[4,5,6]], weight (2,3) = [[1,0,-1],[0.5,0.5,0.5]], bias (0.1,-0.2):
  //   out[0] = (1-3+0.1, 0.5*(1+2+3)-0.2) = (-1.9, 2.8) ; out[1] = (4-6+0.1, 7.5-0.2) = (-1.9, 7.3)
  // dout = [[1,0],[0,1]]: dinp[0] = weight[0] = (1,0,-1), dinp[1] = weight[1] = (0.5,0.5,0.5);
  //   dweight = dout^T inp = inp = [[1,2,3],[4,5,6]] ; dbias = column sums of dout = (1, 1)
  for (const Impl& impl : kImpls) {
    INFO(impl.name);
    std::vector<float> inp = {1, 2, 3, 4, 5, 6}, weight = {1, 0, -1, 0.5f, 0.5f, 0.5f}, bias = {0.1f, -0.2f};
    std::vector<float> out(4);
    test::poison(out.data(), 4);
    impl.forward(out.data(), inp.data(), weight.data(), bias.data(), 1, 2, 3, 2);
    expect_close(out, {-1.9f, 2.8f, -1.9f, 7.3f}, 1e-6, 1e-6, "out");
    test::poison(out.data(), 4);
    impl.forward(out.data(), inp.data(), weight.data(), nullptr, 1, 2, 3, 2);
    expect_close(out, {-2.0f, 3.0f, -2.0f, 7.5f}, 1e-6, 1e-6, "out without bias");

    std::vector<float> dout = {1, 0, 0, 1}, dinp(6), dweight(6, 0.0f), dbias(2, 0.0f);
    test::poison(dinp.data(), 6);
    impl.backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(), 1, 2, 3, 2);
    expect_close(dinp, {1, 0, -1, 0.5f, 0.5f, 0.5f}, 1e-6, 1e-6, "dinp");
    expect_close(dweight, inp, 1e-6, 1e-6, "dweight");
    expect_close(dbias, {1, 1}, 1e-6, 1e-6, "dbias");
  }
}

TEST_CASE("matmul gradients match finite differences", "[cpu][matmul]") {
  for (const Impl& impl : kImpls) {
    for (auto [B, T, C, OC] : {std::tuple{3, 2, 5, 7}, std::tuple{1, 1, 9, 3}}) {
      INFO(impl.name);
      CAPTURE(B, T, C, OC);
      const int BT = B * T;
      auto inp = test::random_vector(static_cast<size_t>(BT) * C, 80);
      auto weight = test::random_vector(static_cast<size_t>(OC) * C, 81);
      auto bias = test::random_vector(OC, 82);
      auto w = test::random_vector(static_cast<size_t>(BT) * OC, 83);
      std::vector<float> out(w.size());
      auto objective = [&] {
        test::poison(out.data(), out.size());
        impl.forward(out.data(), inp.data(), weight.data(), bias.data(), B, T, C, OC);
        return test::weighted_sum(out.data(), w);
      };
      std::vector<float> dinp(inp.size()), dweight(weight.size(), 0.0f), dbias(OC, 0.0f);
      test::poison(dinp.data(), dinp.size());
      impl.backward(dinp.data(), dweight.data(), dbias.data(), w.data(), inp.data(), weight.data(), B, T, C, OC);
      auto num_inp = test::numeric_gradient(inp, objective);
      auto num_weight = test::numeric_gradient(weight, objective);
      auto num_bias = test::numeric_gradient(bias, objective);
      test::check_gradient(dinp, num_inp, "dinp");
      test::check_gradient(dweight, num_weight, "dweight");
      test::check_gradient(dbias, num_bias, "dbias");

      // Second backward: parameter gradients double, dinp is written again (not doubled).
      impl.backward(dinp.data(), dweight.data(), dbias.data(), w.data(), inp.data(), weight.data(), B, T, C, OC);
      expect_close(dinp, num_inp, 1e-3, 1e-2, "dinp after two backward calls");
      expect_close(dweight, test::times(num_weight, 2.0f), 2e-3, 1e-2, "dweight after two backward calls");
      expect_close(dbias, test::times(num_bias, 2.0f), 2e-3, 1e-2, "dbias after two backward calls");
    }
  }
}

TEST_CASE("blocked matmul matches the reference on awkward shapes", "[cpu][matmul]") {
  // Shapes hit partial register tiles (6 x 16), K above one cache block (256), more rows than
  // one row block (384), more columns than one column block (1024), and degenerate 1s.
  const std::tuple<int, int, int, int> shapes[] = {{1, 1, 1, 1},      {3, 5, 7, 13},    {2, 37, 67, 45},
                                                   {1, 7, 300, 17},   {1, 401, 19, 33}, {2, 3, 13, 1100},
                                                   {1, 390, 520, 40}, {1, 1, 300, 37}, {5, 1, 77, 129},
                                                   {1, 5, 64, 200}};  // B*T < 6: the few-rows forward
  for (auto [B, T, C, OC] : shapes) {
    CAPTURE(B, T, C, OC);
    const size_t BT = static_cast<size_t>(B) * T;
    auto inp = test::random_vector(BT * C, 90);
    auto weight = test::random_vector(static_cast<size_t>(OC) * C, 91);
    auto bias = test::random_vector(OC, 92);
    auto dout = test::random_vector(BT * OC, 93);
    std::vector<float> out(BT * OC), out_ref(BT * OC);
    test::poison(out.data(), out.size());
    cpu::matmul_forward_blocked(out.data(), inp.data(), weight.data(), bias.data(), B, T, C, OC);
    cpu::matmul_forward(out_ref.data(), inp.data(), weight.data(), bias.data(), B, T, C, OC);
    // Same sums in another order: fp32 rounding differs by ~sqrt(K) * 6e-8 relative.
    CHECK(test::rel_error(out, out_ref) < 2e-6);
    expect_close(out, out_ref, 1e-5, 1e-4, "out");

    // dweight, dbias start from the same nonzero values in both (they accumulate).
    auto dweight0 = test::random_vector(weight.size(), 94), dbias0 = test::random_vector(OC, 95);
    std::vector<float> dinp(BT * C), dinp_ref(BT * C);
    std::vector<float> dweight = dweight0, dweight_ref = dweight0, dbias = dbias0, dbias_ref = dbias0;
    test::poison(dinp.data(), dinp.size());
    cpu::matmul_backward_blocked(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(), B,
                                 T, C, OC);
    cpu::matmul_backward(dinp_ref.data(), dweight_ref.data(), dbias_ref.data(), dout.data(), inp.data(), weight.data(),
                         B, T, C, OC);
    CHECK(test::rel_error(dinp, dinp_ref) < 2e-6);
    CHECK(test::rel_error(dweight, dweight_ref) < 2e-6);
    CHECK(test::rel_error(dbias, dbias_ref) < 2e-6);
    expect_close(dinp, dinp_ref, 1e-5, 1e-4, "dinp");
    expect_close(dweight, dweight_ref, 1e-5, 1e-4, "dweight");
    expect_close(dbias, dbias_ref, 1e-5, 1e-4, "dbias");

    // Without a bias: dbias may be null, out has no offset.
    test::poison(out.data(), out.size());
    cpu::matmul_forward_blocked(out.data(), inp.data(), weight.data(), nullptr, B, T, C, OC);
    cpu::matmul_forward(out_ref.data(), inp.data(), weight.data(), nullptr, B, T, C, OC);
    CHECK(test::rel_error(out, out_ref) < 2e-6);
    cpu::matmul_backward_blocked(dinp.data(), dweight.data(), nullptr, dout.data(), inp.data(), weight.data(), B, T, C,
                                 OC);
    CHECK(test::rel_error(dinp, dinp_ref) < 2e-6);
  }
}

TEST_CASE("blocked matmul backward is deterministic", "[cpu][matmul]") {
  // Each dweight element is summed by one thread in a fixed order: bit-identical on every run
  // and for any number of threads.
  const int B = 2, T = 300, C = 70, OC = 50;
  auto inp = test::random_vector(static_cast<size_t>(B) * T * C, 96);
  auto weight = test::random_vector(static_cast<size_t>(OC) * C, 97);
  auto dout = test::random_vector(static_cast<size_t>(B) * T * OC, 98);
  std::vector<float> dinp(inp.size());
  std::vector<float> first(weight.size(), 0.0f), second(weight.size(), 0.0f), db(OC, 0.0f);
  cpu::matmul_backward_blocked(dinp.data(), first.data(), db.data(), dout.data(), inp.data(), weight.data(), B, T, C,
                               OC);
  cpu::matmul_backward_blocked(dinp.data(), second.data(), db.data(), dout.data(), inp.data(), weight.data(), B, T, C,
                               OC);
  expect_close(second, first, 0, 0, "dweight on a second run");
#ifdef _OPENMP
  const int threads = omp_get_max_threads();
  for (int n : {1, 3}) {
    omp_set_num_threads(n);
    std::vector<float> other(weight.size(), 0.0f);
    cpu::matmul_backward_blocked(dinp.data(), other.data(), db.data(), dout.data(), inp.data(), weight.data(), B, T, C,
                                 OC);
    expect_close(other, first, 0, 0, "dweight with " + std::to_string(n) + " threads");
  }
  omp_set_num_threads(threads);
#endif
}

TEST_CASE("the few-rows forward gives each output the bits of its weight row alone", "[cpu][matmul]") {
  // Fewer rows than the register tile take the matrix-vector loop, which dots several weight rows
  // at once (dot_rows): each output must still be dot_vectorized's sum, whichever group, or the
  // ragged last group, it falls in. A forward over one weight row at a time is the check (OC = 1:
  // no group). C = 77: the 32-wide rounds, the 8-wide ones and the scalar tail.
  const int C = 77, OC = 11;
  for (int BT : {1, 3, 5}) {
    CAPTURE(BT);
    auto inp = test::random_vector(static_cast<size_t>(BT) * C, 70);
    auto weight = test::random_vector(static_cast<size_t>(OC) * C, 71);
    auto bias = test::random_vector(OC, 72);
    std::vector<float> out(static_cast<size_t>(BT) * OC), alone(out.size()), one(BT);
    cpu::matmul_forward_blocked(out.data(), inp.data(), weight.data(), bias.data(), 1, BT, C, OC);
    for (int o = 0; o < OC; ++o) {
      cpu::matmul_forward_blocked(one.data(), inp.data(), weight.data() + static_cast<size_t>(o) * C, bias.data() + o,
                                  1, BT, C, 1);
      for (int bt = 0; bt < BT; ++bt) alone[static_cast<size_t>(bt) * OC + o] = one[bt];
    }
    expect_close(out, alone, 0, 0, "out against one weight row at a time");
  }
}
