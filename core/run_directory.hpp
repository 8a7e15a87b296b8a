// The lock a training run holds on its run directory (config.json, metrics.jsonl, checkpoints/),
// and prepare on its output directory (the staging folder, the shards, manifest.json).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace gpt2cc {

// An exclusive flock on a run directory for the process's lifetime: a second train into it is
// refused before it writes anything (both would pass the trainer's "no checkpoints yet" check and
// then interleave their checkpoints). The kernel drops the lock with the process, even on a crash.
// Creates the directory; the levels made here and still empty at destruction are removed again
// unless keep() was called (a setup that failed leaves nothing behind).
// `program` and `flag` name the holder in the messages ("run directory X is in use by another
// train process: give another --run-dir"); `what` names the directory.
struct DirectoryOwner {
  const char* what = "run directory";
  const char* program = "train";
  const char* flag = "--run-dir";
};
class RunDirectoryLock {
 public:
  // InputError when in use or not creatable.
  explicit RunDirectoryLock(const std::string& dir, const DirectoryOwner& owner = {});
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;
  ~RunDirectoryLock();
  void keep() { kept_ = true; }

 private:
  int fd_ = -1;
  std::vector<std::filesystem::path> created_;  // deepest first
  bool kept_ = false;
};

}  // namespace gpt2cc
