// A CUDA-execution emulator for the device code of kernels/, so it runs on the CPU, compiled by
// g++ as host C++: blocks run one after another (or several resident at once, interleaved a
// barrier at a time: set_resident_blocks), the threads of a block as cooperative fibers sharing
// one shared-memory buffer. __syncthreads (and __syncthreads_or) is a block barrier;
// __shfl_xor_sync, __ballot_sync, ldmatrix and mma.sync m16n8k16 are warp collectives: all 32
// lanes arrive, then each lane's result is computed from every lane's input, as the PTX ISA
// defines them (cuda_emu.cpp cites the sections). Misuse the hardware would punish (a divergent
// collective, a barrier not reached by every thread, a misaligned or out-of-range ldmatrix, shared
// memory used past the launch's size) throws emu::Violation naming block/lane. Built with
// GPT2CC_SANITIZE=thread it is also a race detector (race_detector(); scripts/race_check.sh).
#pragma once

#include <cuda_bf16.h>  // the host side of bf16 and its conversions; also dim3, uint4, make_uint4

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <source_location>
#include <stdexcept>
#include <string>
#include <type_traits>

// cuda_bf16.h brings CUDA's host_defines.h, which on the host already empties __global__ and
// __device__ and makes __forceinline__ an always-inline `inline`; __launch_bounds__ is only
// defined for nvcc.
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
// A __shared__ variable is ONE object for the whole block, not a local of each thread: on the host
// it becomes thread_local, which at block scope means static storage per OS thread, and every
// fiber of the emulator runs on the same OS thread. `extern __shared__ T name[]` (the dynamic
// array) becomes `extern thread_local T name[]`, which refers to the namespace-scope array an
// emulation TU defines with GPT2CC_EMU_DYNAMIC_SHARED (below) in the kernel's namespace and
// registers with set_shared_memory. Static arrays (`__shared__ float s[32]`) live outside that
// buffer: they start zeroed and keep what the previous block left (no NaN fill, no size check).
// Resident blocks of an interleaved launch each run on an OS thread of their own, so each has its
// own instance of every such array, as blocks on a GPU have.
#undef __shared__
#define __shared__ thread_local

// Defines, at namespace scope, the array that kernels' `extern __shared__ Type name[]` refer to:
// kSharedCapacity bytes, 16-byte aligned, zero until a launch fills it. Why the initializer: GCC 12
// makes template code call the TLS init function of an extern thread_local unconditionally, and
// emits that function only for a definition with a dynamic initializer; without one the call
// jumps to address 0. dynamic_zero() is 0, from another TU, so the initializer stays dynamic.
#define GPT2CC_EMU_DYNAMIC_SHARED(Type, name)                                                     \
  alignas(16) thread_local Type name[::gpt2cc::emu::kSharedCapacity / sizeof(Type)] = {          \
      static_cast<Type>(::gpt2cc::emu::dynamic_zero())}

// The built-in variables of the running thread: set by the scheduler before it resumes a fiber.
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

namespace gpt2cc::emu {

// A rule of the CUDA/PTX execution model broken by the emulated code (or a launch the hardware
// would refuse). Thrown by launch() after the block is abandoned.
struct Violation : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Shared memory: one buffer for every block of every launch (the definition of the code's
// `extern __shared__` array: GPT2CC_EMU_DYNAMIC_SHARED and set_shared_memory).
inline constexpr size_t kSharedCapacity = 227 * 1024;  // the sm_90 per-block maximum

// Registers the definition of the code's `extern __shared__` array (GPT2CC_EMU_DYNAMIC_SHARED, or
// any buffer of `capacity` bytes, 16-byte aligned) as the shared window; launches use its first
// smem_bytes bytes.
void set_shared_memory(void* base, size_t capacity);
// The same for a thread_local array: instance() returns the calling OS thread's instance (for
// GPT2CC_EMU_DYNAMIC_SHARED(T, name): a function returning `name`). Needed by interleaved launches
// that use shared memory: each resident block's thread then works in its own instance.
void set_shared_memory(void* (*instance)(), size_t capacity);
int dynamic_zero();  // 0; see GPT2CC_EMU_DYNAMIC_SHARED
// The byte every block's shared memory starts filled with (default 0xFF: NaN as bf16 and fp32,
// so a read of shared memory the block never wrote shows in the results).
void set_unwritten_shared_byte(unsigned char byte);

// The order in which the threads of a block run between barriers and collectives, and the blocks
// of a grid one after another. A kernel without races computes the same bits under every
// schedule; one missing a __syncthreads does not, nor does one whose blocks read what other blocks
// of the same launch write (CUDA gives blocks no order): run it under each and compare.
//   kWarpsAscending : warp 0 runs until it waits at a barrier (or all of it exited), then warp 1, ...;
//                     blocks in ascending order (x fastest, then y, then z)
//   kWarpsDescending: the same from the last warp down, and from the last block down
//   kLockstep       : one collective per warp in turn (warps advance together); blocks ascending
enum class Schedule { kWarpsAscending, kWarpsDescending, kLockstep };
inline constexpr Schedule kSchedules[] = {Schedule::kWarpsAscending, Schedule::kWarpsDescending, Schedule::kLockstep};
void set_schedule(Schedule schedule);

// The architecture the emulated code is compiled for (major * 10 + minor, as __CUDA_ARCH__ / 10;
// 0, the default: any). An instruction the PTX ISA gives only newer targets (mma.sync m16n8k16
// bf16, cp.async: sm_80) then throws Violation instead of running: on a GPU the code would not
// hold it (gpt2cc compiles such kernels to a trap there). The host runtime of tests/emu/hostcuda
// sets the version of the kernel image its emulated GPU runs.
void set_code_architecture(int arch);
// Throws Violation when the code's architecture (above) is set and older than `arch`.
void require_architecture(int arch, const char* instruction);

// How many blocks of a launch are resident at once (default 1, or $GPT2CC_EMU_RESIDENT_BLOCKS;
// 1..32), and whose turn it is among them ($GPT2CC_EMU_TURNS: round-robin or newest-first). With
// n > 1, the first n blocks of the schedule's block order start, then the next one each time one
// exits; they run one pass at a time (every thread runs until it waits at a barrier, a collective
// or a flag; a release store ends the pass at once), so a block runs while one it reads from has
// not finished (or has set its flag before its other threads stored): a wait for another
// block's flag (wait_until_equal) waits for it, and a kernel that reads another block's results
// without waiting, or waits without holding its other threads at a barrier, reads them half
// written. Turns:
//   kRoundRobin : each resident block in turn, a pass each: blocks advance together
//   kNewestFirst: the block that started last runs until it waits at a flag (or ends), then the one
//                 before it, and so on: a later block gets as far ahead of earlier ones as it can
// When every resident block waits at a flag the launch stops with a Violation (on a GPU with that
// many resident blocks: a hang). The order of turns is fixed by the launch, so runs repeat.
enum class Turns { kRoundRobin, kNewestFirst };
void set_resident_blocks(int blocks, Turns turns = Turns::kRoundRobin);

// The index in `names` of environment variable `variable`'s value, 0 (the default) when it is
// unset; any other value ends the process (exit 2) with a message listing the names. For the
// settings a whole test executable can be run under (GPT2CC_EMU_SCHEDULE, ...).
int env_choice(const char* variable, std::initializer_list<const char*> names);

// Whether the emulator is also a race detector: built with GPT2CC_SANITIZE=thread, ThreadSanitizer
// reports two accesses to one address, one a store, by emulated threads that nothing CUDA defines
// orders (cuda_emu.cpp, at Machine, says what does). race_reports(): the reports printed so far
// in this process (0 without it).
bool race_detector();
size_t race_reports();

// Runs body() as every thread of every block of the grid. Throws Violation on misuse.
void launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body);

template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, size_t smem_bytes, Kernel kernel, const Args&... args) {
  launch(grid, block, smem_bytes, std::function<void()>([&] { kernel(args...); }));
}

// Instruction emulations (PTX ISA 9.0 semantics; see cuda_emu.cpp).
uint32_t shared_address(const void* p);                                   // cvta.to.shared
void ldmatrix_x4(uint32_t (&r)[4], uint32_t shared_addr, bool trans);     // ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16
void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);  // mma.sync...row.col.f32.bf16.bf16.f32
uint32_t shfl_xor(unsigned mask, uint32_t value, int lane_mask, int width);  // shfl.sync.bfly.b32
uint32_t ballot(unsigned mask, bool predicate);                           // vote.sync.ballot.b32
void syncthreads(const std::source_location& where);                      // barrier.sync 0
bool syncthreads_or(bool predicate, const std::source_location& where);   // barrier.red.or.pred 0

// Blocks that wait for other blocks, through flags in global memory (PTX ISA 9.0: atom.global.add,
// ld.acquire.gpu, st.release.gpu, fence.acq_rel.gpu). With blocks one after another (one resident)
// a flag holds everything earlier blocks wrote and nothing later ones will: wait_until_equal
// checks it once and throws Violation when it differs, where a GPU would spin until some block not
// yet run sets it (forever, if that block cannot become resident while the waiter occupies the
// SM). A kernel that passes waits only on blocks that started before it. With several resident
// (set_resident_blocks) the waiting thread blocks until the flag holds the value. The others are
// the plain memory operations: one OS thread runs at a time, handing over under a mutex, so every
// store is seen by every later load. What this cannot show: a missing fence or a missing
// .acquire/.release (no weaker memory model is emulated).
uint32_t atomic_add(uint32_t* address, uint32_t value);                  // atom.global.add.u32, returns the old value
void wait_until_equal(const uint32_t* address, uint32_t value);           // spin on ld.acquire.gpu until == value
void store_release(uint32_t* address, uint32_t value);                    // st.release.gpu.global.u32
void threadfence();                                                       // fence.acq_rel.gpu (__threadfence)

}  // namespace gpt2cc::emu

// The CUDA intrinsics the emulated code calls, by their CUDA names. A 64-bit shuffle is two
// 32-bit ones, low word first, as CUDA's own __shfl_xor_sync(double) is (sm_30_intrinsics.hpp).
template <class T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  static_assert((sizeof(T) == 4 || sizeof(T) == 8) && std::is_trivially_copyable_v<T>,
                "the emulator shuffles 32-bit and 64-bit values");
  uint32_t words[sizeof(T) / 4];
  std::memcpy(words, &value, sizeof(T));
  for (uint32_t& word : words) word = gpt2cc::emu::shfl_xor(mask, word, lane_mask, width);
  std::memcpy(&value, words, sizeof(T));
  return value;
}
inline unsigned __ballot_sync(unsigned mask, int predicate) { return gpt2cc::emu::ballot(mask, predicate != 0); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline void __syncthreads(const std::source_location& where = std::source_location::current()) {
  gpt2cc::emu::syncthreads(where);
}
inline int __syncthreads_or(int predicate, const std::source_location& where = std::source_location::current()) {
  return gpt2cc::emu::syncthreads_or(predicate != 0, where) ? 1 : 0;
}
inline size_t __cvta_generic_to_shared(const void* p) { return gpt2cc::emu::shared_address(p); }

// Device math that has no host declaration. rsqrtf is correctly rounded here; the device's is
// within 2 ulp (CUDA Programming Guide, "Mathematical Functions"), which the tests' tolerances hold.
// min / max: CUDA's integer overloads, both operands of one type (float code uses fminf / fmaxf).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <class T>
  requires std::is_integral_v<T>
inline T min(T a, T b) {
  return a < b ? a : b;
}
template <class T>
  requires std::is_integral_v<T>
inline T max(T a, T b) {
  return a > b ? a : b;
}
