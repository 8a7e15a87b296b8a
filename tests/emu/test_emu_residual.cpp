// cuda::residual_forward / _backward (kernels/residual.cuh) with their kernels on the CPU emulator
// against cpu::residual_forward / _backward, float and bf16, with the checks of tests/cuda
// (test_cuda_elementwise.cpp: 1e-5; test_bf16_elementwise.cpp: the float sums rounded once, bit for
// bit). N a multiple of the pack (16-byte packs) or not (1, 1001), pointers offset by one element
// (scalar). Outputs start poisoned; the backward accumulates (+=: a second call doubles the
// increment) and must not spill into the padding before the offset pointers; every warp schedule
// gives the same bits.
#include "common/catch.hpp"

#include <vector>

#include "cpu/residual.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/residual.cuh"

using namespace gpt2cc;
using test::as;
using test::bf16;
using test::padded;
using test::tail;
using test::widened;

namespace {

struct Case {
  size_t N;
  size_t offset;  // elements past an aligned buffer: 1 makes every pointer misaligned
};

struct ResidualInputs {
  std::vector<float> a, b, dout, da0, db0;
};

// out, dinp1, dinp2 after forward and one backward (dinp1 with its padding, sentinels), and dinp1,
// dinp2 after a second backward call.
template <class Elem>
std::vector<float> run_residual(const Case& c, const ResidualInputs& in, std::vector<float>& out,
                                std::vector<float>& da, std::vector<float>& db, std::vector<float>& da2,
                                std::vector<float>& db2) {
  const size_t N = c.N, o = c.offset;
  test::DeviceBuffer a(as<Elem>(padded(in.a, o))), b(as<Elem>(padded(in.b, o)));
  test::DeviceBuffer dout(as<Elem>(padded(in.dout, o, 1.0f)));
  // The padding before dinp1 holds 7: an accumulation that spills into it changes 7 into 8.
  test::DeviceBuffer out_e(test::poisoned<Elem>(N + o)), da_e(as<Elem>(padded(in.da0, o, 7.0f))),
      db_e(as<Elem>(padded(in.db0, o)));
  const cudaStream_t stream = test::test_stream();
  cuda::residual_forward(out_e.get() + o, a.get() + o, b.get() + o, N, stream);
  cuda::residual_backward(da_e.get() + o, db_e.get() + o, dout.get() + o, N, stream);
  out = tail(widened(out_e), N);
  da = widened(da_e);
  db = tail(widened(db_e), N);
  cuda::residual_backward(da_e.get() + o, db_e.get() + o, dout.get() + o, N, stream);
  da2 = tail(widened(da_e), N);
  db2 = tail(widened(db_e), N);
  return test::concat({&out, &da, &db, &da2, &db2});
}

}  // namespace

TEST_CASE("emulated residual matches cpu", "[emu][residual]") {
  const Case c = GENERATE(Case{1, 0}, Case{1000, 0}, Case{1001, 0}, Case{1000, 1}, Case{4096, 0});
  const bool is_bf16 = GENERATE(false, true);
  INFO("N=" << c.N << " offset=" << c.offset << " bf16=" << is_bf16);
  const size_t N = c.N, o = c.offset;
  const auto round = [&](std::vector<float> v) { return is_bf16 ? test::round_to_bf16(v) : v; };
  const ResidualInputs in{round(test::random_vector(N, 83)), round(test::random_vector(N, 84)),
                          round(test::random_vector(N, 85)), round(test::random_vector(N, 86)),
                          round(test::random_vector(N, 87))};
  std::vector<float> out(N), da = in.da0, db = in.db0;
  cpu::residual_forward(out.data(), in.a.data(), in.b.data(), N);
  cpu::residual_backward(da.data(), db.data(), in.dout.data(), N);

  std::vector<float> g_out, g_da, g_db, g_da2, g_db2;
  const auto run = [&] {
    return is_bf16 ? run_residual<bf16>(c, in, g_out, g_da, g_db, g_da2, g_db2)
                   : run_residual<float>(c, in, g_out, g_da, g_db, g_da2, g_db2);
  };
  const std::vector<float> all = run();
  if (is_bf16) {
    // float sums of bf16 values, rounded once: exactly the CPU's float sums rounded.
    CHECK(test::same_bits(g_out, test::round_to_bf16(out)));
    CHECK(test::same_bits(tail(g_da, N), test::round_to_bf16(da)));
    CHECK(test::same_bits(g_db, test::round_to_bf16(db)));
    test::expect_one_rounding(g_out, out, "bf16 residual out");
    test::expect_one_rounding(tail(g_da, N), da, "bf16 residual dinp1 (+=)");
    test::expect_rel_l2(g_da2, test::repeated(in.da0, da, 2.0f), 1e-2, "bf16 dinp1 after two calls");
    test::expect_rel_l2(g_db2, test::repeated(in.db0, db, 2.0f), 1e-2, "bf16 dinp2 after two calls");
  } else {
    test::expect_matches(g_out, out, "residual out");
    test::expect_matches(tail(g_da, N), da, "residual dinp1 (+=)");
    test::expect_matches(g_db, db, "residual dinp2 (+=)");
    test::expect_matches(g_da2, test::repeated(in.da0, da, 2.0f), "dinp1 after two calls");
    test::expect_matches(g_db2, test::repeated(in.db0, db, 2.0f), "dinp2 after two calls");
  }
  for (size_t i = 0; i < o; ++i) CHECK(g_da[i] == 7.0f);
  test::check_every_schedule(all, run);
}
