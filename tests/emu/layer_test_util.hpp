// Helpers for the emulated layer tests (tests/emu/test_emu_<layer>.cpp), which call the real
// cuda:: launchers of kernels/*.cuh (compiled for the CPU by tests/emu/hostcuda: device memory is
// host memory of the host runtime, every launch runs on the emulator at once) against cpu:: with
// the tolerances of tests/cuda: host buffers in either element type (as<Elem>, widened: from
// cuda/bf16_test_util.hpp) for test::DeviceBuffer, poisoned outputs, padding that misaligns the
// 16-byte packs, the one-bf16-rounding comparison of test_bf16_elementwise.cpp, and the check that
// every warp schedule of the emulator gives the same bits (a race shows as a difference).
#pragma once

#include "common/catch.hpp"
#include <cuda_bf16.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/test_common.hpp"
#include "cuda/bf16_host_util.hpp"
#include "cuda/bf16_test_util.hpp"  // expect_one_rounding
#include "cuda/cuda_test_util.hpp"  // DeviceBuffer, test_stream, expect_matches, max_abs, same_bits
#include "emu/cuda_emu.hpp"

namespace gpt2cc::test {

// n elements of all-ones bytes: NaN as float and as bf16, so an element a kernel forgets shows.
template <class Elem>
std::vector<Elem> poisoned(size_t n) {
  std::vector<Elem> v(n);
  std::memset(static_cast<void*>(v.data()), 0xFF, n * sizeof(Elem));
  return v;
}

// `offset` elements of `fill` before v: with offset 1 every pointer past the padding is 4-byte
// (float) or 2-byte (bf16) aligned only, which sends the launchers to their scalar kernels.
inline std::vector<float> padded(const std::vector<float>& v, size_t offset, float fill = 0.0f) {
  std::vector<float> r(offset, fill);
  r.insert(r.end(), v.begin(), v.end());
  return r;
}
// The last n values of v (drops the padding).
inline std::vector<float> tail(const std::vector<float>& v, size_t n) {
  return std::vector<float>(v.end() - static_cast<std::ptrdiff_t>(n), v.end());
}

// start + k * (once - start): the value after k identical accumulating calls.
inline std::vector<float> repeated(const std::vector<float>& start, const std::vector<float>& once, float k) {
  std::vector<float> r(start.size());
  for (size_t i = 0; i < r.size(); ++i) r[i] = start[i] + k * (once[i] - start[i]);
  return r;
}

// float: fp32 results within tol; bf16: rounded once from fp32 results that differ from the CPU's
// by float rounding only: relative L2 <= 1e-2 and element-wise one bf16 rounding (2^-8 relative)
// plus `slack` * max|ref| for the fp32 differences in values near zero.
template <class Elem>
void expect_output(const std::vector<float>& got, const std::vector<float>& ref, double tol, double slack,
                   const std::string& what) {
  if constexpr (std::is_same_v<Elem, float>) {
    expect_matches(got, ref, what, tol);
  } else {
    expect_rel_l2(got, ref, 1e-2, what);
    expect_bf16_rounding(got, ref, what + " element-wise", 5e-3, slack * std::max(max_abs(ref), 1e-30));
  }
}

// Every output of a computation, concatenated (bf16 widened: exact, so equal floats = equal bits).
inline std::vector<float> concat(std::initializer_list<const std::vector<float>*> parts) {
  std::vector<float> all;
  for (const auto* p : parts) all.insert(all.end(), p->begin(), p->end());
  return all;
}

// Runs `run` (returning every output, see concat) under the descending and the lockstep warp
// schedules and checks that each gives the bits of `ascending`, its result under the default one.
// A kernel that reads shared memory another warp has not written yet, or overwrites what one
// still reads, gives different bits under some order. The schedule is the emulator's, for every
// grid it runs: a launcher's kernels run under it because the host runtime's streams run their
// work at once, on the calling thread.
template <class Run>
void check_every_schedule(const std::vector<float>& ascending, Run run) {
  for (const emu::Schedule schedule : {emu::Schedule::kWarpsDescending, emu::Schedule::kLockstep}) {
    INFO("schedule " << static_cast<int>(schedule) << " against kWarpsAscending");
    struct Restore {
      ~Restore() { emu::set_schedule(emu::Schedule::kWarpsAscending); }
    } restore;
    emu::set_schedule(schedule);
    const std::vector<float> again = run();
    CHECK(same_bits(again, ascending));
  }
}

}  // namespace gpt2cc::test
