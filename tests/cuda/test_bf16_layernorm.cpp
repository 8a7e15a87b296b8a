// The bf16 LayerNorm backward's two designs (cuda::LayerNormBackward) at training shapes: the
// fused one-pass kernel against cpu::layernorm_backward on the same bf16-rounded inputs (one
// rounding per element), against the two-pass design (dinp: the same arithmetic in the same
// order; dweight / dbias: float column sums in another order, one bf16 ulp apart at most), and
// against itself: three runs and a CUDA graph replay bit-identical. GPT-2 124M (C = 768: launch
// bounds of 2 CTAs per SM) and 350M (C = 1024: 1); dinp, dweight and dbias accumulate from non-zero
// values. The small shapes and the fallbacks: test_bf16_elementwise.cpp, tests/emu. And every
// forward kernel, float and bf16, on rows whose mean dwarfs their spread (two-pass statistics).
#include "common/catch.hpp"

#include <algorithm>
#include <type_traits>
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
  CHECK(test::same_bits(run(cuda::LayerNormBackward::kFused), fused));
  CHECK(test::same_bits(run(cuda::LayerNormBackward::kFused), fused));
  CHECK(test::same_bits(run(cuda::LayerNormBackward::kAuto), fused));
  // Recorded into a CUDA graph (the partials are stream-ordered scratch, no host synchronisation).
  CHECK(test::same_bits(run(cuda::LayerNormBackward::kFused, true), fused));
}

// Rows whose mean is far larger than their spread (200 plus integers in [-3, 3]: exact in bf16 and
// float, so every sum of them is exact and the mean is the CPU's bit for bit): the forward's
// statistics come from two passes, sum (x - mean)^2, where E[x^2] - mean^2 would cancel ~14 bits
// (a fault planted in the cached-row kernel passed every other test). rstd and out against a
// double-precision reference (the CPU's float sum of 12800 squares is itself ~3e-5 off).
// Every forward kernel: float's warp-per-row, bf16's cached rows (packed, C = 768; scalar,
// C = 38), its uncached rows (C = 12800), the fused residual + LayerNorm.
TEMPLATE_TEST_CASE("layernorm forward statistics hold when the mean dwarfs the spread", "[cuda][bf16][layernorm]",
                   float, bf16) {
  using Elem = TestType;
  const int B = 2, T = 3, C = GENERATE(38, 768, 12800);
  const bool fused = GENERATE(false, true);
  INFO("C=" << C << " fused=" << fused);
  const size_t N = size_t(B) * T * C, rows = size_t(B) * T;
  std::vector<float> inp1(N), inp2(N, 0.0f);
  const auto tokens = test::random_tokens(N, 81, 7);  // 0..6
  for (size_t i = 0; i < N; ++i) inp1[i] = 197.0f + static_cast<float>(tokens[i]);
  if (fused) {  // x = inp1 + inp2 stays an integer below 256: exact in bf16
    const auto more = test::random_tokens(N, 82, 3);
    for (size_t i = 0; i < N; ++i) inp2[i] = static_cast<float>(more[i]) - 1.0f;
  }
  std::vector<float> x(N);
  for (size_t i = 0; i < N; ++i) x[i] = inp1[i] + inp2[i];
  const auto weight = test::round_to_bf16(test::random_vector(C, 83, 0.5f, 1.5f));
  const auto bias = test::round_to_bf16(test::random_vector(C, 84));
  std::vector<float> cpu_out(N), mean(rows), cpu_rstd(rows);
  cpu::layernorm_forward(cpu_out.data(), mean.data(), cpu_rstd.data(), x.data(), weight.data(), bias.data(), B, T, C);
  const test::LayerNormInDouble exact = test::layernorm_in_double(x, weight, bias, rows, C);
  const std::vector<float> out = test::to_float(exact.out), rstd = test::to_float(exact.rstd);

  DeviceBuffer<Elem> d_inp1(test::as<Elem>(inp1)), d_inp2(test::as<Elem>(inp2)), d_weight(test::as<Elem>(weight)),
      d_bias(test::as<Elem>(bias));
  DeviceBuffer<Elem> d_out(N), d_residual(N);
  DeviceBuffer<float> d_mean(rows), d_rstd(rows);
  d_mean.poison();
  d_rstd.poison();
  cudaStream_t stream = test::test_stream();
  if (fused)
    cuda::residual_layernorm_forward(d_residual.get(), d_out.get(), d_mean.get(), d_rstd.get(), d_inp1.get(),
                                     d_inp2.get(), d_weight.get(), d_bias.get(), B, T, C, stream);
  else
    cuda::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp1.get(), d_weight.get(), d_bias.get(), B,
                            T, C, stream);
  CHECK(test::same_bits(d_mean.download(), mean));
  test::expect_matches(d_rstd.download(), rstd, "rstd", 1e-5);
  if constexpr (std::is_same_v<Elem, float>) {
    test::expect_matches(test::widened(d_out), out, "out", 1e-5);
  } else {
    expect_one_rounding(test::widened(d_out), out, "bf16 out", 1e-4);
  }
  if (fused) CHECK(test::same_bits(test::widened(d_residual), x));
}
