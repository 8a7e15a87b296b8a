// Inputs of the classifier tests, shared by the CUDA test (tests/cuda/test_bf16_classifier.cpp)
// and the emulator's (tests/emu/test_emu_crossentropy.cpp), which check the same kernels on the
// same data: logits on the bf16 grid (so float and bf16 kernels and the CPU all see the same
// values), rows 2, 6, 10, ... shifted by +120 and rows 3, 7, ... by -120 (exp of the logits alone
// would overflow or underflow: only a softmax that subtracts the row's maximum gets them right),
// padded columns that must never be part of the softmax: NaN, +inf, 2^14 (above every real
// logit: in a row's max it would show, where NaN is what fmaxf skips) and -inf in turn; targets
// with row 1 ignored when B*T > 2. Host-only.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "common/test_common.hpp"
#include "cpu/crossentropy.hpp"
#include "cuda/bf16_host_util.hpp"

namespace gpt2cc::test {

struct ClassifierShape {
  int B, T, V, Vp;
};

struct ClassifierInputs {
  std::vector<float> logits;  // (B*T, Vp)
  std::vector<int> targets;   // (B*T)
  float dloss;                // 1 / (B*T)
};

inline ClassifierInputs classifier_inputs(const ClassifierShape& s, uint64_t seed) {
  const size_t rows = size_t(s.B) * s.T;
  ClassifierInputs in{round_to_bf16(random_vector(rows * s.Vp, seed, -4.0f, 4.0f)), random_tokens(rows, seed + 1, s.V),
                      1.0f / static_cast<float>(rows)};
  for (size_t r = 2; r < rows; ++r) {
    const float shift = r % 4 == 2 ? 120.0f : r % 4 == 3 ? -120.0f : 0.0f;
    for (int j = 0; j < s.V; ++j) in.logits[r * s.Vp + j] = round_to_bf16(in.logits[r * s.Vp + j] + shift);
  }
  const float junk[] = {kPoison, INFINITY, 16384.0f, -INFINITY};
  for (size_t r = 0; r < rows; ++r) {
    for (int j = s.V; j < s.Vp; ++j) in.logits[r * s.Vp + j] = junk[(r + j) % 4];
  }
  if (rows > 2) in.targets[1] = cpu::kIgnoreIndex;
  return in;
}

}  // namespace gpt2cc::test
