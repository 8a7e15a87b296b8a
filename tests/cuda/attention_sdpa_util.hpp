// The tiled attention kernels (kernels/attention.cuh) on a case of PyTorch's SDPA fixture
// (common/sdpa_fixture.hpp): shared by the fp32 and bf16 CUDA tests and the emulator's.
#pragma once

#include <cuda_bf16.h>

#include <type_traits>
#include <utility>
#include <vector>

#include "common/sdpa_fixture.hpp"
#include "cuda/bf16_host_util.hpp"
#include "cuda/cuda_test_util.hpp"
#include "kernels/attention.cuh"

namespace gpt2cc::test {

// Forward then backward, no dropout, on case c's inputs as Elem (float, or bf16: exact, the
// fixture's values are bf16), into outputs poisoned first: out and dqkv, widened to float.
template <class Elem>
std::pair<std::vector<float>, std::vector<float>> tiled_attention_on(const SdpaCase& c, cudaStream_t stream) {
  const auto as_elem = [](const std::vector<float>& x) {
    if constexpr (std::is_same_v<Elem, float>) return x;
    else return to_bf16(x);
  };
  const auto widen = [](const std::vector<Elem>& x) {
    if constexpr (std::is_same_v<Elem, float>) return x;
    else return from_bf16(x);
  };
  const int B = c.B, T = c.T, C = c.C(), NH = c.NH;
  DeviceBuffer<Elem> qkv(as_elem(c.qkv)), dout(as_elem(c.dout)), out(c.out.size()), dqkv(c.dqkv.size());
  DeviceBuffer<float> lse(static_cast<size_t>(B) * NH * T);
  out.poison();
  dqkv.poison();
  cuda::attention_forward(out.get(), lse.get(), qkv.get(), B, T, C, NH, DropoutParams{}, stream);
  cuda::attention_backward(dqkv.get(), dout.get(), lse.get(), qkv.get(), out.get(), B, T, C, NH, DropoutParams{},
                           stream);
  return {widen(out.download()), widen(dqkv.download())};
}

}  // namespace gpt2cc::test
