// The `prepare` pipeline: input files -> documents (data/formats.hpp) -> train/validation split
// by document -> tokens (all cores) -> shards of at most shard_tokens tokens + manifest.json.
// Every document is preceded by <|endoftext|>, so documents are separated by it and a split
// starts with it. Memory is bounded: text is tokenised in batches of ~batch_bytes, and a long
// document is cut into pieces only where the cut cannot change GPT-2's tokens (tok::find_safe_split:
// at a space or line end after a visible character).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "data/formats.hpp"
#include "tokenizer/tokenizer.hpp"

namespace gpt2cc::data {

struct PrepareConfig {
  FormatOptions format;
  std::vector<std::string> inputs;      // files (see expand_inputs)
  std::vector<std::string> val_inputs;  // explicit validation files; then val_fraction is unused
  double val_fraction = 0.01;           // [0, 1): share of documents drawn into the validation split
  uint64_t seed = 1337;                 // the split draw: document i is validation iff u(seed, i) < fraction
  std::string tokenizer_dir;            // recorded in the manifest
  std::string out_dir;                  // receives train/, val/ and manifest.json
  uint64_t shard_tokens = 100'000'000;  // tokens per shard (the last of a split holds the rest)
  int threads = 0;                      // tokenizer threads, 0 to kMaxThreads (0: OpenMP's default)
  size_t batch_bytes = 32u << 20;       // text tokenised per parallel batch (bounds memory)
  size_t piece_bytes = 1u << 20;        // long documents are cut into pieces of about this size
  bool overwrite = false;               // replace shards already in out_dir (when the run succeeds)
  std::string command_line;             // recorded in the manifest
};

struct SplitSummary {
  uint64_t documents = 0;
  uint64_t tokens = 0;  // including one <|endoftext|> per document
  uint64_t bytes = 0;   // UTF-8 bytes of document text
  std::vector<std::string> shards;
  std::vector<uint64_t> shard_tokens;
};

struct FileSummary {
  std::string path;
  uint64_t documents = 0, bytes = 0;
  std::string story_boundary;  // tinystories: the boundary used for this file (docs/data.md)
};

struct PrepareSummary {
  SplitSummary train, val;
  std::vector<FileSummary> files;
  double seconds = 0;
  uint64_t peak_rss_bytes = 0;
  int threads = 0;
  std::vector<std::string> warnings;
};

// Files of each path, in name order; a directory contributes its regular files recursively
// (hidden ones skipped, and `out_dir`, prepare's --out, when it lies inside, or its train/, val/
// and manifest.json when the directory is --out itself: an earlier run's shards and manifest are
// not text to read). InputError for a path that does not exist or holds no files, or a file that
// is one of --out's outputs.
std::vector<std::string> expand_inputs(const std::vector<std::string>& paths, const std::string& out_dir = "");

// InputError naming a file that `inputs` (--input) and `val_inputs` (--val-files) hold twice
// between them, by any path (a symbolic or hard link, `dir` and `dir/a.txt`: the same device and
// inode): its text would be trained on twice, or be in both splits.
void check_distinct_inputs(const std::vector<std::string>& inputs, const std::vector<std::string>& val_inputs);

// Runs the whole pipeline and writes <out>/train/*.bin, <out>/val/*.bin, <out>/manifest.json.
// Everything is written into <out>/.prepare.tmp first and moved into <out> only on success: on
// any error <out> is left as it was (an overwrite's old shards included), and the directories the
// run created are removed. The move is journaled (data/output_dir.hpp): a move an earlier run
// began and did not finish is finished first. InputError for bad input; Error for a failed read or write;
// Interrupted once config.format.stop is set (checked per block read and per piece tokenised).
// Progress lines go to log.
PrepareSummary prepare_dataset(const PrepareConfig& config, const Tokenizer& tokenizer, std::ostream& log);

}  // namespace gpt2cc::data
