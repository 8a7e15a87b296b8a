// The LayerNorm backward's three gradients, and what the fp32 fused design is held to against the
// CPU and the two-pass design. Shared by tests/cuda/test_cuda_layernorm.cpp (fp32; its bf16 twin,
// test_bf16_layernorm.cpp, uses Grads too) and the emulator's tests/emu/test_emu_layernorm.cpp,
// which check the same kernels.
#pragma once

#include <vector>

#include "cuda_test_util.hpp"

namespace gpt2cc::test {

struct LayerNormGrads {
  std::vector<float> dinp, dweight, dbias;
};

inline bool same_bits(const LayerNormGrads& a, const LayerNormGrads& b) {
  return same_bits(a.dinp, b.dinp) && same_bits(a.dweight, b.dweight) && same_bits(a.dbias, b.dbias);
}

// fp32: the fused dinp (+=) within 1e-5 of the CPU's; its column sums over B*T rows run in another
// order than the CPU's, so a little more slack. Against the two-pass design: its dinp loop is
// scalar (lane l sums channels l + 32 i), the fused one sums 4-channel packs, and the column sums
// run in another order: float rounding apart.
inline void expect_fused_layernorm_backward(const LayerNormGrads& fused, const LayerNormGrads& two_pass,
                                            const LayerNormGrads& cpu) {
  expect_matches(fused.dinp, cpu.dinp, "fused dinp (+=)", 1e-5);
  expect_matches(fused.dweight, cpu.dweight, "fused dweight", 2e-5);
  expect_matches(fused.dbias, cpu.dbias, "fused dbias", 2e-5);
  expect_matches(fused.dinp, two_pass.dinp, "fused vs two-pass dinp", 2e-6);
  expect_matches(fused.dweight, two_pass.dweight, "fused vs two-pass dweight", 1e-5);
  expect_matches(fused.dbias, two_pass.dbias, "fused vs two-pass dbias", 1e-5);
}

}  // namespace gpt2cc::test
