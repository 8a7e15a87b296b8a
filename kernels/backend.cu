// CudaBackend: the Backend interface (core/backend.hpp) on one GPU, fp32. Device memory from
// cudaMalloc (zero-filled, out-of-memory reported with the sizes and a hint), one stream on
// which every kernel and copy runs in order, the cuda:: layers of kernels/*.cuh. Also the
// factory make_cuda_backend, which throws InputError when there is no usable GPU.
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "kernels/adamw.cuh"
#include "kernels/attention.cuh"
#include "kernels/crossentropy.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/dropout.cuh"
#include "kernels/encoder.cuh"
#include "kernels/gelu.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/matmul.cuh"
#include "kernels/residual.cuh"

namespace gpt2cc {
namespace {

std::string gib(size_t bytes) { return format("{} GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0)); }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaGetDeviceProperties(&props_, device_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    // The per-op scratch buffers (cuda_check.cuh ScratchBuffer) come from the device's default
    // memory pool; keeping freed blocks in the pool instead of returning them to the driver at
    // each synchronisation makes every step after the first allocation-free.
    cudaMemPool_t pool;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device_));
    uint64_t threshold = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    cuda::cublas_handle(stream_);  // create the cuBLAS handle now, not inside the first step
  }
  ~CudaBackend() override { cudaStreamDestroy(stream_); }

  DeviceKind kind() const override { return DeviceKind::cuda; }
  std::string describe() const override {
    return format("cuda fp32 (device {}: {}, {}, sm_{}{})", device_, props_.name, gib(props_.totalGlobalMem),
                  props_.major, props_.minor);
  }

  void* allocate(size_t bytes) override {
    CUDA_CHECK(cudaSetDevice(device_));
    void* ptr = nullptr;
    cudaError_t err = cudaMalloc(&ptr, bytes == 0 ? 1 : bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the sticky-free error so later calls work
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      throw Error(format("CUDA out of memory on device {} ({}): asked for {} bytes ({}), {} bytes free ({}) of {}; "
                         "try a smaller batch size or sequence length, or a smaller model",
                         device_, props_.name, bytes, gib(bytes), free_bytes, gib(free_bytes), gib(total_bytes)));
    }
    CUDA_CHECK(err);
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return ptr;
  }
  void release(void* ptr) noexcept override {
    // cudaFree waits for the device; an error here (e.g. at teardown) cannot be acted on.
    if (ptr) cudaFree(ptr);
  }
  void upload(void* dst, const void* host_src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // host_src may be freed by the caller right after
  }
  void download(void* host_dst, const void* src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(void* ptr, size_t bytes) override { CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream_)); }
  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  // The tiled kernels save the probabilities like the CPU (the flash kernels of issue 8 will
  // save only the row log-sum-exp).
  size_t attention_saved_floats(int B, int T, int NH) const override {
    return static_cast<size_t>(B) * NH * T * T;
  }

  void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) override {
    cuda::encoder_forward(out, inp, wte, wpe, B, T, C, stream_);
  }
  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) override {
    cuda::encoder_backward(dwte, dwpe, dout, inp, B, T, C, stream_);
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                         const float* bias, int B, int T, int C) override {
    cuda::layernorm_forward(out, mean, rstd, inp, weight, bias, B, T, C, stream_);
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                          const float* rstd, const float* inp, const float* weight, int B, int T, int C) override {
    cuda::layernorm_backward(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C, stream_);
  }
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C,
                      int OC) override {
    cuda::matmul_forward(out, inp, weight, bias, B, T, C, OC, stream_);
  }
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int B, int T, int C, int OC) override {
    cuda::matmul_backward(dinp, dweight, dbias, dout, inp, weight, B, T, C, OC, stream_);
  }
  void attention_forward(float* out, float* saved, const float* qkv, int B, int T, int C, int NH,
                         const DropoutParams& dropout) override {
    cuda::attention_forward(out, saved, qkv, B, T, C, NH, dropout, stream_);
  }
  void attention_backward(float* dqkv, const float* dout, const float* saved, const float* qkv, int B, int T, int C,
                          int NH, const DropoutParams& dropout) override {
    cuda::attention_backward(dqkv, dout, saved, qkv, B, T, C, NH, dropout, stream_);
  }
  void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                        int NH) override {
    cuda::attention_decode(out, kcache, vcache, qkv, B, pos, maxT, C, NH, stream_);
  }
  void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C) override {
    cuda::kv_cache_store(kcache, vcache, qkv, B, T, maxT, C, stream_);
  }
  void gelu_forward(float* out, const float* inp, size_t N) override { cuda::gelu_forward(out, inp, N, stream_); }
  void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N) override {
    cuda::gelu_backward(dinp, dout, inp, N, stream_);
  }
  void residual_forward(float* out, const float* inp1, const float* inp2, size_t N) override {
    cuda::residual_forward(out, inp1, inp2, N, stream_);
  }
  void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N) override {
    cuda::residual_backward(dinp1, dinp2, dout, N, stream_);
  }
  void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N) override {
    cuda::dropout_forward(out, inp, dropout, N, stream_);
  }
  void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N) override {
    cuda::dropout_backward(dinp, dout, dropout, N, stream_);
  }
  void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V,
                            int Vp) override {
    cuda::crossentropy_forward(losses, logits, targets, B, T, V, Vp, stream_);
  }
  void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                             int Vp) override {
    cuda::crossentropy_backward(dlogits, dloss, logits, targets, B, T, V, Vp, stream_);
  }
  double sum_of_squares(const float* x, size_t N) override { return cuda::sum_of_squares(x, N, stream_); }
  void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp) override {
    cuda::adamw_update(params, m, v, grads, N, hp, stream_);
  }

 private:
  int device_;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail_input(format("--device cuda: no usable CUDA GPU ({}: {}); use --device cpu", cudaGetErrorName(err),
                      cudaGetErrorString(err)));
  }
  if (count == 0) fail_input("--device cuda: no CUDA GPU is present on this machine; use --device cpu");
  INPUT_CHECK(device >= 0 && device < count, "--cuda-device {} does not exist: this machine has {} CUDA device(s) (0..{})",
              device, count, count - 1);
  return std::make_unique<CudaBackend>(device);
}

bool cuda_backend_built() { return true; }

}  // namespace gpt2cc
