// Helpers shared by the emulator's kernel tests (test_emu_*.cpp): host buffers filled with a byte
// pattern (0xFF: NaN as fp32 and bf16, so an element a kernel forgets to write shows), conversion
// between float and the kernel's element type, bit-for-bit comparison, and a rerun under the
// other warp schedules (emu::Schedule), whose results must match the first run bit for bit.
#pragma once

#include <catch2/catch.hpp>
#include <cuda_bf16.h>

#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cuda/bf16_host_util.hpp"
#include "emu/cuda_emu.hpp"

namespace gpt2cc::test {

// n values of `byte` repeated (0xFF: NaN for bf16 and fp32).
template <class T>
std::vector<T> filled(size_t n, unsigned char byte) {
  std::vector<T> v(n);
  std::memset(static_cast<void*>(v.data()), byte, n * sizeof(T));
  return v;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// float values as the kernel's element type (float: unchanged; bf16: rounded to nearest even),
// and back (exact).
template <class Elem>
std::vector<Elem> to_elem(const std::vector<float>& x) {
  if constexpr (std::is_same_v<Elem, float>) {
    return x;
  } else {
    return to_bf16(x);
  }
}
template <class Elem>
std::vector<float> to_f32(const std::vector<Elem>& x) {
  if constexpr (std::is_same_v<Elem, float>) {
    return x;
  } else {
    return from_bf16(x);
  }
}

template <class Elem>
constexpr const char* elem_name() {
  return std::is_same_v<Elem, float> ? "float" : "bf16";
}

// Runs run() (the launches and the checks against the first run's results) under kWarpsDescending
// and kLockstep; the tests' first run is under the default kWarpsAscending, restored afterwards.
template <class Run>
void for_other_schedules(Run run) {
  struct Restore {
    ~Restore() { emu::set_schedule(emu::Schedule::kWarpsAscending); }
  } restore;
  for (const emu::Schedule schedule : {emu::Schedule::kWarpsDescending, emu::Schedule::kLockstep}) {
    INFO("schedule " << static_cast<int>(schedule) << " against kWarpsAscending");
    emu::set_schedule(schedule);
    run();
  }
}

}  // namespace gpt2cc::test
