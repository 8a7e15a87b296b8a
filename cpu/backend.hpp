// The CPU implementation of the Backend interface (core/backend.hpp): fp32 host memory and the
// gpt2cc::cpu:: layers (cpu/<layer>.hpp), one call each; the faster variants it runs instead of
// the reference are the blocked matmul (cpu::matmul_forward_blocked, _backward_blocked),
// attention's (cpu::attention_forward_blocked, _backward_blocked, attention_decode_vectorized),
// the vectorised pairs of LayerNorm and GELU, and the forward-only cross-entropy
// (cpu::crossentropy_forward_vectorized, for evaluation). The fused ops use the Backend's default
// compositions, except the classifier (cpu::fused_classifier: one exp per logit). Obtain it
// through make_cpu_backend(threads); the class is visible for tests that want its concrete type.
// Attention saves each row's log-sum-exp, not the probabilities (cpu/attention.hpp).
// CpuBf16Backend (below) is its bf16 form.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.hpp"
#include "cpu/gemm.hpp"
#include "cpu/matmul.hpp"

namespace gpt2cc::cpu {

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int threads = 0);  // 0: OpenMP default; > 0 sets omp_set_num_threads
  DeviceKind kind() const override { return DeviceKind::cpu; }
  DType dtype() const override { return DType::fp32; }
  std::string describe() const override;  // "cpu fp32 (2 threads)", "cpu bf16 (1 thread)"
  // Fewer rows than the GEMM's register tile go through the matrix-vector loop (cpu/gemm.hpp).
  int matvec_rows() const override { return kGemmTileRows - 1; }

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

// The CPU backend in bf16 (make_cpu_backend(threads, DType::bf16)): activations, the compute copy
// of the parameters and the gradients stored as bf16 (cpu/bf16.hpp), the arithmetic fp32, with
// the semantics of the CUDA backend's bf16: an op reads bf16, computes in fp32 and rounds each
// output to nearest even once; accumulating outputs are widened, added to in fp32 and rounded.
// Most ops widen their bf16 operands into scratch and run CpuBackend's fp32 op on them; the ones
// that read the weights or the KV cache, which decoding is bound by, read the bf16 in place: the
// matmul's forward (cpu::matmul_forward_bf16; the prompt's products on AMX tiles or AVX512-BF16
// where the CPU has them), the embedding, the decode attention and the cache store; the matmul's
// backward reads bf16 where the CPU has AVX512-BF16 (cpu::matmul_backward_bf16). The logits and
// the weights' gradients are not staged in fp32: the AVX512-BF16 products round straight into
// bf16 outputs and weight gradients (AMX's forward into bf16 outputs), the classifier widens a
// row at a time, AdamW and the sum of squares read bf16 gradients in place; what the other ops
// stage are activations (B x T x C, 3C or 4C). What it is for:
// generation, whose decoding reads every weight once per token (half the bytes: up to twice the
// tokens/s), and `train --dtype bf16`, whose step measured 1.42-1.64x fp32's on AVX512-BF16
// (benchmarks/RESULTS.md); without those instructions its products widen to fp32 and it is slower
// than fp32. A tensor given as fp32 (a float*) is used as it is: the fused ops pass their fp32
// intermediates to the single ops that way.
class CpuBf16Backend final : public CpuBackend {
 public:
  explicit CpuBf16Backend(int threads = 0) : CpuBackend(threads) {}
  ~CpuBf16Backend() override;
  DType dtype() const override { return DType::bf16; }
  int matvec_rows() const override { return kBf16MatvecRows; }

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
  void matmul_forward_gelu(TensorPtr out, TensorPtr pre, ConstTensorPtr inp, ConstTensorPtr weight,
                           ConstTensorPtr bias, int B, int T, int C, int OC) override;
  void matmul_backward_gelu(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                            ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr pre, int B, int T, int C,
                            int OC) override;
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
  friend class Staging;
  // fp32 scratch as a stack: an op (and the ops a fused op calls) takes buffers from the top and
  // gives them back when its Staging scope ends; the buffers stay allocated for the next call.
  std::vector<std::pair<float*, size_t>> scratch_;  // (data, floats) per depth
  size_t scratch_depth_ = 0;
};

}  // namespace gpt2cc::cpu
