// Wall-clock time since a start (std::chrono::steady_clock, never set back): the seconds that a
// training step, a prepare run, the BPE trainer's phases and generation report.
#pragma once

#include <chrono>

namespace gpt2cc {

class Stopwatch {
 public:
  // Seconds since the stopwatch was made.
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace gpt2cc
