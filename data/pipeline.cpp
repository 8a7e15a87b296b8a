// The prepare pipeline (data/pipeline.hpp). One reader thread walks the inputs and fills a batch
// of text pieces; each full batch goes to a worker that tokenises it with all threads (one
// Tokenizer copy each) and writes it in order to the shard writers of its split, while the reader
// fills the next batch. Memory is two batches, their tokens and one line of input: a few times
// batch_bytes, independent of the input size.
#include "data/pipeline.hpp"

#include <omp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <thread>
#include <utility>

#include "core/atomic_file.hpp"
#include "core/backend.hpp"  // check_environment_thread_count
#include "core/check.hpp"
#include "core/rng.hpp"
#include "core/run_directory.hpp"
#include "core/shard.hpp"
#include "core/stopwatch.hpp"
#include "data/output_dir.hpp"
#include "tokenizer/pretokenizer.hpp"

namespace gpt2cc::data {

namespace {

namespace fs = std::filesystem;

constexpr uint32_t kSplitStream = 0x5B17u;  // Philox stream of the train/validation draw
enum Split { kTrain = 0, kVal = 1 };
const char* kSplitNames[2] = {"train", "val"};

uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // "VmHWM:  1234 kB"
  return 0;
}

// Shards of one split: <dir>/shard_000000.bin, ... each exactly shard_tokens long but the last.
class SplitWriter {
 public:
  SplitWriter(std::string dir, uint64_t shard_tokens, uint64_t fingerprint, uint32_t vocab, SplitSummary& summary)
      : dir_(std::move(dir)), shard_tokens_(shard_tokens), fingerprint_(fingerprint), vocab_(vocab), summary_(summary) {}

  void append(const uint32_t* tokens, size_t n) {
    while (n > 0) {
      if (!writer_) {
        path_ = format("{}/shard_{}.bin", dir_, zero_pad(summary_.shards.size()));
        writer_ = std::make_unique<ShardWriter>(path_, fingerprint_, vocab_);
      }
      size_t take = size_t(std::min<uint64_t>(n, shard_tokens_ - writer_->size()));
      writer_->append(tokens, take);
      tokens += take;
      n -= take;
      summary_.tokens += take;
      if (writer_->size() == shard_tokens_) close();
    }
  }
  void close() {
    if (!writer_) return;
    uint64_t size = writer_->size();
    writer_->finish();
    writer_.reset();
    summary_.shards.push_back(path_);
    summary_.shard_tokens.push_back(size);
  }

 private:
  static std::string zero_pad(size_t i) {
    std::string s = std::to_string(i);
    return std::string(s.size() < 6 ? 6 - s.size() : 0, '0') + s;
  }
  std::string dir_, path_;
  uint64_t shard_tokens_, fingerprint_;
  uint32_t vocab_;
  SplitSummary& summary_;
  std::unique_ptr<ShardWriter> writer_;
};

class Pipeline : public DocumentSink {
 public:
  // Writes the shards of each split into <dir>/train and <dir>/val.
  Pipeline(const PrepareConfig& config, const std::string& dir, const Tokenizer& tokenizer, PrepareSummary& summary)
      : config_(config), summary_(summary), eot_(uint32_t(tokenizer.eot_id())) {
    int threads = config.threads > 0 ? config.threads : omp_get_max_threads();
    if (config.threads == 0) check_environment_thread_count(threads);
    summary.threads = threads;
    tokenizers_.assign(size_t(threads), tokenizer);  // a copy per thread: encode never shares state
    SplitSummary* splits[2] = {&summary.train, &summary.val};
    for (int s = 0; s < 2; ++s)
      writers_[s] = std::make_unique<SplitWriter>(dir + "/" + kSplitNames[s], config.shard_tokens,
                                                  tokenizer.fingerprint(), uint32_t(tokenizer.vocab_size()),
                                                  *splits[s]);
  }

  // Documents of the next file go to `split` (explicit validation files), or are drawn.
  void set_forced_split(int split) { forced_split_ = split; }

  void text(std::string_view bytes) override {
    if (!open_) {
      open_ = true;
      current_.starts_document = true;
      current_.split = choose_split();
      next_check_ = config_.piece_bytes;
    }
    current_.text.append(bytes);
    if (current_.text.size() >= next_check_) {
      size_t cut = tok::find_safe_split(current_.text, 0, current_.text.size());
      if (cut > 0) {
        push({current_.text.substr(0, cut), current_.starts_document, current_.split});
        current_.text.erase(0, cut);
        current_.starts_document = false;
        next_check_ = config_.piece_bytes;
      } else {
        next_check_ = current_.text.size() * 2;  // no cut point yet: look again after it doubles
      }
      if (batch_bytes_ >= config_.batch_bytes) flush();
    }
  }

  void end_document() override {
    SplitSummary& s = current_.split == kVal ? summary_.val : summary_.train;
    ++s.documents;
    open_ = false;
    push(std::move(current_));
    current_ = Piece{};
    if (batch_bytes_ >= config_.batch_bytes) flush();
  }

  void finish() {
    flush();
    wait();
    for (auto& w : writers_) w->close();
  }

  ~Pipeline() override {  // never leaves the worker running on our members
    if (!worker_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      quit_ = true;  // a batch not yet started is dropped, one in progress is finished
    }
    changed_.notify_all();
    worker_.join();
  }

 private:
  struct Piece {
    std::string text;
    bool starts_document = false;
    int split = kTrain;
  };

  int choose_split() {
    uint64_t index = document_index_++;
    if (forced_split_ >= 0) return forced_split_;
    return philox_uniform(config_.seed, kSplitStream, index) < config_.val_fraction ? kVal : kTrain;
  }

  // What a piece holds beside its text, counted into the batch's size so that a batch of many
  // tiny documents is bounded too: the Piece, its vector of ids, and their allocations (~140 bytes
  // measured a piece of one token; counted by text alone, 10 million one-letter documents took
  // 1.4 GiB before their batch was full).
  static constexpr size_t kPieceOverhead = 160;

  void push(Piece piece) {
    (piece.split == kVal ? summary_.val : summary_.train).bytes += piece.text.size();
    batch_bytes_ += piece.text.size() + kPieceOverhead;
    batch_.push_back(std::move(piece));
  }

  // Hands the batch to the worker and returns to reading: batch k is tokenised and written while
  // batch k+1 is read (at most two batches in memory). Batches are written in input order.
  void flush() {
    wait();
    if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
    {
      std::lock_guard lock(mutex_);
      job_ = std::move(batch_);
    }
    changed_.notify_all();
    batch_ = {};
    batch_bytes_ = 0;
  }

  // Waits until the worker has finished its batch; rethrows the worker's error.
  void wait() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !job_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

  // The worker: one thread for the whole run, one batch at a time. Why not a new thread per batch
  // (std::async): libgomp keeps an OpenMP team per thread that opens parallel regions, so each new
  // thread started a new team of `threads - 1` threads, and libgomp ends the process when it
  // cannot create one (a long run under a memory limit).
  void work() {
    std::unique_lock lock(mutex_);
    for (;;) {
      changed_.wait(lock, [&] { return job_ || quit_; });
      if (quit_) return;
      lock.unlock();  // job_ stays set, and untouched by the reader, until the batch is done
      std::exception_ptr error;
      try {
        tokenize_and_write(*job_);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      job_.reset();
      error_ = error;
      changed_.notify_all();
    }
  }

  // tokens(piece) = [eot if it starts a document] + encode(text), all threads, then in order.
  void tokenize_and_write(const std::vector<Piece>& batch) {
    std::vector<std::vector<int>> ids(batch.size());
    std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 8) num_threads(int(tokenizers_.size()))
    for (size_t i = 0; i < batch.size(); ++i) {
      try {
        check_stop(config_.format.stop);  // a batch takes seconds: stop within one piece
        ids[i] = tokenizers_[size_t(omp_get_thread_num())].encode(batch[i].text, false);
      } catch (...) {
#pragma omp critical
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
    check_stop(config_.format.stop);
    std::vector<uint32_t> out;
    for (size_t i = 0; i < batch.size(); ++i) {
      out.clear();
      if (batch[i].starts_document) out.push_back(eot_);
      out.insert(out.end(), ids[i].begin(), ids[i].end());
      writers_[batch[i].split]->append(out.data(), out.size());
    }
  }

  const PrepareConfig& config_;
  PrepareSummary& summary_;
  uint32_t eot_;
  std::vector<Tokenizer> tokenizers_;
  std::unique_ptr<SplitWriter> writers_[2];
  std::vector<Piece> batch_;
  size_t batch_bytes_ = 0;
  std::thread worker_;                      // started by the first flush
  std::mutex mutex_;                        // guards job_, error_, quit_
  std::condition_variable changed_;         // any of them changed
  std::optional<std::vector<Piece>> job_;   // the batch being tokenised and written
  std::exception_ptr error_;                // the last batch's failure, until wait() rethrows it
  bool quit_ = false;
  Piece current_;
  bool open_ = false;
  size_t next_check_ = 0;
  int forced_split_ = -1;
  uint64_t document_index_ = 0;
};

nlohmann::json split_json(const SplitSummary& s, const std::string& dir) {
  nlohmann::json shards = nlohmann::json::array();
  for (size_t i = 0; i < s.shards.size(); ++i)
    shards.push_back({{"file", fs::relative(s.shards[i], dir).string()}, {"tokens", s.shard_tokens[i]}});
  return {{"documents", s.documents}, {"tokens", s.tokens}, {"bytes", s.bytes}, {"shards", shards}};
}

// Writes <dir>/manifest.json; shard paths are recorded relative to dir ("train/shard_000000.bin").
void write_manifest(const PrepareConfig& config, const std::string& dir, const Tokenizer& tokenizer,
                    const PrepareSummary& summary) {
  std::time_t now = std::time(nullptr);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  nlohmann::json inputs = config.inputs, val_inputs = config.val_inputs;
  nlohmann::json m = {
      {"format_version", 1},
      {"created", when},
      {"command", config.command_line},
      {"input_format", format_name(config.format.format)},
      {"inputs", inputs},
      {"val_inputs", val_inputs},
      {"val_fraction", config.val_inputs.empty() ? config.val_fraction : 0.0},
      {"seed", config.seed},
      {"tokenizer", {{"dir", config.tokenizer_dir},
                     {"fingerprint", fingerprint_hex(tokenizer.fingerprint())},
                     {"vocab_size", tokenizer.vocab_size()},
                     {"eot_id", tokenizer.eot_id()}}},
      {"token_bytes", shard_token_bytes(uint32_t(tokenizer.vocab_size()))},
      {"shard_tokens", config.shard_tokens},
      {"document_separator", "<|endoftext|> before every document"},
      {"train", split_json(summary.train, dir)},
      {"val", split_json(summary.val, dir)},
      {"seconds", summary.seconds},
      {"threads", summary.threads},
  };
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : summary.files) {
    nlohmann::json entry = {{"path", f.path}, {"documents", f.documents}, {"bytes", f.bytes}};
    if (!f.story_boundary.empty()) entry["story_boundary"] = f.story_boundary;
    files.push_back(entry);
  }
  m["files"] = files;
  if (config.format.format == Format::tinystories)
    m["story_boundary"] = story_boundary_name(config.format.story_boundary);
  write_file_atomic(dir + "/manifest.json", m.dump(2) + "\n");  // Error (exit 1) naming the file
}

}  // namespace

namespace {

// Whether `path` is one of prepare's own outputs in `out_dir`: its train/ or val/ shard folder or
// its manifest.json (the staging folder is hidden).
bool prepare_output(const fs::path& path, const std::string& out_dir) {
  if (out_dir.empty()) return false;
  std::error_code ec;
  for (const char* name : {kSplitNames[0], kSplitNames[1], "manifest.json"})
    if (fs::equivalent(path, fs::path(out_dir) / name, ec)) return true;
  return false;
}

using FileId = std::pair<dev_t, ino_t>;  // one file whatever its path (links included)

std::optional<FileId> file_id(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

// The files of an earlier run in `out_dir` (its shards and manifest), by identity: a link to one
// is one of them too.
std::set<FileId> prepare_output_files(const std::string& out_dir) {
  std::set<FileId> ids;
  if (out_dir.empty()) return ids;
  std::error_code ec;
  for (const char* split : kSplitNames)
    for (auto it = fs::directory_iterator(fs::path(out_dir) / split, ec); !ec && it != fs::directory_iterator();
         it.increment(ec))
      if (const auto id = file_id(it->path().string())) ids.insert(*id);
  if (const auto id = file_id((fs::path(out_dir) / "manifest.json").string())) ids.insert(*id);
  return ids;
}

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& paths, const std::string& out_dir) {
  std::vector<std::string> out;
  const std::set<FileId> outputs = prepare_output_files(out_dir);
  const auto refuse_output = [&](const std::string& input, bool output) {
    INPUT_CHECK(!output, "input {} is one of --out's own outputs (its shards or manifest.json), not text to read",
                input);
  };
  for (const auto& p : paths) {
    std::error_code ec;
    refuse_output(p, prepare_output(p, out_dir) || prepare_output(fs::absolute(p, ec).parent_path(), out_dir));
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> files;
      for (auto it = fs::recursive_directory_iterator(p); it != fs::recursive_directory_iterator(); ++it) {
        bool hidden = it->path().filename().string().starts_with(".");
        const bool nested_out = !out_dir.empty() && it->is_directory() && fs::equivalent(it->path(), out_dir, ec);
        if (nested_out || prepare_output(it->path(), out_dir)) {
          it.disable_recursion_pending();
          continue;
        }
        if (hidden && it->is_directory()) it.disable_recursion_pending();
        if (hidden || !it->is_regular_file()) continue;
        const auto id = file_id(it->path().string());
        refuse_output(it->path().string(), id && outputs.count(*id));  // a link to a shard
        files.push_back(it->path().string());
      }
      std::sort(files.begin(), files.end());
      INPUT_CHECK(!files.empty(), "input directory {} holds no files", p);
      out.insert(out.end(), files.begin(), files.end());
    } else {
      const fs::file_status status = fs::status(p, ec);
      // A path that names nothing is the user's; one that cannot be looked at (a link loop: 2, no
      // permission: 1) is said as such, as run_cli says a filesystem error.
      if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory)
        throw fs::filesystem_error("cannot read input", p, ec);
      INPUT_CHECK(fs::exists(status), "input {} does not exist", p);
      INPUT_CHECK(fs::is_regular_file(status), "input {} is not a regular file or a directory (a pipe or a device "
                  "cannot be read: some formats read their file twice, and the manifest records its size)", p);
      const auto id = file_id(p);
      refuse_output(p, id && outputs.count(*id));  // a link to a shard
      out.push_back(p);
    }
  }
  return out;
}

void check_distinct_inputs(const std::vector<std::string>& inputs, const std::vector<std::string>& val_inputs) {
  struct Given {
    std::string path;
    const char* flag;
  };
  // By device and inode: one file whatever the path (a symbolic or hard link, `dir` and
  // `dir/a.txt`); the first way it was given.
  std::map<FileId, Given> seen;
  const auto add = [&](const std::string& file, const char* flag) {
    const std::optional<FileId> id = file_id(file);
    if (!id) throw Error(format("cannot read {}: {}", file, std::strerror(errno)));
    const auto [it, fresh] = seen.emplace(*id, Given{file, flag});
    if (fresh) return;
    fail_input(format("{} ({}) is the same file as {} ({}): {}", file, flag, it->second.path, it->second.flag,
                      std::string_view(it->second.flag) == flag ? "its text would be read into one split twice"
                                              : "the validation split would repeat training text"));
  };
  for (const std::string& file : inputs) add(file, "--input");
  for (const std::string& file : val_inputs) add(file, "--val-files");
}

namespace {

// "a.txt, b.txt" or "a.txt, b.txt, c.txt and 7 more files", for messages.
std::string name_files(const std::vector<std::string>& files) {
  std::string out;
  for (size_t i = 0; i < files.size() && i < 3; ++i) out += (i ? ", " : "") + files[i];
  if (files.size() > 3) out += format(" and {} more files", files.size() - 3);
  return out;
}

// A run must leave the trainer something to train on. InputError (exit 2) for inputs without a
// document, a draw that put every document into validation, and --val-files without a document
// (asked for, so a wrong file or --format). A drawn validation split that came out empty is only
// a warning: a small input may simply have too few documents for --val-fraction.
void check_splits(const PrepareConfig& config, PrepareSummary& summary) {
  const std::string why = format("empty, whitespace-only, or nothing that --format {} reads as a document",
                                 format_name(config.format.format));
  const uint64_t train = summary.train.documents, val = summary.val.documents;
  if (!config.val_inputs.empty()) {
    INPUT_CHECK(train > 0, "no documents found in --input {} ({}): nothing to train on", name_files(config.inputs),
                why);
    INPUT_CHECK(val > 0, "no documents found in --val-files {} ({})", name_files(config.val_inputs), why);
    return;
  }
  INPUT_CHECK(train + val > 0, "no documents found in --input {} ({}): nothing to train on",
              name_files(config.inputs), why);
  INPUT_CHECK(train > 0, "{} of --input {} went to the validation split (--val-fraction {}, --seed {}): nothing to "
              "train on; lower --val-fraction or give more input",
              val == 1 ? std::string("the only document") : format("all {} documents", val), name_files(config.inputs),
              config.val_fraction, config.seed);
  if (val == 0 && config.val_fraction > 0)
    summary.warnings.push_back(format("the validation split is empty: none of the {} documents was drawn at "
                                      "--val-fraction {} (raise it, or give --val-files)",
                                      train, config.val_fraction));
}

// Runs the pipeline into `dir` (the staging directory): shards and manifest.
PrepareSummary write_dataset(const PrepareConfig& config, const std::string& dir, const Tokenizer& tokenizer,
                             std::ostream& log) {
  const Stopwatch clock;
  PrepareSummary summary;
  Pipeline pipeline(config, dir, tokenizer, summary);
  auto run = [&](const std::vector<std::string>& files, int forced_split) {
    pipeline.set_forced_split(forced_split);
    for (const auto& file : files) {
      check_stop(config.format.stop);
      ReadResult r = read_documents(file, config.format, pipeline);
      summary.files.push_back({file, r.documents, r.bytes,
                               config.format.format == Format::tinystories ? story_boundary_name(r.story_boundary) : ""});
      log << file << ": " << r.documents << " documents, " << r.bytes << " bytes";
      if (config.format.format == Format::tinystories) {
        log << " (story boundary: " << story_boundary_name(r.story_boundary)
            << (config.format.story_boundary == StoryBoundary::automatic ? ", detected" : "") << ")";
        if (r.ambiguous)
          summary.warnings.push_back(format(
              "{}: stories and paragraphs are both separated by blank lines, so each blank-line separated block "
              "became a document (stories were split at paragraphs); see docs/data.md",
              file));
      }
      log << "\n";
    }
  };
  run(config.inputs, config.val_inputs.empty() ? -1 : kTrain);
  if (!config.val_inputs.empty()) run(config.val_inputs, kVal);
  pipeline.finish();
  check_stop(config.format.stop);
  summary.seconds = clock.seconds();
  summary.peak_rss_bytes = peak_rss_bytes();
  check_splits(config, summary);
  write_manifest(config, dir, tokenizer, summary);
  return summary;
}

}  // namespace

PrepareSummary prepare_dataset(const PrepareConfig& config, const Tokenizer& tokenizer, std::ostream& log) {
  INPUT_CHECK(!config.inputs.empty(), "no input files");
  INPUT_CHECK(config.val_fraction >= 0 && config.val_fraction < 1, "--val-fraction must be in [0, 1), got {}",
              config.val_fraction);
  INPUT_CHECK(config.shard_tokens >= 1, "--shard-tokens must be >= 1, got {}", config.shard_tokens);
  const fs::path out = config.out_dir, staging = out / kPrepareStagingName;
  std::error_code ec;
  // A move into --out that an earlier run began and did not finish is finished first (under the
  // lock, below); the checks of --out then see what it left.
  const bool unfinished_move = fs::exists(staging / kPrepareMoveMarker, ec);
  if (!unfinished_move) check_output(config);
  std::vector<fs::path> created;  // by this run, deepest first
  // Another prepare into the same --out would remove this run's staging folder (below, as what a
  // killed run left) and mix its shards with these: refused while this run holds the lock, which
  // it keeps until it has cleaned up.
  std::optional<RunDirectoryLock> lock;
  try {
    created = create_output_directory(out);
    lock.emplace(config.out_dir, DirectoryOwner{"output directory", "--out"});
    lock->keep();  // the levels this run created are removed below, on failure
    if (unfinished_move) {
      finish_interrupted_move(out, staging, log);
      check_output(config);
    }
    fs::remove_all(staging);  // what a killed run left behind
    for (const char* split : kSplitNames) create_output_directory(staging / split);
    check_renames(out, staging);
    PrepareSummary summary = write_dataset(config, staging.string(), tokenizer, log);
    move_into_output(out, staging, summary);
    return summary;
  } catch (...) {
    // The pipeline has stopped (its destructor waits for the worker): drop what it wrote (not
    // another run's, when the lock was theirs; not a move into --out that began: the next run
    // finishes it), and the directories this run created (fs::remove removes a directory only
    // when it is empty).
    if (lock && !fs::exists(staging / kPrepareMoveMarker, ec)) fs::remove_all(staging, ec);
    for (const fs::path& level : created) fs::remove(level, ec);
    throw;
  }
}

}  // namespace gpt2cc::data
