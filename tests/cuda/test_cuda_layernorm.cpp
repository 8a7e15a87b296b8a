// cuda::layernorm_forward / layernorm_backward against cpu:: on random inputs (T = 1, odd B, C not
// a multiple of 4 or of the warp, GPT-2's C = 768, 1024). Backward: dinp, dweight, dbias all
// accumulate (+=), checked from random starting values and by a second call; both designs
// (cuda::LayerNormBackward: kAuto takes the fused one for C = 8, 768, 1024), and the fused one
// against the two-pass one at a training shape, three runs and a CUDA graph replay bit-identical.
#include "common/catch.hpp"

#include "cpu/layernorm.hpp"
#include "cuda_test_util.hpp"
#include "kernels/layernorm.cuh"
#include "layernorm_test_util.hpp"

using namespace gpt2cc;
using test::DeviceBuffer;
using Grads = test::LayerNormGrads;

TEST_CASE("cuda layernorm forward and backward match cpu", "[cuda][layernorm]") {
  struct Shape {
    int B, T, C;
  };
  const Shape shape = GENERATE(Shape{1, 1, 1}, Shape{1, 1, 8}, Shape{3, 5, 7}, Shape{5, 13, 33}, Shape{4, 64, 768},
                               Shape{2, 33, 1024}, Shape{1, 3, 1601});
  const auto design = GENERATE(cuda::LayerNormBackward::kAuto, cuda::LayerNormBackward::kTwoPass);
  const int B = shape.B, T = shape.T, C = shape.C;
  INFO("B=" << B << " T=" << T << " C=" << C << " design=" << static_cast<int>(design));
  const size_t N = size_t(B) * T * C, rows = size_t(B) * T;
  auto inp = test::random_vector(N, 31, -2.0f, 2.0f);
  for (size_t i = 0; i < N; ++i) inp[i] += 3.0f;  // a non-zero mean, as in the residual stream
  const auto weight = test::random_vector(C, 32, 0.5f, 1.5f);
  const auto bias = test::random_vector(C, 33);
  const auto dout = test::random_vector(N, 34);
  const auto dinp0 = test::random_vector(N, 35);
  const auto dweight0 = test::random_vector(C, 36), dbias0 = test::random_vector(C, 37);
  cudaStream_t stream = test::test_stream();

  std::vector<float> out(N), mean(rows), rstd(rows);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(), B, T, C);
  DeviceBuffer<float> d_inp(inp), d_weight(weight), d_bias(bias), d_out(N), d_mean(rows), d_rstd(rows);
  d_out.poison();
  d_mean.poison();
  d_rstd.poison();
  cuda::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_weight.get(), d_bias.get(), B, T, C,
                          stream);
  test::expect_matches(d_out.download(), out, "layernorm out");
  test::expect_matches(d_mean.download(), mean, "layernorm mean");
  test::expect_matches(d_rstd.download(), rstd, "layernorm rstd");

  std::vector<float> dinp = dinp0, dweight = dweight0, dbias = dbias0;
  cpu::layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), mean.data(), rstd.data(),
                          inp.data(), weight.data(), B, T, C);
  DeviceBuffer<float> d_dinp(dinp0), d_dweight(dweight0), d_dbias(dbias0), d_dout(dout);
  cuda::layernorm_backward(d_dinp.get(), d_dweight.get(), d_dbias.get(), d_dout.get(), d_mean.get(), d_rstd.get(),
                           d_inp.get(), d_weight.get(), B, T, C, stream, design);
  const auto g_dinp = d_dinp.download(), g_dweight = d_dweight.download(), g_dbias = d_dbias.download();
  test::expect_matches(g_dinp, dinp, "layernorm dinp (+=)", 1e-5);
  // Column sums over B*T rows in a different order from the CPU's: a little more slack.
  test::expect_matches(g_dweight, dweight, "layernorm dweight", 2e-5);
  test::expect_matches(g_dbias, dbias, "layernorm dbias", 2e-5);

  cuda::layernorm_backward(d_dinp.get(), d_dweight.get(), d_dbias.get(), d_dout.get(), d_mean.get(), d_rstd.get(),
                           d_inp.get(), d_weight.get(), B, T, C, stream, design);
  auto doubled = [](const std::vector<float>& start, const std::vector<float>& once) {
    std::vector<float> r(start.size());
    for (size_t i = 0; i < r.size(); ++i) r[i] = start[i] + 2.0f * (once[i] - start[i]);
    return r;
  };
  test::expect_matches(d_dinp.download(), doubled(dinp0, g_dinp), "dinp after two calls", 1e-5);
  test::expect_matches(d_dweight.download(), doubled(dweight0, g_dweight), "dweight after two calls", 1e-5);
  test::expect_matches(d_dbias.download(), doubled(dbias0, g_dbias), "dbias after two calls", 1e-5);
}

namespace {

// dinp, dweight, dbias after one backward call of `design` from the starting values (a CUDA graph
// of the call, replayed, when `graph`).
Grads run_backward(const std::vector<float>& dinp0, const std::vector<float>& dweight0,
                   const std::vector<float>& dbias0, const DeviceBuffer<float>& dout, const DeviceBuffer<float>& mean,
                   const DeviceBuffer<float>& rstd, const DeviceBuffer<float>& inp, const DeviceBuffer<float>& weight,
                   int B, int T, int C, cuda::LayerNormBackward design, bool graph = false) {
  DeviceBuffer<float> dinp(dinp0), dweight(dweight0), dbias(dbias0);
  cudaStream_t stream = test::test_stream();
  const auto call = [&] {
    cuda::layernorm_backward(dinp.get(), dweight.get(), dbias.get(), dout.get(), mean.get(), rstd.get(), inp.get(),
                             weight.get(), B, T, C, stream, design);
  };
  test::run_once(stream, call, graph);
  return {dinp.download(), dweight.download(), dbias.download()};
}

}  // namespace

// GPT-2 124M's backward at B = 8, T = 1024 (on the CPU emulator 4 x 1024: still many rows per warp
// of the fused kernel's grid, at most 264 CTAs from the shape).
TEST_CASE("cuda layernorm backward: the fused design matches cpu and the two-pass one, bit-identical on every run",
          "[cuda][layernorm]") {
  const bool emulated = test::on_cpu_emulator();
  const int B = emulated ? 4 : 8, T = 1024, C = 768;
  const size_t N = size_t(B) * T * C, rows = size_t(B) * T;
  auto inp = test::random_vector(N, 41, -2.0f, 2.0f);
  for (float& x : inp) x += 3.0f;
  const auto weight = test::random_vector(C, 42, 0.5f, 1.5f), bias = test::random_vector(C, 43);
  const auto dout = test::random_vector(N, 44), dinp0 = test::random_vector(N, 45);
  const auto dweight0 = test::random_vector(C, 46), dbias0 = test::random_vector(C, 47);
  std::vector<float> out(N), mean(rows), rstd(rows);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(), B, T, C);
  Grads ref{dinp0, dweight0, dbias0};
  cpu::layernorm_backward(ref.dinp.data(), ref.dweight.data(), ref.dbias.data(), dout.data(), mean.data(),
                          rstd.data(), inp.data(), weight.data(), B, T, C);
  const DeviceBuffer<float> d_dout(dout), d_mean(mean), d_rstd(rstd), d_inp(inp), d_weight(weight);
  const auto run = [&](cuda::LayerNormBackward design, bool graph = false) {
    return run_backward(dinp0, dweight0, dbias0, d_dout, d_mean, d_rstd, d_inp, d_weight, B, T, C, design, graph);
  };
  const Grads fused = run(cuda::LayerNormBackward::kFused);
  const Grads two_pass = run(cuda::LayerNormBackward::kTwoPass);
  test::expect_fused_layernorm_backward(fused, two_pass, ref);
  CHECK(test::same_bits(run(cuda::LayerNormBackward::kFused), fused));
  CHECK(test::same_bits(run(cuda::LayerNormBackward::kFused), fused));
  CHECK(test::same_bits(run(cuda::LayerNormBackward::kAuto), fused));
  // Recorded into a CUDA graph (the partials are stream-ordered scratch, no host synchronisation).
  CHECK(test::same_bits(run(cuda::LayerNormBackward::kFused, true), fused));
}
