// Token shard files: header round trip (2- and 4-byte tokens), atomic writes, listing a split
// (in name order, numbers compared as numbers), clear errors naming the file for missing,
// truncated, corrupt and foreign files, and a failed write (disk full) reported as the machine's
// error.
#include "common/catch.hpp"
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/dataloader.hpp"
#include "core/shard.hpp"

using namespace gpt2cc;
namespace fs = std::filesystem;

namespace {
std::vector<uint32_t> ramp(size_t n, uint32_t start, uint32_t mod) {
  std::vector<uint32_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint32_t((start + i) % mod);
  return v;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// Runs f, requires an InputError whose message contains every fragment.
template <class F>
void require_input_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    FAIL("expected an InputError");
  } catch (const InputError& e) {
    std::string msg = e.what();
    INFO(msg);
    for (const auto& frag : fragments) CHECK(msg.find(frag) != std::string::npos);
  }
}
}  // namespace

TEST_CASE("shard header and tokens round trip with 2-byte and 4-byte tokens", "[data]") {
  std::string dir = test::temp_dir("shards_round_trip");
  for (uint32_t vocab : {50257u, 65536u, 100000u}) {
    std::string path = dir + "/s" + std::to_string(vocab) + ".bin";
    auto tokens = ramp(12345, 7, vocab);
    tokens.back() = vocab - 1;  // the largest id must survive narrowing
    write_shard(path, tokens, 0xDEADBEEF12345678ull, vocab);
    ShardHeader h = read_shard_header(path);
    CHECK(h.version == 1);
    CHECK(h.token_bytes == (vocab <= 65536 ? 2u : 4u));
    CHECK(h.num_tokens == tokens.size());
    CHECK(h.tokenizer_fingerprint == 0xDEADBEEF12345678ull);
    CHECK(h.vocab_size == vocab);
    CHECK(fs::file_size(path) == 64 + tokens.size() * h.token_bytes);
    CHECK(!fs::exists(path + ".tmp"));
    MappedShard m(path);
    std::vector<uint32_t> back(tokens.size());
    m.copy(0, back.size(), back.data());
    CHECK(back == tokens);
    CHECK(m.at(5) == tokens[5]);
  }
}

// The largest vocabulary a shard may declare, 2^24, is allowed (only beyond it is corrupt).
TEST_CASE("a shard with the largest vocabulary (2^24) writes and reads back", "[data]") {
  const std::string path = test::temp_dir("shards_max_vocab") + "/a.bin";
  const uint32_t vocab = uint32_t(1) << 24;
  write_shard(path, {0, vocab - 1}, 7, vocab);
  const ShardHeader h = read_shard_header(path);
  CHECK(h.vocab_size == vocab);
  CHECK(h.token_bytes == 4u);
  CHECK(h.num_tokens == 2u);
  MappedShard m(path);
  CHECK(m.at(1) == vocab - 1);
}

// Every one of the 16 hex digits, the top nibble's too, in order and lower case.
TEST_CASE("fingerprint_hex writes all 16 digits", "[data]") {
  CHECK(fingerprint_hex(0xF123456789ABCDEFull) == "f123456789abcdef");
  CHECK(fingerprint_hex(0x2A) == "000000000000002a");
}

TEST_CASE("the shard header layout is the documented one", "[data]") {
  std::string path = test::temp_dir("shards_layout") + "/a.bin";
  write_shard(path, {1, 2, 3}, 0x0102030405060708ull, 300);
  std::string b = read_all(path);
  REQUIRE(b.size() == 64 + 6);
  CHECK(b.substr(0, 8) == "GPT2TOKS");
  CHECK(uint8_t(b[8]) == 1);   // version
  CHECK(uint8_t(b[12]) == 2);  // token bytes
  CHECK(uint8_t(b[16]) == 3);  // num_tokens
  CHECK(uint8_t(b[24]) == 0x08);
  CHECK(uint8_t(b[32]) == (300 & 0xFF));
  CHECK(uint8_t(b[33]) == (300 >> 8));
  for (size_t i = 36; i < 64; ++i) CHECK(b[i] == 0);
  CHECK(uint8_t(b[64]) == 1);
  CHECK(uint8_t(b[66]) == 2);
}

TEST_CASE("an id that does not fit the vocabulary is refused and leaves no file", "[data]") {
  std::string path = test::temp_dir("shards_bad_id") + "/a.bin";
  CHECK_THROWS_AS(write_shard(path, {1, 300}, 1, 300), Error);
  CHECK(!fs::exists(path));
  CHECK(!fs::exists(path + ".tmp"));
}

// Writes to /dev/full fail with ENOSPC, as on a full disk; the temporary file is made a link to
// it. The failure is the machine's, not the user's: an Error (exit 1), never an InputError
// (exit 2).
TEST_CASE("a write that fails (disk full) is an Error naming the file and leaves no file", "[data]") {
  REQUIRE(fs::exists("/dev/full"));
  std::string dir = test::temp_dir("shards_disk_full");
  // 3 tokens fail when finish() flushes; 100000 (200 kB) already in append(), past stdio's buffer.
  for (size_t n : {size_t(3), size_t(100000)}) {
    INFO(n << " tokens");
    std::string path = dir + "/a.bin";
    fs::create_symlink("/dev/full", path + ".tmp");
    try {
      write_shard(path, ramp(n, 0, 50257), 1, 50257);
      FAIL("expected an Error");
    } catch (const InputError& e) {
      FAIL("a failed write must not be an InputError (exit 2): " << e.what());
    } catch (const Error& e) {
      std::string msg = e.what();
      INFO(msg);
      CHECK(msg.find(path) != std::string::npos);
      CHECK(msg.find("No space left on device") != std::string::npos);
    }
    CHECK(!fs::exists(path));
    CHECK(!fs::is_symlink(path + ".tmp"));
  }
}

TEST_CASE("truncated, corrupt and foreign shards give errors naming the file", "[data]") {
  std::string dir = test::temp_dir("shards_corrupt");
  std::string good = dir + "/good.bin";
  write_shard(good, ramp(100, 0, 50257), 42, 50257);
  std::string bytes = read_all(good);
  std::string bad = dir + "/bad.bin";

  SECTION("missing file") {
    require_input_error([&] { read_shard_header(dir + "/nope.bin"); }, {dir + "/nope.bin", "cannot open"});
  }
  SECTION("truncated token data") {
    write_all(bad, bytes.substr(0, bytes.size() - 3));
    require_input_error([&] { read_shard_header(bad); }, {bad, "truncated", "100 tokens"});
    require_input_error([&] { MappedShard m(bad); }, {bad, "truncated"});
  }
  SECTION("shorter than the header") {
    write_all(bad, bytes.substr(0, 20));
    require_input_error([&] { read_shard_header(bad); }, {bad, "truncated", "header"});
    require_input_error([&] { MappedShard m(bad); }, {bad, "truncated"});
  }
  SECTION("trailing bytes") {
    write_all(bad, bytes + "xy");
    require_input_error([&] { read_shard_header(bad); }, {bad, "corrupt"});
  }
  SECTION("bad magic") {
    std::string b = bytes;
    b[0] = 'X';
    write_all(bad, b);
    require_input_error([&] { read_shard_header(bad); }, {bad, "magic"});
  }
  SECTION("unknown version") {
    std::string b = bytes;
    b[8] = 9;
    write_all(bad, b);
    require_input_error([&] { read_shard_header(bad); }, {bad, "version 9"});
  }
  SECTION("bad token width") {
    std::string b = bytes;
    b[12] = 3;
    write_all(bad, b);
    require_input_error([&] { read_shard_header(bad); }, {bad, "token width 3"});
  }
  SECTION("nonzero reserved bytes") {
    for (size_t at : {size_t(36), size_t(50), size_t(63)}) {  // the first, one inside, the last
      std::string b = bytes;
      b[at] = 1;
      write_all(bad, b);
      require_input_error([&] { read_shard_header(bad); }, {bad, "reserved byte " + std::to_string(at)});
    }
  }
  SECTION("a vocabulary of 0") {
    std::string b = bytes;
    std::memset(b.data() + 32, 0, 4);
    write_all(bad, b);
    require_input_error([&] { read_shard_header(bad); }, {bad, "vocab_size 0 is outside 1..16777216"});
  }
  SECTION("a vocabulary beyond any tokenizer's (2^31 - 1 and 2^32 - 1 overflowed the model's int sizes)") {
    for (uint32_t vocab : {uint32_t(1 << 24) + 1, uint32_t(2147483647), uint32_t(4294967295u)}) {
      std::string b = bytes;
      const uint32_t width = 4;
      std::memcpy(b.data() + 12, &width, 4);
      std::memcpy(b.data() + 32, &vocab, 4);
      write_all(bad, b);
      require_input_error([&] { read_shard_header(bad); },
                          {bad, "vocab_size " + std::to_string(vocab) + " is outside 1..16777216"});
    }
  }
  SECTION("a vocabulary too large for 2-byte tokens") {
    std::string b = bytes;
    const uint32_t vocab = 65537;
    std::memcpy(b.data() + 32, &vocab, 4);
    write_all(bad, b);
    require_input_error([&] { read_shard_header(bad); }, {bad, "65537", "2-byte"});
  }
  SECTION("a token count whose byte size would overflow 64 bits") {
    // 2^63 + 100 tokens of 2 bytes are 2^64 + 200 bytes: without the guard the size wraps round
    // to the file's own 200 bytes of tokens and the header would pass.
    std::string b = bytes;
    const uint64_t count = (uint64_t(1) << 63) + 100;
    std::memcpy(b.data() + 16, &count, 8);
    write_all(bad, b);
    require_input_error([&] { read_shard_header(bad); }, {bad, "impossible"});
  }
  SECTION("a token id beyond the vocabulary is caught when read") {
    std::string b = bytes;
    b[64 + 2 * 10] = char(0xFF);
    b[64 + 2 * 10 + 1] = char(0xFF);  // id 65535 >= 50257
    write_all(bad, b);
    DataLoader loader({bad}, 1, 99, LoaderOrder::sequential, 0);
    std::vector<int> x, y;
    require_input_error([&] { loader.next(x, y); }, {bad, "65535"});
  }
}

TEST_CASE("list_shards takes a file, a directory or a glob, in name order", "[data]") {
  std::string dir = test::temp_dir("shards_list");
  for (const char* name : {"train_001.bin", "train_000.bin", "val_000.bin"})
    write_shard(dir + "/" + name, {1, 2, 3}, 1, 10);
  write_all(dir + "/manifest.json", "{}");
  CHECK(list_shards(dir) ==
        std::vector<std::string>{dir + "/train_000.bin", dir + "/train_001.bin", dir + "/val_000.bin"});
  CHECK(list_shards(dir + "/train_*.bin") == std::vector<std::string>{dir + "/train_000.bin", dir + "/train_001.bin"});
  CHECK(list_shards(dir + "/val_000.bin") == std::vector<std::string>{dir + "/val_000.bin"});
  require_input_error([&] { list_shards(dir + "/test_*.bin"); }, {dir + "/test_*.bin"});
  std::string empty = test::temp_dir("shards_list_empty");
  require_input_error([&] { list_shards(empty); }, {empty, "no shards"});
}

// prepare names shards with 6 digits until the millionth: shard_1000000.bin must follow
// shard_999999.bin, not sort between shard_100000.bin and shard_100001.bin as strings do.
TEST_CASE("list_shards compares runs of digits as numbers", "[data]") {
  std::string dir = test::temp_dir("shards_list_numbers");
  const std::vector<std::string> names = {"shard_000002.bin",  "shard_000010.bin",  "shard_100000.bin",
                                          "shard_100001.bin",  "shard_999999.bin",  "shard_1000000.bin",
                                          "shard_1000001.bin"};
  for (auto it = names.rbegin(); it != names.rend(); ++it) write_all(dir + "/" + *it, "");
  std::vector<std::string> paths;
  for (const auto& name : names) paths.push_back(dir + "/" + name);
  CHECK(list_shards(dir) == paths);
  CHECK(list_shards(dir + "/shard_*.bin") == paths);
  // Equal numbers with other leading zeros: string order, so the order is total.
  std::string zeros = test::temp_dir("shards_list_zeros");
  for (const char* name : {"a7.bin", "a007.bin", "a8.bin", "a.bin"}) write_all(zeros + "/" + name, "");
  CHECK(list_shards(zeros) ==
        std::vector<std::string>{zeros + "/a.bin", zeros + "/a007.bin", zeros + "/a7.bin", zeros + "/a8.bin"});
}
