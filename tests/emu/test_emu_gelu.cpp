// cuda::gelu_forward / _backward (kernels/gelu.cuh) with their kernels on the CPU emulator against
// cpu::gelu_forward / _backward, float and bf16, with the tolerances of tests/cuda
// (test_cuda_elementwise.cpp: 1e-5; test_bf16_elementwise.cpp: one bf16 rounding). N a multiple
// of the pack (16-byte packs) or not (1, 1001), pointers offset by one element (scalar); the
// forward also in place. Outputs start poisoned; every warp schedule gives the same bits.
#include "common/catch.hpp"

#include <vector>

#include "cpu/gelu.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/gelu.cuh"

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

// out, dinp, and out computed in place (out == inp).
template <class Elem>
std::vector<float> run_gelu(const Case& c, const std::vector<float>& inp_f, const std::vector<float>& dout_f) {
  const size_t N = c.N, o = c.offset;
  test::DeviceBuffer inp(as<Elem>(padded(inp_f, o))), dout(as<Elem>(padded(dout_f, o)));
  test::DeviceBuffer out(test::poisoned<Elem>(N + o)), dinp(test::poisoned<Elem>(N + o));
  const cudaStream_t stream = test::test_stream();
  cuda::gelu_forward(out.get() + o, inp.get() + o, N, stream);
  cuda::gelu_backward(dinp.get() + o, dout.get() + o, inp.get() + o, N, stream);
  cuda::gelu_forward(inp.get() + o, inp.get() + o, N, stream);
  const auto g_out = tail(widened(out), N), g_dinp = tail(widened(dinp), N), g_inplace = tail(widened(inp), N);
  return test::concat({&g_out, &g_dinp, &g_inplace});
}

}  // namespace

TEST_CASE("emulated gelu matches cpu", "[emu][gelu]") {
  const Case c = GENERATE(Case{1, 0}, Case{1000, 0}, Case{1001, 0}, Case{1000, 1}, Case{4096, 0});
  const bool is_bf16 = GENERATE(false, true);
  INFO("N=" << c.N << " offset=" << c.offset << " bf16=" << is_bf16);
  const size_t N = c.N;
  const auto round = [&](std::vector<float> v) { return is_bf16 ? test::round_to_bf16(v) : v; };
  const auto inp = round(test::random_vector(N, 91, -4.0f, 4.0f)), dout = round(test::random_vector(N, 92));
  std::vector<float> out(N), dinp(N);
  cpu::gelu_forward(out.data(), inp.data(), N);
  cpu::gelu_backward(dinp.data(), dout.data(), inp.data(), N);

  const auto run = [&] { return is_bf16 ? run_gelu<bf16>(c, inp, dout) : run_gelu<float>(c, inp, dout); };
  const std::vector<float> all = run();
  const std::vector<float> g_out(all.begin(), all.begin() + N), g_dinp(all.begin() + N, all.begin() + 2 * N);
  const std::vector<float> g_inplace(all.begin() + 2 * N, all.end());
  if (is_bf16) {
    test::expect_one_rounding(g_out, out, "bf16 gelu out");
    test::expect_one_rounding(g_dinp, dinp, "bf16 gelu dinp");
    test::expect_one_rounding(g_inplace, out, "bf16 gelu out in place");
  } else {
    test::expect_matches(g_out, out, "gelu out");
    test::expect_matches(g_dinp, dinp, "gelu dinp");
    test::expect_matches(g_inplace, out, "gelu out in place");
  }
  test::check_every_schedule(all, run);
}
