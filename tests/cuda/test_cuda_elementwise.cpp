// The element-wise layers against cpu::: gelu, residual and dropout, forward and backward. Each
// launcher has a float4 branch (N % 4 == 0, 16-byte aligned) and a scalar one; the sizes and the
// offset pointers below take both. Dropout must drop exactly the CPU's elements.
#include "common/catch.hpp"

#include "cpu/dropout.hpp"
#include "cpu/gelu.hpp"
#include "cpu/residual.hpp"
#include "cuda_test_util.hpp"
#include "kernels/dropout.cuh"
#include "kernels/gelu.cuh"
#include "kernels/residual.cuh"

using namespace gpt2cc;
using test::DeviceBuffer;

namespace {
struct Case {
  size_t N;
  size_t offset;  // elements past an aligned allocation: 1 makes every pointer misaligned
};
std::vector<float> slice(const std::vector<float>& v, size_t offset) {
  return std::vector<float>(v.begin() + static_cast<std::ptrdiff_t>(offset), v.end());
}
}  // namespace

TEST_CASE("cuda gelu matches cpu", "[cuda][gelu]") {
  const Case c = GENERATE(Case{1, 0}, Case{1000, 0}, Case{1001, 0}, Case{1000, 1}, Case{4 * 8 * 1024 * 3, 0});
  INFO("N=" << c.N << " offset=" << c.offset);
  const auto inp = test::random_vector(c.N, 91, -4.0f, 4.0f);
  const auto dout = test::random_vector(c.N, 92);
  std::vector<float> out(c.N), dinp(c.N);
  cpu::gelu_forward(out.data(), inp.data(), c.N);
  cpu::gelu_backward(dinp.data(), dout.data(), inp.data(), c.N);
  DeviceBuffer<float> d_inp(c.N + c.offset), d_dout(c.N + c.offset), d_out(c.N + c.offset), d_dinp(c.N + c.offset);
  std::vector<float> padded_inp(c.offset, 0.0f), padded_dout(c.offset, 0.0f);
  padded_inp.insert(padded_inp.end(), inp.begin(), inp.end());
  padded_dout.insert(padded_dout.end(), dout.begin(), dout.end());
  d_inp.upload(padded_inp);
  d_dout.upload(padded_dout);
  d_out.poison();
  d_dinp.poison();
  cuda::gelu_forward(d_out.get() + c.offset, d_inp.get() + c.offset, c.N, test::test_stream());
  cuda::gelu_backward(d_dinp.get() + c.offset, d_dout.get() + c.offset, d_inp.get() + c.offset, c.N,
                      test::test_stream());
  test::expect_matches(slice(d_out.download(), c.offset), out, "gelu out");
  test::expect_matches(slice(d_dinp.download(), c.offset), dinp, "gelu dinp");

  // In place (out == inp) is allowed for the forward.
  cuda::gelu_forward(d_inp.get() + c.offset, d_inp.get() + c.offset, c.N, test::test_stream());
  test::expect_matches(slice(d_inp.download(), c.offset), out, "gelu out in place");
}

TEST_CASE("cuda residual matches cpu", "[cuda][residual]") {
  const Case c = GENERATE(Case{1, 0}, Case{1000, 0}, Case{1001, 0}, Case{1000, 1});
  INFO("N=" << c.N << " offset=" << c.offset);
  const size_t n = c.N + c.offset;
  const auto a = test::random_vector(n, 93), b = test::random_vector(n, 94), dout = test::random_vector(n, 95);
  const auto da0 = test::random_vector(n, 96), db0 = test::random_vector(n, 97);
  std::vector<float> out(n), da = da0, db = db0;
  cpu::residual_forward(out.data(), a.data(), b.data(), n);
  cpu::residual_backward(da.data(), db.data(), dout.data(), n);
  DeviceBuffer<float> d_a(a), d_b(b), d_out(n), d_dout(dout), d_da(da0), d_db(db0);
  d_out.poison();
  const size_t o = c.offset;
  cuda::residual_forward(d_out.get() + o, d_a.get() + o, d_b.get() + o, c.N, test::test_stream());
  cuda::residual_backward(d_da.get() + o, d_db.get() + o, d_dout.get() + o, c.N, test::test_stream());
  test::expect_matches(slice(d_out.download(), o), slice(out, o), "residual out");
  test::expect_matches(slice(d_da.download(), o), slice(da, o), "residual dinp1 (+=)");
  test::expect_matches(slice(d_db.download(), o), slice(db, o), "residual dinp2 (+=)");
  // Elements before the offset are untouched (the accumulation did not spill).
  const auto g_da = d_da.download();
  CHECK(test::same_bits(std::vector<float>(g_da.begin(), g_da.begin() + static_cast<std::ptrdiff_t>(o)),
                        std::vector<float>(da0.begin(), da0.begin() + static_cast<std::ptrdiff_t>(o))));
}

TEST_CASE("cuda dropout draws the cpu's mask", "[cuda][dropout]") {
  const size_t N = GENERATE(size_t(1), size_t(4), size_t(1003), size_t(65536 + 3));
  const float p = GENERATE(0.0f, 0.1f, 0.5f);
  INFO("N=" << N << " p=" << p);
  const DropoutParams dropout{p, 0xfeedull, 5};
  const auto inp = test::random_vector(N, 98), dout = test::random_vector(N, 99);
  std::vector<float> out(N), dinp(N);
  cpu::dropout_forward(out.data(), inp.data(), dropout, N);
  cpu::dropout_backward(dinp.data(), dout.data(), dropout, N);
  DeviceBuffer<float> d_inp(inp), d_dout(dout), d_out(N), d_dinp(N);
  d_out.poison();
  d_dinp.poison();
  cuda::dropout_forward(d_out.get(), d_inp.get(), dropout, N, test::test_stream());
  cuda::dropout_backward(d_dinp.get(), d_dout.get(), dropout, N, test::test_stream());
  const auto g_out = d_out.download();
  test::expect_matches(g_out, out, "dropout out");
  test::expect_matches(d_dinp.download(), dinp, "dropout dinp");
  for (size_t i = 0; i < N; ++i) {
    if ((g_out[i] == 0.0f) != (out[i] == 0.0f)) FAIL("element " << i << " dropped on one backend only");
  }
  // In place.
  cuda::dropout_forward(d_inp.get(), d_inp.get(), dropout, N, test::test_stream());
  test::expect_matches(d_inp.download(), out, "dropout in place");
}
