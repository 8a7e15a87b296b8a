// Reference and checks shared by the flash attention tests: the CUDA one
// (test_bf16_flash_attention.cpp) and the CPU emulator's (tests/emu/test_emu_flash.cpp), which run
// the same kernels and must be held to the same metrics. Host only (no CUDA runtime).
#pragma once

#include "common/catch.hpp"
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "common/sdpa_fixture.hpp"
#include "cpu/attention.hpp"
#include "cuda/bf16_host_util.hpp"

namespace gpt2cc::test {

// lse[b,h,t] = log sum_{t2 <= t} exp(q_t . k_t2 / sqrt(HS)), in double, from the same (rounded) qkv.
inline std::vector<double> reference_lse(const std::vector<float>& qkv, int B, int T, int C, int NH) {
  const int HS = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  std::vector<double> lse(static_cast<size_t>(B) * NH * T);
  std::vector<double> s(T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const float* q = &qkv[(static_cast<size_t>(b) * T + t) * 3 * C + h * HS];
        double m = -INFINITY;
        for (int t2 = 0; t2 <= t; ++t2) {
          const float* k = &qkv[(static_cast<size_t>(b) * T + t2) * 3 * C + C + h * HS];
          double dot = 0.0;
          for (int d = 0; d < HS; ++d) dot += static_cast<double>(q[d]) * k[d];
          s[t2] = dot * scale;
          m = std::max(m, s[t2]);
        }
        double sum = 0.0;
        for (int t2 = 0; t2 <= t; ++t2) sum += std::exp(s[t2] - m);
        lse[(static_cast<size_t>(b) * NH + h) * T + t] = m + std::log(sum);
      }
    }
  }
  return lse;
}

// True when every byte of host[from..] still holds the 0xFF poison (nothing was stored there).
template <class T>
bool still_poisoned(const std::vector<T>& host, size_t from) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(host.data());
  return std::all_of(bytes + from * sizeof(T), bytes + host.size() * sizeof(T),
                     [](unsigned char b) { return b == 0xFF; });
}

struct FlashShape {
  int B, T, NH, HS;
  float range = 1.5f;  // q, k ~ U(-range, range)
  int C() const { return NH * HS; }
  size_t qkv_n() const { return static_cast<size_t>(B) * T * 3 * C(); }
  size_t out_n() const { return static_cast<size_t>(B) * T * C(); }
  size_t stat_n() const { return static_cast<size_t>(B) * NH * T; }
};

// The inputs of one shape (bf16-rounded, so both sides see the same values) and what the CPU
// reference makes of them. Scores of O(1) at range 1.5 (q, k ~ U(-1.5, 1.5): std ~0.75 after the
// 1/sqrt(HS) scale), so the softmax is neither uniform nor one-hot; range 4 gives std ~5.3
// (peaked rows, maxima up to ~20).
struct FlashReference {
  std::vector<float> qkv, dout, out, dqkv;
  std::vector<double> lse;
};
inline FlashReference flash_reference(const FlashShape& s) {
  const int C = s.C();
  FlashReference r;
  r.qkv = round_to_bf16(random_vector(s.qkv_n(), 800 + s.T, -s.range, s.range));
  r.dout = round_to_bf16(random_vector(s.out_n(), 900 + s.T));
  r.out.resize(s.out_n());
  r.dqkv.resize(s.qkv_n());
  std::vector<float> att(s.stat_n() * s.T);
  cpu::attention_forward(r.out.data(), att.data(), r.qkv.data(), s.B, s.T, C, s.NH, DropoutParams{});
  cpu::attention_backward(r.dqkv.data(), r.dout.data(), att.data(), r.qkv.data(), s.B, s.T, C, s.NH, DropoutParams{});
  r.lse = reference_lse(r.qkv, s.B, s.T, C, s.NH);
  return r;
}

// The forward's results, each with a guard band past its end that must still hold the 0xFF
// poison: out within relative L2 1e-2 of the reference; the log-sum-exp (fp32 throughout, bf16
// only in the exact inputs) within 1e-4.
inline void check_flash_forward(const std::vector<__nv_bfloat16>& out, const std::vector<float>& lse,
                                const FlashShape& s, const FlashReference& ref, const std::string& what) {
  CHECK(still_poisoned(out, s.out_n()));
  CHECK(still_poisoned(lse, s.stat_n()));
  const std::vector<double> lse_got(lse.begin(), lse.begin() + static_cast<std::ptrdiff_t>(s.stat_n()));
  expect_close(lse_got.data(), ref.lse.data(), s.stat_n(), 1e-4, 1e-4, what + " lse");
  const std::vector<__nv_bfloat16> rows(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(s.out_n()));
  expect_rel_l2(from_bf16(rows), ref.out, 1e-2, what + " out");
}

// The backward's dqkv (with its poisoned guard band): dq, dk, dv each within relative L2 1e-2.
inline void check_flash_backward(const std::vector<__nv_bfloat16>& dqkv, const FlashShape& s,
                                 const FlashReference& ref, const std::string& what) {
  CHECK(still_poisoned(dqkv, s.qkv_n()));
  const std::vector<__nv_bfloat16> rows(dqkv.begin(), dqkv.begin() + static_cast<std::ptrdiff_t>(s.qkv_n()));
  const auto got = from_bf16(rows);
  const char* parts[3] = {" dq", " dk", " dv"};
  for (int part = 0; part < 3; ++part)
    expect_rel_l2(qkv_part(got, s.B * s.T, s.C(), part), qkv_part(ref.dqkv, s.B * s.T, s.C(), part), 1e-2,
                  what + parts[part]);
}

// A case of PyTorch's SDPA fixture (common/sdpa_fixture.hpp) as a shape and a reference: its
// bf16 inputs, SDPA's float64 out and dqkv, and the log-sum-exp in double as flash_reference's.
inline FlashShape sdpa_flash_shape(const SdpaCase& c) {
  return FlashShape{c.B, c.T, c.NH, c.HS, static_cast<float>(c.range)};
}
inline FlashReference sdpa_flash_reference(const SdpaCase& c) {
  return FlashReference{c.qkv, c.dout, c.out, c.dqkv, reference_lse(c.qkv, c.B, c.T, c.C(), c.NH)};
}

}  // namespace gpt2cc::test
