// What the CPU layer benchmarks share: timing by the median of runs (wall clock and process CPU
// time), the machine's ceilings (FMA rate, memory bandwidth), the relative error of a result
// against its reference, deterministic inputs; every large buffer in memory allocated as the CPU
// backend allocates a model's.
#pragma once

#include <omp.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "benchmarks/bench_cli.hpp"
#include "core/check.hpp"
#include "cpu/backend.hpp"

namespace gpt2cc::bench {

// Host memory as the CPU backend allocates a model's tensors (cpu::CpuBackend::allocate: whole
// 2 MiB pages advised huge from 4 MiB up), so that a layer timed here pays the address
// translation it pays in a training step, not that of 4 KiB pages.
template <class T>
struct BackendAllocator {
  using value_type = T;
  BackendAllocator() = default;
  template <class U>
  BackendAllocator(const BackendAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(backend().allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t) noexcept { backend().release(p); }
  template <class U>
  bool operator==(const BackendAllocator<U>&) const noexcept {
    return true;
  }
  static cpu::CpuBackend& backend() {
    static cpu::CpuBackend allocator;  // threads 0: leaves OpenMP's setting as it is
    return allocator;
  }
};
template <class T>
using BackendVector = std::vector<T, BackendAllocator<T>>;

inline double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

struct Timing {
  double wall_s;  // median wall-clock seconds per call
  double cpu_s;   // median process CPU seconds per call
};

// The median of `reps` timed calls of f after one untimed one (caches, page faults, the thread
// pool); before() runs untimed ahead of each call (e.g. to evict f's inputs from the caches).
template <class F, class Before>
Timing time_median(F&& f, int reps, Before&& before) {
  before();
  f();
  std::vector<double> wall, cpu;
  for (int r = 0; r < reps; ++r) {
    before();
    const double c0 = cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cpu.push_back(cpu_seconds() - c0);
  }
  return {median(wall), median(cpu)};
}

template <class F>
Timing time_median(F&& f, int reps) {
  return time_median(f, reps, [] {});
}

// The least wall-clock seconds of `reps` calls after one untimed one: for a ceiling, the best the
// machine showed (on a shared VM the memory's rate varies by a third from minute to minute).
template <class F>
double time_best(F&& f, int reps) {
  f();
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = r == 0 ? s : std::min(best, s);
  }
  return best;
}

// A ceiling: `chains` (a register loop of independent multiply-add chains, returning a value that
// keeps it alive) on every thread at once, doing `flops` each. Returns GFLOP/s over all threads
// (wall clock); cpu_rate gets GFLOP per CPU-second.
inline double chains_ceiling_gflops(double& cpu_rate, float (*chains)(), double flops) {
  float sink = 0.0f;
  const double c0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  int threads = 1;
#pragma omp parallel reduction(+ : sink)
  {
#pragma omp single
    threads = omp_get_num_threads();
    sink += chains();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (sink == 12345.0f) std::printf(" ");
  const double gflop = threads * flops * 1e-9;
  cpu_rate = gflop / (cpu_seconds() - c0);
  return gflop / s;
}

inline constexpr int kCeilingChains = 12;
inline constexpr long kCeilingIterations = 20000000;

// Twelve independent chains of 8-wide FMAs (enough to cover FMA latency x 2 pipes), in registers
// (AVX2's: named here, as a build without -march, e.g. Debug, has none to hold 8 floats).
__attribute__((target("avx2,fma"))) inline float fma_chains() {
  typedef float vec8 __attribute__((vector_size(32)));
  vec8 acc[kCeilingChains];
  for (int i = 0; i < kCeilingChains; ++i) acc[i] = vec8{} + 0.001f * i;
  vec8 a = vec8{} + 0.999999f, b = vec8{} + 1e-7f;
  for (long it = 0; it < kCeilingIterations; ++it) {
    for (int i = 0; i < kCeilingChains; ++i) acc[i] = acc[i] * a + b;
    asm volatile("" : "+x"(a));  // keeps the loop from being folded away
  }
  float sum = 0.0f;
  for (int i = 0; i < kCeilingChains; ++i) sum += acc[i][0];
  return sum;
}

// What a micro-kernel could reach with no memory traffic at all: fma_chains on every thread.
inline double fma_ceiling_gflops(double& cpu_rate) {
  return chains_ceiling_gflops(cpu_rate, fma_chains, double(kCeilingIterations) * kCeilingChains * 16.0);
}

#if defined(__x86_64__)
// The same for VDPBF16PS (AVX512-BF16): twelve independent 16-lane chains, each instruction two
// multiply-adds per lane (4 flops). Call only where the CPU has AVX512-BF16.
__attribute__((target("avx512f,avx512bf16"))) inline float dpbf16_chains() {
  __m512 acc[kCeilingChains];
  for (int i = 0; i < kCeilingChains; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  __m512i a = _mm512_set1_epi32(0x3f7f3f7f), b = _mm512_set1_epi32(0x33d633d6);  // ~0.998, ~1e-7
  for (long it = 0; it < kCeilingIterations; ++it) {
    for (int i = 0; i < kCeilingChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)a, (__m512bh)b);
    asm volatile("" : "+v"(a));  // keeps the loop from being folded away
  }
  float sum = 0.0f;
  for (int i = 0; i < kCeilingChains; ++i) sum += _mm512_cvtss_f32(acc[i]);
  return sum;
}

inline double dpbf16_ceiling_gflops(double& cpu_rate) {
  return chains_ceiling_gflops(cpu_rate, dpbf16_chains, double(kCeilingIterations) * kCeilingChains * 16.0 * 4.0);
}
#endif

// The sum of x[0..n) on all threads, each thread its own contiguous part read with four chains of
// 8-wide adds (their latency hidden: memory is the limit; a plain `omp simd` reduction reached a
// third of the rate here).
inline float sum_on_all_threads(const float* x, size_t n) {
  typedef float vec8 __attribute__((vector_size(32)));
  float total = 0.0f;
#pragma omp parallel reduction(+ : total)
  {
    const size_t threads = omp_get_num_threads(), thread = omp_get_thread_num();
    const size_t part = n / 32 / threads * 32, begin = thread * part;
    const size_t end = thread + 1 == threads ? n : begin + part;
    vec8 acc[4] = {};
    size_t i = begin;
    for (; i + 32 <= end; i += 32)
      for (int v = 0; v < 4; ++v) {
        vec8 chunk;
        std::memcpy(&chunk, x + i + 8 * v, sizeof chunk);
        acc[v] += chunk;
      }
    const vec8 sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (int lane = 0; lane < 8; ++lane) total += sum[lane];
    for (; i < end; ++i) total += x[i];
  }
  return total;
}

// Memory bandwidth, GB/s, on all threads over 256 MiB arrays (the caches hold a small fraction),
// each thread its own contiguous part, the best of 9 passes: reading one array (a sum), updating
// one in place (x = x * s + 1: each line read and written back; bytes read + written), copying
// one into another (bytes read + written, as STREAM counts them; the write allocates each
// destination line by reading it first, so this moves more bytes than it counts) and writing one
// alone (memset, whose large writes stream past the caches: on a Zen 4 VM 2.5x the read rate).
// per_direction(): the rate reads, and writes alongside them, reach: the faster of the read alone
// and half the update (whose reads and writes run concurrently). write_ceiling(): the most bytes
// written can reach, the better of that and the write alone (a layer that only writes, the zero
// of the gradients, came out above its roofline measured by reads).
struct MemoryBandwidth {
  double read_gbs, update_gbs, copy_gbs, write_gbs;
  double per_direction() const { return std::max(read_gbs, update_gbs / 2); }
  double write_ceiling() const { return std::max(per_direction(), write_gbs); }
};

inline MemoryBandwidth memory_bandwidth() {
  const size_t n = size_t{64} << 20;  // floats
  BackendVector<float> src(n, 1.0f), dst(n, 0.0f);
  const double bytes = double(n) * sizeof(float);
  float sink = 0;
  const double read = time_best([&] { sink += sum_on_all_threads(src.data(), n); }, 9);
  const double update = time_best(
      [&] {
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; ++i) dst[i] = dst[i] * 0.5f + 1.0f;
      },
      9);
  const double copy = time_best(
      [&] {
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; ++i) dst[i] = src[i];
      },
      9);
  const double write = time_best(
      [&] {
#pragma omp parallel
        {
          const size_t parts = size_t(omp_get_num_threads()), part = size_t(omp_get_thread_num());
          const size_t begin = n * part / parts, end = n * (part + 1) / parts;
          std::memset(dst.data() + begin, 0, (end - begin) * sizeof(float));
        }
      },
      9);
  if (sink == 12345.0f) std::printf(" ");
  return {bytes / read * 1e-9, 2 * bytes / update * 1e-9, 2 * bytes / copy * 1e-9, bytes / write * 1e-9};
}

// Reads a buffer larger than the last-level cache, so that what a call reads next comes from
// memory (the rooflines here are memory's, not a cache's). Reads, not writes: evicting with
// stores would leave the caches full of dirty lines whose write-back the timed call would pay.
class CacheEvictor {
 public:
  explicit CacheEvictor(size_t bytes = size_t{128} << 20) : buffer_(bytes / sizeof(float), 1.0f) {}
  void operator()() { sink_ += sum_on_all_threads(buffer_.data(), buffer_.size()); }
  float sink() const { return sink_; }

 private:
  BackendVector<float> buffer_;
  float sink_ = 0.0f;
};

// ||a - b|| / ||b|| of two vectors of one size (a benchmark's result against its reference).
inline double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  ENSURE(a.size() == b.size(), "rel_error: {} values against a reference of {}", a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// n values in [-1, 1], in memory the CPU backend allocated.
inline BackendVector<float> filled(size_t n, unsigned seed) {
  BackendVector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(((i * 2654435761u + seed) % 2001) / 1000.0 - 1.0);
  return v;
}

}  // namespace gpt2cc::bench
