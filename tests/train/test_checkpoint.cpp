// Checkpoint I/O: exact round trip, optional optimizer state, rejection of corrupt, truncated
// and foreign files with the file named, and a write killed half-way (a forked child SIGKILLed
// by the write hook) leaving the previous checkpoint in place and loadable.
#include <signal.h>

#include "common/catch.hpp"
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <vector>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/checkpoint.hpp"
#include "core/fnv1a.hpp"
#include "core/train_testing.hpp"

using namespace gpt2cc;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny_config() {
  return {.max_seq_len = 16, .vocab_size = 50, .padded_vocab_size = 128, .num_layers = 2, .num_heads = 2,
          .channels = 8};
}

Checkpoint make_checkpoint(uint64_t seed, bool with_optimizer = true, const ModelConfig& config = tiny_config()) {
  Checkpoint c;
  c.config = config;
  c.step = 17 + seed;
  c.tokens_seen = 17 * 512;
  c.loader = LoaderPosition{2, 33 + seed};
  c.seed = 1337 + seed;
  c.tokenizer_fingerprint = 0xFEDCBA9876543210ull;  // needs all 64 bits to survive JSON
  c.tokenizer_dir = "/some/tokenizer";
  c.train_config = {{"lr", 3e-4}, {"batch_size", 4}};
  size_t n = num_parameters(c.config);
  c.params = test::random_vector(n, seed);
  if (with_optimizer) {
    c.m = test::random_vector(n, seed + 100);
    c.v = test::random_vector(n, seed + 200, 0.0f, 1.0f);
  }
  return c;
}

void require_equal(const Checkpoint& a, const Checkpoint& b) {
  CHECK(a.config == b.config);
  CHECK(a.dtype == b.dtype);
  CHECK(a.step == b.step);
  CHECK(a.skipped_steps == b.skipped_steps);
  CHECK(a.tokens_seen == b.tokens_seen);
  CHECK(a.loader == b.loader);
  CHECK(a.seed == b.seed);
  CHECK(a.tokenizer_fingerprint == b.tokenizer_fingerprint);
  CHECK(a.tokenizer_dir == b.tokenizer_dir);
  CHECK(a.train_config == b.train_config);
  CHECK(a.train_data_contents == b.train_data_contents);
  CHECK(test::same_bits(a.params, b.params));
  CHECK(test::same_bits(a.m, b.m));
  CHECK(test::same_bits(a.v, b.v));
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// The checkpoint `bytes` with `from` replaced by `to` in its header JSON, the header length and the
// checksum rewritten to match: a header that only a deliberate edit could make.
std::vector<char> edit_header(const std::vector<char>& bytes, const std::string& from, const std::string& to) {
  uint32_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data() + 12, 4);
  const auto header_end = bytes.begin() + 16 + std::ptrdiff_t(header_bytes);
  std::string header(bytes.begin() + 16, header_end);
  const size_t at = header.find(from);
  REQUIRE(at != std::string::npos);
  header.replace(at, from.size(), to);
  const uint32_t new_bytes = uint32_t(header.size());
  std::string out(bytes.begin(), bytes.begin() + 12);
  out.append(reinterpret_cast<const char*>(&new_bytes), 4);
  out += header;
  out.append(header_end, bytes.end() - 8);  // the arrays, without the old checksum
  Fnv1a hash;
  hash.add(out.data(), out.size());
  out.append(reinterpret_cast<const char*>(&hash.h), 8);
  return std::vector<char>(out.begin(), out.end());
}

int g_hook_calls = 0;
// Dies on the 7th piece: after magic, version, header size, header, count and parameters, so
// the temporary file holds a header and parameters but no moments and no checksum.
void kill_on_seventh_piece(uint64_t) {
  if (++g_hook_calls == 7) ::raise(SIGKILL);
}

// Stops a save at its third piece as a full disk would (the writer's own errors are Error too).
void fail_on_third_piece(uint64_t) {
  if (++g_hook_calls == 3) throw Error("no space left on device (simulated)");
}

// The checkpoint of tests/fixtures/checkpoint_v1.ckpt: make_checkpoint's on the smallest model.
Checkpoint fixture_checkpoint() {
  return make_checkpoint(
      11, true,
      {.max_seq_len = 4, .vocab_size = 7, .padded_vocab_size = 8, .num_layers = 1, .num_heads = 1, .channels = 4});
}

}  // namespace

TEST_CASE("checkpoint round trip is exact", "[checkpoint]") {
  std::string dir = test::temp_dir("checkpoint_roundtrip");
  std::string path = dir + "/a.ckpt";
  Checkpoint c = make_checkpoint(1);
  save_checkpoint(path, c);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  require_equal(load_checkpoint(path), c);

  Checkpoint without = load_checkpoint(path, false);
  CHECK(without.m.empty());
  CHECK(without.v.empty());
  CHECK(test::same_bits(without.params, c.params));

  Checkpoint weights_only = make_checkpoint(2, false);
  save_checkpoint(path, weights_only);  // replaces the previous file
  require_equal(load_checkpoint(path), weights_only);

  // Skipped updates are recorded when there were some (a field the header has only then).
  c.skipped_steps = 3;
  save_checkpoint(path, c);
  require_equal(load_checkpoint(path), c);
  const std::vector<char> bytes = read_bytes(path);
  CHECK(std::string(bytes.begin(), bytes.end()).find("\"skipped_steps\":3") != std::string::npos);
  c.skipped_steps = 0;
  save_checkpoint(path, c);
  const std::vector<char> none = read_bytes(path);
  CHECK(std::string(none.begin(), none.end()).find("skipped_steps") == std::string::npos);
  // The training data's sampled contents, where train recorded them (absent before: empty).
  c.train_data_contents = "0123456789abcdef";
  save_checkpoint(path, c);
  require_equal(load_checkpoint(path), c);
  CHECK(load_checkpoint(path).train_data_contents == "0123456789abcdef");
}

TEST_CASE("a checkpoint streams: written from a source and read into a sink a bounded piece at a time",
          "[checkpoint]") {
  // 6.4M parameters: more than one piece (kCheckpointPiece floats) per array.
  const ModelConfig big = {.max_seq_len = 16, .vocab_size = 50, .padded_vocab_size = 128, .num_layers = 2,
                           .num_heads = 4, .channels = 512};
  const Checkpoint c = make_checkpoint(12, true, big);
  const size_t n = c.params.size();
  REQUIRE(n > kCheckpointPiece);
  const std::string dir = test::temp_dir("checkpoint_stream");
  const std::string whole = dir + "/whole.ckpt", streamed = dir + "/streamed.ckpt";
  save_checkpoint(whole, c);

  // The source is asked for every piece once, in file order, each at most a piece long; the file
  // is the one the arrays in memory give.
  struct Piece {
    CheckpointArray array;
    size_t offset, size;
    bool operator==(const Piece&) const = default;
  };
  std::vector<Piece> expected;
  for (const CheckpointArray array : {CheckpointArray::params, CheckpointArray::m, CheckpointArray::v})
    for (size_t at = 0; at < n; at += kCheckpointPiece)
      expected.push_back({array, at, std::min(kCheckpointPiece, n - at)});
  std::vector<Piece> asked;
  save_checkpoint(streamed, c, true, [&](CheckpointArray array, size_t offset, std::span<float> piece) {
    asked.push_back({array, offset, piece.size()});
    const std::vector<float>& from = array == CheckpointArray::params ? c.params : array == CheckpointArray::m ? c.m
                                                                                                              : c.v;
    std::copy_n(from.begin() + std::ptrdiff_t(offset), piece.size(), piece.begin());
  });
  CHECK(asked == expected);
  CHECK(read_bytes(streamed) == read_bytes(whole));

  // Opened: the header and the sizes, before any array; then the arrays to the sink, the same
  // pieces in the same order.
  CheckpointReader reader(streamed);
  CHECK(reader.info().step == c.step);
  CHECK(reader.info().config == big);
  CHECK(reader.has_optimizer());
  std::vector<Piece> given;
  Checkpoint back;
  back.params.resize(n);
  back.m.resize(n);
  back.v.resize(n);
  reader.read_arrays(
      [&](CheckpointArray array, size_t offset, std::span<const float> piece) {
        given.push_back({array, offset, piece.size()});
        std::vector<float>& to = array == CheckpointArray::params ? back.params : array == CheckpointArray::m ? back.m
                                                                                                              : back.v;
        std::copy(piece.begin(), piece.end(), to.begin() + std::ptrdiff_t(offset));
      },
      true);
  CHECK(given == expected);
  CHECK(test::same_bits(back.params, c.params));
  CHECK(test::same_bits(back.m, c.m));
  CHECK(test::same_bits(back.v, c.v));
  CHECK_THROWS_WITH(reader.read_arrays(nullptr, false), Catch::Contains("read already"));

  // Without the optimizer state, the sink gets the parameters only (the moments are read for the
  // checksum all the same); without a sink, the file is only checked.
  given.clear();
  CheckpointReader(streamed).read_arrays(
      [&](CheckpointArray array, size_t offset, std::span<const float> piece) {
        given.push_back({array, offset, piece.size()});
      },
      false);
  CHECK(given == std::vector<Piece>(expected.begin(), expected.begin() + std::ptrdiff_t(expected.size() / 3)));
  CHECK_NOTHROW(CheckpointReader(streamed).read_arrays(nullptr, true));

  // A flipped bit in v: every size is right, so the file opens and its pieces flow until the
  // checksum at the end refuses it (the sink's contents are then to be discarded).
  std::vector<char> bytes = read_bytes(streamed);
  bytes[bytes.size() - 100] ^= 0x01;
  const std::string bad = dir + "/bad.ckpt";
  write_bytes(bad, bytes);
  CheckpointReader damaged(bad);
  size_t pieces = 0;
  CHECK_THROWS_WITH(damaged.read_arrays([&](CheckpointArray, size_t, std::span<const float>) { ++pieces; }, true),
                    Catch::Contains("bad.ckpt") && Catch::Contains("checksum"));
  CHECK(pieces == expected.size());
  CHECK_THROWS_WITH(CheckpointReader(bad).read_arrays(nullptr, false), Catch::Contains("checksum"));

  // A wrong length is found when the file is opened, before any piece.
  bytes.pop_back();
  write_bytes(bad, bytes);
  CHECK_THROWS_WITH(CheckpointReader(bad), Catch::Contains("bad.ckpt") && Catch::Contains("wrong size"));

  // Weights only: asking for the moments is refused before anything is read.
  const std::string weights = dir + "/weights.ckpt";
  save_checkpoint(weights, make_checkpoint(13, false));
  CheckpointReader weights_only(weights);
  CHECK_FALSE(weights_only.has_optimizer());
  CHECK_THROWS_WITH(weights_only.read_arrays(nullptr, true),
                    Catch::Contains("weights.ckpt") && Catch::Contains("no optimizer state"));
}

TEST_CASE("corrupt, truncated and foreign files name the file and the problem", "[checkpoint]") {
  std::string dir = test::temp_dir("checkpoint_corrupt");
  std::string good = dir + "/good.ckpt", bad = dir + "/bad.ckpt";
  save_checkpoint(good, make_checkpoint(3));
  const std::vector<char> bytes = read_bytes(good);

  SECTION("missing file") {
    CHECK_THROWS_AS(load_checkpoint(dir + "/none.ckpt"), InputError);
    CHECK_THROWS_WITH(load_checkpoint(dir + "/none.ckpt"), Catch::Contains("none.ckpt"));
  }
  SECTION("wrong magic") {
    std::vector<char> b = bytes;
    std::memcpy(b.data(), "GPT2TOKS", 8);
    write_bytes(bad, b);
    CHECK_THROWS_WITH(load_checkpoint(bad), Catch::Contains("bad.ckpt") && Catch::Contains("GPT2CKPT") &&
                                                 Catch::Contains("GPT2TOKS"));
    // Bytes a message cannot show as they are, shown by value (a NUL cut the message short).
    std::memcpy(b.data(), "G\0\x1b[2J\xff!", 8);
    write_bytes(bad, b);
    CHECK_THROWS_WITH(load_checkpoint(bad), Catch::EndsWith("found 'G\\x00\\x1b[2J\\xff!'"));
    // A .safetensors file whose header gpt2cc cannot read (a length of 2^40 bytes) is named as one.
    const std::string safetensors = dir + "/model.safetensors";
    std::vector<char> st(16, 0);
    st[5] = 1;  // little-endian 2^40
    write_bytes(safetensors, st);
    CHECK_THROWS_WITH(load_checkpoint(safetensors),
                      Catch::Contains("model.safetensors is neither a safetensors file gpt2cc can read (its header "
                                      "length or JSON object is damaged: first bytes "
                                      "'\\x00\\x00\\x00\\x00\\x00\\x01\\x00\\x00') nor a gpt2cc checkpoint"));
  }
  SECTION("wrong version") {
    std::vector<char> b = bytes;
    uint32_t version = 99;
    std::memcpy(b.data() + 8, &version, 4);
    write_bytes(bad, b);
    CHECK_THROWS_WITH(load_checkpoint(bad), Catch::Contains("version 99") && Catch::Contains("expected 1"));
  }
  SECTION("truncated at many points") {
    for (size_t cut : {size_t(0), size_t(5), size_t(14), size_t(40), bytes.size() / 2, bytes.size() - 9,
                       bytes.size() - 1}) {
      write_bytes(bad, std::vector<char>(bytes.begin(), bytes.begin() + std::ptrdiff_t(cut)));
      INFO("cut at " << cut << " of " << bytes.size());
      CHECK_THROWS_AS(load_checkpoint(bad), InputError);
      CHECK_THROWS_WITH(load_checkpoint(bad), Catch::Contains("bad.ckpt"));
    }
  }
  SECTION("a header size of 0 or past 64 MiB is refused before anything is allocated for it") {
    for (uint32_t size : {0u, (64u << 20) + 1, 0xFFFFFFFFu}) {
      INFO("header size " << size);
      std::vector<char> b = bytes;
      std::memcpy(b.data() + 12, &size, 4);
      write_bytes(bad, b);
      const std::string message = format("header size {} bytes, expected 1..67108864", size);
      CHECK_THROWS_WITH(load_checkpoint(bad), Catch::Contains("bad.ckpt") && Catch::Contains(message));
    }
  }
  SECTION("an optimizer flag other than 0 or 1 is refused (the checksum made to match)") {
    // The flag is the byte before the two moments and the checksum; make_checkpoint(3) has both.
    std::vector<char> b = bytes;
    const size_t array_bytes = make_checkpoint(3).params.size() * sizeof(float);
    const size_t flag = b.size() - sizeof(uint64_t) - 2 * array_bytes - 1;
    REQUIRE(b[flag] == 1);
    b[flag] = 2;
    Fnv1a hash;
    hash.add(b.data(), b.size() - sizeof(uint64_t));
    std::memcpy(b.data() + b.size() - sizeof(uint64_t), &hash.h, sizeof(uint64_t));
    write_bytes(bad, b);
    CHECK_THROWS_WITH(load_checkpoint(bad),
                      Catch::Contains("bad.ckpt") && Catch::Contains("optimizer flag 2, expected 0 or 1"));
  }
  SECTION("extra bytes at the end") {
    std::vector<char> b = bytes;
    b.push_back(0);
    write_bytes(bad, b);
    CHECK_THROWS_WITH(load_checkpoint(bad), Catch::Contains("wrong size"));
  }
  SECTION("one flipped bit in the parameters fails the checksum") {
    std::vector<char> b = bytes;
    b[b.size() / 3] ^= 0x10;
    write_bytes(bad, b);
    CHECK_THROWS_WITH(load_checkpoint(bad), Catch::Contains("checksum") && Catch::Contains("bad.ckpt"));
    CHECK_THROWS_WITH(load_checkpoint(bad, false), Catch::Contains("checksum"));
  }
  SECTION("a header whose model does not match the stored parameter count") {
    std::string text(bytes.begin(), bytes.end());
    size_t at = text.find("\"num_layers\":2");
    REQUIRE(at != std::string::npos);
    text[at + 13] = '3';  // same length, so the header size field stays right
    write_bytes(bad, std::vector<char>(text.begin(), text.end()));
    CHECK_THROWS_WITH(load_checkpoint(bad), Catch::Contains("parameters") && Catch::Contains("L=3"));
  }
  SECTION("header fields of the wrong kind are refused, not cast (the checksum made to match)") {
    write_bytes(bad, edit_header(bytes, "\"step\":20", "\"step\":21"));
    CHECK(load_checkpoint(bad).step == 21);  // the edit itself makes a loadable file
    struct Edit {
      std::string from, to, message;
    };
    const Edit edits[] = {
        {"\"step\":20", "\"step\":-1", "\"step\" must be a whole number >= 0, got -1"},
        {"\"step\":20", "\"step\":2.5", "\"step\" must be a whole number >= 0, got 2.5"},
        {"\"num_layers\":2", "\"num_layers\":2.0", "\"num_layers\" must be a whole number that fits an int, got 2.0"},
        {"\"channels\":8", "\"channels\":4294967304",
         "\"channels\" must be a whole number that fits an int, got 4294967304"},
        // 2^64 - 1 read through int64 is -1: refused as what it is, not as a layer count of -1.
        {"\"num_layers\":2", "\"num_layers\":18446744073709551615",
         "\"num_layers\" must be a whole number that fits an int, got 18446744073709551615"},
        {"\"dtype\":\"fp32\"", "\"dtype\":\"fp16\"", "fp16"},
        // The JSON library's own words, without its "[json.exception...]" tag.
        {"\"model\":{", "\"modell\":{", "has a corrupt header: key 'model' not found"},
        {"\"dtype\":\"fp32\"", "\"dtype\":32", "has a corrupt header: type must be string, but is number"},
        {"\"step\":20", "\"step\":20,\"skipped_steps\":21", "\"skipped_steps\" (21) is more than the steps (20)"},
        {"\"step\":20", "\"step\":20,\"skipped_steps\":-2", "\"skipped_steps\" must be a whole number >= 0"},
    };
    for (const Edit& e : edits) {
      INFO(e.to);
      write_bytes(bad, edit_header(bytes, e.from, e.to));
      CHECK_THROWS_AS(load_checkpoint(bad), InputError);
      CHECK_THROWS_WITH(load_checkpoint(bad), Catch::Contains("checkpoint " + bad + " has a corrupt header: ") &&
                                                  Catch::Contains(e.message) && !Catch::Contains("json.exception"));
    }
  }
  SECTION("a header nested a million deep is refused, not recursed through (the checksum made to match)") {
    // Kept, such a value was copied into train_config, or printed into the message of a field of
    // the wrong kind, recursively: a stack overflow.
    const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
    const std::pair<std::string, std::string> edits[] = {
        {"\"train_config\":{", "\"train_config\":{\"x\":" + deep + ","}, {"\"step\":20", "\"step\":" + deep}};
    for (const auto& [from, to] : edits) {
      INFO(from);
      write_bytes(bad, edit_header(bytes, from, to));
      CHECK_THROWS_AS(load_checkpoint(bad), InputError);
      CHECK_THROWS_WITH(load_checkpoint(bad), Catch::Contains("checkpoint " + bad + " has a corrupt header: ") &&
                                                  Catch::Contains("it nests deeper than 8 levels"));
    }
  }
}

TEST_CASE("a checkpoint write killed half-way leaves the previous checkpoint loadable", "[checkpoint]") {
  std::string dir = test::temp_dir("checkpoint_killed");
  std::string path = dir + "/model.ckpt";
  Checkpoint first = make_checkpoint(4);
  save_checkpoint(path, first);

  const test::ChildOutcome child = test::run_in_child(60, [&] {
    testing::checkpoint_write_hook = kill_on_seventh_piece;
    save_checkpoint(path, make_checkpoint(5));  // does not return: the hook kills the process
  });
  INFO(child.summary());
  REQUIRE(child.signal == SIGKILL);

  // The half-written temporary is there, incomplete, and rejected; the real file is untouched.
  REQUIRE(fs::exists(path + ".tmp"));
  CHECK(fs::file_size(path + ".tmp") < fs::file_size(path));
  CHECK_THROWS_WITH(load_checkpoint(path + ".tmp"), Catch::Contains("truncated"));
  require_equal(load_checkpoint(path), first);

  // The next save overwrites the stale temporary and succeeds.
  Checkpoint second = make_checkpoint(6);
  save_checkpoint(path, second);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  require_equal(load_checkpoint(path), second);
}

TEST_CASE("a save that fails part-way removes its temporary and keeps the previous file", "[checkpoint]") {
  std::string dir = test::temp_dir("checkpoint_failed");
  std::string path = dir + "/model.ckpt";
  Checkpoint first = make_checkpoint(8);
  save_checkpoint(path, first);
  g_hook_calls = 0;
  testing::checkpoint_write_hook = fail_on_third_piece;
  CHECK_THROWS_WITH(save_checkpoint(path, make_checkpoint(9)), Catch::Contains("no space left"));
  testing::checkpoint_write_hook = nullptr;
  CHECK_FALSE(fs::exists(path + ".tmp"));
  require_equal(load_checkpoint(path), first);
}

TEST_CASE("a save whose final rename fails names both paths and removes its temporary", "[checkpoint]") {
  // A non-empty directory where the checkpoint should go: everything is written, the rename fails.
  std::string dir = test::temp_dir("checkpoint_rename");
  std::string path = dir + "/model.ckpt";
  fs::create_directories(path + "/occupied");
  CHECK_THROWS_WITH(save_checkpoint(path, make_checkpoint(10)),
                    Catch::Contains("cannot rename") && Catch::Contains(path + ".tmp") && Catch::Contains(path));
  CHECK_FALSE(fs::exists(path + ".tmp"));
  CHECK(fs::is_directory(path + "/occupied"));
}

// Files of format version 1 are on users' disks: tests/fixtures/checkpoint_v1.ckpt was written by
// this code (this test with GPT2CC_WRITE_CHECKPOINT_FIXTURE=1 rewrites it). A change to the layout,
// the header's fields or the checksum passes the round trip above but fails here; such a change
// needs a new format version and a reader that still loads version 1.
TEST_CASE("a version-1 checkpoint written earlier still loads, and saving it gives the same bytes",
          "[checkpoint]") {
  const std::string fixture = test::fixture_path("checkpoint_v1.ckpt");
  const Checkpoint expected = fixture_checkpoint();
  if (std::getenv("GPT2CC_WRITE_CHECKPOINT_FIXTURE")) save_checkpoint(fixture, expected);
  REQUIRE(fs::exists(fixture));
  require_equal(load_checkpoint(fixture), expected);
  const std::string again = test::temp_dir("checkpoint_v1") + "/again.ckpt";
  save_checkpoint(again, expected);
  CHECK(read_bytes(again) == read_bytes(fixture));
}

TEST_CASE("saving into a missing directory fails and names the path", "[checkpoint]") {
  std::string dir = test::temp_dir("checkpoint_nodir");
  CHECK_THROWS_AS(save_checkpoint(dir + "/missing/x.ckpt", make_checkpoint(7)), Error);
  CHECK_THROWS_WITH(save_checkpoint(dir + "/missing/x.ckpt", make_checkpoint(7)), Catch::Contains("missing/x.ckpt"));
}

TEST_CASE("step checkpoints are the step_<digits>.ckpt files, in step order", "[checkpoint]") {
  namespace fs = std::filesystem;
  const fs::path dir = test::temp_dir("checkpoint_steps");
  // A step past 8 digits sorts after the padded ones; a copy under another name (step_best.ckpt)
  // is no step checkpoint: resume would take it for the newest and pruning would delete it.
  for (const char* name : {"step_00000010.ckpt", "step_00000002.ckpt", "step_100000000.ckpt", "step_best.ckpt",
                           "step_.ckpt", "step_12a.ckpt", "step_-1.ckpt", "step_00000003.ckpt.tmp", "notes.txt"})
    std::ofstream(dir / name) << "x";
  std::vector<std::string> found;
  for (const fs::path& p : step_checkpoints(dir)) found.push_back(p.filename());
  CHECK(found == std::vector<std::string>{"step_00000002.ckpt", "step_00000010.ckpt", "step_100000000.ckpt"});
  // A folder of a checkpoint's name is refused: passed over, a resume would take an older step.
  fs::create_directories(dir / "step_00000005.ckpt");
  CHECK_THROWS_WITH(step_checkpoints(dir), Catch::Contains((dir / "step_00000005.ckpt").string() +
                                                           " has a step checkpoint's name but is not a file"));
  fs::remove(dir / "step_00000005.ckpt");
  CHECK(checkpoint_step_of(dir / "step_00000300.ckpt") == 300u);
  CHECK(checkpoint_step_of("step_100000000.ckpt") == 100000000u);
  for (const char* other : {"step_best.ckpt", "step_.ckpt", "step_12a.ckpt", "step_+4.ckpt", "step_4.ckpt.tmp",
                            "step_99999999999999999999999.ckpt"})
    CHECK_FALSE(checkpoint_step_of(other).has_value());
  CHECK(step_checkpoints(dir / "missing").empty());
}
