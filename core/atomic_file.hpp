// Files replaced whole: written to "<path>.tmp", flushed and fsync'ed, renamed over <path>, and the
// directory synced so the rename itself is durable. A crash or a failed write never leaves a
// half-written file in place of the old one. Used by checkpoints, the safetensors writer, the
// Hugging Face export, tokenizer files, run configs and benchmark results.
#pragma once

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace gpt2cc {

// fsync of the directory holding `file` (after a rename into it).
void sync_directory(const std::filesystem::path& file);

// Writes path through "<path>.tmp": write(file) puts the bytes (false: it failed), then the file is
// flushed, fsync'ed and renamed and its directory synced; on failure the temporary file is removed
// and the old file survives. Throws Error naming the path.
void write_file_atomic(const std::string& path, const std::function<bool(FILE*)>& write);
// The same for bytes already in memory.
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace gpt2cc
