// Token shard files: header encoding and validation, atomic writing, listing a split's shards,
// and read-only memory maps. Format in core/dataloader.hpp; every error names the file, what was
// expected and what was found, and says how to regenerate it. A bad file is an InputError (exit
// 2); a write that fails (disk full, I/O error) is the machine's, a plain Error (exit 1).
#include "core/shard.hpp"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <string_view>

#include "core/check.hpp"
#include "core/config.hpp"

namespace gpt2cc {

namespace {

namespace fs = std::filesystem;

constexpr const char* kRegenerate = "regenerate it with `prepare`";

template <class T>
void put(unsigned char* at, T value) {
  std::memcpy(at, &value, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
}
template <class T>
T get(const unsigned char* at) {
  T value;
  std::memcpy(&value, at, sizeof(T));
  return value;
}

// Layout: magic[8] | version u32 @8 | token_bytes u32 @12 | num_tokens u64 @16 |
// fingerprint u64 @24 | vocab_size u32 @32 | 28 zero bytes @36.
void encode_header(const ShardHeader& h, unsigned char out[kShardHeaderBytes]) {
  std::memset(out, 0, kShardHeaderBytes);
  std::memcpy(out, kShardMagic, 8);
  put<uint32_t>(out + 8, h.version);
  put<uint32_t>(out + 12, h.token_bytes);
  put<uint64_t>(out + 16, h.num_tokens);
  put<uint64_t>(out + 24, h.tokenizer_fingerprint);
  put<uint32_t>(out + 32, h.vocab_size);
}

// Decodes and validates a header given the file's total size in bytes.
ShardHeader decode_header(const std::string& path, const unsigned char* in, uint64_t file_bytes) {
  INPUT_CHECK(std::memcmp(in, kShardMagic, 8) == 0, "{}: not a token shard (magic is not \"GPT2TOKS\"); {}", path,
              kRegenerate);
  ShardHeader h;
  h.version = get<uint32_t>(in + 8);
  h.token_bytes = get<uint32_t>(in + 12);
  h.num_tokens = get<uint64_t>(in + 16);
  h.tokenizer_fingerprint = get<uint64_t>(in + 24);
  h.vocab_size = get<uint32_t>(in + 32);
  INPUT_CHECK(h.version == 1, "{}: shard format version {} is not supported (expected 1); {}", path, h.version,
              kRegenerate);
  INPUT_CHECK(h.token_bytes == 2 || h.token_bytes == 4, "{}: corrupt header: token width {} bytes (expected 2 or 4)",
              path, h.token_bytes);
  INPUT_CHECK(h.vocab_size > 0 && h.vocab_size <= uint32_t(kMaxVocabSize),
              "{}: corrupt header: vocab_size {} is outside 1..{}", path, h.vocab_size, kMaxVocabSize);
  INPUT_CHECK(h.token_bytes == 4 || h.vocab_size <= 65536,
              "{}: corrupt header: vocab_size {} does not fit 2-byte tokens", path, h.vocab_size);
  for (size_t i = 36; i < kShardHeaderBytes; ++i)
    INPUT_CHECK(in[i] == 0, "{}: corrupt header: reserved byte {} is {} (expected 0)", path, i, int(in[i]));
  // Guard the multiplication: a corrupt count must not overflow into a plausible size.
  uint64_t max_tokens = (UINT64_MAX - kShardHeaderBytes) / h.token_bytes;
  INPUT_CHECK(h.num_tokens <= max_tokens, "{}: corrupt header: num_tokens {} is impossible", path, h.num_tokens);
  uint64_t expected = kShardHeaderBytes + h.num_tokens * h.token_bytes;
  INPUT_CHECK(file_bytes == expected,
              "{}: {} shard: the header says {} tokens of {} bytes ({} bytes in all), the file has {} bytes; {}", path,
              file_bytes < expected ? "truncated" : "corrupt", h.num_tokens, h.token_bytes, expected, file_bytes,
              kRegenerate);
  return h;
}

std::string errno_text() { return std::strerror(errno); }

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Name order with runs of digits compared as numbers, so that prepare's shard_999999.bin comes
// before shard_1000000.bin (7 digits from the millionth shard on):
//   "shard_100001.bin" < "shard_1000000.bin",  "a2" < "a10",  equal numbers by string: "a0" < "a00"
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (!is_digit(a[i]) || !is_digit(b[j])) {
      if (a[i] != b[j]) return (unsigned char)a[i] < (unsigned char)b[j];
      ++i, ++j;
      continue;
    }
    // Two runs of digits: without leading zeros, the shorter is the smaller number, else the
    // digits decide.
    size_t end_a = i, end_b = j;
    while (end_a < a.size() && is_digit(a[end_a])) ++end_a;
    while (end_b < b.size() && is_digit(b[end_b])) ++end_b;
    while (i + 1 < end_a && a[i] == '0') ++i;
    while (j + 1 < end_b && b[j] == '0') ++j;
    const std::string_view x(a.data() + i, end_a - i), y(b.data() + j, end_b - j);
    if (x.size() != y.size()) return x.size() < y.size();
    if (x != y) return x < y;
    i = end_a, j = end_b;
  }
  if (i < a.size() || j < b.size()) return j < b.size();  // a prefix of the other comes first
  return a < b;                                         // equal but for leading zeros
}

}  // namespace

std::string fingerprint_hex(uint64_t fingerprint) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, fingerprint >>= 4) s[i] = digits[fingerprint & 15];
  return s;
}

ShardHeader read_shard_header(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  INPUT_CHECK(f, "cannot open shard {}: {}", path, errno_text());
  struct stat st {};
  fstat(fileno(f), &st);
  unsigned char buf[kShardHeaderBytes];
  size_t got = std::fread(buf, 1, kShardHeaderBytes, f);
  std::fclose(f);
  INPUT_CHECK(S_ISREG(st.st_mode), "{}: not a regular file", path);
  INPUT_CHECK(got == kShardHeaderBytes, "{}: truncated shard: {} bytes, shorter than the {}-byte header; {}", path,
              uint64_t(st.st_size), kShardHeaderBytes, kRegenerate);
  return decode_header(path, buf, uint64_t(st.st_size));
}

void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, uint64_t tokenizer_fingerprint,
                 uint32_t vocab_size) {
  ShardWriter writer(path, tokenizer_fingerprint, vocab_size);
  writer.append(tokens.data(), tokens.size());
  writer.finish();
}

namespace {

// InputError when one of `folders` (shard folders: as a path names them, and with links resolved)
// holds prepare's marker of a move into its --out that stopped midway (kPrepareMovingMarker):
// part of the old dataset and part of the new are there. `given`: the path the user gave.
void refuse_unfinished_move(const std::string& given, const std::vector<fs::path>& folders) {
  for (const fs::path& folder : folders) {
    std::error_code ec;
    const fs::path marker = (folder.empty() ? fs::path(".") : folder) / kPrepareMovingMarker;
    INPUT_CHECK(!fs::exists(marker, ec),
                "{} holds part of an old and part of a new dataset: a prepare run stopped while moving its shards "
                "in ({} is there); run prepare again with the --out it wrote (the folder holding this train/ or "
                "val/), which finishes the move first",
                given, marker.string());
  }
}

}  // namespace

std::vector<std::string> list_shards(const std::string& path_or_pattern) {
  std::vector<std::string> out;
  std::error_code ec;
  // The folder named (a folder, or a file's or a glob's), before anything is listed in it (a
  // stopped move may have left it empty), then each shard's own, links resolved (a link's target
  // folder holds the marker).
  const bool folder = fs::is_directory(path_or_pattern, ec);
  const fs::path named = path_or_pattern;
  refuse_unfinished_move(path_or_pattern, {folder ? named : named.parent_path()});
  if (folder) {
    for (const auto& entry : fs::directory_iterator(path_or_pattern))
      if (entry.is_regular_file() && entry.path().extension() == ".bin") out.push_back(entry.path().string());
    INPUT_CHECK(!out.empty(), "no shards (*.bin) in directory {}", path_or_pattern);
  } else if (fs::is_regular_file(path_or_pattern, ec)) {
    out.push_back(path_or_pattern);
  } else {
    glob_t g{};
    int rc = glob(path_or_pattern.c_str(), 0, nullptr, &g);
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i)
      if (fs::is_regular_file(g.gl_pathv[i], ec)) out.push_back(g.gl_pathv[i]);
    globfree(&g);
    INPUT_CHECK(!out.empty(), "no shards found at {} (not a file, a directory of *.bin, or a matching glob)",
                path_or_pattern);
  }
  std::set<fs::path> folders;  // each shard's, links resolved
  for (const std::string& shard : out) folders.insert(fs::weakly_canonical(shard, ec).parent_path());
  refuse_unfinished_move(path_or_pattern, {folders.begin(), folders.end()});
  std::sort(out.begin(), out.end(), natural_less);
  return out;
}

MappedShard::MappedShard(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  INPUT_CHECK(fd >= 0, "cannot open shard {}: {}", path, errno_text());
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_input(format("{}: not a regular file", path));
  }
  if (uint64_t(st.st_size) < kShardHeaderBytes) {
    ::close(fd);
    fail_input(format("{}: truncated shard: {} bytes, shorter than the {}-byte header; {}", path,
                      uint64_t(st.st_size), kShardHeaderBytes, kRegenerate));
  }
  map_bytes_ = size_t(st.st_size);
  map_ = mmap(nullptr, map_bytes_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  ENSURE(map_ != MAP_FAILED, "mmap of {} ({} bytes) failed: {}", path, map_bytes_, errno_text());
  const auto* base = static_cast<const unsigned char*>(map_);
  try {
    header_ = decode_header(path, base, map_bytes_);
  } catch (...) {
    munmap(map_, map_bytes_);
    throw;
  }
  tokens_ = base + kShardHeaderBytes;
}

MappedShard::~MappedShard() {
  if (map_) munmap(map_, map_bytes_);
}

MappedShard::MappedShard(MappedShard&& other) noexcept
    : path_(std::move(other.path_)),
      header_(other.header_),
      map_(other.map_),
      map_bytes_(other.map_bytes_),
      tokens_(other.tokens_) {
  other.map_ = nullptr;
  other.tokens_ = nullptr;
}

void MappedShard::copy(uint64_t begin, uint64_t count, uint32_t* out) const {
  ENSURE(begin + count <= size(), "{}: read of [{}, {}) past {} tokens", path_, begin, begin + count, size());
  if (header_.token_bytes == 4) {
    std::memcpy(out, tokens_ + begin * 4, count * 4);
  } else {
    const auto* p = reinterpret_cast<const uint16_t*>(tokens_) + begin;
    for (uint64_t i = 0; i < count; ++i) out[i] = p[i];
  }
}

ShardWriter::ShardWriter(const std::string& path, uint64_t tokenizer_fingerprint, uint32_t vocab_size)
    : path_(path),
      tmp_path_(path + ".tmp"),
      fingerprint_(tokenizer_fingerprint),
      vocab_size_(vocab_size),
      token_bytes_(shard_token_bytes(vocab_size)) {
  ENSURE(vocab_size > 0, "shard {}: vocab_size must be > 0", path);
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (!file_) throw Error(format("cannot create shard {}: {}", tmp_path_, errno_text()));
  unsigned char header[kShardHeaderBytes] = {};  // placeholder until finish() knows the count
  std::fwrite(header, 1, kShardHeaderBytes, file_);
}

ShardWriter::~ShardWriter() {
  if (file_) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

void ShardWriter::append(const uint32_t* tokens, size_t n) {
  ENSURE(file_, "shard {} is already finished", path_);
  // Narrow in blocks so a 2-byte shard never needs a second full-size buffer.
  constexpr size_t kBlock = 1 << 16;
  uint16_t narrow[kBlock];
  for (size_t begin = 0; begin < n; begin += kBlock) {
    size_t count = std::min(kBlock, n - begin);
    for (size_t i = 0; i < count; ++i)
      ENSURE(tokens[begin + i] < vocab_size_, "shard {}: token id {} >= vocab_size {}", path_, tokens[begin + i],
             vocab_size_);
    size_t wrote;
    if (token_bytes_ == 4) {
      wrote = std::fwrite(tokens + begin, 4, count, file_);
    } else {
      for (size_t i = 0; i < count; ++i) narrow[i] = uint16_t(tokens[begin + i]);
      wrote = std::fwrite(narrow, 2, count, file_);
    }
    if (wrote != count) throw Error(format("writing shard {} failed: {}", tmp_path_, errno_text()));
  }
  count_ += n;
}

void ShardWriter::finish() {
  ENSURE(file_, "shard {} is already finished", path_);
  ShardHeader h;
  h.token_bytes = token_bytes_;
  h.num_tokens = count_;
  h.tokenizer_fingerprint = fingerprint_;
  h.vocab_size = vocab_size_;
  unsigned char header[kShardHeaderBytes];
  encode_header(h, header);
  bool ok = std::fseek(file_, 0, SEEK_SET) == 0 && std::fwrite(header, 1, kShardHeaderBytes, file_) == kShardHeaderBytes &&
            std::fflush(file_) == 0 && fsync(fileno(file_)) == 0;
  std::string why = ok ? "" : errno_text();
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok || std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    if (why.empty()) why = errno_text();
    std::remove(tmp_path_.c_str());
    throw Error(format("cannot write shard {}: {}", path_, why));
  }
}

}  // namespace gpt2cc
