// Atomic file replacement (core/atomic_file.hpp).
#include "core/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "core/check.hpp"
#include "core/signal_cleanup.hpp"

namespace gpt2cc {

void sync_directory(const std::filesystem::path& file) {
  auto dir = file.parent_path();
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

WriteTarget resolve_write_target(const std::string& path) {
  namespace fs = std::filesystem;
  // The process's own standard output or error: by their names (which name nothing once the
  // descriptor is closed), or by any path to the file, pipe or device they are (a link to
  // /dev/stdout, /proc/thread-self/fd/1, the file a shell redirected them to).
  const fs::path named = fs::path(path).lexically_normal();
  if (named == "/dev/stdout") return {path, true, 1};
  if (named == "/dev/stderr") return {path, true, 2};
  for (const int fd : {1, 2})
    for (const char* folder : {"/dev/fd/", "/proc/self/fd/"})
      if (named == fs::path(format("{}{}", folder, fd))) return {path, true, fd};
  struct stat there {};
  if (::stat(path.c_str(), &there) == 0) {
    for (const int fd : {1, 2}) {
      struct stat stream {};
      if (::fstat(fd, &stream) == 0 && stream.st_dev == there.st_dev && stream.st_ino == there.st_ino)
        return {path, true, fd};
    }
  }
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);  // through any links
  if (fs::exists(st)) {
    if (!fs::is_regular_file(st) && !fs::is_directory(st)) return {path, true};
    if (!fs::is_symlink(fs::symlink_status(path, ec))) return {path, false};
    const fs::path file = fs::canonical(path, ec);
    return {ec ? path : file.string(), false};
  }
  // Nothing there: a dangling link names the file to create. A loop of links names none (writing
  // at the 40th hop would replace a link somewhere in the loop).
  fs::path p(path);
  for (int hops = 0; hops < 40 && fs::is_symlink(fs::symlink_status(p, ec)); ++hops) {
    const fs::path target = fs::read_symlink(p, ec);
    if (ec) break;
    p = target.is_absolute() ? target : p.parent_path() / target;
  }
  INPUT_CHECK(!fs::is_symlink(fs::symlink_status(p, ec)), "cannot write {}: too many levels of symbolic links",
              path);
  return {p.string(), false};
}

namespace {

// Writes a new file at `tmp` through write(f), flushed, fsync'ed and closed. nullopt, or the errno
// behind the write, flush, sync or close that failed (the file then left for the caller to
// remove). Error when tmp cannot be made, naming `path` as unchanged; an exception from write()
// passes through, the file closed and removed.
std::optional<int> write_synced(const std::string& tmp, const std::string& path,
                                const std::function<bool(FILE*)>& write) {
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(format("cannot write {}: {} ({} is unchanged)", tmp, std::strerror(errno), path));
  bool ok = false;
  try {
    ok = write(f);
  } catch (...) {  // the writer's own error (a damaged source it streams from): no file is left
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  ok = ok && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int saved_errno = errno;
  ok = std::fclose(f) == 0 && ok;
  if (ok) return std::nullopt;
  return saved_errno;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::function<bool(FILE*)>& write) {
  const WriteTarget target = resolve_write_target(path);
  if (target.in_place) {
    FILE* f = nullptr;
    if (target.descriptor >= 0) {
      // Through a copy of the standard descriptor, at its offset: "wb" does not truncate it here.
      // What the program printed to the stream before goes first.
      if (target.descriptor == 1) {
        std::cout.flush();
        std::fflush(stdout);
      } else {
        std::cerr.flush();
        std::fflush(stderr);
      }
      const int fd = ::dup(target.descriptor);
      f = fd >= 0 ? ::fdopen(fd, "wb") : nullptr;
      if (!f && fd >= 0) ::close(fd);
    } else {
      f = std::fopen(target.path.c_str(), "wb");
    }
    if (!f) throw Error(format("cannot write {}: {}", path, std::strerror(errno)));
    bool ok = false;
    try {
      ok = write(f);
    } catch (...) {
      std::fclose(f);
      throw;
    }
    ok = ok && std::fflush(f) == 0;
    const int saved_errno = errno;
    ok = std::fclose(f) == 0 && ok;
    if (!ok) throw Error(format("writing {} failed: {}", path, std::strerror(saved_errno ? saved_errno : errno)));
    return;
  }
  const std::string tmp = target.path + ".tmp";
  const TemporaryFile on_signal(tmp);  // removed if a signal ends the program meanwhile
  const std::optional<int> failed = write_synced(tmp, path, write);
  if (failed || std::rename(tmp.c_str(), target.path.c_str()) != 0) {
    const std::string why = std::strerror(failed ? *failed : errno);
    std::remove(tmp.c_str());
    throw Error(format("writing {} failed: {} ({} is unchanged)", path, why, path));
  }
  sync_directory(target.path);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, [&](FILE* f) { return std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size(); });
}

void write_files_atomic(const std::vector<std::pair<std::string, std::string>>& files) {
  // Every target checked before anything is written: a device, a FIFO or a folder in a target's
  // place would fail a rename after others had been made.
  std::vector<std::string> targets;
  for (const auto& [path, bytes] : files) {
    const WriteTarget target = resolve_write_target(path);
    std::error_code ec;
    INPUT_CHECK(!target.in_place && !std::filesystem::is_directory(target.path, ec),
                "{} is not a regular file: it is replaced together with the files beside it, so it must be one (or "
                "absent)",
                path);
    targets.push_back(target.path);
  }
  std::vector<std::unique_ptr<TemporaryFile>> on_signal;  // removed if a signal ends the program meanwhile
  std::vector<std::string> written;                       // the temporary files complete so far
  const auto remove_written = [&] {
    for (const std::string& tmp : written) std::remove(tmp.c_str());
  };
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string tmp = targets[i] + ".tmp";
    on_signal.push_back(std::make_unique<TemporaryFile>(tmp));
    const std::string& bytes = files[i].second;
    std::optional<int> failed;
    try {
      failed = write_synced(tmp, files[i].first,
                            [&](FILE* f) { return std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size(); });
    } catch (...) {
      remove_written();
      throw;
    }
    written.push_back(tmp);
    if (failed) {
      remove_written();
      throw Error(format("writing {} failed: {} ({} is unchanged)", files[i].first, std::strerror(*failed),
                         files[i].first));
    }
  }
  // The renames with a stopping signal held back (DeferSignalEnd): one that came between them would
  // remove the temporaries not yet renamed and leave a new file beside old ones; held, it ends the
  // program after the last rename.
  std::string failure;
  size_t renamed = 0;
  {
    const DeferSignalEnd defer;
    for (; renamed < files.size(); ++renamed) {
      if (std::rename(written[renamed].c_str(), targets[renamed].c_str()) != 0) {
        failure = format("renaming {} to {} failed: {}", written[renamed], targets[renamed], std::strerror(errno));
        break;
      }
    }
  }
  if (!failure.empty()) {
    std::string replaced;
    for (size_t i = 0; i < renamed; ++i) replaced += (i ? ", " : "") + targets[i];
    for (size_t i = renamed; i < written.size(); ++i) std::remove(written[i].c_str());
    throw Error(failure + (renamed ? format(" (already replaced: {}; the others are unchanged)", replaced) : ""));
  }
  // Each folder once (a tokenizer's files share one).
  std::set<std::filesystem::path> folders;
  for (const std::string& target : targets)
    if (folders.insert(std::filesystem::path(target).parent_path()).second) sync_directory(target);
}

std::string read_whole_stream(std::istream& in, const std::string& what, size_t max_bytes,
                              const std::string& too_large) {
  std::string text;
  std::vector<char> block(1 << 16);
  while (in.read(block.data(), std::streamsize(block.size())) || in.gcount() > 0) {
    text.append(block.data(), size_t(in.gcount()));
    INPUT_CHECK(text.size() <= max_bytes, "{} is larger than {} bytes: {}", what, max_bytes, too_large);
  }
  if (in.bad()) throw Error(format("reading {} failed (an I/O error)", what));
  return text;
}

std::string read_whole_file(const std::string& path, const std::string& what, size_t max_bytes,
                            const std::string& too_large) {
  std::error_code ec;
  // A directory opens, then fails every read: said as what it is.
  INPUT_CHECK(!std::filesystem::is_directory(path, ec), "{} {} is a directory, not a file", what, path);
  // A regular file's size is known before reading it: refused without reading (the cap in the
  // loop is for devices and FIFOs, whose size is not).
  const auto size = std::filesystem::is_regular_file(path, ec) ? std::filesystem::file_size(path, ec) : 0;
  INPUT_CHECK(ec || size <= max_bytes, "{} {} is larger than {} bytes: {}", what, path, max_bytes, too_large);
  std::ifstream in(path, std::ios::binary);
  INPUT_CHECK(in.good(), "cannot open {} {}: {}", what, path, std::strerror(errno));
  return read_whole_stream(in, what + " " + path, max_bytes, too_large);
}

}  // namespace gpt2cc
