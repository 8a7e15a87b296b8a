// The host CUDA runtime's inside, shared by its parts (runtime.cpp: streams, memory, graphs;
// cublas.cpp, cublaslt.cpp) and by the kernels/ sources that translate.py rewrote: a launch
// `kernel<<<grid, block, smem, stream>>>(args)` becomes kernel_call(shared, kernel, grid, block,
// smem, stream)(args), which checks the configuration as cudaLaunchKernel does (an error goes to
// cudaGetLastError and the kernel does not run), converts the arguments to the kernel's parameter
// types and copies them (as a launch does), then runs the grid on the CPU emulator (cuda_emu.hpp)
// when the stream reaches it: at once, or at each replay of a graph captured from the stream.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu/cuda_emu.hpp"

namespace gpt2cc::hostcuda {

// The emulated device's memory: what cudaMemGetInfo and cudaGetDeviceProperties report and where
// allocations start failing. 80 GiB, or $GPT2CC_EMU_DEVICE_MIB MiB (read once; a value that is not
// a positive number of MiB ends the process with a message): a small device makes out-of-memory
// paths reachable (bench_train_gpu -B auto probing down from 512 rows).
size_t device_memory_bytes();

// The array a translation unit's `extern __shared__` declarations refer to (none: instance null):
// a thread_local array, so instance() returns the calling OS thread's (the emulator runs the
// resident blocks of an interleaved launch on threads of their own, emu::set_resident_blocks).
struct DynamicShared {
  void* (*instance)() = nullptr;
  size_t capacity = 0;
};

// Stream order: runs `work` now, or, while `stream` captures, appends it to the graph being
// captured (run at each replay). The error CUDA gives for the stream (unknown, destroyed,
// capture invalidated), and then `work` is dropped.
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work);

// The configuration checks of cudaLaunchKernel: block and grid limits of sm_90, dynamic shared
// memory within 48 KiB or the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize (kernel null:
// a template whose arguments the launch deduces, address unknown here: the sm_90 maximum). The
// error is also the thread's last error.
cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes);

// Runs one grid on the emulator over `shared`, then checks no cp.async copy was left in flight.
void run_grid(const DynamicShared& shared, dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body);

// Whether [p, p + bytes) lies inside one live device allocation (cudaMalloc / cudaMallocAsync).
bool is_device_memory(const void* p, size_t bytes);

// Sets the calling thread's last error (cudaGetLastError) when `err` is one; returns it.
cudaError_t record_error(cudaError_t err);

template <class... Params>
class KernelCall {
 public:
  KernelCall(DynamicShared shared, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
             cudaStream_t stream)
      : shared_(shared), kernel_(kernel), grid_(grid), block_(block), smem_bytes_(smem_bytes), stream_(stream) {}

  template <class... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "a kernel launch with the wrong number of arguments");
    std::tuple<std::decay_t<Params>...> values(std::forward<Args>(args)...);
    if (check_launch(reinterpret_cast<const void*>(kernel_), grid_, block_, smem_bytes_) != cudaSuccess) return;
    record_error(enqueue(stream_, [shared = shared_, kernel = kernel_, grid = grid_, block = block_,
                                   smem_bytes = smem_bytes_, values = std::move(values)] {
      run_grid(shared, grid, block, smem_bytes, [&] { std::apply(kernel, values); });
    }));
  }

 private:
  DynamicShared shared_;
  void (*kernel_)(Params...);
  dim3 grid_, block_;
  size_t smem_bytes_;
  cudaStream_t stream_;
};

// A launch of a kernel template whose template arguments CUDA deduces from the launch's
// arguments: `call` is a generic lambda calling the kernel, the arguments are kept as given.
template <class Call>
class DeducedKernelCall {
 public:
  DeducedKernelCall(DynamicShared shared, Call call, dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream)
      : shared_(shared), call_(call), grid_(grid), block_(block), smem_bytes_(smem_bytes), stream_(stream) {}

  template <class... Args>
  void operator()(Args&&... args) const {
    std::tuple<std::decay_t<Args>...> values(std::forward<Args>(args)...);
    if (check_launch(nullptr, grid_, block_, smem_bytes_) != cudaSuccess) return;
    record_error(enqueue(stream_, [shared = shared_, call = call_, grid = grid_, block = block_,
                                   smem_bytes = smem_bytes_, values = std::move(values)] {
      run_grid(shared, grid, block, smem_bytes, [&] { std::apply(call, values); });
    }));
  }

 private:
  DynamicShared shared_;
  Call call_;
  dim3 grid_, block_;
  size_t smem_bytes_;
  cudaStream_t stream_;
};

template <class Call>
DeducedKernelCall<Call> kernel_call_deduced(DynamicShared shared, Call call, dim3 grid, dim3 block,
                                            size_t smem_bytes = 0, cudaStream_t stream = nullptr) {
  return DeducedKernelCall<Call>(shared, call, grid, block, smem_bytes, stream);
}

template <class... Params>
KernelCall<Params...> kernel_call(DynamicShared shared, void (*kernel)(Params...), dim3 grid, dim3 block,
                                  size_t smem_bytes = 0, cudaStream_t stream = nullptr) {
  return KernelCall<Params...>(shared, kernel, grid, block, smem_bytes, stream);
}

}  // namespace gpt2cc::hostcuda
