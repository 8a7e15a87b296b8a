// cuda::attention_forward / attention_backward against cpu:: (out and dqkv against the reference
// loops, the saved log-sum-exp against cpu::attention_forward_blocked's) with and without
// attention dropout, over T = 1, T not a multiple of the 32-wide tile,
// head sizes 1, 6, 17 and GPT-2's 64, and B*NH > 65535 (the kernel's loop over blockIdx.z).
// Also the KV-cache ops: kv_cache_store and attention_decode, both decode kernels (scores in
// shared memory, and the online-softmax fallback for long contexts). And out and dqkv against
// PyTorch's scaled_dot_product_attention (tests/make_sdpa_fixture.py). And scores far beyond
// exp's range (the softmax must subtract the row maximum).
#include "common/catch.hpp"

#include <algorithm>

#include "attention_sdpa_util.hpp"
#include "cpu/attention.hpp"
#include "cuda_test_util.hpp"
#include "kernels/attention.cuh"

using namespace gpt2cc;
using test::DeviceBuffer;

TEST_CASE("cuda attention forward and backward match cpu", "[cuda][attention]") {
  struct Shape {
    int B, T, C, NH;
  };
  const Shape shape = GENERATE(Shape{1, 1, 8, 2}, Shape{3, 5, 4, 4}, Shape{3, 33, 18, 3}, Shape{2, 70, 68, 4},
                               Shape{2, 64, 128, 2}, Shape{1, 130, 768, 12});
  const float p = GENERATE(0.0f, 0.25f);
  const int B = shape.B, T = shape.T, C = shape.C, NH = shape.NH;
  INFO("B=" << B << " T=" << T << " C=" << C << " NH=" << NH << " dropout=" << p);
  const DropoutParams dropout{p, 0x1234'5678'9abcull, 7};
  const size_t qkv_n = size_t(B) * T * 3 * C, out_n = size_t(B) * T * C, lse_n = size_t(B) * NH * T;
  // Scores of O(1): q, k ~ U(-1, 1) over HS channels, scaled by 1/sqrt(HS).
  const auto qkv = test::random_vector(qkv_n, 71, -1.5f, 1.5f);
  const auto dout = test::random_vector(out_n, 72);
  cudaStream_t stream = test::test_stream();
  const auto [out, dqkv, lse] = test::cpu_attention_reference(qkv, dout, B, T, C, NH, dropout);

  DeviceBuffer<float> d_qkv(qkv), d_out(out_n), d_lse(lse_n), d_dout(dout), d_dqkv(qkv_n);
  d_out.poison();
  d_lse.poison();
  d_dqkv.poison();
  cuda::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, dropout, stream);
  test::expect_matches(d_lse.download(), lse, "attention log-sum-exp");
  test::expect_matches(d_out.download(), out, "attention out");
  cuda::attention_backward(d_dqkv.get(), d_dout.get(), d_lse.get(), d_qkv.get(), d_out.get(), B, T, C, NH, dropout,
                           stream);
  test::expect_matches(d_dqkv.download(), dqkv, "attention dqkv", 2e-5);
}

// PyTorch's SDPA in float64 (tests/make_sdpa_fixture.py), no dropout: out and dqkv within 1e-5
// (2e-5 for dqkv, as against the CPU), element-wise and in relative L2.
TEST_CASE("cuda attention matches PyTorch scaled_dot_product_attention", "[cuda][attention][pytorch]") {
  for (const test::SdpaCase& c : test::load_sdpa_cases()) {
    INFO(c.name << ": B=" << c.B << " T=" << c.T << " NH=" << c.NH << " HS=" << c.HS << " range=" << c.range);
    const auto [out, dqkv] = test::tiled_attention_on<float>(c, test::test_stream());
    test::expect_matches(out, c.out, "attention out");
    test::expect_matches(dqkv, c.dqkv, "attention dqkv", 2e-5);
  }
}

TEST_CASE("cuda attention handles more heads than one grid dimension holds", "[cuda][attention]") {
  const int B = 65537, T = 2, C = 2, NH = 1;  // B*NH > 65535: blocks loop over heads
  const size_t qkv_n = size_t(B) * T * 3 * C, out_n = size_t(B) * T * C, att_n = size_t(B) * NH * T * T;
  const auto qkv = test::random_vector(qkv_n, 73);
  const auto dout = test::random_vector(out_n, 74);
  std::vector<float> out(out_n), att(att_n), dqkv(qkv_n);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, DropoutParams{});
  cpu::attention_backward(dqkv.data(), dout.data(), att.data(), qkv.data(), B, T, C, NH, DropoutParams{});
  DeviceBuffer<float> d_qkv(qkv), d_out(out_n), d_lse(size_t(B) * NH * T), d_dout(dout), d_dqkv(qkv_n);
  d_out.poison();
  d_lse.poison();
  d_dqkv.poison();
  cuda::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, DropoutParams{}, test::test_stream());
  cuda::attention_backward(d_dqkv.get(), d_dout.get(), d_lse.get(), d_qkv.get(), d_out.get(), B, T, C, NH,
                           DropoutParams{}, test::test_stream());
  test::expect_matches(d_out.download(), out, "attention out");
  test::expect_matches(d_dqkv.download(), dqkv, "attention dqkv", 2e-5);
}

TEST_CASE("cuda attention backward is bit-for-bit repeatable", "[cuda][attention][determinism]") {
  const int B = 2, T = 96, C = 64, NH = 4;
  const DropoutParams dropout{0.1f, 99, 3};
  const auto qkv = test::random_vector(size_t(B) * T * 3 * C, 75);
  const auto dout = test::random_vector(size_t(B) * T * C, 76);
  DeviceBuffer<float> d_qkv(qkv), d_out(dout.size()), d_lse(size_t(B) * NH * T), d_dout(dout), d_dqkv(qkv.size());
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    cuda::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, dropout, test::test_stream());
    cuda::attention_backward(d_dqkv.get(), d_dout.get(), d_lse.get(), d_qkv.get(), d_out.get(), B, T, C, NH, dropout,
                             test::test_stream());
    if (run == 0) first = d_dqkv.download();
    else CHECK(test::same_bits(d_dqkv.download(), first));
  }
}

TEST_CASE("cuda kv_cache_store and attention_decode match cpu", "[cuda][attention][decode]") {
  struct Shape {
    int B, maxT, C, NH, prompt;
  };
  // The last shape decodes at positions past what fits in shared memory (the fallback kernel).
  const Shape shape = GENERATE(Shape{1, 4, 8, 2, 1}, Shape{3, 40, 68, 4, 33}, Shape{2, 1030, 768, 12, 1024},
                               Shape{1, 12300, 8, 2, 12290});
  const int B = shape.B, maxT = shape.maxT, C = shape.C, NH = shape.NH, prompt = shape.prompt;
  INFO("B=" << B << " maxT=" << maxT << " C=" << C << " NH=" << NH << " prompt=" << prompt);
  const size_t cache_n = size_t(B) * maxT * C;
  const auto prompt_qkv = test::random_vector(size_t(B) * prompt * 3 * C, 81);
  std::vector<float> kcache(cache_n, 0.0f), vcache(cache_n, 0.0f);
  cpu::kv_cache_store(kcache.data(), vcache.data(), prompt_qkv.data(), B, prompt, maxT, C);
  DeviceBuffer<float> d_prompt(prompt_qkv), d_k(std::vector<float>(cache_n, 0.0f)),
      d_v(std::vector<float>(cache_n, 0.0f));
  cudaStream_t stream = test::test_stream();
  cuda::kv_cache_store(d_k.get(), d_v.get(), d_prompt.get(), B, prompt, maxT, C, stream);
  CHECK(test::same_bits(d_k.download(), kcache));
  CHECK(test::same_bits(d_v.download(), vcache));

  bool used_fallback = false, used_shared = false;
  for (int pos = prompt; pos < std::min(maxT, prompt + 3); ++pos) {
    INFO("pos " << pos);
    const auto qkv = test::random_vector(size_t(B) * 3 * C, 82 + pos);
    std::vector<float> out(size_t(B) * C);
    cpu::attention_decode(out.data(), kcache.data(), vcache.data(), qkv.data(), B, pos, maxT, C, NH);
    DeviceBuffer<float> d_qkv(qkv), d_out(out.size());
    d_out.poison();
    cuda::attention_decode(d_out.get(), d_k.get(), d_v.get(), d_qkv.get(), B, pos, maxT, C, NH, stream);
    (cuda::attention_decode_scores_fit_shared(pos, C / NH) ? used_shared : used_fallback) = true;
    test::expect_matches(d_out.download(), out, "decode out");
    CHECK(test::same_bits(d_k.download(), kcache));
    CHECK(test::same_bits(d_v.download(), vcache));
  }
  CHECK(used_shared != used_fallback);
  if (maxT == 12300) CHECK(used_fallback);
}

// Scores of several hundred (q and k scaled by 12; HS 64): exp of them overflows float, exp of
// their negatives underflows, so only a softmax that subtracts each row's maximum stays finite,
// as the CPU's does (a fault planted in the tiled softmax, exp(s) / sum exp(s), passed every test
// of O(1) scores). Tiled forward and backward, and the decode kernel that keeps its scores in
// shared memory; looser tolerances: with rows this peaked, the products' rounding shows more.
TEST_CASE("cuda attention keeps scores far beyond exp's range finite", "[cuda][attention]") {
  const int B = 2, T = 70, C = 128, NH = 2;
  const auto scaled_qk = [&](std::vector<float> qkv, int rows) {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < 2 * C; ++c) qkv[size_t(r) * 3 * C + c] *= 12.0f;
    return qkv;
  };
  const auto qkv = scaled_qk(test::random_vector(size_t(B) * T * 3 * C, 91, -1.5f, 1.5f), B * T);
  const auto dout = test::random_vector(size_t(B) * T * C, 92);
  const auto [out, dqkv, lse] = test::cpu_attention_reference(qkv, dout, B, T, C, NH, DropoutParams{});
  REQUIRE(*std::max_element(lse.begin(), lse.end()) > 200.0f);  // exp(200) is no float
  cudaStream_t stream = test::test_stream();
  DeviceBuffer<float> d_qkv(qkv), d_out(out.size()), d_lse(lse.size()), d_dout(dout), d_dqkv(qkv.size());
  d_out.poison();
  d_lse.poison();
  d_dqkv.poison();
  cuda::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, DropoutParams{}, stream);
  cuda::attention_backward(d_dqkv.get(), d_dout.get(), d_lse.get(), d_qkv.get(), d_out.get(), B, T, C, NH,
                           DropoutParams{}, stream);
  test::expect_matches(d_lse.download(), lse, "attention log-sum-exp");
  test::expect_matches(d_out.download(), out, "attention out", 1e-4);
  test::expect_matches(d_dqkv.download(), dqkv, "attention dqkv", 1e-3);

  // Decode at position T - 1, each batch row's first T - 1 rows in the cache.
  const int maxT = T, pos = T - 1;
  std::vector<float> prefix;
  for (int b = 0; b < B; ++b)
    prefix.insert(prefix.end(), qkv.begin() + ptrdiff_t(b) * T * 3 * C, qkv.begin() + (ptrdiff_t(b) * T + pos) * 3 * C);
  std::vector<float> kcache(size_t(B) * maxT * C, 0.0f), vcache(kcache.size(), 0.0f);
  cpu::kv_cache_store(kcache.data(), vcache.data(), prefix.data(), B, pos, maxT, C);
  const auto step = scaled_qk(test::random_vector(size_t(B) * 3 * C, 93, -1.5f, 1.5f), B);
  std::vector<float> step_out(size_t(B) * C);
  cpu::attention_decode(step_out.data(), kcache.data(), vcache.data(), step.data(), B, pos, maxT, C, NH);
  REQUIRE(cuda::attention_decode_scores_fit_shared(pos, C / NH));
  DeviceBuffer<float> d_k(kcache), d_v(vcache), d_step(step), d_step_out(step_out.size());
  d_step_out.poison();
  cuda::attention_decode(d_step_out.get(), d_k.get(), d_v.get(), d_step.get(), B, pos, maxT, C, NH, stream);
  test::expect_matches(d_step_out.download(), step_out, "decode out", 1e-4);
}

TEST_CASE("cuda attention rejects bad shapes", "[cuda][attention]") {
  DeviceBuffer<float> buf(64);
  CHECK_THROWS_WITH(cuda::attention_forward(buf.get(), buf.get(), buf.get(), 1, 1, 10, 3, DropoutParams{},
                                            test::test_stream()),
                    Catch::Contains("NH"));
  CHECK_THROWS_WITH(cuda::attention_decode(buf.get(), buf.get(), buf.get(), buf.get(), 1, 4, 4, 4, 2,
                                           test::test_stream()),
                    Catch::Contains("position 4"));
  CHECK_THROWS_WITH(cuda::kv_cache_store(buf.get(), buf.get(), buf.get(), 1, 5, 4, 2, test::test_stream()),
                    Catch::Contains("exceeds the cache length"));
}
