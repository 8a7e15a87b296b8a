// The bf16 LayerNorm backward's two designs (cuda::LayerNormBackward) at training shapes: the
// fused one-pass kernel against cpu::layernorm_backward on the same bf16-rounded inputs (one
// rounding per element), against the two-pass design (dinp: the same arithmetic in the same
// order; dweight / dbias: float column sums in another order, one bf16 ulp apart at most), and
// against itself: three runs and a CUDA graph replay bit-identical. GPT-2 124M (C = 768: launch
// bounds of 2 CTAs per SM) and 350M (C = 1024: 1); dinp, dweight and dbias accumulate from non-zero
// values. The small shapes and the fallbacks: test_bf16_elementwise.cpp, tests/emu.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "bf16_test_util.hpp"
#include "cpu/layernorm.hpp"
#include "kernels/layernorm.cuh"
#include "layernorm_test_util.hpp"

using namespace gpt2cc;
using test::bf16;
using test::DeviceBuffer;
using test::expect_one_rounding;
using test::rounded_random;
using Grads = test::LayerNormGrads;

TEST_CASE("bf16 layernorm backward: the fused design matches cpu and the two-pass one, bit-identical on every run",
          "[cuda][bf16][layernorm]") {
  const bool emulated = test::on_cpu_emulator();
  // On the CPU emulator 4 x 1024 rows: still several rows per warp of the fused kernel's grid.
  const int B = emulated ? 4 : 8, T = 1024, C = GENERATE(768, 1024);
  INFO("B=" << B << " T=" << T << " C=" << C);
  const size_t N = size_t(B) * T * C, rows = size_t(B) * T;
  auto inp = test::random_vector(N, 71, -2.0f, 2.0f);
  for (float& x : inp) x += 3.0f;  // a non-zero mean, as in the residual stream
  inp = test::round_to_bf16(inp);
  const auto weight = rounded_random(C, 72, 0.5f, 1.5f), bias = rounded_random(C, 73);
  const auto dout = rounded_random(N, 74);
  // Small starting grads, so the increment dominates and a "=" instead of "+=" shows.
  const auto dinp0 = rounded_random(N, 75, -0.1f, 0.1f);
  const auto dweight0 = rounded_random(C, 76, -0.1f, 0.1f), dbias0 = rounded_random(C, 77, -0.1f, 0.1f);

  std::vector<float> out(N), mean(rows), rstd(rows);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(), B, T, C);
  Grads ref{dinp0, dweight0, dbias0};
  cpu::layernorm_backward(ref.dinp.data(), ref.dweight.data(), ref.dbias.data(), dout.data(), mean.data(),
                          rstd.data(), inp.data(), weight.data(), B, T, C);

  const auto d_inp = test::device_bf16(inp), d_weight = test::device_bf16(weight), d_dout = test::device_bf16(dout);
  const DeviceBuffer<float> d_mean(mean), d_rstd(rstd);
  cudaStream_t stream = test::test_stream();
  // One backward call from the starting grads; recorded into a CUDA graph, replayed, when `graph`.
  const auto run = [&](cuda::LayerNormBackward design, bool graph = false) {
    auto dinp = test::device_bf16(dinp0), dweight = test::device_bf16(dweight0), dbias = test::device_bf16(dbias0);
    const auto call = [&] {
      cuda::layernorm_backward(dinp.get(), dweight.get(), dbias.get(), d_dout.get(), d_mean.get(), d_rstd.get(),
                               d_inp.get(), d_weight.get(), B, T, C, stream, design);
    };
    test::run_once(stream, call, graph);
    return Grads{test::download_float(dinp), test::download_float(dweight), test::download_float(dbias)};
  };

  const Grads fused = run(cuda::LayerNormBackward::kFused);
  const Grads two_pass = run(cuda::LayerNormBackward::kTwoPass);
  // dinp = bf16(dinp0 + dx): one rounding. dweight / dbias: float column sums over B*T rows in
  // another order than the CPU's, then one rounding: a larger absolute floor for the sums' error.
  expect_one_rounding(fused.dinp, ref.dinp, "fused bf16 dinp (+=)", 1e-4);
  expect_one_rounding(fused.dweight, ref.dweight, "fused bf16 dweight", 1e-4);
  expect_one_rounding(fused.dbias, ref.dbias, "fused bf16 dbias", 1e-4);
  // The same expressions in the same order as the two-pass kernel's 16-byte loop, but nvcc (like
  // the host compiler of the emulator's ThreadSanitizer build) may contract a product into an FMA
  // differently in the two kernels: within a rounding of each other.
  expect_one_rounding(fused.dinp, two_pass.dinp, "fused vs two-pass bf16 dinp", 1e-5, 2);
  expect_one_rounding(fused.dweight, two_pass.dweight, "fused vs two-pass bf16 dweight", 1e-5, 2);
  expect_one_rounding(fused.dbias, two_pass.dbias, "fused vs two-pass bf16 dbias", 1e-5, 2);
  CHECK(test::bit_equal(run(cuda::LayerNormBackward::kFused), fused));
  CHECK(test::bit_equal(run(cuda::LayerNormBackward::kFused), fused));
  CHECK(test::bit_equal(run(cuda::LayerNormBackward::kAuto), fused));
  // Recorded into a CUDA graph (the partials are stream-ordered scratch, no host synchronisation).
  CHECK(test::bit_equal(run(cuda::LayerNormBackward::kFused, true), fused));
}
