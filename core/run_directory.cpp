// RunDirectoryLock: flock(LOCK_EX | LOCK_NB) on the directory itself (see the header).
#include "core/run_directory.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/check.hpp"

namespace gpt2cc {

std::vector<std::filesystem::path> make_directories(const std::filesystem::path& dir, std::error_code& ec) {
  namespace fs = std::filesystem;
  ec.clear();
  std::vector<fs::path> made;
  fs::path prefix;
  for (const fs::path& part : dir) {
    prefix /= part;
    const fs::file_status status = fs::symlink_status(prefix, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) break;  // not a folder on the way (ENOTDIR)
    ec.clear();
    if (fs::exists(status)) continue;
    if (fs::create_directory(prefix, ec)) made.push_back(prefix);
    if (ec) break;
  }
  if (!ec && !fs::is_directory(dir, ec) && !ec) ec = std::make_error_code(std::errc::not_a_directory);
  std::reverse(made.begin(), made.end());
  return made;
}

bool folder_error_is_input(const std::error_code& ec) {
  for (std::errc path_error : {std::errc::permission_denied, std::errc::operation_not_permitted,
                               std::errc::read_only_file_system, std::errc::not_a_directory, std::errc::file_exists,
                               std::errc::no_such_file_or_directory, std::errc::too_many_symbolic_link_levels,
                               std::errc::filename_too_long})
    if (ec == path_error) return true;
  return false;
}

bool directory_in_use(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  // A shared lock conflicts with the holder's exclusive one (a lock of this process's on another
  // descriptor too: flock locks belong to open files).
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);
  return held;
}

RunDirectoryLock::RunDirectoryLock(const std::string& dir, const DirectoryOwner& owner) {
  std::error_code ec;
  created_ = make_directories(dir, ec);  // nest/a/b: each missing level, deepest first, to remove again
  const char* failed = "create";
  if (!ec) {
    fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd_ < 0) ec = std::error_code(errno, std::generic_category()), failed = "open";
  }
  if (ec) {
    remove_created();  // a constructor that throws runs no destructor
    const std::string what = format("cannot {} {} {}: {}", failed, owner.what, dir, ec.message());
    if (folder_error_is_input(ec)) fail_input(what);
    throw Error(what);
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd_);
    fd_ = -1;
    INPUT_CHECK(error != EWOULDBLOCK,
                "{} {} is in use by another gpt2cc process (train, prepare, an export or tokenizer train writing "
                "there): give another {}",
                owner.what, dir, owner.flag);
    throw Error(format("cannot lock {} {}: {}", owner.what, dir, std::strerror(error)));
  }
}

void RunDirectoryLock::remove_created() {
  std::error_code ec;
  for (const std::filesystem::path& level : created_) {
    if (!std::filesystem::is_empty(level, ec)) break;
    std::filesystem::remove(level, ec);
  }
}

RunDirectoryLock::~RunDirectoryLock() {
  if (!kept_) remove_created();
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace gpt2cc
