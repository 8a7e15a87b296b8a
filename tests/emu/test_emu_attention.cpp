// cuda::attention_forward / _backward / kv_cache_store / attention_decode (the tiled kernels of
// kernels/attention.cuh) with their kernels on the CPU emulator against cpu::attention_forward /
// _backward / kv_cache_store / attention_decode, float and bf16, with the tolerances of
// tests/cuda/test_cuda_attention.cpp and test_bf16_attention_tiled.cpp: the saved log-sum-exp (fp32
// in both) within 1e-5 of cpu::attention_forward_blocked's, float out within 1e-5, dqkv 2e-5; bf16
// out and dqkv one bf16 rounding (relative L2 <= 1e-2, element-wise 5e-3 plus a slack of 1e-5 /
// 1e-4 of max|ref|). Attention dropout off and on; T = 1, 33, 37 (partial 64-wide tiles), 64, 130
// (three row tiles: tiles skipped above the diagonal, contractions over several tiles); head sizes
// 1, 6, 17 (partial 16-deep passes), 64. Outputs start as NaN; every warp schedule gives the same
// bits; the backward writes dqkv (a second run over NaN, same bits). Decode: from an empty cache
// (position 0) on, both kernels (scores in shared memory; the online-softmax fallback past 48 KiB),
// each where the launcher says it runs (the grid that ran).
// More heads than grid.z: test_emu_attention_heads.cpp. Against PyTorch's
// scaled_dot_product_attention too (tests/make_sdpa_fixture.py).
#include "common/catch.hpp"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/attention.hpp"
#include "cuda/attention_sdpa_util.hpp"
#include "emu/hostcuda/hostcuda.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/attention.cuh"

using namespace gpt2cc;
using test::bf16;

namespace {

struct Shape {
  int B, T, C, NH;
};

}  // namespace

TEMPLATE_TEST_CASE("emulated tiled attention forward and backward match cpu", "[emu][attention]", float, bf16) {
  using Elem = TestType;
  const Shape shape = GENERATE(Shape{1, 1, 8, 2}, Shape{3, 5, 4, 4}, Shape{2, 33, 18, 3}, Shape{2, 37, 68, 4},
                               Shape{1, 64, 128, 2}, Shape{1, 130, 34, 2});
  const float p = GENERATE(0.0f, 0.25f);
  const int B = shape.B, T = shape.T, C = shape.C, NH = shape.NH;
  INFO("B=" << B << " T=" << T << " C=" << C << " NH=" << NH << " dropout=" << p);
  const DropoutParams dropout{p, 0x1234'5678'9abcull, 7};
  const size_t qkv_n = size_t(B) * T * 3 * C, out_n = size_t(B) * T * C, lse_n = size_t(B) * NH * T;
  // Scores of O(1); on the bf16 grid so float and bf16 kernels and the CPU see the same values.
  const auto qkv = test::round_to_bf16(test::random_vector(qkv_n, 401, -1.5f, 1.5f));
  const auto dout = test::round_to_bf16(test::random_vector(out_n, 402));
  const auto [out, dqkv, lse] = test::cpu_attention_reference(qkv, dout, B, T, C, NH, dropout);

  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer qkv_elem(test::as<Elem>(qkv)), dout_elem(test::as<Elem>(dout));
  test::DeviceBuffer got_out(test::poisoned<Elem>(out_n)), got_dqkv(test::poisoned<Elem>(qkv_n));
  test::DeviceBuffer got_lse(test::poisoned<float>(lse_n));
  cuda::attention_forward(got_out.get(), got_lse.get(), qkv_elem.get(), B, T, C, NH, dropout, stream);
  test::expect_matches(got_lse.download(), lse, "attention log-sum-exp (fp32)", 1e-5);
  test::expect_output<Elem>(test::widened(got_out), out, 1e-5, 1e-5, "attention out");
  cuda::attention_backward(got_dqkv.get(), dout_elem.get(), got_lse.get(), qkv_elem.get(), got_out.get(), B, T, C, NH,
                           dropout, stream);
  test::expect_output<Elem>(test::widened(got_dqkv), dqkv, 2e-5, 1e-4, "attention dqkv");

  // dqkv is written, not accumulated: a second backward over NaN gives the same bits.
  test::DeviceBuffer again(test::poisoned<Elem>(qkv_n));
  cuda::attention_backward(again.get(), dout_elem.get(), got_lse.get(), qkv_elem.get(), got_out.get(), B, T, C, NH,
                           dropout, stream);
  CHECK(test::same_bits(test::widened(again), test::widened(got_dqkv)));

  const auto outputs = [](const test::DeviceBuffer<float>& a, const test::DeviceBuffer<Elem>& o,
                          const test::DeviceBuffer<Elem>& d) {
    const std::vector<float> a_f32 = a.download(), o_f32 = test::widened(o), d_f32 = test::widened(d);
    return test::concat({&a_f32, &o_f32, &d_f32});
  };
  test::check_every_schedule(outputs(got_lse, got_out, got_dqkv), [&] {
    test::DeviceBuffer out2(test::poisoned<Elem>(out_n)), dqkv2(test::poisoned<Elem>(qkv_n));
    test::DeviceBuffer lse2(test::poisoned<float>(lse_n));
    cuda::attention_forward(out2.get(), lse2.get(), qkv_elem.get(), B, T, C, NH, dropout, stream);
    cuda::attention_backward(dqkv2.get(), dout_elem.get(), lse2.get(), qkv_elem.get(), out2.get(), B, T, C, NH, dropout,
                             stream);
    return outputs(lse2, out2, dqkv2);
  });
}

// PyTorch's SDPA in float64 (tests/make_sdpa_fixture.py), no dropout: float out and dqkv within
// 1e-5 (relative L2 too); bf16 one rounding (as above) and no further from it than PyTorch's own
// bf16 SDPA allows (common/sdpa_fixture.hpp).
TEMPLATE_TEST_CASE("emulated tiled attention matches PyTorch scaled_dot_product_attention", "[emu][attention][pytorch]",
                   float, bf16) {
  using Elem = TestType;
  for (const test::SdpaCase& c : test::load_sdpa_cases()) {
    INFO(c.name << ": B=" << c.B << " T=" << c.T << " NH=" << c.NH << " HS=" << c.HS << " range=" << c.range);
    const auto [out, dqkv] = test::tiled_attention_on<Elem>(c, test::test_stream());
    test::expect_output<Elem>(out, c.out, 1e-5, 1e-5, "attention out");
    test::expect_output<Elem>(dqkv, c.dqkv, 1e-5, 1e-4, "attention dqkv");
    if constexpr (std::is_same_v<Elem, bf16>)
      test::check_as_accurate_as_torch_bf16(out, dqkv, c, "emulated tiled attention");
  }
}

TEMPLATE_TEST_CASE("emulated kv_cache_store and attention_decode match cpu", "[emu][attention][decode]", float, bf16) {
  using Elem = TestType;
  struct DecodeShape {
    int B, maxT, C, NH, prompt;
  };
  // The first decodes from an empty cache (positions 0 and 1); the last at positions past what
  // fits in shared memory (the fallback kernel).
  const DecodeShape shape = GENERATE(DecodeShape{2, 4, 8, 2, 0}, DecodeShape{1, 4, 8, 2, 1},
                                     DecodeShape{3, 40, 68, 4, 37}, DecodeShape{2, 70, 128, 2, 33},
                                     DecodeShape{1, 12300, 8, 2, 12290});
  const int B = shape.B, maxT = shape.maxT, C = shape.C, NH = shape.NH, prompt = shape.prompt;
  INFO("B=" << B << " maxT=" << maxT << " C=" << C << " NH=" << NH << " prompt=" << prompt);
  const size_t cache_n = size_t(B) * maxT * C;
  const auto prompt_qkv = test::round_to_bf16(test::random_vector(size_t(B) * prompt * 3 * C, 421));
  std::vector<float> kcache(cache_n, 0.0f), vcache(cache_n, 0.0f);
  cpu::kv_cache_store(kcache.data(), vcache.data(), prompt_qkv.data(), B, prompt, maxT, C);
  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer prompt_elem(test::as<Elem>(prompt_qkv));
  test::DeviceBuffer got_k(test::as<Elem>(std::vector<float>(cache_n, 0.0f))), got_v(got_k.download());
  cuda::kv_cache_store(got_k.get(), got_v.get(), prompt_elem.get(), B, prompt, maxT, C, stream);
  // A copy of values already on the bf16 grid: exact.
  CHECK(test::same_bits(test::widened(got_k), kcache));
  CHECK(test::same_bits(test::widened(got_v), vcache));

  bool used_fallback = false, used_shared = false;
  for (int pos = prompt; pos < std::min(maxT, prompt + 2); ++pos) {
    INFO("pos " << pos);
    const auto qkv = test::round_to_bf16(test::random_vector(size_t(B) * 3 * C, 422 + pos));
    std::vector<float> out(size_t(B) * C);
    cpu::attention_decode(out.data(), kcache.data(), vcache.data(), qkv.data(), B, pos, maxT, C, NH);
    const test::DeviceBuffer qkv_elem(test::as<Elem>(qkv));
    test::DeviceBuffer got_out(test::poisoned<Elem>(out.size()));
    const std::vector<Elem> k_before = got_k.download(), v_before = got_v.download();
    const size_t grids_before = hostcuda::grids_run();
    cuda::attention_decode(got_out.get(), got_k.get(), got_v.get(), qkv_elem.get(), B, pos, maxT, C, NH, stream);
    // The kernel that ran, by its grid (the scores kernel's dynamic shared memory), is the one
    // attention_decode_scores_fit_shared names.
    const std::vector<hostcuda::GridRun> grids = hostcuda::grids_run_since(grids_before);
    REQUIRE(!grids.empty());
    const bool shared_ran = grids.back().smem_bytes > 0;
    CHECK(shared_ran == cuda::attention_decode_scores_fit_shared(pos, C / NH));
    (shared_ran ? used_shared : used_fallback) = true;
    test::expect_output<Elem>(test::widened(got_out), out, 1e-5, 1e-5, "decode out");
    CHECK(test::same_bits(test::widened(got_k), kcache));
    CHECK(test::same_bits(test::widened(got_v), vcache));

    test::check_every_schedule(test::widened(got_out), [&] {
      test::DeviceBuffer k2(k_before), v2(v_before), out2(test::poisoned<Elem>(out.size()));
      cuda::attention_decode(out2.get(), k2.get(), v2.get(), qkv_elem.get(), B, pos, maxT, C, NH, stream);
      return test::widened(out2);
    });
  }
  CHECK(used_shared != used_fallback);
  if (maxT == 12300) CHECK(used_fallback);
}
