// Causal self-attention forward, backward and KV-cache decode launchers (kernels/attention.cuh;
// mirrors cpu/attention.cpp). The tiled kernels, the parameters of each head product, their launch
// geometry and the decode branch are in kernels/attention_device.cuh; here: shape checks, the
// stream-ordered scratch for the T x T probabilities (and the backward's dP), and the launches in
// order. bf16 overloads: qkv, out, dout, dqkv and the KV caches in bf16, everything else (the
// saved log-sum-exp, P, dP, every accumulation) in fp32; a bf16 value is widened on load and an
// output rounded once on store. The kernels are templated on the element types (In, Out).
#include "kernels/attention.cuh"

#include "kernels/attention_device.cuh"
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda {
namespace {

using namespace attention_kernels;

template <class In, class Out>
void launch_head_gemm(HeadGemm mode, const HeadGemmParams<In, Out>& p, cudaStream_t stream) {
  const LaunchShape l = head_gemm_launch(mode, p.T, p.HS, p.B * p.NH);
  switch (mode) {
    case HeadGemm::scores:
      attention_head_gemm_tiled_kernel<HeadGemm::scores, In, Out><<<l.grid, l.block, 0, stream>>>(p);
      break;
    case HeadGemm::probs_times:
      attention_head_gemm_tiled_kernel<HeadGemm::probs_times, In, Out><<<l.grid, l.block, 0, stream>>>(p);
      break;
    case HeadGemm::probs_t_times:
      attention_head_gemm_tiled_kernel<HeadGemm::probs_t_times, In, Out><<<l.grid, l.block, 0, stream>>>(p);
      break;
  }
  CUDA_CHECK_LAUNCH();
}

void check_attention_shape(int B, int T, int C, int NH) {
  ENSURE(NH >= 1 && C % NH == 0, "attention needs NH >= 1 dividing C, got C = {}, NH = {}", C, NH);
  ENSURE(B >= 0 && T >= 0, "attention needs B, T >= 0, got B = {}, T = {}", B, T);
}

}  // namespace

bool attention_decode_scores_fit_shared(int pos, int HS) { return decode_scores_fit_shared(pos, HS); }

namespace {

template <class Elem>
void attention_forward_impl(Elem* out, float* lse, const Elem* qkv, int B, int T, int C, int NH,
                            const DropoutParams& dropout, cudaStream_t stream) {
  check_attention_shape(B, T, C, NH);
  if (B == 0 || T == 0) return;
  const size_t rows = static_cast<size_t>(B) * NH * T;
  ScratchBuffer probs(rows * T * sizeof(float), stream);
  float* att = probs.as<float>();
  const ForwardGemms<Elem> g = forward_gemms(out, att, qkv, B, T, C, NH, dropout);
  launch_head_gemm(HeadGemm::scores, g.scores, stream);
  const LaunchShape l = softmax_launch(rows);
  attention_softmax_warp_per_row_kernel<<<l.grid, l.block, 0, stream>>>(att, lse, rows, T);
  CUDA_CHECK_LAUNCH();
  launch_head_gemm(HeadGemm::probs_times, g.values, stream);
}

template <class Elem>
void attention_backward_impl(Elem* dqkv, const Elem* dout, const float* lse, const Elem* qkv, int B, int T, int C,
                             int NH, const DropoutParams& dropout, cudaStream_t stream) {
  check_attention_shape(B, T, C, NH);
  if (B == 0 || T == 0) return;
  const size_t rows = static_cast<size_t>(B) * NH * T;
  const LaunchShape l = softmax_launch(rows);
  // P again: S = scale Q K^T (the forward's product) and P = exp(S - lse) as it is stored.
  ScratchBuffer probs(rows * T * sizeof(float), stream);
  float* att = probs.as<float>();
  HeadGemmParams<Elem, float> recompute = forward_gemms<Elem>(nullptr, att, qkv, B, T, C, NH, dropout).scores;
  recompute.lse = lse;
  launch_head_gemm(HeadGemm::scores, recompute, stream);
  ScratchBuffer dscores(rows * T * sizeof(float), stream);
  const BackwardGemms<Elem> g = backward_gemms(dqkv, dscores.as<float>(), dout, att, qkv, B, T, C, NH, dropout);
  // dP~ = dout . V^T, then dS in place
  launch_head_gemm(HeadGemm::scores, g.dprobs, stream);
  attention_softmax_backward_warp_per_row_kernel<<<l.grid, l.block, 0, stream>>>(dscores.as<float>(), att, rows, T,
                                                                                 dropout);
  CUDA_CHECK_LAUNCH();
  // dQ = scale * dS K ; dK = scale * dS^T Q ; dV = drop(P)^T dout
  launch_head_gemm(HeadGemm::probs_times, g.dq, stream);
  launch_head_gemm(HeadGemm::probs_t_times, g.dk, stream);
  launch_head_gemm(HeadGemm::probs_t_times, g.dv, stream);
}

template <class Elem>
void kv_cache_store_impl(Elem* kcache, Elem* vcache, const Elem* qkv, int B, int T, int maxT, int C,
                         cudaStream_t stream) {
  ENSURE(T <= maxT, "kv_cache_store: T = {} exceeds the cache length maxT = {}", T, maxT);
  const size_t total = static_cast<size_t>(B) * T * C;
  if (total == 0) return;
  const LaunchShape l = kv_cache_store_launch(total);
  kv_cache_store_kernel<<<l.grid, l.block, 0, stream>>>(kcache, vcache, qkv, B, T, 0, maxT, C);
  CUDA_CHECK_LAUNCH();
}

template <class Elem>
void attention_decode_impl(Elem* out, Elem* kcache, Elem* vcache, const Elem* qkv, int B, int pos, int maxT, int C,
                           int NH, cudaStream_t stream) {
  check_attention_shape(B, 1, C, NH);
  ENSURE(pos >= 0 && pos < maxT, "attention_decode: position {} outside the cache [0, {})", pos, maxT);
  if (B == 0) return;
  const LaunchShape ls = kv_cache_store_launch(static_cast<size_t>(B) * C);
  kv_cache_store_kernel<<<ls.grid, ls.block, 0, stream>>>(kcache, vcache, qkv, B, 1, pos, maxT, C);
  CUDA_CHECK_LAUNCH();
  const DecodeParams<Elem> p = decode_params(out, kcache, vcache, qkv, B, pos, maxT, C, NH);
  if (decode_scores_fit_shared(pos, p.HS)) {
    const LaunchShape l = decode_shared_scores_launch(B, NH, pos, p.HS);
    attention_decode_shared_scores_kernel<<<l.grid, l.block, l.smem_bytes, stream>>>(p);
  } else {
    const LaunchShape l = decode_online_softmax_launch(B, NH);
    attention_decode_online_softmax_kernel<<<l.grid, l.block, 0, stream>>>(p);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout, cudaStream_t stream) {
  attention_forward_impl(out, lse, qkv, B, T, C, NH, dropout, stream);
}
void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout, cudaStream_t stream) {
  attention_forward_impl(out, lse, qkv, B, T, C, NH, dropout, stream);
}

// `out` (the forward's output) is part of the signature for the flash backward; the tiled
// backward recomputes P from qkv and lse and does not read it.
void attention_backward(float* dqkv, const float* dout, const float* lse, const float* qkv, const float* /*out*/,
                        int B, int T, int C, int NH, const DropoutParams& dropout, cudaStream_t stream) {
  attention_backward_impl(dqkv, dout, lse, qkv, B, T, C, NH, dropout, stream);
}
void attention_backward(bf16* dqkv, const bf16* dout, const float* lse, const bf16* qkv, const bf16* /*out*/, int B,
                        int T, int C, int NH, const DropoutParams& dropout, cudaStream_t stream) {
  attention_backward_impl(dqkv, dout, lse, qkv, B, T, C, NH, dropout, stream);
}

void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C,
                    cudaStream_t stream) {
  kv_cache_store_impl(kcache, vcache, qkv, B, T, maxT, C, stream);
}
void kv_cache_store(bf16* kcache, bf16* vcache, const bf16* qkv, int B, int T, int maxT, int C, cudaStream_t stream) {
  kv_cache_store_impl(kcache, vcache, qkv, B, T, maxT, C, stream);
}

void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                      int NH, cudaStream_t stream) {
  attention_decode_impl(out, kcache, vcache, qkv, B, pos, maxT, C, NH, stream);
}
void attention_decode(bf16* out, bf16* kcache, bf16* vcache, const bf16* qkv, int B, int pos, int maxT, int C, int NH,
                      cudaStream_t stream) {
  attention_decode_impl(out, kcache, vcache, qkv, B, pos, maxT, C, NH, stream);
}

}  // namespace gpt2cc::cuda
