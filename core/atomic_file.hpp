// Files replaced whole: written to "<path>.tmp", flushed and fsync'ed, renamed over <path>, and the
// directory synced so the rename itself is durable. A crash or a failed write never leaves a
// half-written file in place of the old one. Used by checkpoints, the safetensors writer, the
// Hugging Face export, tokenizer files, run configs and benchmark results. And the reading of a
// small file whole, with the same rules for messages.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <istream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gpt2cc {

// Where a write of `path` lands. A symbolic link is followed to the file it names (the link
// stays a link, the file behind it is replaced); a loop of links is InputError. What is there already and is neither a regular
// file nor a directory (a device such as /dev/null, /dev/stdout's terminal or pipe, a FIFO) is
// written in place (`in_place`): a rename would put a plain file where the device was.
// The process's own standard output or error, by name (/dev/stdout, /dev/fd/2, /proc/self/fd/1) or
// by any path to the same file, pipe or device: written through that descriptor (`descriptor`, in
// place), at its offset, after what the program printed to it, as the program's own output is:
// following the link would replace, or truncate, the file a shell redirected it to.
struct WriteTarget {
  std::string path;
  bool in_place = false;
  int descriptor = -1;  // 1 or 2: write through it
};
WriteTarget resolve_write_target(const std::string& path);

// fsync of the directory holding `file` (after a rename into it).
void sync_directory(const std::filesystem::path& file);

// Writes path through "<path>.tmp": write(file) puts the bytes (false: it failed), then the file is
// flushed, fsync'ed and renamed and its directory synced; on failure the temporary file is removed
// and the old file survives. Throws Error naming the path; an exception from write() itself passes
// through, the temporary file removed. The path is resolve_write_target's:
// through a link to the file behind it, into a device or FIFO directly. A signal that ends the
// program meanwhile removes "<path>.tmp" where the program asked for that (core/signal_cleanup.hpp).
void write_file_atomic(const std::string& path, const std::function<bool(FILE*)>& write);
// The same for bytes already in memory.
void write_file_atomic(const std::string& path, std::string_view bytes);
// Files that belong together (a tokenizer's vocab.json and merges.txt), {path, bytes} each: all
// are written to their "<path>.tmp" first, and only when every one was written are they renamed,
// one after another. A write that fails leaves every old file as it was (no new one beside an old
// one); Error naming the path, the temporary files removed.
void write_files_atomic(const std::vector<std::pair<std::string, std::string>>& files);

// The bytes of the file at `path`, which `what` names in messages ("prompt file"). Missing,
// unreadable, a directory or more than max_bytes (a file of a known kind gone wrong, or an endless
// device such as /dev/zero): InputError (bad input, exit 2), whose message ends in `too_large`
// for the last; a read that fails once the file is open: Error (an I/O error, exit 1).
std::string read_whole_file(const std::string& path, const std::string& what, size_t max_bytes = SIZE_MAX,
                            const std::string& too_large = "not a file of that kind");
// The same for an open stream (standard input), which `what` names: the bytes to its end.
std::string read_whole_stream(std::istream& in, const std::string& what, size_t max_bytes,
                              const std::string& too_large);

}  // namespace gpt2cc
