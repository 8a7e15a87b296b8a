// Reference and checks shared by the flash attention tests: the CUDA one
// (test_bf16_flash_attention.cpp) and the CPU emulator's (tests/emu/test_emu_flash.cpp), which run
// the same kernels and must be held to the same metrics. Host only (no CUDA runtime).
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

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

// Part `part` (0 = q, 1 = k, 2 = v) of a (B,T,3C) tensor as a (B,T,C) vector.
inline std::vector<float> qkv_part(const std::vector<float>& x, int BT, int C, int part) {
  std::vector<float> out(static_cast<size_t>(BT) * C);
  for (int i = 0; i < BT; ++i)
    std::copy_n(&x[static_cast<size_t>(i) * 3 * C + part * C], C, &out[static_cast<size_t>(i) * C]);
  return out;
}

// True when every byte of host[from..] still holds the 0xFF poison (nothing was stored there).
template <class T>
bool still_poisoned(const std::vector<T>& host, size_t from) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(host.data());
  return std::all_of(bytes + from * sizeof(T), bytes + host.size() * sizeof(T),
                     [](unsigned char b) { return b == 0xFF; });
}

inline bool bits_equal(const std::vector<__nv_bfloat16>& a, const std::vector<__nv_bfloat16>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
}

}  // namespace gpt2cc::test
