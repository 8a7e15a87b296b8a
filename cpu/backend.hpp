// The CPU implementation of the Backend interface (core/backend.hpp): fp32 host memory and the
// gpt2cc::cpu:: layers (cpu/<layer>.hpp), one call each; the faster variants it runs instead of
// the reference are the blocked matmul (cpu::matmul_forward_blocked, _backward_blocked),
// attention's (cpu::attention_forward_blocked, _backward_blocked, attention_decode_vectorized),
// the vectorised pairs of LayerNorm and GELU, and the forward-only cross-entropy
// (cpu::crossentropy_forward_vectorized, for evaluation). The fused ops use the Backend's default
// compositions, except the classifier (cpu::fused_classifier: one exp per logit). Obtain it
// through make_cpu_backend(threads); the class is visible for tests that want its concrete type.
// Attention saves each row's log-sum-exp, not the probabilities (cpu/attention.hpp).
#pragma once

#include <string>

#include "core/backend.hpp"

namespace gpt2cc::cpu {

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int threads = 0);  // 0: OpenMP default; > 0 sets omp_set_num_threads
  DeviceKind kind() const override { return DeviceKind::cpu; }
  DType dtype() const override { return DType::fp32; }
  std::string describe() const override;

  void* allocate(size_t bytes) override;
  void release(void* ptr) noexcept override;
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* ptr, size_t bytes) override;
  void synchronize() override {}

  void convert_from_float(TensorPtr dst, const float* src, size_t N) override;
  void convert_to_float(float* dst, ConstTensorPtr src, size_t N) override;

  void encoder_forward(TensorPtr out, const int* inp, ConstTensorPtr wte, ConstTensorPtr wpe, int B, int T,
                       int C) override;
  void encoder_backward(TensorPtr dwte, TensorPtr dwpe, ConstTensorPtr dout, const int* inp, int B, int T,
                        int C) override;
  void layernorm_forward(TensorPtr out, float* mean, float* rstd, ConstTensorPtr inp, ConstTensorPtr weight,
                         ConstTensorPtr bias, int B, int T, int C) override;
  void layernorm_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout, const float* mean,
                          const float* rstd, ConstTensorPtr inp, ConstTensorPtr weight, int B, int T,
                          int C) override;
  void matmul_forward(TensorPtr out, ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr bias, int B, int T,
                      int C, int OC) override;
  void matmul_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout, ConstTensorPtr inp,
                       ConstTensorPtr weight, int B, int T, int C, int OC) override;
  void attention_forward(TensorPtr out, float* saved, ConstTensorPtr qkv, int B, int T, int C, int NH,
                         const DropoutParams& dropout) override;
  void attention_backward(TensorPtr dqkv, ConstTensorPtr dout, const float* saved, ConstTensorPtr qkv,
                          ConstTensorPtr out, int B, int T, int C, int NH, const DropoutParams& dropout) override;
  void attention_decode(TensorPtr out, TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B, int pos,
                        int maxT, int C, int NH) override;
  void kv_cache_store(TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B, int T, int maxT,
                      int C) override;
  void gelu_forward(TensorPtr out, ConstTensorPtr inp, size_t N) override;
  void gelu_backward(TensorPtr dinp, ConstTensorPtr dout, ConstTensorPtr inp, size_t N) override;
  void residual_forward(TensorPtr out, ConstTensorPtr inp1, ConstTensorPtr inp2, size_t N) override;
  void residual_backward(TensorPtr dinp1, TensorPtr dinp2, ConstTensorPtr dout, size_t N) override;
  void dropout_forward(TensorPtr out, ConstTensorPtr inp, const DropoutParams& dropout, size_t N) override;
  void dropout_backward(TensorPtr dinp, ConstTensorPtr dout, const DropoutParams& dropout, size_t N) override;
  void crossentropy_forward(float* losses, ConstTensorPtr logits, const int* targets, int B, int T, int V,
                            int Vp) override;
  void crossentropy_backward(TensorPtr dlogits, float dloss, ConstTensorPtr logits, const int* targets, int B, int T,
                             int V, int Vp) override;
  void fused_classifier(TensorPtr logits, float* losses, const int* targets, float dloss, int B, int T, int V,
                        int Vp) override;

  double sum_of_squares(ConstTensorPtr x, size_t N) override;
  void adamw_update(float* master, TensorPtr params, float* m, float* v, ConstTensorPtr grads, size_t N,
                    const AdamWParams& hp) override;

 private:
  int threads_ = 1;
};

}  // namespace gpt2cc::cpu
