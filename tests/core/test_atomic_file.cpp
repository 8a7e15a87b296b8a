// Files replaced whole (core/atomic_file.hpp): the bytes land, no .tmp is left; a symbolic link is
// followed to its file and stays a link; a FIFO or a device is written in place, never replaced
// by a plain file (the rename that replaces a regular file would put one where /dev/null was).
// And read_whole_file: bytes as they are, bad paths as bad input, a cap on the size. And the
// signal handlers (core/signal_cleanup.hpp): a signal ignored when the program started stays so,
// and one held by DeferSignalEnd ends the program when it ends. And write_files_atomic, and
// make_directories and RunDirectoryLock's refusals (core/run_directory.hpp).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/catch.hpp"
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "common/test_common.hpp"
#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/run_directory.hpp"
#include "core/signal_cleanup.hpp"

using namespace gpt2cc;
namespace fs = std::filesystem;

TEST_CASE("write_file_atomic replaces a file whole, through links (never a loop), and writes devices in place",
          "[atomic]") {
  const std::string dir = test::temp_dir("atomic_file");

  SECTION("a regular file") {
    const std::string path = dir + "/plain.txt";
    std::ofstream(path) << "old";
    write_file_atomic(path, "new");
    CHECK(test::read_bytes(path) == "new");
    CHECK_FALSE(fs::exists(path + ".tmp"));
    CHECK(resolve_write_target(path).path == path);
    CHECK_FALSE(resolve_write_target(path).in_place);
  }
  SECTION("a link to a file: the file is replaced, the link stays") {
    fs::create_directories(dir + "/real");
    const std::string file = dir + "/real/target.txt", link = dir + "/link.txt";
    std::ofstream(file) << "old";
    fs::create_symlink("real/target.txt", link);
    write_file_atomic(link, "new");
    CHECK(fs::is_symlink(link));
    CHECK(test::read_bytes(file) == "new");
    CHECK_FALSE(fs::exists(link + ".tmp"));
    CHECK_FALSE(fs::exists(file + ".tmp"));
    CHECK(resolve_write_target(link).path == fs::canonical(file).string());
  }
  SECTION("a dangling link: its file is created") {
    const std::string link = dir + "/dangling.txt";
    fs::create_symlink("made.txt", link);
    write_file_atomic(link, "made");
    CHECK(fs::is_symlink(link));
    CHECK(test::read_bytes(dir + "/made.txt") == "made");
  }
  SECTION("a chain of dangling links: the file at its end is created, the links stay") {
    // a -> b -> chained.txt: every hop is followed, not just the first.
    fs::create_symlink("b", dir + "/a");
    fs::create_symlink("chained.txt", dir + "/b");
    write_file_atomic(dir + "/a", "chained");
    CHECK(fs::is_symlink(dir + "/a"));
    CHECK(fs::is_symlink(dir + "/b"));
    CHECK(test::read_bytes(dir + "/chained.txt") == "chained");
  }
  SECTION("a loop of links is refused, every link left as it was") {
    // loopA -> loopB -> loopA: following 40 hops once wrote a file over one of them.
    fs::create_symlink("loopB", dir + "/loopA");
    fs::create_symlink("loopA", dir + "/loopB");
    fs::create_symlink("loopA", dir + "/into_loop");
    for (const char* name : {"/loopA", "/into_loop"}) {
      CHECK_THROWS_AS(write_file_atomic(dir + name, "x"), InputError);
      CHECK_THROWS_WITH(write_file_atomic(dir + name, "x"), Catch::Contains("too many levels of symbolic links"));
    }
    for (const char* name : {"/loopA", "/loopB", "/into_loop"}) CHECK(fs::is_symlink(dir + name));
  }
  SECTION("/dev/stdout redirected to a file: written through the descriptor, at its offset") {
    // What a shell's `> log` gives the program: the file is neither replaced nor truncated.
    const std::string log = dir + "/stdout.log";
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "earlier\n", 8) == 8);
    std::cout.flush();
    const int saved = ::dup(1);
    REQUIRE(::dup2(fd, 1) == 1);
    CHECK(resolve_write_target("/dev/stdout").descriptor == 1);
    CHECK(resolve_write_target("/proc/self/fd/2").descriptor == 2);
    write_file_atomic("/dev/stdout", "new\n");
    write_file_atomic("/dev/fd/1", "newer\n");
    // Any other path to the same file (a link to /dev/stdout; the file itself), after what the
    // program printed to stdout before.
    const std::string link = dir + "/to_stdout";
    fs::remove(link);
    fs::create_symlink("/dev/stdout", link);
    CHECK(resolve_write_target(link).descriptor == 1);
    CHECK(resolve_write_target(log).descriptor == 1);
    std::printf("printed\n");
    write_file_atomic(link, "linked\n");
    std::fflush(stdout);
    ::dup2(saved, 1);
    ::close(saved);
    ::close(fd);
    CHECK(test::read_bytes(log) == "earlier\nnew\nnewer\nprinted\nlinked\n");
  }
  SECTION("a FIFO is written into and stays a FIFO") {
    const std::string fifo = dir + "/fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // A reader first (non-blocking, so neither side waits): the write then opens at once.
    const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
    REQUIRE(reader >= 0);
    CHECK(resolve_write_target(fifo).in_place);
    write_file_atomic(fifo, "through the pipe");
    char buf[64] = {};
    const ssize_t n = ::read(reader, buf, sizeof buf);
    ::close(reader);
    CHECK(std::string(buf, n > 0 ? size_t(n) : 0) == "through the pipe");
    CHECK(fs::is_fifo(fifo));
    CHECK_FALSE(fs::exists(fifo + ".tmp"));
  }
  SECTION("a character device (/dev/null's own numbers, where mknod is allowed) stays a device") {
    const std::string node = dir + "/null";
    if (::mknod(node.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0) {
      WARN("mknod is not allowed here: the device case is left to the FIFO's");
      return;
    }
    write_file_atomic(node, "discarded");
    CHECK(fs::is_character_file(node));
    CHECK_FALSE(fs::exists(node + ".tmp"));
  }
  SECTION("a write that fails names the path and leaves the file as it was") {
    const std::string path = dir + "/kept.txt";
    std::ofstream(path) << "old";
    CHECK_THROWS_WITH(write_file_atomic(path, [](FILE*) { return false; }),
                      Catch::StartsWith("writing " + path + " failed") && Catch::Contains("is unchanged"));
    CHECK(test::read_bytes(path) == "old");
    CHECK_FALSE(fs::exists(path + ".tmp"));
  }
  SECTION("a writer that throws (a damaged source it streams from): its error, the file as it was") {
    const std::string path = dir + "/kept_on_throw.txt";
    std::ofstream(path) << "old";
    const auto throwing = [](FILE* f) -> bool {
      std::fputs("half", f);
      fail_input("the source is damaged");
    };
    CHECK_THROWS_AS(write_file_atomic(path, throwing), InputError);
    CHECK(test::read_bytes(path) == "old");
    CHECK_FALSE(fs::exists(path + ".tmp"));
  }
}

TEST_CASE("read_whole_file: the bytes; a missing file, a directory or one past the cap is bad input", "[atomic]") {
  const std::string dir = test::temp_dir("read_whole_file");
  const std::string bytes("a\0b\r\nc", 6);
  write_file_atomic(dir + "/f", bytes);
  CHECK(read_whole_file(dir + "/f", "test file") == bytes);
  CHECK(read_whole_file(dir + "/f", "test file", 6) == bytes);
  CHECK_THROWS_AS(read_whole_file(dir + "/f", "test file", 5), InputError);
  CHECK_THROWS_WITH(read_whole_file(dir + "/f", "test file", 5),
                    "test file " + dir + "/f is larger than 5 bytes: not a file of that kind");
  CHECK_THROWS_WITH(read_whole_file("/dev/zero", "config", 1 << 20), Catch::Contains("larger than 1048576 bytes"));
  CHECK_THROWS_AS(read_whole_file(dir + "/none", "test file"), InputError);
  CHECK_THROWS_WITH(read_whole_file(dir + "/none", "test file"),
                    "cannot open test file " + dir + "/none: No such file or directory");
  CHECK_THROWS_WITH(read_whole_file(dir, "test file"), "test file " + dir + " is a directory, not a file");
}

TEST_CASE("a signal ignored when the program started stays ignored by the stop handlers", "[signal]") {
  // A background job (`prepare ... &` in a script) starts with SIGINT ignored: the Ctrl-C meant for
  // the foreground command must not stop it. SIGTERM, not ignored, still asks to stop, and arms
  // the removal of temporaries for the next one, which leaves SIGINT ignored too.
  const test::ChildOutcome outcome = test::run_in_child(20, [] {
    std::signal(SIGINT, SIG_IGN);
    install_stop_handlers();
    ::raise(SIGINT);
    if (stop_signal().load() != 0) throw Error("a SIGINT ignored at the start asked the program to stop");
    ::raise(SIGTERM);
    if (stop_signal().load() != SIGTERM) throw Error("SIGTERM did not ask the program to stop");
    ::raise(SIGINT);  // still ignored: the process goes on
    struct sigaction now {};
    ::sigaction(SIGINT, nullptr, &now);
    if (now.sa_handler != SIG_IGN) throw Error("SIGINT is no longer ignored");
  });
  INFO(outcome.summary());
  CHECK(outcome.returned);
}

// Files replaced together (a tokenizer's three): a target that is a folder or a device is refused
// before anything is written; a signal between the renames ends the program only after the last,
// so no new file is left beside old ones.
TEST_CASE("write_files_atomic checks every target first and holds a signal until the renames are done",
          "[atomic][signal]") {
  const std::string dir = test::temp_dir("write_files_atomic");
  fs::create_directories(dir + "/folder.json");
  for (const char* name : {"a.txt", "b.txt"}) std::ofstream(dir + "/" + name) << "old";
  fs::create_symlink("/dev/null", dir + "/device.json");
  for (const char* odd : {"folder.json", "device.json"}) {
    INFO(odd);
    const std::string path = dir + "/" + odd;
    CHECK_THROWS_AS(write_files_atomic({{dir + "/a.txt", "new"}, {path, "new"}}), InputError);
    CHECK_THROWS_WITH(write_files_atomic({{dir + "/a.txt", "new"}, {path, "new"}}),
                      Catch::Contains(path + " is not a regular file"));
    CHECK(test::read_bytes(dir + "/a.txt") == "old");
    CHECK_FALSE(fs::exists(dir + "/a.txt.tmp"));
  }
  // A SIGTERM raised while the renames are held (as one arriving between them would be): the child
  // goes on to the end of the renames, then dies by it; both files are new.
  const test::ChildOutcome outcome = test::run_in_child(20, [&] {
    remove_temporaries_on_signal();
    {
      const DeferSignalEnd defer;
      ::raise(SIGTERM);
      write_files_atomic({{dir + "/a.txt", "new a"}, {dir + "/b.txt", "new b"}});
      std::ofstream(dir + "/went_on") << "yes";
    }
    throw Error("the held SIGTERM did not end the program");
  });
  INFO(outcome.summary());
  CHECK(outcome.signal == SIGTERM);
  CHECK(fs::exists(dir + "/went_on"));
  CHECK(test::read_bytes(dir + "/a.txt") == "new a");
  CHECK(test::read_bytes(dir + "/b.txt") == "new b");
}

// make_directories (core/run_directory.hpp, for train's run directory, prepare's --out and the
// export's DIR): the folders it made, deepest first, as the system resolves the path, so that a
// failed program removes exactly those; a file or a dangling link on the way is an error, and
// neither is made or removed.
TEST_CASE("make_directories makes the missing folders and says which", "[atomic_file]") {
  const std::string dir = test::temp_dir("make_directories");
  std::error_code ec;
  CHECK(make_directories(dir + "/a/b", ec) == std::vector<fs::path>{dir + "/a/b", dir + "/a"});
  CHECK(!ec);
  CHECK(fs::is_directory(dir + "/a/b"));
  CHECK(make_directories(dir + "/a", ec).empty());  // there already
  CHECK(!ec);
  // A ".." passes through a folder, which is made (and listed) too.
  CHECK(make_directories(dir + "/new/../c", ec) == std::vector<fs::path>{dir + "/new/../c", dir + "/new"});
  CHECK(!ec);
  CHECK(fs::is_directory(dir + "/c"));
  std::ofstream(dir + "/f") << "a file";
  CHECK(make_directories(dir + "/f/x", ec).empty());
  CHECK(ec == std::errc::not_a_directory);
  CHECK(make_directories(dir + "/f", ec).empty());
  CHECK(ec == std::errc::not_a_directory);
  fs::create_symlink("nowhere", dir + "/dangling");
  CHECK(make_directories(dir + "/dangling/x", ec).empty());
  CHECK(ec);
  CHECK(fs::is_symlink(dir + "/dangling"));
}

// An output folder that cannot be made or opened (RunDirectoryLock, for train's --run-dir, prepare's
// and tokenizer train's --out and --export-hf): the path's fault is bad input (exit 2), the
// machine's (a full disk, an I/O error) is not; the folders made on the way there are removed.
TEST_CASE("RunDirectoryLock refuses a path that cannot be a folder as bad input and leaves nothing behind",
          "[atomic_file]") {
  CHECK(folder_error_is_input(std::make_error_code(std::errc::permission_denied)));
  CHECK(folder_error_is_input(std::make_error_code(std::errc::read_only_file_system)));
  CHECK(folder_error_is_input(std::make_error_code(std::errc::not_a_directory)));
  CHECK_FALSE(folder_error_is_input(std::make_error_code(std::errc::no_space_on_device)));
  CHECK_FALSE(folder_error_is_input(std::make_error_code(std::errc::io_error)));

  const std::string dir = test::temp_dir("lock_refusals");
  std::ofstream(dir + "/f") << "a file";
  // new/ and new/deeper/ are made before the file on the way refuses x: both go again.
  const std::string blocked = dir + "/new/deeper/../../f/x";
  CHECK_THROWS_MATCHES(RunDirectoryLock(blocked), InputError,
                       Catch::Message("cannot create run directory " + blocked + ": Not a directory"));
  CHECK_FALSE(fs::exists(dir + "/new"));
  // Folders the system will not make (no such place in /proc; not permitted in /sys).
  for (const std::string refused : {"/proc/gpt2cc_lock_test", "/sys/gpt2cc_lock_test"}) {
    INFO(refused);
    CHECK_THROWS_AS(RunDirectoryLock(refused, DirectoryOwner{"output directory", "--out"}), InputError);
    CHECK_THROWS_WITH(RunDirectoryLock(refused, DirectoryOwner{"output directory", "--out"}),
                      Catch::StartsWith("cannot create output directory " + refused + ": "));
  }
}
