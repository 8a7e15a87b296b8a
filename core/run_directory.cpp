// RunDirectoryLock: flock(LOCK_EX | LOCK_NB) on the directory itself (see the header).
#include "core/run_directory.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/check.hpp"

namespace gpt2cc {

RunDirectoryLock::RunDirectoryLock(const std::string& dir, const DirectoryOwner& owner) {
  std::error_code ec;
  // The levels this makes (nest/a/b: each missing one), deepest first, to remove again.
  std::filesystem::path full = std::filesystem::absolute(dir, ec).lexically_normal();
  if (full.filename().empty()) full = full.parent_path();  // "runs/a/" names runs/a
  for (std::filesystem::path p = full; !p.empty() && !std::filesystem::exists(p, ec) && p != p.parent_path();
       p = p.parent_path())
    created_.push_back(p);
  std::filesystem::create_directories(dir, ec);
  INPUT_CHECK(!ec, "cannot create {} {}: {}", owner.what, dir, ec.message());
  fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  INPUT_CHECK(fd_ >= 0, "cannot open {} {}: {}", owner.what, dir, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd_);
    fd_ = -1;
    INPUT_CHECK(error != EWOULDBLOCK, "{} {} is in use by another {} process: give another {}", owner.what, dir,
                owner.program, owner.flag);
    throw Error(format("cannot lock {} {}: {}", owner.what, dir, std::strerror(error)));
  }
}

RunDirectoryLock::~RunDirectoryLock() {
  std::error_code ec;
  if (!kept_) {
    for (const std::filesystem::path& level : created_) {
      if (!std::filesystem::is_empty(level, ec)) break;
      std::filesystem::remove(level, ec);
    }
  }
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace gpt2cc
