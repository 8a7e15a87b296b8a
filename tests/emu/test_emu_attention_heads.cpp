// The tiled attention's head products (attention_head_gemm_tiled_kernel, kernels/attention_device.cuh)
// on the CPU emulator when the heads outnumber grid.z: the launcher caps grid.z at 65535, and each
// block then takes heads z, z + gridDim.z, ... Reaching that through cuda::attention_forward takes
// 65536+ heads (~47 s on the emulator; emu_cuda_layers leaves that case out of CI), so this test
// launches the kernel itself, with the launchers' parameters (forward_gemms, backward_gemms) and
// geometry (head_gemm_launch) but grid.z capped at 4, over 6 heads (blocks 0 and 1 take two): every
// product, float and bf16, attention dropout on, gives the bits of one block per head (the
// launchers' grid, checked against cpu:: by test_emu_attention.cpp), and out = drop(P) V is the
// CPU's within the tolerances there. Its own executable, on host memory: test_emu links the same
// header compiled into kernels/attention.cu (hostcuda), whose non-template kernels it would repeat.
#include "common/catch.hpp"

#include <cmath>
#include <cstddef>
#include <vector>

#include "cpu/attention.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/attention_device.cuh"

using namespace gpt2cc;
using test::bf16;

namespace {

namespace att = cuda::attention_kernels;

// One head product launched as the launchers launch it, with grid.z at most max_grid_z.
template <att::HeadGemm kMode, class In, class Out>
void launch_head_gemm(const att::HeadGemmParams<In, Out>& p, int max_grid_z) {
  const cuda::LaunchShape l = att::head_gemm_launch(kMode, p.T, p.HS, p.B * p.NH, max_grid_z);
  emu::launch(l.grid, l.block, l.smem_bytes, att::attention_head_gemm_tiled_kernel<kMode, In, Out>, p);
}

struct Products {
  std::vector<float> scores, out, dqkv;
};

// Every product of the forward and the backward (the three modes; dropout in the values and dV
// products) from fixed inputs, `att` standing for the probabilities and for dS, into poisoned
// outputs: the scores (lower triangle), out and dqkv.
template <class Elem>
Products head_products(const std::vector<Elem>& qkv, const std::vector<Elem>& dout, std::vector<float>& att, int B,
                       int T, int C, int NH, const DropoutParams& dropout, int max_grid_z) {
  auto scores = test::poisoned<float>(att.size());
  auto out = test::poisoned<Elem>(dout.size()), dqkv = test::poisoned<Elem>(qkv.size());
  const auto forward = [&](float* probs) {
    return att::forward_gemms(out.data(), probs, qkv.data(), B, T, C, NH, dropout);
  };
  launch_head_gemm<att::HeadGemm::scores>(forward(scores.data()).scores, max_grid_z);
  launch_head_gemm<att::HeadGemm::probs_times>(forward(att.data()).values, max_grid_z);
  const att::BackwardGemms<Elem> g =
      att::backward_gemms(dqkv.data(), att.data(), dout.data(), att.data(), qkv.data(), B, T, C, NH, dropout);
  launch_head_gemm<att::HeadGemm::probs_times>(g.dq, max_grid_z);
  launch_head_gemm<att::HeadGemm::probs_t_times>(g.dk, max_grid_z);
  launch_head_gemm<att::HeadGemm::probs_t_times>(g.dv, max_grid_z);
  return {scores, test::widened(out), test::widened(dqkv)};
}

}  // namespace

TEMPLATE_TEST_CASE("emulated tiled attention loops over more heads than grid.z", "[emu][attention]", float, bf16) {
  using Elem = TestType;
  const int B = 3, T = 35, C = 12, NH = 2, max_grid_z = 4;
  const DropoutParams dropout{0.1f, 99, 3};
  const size_t qkv_n = size_t(B) * T * 3 * C, out_n = size_t(B) * T * C, att_n = size_t(B) * NH * T * T;
  const auto qkv = test::round_to_bf16(test::random_vector(qkv_n, 411, -1.5f, 1.5f));
  const auto dout = test::round_to_bf16(test::random_vector(out_n, 412));
  std::vector<float> out(out_n), att(att_n);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, dropout);

  const auto qkv_elem = test::as<Elem>(qkv), dout_elem = test::as<Elem>(dout);
  const Products capped = head_products(qkv_elem, dout_elem, att, B, T, C, NH, dropout, max_grid_z);
  const Products per_head = head_products(qkv_elem, dout_elem, att, B, T, C, NH, dropout, att::kMaxGridZ);
  CHECK(test::same_bits(capped.scores, per_head.scores));
  CHECK(test::same_bits(capped.out, per_head.out));
  CHECK(test::same_bits(capped.dqkv, per_head.dqkv));
  test::expect_output<Elem>(capped.out, out, 1e-5, 1e-5, "attention out over a capped grid.z");
  size_t unwritten = 0;
  for (const float x : capped.dqkv) unwritten += std::isnan(x);
  INFO("dqkv elements the products left poisoned");
  CHECK(unwritten == 0);
}
