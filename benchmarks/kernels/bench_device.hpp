// What the CUDA kernel benchmarks (bench_kernels.cpp, bench_attention.cpp) share: a device array
// that uploads and downloads host vectors, host values as an element type (bf16: round to
// nearest even) and back, seeded uniform inputs, the relative L2 error used to validate before
// timing, and a CUDA-event timer reporting the median (optionally flushing L2 before each run).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <vector>

#include "benchmarks/bench_cli.hpp"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::bench {

template <class T>
class DeviceVec {
 public:
  explicit DeviceVec(size_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T))); }
  // cudaMemcpy from pageable memory may return before its DMA lands, and the legacy default
  // stream does not order against the benchmark's non-blocking stream: synchronise the device.
  explicit DeviceVec(const std::vector<T>& host) : DeviceVec(host.size()) {
    CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;
  ~DeviceVec() { cudaFree(p_); }
  T* get() { return p_; }
  std::vector<T> host() const {
    CUDA_CHECK(cudaDeviceSynchronize());  // the kernels ran on a non-blocking stream
    std::vector<T> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// Host values as the element type (bf16: round to nearest even) and back (exact).
template <class Elem>
std::vector<Elem> to_elem(const std::vector<float>& v) {
  if constexpr (std::is_same_v<Elem, float>) {
    return v;
  } else {
    std::vector<Elem> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
    return out;
  }
}
template <class Elem>
std::vector<float> to_float(const std::vector<Elem>& v) {
  if constexpr (std::is_same_v<Elem, float>) {
    return v;
  } else {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
    return out;
  }
}
// The exact values an Elem kernel sees: what the reference must run on.
template <class Elem>
std::vector<float> rounded(const std::vector<float>& v) {
  return to_float<Elem>(to_elem<Elem>(v));
}

// Uniform floats in [lo, hi) from a 64-bit LCG: fast enough for the 400M-element logits.
inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (float& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = lo + (hi - lo) * static_cast<float>(s >> 40) * (1.0f / 16777216.0f);
  }
  return v;
}

// ||got - ref|| / ||ref|| over `rows` rows of `width` elements starting at column `offset` of
// rows `stride` apart (the whole of a packed array: rows = 1, stride = width = size); infinite
// when got holds a NaN/Inf.
inline double rel_l2(const std::vector<float>& got, const std::vector<float>& ref, size_t rows, size_t stride,
                     size_t offset, size_t width) {
  double num = 0.0, den = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < width; ++c) {
      const size_t i = r * stride + offset + c;
      const double d = static_cast<double>(got[i]) - ref[i];
      num += d * d;
      den += static_cast<double>(ref[i]) * ref[i];
    }
  }
  if (!std::isfinite(num)) return INFINITY;
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}
inline double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  return rel_l2(got, ref, 1, ref.size(), 0, ref.size());
}

// Times an op on `stream`: `warmup` untimed runs, then per repetition (after an L2 flush outside
// the timed interval when flush_l2: a memset over twice the L2 size) CUDA events around the op.
// Returns the median over `reps` in ms.
class Timer {
 public:
  Timer(cudaStream_t stream, int warmup, int reps, bool flush_l2) : stream_(stream), warmup_(warmup), reps_(reps) {
    if (flush_l2) {
      int device = 0, l2 = 0;
      CUDA_CHECK(cudaGetDevice(&device));
      CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
      flush_bytes_ = std::max<size_t>(2 * static_cast<size_t>(l2), 64 << 20);
      CUDA_CHECK(cudaMalloc(&flush_, flush_bytes_));
    }
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Timer() {
    cudaFree(flush_);
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  double median_ms(const std::function<void()>& op) {
    for (int i = 0; i < warmup_; ++i) op();
    std::vector<double> ms;
    for (int i = 0; i < reps_; ++i) {
      if (flush_) CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xff, flush_bytes_, stream_));
      CUDA_CHECK(cudaEventRecord(start_, stream_));
      op();
      CUDA_CHECK(cudaEventRecord(stop_, stream_));
      CUDA_CHECK(cudaEventSynchronize(stop_));
      float elapsed = 0.0f;
      CUDA_CHECK(cudaEventElapsedTime(&elapsed, start_, stop_));
      ms.push_back(elapsed);
    }
    return float(bench::median(ms));
  }

 private:
  cudaStream_t stream_;
  int warmup_, reps_;
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

}  // namespace gpt2cc::bench
