// The tiled attention kernels compiled for the emulator: cuda_emu.hpp first (the CUDA built-ins on
// the host), then kernels/attention_device.cuh. The launches below mirror attention_forward_impl,
// attention_backward_impl, kv_cache_store_impl and attention_decode_impl of kernels/attention.cu
// through the header's functions; the backward's dP scratch is a host buffer that starts as NaN.
#include "emu/attention_emu.hpp"

#include <limits>
#include <vector>

#include "emu/cuda_emu.hpp"
#include "kernels/attention_device.cuh"

namespace gpt2cc::cuda::attention_kernels {
// What the decode kernel's `extern __shared__ float shared[]` refers to on the host.
GPT2CC_EMU_DYNAMIC_SHARED(float, shared);
}  // namespace gpt2cc::cuda::attention_kernels

namespace gpt2cc::emu {
namespace {

namespace att = cuda::attention_kernels;
using att::HeadGemm;

void check_shape(int B, int T, int C, int NH) {
  if (NH < 1 || C % NH != 0 || B < 0 || T < 0) throw Violation("attention emulation: bad shape");
}

template <HeadGemm kMode, class In, class Out>
void head_gemm(const att::HeadGemmParams<In, Out>& p, int max_grid_z) {
  const cuda::LaunchShape l = att::head_gemm_launch(kMode, p.T, p.HS, p.B * p.NH, max_grid_z);
  launch(l.grid, l.block, l.smem_bytes, att::attention_head_gemm_tiled_kernel<kMode, In, Out>, p);
}

template <class Elem>
void forward(Elem* out, float* att_probs, const Elem* qkv, int B, int T, int C, int NH, const DropoutParams& dropout,
             int max_grid_z) {
  check_shape(B, T, C, NH);
  if (B == 0 || T == 0) return;
  const att::ForwardGemms<Elem> g = att::forward_gemms(out, att_probs, qkv, B, T, C, NH, dropout);
  head_gemm<HeadGemm::scores>(g.scores, max_grid_z);
  const size_t rows = static_cast<size_t>(B) * NH * T;
  const cuda::LaunchShape l = att::softmax_launch(rows);
  launch(l.grid, l.block, l.smem_bytes, att::attention_softmax_warp_per_row_kernel, att_probs, rows, T);
  head_gemm<HeadGemm::probs_times>(g.values, max_grid_z);
}

template <class Elem>
void backward(Elem* dqkv, const Elem* dout, const float* att_probs, const Elem* qkv, int B, int T, int C, int NH,
              const DropoutParams& dropout, int max_grid_z) {
  check_shape(B, T, C, NH);
  if (B == 0 || T == 0) return;
  const size_t rows = static_cast<size_t>(B) * NH * T;
  std::vector<float> dscores(rows * T, std::numeric_limits<float>::quiet_NaN());
  const att::BackwardGemms<Elem> g =
      att::backward_gemms(dqkv, dscores.data(), dout, att_probs, qkv, B, T, C, NH, dropout);
  head_gemm<HeadGemm::scores>(g.dprobs, max_grid_z);
  const cuda::LaunchShape l = att::softmax_launch(rows);
  launch(l.grid, l.block, l.smem_bytes, att::attention_softmax_backward_warp_per_row_kernel, dscores.data(),
         att_probs, rows, T, dropout);
  head_gemm<HeadGemm::probs_times>(g.dq, max_grid_z);
  head_gemm<HeadGemm::probs_t_times>(g.dk, max_grid_z);
  head_gemm<HeadGemm::probs_t_times>(g.dv, max_grid_z);
}

template <class Elem>
void store(Elem* kcache, Elem* vcache, const Elem* qkv, int B, int T, int maxT, int C) {
  if (T > maxT) throw Violation("kv_cache_store emulation: T exceeds maxT");
  const size_t total = static_cast<size_t>(B) * T * C;
  if (total == 0) return;
  const cuda::LaunchShape l = att::kv_cache_store_launch(total);
  launch(l.grid, l.block, l.smem_bytes, att::kv_cache_store_kernel<Elem>, kcache, vcache, qkv, B, T, 0, maxT, C);
}

template <class Elem>
void decode(Elem* out, Elem* kcache, Elem* vcache, const Elem* qkv, int B, int pos, int maxT, int C, int NH) {
  check_shape(B, 1, C, NH);
  if (pos < 0 || pos >= maxT) throw Violation("attention_decode emulation: position outside the cache");
  if (B == 0) return;
  const cuda::LaunchShape ls = att::kv_cache_store_launch(static_cast<size_t>(B) * C);
  launch(ls.grid, ls.block, ls.smem_bytes, att::kv_cache_store_kernel<Elem>, kcache, vcache, qkv, B, 1, pos, maxT, C);
  const att::DecodeParams<Elem> p = att::decode_params(out, kcache, vcache, qkv, B, pos, maxT, C, NH);
  if (att::decode_scores_fit_shared(pos, p.HS)) {
    set_shared_memory(att::shared, sizeof(att::shared));
    const cuda::LaunchShape l = att::decode_shared_scores_launch(B, NH, pos, p.HS);
    launch(l.grid, l.block, l.smem_bytes, att::attention_decode_shared_scores_kernel<Elem>, p);
  } else {
    const cuda::LaunchShape l = att::decode_online_softmax_launch(B, NH);
    launch(l.grid, l.block, l.smem_bytes, att::attention_decode_online_softmax_kernel<Elem>, p);
  }
}

}  // namespace

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout, int max_grid_z) {
  forward(out, att, qkv, B, T, C, NH, dropout, max_grid_z);
}
void attention_forward(bf16* out, float* att, const bf16* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout, int max_grid_z) {
  forward(out, att, qkv, B, T, C, NH, dropout, max_grid_z);
}
void attention_backward(float* dqkv, const float* dout, const float* att, const float* qkv, int B, int T, int C,
                        int NH, const DropoutParams& dropout, int max_grid_z) {
  backward(dqkv, dout, att, qkv, B, T, C, NH, dropout, max_grid_z);
}
void attention_backward(bf16* dqkv, const bf16* dout, const float* att, const bf16* qkv, int B, int T, int C, int NH,
                        const DropoutParams& dropout, int max_grid_z) {
  backward(dqkv, dout, att, qkv, B, T, C, NH, dropout, max_grid_z);
}
void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C) {
  store(kcache, vcache, qkv, B, T, maxT, C);
}
void kv_cache_store(bf16* kcache, bf16* vcache, const bf16* qkv, int B, int T, int maxT, int C) {
  store(kcache, vcache, qkv, B, T, maxT, C);
}
void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                      int NH) {
  decode(out, kcache, vcache, qkv, B, pos, maxT, C, NH);
}
void attention_decode(bf16* out, bf16* kcache, bf16* vcache, const bf16* qkv, int B, int pos, int maxT, int C,
                      int NH) {
  decode(out, kcache, vcache, qkv, B, pos, maxT, C, NH);
}
bool attention_decode_scores_fit_shared(int pos, int HS) { return att::decode_scores_fit_shared(pos, HS); }

}  // namespace gpt2cc::emu
