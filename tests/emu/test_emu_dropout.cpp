// cuda::dropout_forward / _backward (kernels/dropout.cuh) with their kernel on the CPU emulator
// against cpu::dropout_forward / _backward, float and bf16, with the checks of tests/cuda
// (test_cuda_elementwise.cpp, test_bf16_elementwise.cpp): values within 1e-5 (float) or one bf16
// rounding, and exactly the CPU's elements dropped, by both element types. N = 1, 4, 1003 (a
// partial group of four), 4099; p = 0 (the launcher's copy), 0.1, 0.5; also in place; and p equal
// to an element's own draw (kept: u >= p). Outputs start poisoned; every warp schedule gives the
// same bits.
#include "common/catch.hpp"

#include <cstdint>
#include <vector>

#include "core/rng.hpp"
#include "cpu/dropout.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/dropout.cuh"

using namespace gpt2cc;
using test::as;
using test::bf16;
using test::widened;

namespace {

// out, dinp, and out computed in place.
template <class Elem>
std::vector<float> run_dropout(const DropoutParams& dropout, const std::vector<float>& inp_f,
                               const std::vector<float>& dout_f) {
  const size_t N = inp_f.size();
  test::DeviceBuffer inp(as<Elem>(inp_f)), dout(as<Elem>(dout_f));
  test::DeviceBuffer out(test::poisoned<Elem>(N)), dinp(test::poisoned<Elem>(N));
  const cudaStream_t stream = test::test_stream();
  cuda::dropout_forward(out.get(), inp.get(), dropout, N, stream);
  cuda::dropout_backward(dinp.get(), dout.get(), dropout, N, stream);
  cuda::dropout_forward(inp.get(), inp.get(), dropout, N, stream);
  const auto g_out = widened(out), g_dinp = widened(dinp), g_inplace = widened(inp);
  return test::concat({&g_out, &g_dinp, &g_inplace});
}

}  // namespace

TEST_CASE("emulated dropout draws the cpu's mask", "[emu][dropout]") {
  const size_t N = GENERATE(size_t(1), size_t(4), size_t(1003), size_t(4099));
  const float p = GENERATE(0.0f, 0.1f, 0.5f);
  INFO("N=" << N << " p=" << p);
  const DropoutParams dropout{p, 0xfeedull, 5};
  const auto inp = test::round_to_bf16(test::random_vector(N, 88)), dout = test::round_to_bf16(test::random_vector(N, 89));
  std::vector<float> out(N), dinp(N);
  cpu::dropout_forward(out.data(), inp.data(), dropout, N);
  cpu::dropout_backward(dinp.data(), dout.data(), dropout, N);

  const auto part = [&](const std::vector<float>& all, int k) {
    return std::vector<float>(all.begin() + k * N, all.begin() + (k + 1) * N);
  };
  const std::vector<float> all_float = run_dropout<float>(dropout, inp, dout);
  const std::vector<float> all_bf16 = run_dropout<bf16>(dropout, inp, dout);
  test::expect_matches(part(all_float, 0), out, "dropout out");
  test::expect_matches(part(all_float, 1), dinp, "dropout dinp");
  test::expect_matches(part(all_float, 2), out, "dropout in place");
  test::expect_one_rounding(part(all_bf16, 0), out, "bf16 dropout out");
  test::expect_one_rounding(part(all_bf16, 1), dinp, "bf16 dropout dinp");
  test::expect_one_rounding(part(all_bf16, 2), out, "bf16 dropout in place");

  // Both element types drop exactly the CPU's elements (the inputs are never 0).
  size_t dropped = 0, differ = 0;
  for (size_t i = 0; i < N; ++i) {
    differ += (all_float[i] == 0.0f) != (out[i] == 0.0f);
    differ += (all_bf16[i] == 0.0f) != (out[i] == 0.0f);
    dropped += out[i] == 0.0f;
  }
  CHECK(differ == 0);
  if (p == 0.0f) CHECK(dropped == 0);
  if (p == 0.5f && N > 1000) CHECK(dropped > N / 4);
  test::check_every_schedule(all_float, [&] { return run_dropout<float>(dropout, inp, dout); });
  test::check_every_schedule(all_bf16, [&] { return run_dropout<bf16>(dropout, inp, dout); });
}

TEST_CASE("emulated dropout keeps an element whose draw equals p, like cpu", "[emu][dropout]") {
  // keep(i) is u_i >= p (core/rng.hpp): with p set to element 2's own draw (a multiple of 2^-24,
  // so exactly a float), element 2 is on the boundary and kept; a kernel testing u > p drops it.
  const size_t N = 4;
  const uint64_t seed = 0xfeedull;
  const uint32_t stream = 5;
  const float p = philox_uniform(seed, stream, 2);
  REQUIRE(p > 0.0f);
  const DropoutParams dropout{p, seed, stream};
  REQUIRE(dropout.keep(2));
  const auto inp = test::round_to_bf16(test::random_vector(N, 90, 0.5f, 1.0f));
  std::vector<float> out(N);
  cpu::dropout_forward(out.data(), inp.data(), dropout, N);
  REQUIRE(out[2] != 0.0f);
  const std::vector<float> all_float = run_dropout<float>(dropout, inp, inp);
  const std::vector<float> all_bf16 = run_dropout<bf16>(dropout, inp, inp);
  // out, dinp (of dout = inp) and in place: each drops exactly the CPU's elements.
  for (size_t k = 0; k < 3; ++k) {
    INFO("output " << k << " (out, dinp, in place)");
    for (size_t i = 0; i < N; ++i) {
      CHECK((all_float[k * N + i] == 0.0f) == (out[i] == 0.0f));
      CHECK((all_bf16[k * N + i] == 0.0f) == (out[i] == 0.0f));
    }
  }
}
