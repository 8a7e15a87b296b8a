// The linear layer's hand-written kernels (kernels/matmul_device.cuh: the bias add after the GEMM
// and the deterministic bias gradient; the GEMMs are cuBLAS and not emulated) executed by the CPU
// emulator against cpu::matmul_forward_reference / matmul_backward_reference, with the tolerances
// of tests/cuda/test_cuda_matmul.cpp (fp32 1e-5) and test_bf16_matmul.cpp (bf16 1e-2).
// add_bias: the GEMM output of the CPU without bias, plus the emulated bias add, against the CPU's
// output with bias; both branches (float4: OC % 4 == 0 and aligned; scalar: OC = 7, a buffer offset
// by one float, and every bf16 call). Column sums: rows 1 .. 200 (1 to 4 rows per slice, a partial
// last slice), OC past one 256-thread block; dbias accumulates (two calls: the gradient doubles).
// Every warp schedule gives the same bits.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "cpu/matmul.hpp"
#include "emu/layer_test_util.hpp"
#include "emu/matmul_emu.hpp"

using namespace gpt2cc;
using test::bf16;

namespace {

constexpr double kBf16Tol = 1e-2;

template <class Elem>
constexpr double tolerance() {
  return std::is_same_v<Elem, float> ? 1e-5 : kBf16Tol;
}

// start + 2 (once - start): what two accumulating calls leave when one call moved start to once.
std::vector<float> doubled(const std::vector<float>& start, const std::vector<float>& once) {
  std::vector<float> r(start.size());
  for (size_t i = 0; i < r.size(); ++i) r[i] = start[i] + 2.0f * (once[i] - start[i]);
  return r;
}

}  // namespace

TEMPLATE_TEST_CASE("emulated matmul bias add matches cpu", "[emu][matmul]", float, bf16) {
  using Elem = TestType;
  struct Shape {
    int rows, C, OC;
  };
  const Shape s = GENERATE(Shape{1, 1, 1}, Shape{3, 5, 7}, Shape{15, 13, 64}, Shape{33, 9, 300});
  // offset 1 element: the rows are no longer 16-byte aligned and fp32 takes the scalar kernel.
  const int offset = GENERATE(0, 1);
  INFO("rows=" << s.rows << " C=" << s.C << " OC=" << s.OC << " offset=" << offset);
  const size_t n = size_t(s.rows) * s.OC;
  const auto inp = test::round_to_bf16(test::random_vector(size_t(s.rows) * s.C, 41));
  const auto weight = test::round_to_bf16(test::random_vector(size_t(s.OC) * s.C, 42));
  const auto bias = test::round_to_bf16(test::random_vector(s.OC, 43));
  std::vector<float> gemm(n), out(n);
  cpu::matmul_forward_reference(gemm.data(), inp.data(), weight.data(), nullptr, 1, s.rows, s.C, s.OC);
  cpu::matmul_forward_reference(out.data(), inp.data(), weight.data(), bias.data(), 1, s.rows, s.C, s.OC);

  const std::vector<Elem> start = test::as<Elem>(test::padded(gemm, offset)), bias_elem = test::as<Elem>(bias);
  std::vector<Elem> got = start;
  emu::matmul_add_bias(got.data() + offset, bias_elem.data(), s.rows, s.OC);
  const std::vector<float> all = test::widened(got);
  test::expect_matches(test::tail(all, n), out, "out + bias", tolerance<Elem>());
  CHECK(std::equal(all.begin(), all.begin() + offset, test::widened(start).begin()));

  test::check_every_schedule(all, [&] {
    std::vector<Elem> again = start;
    emu::matmul_add_bias(again.data() + offset, bias_elem.data(), s.rows, s.OC);
    return test::widened(again);
  });
}

TEMPLATE_TEST_CASE("emulated matmul bias gradient matches cpu and accumulates", "[emu][matmul]", float, bf16) {
  using Elem = TestType;
  struct Shape {
    int rows, OC;
  };
  const Shape s = GENERATE(Shape{1, 1}, Shape{15, 7}, Shape{64, 300}, Shape{130, 67}, Shape{200, 16});
  INFO("rows=" << s.rows << " OC=" << s.OC);
  const int C = 3;
  const auto inp = test::random_vector(size_t(s.rows) * C, 51);
  const auto weight = test::random_vector(size_t(s.OC) * C, 52);
  const auto dout = test::round_to_bf16(test::random_vector(size_t(s.rows) * s.OC, 53));
  const auto dbias0 = test::round_to_bf16(test::random_vector(s.OC, 54, -0.5f, 0.5f));
  std::vector<float> dinp(size_t(s.rows) * C), dweight(weight.size()), dbias = dbias0;
  cpu::matmul_backward_reference(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(), 1,
                                 s.rows, C, s.OC);

  const std::vector<Elem> dout_elem = test::as<Elem>(dout);
  std::vector<Elem> got = test::as<Elem>(dbias0);
  emu::matmul_accumulate_column_sums(got.data(), dout_elem.data(), s.rows, s.OC);
  const std::vector<Elem> once = got;
  const std::vector<float> once_f32 = test::widened(once);
  test::expect_matches(once_f32, dbias, "dbias", tolerance<Elem>());
  emu::matmul_accumulate_column_sums(got.data(), dout_elem.data(), s.rows, s.OC);
  test::expect_matches(test::widened(got), doubled(dbias0, once_f32), "dbias after two calls", tolerance<Elem>());

  test::check_every_schedule(once_f32, [&] {
    std::vector<Elem> again = test::as<Elem>(dbias0);
    emu::matmul_accumulate_column_sums(again.data(), dout_elem.data(), s.rows, s.OC);
    return test::widened(again);
  });
}
