// What the emulator tells ThreadSanitizer about the emulated code's threads and memory operations,
// when the tests are built with GPT2CC_SANITIZE=thread (tests/emu/CMakeLists.txt then compiles the
// emulator itself uninstrumented and defines GPT2CC_EMU_TSAN); without it every hook is empty.
// The model (which operations order which) is described in cuda_emu.cpp, at Machine.
#pragma once

#if defined(GPT2CC_EMU_TSAN)
#include <sanitizer/tsan_interface.h>

// The runtime's entry points for a 16-byte access, which the instrumentation calls; not in the
// public header.
extern "C" void __tsan_read16(void* address);
extern "C" void __tsan_write16(void* address);
#endif

namespace gpt2cc::emu::tsan {

#if defined(GPT2CC_EMU_TSAN)
inline constexpr bool kEnabled = true;

// The running thread's (or fiber's) TSan context; a new context for an emulated thread.
inline void* current() { return __tsan_get_current_fiber(); }
inline void* create() { return __tsan_create_fiber(0); }
inline void destroy(void* fiber) { __tsan_destroy_fiber(fiber); }
// Called just before the stack switch to `fiber`: no happens-before between the two sides.
inline void switch_to(void* fiber) { __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync); }
// Without a stack switch: everything `self` did happens before what `other` does next, and
// everything `other` did before what `self` does next (a switch there and back, both synchronising).
inline void handshake(void* self, void* other) {
  __tsan_switch_to_fiber(other, 0);
  __tsan_switch_to_fiber(self, 0);
}
inline void release(const void* address) { __tsan_release(const_cast<void*>(address)); }
inline void acquire(const void* address) { __tsan_acquire(const_cast<void*>(address)); }
// A 16-byte load or store of the running emulated thread that the emulator makes on its behalf.
inline void read16(const void* address) { __tsan_read16(const_cast<void*>(address)); }
inline void write16(void* address) { __tsan_write16(address); }
#else
inline constexpr bool kEnabled = false;

inline void* current() { return nullptr; }
inline void* create() { return nullptr; }
inline void destroy(void*) {}
inline void switch_to(void*) {}
inline void handshake(void*, void*) {}
inline void release(const void*) {}
inline void acquire(const void*) {}
inline void read16(const void*) {}
inline void write16(void*) {}
#endif

}  // namespace gpt2cc::emu::tsan
