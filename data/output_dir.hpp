// prepare's --out folder (data/pipeline.hpp's prepare_dataset): the checks before a run, its
// creation, and the move of a finished run from <out>/.prepare.tmp into it.
//
// The move is journaled so that nothing is lost wherever it stops (a kill, a power cut): first the
// marker .prepare.tmp/COMMITTING (from then on the staged run is the dataset <out> will hold) and a
// marker .prepare-moving in each split folder, then the old manifest and shards are renamed into
// .prepare.tmp/old/, then the marker OLD_MOVED, then the new shards and last the new manifest are
// renamed into <out>; the split folders' markers go, then COMMITTING, then .prepare.tmp. A run
// stopped inside it is finished by the next prepare into <out> (finish_interrupted_move), and the
// loader refuses the split folders until then, by any name (core/dataloader.hpp,
// kPrepareMovingMarker). Renames only, all within one filesystem (check_renames).
#pragma once

#include <filesystem>
#include <ostream>
#include <vector>

#include "core/dataloader.hpp"  // kPrepareStagingName, kPrepareMoveMarker
#include "data/pipeline.hpp"

namespace gpt2cc::data {

// Creates --out or a directory under it, and returns the levels it made, deepest first ("nest/a/b",
// "nest/a" when only "nest" existed: core/run_directory.hpp's make_directories): what a failed run
// must remove again. A path the user cannot write to is bad input (InputError); any other failure
// (no space, an I/O error) is the machine's (Error); either removes the levels made first.
std::vector<std::filesystem::path> create_output_directory(const std::filesystem::path& dir);

// Before any work: refuses shards already in <out>/train or <out>/val unless config.overwrite
// (stale shards never mix in), and what the move could not replace: an entry *.bin or
// manifest.json that is a folder. InputError naming the path.
void check_output(const PrepareConfig& config);

// Once `staging` (and its train/ and val/) exists, before any work: InputError unless a file can
// be renamed from each staging split folder into <out>'s and back (not across filesystems or
// mounts: a link, a bind mount), which the move does with every shard.
void check_renames(const std::filesystem::path& out, const std::filesystem::path& staging);

// Moves a finished run from `staging` (its train/, val/ and manifest.json) into `out`, journaled
// as above; summary's shard paths become the final ones. An error after the marker (a failed
// rename) says the next run finishes the move: `staging` must then be left for it.
void move_into_output(const std::filesystem::path& out, const std::filesystem::path& staging,
                      PrepareSummary& summary);

// Finishes a move that stopped midway (`staging` holds the marker COMMITTING): true, with a line
// to `log`, when there was one; false when `staging` is absent or only a failed run's leftovers.
bool finish_interrupted_move(const std::filesystem::path& out, const std::filesystem::path& staging,
                             std::ostream& log);

}  // namespace gpt2cc::data
