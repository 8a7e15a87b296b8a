// Dynamic shared memory above the 48 KiB a launch gets by default: the device's limit and the
// per-kernel opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize), once per device. Used by the
// flash attention launchers and the cached-row fused classifier.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda {

inline constexpr size_t kDefaultDynamicShared = 48 * 1024;

// The most shared memory (dynamic + static) a block may opt into on the current device (an
// attribute query: no synchronisation, allowed during stream capture).
inline size_t device_shared_optin() {
  int device = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(optin);
}

// Lets `kernel` launch with `bytes` of dynamic shared memory. Its static shared memory must be at
// most `static_bytes`, what the caller counted when it judged the fit (dynamic + static <= the
// opt-in limit) before the launch; `name` says which kernel and constant in an error.
template <class Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes, size_t static_bytes, const char* name) {
  cudaFuncAttributes attributes{};
  CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  ENSURE(attributes.sharedSizeBytes <= static_bytes,
         "{}: this build's kernel has {} bytes of static shared memory where {} are counted", name,
         attributes.sharedSizeBytes, static_bytes);
  if (bytes > kDefaultDynamicShared)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// Runs opt_in() once per device. Why per device: cudaFuncSetAttribute acts on the kernel in the
// current device's context, so a process launching on a second GPU must opt in again there (a
// process-wide once would leave it at 48 KiB and the launch would fail). One bit per device
// ordinal in `done`; ordinals >= 64 simply repeat the call.
template <class OptIn>
void once_per_device(std::atomic<uint64_t>& done, OptIn&& opt_in) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = device >= 0 && device < 64 ? uint64_t{1} << device : 0;
  if (done.load(std::memory_order_acquire) & bit) return;
  opt_in();
  done.fetch_or(bit, std::memory_order_acq_rel);
}

}  // namespace gpt2cc::cuda
