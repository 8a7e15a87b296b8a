// The CPU implementation of the Backend interface (core/backend.hpp): fp32 host memory and the
// gpt2cc::cpu:: reference layers (cpu/<layer>.hpp), one call each. Obtain it through
// make_cpu_backend(threads); the class is visible for tests that want its concrete type.
// Attention saves the full probabilities: attention_saved_floats = B*NH*T*T.
#pragma once

#include <string>

#include "core/backend.hpp"

namespace gpt2cc::cpu {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads = 0);  // 0: OpenMP default; > 0 sets omp_set_num_threads
  DeviceKind kind() const override { return DeviceKind::cpu; }
  std::string describe() const override;

  void* allocate(size_t bytes) override;
  void release(void* ptr) noexcept override;
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* ptr, size_t bytes) override;
  void synchronize() override {}

  size_t attention_saved_floats(int B, int T, int NH) const override;

  void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) override;
  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) override;
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                         const float* bias, int B, int T, int C) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                          const float* rstd, const float* inp, const float* weight, int B, int T, int C) override;
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C,
                      int OC) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int B, int T, int C, int OC) override;
  void attention_forward(float* out, float* saved, const float* qkv, int B, int T, int C, int NH,
                         const DropoutParams& dropout) override;
  void attention_backward(float* dqkv, const float* dout, const float* saved, const float* qkv, int B, int T, int C,
                          int NH, const DropoutParams& dropout) override;
  void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                        int NH) override;
  void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C) override;
  void gelu_forward(float* out, const float* inp, size_t N) override;
  void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N) override;
  void residual_forward(float* out, const float* inp1, const float* inp2, size_t N) override;
  void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N) override;
  void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N) override;
  void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N) override;
  void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V,
                            int Vp) override;
  void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                             int Vp) override;

  double sum_of_squares(const float* x, size_t N) override;
  void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp) override;

 private:
  int threads_ = 1;
};

}  // namespace gpt2cc::cpu
