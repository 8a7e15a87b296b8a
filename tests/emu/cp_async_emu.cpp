// cp.async emulation (see cp_async_emu.hpp): per thread of the running block, the copies issued
// since the last commit and the committed groups, oldest first. The state is keyed by the thread's
// index in its block and remembers the block, so copies left by a block that exited are caught
// when a thread of another block issues or waits.
#include "emu/cp_async_emu.hpp"

#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "emu/cuda_emu.hpp"
#include "emu/tsan_hooks.hpp"

namespace gpt2cc::emu {
namespace {

struct Copy {
  void* dst;
  const void* src;
  bool landed = false;  // made at issue (CpAsyncLanding::kAtIssue); its group still counts it
};

CpAsyncLanding initial_landing() {
  static_assert(static_cast<int>(CpAsyncLanding::kAtIssue) == 1);
  return static_cast<CpAsyncLanding>(env_choice("GPT2CC_EMU_CP_ASYNC", {"wait", "issue"}));
}
CpAsyncLanding g_landing = initial_landing();

struct ThreadCopies {
  uint3 block{};
  std::vector<Copy> uncommitted;
  std::deque<std::vector<Copy>> groups;  // committed, oldest first
  // Copies still to land (an empty committed group completes at once and is no copy).
  bool empty() const {
    for (const auto& g : groups)
      if (!g.empty()) return false;
    return uncommitted.empty();
  }
};

// Under ThreadSanitizer (tsan_hooks.hpp): the copy's read of its source and store to its
// destination, as the issuing thread, at a point where it may land (its issue, each barrier the
// thread passes while it is in flight, its wait); nothing without it.
void may_land_here(const Copy& c) {
  tsan::read16(c.src);
  tsan::write16(c.dst);
}

// Per OS thread: each resident slot of an interleaved launch (cuda_emu.cpp) has its own.
thread_local std::vector<ThreadCopies> g_threads(1024);

std::string where() {
  return "block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
         std::to_string(blockIdx.z) + "), thread " + std::to_string(threadIdx.x);
}

// The running thread's copies; those of a block that exited before waiting for them are an error.
ThreadCopies& current() {
  const unsigned id = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  if (id >= g_threads.size()) throw Violation("cp.async emulation: thread index " + std::to_string(id) + " out of range");
  ThreadCopies& t = g_threads[id];
  const bool same_block = t.block.x == blockIdx.x && t.block.y == blockIdx.y && t.block.z == blockIdx.z;
  if (!same_block) {
    if (!t.empty())
      throw Violation("cp.async: a thread of block (" + std::to_string(t.block.x) + "," + std::to_string(t.block.y) +
                      "," + std::to_string(t.block.z) + ") exited with copies not waited for (seen at " + where() + ")");
    t.block = blockIdx;
  }
  return t;
}

}  // namespace

void cp_async_16(void* shared_dst, const void* global_src) {
  require_architecture(80, "cp.async");
  shared_address(shared_dst);  // throws unless dst is in the block's shared memory
  if (reinterpret_cast<uintptr_t>(shared_dst) % 16 != 0 || reinterpret_cast<uintptr_t>(global_src) % 16 != 0)
    throw Violation("cp.async of 16 bytes with an address not 16-byte aligned at " + where());
  const bool now = g_landing == CpAsyncLanding::kAtIssue;
  const Copy copy{shared_dst, global_src, now};
  may_land_here(copy);
  if (now) std::memcpy(shared_dst, global_src, 16);
  current().uncommitted.push_back(copy);
}

void set_cp_async_landing(CpAsyncLanding landing) { g_landing = landing; }

void cp_async_commit() {
  ThreadCopies& t = current();
  t.groups.push_back(std::move(t.uncommitted));
  t.uncommitted.clear();
}

void cp_async_wait(int newest_pending) {
  ThreadCopies& t = current();
  while (t.groups.size() > static_cast<size_t>(newest_pending)) {
    for (const Copy& c : t.groups.front()) {
      may_land_here(c);
      if (!c.landed) std::memcpy(c.dst, c.src, 16);
    }
    t.groups.pop_front();
  }
}

void cp_async_race_in_flight() {
  if (!tsan::kEnabled) return;
  const ThreadCopies& t = current();
  for (const auto& group : t.groups)
    for (const Copy& c : group) may_land_here(c);
  for (const Copy& c : t.uncommitted) may_land_here(c);
}

void cp_async_check_drained() {
  std::string error;
  for (size_t id = 0; id < g_threads.size(); ++id) {
    ThreadCopies& t = g_threads[id];
    if (error.empty() && !t.empty())
      error = "cp.async: thread " + std::to_string(id) + " of block (" + std::to_string(t.block.x) + "," +
              std::to_string(t.block.y) + "," + std::to_string(t.block.z) + ") exited with copies not waited for";
    t = ThreadCopies{};
  }
  if (!error.empty()) throw Violation(error);
}

}  // namespace gpt2cc::emu
