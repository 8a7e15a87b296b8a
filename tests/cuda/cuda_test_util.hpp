// Helpers for the CUDA-vs-CPU tests: a device buffer that uploads a host vector, downloads, and
// poisons itself with NaN; one stream shared by the tests; and the comparison used everywhere
// (element-wise atol + rtol with atol scaled by the reference's largest magnitude, plus the
// relative L2 error), so a test states only its tolerance.
#pragma once

#include "common/catch.hpp"
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/test_common.hpp"
#include "core/backend.hpp"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::test {

// The compute dtypes a backend on device 0 offers: fp32, and bf16 from sm_80 (bf16 tensor cores).
inline std::vector<DType> device_dtypes() {
  int major = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  if (major >= 8) return {DType::fp32, DType::bf16};
  return {DType::fp32};
}

// Whether the current device is the CPU emulator (tests/emu/hostcuda names its devices so): tests
// at training shapes take smaller ones there.
inline bool on_cpu_emulator() {
  int device = 0;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return std::string(prop.name).rfind("gpt2cc CPU emulator", 0) == 0;
}

// A non-default stream, so a kernel that forgot its stream argument is caught by ordering.
inline cudaStream_t test_stream() {
  static cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }();
  return stream;
}

// Runs `call` (launches on `stream`) once: directly, or, with `recorded`, captured into a CUDA
// graph that is launched once and destroyed; then waits for the stream.
template <class Call>
void run_once(cudaStream_t stream, const Call& call, bool recorded) {
  if (!recorded) {
    call();
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return;
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  call();
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_CHECK(cudaGraphLaunch(exec, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
}

template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) { CUDA_CHECK(cudaMalloc(&ptr_, std::max<size_t>(1, count) * sizeof(T))); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }

  T* get() { return ptr_; }
  const T* get() const { return ptr_; }
  size_t size() const { return count_; }
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == count_);
    CUDA_CHECK(cudaMemcpyAsync(ptr_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice, test_stream()));
    CUDA_CHECK(cudaStreamSynchronize(test_stream()));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    CUDA_CHECK(cudaMemcpyAsync(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost, test_stream()));
    CUDA_CHECK(cudaStreamSynchronize(test_stream()));
    return host;
  }
  // All bytes 0xFF: a float NaN (and int -1), so an element the kernel forgets stays NaN.
  void poison() { fill_bytes(0xFF); }
  void zero() { fill_bytes(0); }

 private:
  // Everything goes through test_stream(), in order with the kernels under test: the legacy
  // default stream does not order against a non-blocking stream.
  void fill_bytes(int byte) {
    CUDA_CHECK(cudaMemsetAsync(ptr_, byte, count_ * sizeof(T), test_stream()));
    CUDA_CHECK(cudaStreamSynchronize(test_stream()));
  }

  T* ptr_ = nullptr;
  size_t count_ = 0;
};

inline double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// |a - e| <= tol * (max|expected| + |e|) element-wise and ||a - e|| / ||e|| <= tol; NaN fails.
inline void expect_matches(const std::vector<float>& actual, const std::vector<float>& expected,
                           const std::string& what, double tol = 1e-5) {
  REQUIRE(actual.size() == expected.size());
  expect_close(actual, expected, tol * std::max(max_abs(expected), 1e-30), tol, what);
  if (max_abs(expected) > 0.0) {
    INFO(what << ": relative L2 error");
    CHECK(rel_error(actual, expected) <= tol);
  }
}

}  // namespace gpt2cc::test
