// Checkpoint files (format in core/checkpoint.hpp): atomic write through "<path>.tmp" + fsync +
// rename, and a loader that validates every field before trusting it. The FNV-1a checksum covers
// every byte before it, so a truncated or bit-flipped file is rejected with the file's name.
#include "core/checkpoint.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/decimal_between.hpp"
#include "core/fnv1a.hpp"
#include "core/json_number.hpp"
#include "core/safetensors.hpp"
#include "core/signal_cleanup.hpp"
#include "core/hf_gpt2.hpp"
#include "core/train_testing.hpp"

namespace gpt2cc {

namespace testing {
void (*checkpoint_write_hook)(uint64_t bytes_written) = nullptr;
}

namespace {

constexpr char kMagic[8] = {'G', 'P', 'T', '2', 'C', 'K', 'P', 'T'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxHeaderJsonBytes = 64u << 20;  // the header is a few KB; anything huge is corrupt

class Writer {
 public:
  explicit Writer(const std::string& path) : path_(path) {
    file_ = std::fopen(path.c_str(), "wb");
    if (!file_) throw Error(format("cannot write checkpoint {}: {}", path, std::strerror(errno)));
  }
  ~Writer() {
    if (file_) std::fclose(file_);
  }
  void write(const void* data, size_t n) {
    // Large arrays go in 16 MB pieces so the test hook can stop the write half-way.
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      size_t piece = std::min<size_t>(n, kCheckpointPiece * sizeof(float));
      if (std::fwrite(p, 1, piece, file_) != piece) {
        throw Error(format("writing checkpoint {} failed: {}", path_, std::strerror(errno)));
      }
      hash_.add(p, piece);
      written_ += piece;
      p += piece;
      n -= piece;
      if (testing::checkpoint_write_hook) testing::checkpoint_write_hook(written_);
    }
  }
  template <class T>
  void put(const T& value) {
    write(&value, sizeof(T));
  }
  // Appends the checksum, flushes the C buffer and the OS cache, closes.
  void finish() {
    uint64_t checksum = hash_.h;
    if (std::fwrite(&checksum, sizeof checksum, 1, file_) != 1 || std::fflush(file_) != 0 ||
        ::fsync(fileno(file_)) != 0) {
      throw Error(format("writing checkpoint {} failed: {}", path_, std::strerror(errno)));
    }
    int rc = std::fclose(file_);
    file_ = nullptr;
    if (rc != 0) throw Error(format("closing checkpoint {} failed: {}", path_, std::strerror(errno)));
  }

 private:
  std::string path_;
  FILE* file_ = nullptr;
  Fnv1a hash_;
  uint64_t written_ = 0;
};

// A directory given as a checkpoint file (not one of Hugging Face weights, which is_hf_gpt2 knows):
// say what it is and what to give instead.
void refuse_directory(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return;
  const fs::path dir(path);
  for (const fs::path& folder : {dir / "checkpoints", dir}) {
    const std::vector<fs::path> found = step_checkpoints(folder);
    INPUT_CHECK(found.empty(), "checkpoint {} is a run directory: give one of its checkpoint files (the latest is {})",
                path, found.empty() ? "" : found.back().string());
  }
  refuse_incomplete_hf_gpt2(path);
  fail_input(format("checkpoint {} is a directory, neither a checkpoint file nor Hugging Face GPT-2 weights", path));
}

class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {
    file_ = std::fopen(path.c_str(), "rb");
    INPUT_CHECK(file_ != nullptr, "cannot open checkpoint {}: {}", path, std::strerror(errno));
    std::error_code ec;
    size_ = std::filesystem::file_size(path, ec);
    if (ec) std::fclose(file_);
    INPUT_CHECK(!ec, "cannot read the size of checkpoint {}: {}", path, ec.message());
  }
  ~Reader() { std::fclose(file_); }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  uint64_t remaining() const { return size_ - offset_; }
  // Reads n bytes (into dst, or discarded when dst is null) and hashes them.
  void read(void* dst, size_t n, const char* what) {
    INPUT_CHECK(n <= remaining(), "checkpoint {} is truncated: expected {} more bytes for {} at offset {}, found {}",
                path_, n, what, offset_, remaining());
    std::vector<char> scratch;
    auto* p = static_cast<char*>(dst);
    while (n > 0) {
      size_t piece = std::min<size_t>(n, kCheckpointPiece * sizeof(float));
      char* target = p;
      if (!dst) {
        scratch.resize(piece);
        target = scratch.data();
      }
      INPUT_CHECK(std::fread(target, 1, piece, file_) == piece, "reading checkpoint {} failed at offset {}", path_,
                  offset_);
      hash_.add(target, piece);
      offset_ += piece;
      n -= piece;
      if (dst) p += piece;
    }
  }
  template <class T>
  T get(const char* what) {
    T value;
    read(&value, sizeof(T), what);
    return value;
  }
  // The byte `ahead` bytes past the current offset, neither consumed nor hashed (its size checked).
  uint8_t peek(uint64_t ahead, const char* what) {
    uint8_t byte = 0;
    INPUT_CHECK(ahead < remaining() && ::pread(fileno(file_), &byte, 1, off_t(offset_ + ahead)) == 1,
                "checkpoint {} is truncated: no byte for {} at offset {}", path_, what, offset_ + ahead);
    return byte;
  }
  uint64_t checksum_so_far() const { return hash_.h; }

 private:
  std::string path_;
  FILE* file_ = nullptr;
  uint64_t size_ = 0, offset_ = 0;
  Fnv1a hash_;
};

// A Checkpoint's array `array` (const or not, as the checkpoint).
template <class C>
auto& array_of(C& c, CheckpointArray array) {
  return array == CheckpointArray::params ? c.params : array == CheckpointArray::m ? c.m : c.v;
}

nlohmann::json header_json(const CheckpointInfo& c) {
  nlohmann::json loader = {{"epoch", c.loader.epoch}, {"cursor", c.loader.cursor}};
  // An optional field of version 1 (readers before it ignore it; it reads as 0 where absent), left
  // out when 0 so that such a checkpoint saves to the same bytes as before.
  if (c.loader.windows != 0) loader["windows"] = c.loader.windows;
  nlohmann::json j = {{"model", c.config},
                      {"dtype", c.dtype},
                      {"step", c.step},
                      {"tokens_seen", c.tokens_seen},
                      {"loader", loader},
                      {"seed", c.seed},
                      {"tokenizer_fingerprint", c.tokenizer_fingerprint},
                      {"tokenizer_dir", c.tokenizer_dir},
                      {"train_config", c.train_config}};
  // Optional in the same way: a run that skipped no update saves the bytes it saved before.
  if (c.skipped_steps != 0) j["skipped_steps"] = c.skipped_steps;
  if (!c.train_data_contents.empty()) j["train_data_contents"] = c.train_data_contents;
  return j;
}

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointInfo& info, bool with_optimizer,
                     const CheckpointSource& source) {
  const size_t n = num_parameters(info.config);
  const std::string tmp = path + ".tmp";
  const TemporaryFile on_signal(tmp);  // removed if a signal ends the program meanwhile
  try {
    Writer out(tmp);
    std::string header = header_json(info).dump();
    out.write(kMagic, sizeof kMagic);
    out.put(kVersion);
    out.put(static_cast<uint32_t>(header.size()));
    out.write(header.data(), header.size());
    out.put(static_cast<uint64_t>(n));
    std::vector<float> piece(std::min(n, kCheckpointPiece));
    const auto write_array = [&](CheckpointArray array) {
      for_each_checkpoint_piece(n, [&](size_t at, size_t count) {
        const std::span<float> part(piece.data(), count);
        source(array, at, part);
        out.write(part.data(), part.size_bytes());
      });
    };
    write_array(CheckpointArray::params);
    out.put(static_cast<uint8_t>(with_optimizer ? 1 : 0));
    if (with_optimizer) {
      write_array(CheckpointArray::m);
      write_array(CheckpointArray::v);
    }
    out.finish();
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    throw Error(format("cannot rename {} to {}: {}", tmp, path, std::strerror(err)));
  }
  sync_directory(path);
}

void save_checkpoint(const std::string& path, const Checkpoint& c) {
  size_t n = num_parameters(c.config);
  ENSURE(c.params.size() == n, "checkpoint {}: {} parameters for a model of {}", path, c.params.size(), n);
  bool has_optimizer = !c.m.empty() || !c.v.empty();
  ENSURE(!has_optimizer || (c.m.size() == n && c.v.size() == n), "checkpoint {}: moments of size {}/{}, expected {}",
         path, c.m.size(), c.v.size(), n);
  save_checkpoint(path, c, has_optimizer, [&](CheckpointArray array, size_t offset, std::span<float> piece) {
    std::copy_n(array_of(c, array).begin() + std::ptrdiff_t(offset), piece.size(), piece.begin());
  });
}

struct CheckpointReader::Impl {
  std::string path;
  CheckpointInfo info;
  std::optional<Reader> file;       // a gpt2cc checkpoint, positioned at its parameters
  std::optional<HfGpt2Weights> hf;  // or Hugging Face weights
  uint64_t num_params = 0;
  bool has_optimizer = false;
  bool read = false;
  std::optional<uint64_t> checksum;  // once read_arrays has checked it

  void open_gpt2cc();
};

CheckpointReader::CheckpointReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.path = path;
  if (is_hf_gpt2(path)) {
    s.info = s.hf.emplace(path).info();
    s.num_params = num_parameters(s.info.config);
    return;
  }
  refuse_directory(path);
  s.open_gpt2cc();
}

CheckpointReader::~CheckpointReader() = default;
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;
const CheckpointInfo& CheckpointReader::info() const { return impl_->info; }
bool CheckpointReader::has_optimizer() const { return impl_->has_optimizer; }
std::optional<uint64_t> CheckpointReader::checksum() const { return impl_->checksum; }

void CheckpointReader::Impl::open_gpt2cc() {
  Reader& in = file.emplace(path);
  char magic[8];
  in.read(magic, sizeof magic, "the magic");
  if (std::memcmp(magic, kMagic, sizeof magic) != 0) {
    // The bytes as a message can show them: printable ASCII, others as \xNN (a NUL cut the
    // message, a control byte reached the terminal).
    std::string found;
    for (const char c : magic) {
      const auto b = static_cast<unsigned char>(c);
      found += b >= 0x20 && b < 0x7F ? std::string(1, c) : "\\x" + hex_byte(b);
    }
    // A .safetensors file comes here when its header is not one gpt2cc reads (is_hf_gpt2).
    INPUT_CHECK(!path.ends_with(".safetensors"),
                "{} is neither a safetensors file gpt2cc can read (its header length or JSON object is damaged: "
                "first bytes '{}') nor a gpt2cc checkpoint",
                path, found);
    fail_input(format("{} is not a gpt2cc checkpoint: expected magic 'GPT2CKPT', found '{}'", path, found));
  }
  auto version = in.get<uint32_t>("the version");
  INPUT_CHECK(version == kVersion,
              "checkpoint {} has format version {}, expected {}: it was written by another gpt2cc version", path,
              version, kVersion);
  auto header_bytes = in.get<uint32_t>("the header size");
  INPUT_CHECK(header_bytes > 0 && header_bytes <= kMaxHeaderJsonBytes,
              "checkpoint {} is corrupt: header size {} bytes, expected 1..{}", path, header_bytes,
              kMaxHeaderJsonBytes);
  std::string text(header_bytes, '\0');
  in.read(text.data(), header_bytes, "the JSON header");

  CheckpointInfo& c = info;
  read_json_checked(format("checkpoint {} has a corrupt header", path), [&] {
    // A header nests 3 deep (a list in train_config). One nested far deeper is corrupt, and kept
    // it would be copied and printed (in the messages below) recursively: a stack overflow.
    const nlohmann::json j = safetensors::parse_untrusted_json_or_throw(text, 8);
    // Counters as written: whole numbers >= 0 (nlohmann would wrap -1 and truncate 2.5).
    const auto count = [](const nlohmann::json& parent, const char* key) {
      const nlohmann::json& v = parent.at(key);
      const std::optional<uint64_t> n = whole_number<uint64_t>(v);
      INPUT_CHECK(n.has_value(), "\"{}\" must be a whole number >= 0, got {}", key, v.dump());
      return *n;
    };
    c.config = j.at("model").get<ModelConfig>();
    c.dtype = j.at("dtype").get<std::string>();
    parse_dtype(c.dtype);
    c.step = count(j, "step");
    c.tokens_seen = count(j, "tokens_seen");
    c.skipped_steps = j.contains("skipped_steps") ? count(j, "skipped_steps") : 0;  // absent: none skipped
    INPUT_CHECK(c.skipped_steps <= c.step, "\"skipped_steps\" ({}) is more than the steps ({})", c.skipped_steps,
                c.step);
    c.loader.epoch = count(j.at("loader"), "epoch");
    c.loader.cursor = count(j.at("loader"), "cursor");
    c.loader.windows = j.at("loader").contains("windows") ? count(j.at("loader"), "windows") : 0;  // absent before
    c.seed = count(j, "seed");
    c.tokenizer_fingerprint = count(j, "tokenizer_fingerprint");
    c.tokenizer_dir = j.at("tokenizer_dir").get<std::string>();
    c.train_config = j.at("train_config");
    if (j.contains("train_data_contents")) c.train_data_contents = j.at("train_data_contents").get<std::string>();
  });
  try {
    validate(c.config);
  } catch (const InputError& e) {
    fail_input(format("checkpoint {} holds an invalid model configuration: {}", path, e.what()));
  }

  uint64_t expected = num_parameters(c.config);
  const uint64_t n = in.get<uint64_t>("the parameter count");
  num_params = n;
  INPUT_CHECK(n == expected, "checkpoint {}: its model config ({}) has {} parameters, but the file stores {}", path,
              describe(c.config), expected, n);
  // Sizes are known from here on: check the whole length before allocating anything.
  uint64_t array_bytes = n * sizeof(float);
  INPUT_CHECK(in.remaining() >= array_bytes + 1 + sizeof(uint64_t),
              "checkpoint {} is truncated: expected at least {} more bytes for the parameters, found {}", path,
              array_bytes + 1 + sizeof(uint64_t), in.remaining());
  // The flag after the parameters, looked at (hashed when read_arrays reaches it) so that the
  // file's exact length is known before anything is read into the model.
  const uint8_t flag = in.peek(array_bytes, "the optimizer flag");
  INPUT_CHECK(flag <= 1, "checkpoint {} is corrupt: optimizer flag {}, expected 0 or 1", path, int(flag));
  has_optimizer = flag == 1;
  uint64_t tail = (has_optimizer ? 2 * array_bytes : 0) + sizeof(uint64_t);
  INPUT_CHECK(in.remaining() == array_bytes + 1 + tail,
              "checkpoint {} has the wrong size: expected {} more bytes after the parameters, found {}", path, tail,
              in.remaining() - array_bytes - 1);
}

void CheckpointReader::read_arrays(const CheckpointSink& sink, bool with_optimizer) {
  Impl& s = *impl_;
  ENSURE(!s.read, "checkpoint {}: its arrays were read already", s.path);
  s.read = true;
  if (with_optimizer && s.hf) refuse_resume_of_hf_gpt2(s.path);
  INPUT_CHECK(!with_optimizer || s.has_optimizer,
              "checkpoint {} has no optimizer state (AdamW moments): it was saved with the weights only", s.path);
  if (s.hf) {
    s.hf->read_params(sink ? sink : CheckpointSink([](CheckpointArray, size_t, std::span<const float>) {}));
    s.hf.reset();
    return;
  }
  Reader& in = *s.file;
  std::vector<float> piece(std::min<uint64_t>(s.num_params, kCheckpointPiece));
  const auto read_array = [&](CheckpointArray array, bool wanted, const char* what) {
    for_each_checkpoint_piece(s.num_params, [&](size_t at, size_t count) {
      const std::span<float> part(piece.data(), count);
      in.read(part.data(), part.size_bytes(), what);
      if (wanted && sink) sink(array, at, part);
    });
  };
  read_array(CheckpointArray::params, true, "the parameters");
  in.get<uint8_t>("the optimizer flag");  // checked when opened
  if (s.has_optimizer) {
    read_array(CheckpointArray::m, with_optimizer, "the AdamW first moments");
    read_array(CheckpointArray::v, with_optimizer, "the AdamW second moments");
  }
  uint64_t computed = in.checksum_so_far();
  auto stored = in.get<uint64_t>("the checksum");
  INPUT_CHECK(stored == computed, "checkpoint {} is corrupt: checksum of its contents is {}, but the file stores {}",
              s.path, computed, stored);
  s.checksum = stored;
  s.file.reset();
}

Checkpoint load_checkpoint(const std::string& path, bool with_optimizer) {
  if (with_optimizer) refuse_resume_of_hf_gpt2(path);
  CheckpointReader reader(path);
  Checkpoint c;
  static_cast<CheckpointInfo&>(c) = reader.info();
  const size_t n = num_parameters(c.config);
  const bool moments = with_optimizer && reader.has_optimizer();
  c.params.resize(n);
  if (moments) {
    c.m.resize(n);
    c.v.resize(n);
  }
  reader.read_arrays(
      [&](CheckpointArray array, size_t offset, std::span<const float> piece) {
        std::copy(piece.begin(), piece.end(), array_of(c, array).begin() + std::ptrdiff_t(offset));
      },
      moments);
  return c;
}

void fail_naming_previous_checkpoint(const InputError& e, const std::string& path) {
  const std::filesystem::path file(path);
  const std::vector<std::filesystem::path> all = step_checkpoints(file.parent_path());
  const auto at = std::find(all.begin(), all.end(), file);
  if (at == all.begin() || at == all.end()) throw e;
  fail_input(format("{}; the run's previous checkpoint is {}: move the damaged one out of {} and continue with "
                    "--resume {}",
                    e.what(), at[-1].string(), file.parent_path().string(), at[-1].string()));
}

std::optional<uint64_t> checkpoint_step_of(const std::filesystem::path& path) {
  return decimal_between(path.filename().string(), "step_", ".ckpt");
}

std::vector<std::filesystem::path> step_checkpoints(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::vector<std::pair<uint64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::optional<uint64_t> step = checkpoint_step_of(entry.path());
    if (!step) continue;
    // Passed over, a directory under a checkpoint's name would have a run resume from an older
    // step, and fail only when its own save there is renamed, at the end.
    INPUT_CHECK(entry.is_regular_file(), "{} has a step checkpoint's name but is not a file: move it out of {}",
                entry.path().string(), dir.string());
    found.emplace_back(*step, entry.path());
  }
  std::sort(found.begin(), found.end());  // by step (a step past 8 digits has a longer name)
  std::vector<fs::path> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

}  // namespace gpt2cc
