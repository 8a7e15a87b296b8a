// The emulator's scheduler and instruction semantics (see cuda_emu.hpp). Threads are fibers
// switched only at __syncthreads, warp collectives and flags between blocks (cooperative, in the
// deterministic order of the chosen Schedule and Turns), so plain loads and stores need no
// emulation. The semantics of
// ldmatrix, mma and shfl are written from the PTX ISA 9.0 text, not from the kernels' comments:
// the emulator is an independent reading of the spec against which our fragment code is checked.
#include "emu/cuda_emu.hpp"

#include "emu/cp_async_emu.hpp"
#include "emu/tsan_hooks.hpp"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace {
std::atomic<size_t> g_race_reports{0};
}

#if defined(GPT2CC_EMU_TSAN)
// ThreadSanitizer calls it after printing each report (a weak symbol of its runtime).
extern "C" void __tsan_on_report(const void*) { ++g_race_reports; }
#endif

namespace gpt2cc::emu {
namespace {

constexpr int kWarpSize = 32;
constexpr size_t kStackBytes = 256 * 1024;  // per fiber; the kernels keep < 4 KiB of registers
// Shared memory past the launch's size holds a canary that must stay: bytes C1 FF repeated, so a
// 16-bit or 32-bit read there (at an even offset) is a NaN too, unlike the 0xFF fill below it.
unsigned char canary(size_t offset) { return offset % 2 == 0 ? 0xC1 : 0xFF; }
// The canary of the whole buffer, made once: blocks copy and compare their part with memcpy /
// memcmp (per byte, the fill and check of 227 KiB dominated launches of many small blocks).
const unsigned char* canary_pattern() {
  static const std::vector<unsigned char> pattern = [] {
    std::vector<unsigned char> p(kSharedCapacity);
    for (size_t i = 0; i < p.size(); ++i) p[i] = canary(i);
    return p;
  }();
  return pattern.data();
}

// ---------------------------------------------------------------------------------------------
// Fiber contexts. make_context prepares a stack to run entry(); switch_context saves the running
// context into `from` and resumes `to`. On x86-64 a switch is a few instructions: the System V
// callee-saved registers (rbx, rbp, r12-r15) and the MXCSR / x87 control words pushed on the
// running stack, the stack pointers swapped, the other side's popped. Why not swapcontext: it
// also saves and restores the signal mask, a system call per switch (8 million of them in the
// encoder tests alone; the flash tests ran 20 s instead of 6). Elsewhere the ucontext functions.
// ---------------------------------------------------------------------------------------------
#if defined(__x86_64__)
extern "C" void gpt2cc_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .pushsection .text
  .p2align 4
  .type gpt2cc_emu_switch, @function
gpt2cc_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size gpt2cc_emu_switch, .-gpt2cc_emu_switch
  .popsection
)");

struct Context {
  void* sp = nullptr;  // the suspended side's stack pointer, its saved registers above it
};

// The stack as gpt2cc_emu_switch leaves a suspended context: control words, six registers (zero),
// then entry as the return address, and a null return address for entry itself (it never returns),
// so that entry starts with rsp = 8 (mod 16), as after a call.
void make_context(Context& c, char* stack, size_t size, void (*entry)()) {
  auto* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t{15});
  uint32_t mxcsr;
  uint16_t x87_control;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(x87_control));
  *--top = 0;
  *--top = reinterpret_cast<uint64_t>(entry);
  for (int i = 0; i < 6; ++i) *--top = 0;
  *--top = mxcsr | static_cast<uint64_t>(x87_control) << 32;
  c.sp = top;
}

void switch_context(Context& from, const Context& to) { gpt2cc_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};

void make_context(Context& c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}

void switch_context(Context& from, const Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

enum class State { kRunnable, kAtWarpOp, kAtBarrier, kAtFlag, kExited };
enum class Op { kShfl, kBallot, kLdmatrix, kLdmatrixTrans, kMma };

const char* op_name(Op op) {
  switch (op) {
    case Op::kShfl: return "shfl.sync.bfly";
    case Op::kBallot: return "vote.sync.ballot";
    case Op::kLdmatrix: return "ldmatrix.x4";
    case Op::kLdmatrixTrans: return "ldmatrix.x4.trans";
    case Op::kMma: return "mma.m16n8k16";
  }
  return "?";
}

struct Fiber {
  Context context;
  std::unique_ptr<char[]> stack;
  State state = State::kExited;
  bool barrier_result = false;  // what the last barrier.red.or returned to this thread
  const uint32_t* flag = nullptr;  // kAtFlag: runnable again once *flag == flag_value
  uint32_t flag_value = 0;
  void* asan_fake_stack = nullptr;
  void* tsan = nullptr;  // its ThreadSanitizer context (GPT2CC_EMU_TSAN), kept from block to block
};

// One warp's pending collective: the operation, the inputs each lane brought, the results.
struct WarpOp {
  Op op = Op::kShfl;
  int arrived = 0;
  uint32_t shfl_lane_mask[kWarpSize];  // shfl's b operand of each lane
  std::array<uint32_t, 10> in[kWarpSize];
  std::array<uint32_t, 4> out[kWarpSize];
};

// The schedule a process starts with: $GPT2CC_EMU_SCHEDULE = ascending (the default), descending
// or lockstep, so that a whole test executable (the tests/cuda suites on hostcuda, which know
// nothing of the emulator) can run under another order.
Schedule initial_schedule() {
  static_assert(static_cast<int>(Schedule::kWarpsDescending) == 1 && static_cast<int>(Schedule::kLockstep) == 2);
  return static_cast<Schedule>(env_choice("GPT2CC_EMU_SCHEDULE", {"ascending", "descending", "lockstep"}));
}

// How many blocks are resident at once: $GPT2CC_EMU_RESIDENT_BLOCKS (default 1: one after another),
// 1..kMaxResident; anything else stops the process.
constexpr int kMaxResident = 32;
int initial_resident() {
  const char* text = std::getenv("GPT2CC_EMU_RESIDENT_BLOCKS");
  if (text == nullptr) return 1;
  char* end = nullptr;
  const long n = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || n < 1 || n > kMaxResident) {
    std::fprintf(stderr, "GPT2CC_EMU_RESIDENT_BLOCKS must be a number of blocks from 1 to %d, got '%s'\n", kMaxResident,
                 text);
    std::exit(2);
  }
  return static_cast<int>(n);
}

// Whose turn it is among resident blocks: $GPT2CC_EMU_TURNS = round-robin (the default) or
// newest-first.
Turns initial_turns() {
  static_assert(static_cast<int>(Turns::kNewestFirst) == 1);
  return static_cast<Turns>(env_choice("GPT2CC_EMU_TURNS", {"round-robin", "newest-first"}));
}

// What the test sets for the launches to come (from its own thread, between launches).
struct Settings {
  void* shared = nullptr;              // the registered window (set_shared_memory with an address) ...
  void* (*shared_instance)() = nullptr;  // ... or the function giving the calling OS thread's instance
  size_t shared_capacity = 0;
  unsigned char unwritten_shared = 0xFF;  // bf16 / fp32 NaN: a read before any write shows
  Schedule schedule = initial_schedule();
  int resident = initial_resident();
  Turns turns = initial_turns();
  int code_architecture = 0;  // set_code_architecture: 0 = any
};
Settings g;

// An emulated SM slot running one block at a time: the launching thread's own (one block after
// another), or one per resident block, each on an OS thread of its own (see Interleaved).
struct Machine {
  unsigned char* shared = nullptr;  // this OS thread's view of the window
  size_t shared_capacity = 0;
  size_t smem_bytes = 0;  // what the current launch asked for
  int num_threads = 0;
  uint3 block{};          // the block it runs
  bool interleaved = false;  // a resident slot of Interleaved: hands over after each pass
  bool hand_over_after_fiber = false;  // ... and at once after a release store
  int slot = 0;
  std::vector<Fiber> fibers;
  std::vector<WarpOp> warps;
  int barrier_arrived = 0;
  bool barrier_or = false;  // OR of the predicates brought to the pending barrier.red.or
  // ThreadSanitizer: barriers alternate between two sync addresses, so that a thread leaving one
  // acquires the releases of that barrier's arrivals only, not those of threads already at the
  // next (which can come no sooner than every thread has left this one).
  unsigned barrier_generation = 0;
  char barrier_sync[2] = {};
  std::source_location barrier_site;
  Context scheduler;
  void* tsan_scheduler = nullptr;  // the OS thread's ThreadSanitizer context (GPT2CC_EMU_TSAN)
  const void* scheduler_stack = nullptr;  // for AddressSanitizer, learnt on the first switch
  size_t scheduler_stack_size = 0;
  int current = -1;  // the running fiber, -1 in the scheduler
  const std::function<void()>* body = nullptr;
  std::string failure;  // set by a fiber that broke a rule; the launch then stops
};
// machines[0] serves the launching thread, machines[1 + s] resident slot s. Fibers run on the OS
// thread of their machine, so `m` (and a kernel's thread_local __shared__ arrays) is that slot's.
Machine machines[1 + kMaxResident];
thread_local Machine* m = &machines[0];

// Under ThreadSanitizer (GPT2CC_SANITIZE=thread: this file uninstrumented, the emulated code
// instrumented; tsan_hooks.hpp) the emulator is a race detector for the emulated code: each
// emulated thread is a TSan fiber, switched to without synchronisation, and TSan is told only of
// the ordering that CUDA gives, so two accesses to one address, one a store, by threads that
// nothing below orders are reported as a data race:
//   - __syncthreads: each thread releases the block's barrier as it arrives and acquires it as it
//     leaves: what any thread did before a barrier happens before what every thread does after it;
//   - warp collectives (shfl, vote, mma, ldmatrix) exchange registers and order no memory between
//     the lanes (the CUDA memory model leaves that to __syncwarp); ldmatrix reads each lane's
//     16-byte row as that lane;
//   - cp.async writes its 16 bytes (and reads its source) as the issuing thread when issued, after
//     each barrier the thread passes while the copy is in flight, and at the wait_group that
//     completes it, since the PTX ISA lets it land any time in between (cp_async_emu.cpp);
//   - a release store of a flag releases the flag's address, a wait that sees the value acquires
//     it; atomics and fences order nothing (the emulator's own accesses are not instrumented);
//   - the OS thread running a block (the launching thread, or a resident slot's) happens before
//     each thread of the block and after all of them (handshakes at the block's start and end), so
//     blocks run one after another are ordered, as they must be for one reused shared-memory
//     buffer; resident blocks (set_resident_blocks) are ordered only by flags and their slots'
//     earlier blocks.
// What it adds to the schedules: a race shows even when every schedule gives the same bits (a
// store of the same value, an update of a location no result depends on, a read by a lane of its
// own warp's store without a barrier).

std::string block_name() {
  std::ostringstream s;
  s << "block (" << blockIdx.x << "," << blockIdx.y << "," << blockIdx.z << ")";
  return s.str();
}

// "lanes 0-7, 9" style list of the lanes of `warp` in state `state`.
std::string lanes_in(int warp, State state) {
  std::ostringstream s;
  int first = -1;
  bool any = false;
  for (int lane = 0; lane <= kWarpSize; ++lane) {
    const bool in = lane < kWarpSize && m->fibers[warp * kWarpSize + lane].state == state;
    if (in && first < 0) first = lane;
    if (!in && first >= 0) {
      s << (any ? ", " : "") << first;
      if (lane - 1 > first) s << "-" << lane - 1;
      any = true;
      first = -1;
    }
  }
  return s.str();
}

// For a rule broken by the collective of a whole warp (found when its last lane arrives).
[[noreturn]] void fail_warp(const std::string& what) {
  throw Violation(block_name() + ", warp " + std::to_string(m->current / kWarpSize) + ": " + what);
}

[[noreturn]] void fail(const std::string& what) {
  std::ostringstream s;
  s << block_name() << ", thread " << m->current << " (warp " << m->current / kWarpSize << ", lane "
    << m->current % kWarpSize << "): " << what;
  throw Violation(s.str());
}

// AddressSanitizer (GPT2CC_SANITIZE=address) must be told of every switch between stacks, or it
// takes the fibers' frames for overflows; without it these do nothing.
#if defined(__SANITIZE_ADDRESS__)
void start_switch(void** fake_stack, const void* bottom, size_t size) {
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
}
void finish_switch(void* fake_stack, const void** bottom_old, size_t* size_old) {
  __sanitizer_finish_switch_fiber(fake_stack, bottom_old, size_old);
}
// A fiber stack about to be reused: the frames left on it (a thread ends by switching away, never
// returning from fiber_main; a launch stopped by a Violation abandons its threads) keep their
// redzones poisoned.
void clear_stack(char* stack, size_t size) { __asan_unpoison_memory_region(stack, size); }
#else
void start_switch(void**, const void*, size_t) {}
void finish_switch(void*, const void**, size_t*) {}
void clear_stack(char*, size_t) {}
#endif

// Device-side calls (collectives, barriers, address conversion) made outside a launch.
void require_launch(const char* what) {
  if (m->current < 0) throw Violation(std::string(what) + " called outside an emulated launch");
}

// Back to the scheduler; returns when this fiber is resumed.
void yield() {
  Fiber& f = m->fibers[m->current];
  tsan::switch_to(m->tsan_scheduler);
  start_switch(&f.asan_fake_stack, m->scheduler_stack, m->scheduler_stack_size);
  switch_context(f.context, m->scheduler);
  finish_switch(f.asan_fake_stack, &m->scheduler_stack, &m->scheduler_stack_size);
}

// A thread's whole life: the kernel body, then back to the scheduler for good.
[[noreturn]] void fiber_main() {
  finish_switch(nullptr, &m->scheduler_stack, &m->scheduler_stack_size);
  try {
    (*m->body)();
  } catch (const std::exception& e) {
    if (m->failure.empty()) m->failure = e.what();
    // The report is the emulator's, not the emulated thread's: the scheduler reads it.
    tsan::handshake(m->fibers[m->current].tsan, m->tsan_scheduler);
  }
  m->fibers[m->current].state = State::kExited;
  tsan::switch_to(m->tsan_scheduler);
  start_switch(nullptr, m->scheduler_stack, m->scheduler_stack_size);  // this stack is done
  switch_context(m->fibers[m->current].context, m->scheduler);
  __builtin_unreachable();
}

// ---------------------------------------------------------------------------------------------
// Warp collectives. The arriving lane stores its inputs; the 32nd computes every lane's result
// from all inputs and wakes the others, so no lane sees a result before every lane has arrived.
// ---------------------------------------------------------------------------------------------
template <class Compute>
const std::array<uint32_t, 4>& warp_collective(Op op, const std::array<uint32_t, 10>& in, Compute compute) {
  require_launch(op_name(op));
  const int warp = m->current / kWarpSize, lane = m->current % kWarpSize;
  WarpOp& w = m->warps[warp];
  for (int l = 0; l < kWarpSize; ++l) {
    // PTX ISA (mma, ldmatrix, shfl.sync): behaviour is undefined if a thread of the warp exited.
    if (m->fibers[warp * kWarpSize + l].state == State::kExited)
      fail(std::string("divergent warp collective: ") + op_name(op) + " executed while lanes " +
           lanes_in(warp, State::kExited) + " of the warp have exited");
  }
  if (w.arrived > 0 && w.op != op)
    fail(std::string("divergent warp collective: this lane executes ") + op_name(op) + " while lanes " +
         lanes_in(warp, State::kAtWarpOp) + " wait at " + op_name(w.op));
  w.op = op;
  w.in[lane] = in;
  if (++w.arrived < kWarpSize) {
    m->fibers[m->current].state = State::kAtWarpOp;
    yield();
  } else {
    w.arrived = 0;
    compute(w);
    for (int l = 0; l < kWarpSize; ++l) m->fibers[warp * kWarpSize + l].state = State::kRunnable;
  }
  return w.out[lane];
}

uint16_t shared_b16(uint32_t addr) {
  uint16_t v;
  std::memcpy(&v, m->shared + addr, 2);
  return v;
}

// A bf16 held in half `half` (0 = bits 0-15) of a .b32 register, as a double (exact).
double bf16_half(uint32_t reg, int half) {
  const uint32_t f32 = (half == 0 ? reg & 0xFFFFu : reg >> 16) << 16;  // bf16 = top half of an fp32
  float f;
  std::memcpy(&f, &f32, 4);
  return f;
}

// Waits at barrier 0 until every live thread of the block arrives (release_barrier_if_complete).
void arrive_at_barrier(const std::source_location& where) {
  if (m->barrier_arrived > 0 &&
      (where.line() != m->barrier_site.line() || std::strcmp(where.file_name(), m->barrier_site.file_name()) != 0)) {
    std::ostringstream s;
    s << "__syncthreads at " << where.file_name() << ":" << where.line() << " while other threads wait at the one at "
      << m->barrier_site.file_name() << ":" << m->barrier_site.line();
    fail(s.str());
  }
  m->barrier_site = where;
  ++m->barrier_arrived;
  m->fibers[m->current].state = State::kAtBarrier;
  const char* sync = &m->barrier_sync[m->barrier_generation % 2];
  tsan::release(sync);
  yield();
  tsan::acquire(sync);
  cp_async_race_in_flight();
}

}  // namespace

int env_choice(const char* variable, std::initializer_list<const char*> names) {
  const char* value = std::getenv(variable);
  if (value == nullptr) return 0;
  int index = 0;
  for (const char* name : names) {
    if (std::strcmp(value, name) == 0) return index;
    ++index;
  }
  std::string list;
  for (const char* name : names) list += (list.empty() ? "" : " or ") + std::string(name);
  std::fprintf(stderr, "%s must be %s, got '%s'\n", variable, list.c_str(), value);
  std::exit(2);
}

void set_shared_memory(void* base, size_t capacity) {
  g.shared = base;
  g.shared_instance = nullptr;
  g.shared_capacity = capacity;
}

void set_shared_memory(void* (*instance)(), size_t capacity) {
  g.shared = nullptr;
  g.shared_instance = instance;
  g.shared_capacity = capacity;
}

int dynamic_zero() { return 0; }

bool race_detector() { return tsan::kEnabled; }

size_t race_reports() { return g_race_reports.load(); }

void set_unwritten_shared_byte(unsigned char byte) { g.unwritten_shared = byte; }

void set_schedule(Schedule schedule) { g.schedule = schedule; }

void set_code_architecture(int arch) { g.code_architecture = arch; }

void require_architecture(int arch, const char* instruction) {
  if (g.code_architecture != 0 && g.code_architecture < arch)
    fail(std::string(instruction) + " requires sm_" + std::to_string(arch) + ", and this code is compiled for sm_" +
         std::to_string(g.code_architecture) + " (on a GPU: no such instruction, the kernel a trap)");
}

void set_resident_blocks(int blocks, Turns turns) {
  if (blocks < 1 || blocks > kMaxResident)
    throw Violation("set_resident_blocks(" + std::to_string(blocks) + "): from 1 to " + std::to_string(kMaxResident));
  g.resident = blocks;
  g.turns = turns;
}

uint32_t shared_address(const void* p) {
  require_launch("__cvta_generic_to_shared");
  const auto* c = static_cast<const unsigned char*>(p);
  // PTX ISA, cvta / ldmatrix: a generic address outside the .shared window is undefined.
  if (m->shared == nullptr || c < m->shared || c >= m->shared + m->shared_capacity)
    fail("a generic address converted to .shared does not point into shared memory");
  return static_cast<uint32_t>(c - m->shared);
}

// PTX ISA 9.0, "Data Movement and Conversion Instructions: shfl.sync", mode .bfly: j = lane ^
// b[4:0], d = a of lane j when j <= maxLane (31 for a full-width shuffle, c = 0x1f), else the
// lane's own a; the executing thread waits until every thread of membermask has executed it. CUDA's
// __shfl_xor_sync(mask, v, laneMask, 32) is that instruction (Programming Guide, "Warp Shuffle
// Functions"). Only the full warp and width 32 are emulated: what the kernels use.
uint32_t shfl_xor(unsigned mask, uint32_t value, int lane_mask, int width) {
  require_launch("__shfl_xor_sync");
  if (mask != 0xffffffffu) fail("__shfl_xor_sync with a partial member mask (not emulated)");
  if (width != kWarpSize) fail("__shfl_xor_sync with width != 32 (not emulated)");
  m->warps[m->current / kWarpSize].shfl_lane_mask[m->current % kWarpSize] = static_cast<uint32_t>(lane_mask) & 31u;
  const std::array<uint32_t, 10> in{value};
  return warp_collective(Op::kShfl, in, [](WarpOp& w) {
    for (int lane = 0; lane < kWarpSize; ++lane) {
      const uint32_t j = static_cast<uint32_t>(lane) ^ w.shfl_lane_mask[lane];
      w.out[lane][0] = w.in[j <= 31 ? j : lane][0];
    }
  })[0];
}

// PTX ISA 9.0, "Parallel Synchronization and Communication Instructions: vote.sync", .ballot.b32:
// "copies the predicate from each thread in membermask into the corresponding bit position of
// destination register d, where the bit position corresponds to the thread's lane id"; every
// lane gets the same d. CUDA's __ballot_sync (Programming Guide, "Warp Vote Functions") is that
// instruction. Only the full warp is emulated.
uint32_t ballot(unsigned mask, bool predicate) {
  require_launch("__ballot_sync");
  if (mask != 0xffffffffu) fail("__ballot_sync with a partial member mask (not emulated)");
  const std::array<uint32_t, 10> in{predicate ? 1u : 0u};
  return warp_collective(Op::kBallot, in, [](WarpOp& w) {
    uint32_t d = 0;
    for (int lane = 0; lane < kWarpSize; ++lane) d |= (w.in[lane][0] & 1u) << lane;
    for (int lane = 0; lane < kWarpSize; ++lane) w.out[lane][0] = d;
  })[0];
}

// PTX ISA 9.0, 9.7.14.5.15 "Warp-level matrix load instruction: ldmatrix", shape .m8n8, .x4,
// .b16: "Addresses addr0-addr7 correspond to the rows of the first matrix, addresses
// addr8-addr15 to the rows of the second matrix, and so on" (for .x4 thread t provides addr_t);
// each address is the start of a 16-byte row and "must be naturally aligned". "Each thread in a
// warp loads fragments of a row, with thread 0 receiving the first fragment in its register r,
// and so on. A group of four threads loads an entire row": thread t gets, in register i (matrix
// i), the elements (row t/4, columns 2*(t%4) and 2*(t%4)+1), the lower column in the low half.
// ".trans indicates that the matrix is loaded in column-major format": address addr_{8i+c} is
// then column c of matrix i, so element (row, col) is at addr_{8i+col} + 2*row.
void ldmatrix_x4(uint32_t (&r)[4], uint32_t shared_addr, bool trans) {
  // This lane's row, read in its name (the checks below report an address that is not a row).
  if (tsan::kEnabled && m->current >= 0 && shared_addr % 16 == 0 && shared_addr + 16 <= m->smem_bytes)
    tsan::read16(m->shared + shared_addr);
  const std::array<uint32_t, 10> in{shared_addr};
  const auto& out = warp_collective(trans ? Op::kLdmatrixTrans : Op::kLdmatrix, in, [trans](WarpOp& w) {
    for (int t = 0; t < kWarpSize; ++t) {
      const uint32_t addr = w.in[t][0];
      std::ostringstream s;
      if (addr % 16 != 0) s << "ldmatrix: the row address of lane " << t << " is " << addr << ", not 16-byte aligned";
      else if (addr + 16 > m->smem_bytes)
        s << "ldmatrix: the row of lane " << t << " reads shared bytes [" << addr << ", " << addr + 16
          << ") past the " << m->smem_bytes << " bytes the launch asked for";
      if (!s.str().empty()) fail_warp(s.str());
    }
    for (int t = 0; t < kWarpSize; ++t) {
      const int row = t / 4, col0 = 2 * (t % 4);
      for (int i = 0; i < 4; ++i) {
        uint32_t element[2];
        for (int e = 0; e < 2; ++e) {
          const int col = col0 + e;
          element[e] = trans ? shared_b16(w.in[8 * i + col][0] + 2 * row) : shared_b16(w.in[8 * i + row][0] + 2 * col);
        }
        w.out[t][i] = element[0] | element[1] << 16;
      }
    }
  });
  for (int i = 0; i < 4; ++i) r[i] = out[i];
}

// PTX ISA 9.0, 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating point type", .bf16
// multiplicands, .f32 accumulators; D = A * B + C with A 16x16 (.row), B 16x8 (.col), C, D 16x8.
// groupID = %laneid >> 2, threadID_in_group = %laneid % 4, elements "low to high" (a0 in the low
// half of the first register):
//   A, a0..a7 in four .b32: row = groupID for ai with 0 <= i < 2 || 4 <= i < 6, else groupID + 8;
//                           col = threadID_in_group*2 + (i & 1), plus 8 for i >= 4
//   B, b0..b3 in two .b32:  row = threadID_in_group*2 + (i & 1), plus 8 for i >= 2; col = groupID
//   C/D, c0..c3 (.f32):     row = groupID for i < 2, else groupID + 8; col = threadID_in_group*2 + (i & 1)
// The ISA leaves the order and precision of the internal sum open; here each product (exact for
// bf16) is summed in double and D rounded once to fp32.
void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  require_architecture(80, "mma.sync.m16n8k16 with bf16");
  std::array<uint32_t, 10> in{a[0], a[1], a[2], a[3], b0, b1};
  std::memcpy(&in[6], c, sizeof(c));
  const auto& out = warp_collective(Op::kMma, in, [](WarpOp& w) {
    double A[16][16], B[16][8], C[16][8];
    for (int lane = 0; lane < kWarpSize; ++lane) {
      const int group = lane >> 2, tig = lane % 4;
      const auto& v = w.in[lane];
      for (int i = 0; i < 8; ++i) {
        const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
        const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        A[row][col] = bf16_half(v[i / 2], i % 2);
      }
      for (int i = 0; i < 4; ++i) {
        const int row = tig * 2 + (i & 1) + (i >= 2 ? 8 : 0);
        B[row][group] = bf16_half(v[4 + i / 2], i % 2);
      }
      for (int i = 0; i < 4; ++i) {
        float ci;
        std::memcpy(&ci, &v[6 + i], 4);
        C[i < 2 ? group : group + 8][tig * 2 + (i & 1)] = ci;
      }
    }
    for (int lane = 0; lane < kWarpSize; ++lane) {
      const int group = lane >> 2, tig = lane % 4;
      for (int i = 0; i < 4; ++i) {
        const int row = i < 2 ? group : group + 8, col = tig * 2 + (i & 1);
        double d = C[row][col];
        for (int k = 0; k < 16; ++k) d += A[row][k] * B[k][col];
        const float df = static_cast<float>(d);
        std::memcpy(&w.out[lane][i], &df, 4);
      }
    }
  });
  std::memcpy(c, out.data(), sizeof(c));
}

// barrier.sync 0 (PTX ISA 9.0, "bar.sync / barrier.sync"): waits until every thread of the CTA
// that has not exited arrives. The CUDA Programming Guide allows __syncthreads in conditional code
// only if the condition is the same across the block, so arrivals at two different call sites
// are reported as misuse, not matched as the hardware might.
void syncthreads(const std::source_location& where) {
  require_launch("__syncthreads");
  arrive_at_barrier(where);
}

// barrier.red.or.pred (PTX ISA 9.0, "bar.red / barrier.red"): the barrier above, and "the
// reduction operation .or ... on the predicate p of all threads", the result "available in
// destination predicate d of all threads". CUDA's __syncthreads_or (Programming Guide,
// "Synchronization Functions") is that instruction.
bool syncthreads_or(bool predicate, const std::source_location& where) {
  require_launch("__syncthreads_or");
  m->barrier_or |= predicate;
  arrive_at_barrier(where);
  return m->fibers[m->current].barrier_result;
}

uint32_t atomic_add(uint32_t* address, uint32_t value) {
  require_launch("atomicAdd");
  const uint32_t old = *address;
  *address = old + value;
  return old;
}

void wait_until_equal(const uint32_t* address, uint32_t value) {
  require_launch("a wait for another block");
  if (*address == value) {
    tsan::acquire(address);
    return;
  }
  if (!m->interleaved)
    fail("waits for a flag to become " + std::to_string(value) + ", but it is " + std::to_string(*address) +
         " after every block that ran before this one: on a GPU only a block that started later could set it "
         "(a wait that can hang)");
  Fiber& f = m->fibers[m->current];
  f.flag = address;
  f.flag_value = value;
  f.state = State::kAtFlag;
  yield();  // the scheduler resumes it once the flag holds the value
  tsan::acquire(address);
}

void store_release(uint32_t* address, uint32_t value) {
  require_launch("a release store");
  tsan::release(address);
  *address = value;
  if (m->interleaved) {  // let the blocks waiting for it run before this block's other threads do
    m->hand_over_after_fiber = true;
    yield();
  }
}

void threadfence() { require_launch("__threadfence"); }

namespace {

// Releases the barrier when every live thread waits at it; each waiting thread gets the OR of
// the predicates brought to it (a plain __syncthreads brings none).
void release_barrier_if_complete() {
  if (m->barrier_arrived == 0) return;
  int live = 0;
  for (int t = 0; t < m->num_threads; ++t) live += m->fibers[t].state != State::kExited;
  if (m->barrier_arrived < live) return;
  m->barrier_arrived = 0;
  ++m->barrier_generation;
  for (int t = 0; t < m->num_threads; ++t) {
    if (m->fibers[t].state != State::kAtBarrier) continue;
    m->fibers[t].state = State::kRunnable;
    m->fibers[t].barrier_result = m->barrier_or;
  }
  m->barrier_or = false;
}

// Nothing can run and not every thread has exited: say who waits where.
[[noreturn]] void report_deadlock() {
  std::ostringstream s;
  s << block_name() << ": deadlock:";
  for (int warp = 0; warp < m->num_threads / kWarpSize; ++warp) {
    const std::string at_op = lanes_in(warp, State::kAtWarpOp);
    if (at_op.empty()) continue;
    s << " divergent warp collective in warp " << warp << ": lanes " << at_op << " wait at "
      << op_name(m->warps[warp].op);
    const std::string at_barrier = lanes_in(warp, State::kAtBarrier);
    if (!at_barrier.empty()) s << ", lanes " << at_barrier << " at __syncthreads";
    s << ";";
  }
  if (m->barrier_arrived > 0)
    s << " __syncthreads at " << m->barrier_site.file_name() << ":" << m->barrier_site.line() << " reached by "
      << m->barrier_arrived << " threads, not by every live thread";
  throw Violation(s.str());
}

// The bytes of the registered buffer past the launch's size (at most the pattern's length).
size_t canary_bytes() { return std::min(m->shared_capacity, kSharedCapacity) - m->smem_bytes; }

// Interleaved slots only (Machine::interleaved): gives the turn to the next resident block and
// returns when it comes back (see Interleaved). `stalled` is empty after a pass that made
// progress, else what the block waits for.
void hand_over(const std::string& stalled);

// Threads waiting at a flag that now holds their value run again.
void wake_flag_waiters() {
  for (int t = 0; t < m->num_threads; ++t) {
    Fiber& f = m->fibers[t];
    if (f.state == State::kAtFlag && *f.flag == f.flag_value) f.state = State::kRunnable;
  }
}

// "block (1,0,0) thread 0 waits for a flag to become 1 (it is 0)", for each thread at a flag.
std::string flag_waits() {
  std::ostringstream s;
  for (int t = 0; t < m->num_threads; ++t) {
    const Fiber& f = m->fibers[t];
    if (f.state != State::kAtFlag) continue;
    s << (s.tellp() > 0 ? "; " : "") << block_name() << " thread " << t << " waits for a flag to become "
      << f.flag_value << " (it is " << *f.flag << ")";
  }
  return s.str();
}

// The scheduler loop of run_block: runs the block's threads until every one has exited.
void run_block_threads() {
  const int num_warps = m->num_threads / kWarpSize;
  for (;;) {
    bool ran = false, all_exited = true;
    wake_flag_waiters();
    for (int i = 0; i < num_warps; ++i) {
      const int warp = g.schedule == Schedule::kWarpsDescending ? num_warps - 1 - i : i;
      bool warp_ran;
      do {  // one pass over the warp's lanes, repeated until it blocks unless in lockstep
        warp_ran = false;
        for (int t = warp * kWarpSize; t < (warp + 1) * kWarpSize; ++t) {
          if (m->fibers[t].state != State::kRunnable) continue;
          threadIdx = uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
          m->current = t;
          void* fake_stack = nullptr;
          tsan::switch_to(m->fibers[t].tsan);
          start_switch(&fake_stack, m->fibers[t].stack.get(), kStackBytes);
          switch_context(m->scheduler, m->fibers[t].context);
          finish_switch(fake_stack, nullptr, nullptr);
          m->current = -1;
          ran = warp_ran = true;
          if (!m->failure.empty()) throw Violation(m->failure);
          release_barrier_if_complete();
          if (m->hand_over_after_fiber) {
            m->hand_over_after_fiber = false;
            hand_over("");
          }
        }
      } while (warp_ran && g.schedule != Schedule::kLockstep);
    }
    for (int t = 0; t < m->num_threads; ++t) all_exited &= m->fibers[t].state == State::kExited;
    if (all_exited) break;
    for (int warp = 0; warp < num_warps; ++warp) {
      // A lane exited while the rest of its warp waits in a collective: undefined on the device.
      const std::string exited = lanes_in(warp, State::kExited), waiting = lanes_in(warp, State::kAtWarpOp);
      if (!exited.empty() && !waiting.empty())
        throw Violation(block_name() + ": divergent warp collective in warp " + std::to_string(warp) + ": lanes " +
                        waiting + " wait at " + op_name(m->warps[warp].op) + ", lanes " + exited + " exited");
    }
    if (!ran) {
      const std::string waits = flag_waits();
      if (waits.empty()) report_deadlock();
      hand_over(waits);  // only interleaved slots wait at flags: the others fail at the wait
    } else if (m->interleaved) {
      hand_over("");
    }
  }
}

// ThreadSanitizer: the OS thread running the block and each of the block's threads hand each
// other all they did (see the model at Machine); after a block that failed, each thread gets a new
// TSan context (an abandoned or unwound thread left its TSan call stack unbalanced).
void tsan_handshake_all(bool block_failed) {
  if (!tsan::kEnabled) return;
  for (int t = 0; t < m->num_threads; ++t) {
    Fiber& f = m->fibers[t];
    if (f.tsan == nullptr) f.tsan = tsan::create();
    tsan::handshake(m->tsan_scheduler, f.tsan);
    if (block_failed) {
      tsan::destroy(f.tsan);
      f.tsan = nullptr;
    }
  }
}

void run_block(const uint3& block_index) {
  blockIdx = m->block = block_index;
  // Shared memory is uninitialised on the device: NaN bytes make a read-before-write visible;
  // a canary past the launch's size catches stores beyond what the launch asked for.
  if (m->shared != nullptr) {
    std::memset(m->shared, g.unwritten_shared, m->smem_bytes);
    std::memcpy(m->shared + m->smem_bytes, canary_pattern() + m->smem_bytes, canary_bytes());
  }
  for (int t = 0; t < m->num_threads; ++t) {
    Fiber& f = m->fibers[t];
    clear_stack(f.stack.get(), kStackBytes);
    make_context(f.context, f.stack.get(), kStackBytes, fiber_main);
    f.state = State::kRunnable;
  }
  for (auto& w : m->warps) w.arrived = 0;
  m->barrier_arrived = 0;
  m->barrier_or = false;
  tsan_handshake_all(false);
  try {
    run_block_threads();
  } catch (...) {
    tsan_handshake_all(true);
    throw;
  }
  tsan_handshake_all(false);
  if (m->shared != nullptr &&
      std::memcmp(m->shared + m->smem_bytes, canary_pattern() + m->smem_bytes, canary_bytes()) != 0) {
    size_t i = m->smem_bytes;
    while (m->shared[i] == canary(i)) ++i;
    throw Violation(block_name() + ": shared memory written at byte " + std::to_string(i) + ", past the " +
                    std::to_string(m->smem_bytes) + " bytes the launch asked for");
  }
}

// The launch every slot runs: set by launch() before any block starts.
struct Launch {
  dim3 grid, block;
  size_t smem_bytes = 0, blocks = 0;
  const std::function<void()>* body = nullptr;
};
Launch launch_params;

// The i-th block to start: x fastest; under kWarpsDescending from the last block down.
uint3 block_at(size_t i) {
  const dim3& grid = launch_params.grid;
  const size_t b = g.schedule == Schedule::kWarpsDescending ? launch_params.blocks - 1 - i : i;
  return uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
               static_cast<unsigned>(b / grid.x / grid.y)};
}

// Readies this OS thread's machine for the launch: fibers, warps, its view of shared memory.
void prepare_machine() {
  const Launch& l = launch_params;
  const size_t threads = static_cast<size_t>(l.block.x) * l.block.y * l.block.z;
  m->shared = static_cast<unsigned char*>(g.shared_instance != nullptr ? g.shared_instance() : g.shared);
  m->shared_capacity = g.shared_capacity;
  m->smem_bytes = l.smem_bytes;
  m->num_threads = static_cast<int>(threads);
  m->body = l.body;
  m->failure.clear();
  m->tsan_scheduler = tsan::current();
  while (m->fibers.size() < threads) {
    m->fibers.emplace_back();
    m->fibers.back().stack.reset(new char[kStackBytes]);  // not zeroed: a fiber's frames are its own
  }
  m->warps.resize(threads / kWarpSize);
}

// Several blocks resident at once (set_resident_blocks(n), n > 1), as on a GPU, where blocks of one
// launch run concurrently and one may wait for another: slot s (of min(n, blocks)) runs one block
// at a time on OS thread s, so each block has its own thread_local __shared__ arrays (static and
// dynamic). Only the slot holding the turn runs: one pass of its block (every thread runs until it
// waits at a barrier, a collective or a flag, or exits; a thread that sets a flag with
// store_release ends the pass at once, so the blocks waiting for it may run before the setter's
// other threads do), then the turn goes on (Turns): to the next slot round robin, or to the block
// that started last. A slot whose block ended takes the
// next one not yet started. The order of turns depends on the launch alone, so runs repeat.
// A pass in which no thread can run while some wait at flags leaves the slot waiting until some
// other slot makes progress; when every live slot waits, no block can set a flag (the ones not
// started cannot become resident): a hang on a GPU, reported as a Violation naming each wait. The
// mutex hand-over orders every slot's memory operations before the next slot's.
class Interleaved {
 public:
  ~Interleaved() {
    {
      const std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // On the launching thread: runs launch_params' grid on `slots` resident slots.
  void run(int slots) {
    std::unique_lock<std::mutex> lock(mu_);
    ++generation_;
    slots_ = slots;
    turn_ = 0;
    finished_ = 0;
    next_ = 0;
    starts_ = 0;
    live_.assign(slots, true);
    waiting_.assign(slots, false);
    started_.assign(slots, 0);
    stalled_.assign(slots, std::string());
    failure_.clear();
    while (static_cast<int>(threads_.size()) < slots) {
      const int slot = static_cast<int>(threads_.size());
      threads_.emplace_back([this, slot] { worker(slot); });
    }
    cv_.notify_all();
    cv_.wait(lock, [&] { return finished_ == slots_; });
    if (!failure_.empty()) throw Violation(failure_);
  }

  // On a slot's thread, between passes of its block.
  void hand_over(const std::string& stalled) {
    std::unique_lock<std::mutex> lock(mu_);
    const int slot = m->slot;
    if (stalled.empty()) {
      progress();
    } else {
      waiting_[slot] = true;
      stalled_[slot] = stalled;
      check_hang();
    }
    if (failure_.empty()) {
      pass_turn(slot);
      cv_.wait(lock, [&] { return turn_ == slot || !failure_.empty(); });
    }
    cv_.notify_all();
    if (!failure_.empty()) throw Abandoned{};
    blockIdx = m->block;
    blockDim = launch_params.block;
    gridDim = launch_params.grid;
  }

 private:
  struct Abandoned {};  // unwinds a slot's block when another slot failed

  // Something changed (a pass ran, a block started or ended): a flag may now hold its value.
  void progress() { waiting_.assign(waiting_.size(), false); }

  void check_hang() {
    std::string waits;
    int live = 0;
    for (int s = 0; s < slots_; ++s) {
      if (!live_[s]) continue;
      if (!waiting_[s]) return;
      ++live;
      waits += (waits.empty() ? "" : "; ") + stalled_[s];
    }
    if (live == 0 || !failure_.empty()) return;
    failure_ = "every resident block (" + std::to_string(live) + " of at most " + std::to_string(g.resident) +
               " at a time) waits for a flag that no running block will set, and blocks not yet started cannot "
               "become resident: a hang. " + waits;
  }

  // The next turn (after slot `from`'s) among live slots not waiting: a slot yet to start its
  // first block comes first; then, round robin, the first after `from`; newest first, the one
  // whose block started last. None left: -1.
  void pass_turn(int from) {
    turn_ = -1;
    for (int i = 1; i <= slots_; ++i) {
      const int s = (from + i) % slots_;
      if (!live_[s] || waiting_[s]) continue;
      if (started_[s] == 0) {
        turn_ = s;
        break;
      }
      if (turn_ < 0 || (g.turns == Turns::kNewestFirst && started_[s] > started_[turn_])) {
        turn_ = s;
        if (g.turns == Turns::kRoundRobin) break;
      }
    }
    cv_.notify_all();
  }

  void worker(int slot) {
    m = &machines[1 + slot];
    m->interleaved = true;
    m->slot = slot;
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return shutdown_ || (generation_ != seen && slot < slots_); });
      if (shutdown_) return;
      seen = generation_;
      cv_.wait(lock, [&] { return turn_ == slot || !failure_.empty(); });
      lock.unlock();
      std::string error;
      bool abandoned = false;
      try {
        run_slot(lock);
      } catch (const Abandoned&) {
        abandoned = true;
      } catch (const std::exception& e) {
        error = e.what();
      }
      try {
        cp_async_check_drained();  // this thread's copies; clears them either way
      } catch (const std::exception& e) {
        if (error.empty() && !abandoned) error = e.what();
      }
      if (!lock.owns_lock()) lock.lock();
      if (!error.empty() && failure_.empty()) failure_ = error;
      live_[slot] = false;
      ++finished_;
      progress();
      pass_turn(slot);
    }
  }

  // Runs blocks until none is left to start; returns holding the lock.
  void run_slot(std::unique_lock<std::mutex>& lock) {
    blockDim = launch_params.block;
    gridDim = launch_params.grid;
    prepare_machine();
    for (;;) {
      lock.lock();
      if (!failure_.empty() || next_ == launch_params.blocks) return;
      const size_t i = next_++;
      started_[m->slot] = ++starts_;
      progress();
      lock.unlock();
      run_block(block_at(i));
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  bool shutdown_ = false;
  uint64_t generation_ = 0;
  int slots_ = 0, turn_ = -1, finished_ = 0;
  std::vector<bool> live_, waiting_;     // a slot still running blocks; waiting at a flag since the last progress
  std::vector<uint64_t> started_;        // when each slot's block started (0: none yet)
  std::vector<std::string> stalled_;     // what each slot's block waits for
  size_t next_ = 0;                      // the next block to start
  uint64_t starts_ = 0;
  std::string failure_;
};

Interleaved& interleaved() {
  static Interleaved pool;
  return pool;
}

void hand_over(const std::string& stalled) {
  if (!m->interleaved) throw Violation("internal: hand_over outside an interleaved slot");
  interleaved().hand_over(stalled);
}

}  // namespace

void launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  const size_t threads = static_cast<size_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || threads % kWarpSize != 0)
    throw Violation("launch with " + std::to_string(threads) + " threads per block: the emulator runs 32..1024 "
                    "threads in whole warps");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    throw Violation("launch with an empty or oversized grid");
  if (smem_bytes > kSharedCapacity)
    throw Violation("launch asks " + std::to_string(smem_bytes) + " bytes of dynamic shared memory, more than the " +
                    std::to_string(kSharedCapacity) + " an sm_90 block can have");
  const bool registered = g.shared != nullptr || g.shared_instance != nullptr;
  if (smem_bytes > 0 && (!registered || smem_bytes > g.shared_capacity))
    throw Violation("launch asks " + std::to_string(smem_bytes) + " bytes of shared memory, more than the buffer "
                    "given to set_shared_memory");
  const size_t blocks = static_cast<size_t>(grid.x) * grid.y * grid.z;
  const int slots = static_cast<int>(std::min<size_t>(g.resident, blocks));
  if (slots > 1 && smem_bytes > 0 && g.shared_instance == nullptr)
    throw Violation("launch with " + std::to_string(slots) + " resident blocks needs shared memory per OS thread: "
                    "register a GPT2CC_EMU_DYNAMIC_SHARED array by its instance function (set_shared_memory)");
  launch_params = Launch{grid, block, smem_bytes, blocks, &body};
  gridDim = grid;
  blockDim = block;
  if (slots > 1) {
    interleaved().run(slots);
    return;
  }
  prepare_machine();
  for (size_t i = 0; i < blocks; ++i) run_block(block_at(i));
}

}  // namespace gpt2cc::emu
