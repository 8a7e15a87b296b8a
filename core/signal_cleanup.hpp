// Temporary files that a Ctrl-C must not leave behind. A program without a stop handler of its
// own (train's training loop has one: it checkpoints, then stops) calls
// remove_temporaries_on_signal() once; SIGINT, SIGTERM and SIGHUP (each unless it was ignored when
// the program started: a background job's SIGINT, nohup's SIGHUP) then unlink every registered
// path and end the program by the signal's default action, so its exit status still shows it.
// A path is registered for the lifetime of a TemporaryFile; write_file_atomic registers its
// "<path>.tmp" that way. The handler reads fixed slots and calls only unlink, sigaction and raise
// (async-signal-safe); a path that finds no free slot, or is longer than PATH_MAX, is left behind.
#pragma once

#include <string>

namespace gpt2cc {

void remove_temporaries_on_signal();

class TemporaryFile {
 public:
  explicit TemporaryFile(const std::string& path);
  ~TemporaryFile();  // unregisters; the file itself is its owner's to remove or rename
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

 private:
  int slot_ = -1;
};

}  // namespace gpt2cc
