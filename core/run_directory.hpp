// The lock a training run holds on its run directory (config.json, metrics.jsonl, checkpoints/),
// and prepare on its output directory (the staging folder, the shards, manifest.json).
#pragma once

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace gpt2cc {

// Makes the folder `dir` and every missing folder on the way, one path component at a time as the
// system resolves them (so "new/../out" makes new/ too), and returns the folders it made, deepest
// first: what a program that fails must remove again (std::filesystem::remove, which removes only
// an empty folder). A link on the way, even a dangling one, is there, never made or removed. On an
// error `ec` is set, as std::filesystem::create_directories sets it (a file where a folder goes:
// not_a_directory), and the folders made so far are returned.
std::vector<std::filesystem::path> make_directories(const std::filesystem::path& dir, std::error_code& ec);

// Whether an error making or opening an output folder is the path's, which another path mends
// (exit 2: no permission, a read-only disk, a file or a dangling link on the way, a loop of links,
// a name too long), rather than the machine's (exit 1: a full disk, an I/O error). One rule for
// every program that writes a folder: train's --run-dir, prepare's and tokenizer train's --out,
// --export-hf.
bool folder_error_is_input(const std::error_code& ec);

// An exclusive flock on a run directory for the process's lifetime: a second train into it is
// refused before it writes anything (both would pass the trainer's "no checkpoints yet" check and
// then interleave their checkpoints). The kernel drops the lock with the process, even on a crash.
// Creates the directory; the levels made here and still empty at destruction are removed again
// unless keep() was called (a setup that failed leaves nothing behind).
// Every program that writes a folder holds the same lock (train's run directory, prepare's and
// tokenizer train's --out, --export-hf's DIR), so the message names the folder (`what`) and the
// caller's flag, not the holder: "run directory X is in use by another gpt2cc process (train,
// prepare, an export or tokenizer train writing there): give another --run-dir".
struct DirectoryOwner {
  const char* what = "run directory";
  const char* flag = "--run-dir";
};
// Whether a RunDirectoryLock on `dir` is held now, by this process or another (false where `dir`
// cannot be opened): what a run directory without checkpoints means, a run still starting or one
// that stopped, depends on it.
bool directory_in_use(const std::string& dir);

class RunDirectoryLock {
 public:
  // InputError when in use or when the path cannot be a folder (folder_error_is_input), Error when
  // the machine fails.
  explicit RunDirectoryLock(const std::string& dir, const DirectoryOwner& owner = {});
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;
  ~RunDirectoryLock();
  void keep() { kept_ = true; }

 private:
  void remove_created();  // the levels made here that are still empty

  int fd_ = -1;
  std::vector<std::filesystem::path> created_;  // deepest first
  bool kept_ = false;
};

}  // namespace gpt2cc
