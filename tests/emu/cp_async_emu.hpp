// cp.async (PTX ISA 9.0, "Data Movement and Conversion Instructions: cp.async", cp.async.commit_group,
// cp.async.wait_group) for the CPU emulator. The ISA lets a copy land at any time from its issue to
// the wait_group that completes its group; the emulator takes either end (CpAsyncLanding):
//   kAtWait (the default): copies are kept, not made, until that wait: a read of the destination
//     before the wait (a missing wait_group) sees the old bytes, and a NaN result;
//   kAtIssue: each copy lands when issued: a copy issued into a tile that another warp still reads
//     before the next barrier (a write-after-read race, such as refilling a pipeline stage before
//     the barrier that ends its last use) overwrites it under the read.
// A kernel without such races gives the same bits either way.
// Included by an emulation TU after cuda_emu.hpp, before the device code that calls it.
#pragma once

namespace gpt2cc::emu {

enum class CpAsyncLanding { kAtWait, kAtIssue };
inline constexpr CpAsyncLanding kCpAsyncLandings[] = {CpAsyncLanding::kAtWait, CpAsyncLanding::kAtIssue};
// The landing a process starts with: $GPT2CC_EMU_CP_ASYNC = wait (the default) or issue, so that a
// whole test executable can run under either; anything else stops the process.
void set_cp_async_landing(CpAsyncLanding landing);

// cp.async.cg.shared.global [dst], [src], 16: 16 bytes, both addresses 16-byte aligned, dst in
// the block's shared memory.
void cp_async_16(void* shared_dst, const void* global_src);
// cp.async.commit_group: the thread's copies since its last commit become one group (maybe empty).
void cp_async_commit();
// cp.async.wait_group n: makes all but the newest n committed groups of the thread complete.
void cp_async_wait(int newest_pending);
// Under ThreadSanitizer (tsan_hooks.hpp), called by a thread leaving a barrier: its copies still in
// flight read their sources and write their destinations again, in the thread's name, after the
// barrier (a copy may land at any time from its issue to its wait_group, so also after each
// barrier in between); nothing without it.
void cp_async_race_in_flight();
// Throws Violation if any thread still holds copies (never committed, or committed and never
// waited for; empty groups do not count): the block would have exited with shared memory still
// being written. Call after a launch; clears the state either way. The state is the calling OS
// thread's: the resident slots of an interleaved launch check their own as they finish.
void cp_async_check_drained();

}  // namespace gpt2cc::emu
