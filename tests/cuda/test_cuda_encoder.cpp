// cuda::encoder_forward / encoder_backward against cpu:: on random inputs: repeated tokens (the
// deterministic scatter-add: runs of one token across the dwte kernel's chunks of sorted keys),
// T = 1, odd B, C not a multiple of 4, C > 2048 and > 8192 (channel tiles), 4096 positions of a
// GPT-2 vocabulary (four sort tiles, two merge passes). Backward accumulates: a second call
// doubles the increment.
#include "common/catch.hpp"

#include "cpu/encoder.hpp"
#include "cuda_test_util.hpp"
#include "kernels/encoder.cuh"

using namespace gpt2cc;
using test::DeviceBuffer;

TEST_CASE("cuda encoder forward and backward match cpu", "[cuda][encoder]") {
  struct Shape {
    int B, T, C, Vp;
  };
  const Shape shape = GENERATE(Shape{1, 1, 8, 16}, Shape{3, 5, 7, 4}, Shape{5, 33, 130, 50}, Shape{2, 9, 2100, 6},
                               Shape{4, 64, 768, 500}, Shape{1, 5, 8200, 3}, Shape{4, 1024, 64, 50257});
  const int B = shape.B, T = shape.T, C = shape.C, Vp = shape.Vp;
  INFO("B=" << B << " T=" << T << " C=" << C << " Vp=" << Vp);
  const size_t BTC = size_t(B) * T * C;
  // Few distinct tokens (Vp small), so many positions share a dwte row.
  const auto inp = test::random_tokens(size_t(B) * T, 11 + C, Vp);
  const auto wte = test::random_vector(size_t(Vp) * C, 12);
  const auto wpe = test::random_vector(size_t(T) * C, 13);
  const auto dout = test::random_vector(BTC, 14);
  const auto dwte0 = test::random_vector(wte.size(), 15);
  const auto dwpe0 = test::random_vector(wpe.size(), 16);
  cudaStream_t stream = test::test_stream();

  DeviceBuffer<int> d_inp(inp);
  DeviceBuffer<float> d_wte(wte), d_wpe(wpe), d_out(BTC), d_dout(dout), d_dwte(dwte0), d_dwpe(dwpe0);
  std::vector<float> out(BTC);
  cpu::encoder_forward(out.data(), inp.data(), wte.data(), wpe.data(), B, T, C);
  d_out.poison();
  cuda::encoder_forward(d_out.get(), d_inp.get(), d_wte.get(), d_wpe.get(), B, T, C, stream);
  test::expect_matches(d_out.download(), out, "encoder out");

  std::vector<float> dwte = dwte0, dwpe = dwpe0;
  cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), inp.data(), B, T, C);
  cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, stream);
  const auto g_dwte = d_dwte.download(), g_dwpe = d_dwpe.download();
  test::expect_matches(g_dwte, dwte, "dwte", 1e-5);
  test::expect_matches(g_dwpe, dwpe, "dwpe", 1e-5);

  // Accumulation: a second call adds the same increment again.
  cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, stream);
  std::vector<float> twice_wte(wte.size()), twice_wpe(wpe.size());
  for (size_t i = 0; i < wte.size(); ++i) twice_wte[i] = dwte0[i] + 2.0f * (g_dwte[i] - dwte0[i]);
  for (size_t i = 0; i < wpe.size(); ++i) twice_wpe[i] = dwpe0[i] + 2.0f * (g_dwpe[i] - dwpe0[i]);
  test::expect_matches(d_dwte.download(), twice_wte, "dwte after two calls", 1e-5);
  test::expect_matches(d_dwpe.download(), twice_wpe, "dwpe after two calls", 1e-5);
}

TEST_CASE("cuda encoder backward is bit-for-bit repeatable", "[cuda][encoder][determinism]") {
  const int B = 8, T = 512, C = 96, Vp = 20;  // 4096 positions: the merge passes too
  const auto inp = test::random_tokens(size_t(B) * T, 21, Vp);
  const auto dout = test::random_vector(size_t(B) * T * C, 22);
  DeviceBuffer<int> d_inp(inp);
  DeviceBuffer<float> d_dout(dout), d_dwte(size_t(Vp) * C), d_dwpe(size_t(T) * C);
  std::vector<float> first_wte, first_wpe;
  for (int run = 0; run < 2; ++run) {
    d_dwte.zero();
    d_dwpe.zero();
    cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, test::test_stream());
    if (run == 0) {
      first_wte = d_dwte.download();
      first_wpe = d_dwpe.download();
    } else {
      CHECK(test::same_bits(d_dwte.download(), first_wte));
      CHECK(test::same_bits(d_dwpe.download(), first_wpe));
    }
  }
}
