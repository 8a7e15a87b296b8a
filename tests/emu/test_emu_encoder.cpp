// cuda::encoder_forward / _backward (kernels/encoder.cuh) with their kernels on the CPU emulator
// against cpu::encoder_forward / _backward, float and bf16, with the tolerances of tests/cuda
// (test_cuda_encoder.cpp: 1e-5; test_bf16_elementwise.cpp: one bf16 rounding). Few distinct tokens,
// so many positions share a dwte row: runs of one token that cross the dwte kernel's chunks of 256
// sorted keys, and whole chunks inside one run (T = 260; 2100 positions); more than one sort tile
// of 1024 keys, with a last tile left without a merge partner (2100 positions: three tiles);
// T = 1; C not a multiple of 4; C = 8, 768, 8200 (bf16 16-byte packs; 8200 spans 33 channel
// tiles) and 36, 2100 (scalar); pointers offset by one element (scalar). Outputs start poisoned;
// dwte and dwpe accumulate (a second call doubles the increment); every warp schedule gives the
// same bits.
#include "common/catch.hpp"

#include <vector>

#include "cpu/encoder.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/encoder.cuh"

using namespace gpt2cc;
using test::as;
using test::bf16;
using test::padded;
using test::tail;
using test::widened;

namespace {

struct Shape {
  int B, T, C, Vp;
  size_t offset;  // elements before wte, wpe and out: 1 misaligns the 16-byte packs
};

struct EncoderInputs {
  std::vector<int> inp;
  std::vector<float> wte, wpe, dout, dwte0, dwpe0;
};

// out, then dwte and dwpe after one and after two backward calls.
template <class Elem>
std::vector<float> run_encoder(const Shape& s, const EncoderInputs& in) {
  const int B = s.B, T = s.T, C = s.C;
  const size_t BTC = static_cast<size_t>(B) * T * C, o = s.offset;
  test::DeviceBuffer inp(in.inp);
  test::DeviceBuffer wte(as<Elem>(padded(in.wte, o))), wpe(as<Elem>(padded(in.wpe, o))), dout(as<Elem>(in.dout));
  test::DeviceBuffer out(test::poisoned<Elem>(BTC + o)), dwte(as<Elem>(in.dwte0)), dwpe(as<Elem>(in.dwpe0));
  const cudaStream_t stream = test::test_stream();
  cuda::encoder_forward(out.get() + o, inp.get(), wte.get() + o, wpe.get() + o, B, T, C, stream);
  const std::vector<float> g_out = tail(widened(out), BTC);
  cuda::encoder_backward(dwte.get(), dwpe.get(), dout.get(), inp.get(), B, T, C, stream);
  const std::vector<float> dwte1 = widened(dwte), dwpe1 = widened(dwpe);
  cuda::encoder_backward(dwte.get(), dwpe.get(), dout.get(), inp.get(), B, T, C, stream);
  const std::vector<float> dwte2 = widened(dwte), dwpe2 = widened(dwpe);
  return test::concat({&g_out, &dwte1, &dwpe1, &dwte2, &dwpe2});
}

}  // namespace

TEST_CASE("emulated encoder forward and backward match cpu", "[emu][encoder]") {
  const Shape shape = GENERATE(Shape{1, 1, 8, 16, 0}, Shape{3, 5, 7, 4, 0}, Shape{3, 1, 36, 4, 0},
                               Shape{2, 11, 36, 20, 0}, Shape{1, 6, 2100, 4, 0}, Shape{2, 6, 768, 40, 0},
                               Shape{2, 5, 768, 7, 1}, Shape{1, 260, 16, 3, 0}, Shape{3, 700, 8, 5, 0},
                               Shape{1, 3, 8200, 2, 0});
  const bool is_bf16 = GENERATE(false, true);
  const int B = shape.B, T = shape.T, C = shape.C, Vp = shape.Vp;
  INFO("B=" << B << " T=" << T << " C=" << C << " Vp=" << Vp << " offset=" << shape.offset << " bf16=" << is_bf16);
  const size_t BTC = static_cast<size_t>(B) * T * C;
  const auto round = [&](std::vector<float> v) { return is_bf16 ? test::round_to_bf16(v) : v; };
  // Small starting grads, so the increment dominates and a "=" instead of "+=" shows.
  const auto small = [&](size_t n, uint64_t seed) {
    auto v = test::random_vector(n, seed);
    for (float& x : v) x *= 0.1f;
    return round(v);
  };
  // Few tokens (Vp small): shared dwte rows.
  const EncoderInputs in{test::random_tokens(static_cast<size_t>(B) * T, 41 + C, Vp),
                         round(test::random_vector(static_cast<size_t>(Vp) * C, 42)),
                         round(test::random_vector(static_cast<size_t>(T) * C, 43)),
                         round(test::random_vector(BTC, 44)),
                         small(static_cast<size_t>(Vp) * C, 45),
                         small(static_cast<size_t>(T) * C, 46)};
  std::vector<float> out(BTC), dwte = in.dwte0, dwpe = in.dwpe0;
  cpu::encoder_forward(out.data(), in.inp.data(), in.wte.data(), in.wpe.data(), B, T, C);
  cpu::encoder_backward(dwte.data(), dwpe.data(), in.dout.data(), in.inp.data(), B, T, C);

  const auto run = [&] { return is_bf16 ? run_encoder<bf16>(shape, in) : run_encoder<float>(shape, in); };
  const std::vector<float> all = run();
  auto it = all.begin();
  const auto take = [&](size_t n) {
    std::vector<float> v(it, it + static_cast<std::ptrdiff_t>(n));
    it += static_cast<std::ptrdiff_t>(n);
    return v;
  };
  const auto g_out = take(BTC), g_dwte = take(dwte.size()), g_dwpe = take(dwpe.size());
  const auto g_dwte2 = take(dwte.size()), g_dwpe2 = take(dwpe.size());
  if (is_bf16) {
    // float sums in a fixed order, then one rounding per element per call.
    test::expect_one_rounding(g_out, out, "bf16 encoder out");
    test::expect_one_rounding(g_dwte, dwte, "bf16 dwte");
    test::expect_one_rounding(g_dwpe, dwpe, "bf16 dwpe");
    test::expect_rel_l2(g_dwte2, test::repeated(in.dwte0, dwte, 2.0f), 1e-2, "bf16 dwte after two calls");
    test::expect_rel_l2(g_dwpe2, test::repeated(in.dwpe0, dwpe, 2.0f), 1e-2, "bf16 dwpe after two calls");
  } else {
    test::expect_matches(g_out, out, "encoder out");
    test::expect_matches(g_dwte, dwte, "dwte", 1e-5);
    test::expect_matches(g_dwpe, dwpe, "dwpe", 1e-5);
    test::expect_matches(g_dwte2, test::repeated(in.dwte0, g_dwte, 2.0f), "dwte after two calls", 1e-5);
    test::expect_matches(g_dwpe2, test::repeated(in.dwpe0, g_dwpe, 2.0f), "dwpe after two calls", 1e-5);
  }
  test::check_every_schedule(all, run);
}
