// The tiled attention kernels (kernels/attention.cuh) on a case of PyTorch's SDPA fixture
// (common/sdpa_fixture.hpp), and the CPU reference on random inputs: shared by the fp32 and bf16
// CUDA tests and the emulator's.
#pragma once

#include <cuda_bf16.h>

#include <utility>
#include <vector>

#include "common/sdpa_fixture.hpp"
#include "cpu/attention.hpp"
#include "cuda/bf16_test_util.hpp"
#include "cuda/cuda_test_util.hpp"
#include "kernels/attention.cuh"

namespace gpt2cc::test {

// What the tiled kernels are held to: cpu::attention_forward's out and cpu::attention_backward's
// dqkv, and each row's log-sum-exp from cpu::attention_forward_blocked (what the kernels save).
struct AttentionReference {
  std::vector<float> out, dqkv, lse;
};
inline AttentionReference cpu_attention_reference(const std::vector<float>& qkv, const std::vector<float>& dout, int B,
                                                  int T, int C, int NH, const DropoutParams& dropout) {
  const size_t out_n = static_cast<size_t>(B) * T * C, rows = static_cast<size_t>(B) * NH * T;
  AttentionReference r{std::vector<float>(out_n), std::vector<float>(qkv.size()), std::vector<float>(rows)};
  std::vector<float> att(rows * T), blocked_out(out_n);
  cpu::attention_forward(r.out.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
  cpu::attention_backward(r.dqkv.data(), dout.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
  cpu::attention_forward_blocked(blocked_out.data(), r.lse.data(), qkv.data(), B, T, C, NH, dropout);
  return r;
}

// Forward then backward, no dropout, on case c's inputs as Elem (float, or bf16: exact, the
// fixture's values are bf16), into outputs poisoned first: out and dqkv, widened to float.
template <class Elem>
std::pair<std::vector<float>, std::vector<float>> tiled_attention_on(const SdpaCase& c, cudaStream_t stream) {
  const int B = c.B, T = c.T, C = c.C(), NH = c.NH;
  DeviceBuffer<Elem> qkv(as<Elem>(c.qkv)), dout(as<Elem>(c.dout)), out(c.out.size()), dqkv(c.dqkv.size());
  DeviceBuffer<float> lse(static_cast<size_t>(B) * NH * T);
  out.poison();
  dqkv.poison();
  cuda::attention_forward(out.get(), lse.get(), qkv.get(), B, T, C, NH, DropoutParams{}, stream);
  cuda::attention_backward(dqkv.get(), dout.get(), lse.get(), qkv.get(), out.get(), B, T, C, NH, DropoutParams{},
                           stream);
  return {widened(out), widened(dqkv)};
}

}  // namespace gpt2cc::test
