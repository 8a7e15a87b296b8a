// What the CPU layer benchmarks share: timing by the median of runs (wall clock and process CPU
// time), the relative error of a result against its reference, deterministic inputs.
#pragma once

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

namespace gpt2cc::bench {

inline double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

struct Timing {
  double wall_s;  // median wall-clock seconds per call
  double cpu_s;   // median process CPU seconds per call
};

template <class F>
Timing time_median(F&& f, int reps) {
  f();  // warm-up: caches, page faults, thread pool
  std::vector<double> wall, cpu;
  for (int r = 0; r < reps; ++r) {
    const double c0 = cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cpu.push_back(cpu_seconds() - c0);
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  return {wall[reps / 2], cpu[reps / 2]};
}

inline double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

inline std::vector<float> filled(size_t n, unsigned seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(((i * 2654435761u + seed) % 2001) / 1000.0 - 1.0);
  return v;
}

}  // namespace gpt2cc::bench
