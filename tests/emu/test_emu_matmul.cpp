// The linear layer's hand-written kernels (cuda::matmul_internal::add_bias, the bias add after the
// GEMM, and accumulate_column_sums, the deterministic bias gradient: kernels/matmul.cuh; the GEMMs
// are cuBLAS(Lt), checked by emu_cuda_layers) on the CPU emulator against
// cpu::matmul_forward_reference / matmul_backward_reference, with the tolerances
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
#include "kernels/matmul.cuh"

using namespace gpt2cc;
using cuda::matmul_internal::accumulate_column_sums;
using cuda::matmul_internal::add_bias;
using test::bf16;

namespace {

constexpr double kBf16Tol = 1e-2;

template <class Elem>
constexpr double tolerance() {
  return std::is_same_v<Elem, float> ? 1e-5 : kBf16Tol;
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

  const std::vector<Elem> start = test::as<Elem>(test::padded(gemm, offset));
  const test::DeviceBuffer bias_elem(test::as<Elem>(bias));
  const auto run = [&] {
    test::DeviceBuffer got(start);
    add_bias(got.get() + offset, bias_elem.get(), s.rows, s.OC, test::test_stream());
    return test::widened(got);
  };
  const std::vector<float> all = run();
  test::expect_matches(test::tail(all, n), out, "out + bias", tolerance<Elem>());
  CHECK(std::equal(all.begin(), all.begin() + offset, test::widened(start).begin()));
  test::check_every_schedule(all, run);
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

  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer dout_elem(test::as<Elem>(dout));
  test::DeviceBuffer got(test::as<Elem>(dbias0));
  accumulate_column_sums(got.get(), dout_elem.get(), s.rows, s.OC, stream);
  const std::vector<float> once_f32 = test::widened(got);
  test::expect_matches(once_f32, dbias, "dbias", tolerance<Elem>());
  accumulate_column_sums(got.get(), dout_elem.get(), s.rows, s.OC, stream);
  test::expect_matches(test::widened(got), test::repeated(dbias0, once_f32, 2.0f), "dbias after two calls",
                       tolerance<Elem>());

  test::check_every_schedule(once_f32, [&] {
    test::DeviceBuffer again(test::as<Elem>(dbias0));
    accumulate_column_sums(again.get(), dout_elem.get(), s.rows, s.OC, stream);
    return test::widened(again);
  });
}
