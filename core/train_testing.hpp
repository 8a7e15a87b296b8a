// Fault-injection points for the training tests (never set in normal runs).
//   checkpoint_write_hook: called by save_checkpoint after every piece written to "<path>.tmp"
//   with the bytes written so far; a test can kill the process there to simulate a crash
//   half-way through a checkpoint write.
#pragma once

#include <cstdint>

namespace gpt2cc::testing {

extern void (*checkpoint_write_hook)(uint64_t bytes_written);

}  // namespace gpt2cc::testing
