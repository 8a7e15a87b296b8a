// Error checks for every CUDA runtime and cuBLAS call, and for every kernel launch.
//   CUDA_CHECK(cudaMalloc(&p, n));   CUBLAS_CHECK(cublasSgemm(...));   launch<<<...>>>(); CUDA_CHECK_LAUNCH();
// A failure throws gpt2cc::Error naming the expression, file:line and CUDA's error string
// (OutOfMemoryError when the device ran out of memory, so every program reports it as such).
// Also: ceil_div for grid sizes, and stream-ordered scratch memory (ScratchBuffer).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "core/check.hpp"

namespace gpt2cc::cuda {

[[noreturn]] inline void fail_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  const std::string what = format("CUDA error {} ({}) in `{}` at {}:{}", cudaGetErrorName(err), cudaGetErrorString(err),
                                  expr, file, line);
  if (err == cudaErrorMemoryAllocation) throw OutOfMemoryError(what);
  throw Error(what);
}

[[noreturn]] inline void fail_cublas(cublasStatus_t status, const char* expr, const char* file, int line) {
  const std::string what = format("cuBLAS error {} ({}) in `{}` at {}:{}", cublasGetStatusName(status),
                                  cublasGetStatusString(status), expr, file, line);
  if (status == CUBLAS_STATUS_ALLOC_FAILED) throw OutOfMemoryError(what);
  throw Error(what);
}

// Grid size: the number of blocks of `block` that cover `n` items.
template <class N, class M>
constexpr N ceil_div(N n, M block) {
  return (n + static_cast<N>(block) - 1) / static_cast<N>(block);
}

}  // namespace gpt2cc::cuda

#define CUDA_CHECK(expr)                                                                    \
  do {                                                                                      \
    cudaError_t gpt2cc_err_ = (expr);                                                       \
    if (gpt2cc_err_ != cudaSuccess) ::gpt2cc::cuda::fail_cuda(gpt2cc_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                        \
  do {                                                                                            \
    cublasStatus_t gpt2cc_status_ = (expr);                                                       \
    if (gpt2cc_status_ != CUBLAS_STATUS_SUCCESS)                                                  \
      ::gpt2cc::cuda::fail_cublas(gpt2cc_status_, #expr, __FILE__, __LINE__);                     \
  } while (0)

// After a kernel launch: catches bad launch configurations (cudaGetLastError). Errors inside the
// kernel surface at the next synchronising call, which is checked too. cudaGetLastError also
// returns an error an earlier call left unchecked, or a fault of earlier asynchronous work: the
// message says so rather than blaming this launch alone.
#define CUDA_CHECK_LAUNCH()                                                                         \
  do {                                                                                              \
    cudaError_t gpt2cc_err_ = cudaGetLastError();                                                   \
    if (gpt2cc_err_ != cudaSuccess)                                                                 \
      ::gpt2cc::cuda::fail_cuda(gpt2cc_err_, "the kernel launch before this line, or earlier work", \
                                __FILE__, __LINE__);                                                \
  } while (0)

namespace gpt2cc::cuda {

// Hands back to the driver the device memory CUDA keeps cached for reuse: the default pool's free
// blocks (the backend sets its release threshold to never) and graph memory, which stays reserved
// after its launches, and even after its graphs are destroyed, until cudaDeviceGraphMemTrim.
// Waits for the device first: a pool trim releases only blocks whose frees the host has seen, and
// a graph trim only memory no launch in flight uses. For one retry after an allocation failed;
// not during a stream capture (it synchronises). Errors are returned, not thrown: the caller's
// retry reports what matters.
inline cudaError_t release_cached_memory(int device) {
  cudaError_t err = cudaDeviceSynchronize();
  cudaMemPool_t pool = nullptr;
  if (err == cudaSuccess) err = cudaDeviceGetDefaultMemPool(&pool, device);
  if (err == cudaSuccess) err = cudaMemPoolTrimTo(pool, 0);
  if (err == cudaSuccess) err = cudaDeviceGraphMemTrim(device);
  return err;
}

// After an allocation failed for memory: the error cleared, so that later calls work, and the
// device's free and total bytes, for the out-of-memory message.
struct DeviceMemory {
  size_t free_bytes = 0, total_bytes = 0;
};
inline DeviceMemory memory_after_failed_allocation() {
  cudaGetLastError();
  DeviceMemory m;
  cudaMemGetInfo(&m.free_bytes, &m.total_bytes);
  return m;
}

// Runs `attempt` (a CUDA allocation or launch) and, when it runs out of memory, hands the cached
// memory back (release_cached_memory) and runs it once more; returns what the last try returned.
// An error of the release itself is not about memory (cudaDeviceSynchronize reports a fault of
// earlier work there) and is thrown as the CUDA error it is. `release` is for tests.
template <class Attempt, class Release = cudaError_t (*)(int)>
cudaError_t retry_after_releasing_cache(int device, Attempt&& attempt, Release&& release = release_cached_memory) {
  const cudaError_t err = attempt();
  if (err != cudaErrorMemoryAllocation) return err;
  cudaGetLastError();
  const cudaError_t released = release(device);
  if (released == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return err;
  }
  if (released != cudaSuccess) fail_cuda(released, "release_cached_memory(device)", __FILE__, __LINE__);
  return attempt();
}

// The scratch that ScratchBuffers took on this host thread while their stream captured (each
// capture is one graph, kernels/backend.cu): bytes live now and the most live at once since the
// reset at the capture's start, which is the graph memory a launch of that graph maps (for its
// out-of-memory message).
struct CapturedScratch {
  size_t live = 0, peak = 0;
};
inline thread_local CapturedScratch captured_scratch;

// Temporary device memory for one op (partial sums, intermediate score matrices), allocated
// stream-ordered (cudaMallocAsync): the memory pool hands back the same blocks each step, so
// after the first step this costs no cudaMalloc and no synchronisation. When the device is out of
// memory outside a capture, the cached memory goes back (release_cached_memory) and the
// allocation is tried once more before OutOfMemoryError; any other error (cudaMallocAsync also
// returns errors of earlier asynchronous work) is reported as the CUDA error it is.
class ScratchBuffer {
 public:
  ScratchBuffer(size_t bytes, cudaStream_t stream) : stream_(stream), bytes_(bytes == 0 ? 1 : bytes) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    const bool known = cudaStreamIsCapturing(stream, &capture) == cudaSuccess;
    if (!known) cudaGetLastError();  // cudaMallocAsync reports what matters; a later launch check must not see it
    const auto attempt = [&] { return cudaMallocAsync(&ptr_, bytes_, stream); };
    int device = 0;
    cudaError_t err = known && capture == cudaStreamCaptureStatusNone && cudaGetDevice(&device) == cudaSuccess
                          ? retry_after_releasing_cache(device, attempt)
                          : attempt();
    if (err == cudaErrorMemoryAllocation) {
      const DeviceMemory m = memory_after_failed_allocation();
      throw OutOfMemoryError(format("CUDA out of memory: scratch of {} bytes asked, {} bytes free of {} ({}); "
                                    "try a smaller batch size or sequence length",
                                    bytes, m.free_bytes, m.total_bytes, cudaGetErrorString(err)));
    }
    if (err != cudaSuccess) fail_cuda(err, "cudaMallocAsync(&scratch, bytes, stream)", __FILE__, __LINE__);
    captured_ = known && capture == cudaStreamCaptureStatusActive;
    if (captured_) {
      captured_scratch.live += bytes_;
      if (captured_scratch.live > captured_scratch.peak) captured_scratch.peak = captured_scratch.live;
    }
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() {
    cudaFreeAsync(ptr_, stream_);
    if (captured_) captured_scratch.live -= bytes_;
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
  size_t bytes_;
  bool captured_ = false;
};

}  // namespace gpt2cc::cuda
