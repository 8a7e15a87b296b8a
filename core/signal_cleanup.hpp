// Temporary files that a Ctrl-C must not leave behind, and a stop asked by one. A program that
// stops at once calls remove_temporaries_on_signal() once (one that finishes its current work
// first calls install_stop_handlers(), below, which arms it at the first signal); SIGINT, SIGTERM
// and SIGHUP (each unless it was ignored when the program started: a background job's SIGINT,
// nohup's SIGHUP) then unlink every registered path and end the program by the signal's default
// action, so its exit status still shows it.
// A path is registered for the lifetime of a TemporaryFile; write_file_atomic registers its
// "<path>.tmp" that way. The handler reads fixed slots and calls only unlink, sigaction and raise
// (async-signal-safe); a path that finds no free slot, or is longer than PATH_MAX, is left behind.
#pragma once

#include <atomic>
#include <string>

namespace gpt2cc {

void remove_temporaries_on_signal();

// A stop asked by SIGINT or SIGTERM (each unless it was ignored when the program started, as
// above), for programs that finish their current piece of work first (train: the step, then a
// checkpoint; prepare: its failure path, which removes its staging folder). The handler records
// the signal and installs remove_temporaries_on_signal's, so a second signal ends the program at
// once, its registered temporaries removed.
void install_stop_handlers();
// The signal that asked to stop, 0 while none has: an atomic that workers may poll.
const std::atomic<int>& stop_signal();
// As if `signal` had arrived; 0 clears it (tests that stop runs one after another).
void request_stop(int signal);

// While one lives, a signal that would end the program (remove_temporaries_on_signal's handler) is
// held, on whichever thread it lands, and raised again when the last one ends: for steps that
// must all happen once begun (the renames of files replaced together, write_files_atomic).
class DeferSignalEnd {
 public:
  DeferSignalEnd();
  ~DeferSignalEnd();
  DeferSignalEnd(const DeferSignalEnd&) = delete;
  DeferSignalEnd& operator=(const DeferSignalEnd&) = delete;
};

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
