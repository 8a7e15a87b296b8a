// cpu::attention_forward / attention_backward / attention_decode / kv_cache_store: a hand case,
// the saved probabilities, finite-difference gradients of qkv with and without dropout, the
// documented dropout mask index, and KV-cache decoding against the full forward. The blocked
// functions the CPU backend runs (attention_forward_blocked, ...): against the plain loops on
// shapes that take every tile case (and their saved log-sum-exp against one in double), their
// own finite-difference gradients, the same bits for any thread count, and their decode against
// their forward. Both against PyTorch's scaled_dot_product_attention (tests/make_sdpa_fixture.py),
// and on scores far beyond exp's range.
#include "common/catch.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>

#include "common/sdpa_fixture.hpp"
#include "core/check.hpp"
#include "cpu/attention.hpp"
#include "tests/cpu/gradcheck.hpp"

using namespace gpt2cc;
using test::expect_close;

TEST_CASE("attention by hand", "[cpu][attention]") {
  // B = 1, T = 2, C = HS = 2, NH = 1, scale = 1/sqrt(2). Per token (q | k | v):
  //   t=0: q0 = (1,0), k0 = (1,0), v0 = (1,2)
  //   t=1: q1 = (0, sqrt(2) ln 3), k1 = (0,1), v1 = (5,6)
  // t=0 sees only itself: att = (1), out0 = v0 = (1, 2).
  // t=1: s = (q1.k0, q1.k1)/sqrt(2) = (0, ln 3) -> att = (1, 3)/4 = (0.25, 0.75);
  //   out1 = 0.25 (1,2) + 0.75 (5,6) = (4, 5).
  const float a = std::sqrt(2.0f) * std::log(3.0f);
  std::vector<float> qkv = {1, 0, 1, 0, 1, 2, 0, a, 0, 1, 5, 6};
  std::vector<float> out(4), att(4);
  test::poison(out.data(), 4);
  test::poison(att.data(), 4);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), 1, 2, 2, 1, DropoutParams{});
  expect_close(out, {1, 2, 4, 5}, 1e-6, 1e-6, "out");
  expect_close(att, {1, 0, 0.25f, 0.75f}, 1e-7, 1e-6, "att (saved probabilities)");

  // dout = (0,0) at t=0, (1,0) at t=1.
  //   dv0 = att[1][0] dout1 = (0.25, 0), dv1 = (0.75, 0)
  //   datt = (dout1.v0, dout1.v1) = (1, 5); sum_j att_j datt_j = 0.25 + 3.75 = 4;
  //   ds = att (datt - 4) = (-0.75, 0.75); scaled by 1/sqrt(2):
  //   dq1 = (-0.75 k0 + 0.75 k1)/sqrt(2) = (-0.75, 0.75)/sqrt(2)
  //   dk0 = -0.75 q1/sqrt(2) = (0, -0.75 ln 3), dk1 = (0, 0.75 ln 3); dq0 = 0 (a lone softmax).
  const float r = 1.0f / std::sqrt(2.0f), l = 0.75f * std::log(3.0f);
  std::vector<float> dout = {0, 0, 1, 0}, dqkv(12);
  test::poison(dqkv.data(), 12);
  cpu::attention_backward(dqkv.data(), dout.data(), att.data(), qkv.data(), 1, 2, 2, 1, DropoutParams{});
  expect_close(dqkv, {0, 0, 0, -l, 0.25f, 0, -0.75f * r, 0.75f * r, 0, l, 0.75f, 0}, 1e-6, 1e-5, "dqkv");
}

TEST_CASE("attention gradient matches finite differences, with and without dropout", "[cpu][attention]") {
  // HS = 3 (odd), B odd, T = 1 and T = 4; dropout p = 0.3 keeps the function smooth for a fixed
  // mask, so the same central differences apply.
  for (float p : {0.0f, 0.3f}) {
    for (auto [B, T, C, NH] : {std::tuple{3, 4, 6, 2}, std::tuple{1, 1, 6, 2}}) {
      CAPTURE(p, B, T, C, NH);
      const DropoutParams dropout{p, 5, 3};
      const size_t N = static_cast<size_t>(B) * T * 3 * C;
      auto qkv = test::random_vector(N, 100);
      auto w = test::random_vector(static_cast<size_t>(B) * T * C, 101);
      std::vector<float> out(w.size()), att(static_cast<size_t>(B) * NH * T * T);
      auto objective = [&] {
        test::poison(out.data(), out.size());
        test::poison(att.data(), att.size());
        cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
        return test::weighted_sum(out.data(), w);
      };
      objective();
      std::vector<float> dqkv(N);
      test::poison(dqkv.data(), N);
      cpu::attention_backward(dqkv.data(), w.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
      auto num = test::numeric_gradient(qkv, objective);
      test::check_gradient(dqkv, num, "dqkv");
      // Written, not accumulated.
      objective();
      auto first = dqkv;
      cpu::attention_backward(dqkv.data(), w.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
      expect_close(dqkv, first, 0, 0, "dqkv after a second backward call");
    }
  }
}

TEST_CASE("attention saves causal probabilities and drops them at the documented index", "[cpu][attention]") {
  const int B = 2, T = 5, C = 8, NH = 2, HS = C / NH;
  const DropoutParams dropout{0.25f, 77, 9};
  auto qkv = test::random_vector(static_cast<size_t>(B) * T * 3 * C, 110, -2.0f, 2.0f);
  std::vector<float> out(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  test::poison(att.data(), att.size());
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
  // Rebuild out from att, v and the mask keep(((b*NH+h)*T + t)*T + t2) defined in attention.hpp.
  std::vector<float> expected(out.size(), 0.0f);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const size_t row = ((static_cast<size_t>(b) * NH + h) * T + t) * T;
        double sum = 0;
        for (int t2 = 0; t2 < T; ++t2) {
          if (t2 > t) REQUIRE(att[row + t2] == 0.0f);  // causal
          sum += att[row + t2];
          const float a = dropout.keep(row + t2) ? att[row + t2] * dropout.scale() : 0.0f;
          for (int i = 0; i < HS; ++i) {
            expected[(static_cast<size_t>(b) * T + t) * C + h * HS + i] +=
                a * qkv[(static_cast<size_t>(b) * T + t2) * 3 * C + 2 * C + h * HS + i];
          }
        }
        REQUIRE(sum == Approx(1.0).epsilon(1e-6));
      }
    }
  }
  expect_close(out, expected, 1e-6, 1e-5, "out rebuilt from att and the mask");
}

namespace {
// Prefills the caches with the first `prompt` positions of qkv (B, T, 3C), then decodes positions
// prompt .. T-1 one at a time with `decode` (cpu::attention_decode's signature) and requires each
// output to be that row of `full`, the forward's output; then a position past the cache throws.
template <class Decode>
void decode_rows_match(Decode&& decode, std::vector<float>& kcache, std::vector<float>& vcache,
                       const std::vector<float>& qkv, const std::vector<float>& full, int B, int T, int C, int NH,
                       int maxT, int prompt, double atol) {
  const size_t C3 = 3 * static_cast<size_t>(C);
  std::vector<float> prefix(static_cast<size_t>(B) * prompt * C3);
  for (int b = 0; b < B; ++b) {
    for (size_t i = 0; i < prompt * C3; ++i) prefix[b * prompt * C3 + i] = qkv[b * T * C3 + i];
  }
  cpu::kv_cache_store(kcache.data(), vcache.data(), prefix.data(), B, prompt, maxT, C);
  std::vector<float> token(B * C3), out(static_cast<size_t>(B) * C), expected(out.size());
  for (int pos = prompt; pos < T; ++pos) {
    CAPTURE(pos);
    for (int b = 0; b < B; ++b) {
      for (size_t i = 0; i < C3; ++i) token[b * C3 + i] = qkv[(b * T + pos) * C3 + i];
      for (int c = 0; c < C; ++c) expected[b * C + c] = full[(static_cast<size_t>(b) * T + pos) * C + c];
    }
    test::poison(out.data(), out.size());
    decode(out.data(), kcache.data(), vcache.data(), token.data(), B, pos, maxT, C, NH);
    expect_close(out, expected, atol, 1e-5, "decode output vs full forward row");
  }
  CHECK_THROWS_AS(decode(out.data(), kcache.data(), vcache.data(), token.data(), B, maxT, maxT, C, NH),
                  gpt2cc::Error);
}
}  // namespace

TEST_CASE("KV-cache decode equals the full forward, row by row", "[cpu][attention]") {
  const int B = 3, T = 6, C = 12, NH = 3, maxT = 8, prompt = 2;
  const size_t C3 = 3 * static_cast<size_t>(C);
  auto qkv = test::random_vector(static_cast<size_t>(B) * T * C3, 120, -2.0f, 2.0f);
  std::vector<float> full(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  cpu::attention_forward(full.data(), att.data(), qkv.data(), B, T, C, NH, DropoutParams{});

  // Prefill the first `prompt` positions from a (B, prompt, 3C) slice, then decode the rest.
  std::vector<float> kcache(static_cast<size_t>(B) * maxT * C), vcache(kcache.size());
  test::poison(kcache.data(), kcache.size());
  test::poison(vcache.data(), vcache.size());
  decode_rows_match(cpu::attention_decode, kcache, vcache, qkv, full, B, T, C, NH, maxT, prompt, 1e-6);
  // The caches now hold k and v of every position.
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      for (int c = 0; c < C; ++c) {
        REQUIRE(kcache[(static_cast<size_t>(b) * maxT + t) * C + c] == qkv[(b * T + t) * C3 + C + c]);
        REQUIRE(vcache[(static_cast<size_t>(b) * maxT + t) * C + c] == qkv[(b * T + t) * C3 + 2 * C + c]);
      }
    }
  }
}

namespace {
// Shapes for the blocked attention (64 x 64 tiles): one token; one whole tile at HS = 64; three
// tiles with a ragged last one and B > 1; HS = 3 (odd: the products' scalar tails) over two
// tiles; HS = 128 over exactly two tiles.
const std::tuple<int, int, int, int> kBlockedShapes[] = {
    {2, 1, 8, 2}, {1, 64, 64, 1}, {2, 150, 96, 3}, {1, 70, 9, 3}, {1, 128, 256, 2}};

// saved: what the forward keeps for the backward, the reference's probabilities (B*NH*T*T) or
// the blocked functions' log-sum-exp (the first B*NH*T floats; the rest stays poisoned).
struct AttentionRun {
  std::vector<float> out, saved, dqkv;
};

// The forward and the backward of one implementation, outputs poisoned first.
template <class Forward, class Backward>
AttentionRun run_attention(Forward&& forward, Backward&& backward, const std::vector<float>& qkv,
                           const std::vector<float>& dout, int B, int T, int C, int NH) {
  AttentionRun r{std::vector<float>(dout.size()), std::vector<float>(static_cast<size_t>(B) * NH * T * T),
                 std::vector<float>(qkv.size())};
  test::poison(r.out.data(), r.out.size());
  test::poison(r.saved.data(), r.saved.size());
  test::poison(r.dqkv.data(), r.dqkv.size());
  forward(r);
  backward(r);
  return r;
}

// The blocked functions' forward and backward (what the CPU backend runs) on qkv and dout.
AttentionRun run_blocked(const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int C, int NH,
                         const DropoutParams& dropout) {
  return run_attention(
      [&](AttentionRun& r) {
        cpu::attention_forward_blocked(r.out.data(), r.saved.data(), qkv.data(), B, T, C, NH, dropout);
      },
      [&](AttentionRun& r) {
        cpu::attention_backward_blocked(r.dqkv.data(), dout.data(), r.saved.data(), qkv.data(), r.out.data(), B, T,
                                        C, NH, dropout);
      },
      qkv, dout, B, T, C, NH);
}

// Row (b, h, t)'s scores q_t . k_t2 / sqrt(HS), t2 <= t, in double.
std::vector<double> scores_in_double(const std::vector<float>& qkv, int T, int C, int NH, int b, int h, int t) {
  const int HS = C / NH;
  const size_t C3 = 3 * static_cast<size_t>(C);
  std::vector<double> s(t + 1);
  for (int t2 = 0; t2 <= t; ++t2) {
    double dot = 0.0;
    for (int i = 0; i < HS; ++i) {
      dot += double(qkv[(b * T + t) * C3 + h * HS + i]) * qkv[(b * T + t2) * C3 + C + h * HS + i];
    }
    s[t2] = dot / std::sqrt(double(HS));
  }
  return s;
}

// Row (b, h, t)'s log sum_t2<=t exp(q_t . k_t2 / sqrt(HS)), in double: what the blocked forward
// saves.
std::vector<double> log_sum_exp(const std::vector<float>& qkv, int B, int T, int C, int NH) {
  std::vector<double> lse(static_cast<size_t>(B) * NH * T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const std::vector<double> s = scores_in_double(qkv, T, C, NH, b, h, t);
        const double max = *std::max_element(s.begin(), s.end());
        double sum = 0.0;
        for (double x : s) sum += std::exp(x - max);
        lse[(static_cast<size_t>(b) * NH + h) * T + t] = max + std::log(sum);
      }
    }
  }
  return lse;
}
}  // namespace

TEST_CASE("blocked attention equals the plain loops", "[cpu][attention]") {
  for (float p : {0.0f, 0.2f}) {
    for (auto [B, T, C, NH] : kBlockedShapes) {
      CAPTURE(p, B, T, C, NH);
      const DropoutParams dropout{p, 11, 4};
      auto qkv = test::random_vector(static_cast<size_t>(B) * T * 3 * C, 130, -2.0f, 2.0f);
      auto dout = test::random_vector(static_cast<size_t>(B) * T * C, 131);
      auto reference = run_attention(
          [&](AttentionRun& r) {
            cpu::attention_forward(r.out.data(), r.saved.data(), qkv.data(), B, T, C, NH, dropout);
          },
          [&](AttentionRun& r) {
            cpu::attention_backward(r.dqkv.data(), dout.data(), r.saved.data(), qkv.data(), B, T, C, NH, dropout);
          },
          qkv, dout, B, T, C, NH);
      auto blocked_forward = [&](AttentionRun& r) {
        cpu::attention_forward_blocked(r.out.data(), r.saved.data(), qkv.data(), B, T, C, NH, dropout);
      };
      auto blocked_backward = [&](AttentionRun& r) {
        cpu::attention_backward_blocked(r.dqkv.data(), dout.data(), r.saved.data(), qkv.data(), r.out.data(), B, T, C,
                                        NH, dropout);
      };
      auto blocked = run_attention(blocked_forward, blocked_backward, qkv, dout, B, T, C, NH);
      // The saved log-sum-exp of every row, and every output element.
      const std::vector<double> lse = log_sum_exp(qkv, B, T, C, NH);
      const std::vector<double> saved(blocked.saved.begin(), blocked.saved.begin() + lse.size());
      expect_close(saved.data(), lse.data(), lse.size(), 1e-5, 1e-5, "saved log-sum-exp");
      expect_close(blocked.out, reference.out, 1e-5, 1e-5, "out");
      expect_close(blocked.dqkv, reference.dqkv, 1e-5, 1e-4, "dqkv");
      CHECK(test::rel_error(blocked.dqkv, reference.dqkv) < 1e-5);
      // Written, not accumulated: a second backward gives the same bits.
      auto first = blocked.dqkv;
      blocked_backward(blocked);
      expect_close(blocked.dqkv, first, 0, 0, "dqkv after a second backward call");
    }
  }
}

// Scores of several hundred (q and k scaled by 12, HS 64): exp of them overflows float and exp of
// their negatives underflows, so each implementation must subtract the row's maximum (without
// it, the plain, blocked and decode loops passed every other test here, whose scores are O(1)).
// out against a softmax in double; the blocked forward's log-sum-exp against double; the
// backward finite and the same from both; decode at the last position equal to the forward.
TEST_CASE("attention keeps scores far beyond exp's range finite", "[cpu][attention]") {
  const int B = 2, T = 70, C = 128, NH = 2, HS = C / NH;
  const size_t C3 = 3 * static_cast<size_t>(C);
  auto qkv = test::random_vector(static_cast<size_t>(B) * T * C3, 140, -1.5f, 1.5f);
  for (size_t r = 0; r < static_cast<size_t>(B) * T; ++r)
    for (int c = 0; c < 2 * C; ++c) qkv[r * C3 + c] *= 12.0f;
  const auto dout = test::random_vector(static_cast<size_t>(B) * T * C, 141);
  const std::vector<double> lse = log_sum_exp(qkv, B, T, C, NH);
  REQUIRE(*std::max_element(lse.begin(), lse.end()) > 200.0);  // exp(200) is no float
  std::vector<float> expected(dout.size());
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const std::vector<double> s = scores_in_double(qkv, T, C, NH, b, h, t);
        const double row_lse = lse[(static_cast<size_t>(b) * NH + h) * T + t];
        for (int i = 0; i < HS; ++i) {
          double acc = 0.0;
          for (int t2 = 0; t2 <= t; ++t2)
            acc += std::exp(s[t2] - row_lse) * qkv[(b * T + t2) * C3 + 2 * C + h * HS + i];
          expected[(static_cast<size_t>(b) * T + t) * C + h * HS + i] = static_cast<float>(acc);
        }
      }
  const DropoutParams none{};
  const auto plain = run_attention(
      [&](AttentionRun& r) { cpu::attention_forward(r.out.data(), r.saved.data(), qkv.data(), B, T, C, NH, none); },
      [&](AttentionRun& r) {
        cpu::attention_backward(r.dqkv.data(), dout.data(), r.saved.data(), qkv.data(), B, T, C, NH, none);
      },
      qkv, dout, B, T, C, NH);
  const auto blocked = run_blocked(qkv, dout, B, T, C, NH, none);
  expect_close(plain.out, expected, 1e-4, 1e-4, "plain out");
  expect_close(blocked.out, expected, 1e-4, 1e-4, "blocked out");
  const std::vector<double> saved(blocked.saved.begin(), blocked.saved.begin() + lse.size());
  expect_close(saved.data(), lse.data(), lse.size(), 1e-5, 1e-5, "blocked log-sum-exp");
  CHECK(std::all_of(plain.dqkv.begin(), plain.dqkv.end(), [](float x) { return std::isfinite(x); }));
  expect_close(blocked.dqkv, plain.dqkv, 1e-3, 1e-3, "blocked dqkv vs plain");
  // Decode of the last position from a cache of the rows before it: the forward's last row.
  std::vector<float> kcache(static_cast<size_t>(B) * T * C), vcache(kcache.size()), out(static_cast<size_t>(B) * C);
  std::vector<float> prefix, last;
  const auto row = [&](int r) { return qkv.begin() + std::ptrdiff_t(r) * std::ptrdiff_t(C3); };
  for (int b = 0; b < B; ++b) {
    prefix.insert(prefix.end(), row(b * T), row(b * T + T - 1));
    last.insert(last.end(), row(b * T + T - 1), row(b * T + T));
  }
  cpu::kv_cache_store(kcache.data(), vcache.data(), prefix.data(), B, T - 1, T, C);
  std::vector<float> expected_last;
  for (int b = 0; b < B; ++b)
    expected_last.insert(expected_last.end(), expected.begin() + std::ptrdiff_t(b * T + T - 1) * C,
                         expected.begin() + std::ptrdiff_t(b * T + T) * C);
  cpu::attention_decode(out.data(), kcache.data(), vcache.data(), last.data(), B, T - 1, T, C, NH);
  expect_close(out, expected_last, 1e-4, 1e-4, "decode out");
  cpu::attention_decode_vectorized(out.data(), kcache.data(), vcache.data(), last.data(), B, T - 1, T, C, NH);
  expect_close(out, expected_last, 1e-4, 1e-4, "vectorised decode out");
}

// PyTorch's F.scaled_dot_product_attention(is_causal=True) in float64 on the fixture's inputs
// (tests/make_sdpa_fixture.py): both implementations' out and dqkv element by element, and
// their relative L2 error.
TEST_CASE("attention matches PyTorch scaled_dot_product_attention", "[cpu][attention][pytorch]") {
  for (const test::SdpaCase& s : test::load_sdpa_cases()) {
    const int B = s.B, T = s.T, C = s.C(), NH = s.NH;
    CAPTURE(s.name, B, T, NH, s.HS, s.range);
    const auto plain = run_attention(
        [&](AttentionRun& r) { cpu::attention_forward(r.out.data(), r.saved.data(), s.qkv.data(), B, T, C, NH, {}); },
        [&](AttentionRun& r) {
          cpu::attention_backward(r.dqkv.data(), s.dout.data(), r.saved.data(), s.qkv.data(), B, T, C, NH, {});
        },
        s.qkv, s.dout, B, T, C, NH);
    const auto blocked = run_attention(
        [&](AttentionRun& r) {
          cpu::attention_forward_blocked(r.out.data(), r.saved.data(), s.qkv.data(), B, T, C, NH, {});
        },
        [&](AttentionRun& r) {
          cpu::attention_backward_blocked(r.dqkv.data(), s.dout.data(), r.saved.data(), s.qkv.data(), r.out.data(),
                                          B, T, C, NH, {});
        },
        s.qkv, s.dout, B, T, C, NH);
    for (const AttentionRun* r : {&plain, &blocked}) {
      const std::string which = r == &plain ? "plain " : "blocked ";
      // atol 1e-5: a sum of terms up to |v| = 4 that cancel to ~0.07 keeps their fp32 error
      // (the peaked case: 2.5e-6). Relative L2 seen: 1e-7 to 5e-7.
      expect_close(r->out, s.out, 1e-5, 1e-5, which + "out");
      expect_close(r->dqkv, s.dqkv, 1e-5, 1e-4, which + "dqkv");
      CHECK(test::rel_error(r->out, s.out) < 2e-6);
      CHECK(test::rel_error(r->dqkv, s.dqkv) < 2e-6);
    }
  }
}

TEST_CASE("blocked attention gradient matches finite differences", "[cpu][attention]") {
  // Two tiles of queries (T = 70), HS = 3; dropout fixed per mask, as in the reference's check.
  for (float p : {0.0f, 0.3f}) {
    const int B = 1, T = 70, C = 6, NH = 2;
    CAPTURE(p);
    const DropoutParams dropout{p, 5, 3};
    const size_t N = static_cast<size_t>(B) * T * 3 * C;
    auto qkv = test::random_vector(N, 140);
    auto w = test::random_vector(static_cast<size_t>(B) * T * C, 141);
    std::vector<float> out(w.size()), lse(static_cast<size_t>(B) * NH * T);
    auto objective = [&] {
      cpu::attention_forward_blocked(out.data(), lse.data(), qkv.data(), B, T, C, NH, dropout);
      return test::weighted_sum(out.data(), w);
    };
    objective();
    std::vector<float> dqkv(N);
    test::poison(dqkv.data(), N);
    cpu::attention_backward_blocked(dqkv.data(), w.data(), lse.data(), qkv.data(), out.data(), B, T, C, NH, dropout);
    auto num = test::numeric_gradient(qkv, objective);
    test::check_gradient(dqkv, num, "dqkv");
  }
}

TEST_CASE("blocked attention gives the same bits for any thread count", "[cpu][attention]") {
  // Every tile is one thread's task, summed in a fixed order. The backward's two ways of sharing
  // out the work meet here: 6 heads are one task each on 1 and 2 threads (two heads per thread
  // or more), and split into key-tile and query-tile tasks on 5.
  const int B = 2, T = 150, C = 96, NH = 3;
  const DropoutParams dropout{0.1f, 21, 2};
  auto qkv = test::random_vector(static_cast<size_t>(B) * T * 3 * C, 150, -2.0f, 2.0f);
  auto dout = test::random_vector(static_cast<size_t>(B) * T * C, 151);
  auto run = [&] { return run_blocked(qkv, dout, B, T, C, NH, dropout); };
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  auto one = run();
  for (int n : {2, 5}) {
    CAPTURE(n);
    omp_set_num_threads(n);
    auto many = run();
    expect_close(many.out, one.out, 0, 0, "out");
    const size_t rows = static_cast<size_t>(B) * NH * T;
    expect_close(many.saved.data(), one.saved.data(), rows, 0, 0, "saved log-sum-exp");
    expect_close(many.dqkv, one.dqkv, 0, 0, "dqkv");
  }
  omp_set_num_threads(threads);
}

TEST_CASE("vectorised KV-cache decode equals the blocked forward, row by row", "[cpu][attention]") {
  // HS = 64 (whole vectors) and HS = 3 (scalar tails); positions past one tile.
  for (auto [C, NH] : {std::tuple{128, 2}, std::tuple{9, 3}}) {
    const int B = 2, T = 70, maxT = 80, prompt = 60;
    CAPTURE(C, NH);
    const size_t C3 = 3 * static_cast<size_t>(C);
    auto qkv = test::random_vector(static_cast<size_t>(B) * T * C3, 160, -2.0f, 2.0f);
    std::vector<float> full(static_cast<size_t>(B) * T * C), lse(static_cast<size_t>(B) * NH * T);
    cpu::attention_forward_blocked(full.data(), lse.data(), qkv.data(), B, T, C, NH, DropoutParams{});
    std::vector<float> kcache(static_cast<size_t>(B) * maxT * C), vcache(kcache.size());
    decode_rows_match(cpu::attention_decode_vectorized, kcache, vcache, qkv, full, B, T, C, NH, maxT, prompt, 1e-5);
  }
}
