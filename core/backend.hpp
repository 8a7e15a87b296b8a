// The backend interface: everything the model needs from a device, one method per layer
// operation (forward and backward), plus memory and copies. core/ drives the model through it
// only; cpu/backend.cpp implements it with host memory and the cpu:: reference layers,
// kernels/backend.cu with device memory and the cuda:: kernels.
//
// Every op has exactly the contract of the cpu:: function of the same name (cpu/<layer>.hpp):
// argument order is outputs -> saved values -> inputs -> weights -> dimensions; backward is
// input grads -> weight grads -> dout -> saved values -> inputs -> weights -> dimensions.
// Accumulation rule: parameter gradients accumulate (+=); activation gradients are written (=),
// except into the residual stream (layernorm_backward's dinp, residual_backward), which
// accumulates (+=). Pointers are in the backend's memory space.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/rng.hpp"

namespace gpt2cc {

// One AdamW step over a contiguous slice of parameters (Loshchilov & Hutter 2019):
//   g = grad * grad_scale                    (grad_scale folds in clipping)
//   m = beta1*m + (1-beta1)*g ; v = beta2*v + (1-beta2)*g^2
//   p -= lr * ( (m/(1-beta1^step)) / (sqrt(v/(1-beta2^step)) + eps) + weight_decay * p )
struct AdamWParams {
  float lr = 3e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // 0 for biases, LayerNorm parameters and position embeddings
  int step = 1;               // 1-based step for bias correction
  float grad_scale = 1.0f;    // clip factor min(1, max_norm / norm)
};

enum class DeviceKind { cpu, cuda };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string describe() const = 0;  // e.g. "cpu (2 threads)", "cuda fp32 (NVIDIA H100, 80 GB)"

  // ---- memory: allocations are zero-filled; sizes in bytes ----
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr) noexcept = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // within the backend
  virtual void zero(void* ptr, size_t bytes) = 0;
  virtual void synchronize() = 0;

  // Floats per layer the attention forward saves for its backward: the CPU stores the
  // probabilities (B*NH*T*T), a flash kernel only the row log-sum-exp (B*NH*T).
  virtual size_t attention_saved_floats(int B, int T, int NH) const = 0;

  // ---- layers ----
  virtual void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) = 0;
  virtual void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) = 0;

  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                 const float* bias, int B, int T, int C) = 0;
  virtual void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                                  const float* rstd, const float* inp, const float* weight, int B, int T, int C) = 0;

  virtual void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T,
                              int C, int OC) = 0;
  virtual void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                               const float* weight, int B, int T, int C, int OC) = 0;

  virtual void attention_forward(float* out, float* saved, const float* qkv, int B, int T, int C, int NH,
                                 const DropoutParams& dropout) = 0;
  virtual void attention_backward(float* dqkv, const float* dout, const float* saved, const float* qkv, int B, int T,
                                  int C, int NH, const DropoutParams& dropout) = 0;
  // KV-cache decode: qkv (B, 3C) of the token at position `pos`; its k, v are stored into the
  // caches (B, maxT, C) at `pos`, then out (B, C) attends over positions 0..pos.
  virtual void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT,
                                int C, int NH) = 0;
  // Stores k, v of a prefilled prompt: qkv (B, T, 3C) -> caches (B, maxT, C) at positions 0..T-1.
  virtual void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C) = 0;

  virtual void gelu_forward(float* out, const float* inp, size_t N) = 0;
  virtual void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N) = 0;

  virtual void residual_forward(float* out, const float* inp1, const float* inp2, size_t N) = 0;
  virtual void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N) = 0;

  virtual void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N) = 0;
  virtual void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N) = 0;

  virtual void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V,
                                    int Vp) = 0;
  virtual void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B,
                                     int T, int V, int Vp) = 0;

  // ---- optimizer ----
  virtual double sum_of_squares(const float* x, size_t N) = 0;
  virtual void adamw_update(float* params, float* m, float* v, const float* grads, size_t N,
                            const AdamWParams& hp) = 0;
};

// RAII array in a backend's memory.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(Backend& backend, size_t count)
      : backend_(&backend), ptr_(static_cast<T*>(backend.allocate(count * sizeof(T)))), count_(count) {}
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept { *this = std::move(o); }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = o.backend_;
      ptr_ = o.ptr_;
      count_ = o.count_;
      o.backend_ = nullptr;
      o.ptr_ = nullptr;
      o.count_ = 0;
    }
    return *this;
  }
  ~DeviceArray() { reset(); }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  void reset() {
    if (backend_ && ptr_) backend_->release(ptr_);
    ptr_ = nullptr;
  }
  Backend* backend_ = nullptr;
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

// Backend factories. make_cuda_backend throws InputError naming the reason when this build has
// no CUDA backend or no GPU is present.
std::unique_ptr<Backend> make_cpu_backend(int threads = 0);  // 0: OpenMP default
std::unique_ptr<Backend> make_cuda_backend(int device = 0);
bool cuda_backend_built();

}  // namespace gpt2cc
