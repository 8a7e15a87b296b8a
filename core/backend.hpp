// The backend interface: everything the model needs from a device, one method per layer
// operation (forward and backward), a few fused ones, plus memory and copies. core/ drives the
// model through it only; cpu/backend.cpp implements it with host memory and the cpu:: layers'
// fast paths (the _blocked and _vectorized functions beside each reference loop; fp32, or bf16
// storage around them), kernels/backend.cu with device memory and the cuda:: kernels (fp32 or
// bf16).
//
// Every op has the contract of the cpu:: function of its name (cpu/<layer>.hpp), with three
// exceptions: attention_forward / attention_backward are cpu::attention_*_blocked's (each row's
// log-sum-exp saved, not the (B, NH, T, T) probabilities; the backward reads the forward's `out`),
// and adamw_update takes the fp32 master weights before the parameters it rounds them into.
// Argument order is outputs -> saved values -> inputs -> weights -> dimensions; backward is
// input grads -> weight grads -> dout -> saved values -> inputs -> weights -> dimensions, where
// attention_backward's saved `out` and matmul_backward_gelu's saved `pre` come after the inputs
// and weights (as in their cpu:: and cuda:: functions).
// Accumulation rule: parameter gradients accumulate (+=); activation gradients are written (=),
// except into the residual stream (layernorm_backward's dinp, residual_backward), which
// accumulates (+=). Pointers are in the backend's memory space.
//
// Precision: a backend computes in one dtype (dtype()): activations, the compute copy of the
// parameters and the gradients are TensorPtr of that dtype; LayerNorm statistics, losses,
// attention's saved values, the fp32 master weights and the AdamW moments are always float*.
// In a bf16 backend some tensors may also be fp32, for sums kept in fp32 across calls:
// - parameter gradients (a bf16 model's with ModelOptions::fp32_gradients, core/model.hpp): the
//   backward ops' dweight, dbias (of one op: both of one dtype), dwte and dwpe, into which they
//   add their fp32 sums unrounded, and the gradients sum_of_squares and adamw_update read;
// - matmul_backward's dweight alone (the classifier's chunks summing wte's gradient,
//   core/model.cpp);
// - residual_forward's inp2 (out = inp1 + inp2, rounded once: that sum added into the gradient).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

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
  float grad_scale = 1.0f;    // clip factor: clip_scale in core/grad_clip.hpp
};

enum class DeviceKind { cpu, cuda };

// The compute dtype. bf16: bfloat16 storage (8-bit exponent like fp32, 8-bit mantissa), fp32
// arithmetic inside every kernel, fp32 master weights and optimizer state (mixed precision).
enum class DType : uint8_t { fp32 = 0, bf16 = 1 };
size_t dtype_size(DType dtype);       // bytes per element: 4 or 2
const char* dtype_name(DType dtype);  // "fp32" | "bf16"
DType parse_dtype(const std::string& name);  // InputError naming the valid values otherwise

// A pointer into a backend's memory to elements of the compute dtype. Arithmetic counts
// elements, so core/ indexes tensors the same way in fp32 and bf16; the backend checks the
// dtype and casts. A float* converts implicitly (an fp32 tensor), as does nullptr (no tensor).
template <class Void>
struct BasicTensorPtr {
  using Byte = std::conditional_t<std::is_const_v<Void>, const std::byte, std::byte>;
  using Float = std::conditional_t<std::is_const_v<Void>, const float, float>;

  Void* data = nullptr;
  DType dtype = DType::fp32;

  BasicTensorPtr() = default;
  BasicTensorPtr(std::nullptr_t) {}
  BasicTensorPtr(Void* ptr, DType type) : data(ptr), dtype(type) {}
  BasicTensorPtr(Float* ptr) : data(ptr), dtype(DType::fp32) {}
  template <class Other>
    requires std::is_convertible_v<Other*, Void*>
  BasicTensorPtr(const BasicTensorPtr<Other>& other) : data(other.data), dtype(other.dtype) {}

  BasicTensorPtr operator+(size_t elements) const {
    return {static_cast<Void*>(static_cast<Byte*>(data) + elements * dtype_size(dtype)), dtype};
  }
  explicit operator bool() const { return data != nullptr; }
};
using TensorPtr = BasicTensorPtr<void>;
using ConstTensorPtr = BasicTensorPtr<const void>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual DType dtype() const = 0;
  // e.g. "cpu fp32 (2 threads)", "cuda bf16 (device 0: NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90)"
  virtual std::string describe() const = 0;
  // The GPU's name as its driver gives it (cudaDeviceProp::name), for the peak table
  // (core/device_peaks.hpp); empty on the CPU.
  virtual std::string device_name() const { return {}; }
  // The GPU's UUID as nvidia-smi writes it ("GPU-" and 32 hex digits in five groups), which no two
  // GPUs share: the ranks of a data-parallel job check by it that each has a GPU of its own.
  // Empty on the CPU.
  virtual std::string device_uuid() const { return {}; }
  // The most rows (B x T positions) whose matmul products go through a path that sums each row as
  // alone, in another order than the path for more rows (the CPU's matrix-vector loops); 0 where
  // every row sums the same whatever the count. Batched decoding groups rows by it, so that a
  // row's bits do not depend on the rows beside it (core/model_decode.cpp).
  virtual int matvec_rows() const { return 0; }

  // ---- memory: allocations are zero-filled; sizes in bytes ----
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr) noexcept = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // within the backend
  virtual void zero(void* ptr, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // fp32 <-> compute dtype within the backend (bf16: round to nearest even); plain copies in fp32.
  virtual void convert_from_float(TensorPtr dst, const float* src, size_t N) = 0;
  virtual void convert_to_float(float* dst, ConstTensorPtr src, size_t N) = 0;

  // ---- layers ----
  virtual void encoder_forward(TensorPtr out, const int* inp, ConstTensorPtr wte, ConstTensorPtr wpe, int B, int T,
                               int C) = 0;
  virtual void encoder_backward(TensorPtr dwte, TensorPtr dwpe, ConstTensorPtr dout, const int* inp, int B, int T,
                                int C) = 0;

  virtual void layernorm_forward(TensorPtr out, float* mean, float* rstd, ConstTensorPtr inp, ConstTensorPtr weight,
                                 ConstTensorPtr bias, int B, int T, int C) = 0;
  virtual void layernorm_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                                  const float* mean, const float* rstd, ConstTensorPtr inp, ConstTensorPtr weight,
                                  int B, int T, int C) = 0;

  virtual void matmul_forward(TensorPtr out, ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr bias, int B,
                              int T, int C, int OC) = 0;
  virtual void matmul_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                               ConstTensorPtr inp, ConstTensorPtr weight, int B, int T, int C, int OC) = 0;

  // `saved` (B, NH, T): each row's log-sum-exp, written by the forward, on every backend and path;
  // the backward recomputes the probabilities from it. `out` is the forward's output (a flash
  // backward needs it for rowsum(dout * out)).
  virtual void attention_forward(TensorPtr out, float* saved, ConstTensorPtr qkv, int B, int T, int C, int NH,
                                 const DropoutParams& dropout) = 0;
  virtual void attention_backward(TensorPtr dqkv, ConstTensorPtr dout, const float* saved, ConstTensorPtr qkv,
                                  ConstTensorPtr out, int B, int T, int C, int NH, const DropoutParams& dropout) = 0;
  // KV-cache decode: qkv (B, 3C) of the token at position `pos`; its k, v are stored into the
  // caches (B, maxT, C) at `pos`, then out (B, C) attends over positions 0..pos.
  virtual void attention_decode(TensorPtr out, TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B, int pos,
                                int maxT, int C, int NH) = 0;
  // Stores k, v of a prefilled prompt: qkv (B, T, 3C) -> caches (B, maxT, C) at positions 0..T-1.
  virtual void kv_cache_store(TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B, int T, int maxT,
                              int C) = 0;

  virtual void gelu_forward(TensorPtr out, ConstTensorPtr inp, size_t N) = 0;
  virtual void gelu_backward(TensorPtr dinp, ConstTensorPtr dout, ConstTensorPtr inp, size_t N) = 0;

  virtual void residual_forward(TensorPtr out, ConstTensorPtr inp1, ConstTensorPtr inp2, size_t N) = 0;
  virtual void residual_backward(TensorPtr dinp1, TensorPtr dinp2, ConstTensorPtr dout, size_t N) = 0;

  virtual void dropout_forward(TensorPtr out, ConstTensorPtr inp, const DropoutParams& dropout, size_t N) = 0;
  virtual void dropout_backward(TensorPtr dinp, ConstTensorPtr dout, const DropoutParams& dropout, size_t N) = 0;

  virtual void crossentropy_forward(float* losses, ConstTensorPtr logits, const int* targets, int B, int T, int V,
                                    int Vp) = 0;
  virtual void crossentropy_backward(TensorPtr dlogits, float dloss, ConstTensorPtr logits, const int* targets, int B,
                                     int T, int V, int Vp) = 0;

  // ---- fused ops: each equals the composition written in its default implementation (below,
  // core/backend.cpp), which a backend overrides with one pass over memory ----
  // residual = inp1 + inp2; out, mean, rstd = LayerNorm(residual)
  virtual void residual_layernorm_forward(TensorPtr residual, TensorPtr out, float* mean, float* rstd,
                                          ConstTensorPtr inp1, ConstTensorPtr inp2, ConstTensorPtr weight,
                                          ConstTensorPtr bias, int B, int T, int C);
  // pre = inp weight^T + bias; out = gelu(pre)
  virtual void matmul_forward_gelu(TensorPtr out, TensorPtr pre, ConstTensorPtr inp, ConstTensorPtr weight,
                                   ConstTensorPtr bias, int B, int T, int C, int OC);
  // matmul_backward whose input was gelu(pre): dinp = (dout weight) * gelu'(pre) is d(pre).
  virtual void matmul_backward_gelu(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                                    ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr pre, int B, int T, int C,
                                    int OC);
  // The classifier in one pass: losses (B,T) and, in place over the logits, dlogits =
  // dloss * (softmax - onehot) (crossentropy_forward then crossentropy_backward).
  virtual void fused_classifier(TensorPtr logits, float* losses, const int* targets, float dloss, int B, int T, int V,
                                int Vp);

  // ---- optimizer ----
  virtual double sum_of_squares(ConstTensorPtr x, size_t N) = 0;
  // AdamW on the fp32 master weights and moments with grads in the compute dtype (or fp32);
  // `params`, the compute copy, is rewritten from the master (for an fp32 backend it is `master`
  // itself).
  virtual void adamw_update(float* master, TensorPtr params, float* m, float* v, ConstTensorPtr grads, size_t N,
                            const AdamWParams& hp) = 0;

  // ---- recorded replay (CUDA graphs) of a fixed sequence of ops with fixed shapes ----
  // begin_recording: from now on ops are recorded, not run (false: this backend cannot record,
  // run the ops directly). end_recording stores the recording under `key`; replay(key) runs it
  // and returns false when no recording has that key. Nothing in a recording may synchronise.
  virtual bool begin_recording() { return false; }
  virtual void end_recording(uint64_t key) { (void)key; }
  // Ends a recording that an exception interrupted, discarding it.
  virtual void abort_recording() noexcept {}
  virtual bool replay(uint64_t key) {
    (void)key;
    return false;
  }
  // Discards the recording under `key`, if there is one (its buffers are going away).
  virtual void drop_recording(uint64_t key) { (void)key; }

  // The CUDA stream (a cudaStream_t) the backend runs its ops on, for libraries that enqueue
  // work after them (NCCL's collectives); null on the CPU.
  virtual void* stream_handle() { return nullptr; }
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

// RAII tensor of the backend's compute dtype (activations, compute parameters, gradients), or of
// one given.
class DeviceTensor {
 public:
  DeviceTensor() = default;
  DeviceTensor(Backend& backend, size_t count) : DeviceTensor(backend, count, backend.dtype()) {}
  // Of another dtype than the backend's: fp32 gradients in a bf16 backend (above).
  DeviceTensor(Backend& backend, size_t count, DType dtype)
      : array_(backend, count * dtype_size(dtype)), dtype_(dtype), count_(count) {}

  TensorPtr data() { return {array_.data(), dtype_}; }
  ConstTensorPtr data() const { return {array_.data(), dtype_}; }
  size_t size() const { return count_; }
  size_t bytes() const { return array_.size(); }
  DType dtype() const { return dtype_; }

 private:
  DeviceArray<std::byte> array_;
  DType dtype_ = DType::fp32;
  size_t count_ = 0;
};

// Host copy of N elements of a compute-dtype tensor as fp32 (widened on the device first).
std::vector<float> download_as_float(Backend& backend, ConstTensorPtr src, size_t N);

// The most CPU threads a backend takes (every program's --threads): libgomp fails to create tens
// of thousands of threads, or crashes trying, and no machine these programs run on has more cores.
inline constexpr int kMaxThreads = 1024;
// InputError unless `threads` is from `least` to kMaxThreads, naming it as `what`: every program's
// --threads check ("--threads must be from 0 to 1024 (0: OMP_NUM_THREADS, else all cores), got
// 5000").
void check_thread_count(int threads, const char* what = "--threads", int least = 0);
// The same bound on the count OpenMP took from OMP_NUM_THREADS where --threads was 0 (InputError
// naming the variable).
void check_environment_thread_count(int threads);

// Backend factories. make_cpu_backend's bf16 is cpu::CpuBf16Backend (cpu/backend.hpp), for
// generation and mixed-precision training; make_cuda_backend throws InputError naming the reason when this build has no CUDA
// backend or no GPU is present.
std::unique_ptr<Backend> make_cpu_backend(int threads = 0, DType dtype = DType::fp32);  // 0: OpenMP default
std::unique_ptr<Backend> make_cuda_backend(int device = 0, DType dtype = DType::fp32);
bool cuda_backend_built();
// The CUDA devices this process sees (after CUDA_VISIBLE_DEVICES); 0 without a CUDA backend or GPU.
int cuda_device_count();

}  // namespace gpt2cc
