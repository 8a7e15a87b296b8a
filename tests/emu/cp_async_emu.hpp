// cp.async (PTX ISA 9.0, "Data Movement and Conversion Instructions: cp.async", cp.async.commit_group,
// cp.async.wait_group) for the CPU emulator. Each thread's copies are kept, not made: a copy happens
// only when a wait_group of that thread makes its group complete. The ISA allows a copy to land at
// any time before that wait; making it land as late as possible is the schedule under which a read
// of the destination before the wait (a missing wait_group) sees the old bytes, and a NaN result.
// Included by an emulation TU after cuda_emu.hpp, before the device code that calls it.
#pragma once

namespace gpt2cc::emu {

// cp.async.cg.shared.global [dst], [src], 16: 16 bytes, both addresses 16-byte aligned, dst in
// the block's shared memory.
void cp_async_16(void* shared_dst, const void* global_src);
// cp.async.commit_group: the thread's copies since its last commit become one group (maybe empty).
void cp_async_commit();
// cp.async.wait_group n: makes all but the newest n committed groups of the thread complete.
void cp_async_wait(int newest_pending);
// Throws Violation if any thread still holds copies (never committed, or committed and never
// waited for; empty groups do not count): the block would have exited with shared memory still
// being written. Call after a launch; clears the state either way.
void cp_async_check_drained();

}  // namespace gpt2cc::emu
