// The tiled attention kernels (kernels/attention_device.cuh) executed by the CPU emulator against
// cpu::attention_forward / _backward / kv_cache_store / attention_decode, float and bf16, with the
// tolerances of tests/cuda/test_cuda_attention.cpp and test_bf16_attention_tiled.cpp: float att and
// out within 1e-5, dqkv 2e-5; bf16 att (fp32) within 1e-5, out and dqkv one bf16 rounding (relative
// L2 <= 1e-2, element-wise 5e-3 plus a slack of 1e-5 / 1e-4 of max|ref|). Attention dropout off and
// on; T = 1, 33, 37 (partial 32-wide tiles), 64; head sizes 1, 6, 17, 64; more heads than the
// grid's z (a capped grid.z: each block loops over heads). Outputs start as NaN; every warp
// schedule gives the same bits; the backward writes dqkv (a second run over NaN, same bits).
// Decode: from an empty cache (position 0) on, both kernels (scores in shared memory; the
// online-softmax fallback past 48 KiB).
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "cpu/attention.hpp"
#include "emu/attention_emu.hpp"
#include "emu/layer_test_util.hpp"

using namespace gpt2cc;
using test::bf16;

namespace {

// float: fp32 results within tol; bf16: rounded once from fp32 results that differ from the CPU's
// by float rounding only: relative L2 <= 1e-2 and element-wise one bf16 rounding (2^-8 relative)
// plus `slack` * max|ref| for the fp32 differences in values near zero.
template <class Elem>
void expect_output(const std::vector<float>& got, const std::vector<float>& ref, double tol, double slack,
                   const std::string& what) {
  if constexpr (std::is_same_v<Elem, float>) {
    test::expect_matches(got, ref, what, tol);
  } else {
    test::expect_rel_l2(got, ref, 1e-2, what);
    test::expect_bf16_rounding(got, ref, what + " element-wise", 5e-3, slack * std::max(test::max_abs(ref), 1e-30));
  }
}

struct Shape {
  int B, T, C, NH;
};

}  // namespace

TEMPLATE_TEST_CASE("emulated tiled attention forward and backward match cpu", "[emu][attention]", float, bf16) {
  using Elem = TestType;
  const Shape shape = GENERATE(Shape{1, 1, 8, 2}, Shape{3, 5, 4, 4}, Shape{2, 33, 18, 3}, Shape{2, 37, 68, 4},
                               Shape{1, 64, 128, 2});
  const float p = GENERATE(0.0f, 0.25f);
  const int B = shape.B, T = shape.T, C = shape.C, NH = shape.NH;
  INFO("B=" << B << " T=" << T << " C=" << C << " NH=" << NH << " dropout=" << p);
  const DropoutParams dropout{p, 0x1234'5678'9abcull, 7};
  const size_t qkv_n = size_t(B) * T * 3 * C, out_n = size_t(B) * T * C, att_n = size_t(B) * NH * T * T;
  // Scores of O(1); on the bf16 grid so float and bf16 kernels and the CPU see the same values.
  const auto qkv = test::round_to_bf16(test::random_vector(qkv_n, 401, -1.5f, 1.5f));
  const auto dout = test::round_to_bf16(test::random_vector(out_n, 402));
  std::vector<float> out(out_n), att(att_n), dqkv(qkv_n);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
  cpu::attention_backward(dqkv.data(), dout.data(), att.data(), qkv.data(), B, T, C, NH, dropout);

  const auto qkv_elem = test::as<Elem>(qkv), dout_elem = test::as<Elem>(dout);
  auto got_out = test::poisoned<Elem>(out_n);
  auto got_att = test::poisoned<float>(att_n);
  auto got_dqkv = test::poisoned<Elem>(qkv_n);
  emu::attention_forward(got_out.data(), got_att.data(), qkv_elem.data(), B, T, C, NH, dropout);
  test::expect_matches(got_att, att, "attention probabilities (fp32)", 1e-5);
  expect_output<Elem>(test::widened(got_out), out, 1e-5, 1e-5, "attention out");
  emu::attention_backward(got_dqkv.data(), dout_elem.data(), got_att.data(), qkv_elem.data(), B, T, C, NH, dropout);
  expect_output<Elem>(test::widened(got_dqkv), dqkv, 2e-5, 1e-4, "attention dqkv");

  // dqkv is written, not accumulated: a second backward over NaN gives the same bits.
  auto again = test::poisoned<Elem>(qkv_n);
  emu::attention_backward(again.data(), dout_elem.data(), got_att.data(), qkv_elem.data(), B, T, C, NH, dropout);
  CHECK(test::bit_equal(test::widened(again), test::widened(got_dqkv)));

  const auto outputs = [](const std::vector<float>& a, const std::vector<Elem>& o, const std::vector<Elem>& d) {
    const std::vector<float> o_f32 = test::widened(o), d_f32 = test::widened(d);
    return test::concat({&a, &o_f32, &d_f32});
  };
  test::check_every_schedule(outputs(got_att, got_out, got_dqkv), [&] {
    auto out2 = test::poisoned<Elem>(out_n);
    auto att2 = test::poisoned<float>(att_n);
    auto dqkv2 = test::poisoned<Elem>(qkv_n);
    emu::attention_forward(out2.data(), att2.data(), qkv_elem.data(), B, T, C, NH, dropout);
    emu::attention_backward(dqkv2.data(), dout_elem.data(), att2.data(), qkv_elem.data(), B, T, C, NH, dropout);
    return outputs(att2, out2, dqkv2);
  });
}

TEMPLATE_TEST_CASE("emulated tiled attention loops over more heads than grid.z", "[emu][attention]", float, bf16) {
  using Elem = TestType;
  // 6 heads over a grid.z of 4 (the launcher's 65535, scaled down): blocks 0 and 1 take two heads.
  const int B = 3, T = 35, C = 12, NH = 2, max_grid_z = 4;
  const DropoutParams dropout{0.1f, 99, 3};
  const size_t qkv_n = size_t(B) * T * 3 * C, out_n = size_t(B) * T * C, att_n = size_t(B) * NH * T * T;
  const auto qkv = test::round_to_bf16(test::random_vector(qkv_n, 411, -1.5f, 1.5f));
  const auto dout = test::round_to_bf16(test::random_vector(out_n, 412));
  std::vector<float> out(out_n), att(att_n), dqkv(qkv_n);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
  cpu::attention_backward(dqkv.data(), dout.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
  const auto qkv_elem = test::as<Elem>(qkv), dout_elem = test::as<Elem>(dout);
  std::vector<std::vector<Elem>> outs, dqkvs;
  std::vector<std::vector<float>> atts;
  for (const int grid_z : {max_grid_z, emu::kAttentionMaxGridZ}) {
    INFO("grid.z at most " << grid_z);
    auto got_out = test::poisoned<Elem>(out_n);
    auto got_att = test::poisoned<float>(att_n);
    auto got_dqkv = test::poisoned<Elem>(qkv_n);
    emu::attention_forward(got_out.data(), got_att.data(), qkv_elem.data(), B, T, C, NH, dropout, grid_z);
    emu::attention_backward(got_dqkv.data(), dout_elem.data(), got_att.data(), qkv_elem.data(), B, T, C, NH, dropout,
                            grid_z);
    test::expect_matches(got_att, att, "attention probabilities (fp32)", 1e-5);
    expect_output<Elem>(test::widened(got_out), out, 1e-5, 1e-5, "attention out");
    expect_output<Elem>(test::widened(got_dqkv), dqkv, 2e-5, 1e-4, "attention dqkv");
    outs.push_back(got_out);
    atts.push_back(got_att);
    dqkvs.push_back(got_dqkv);
  }
  CHECK(test::bit_equal(atts[0], atts[1]));
  CHECK(test::bit_equal(test::widened(outs[0]), test::widened(outs[1])));
  CHECK(test::bit_equal(test::widened(dqkvs[0]), test::widened(dqkvs[1])));
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
  const auto prompt_elem = test::as<Elem>(prompt_qkv);
  auto got_k = test::as<Elem>(std::vector<float>(cache_n, 0.0f));
  auto got_v = got_k;
  emu::kv_cache_store(got_k.data(), got_v.data(), prompt_elem.data(), B, prompt, maxT, C);
  // A copy of values already on the bf16 grid: exact.
  CHECK(test::bit_equal(test::widened(got_k), kcache));
  CHECK(test::bit_equal(test::widened(got_v), vcache));

  bool used_fallback = false, used_shared = false;
  for (int pos = prompt; pos < std::min(maxT, prompt + 2); ++pos) {
    INFO("pos " << pos);
    const auto qkv = test::round_to_bf16(test::random_vector(size_t(B) * 3 * C, 422 + pos));
    std::vector<float> out(size_t(B) * C);
    cpu::attention_decode(out.data(), kcache.data(), vcache.data(), qkv.data(), B, pos, maxT, C, NH);
    const auto qkv_elem = test::as<Elem>(qkv);
    auto got_out = test::poisoned<Elem>(out.size());
    const auto k_before = got_k, v_before = got_v;
    emu::attention_decode(got_out.data(), got_k.data(), got_v.data(), qkv_elem.data(), B, pos, maxT, C, NH);
    (emu::attention_decode_scores_fit_shared(pos, C / NH) ? used_shared : used_fallback) = true;
    expect_output<Elem>(test::widened(got_out), out, 1e-5, 1e-5, "decode out");
    CHECK(test::bit_equal(test::widened(got_k), kcache));
    CHECK(test::bit_equal(test::widened(got_v), vcache));

    test::check_every_schedule(test::widened(got_out), [&] {
      auto k2 = k_before, v2 = v_before;
      auto out2 = test::poisoned<Elem>(out.size());
      emu::attention_decode(out2.data(), k2.data(), v2.data(), qkv_elem.data(), B, pos, maxT, C, NH);
      return test::widened(out2);
    });
  }
  CHECK(used_shared != used_fallback);
  if (maxT == 12300) CHECK(used_fallback);
}
