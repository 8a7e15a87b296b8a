// prepare's --out folder (data/output_dir.hpp): checks, creation, and the journaled move of a
// finished run into it.
#include "data/output_dir.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/run_directory.hpp"

namespace gpt2cc::data {

namespace {

namespace fs = std::filesystem;

constexpr const char* kSplits[2] = {"train", "val"};
// The move's second marker: every old shard and the old manifest are in .prepare.tmp/old/, so
// every *.bin in <out>'s split folders from then on is a new one.
constexpr const char* kOldMovedMarker = "OLD_MOVED";

// An empty file, durable with its folder's entry (write_file_atomic syncs both).
void write_marker(const fs::path& path) { write_file_atomic(path.string(), ""); }

// Renames every *.bin of `from` into `to` (created if missing), then makes the renames durable.
void move_shards(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  if (!fs::is_directory(from, ec)) return;
  fs::create_directories(to);
  for (const auto& entry : fs::directory_iterator(from))
    if (entry.path().extension() == ".bin") fs::rename(entry.path(), to / entry.path().filename());
  sync_directory(to / ".");  // syncs the parent of "to/.", `to` itself
  sync_directory(from / ".");
}

// The move from `staging` into `out`, from wherever an earlier attempt stopped: each step moves
// what is still to move, so it can run again after a stop at any point.
void finish_move(const fs::path& out, const fs::path& staging) {
  std::error_code ec;
  const fs::path old = staging / "old";
  const bool old_moved = fs::exists(staging / kOldMovedMarker, ec);
  // The staged manifest moves last, after OLD_MOVED: without both this is no state a move leaves.
  if (!old_moved && !fs::exists(staging / "manifest.json", ec))
    throw Error(format("{} holds the marker of a move into {} but not the dataset to move (no manifest.json): look "
                       "at both and remove {} by hand",
                       staging.string(), out.string(), (staging / kPrepareMoveMarker).string()));
  // The loader's marker in each split folder, whatever name reaches it (a link to it, its target):
  // there before anything moves, gone before COMMITTING.
  for (const char* split : kSplits) {
    fs::create_directories(out / split);
    write_marker(out / split / kPrepareMovingMarker);
  }
  if (!old_moved) {
    // No new shard has moved in yet: every *.bin in the split folders is the old dataset's.
    fs::create_directories(old);
    if (fs::exists(fs::symlink_status(out / "manifest.json", ec))) {
      fs::rename(out / "manifest.json", old / "manifest.json");
      sync_directory(out / "manifest.json");
    }
    for (const char* split : kSplits) move_shards(out / split, old / split);
    write_marker(staging / kOldMovedMarker);
  }
  for (const char* split : kSplits) move_shards(staging / split, out / split);
  if (fs::exists(staging / "manifest.json", ec)) {
    fs::rename(staging / "manifest.json", out / "manifest.json");
    sync_directory(out / "manifest.json");
  }
  // The move is done: the split folders' markers go, then COMMITTING (a stop in the removal below
  // then leaves only leftovers, which the next run removes; COMMITTING left alone would have it
  // move the new dataset away as the old one).
  for (const char* split : kSplits) {
    fs::remove(out / split / kPrepareMovingMarker);
    sync_directory(out / split / kPrepareMovingMarker);
  }
  fs::remove(staging / kPrepareMoveMarker);
  sync_directory(staging / kPrepareMoveMarker);
  fs::remove_all(staging);
  sync_directory(staging);
}

}  // namespace

std::vector<fs::path> create_output_directory(const fs::path& dir) {
  std::error_code ec;
  const std::vector<fs::path> made = make_directories(dir, ec);
  if (!ec) return made;
  std::error_code ignored;
  for (const fs::path& level : made) fs::remove(level, ignored);
  std::string message = format("cannot create output directory {}: {}", dir.string(), ec.message());
  if (folder_error_is_input(ec)) fail_input(message + " (check --out)");
  throw Error(message);
}

void check_output(const PrepareConfig& config) {
  const fs::path out = config.out_dir;
  std::error_code ec;
  const fs::path manifest = out / "manifest.json";
  INPUT_CHECK(!fs::is_directory(manifest, ec), "{} is a directory: prepare would replace it by its manifest (check "
              "--out)", manifest.string());
  for (const char* split : kSplits) {
    const fs::path dir = out / split;
    if (!fs::exists(fs::symlink_status(dir, ec))) continue;  // a dangling link or a loop is there too
    INPUT_CHECK(fs::is_directory(dir, ec), "{} exists and is not a directory{} (check --out)", dir.string(),
                fs::is_symlink(fs::symlink_status(dir, ec)) ? " (a link to no folder)" : "");
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() != ".bin") continue;
      INPUT_CHECK(config.overwrite, "{} already holds shards (e.g. {}); pass --overwrite to replace them",
                  dir.string(), entry.path().filename().string());
      INPUT_CHECK(!entry.is_directory(ec), "{} is a directory, not a shard: prepare --overwrite would replace the "
                  "shards of {}; move it away first", entry.path().string(), dir.string());
    }
  }
}

void check_renames(const fs::path& out, const fs::path& staging) {
  for (const char* split : kSplits) {
    const fs::path dir = out / split;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;  // created inside <out>, beside the staging folder
    const fs::path probe = staging / split / ".rename-probe", there = dir / ".prepare-rename-probe";
    write_file_atomic(probe.string(), "");
    std::string why;
    if (::rename(probe.c_str(), there.c_str()) != 0) {
      why = errno == EXDEV ? "it is on another filesystem or mount (a link?), which renames cannot cross"
                           : std::strerror(errno);
    } else if (::rename(there.c_str(), probe.c_str()) != 0) {
      why = std::strerror(errno);
      fs::remove(there, ec);
    }
    fs::remove(probe, ec);
    INPUT_CHECK(why.empty(), "prepare moves its shards into {} and the old ones out of it by renaming, from and to {}: "
                "{}; give an --out whose train/ and val/ are folders of its own",
                dir.string(), staging.string(), why);
  }
}

void move_into_output(const fs::path& out, const fs::path& staging, PrepareSummary& summary) {
  write_marker(staging / kPrepareMoveMarker);
  try {
    finish_move(out, staging);
  } catch (const std::exception& e) {
    throw Error(format("{}; the move of the new dataset into {} stopped midway ({} holds the rest): run prepare "
                       "with --out {} again, which finishes it first",
                       e.what(), out.string(), staging.string(), out.string()));
  }
  SplitSummary* splits[2] = {&summary.train, &summary.val};
  for (int s = 0; s < 2; ++s)
    for (std::string& shard : splits[s]->shards) shard = (out / kSplits[s] / fs::path(shard).filename()).string();
}

bool finish_interrupted_move(const fs::path& out, const fs::path& staging, std::ostream& log) {
  std::error_code ec;
  if (!fs::exists(staging / kPrepareMoveMarker, ec)) return false;
  log << "an earlier run stopped while moving its dataset into " << out.string() << ": finishing that first"
      << std::endl;
  finish_move(out, staging);
  return true;
}

}  // namespace gpt2cc::data
