// The safetensors reader and writer (core/safetensors.hpp): a round trip, the F16 / BF16 widening
// (every class of value: normal, subnormal, zero, infinity, NaN), and every malformed file the
// reader promises to refuse by name: too short, a header length past the end, a header that is
// not a JSON object, entries without their fields, an unknown dtype, a shape that does not match
// its bytes (or overflows), offsets past the data, holes, overlaps, uncovered trailing bytes.
#include "common/catch.hpp"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/safetensors.hpp"

using namespace gpt2cc;
namespace st = gpt2cc::safetensors;

namespace {

// A file of the 8-byte length of `header`, `header` and `data`.
std::string raw_file(const std::string& name, const std::string& header, const std::string& data) {
  const std::string path = test::temp_dir("safetensors") + "/" + name + ".safetensors";
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header << data;
  return path;
}

void refused(const std::string& path, const std::string& message) {
  INFO(path);
  CHECK_THROWS_AS(st::File(path), InputError);
  CHECK_THROWS_WITH(st::File(path), Catch::Contains(message) && Catch::Contains(path));
}

}  // namespace

TEST_CASE("safetensors: written F32 tensors read back exactly, with the header 8-byte aligned", "[safetensors]") {
  const std::vector<float> a = {1.5f, -2.25f, 3.0e-30f, std::numeric_limits<float>::infinity(), -0.0f, 7.0f};
  const std::vector<float> b = {42.0f};
  const std::string path = test::temp_dir("safetensors_rt") + "/x.safetensors";
  st::write_f32(path, {{"a.weight", {2, 3}, a.data()}, {"b", {}, b.data()}, {"empty", {0, 4}, nullptr}},
                {{"format", "pt"}});
  const st::File f(path);
  REQUIRE(f.tensors().size() == 3);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.info("a.weight").shape == std::vector<size_t>{2, 3});
  CHECK(f.info("a.weight").dtype == "F32");
  CHECK(f.info("b").shape.empty());
  CHECK(f.info("b").numel() == 1);
  CHECK(f.info("empty").numel() == 0);
  const auto got = f.read_float("a.weight");
  REQUIRE(got.size() == a.size());
  CHECK(std::memcmp(got.data(), a.data(), a.size() * 4) == 0);  // -0 and inf included, bit for bit
  CHECK(f.read_float("b") == b);
  CHECK(f.read_float("empty").empty());
  // The data starts 8-byte aligned (the header padded with spaces, as the format allows).
  std::ifstream in(path, std::ios::binary);
  uint64_t header_bytes = 0;
  in.read(reinterpret_cast<char*>(&header_bytes), 8);
  CHECK((8 + header_bytes) % 8 == 0);
  CHECK_THROWS_WITH(f.read_float("missing"), Catch::Contains("has no tensor 'missing'"));
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
}

// The streamed writer: the values come in pieces that cross the tensors' boundaries and land where
// the whole-tensor writer puts them, byte for byte. A producer that gives fewer or more values than
// the shapes hold, or that throws (a damaged source), leaves the old file and no temporary one.
TEST_CASE("safetensors: values streamed in pieces of any size give the same file", "[safetensors]") {
  const std::vector<float> a = {1.5f, -2.25f, 3.0e-30f, std::numeric_limits<float>::infinity(), -0.0f, 7.0f};
  const std::vector<float> b = {42.0f, 43.0f, 44.0f};
  const std::string dir = test::temp_dir("safetensors_stream");
  st::write_f32(dir + "/whole.safetensors", {{"a", {2, 3}, a.data()}, {"b", {3}, b.data()}}, {{"format", "pt"}});
  std::vector<float> all = a;
  all.insert(all.end(), b.begin(), b.end());
  const std::vector<st::F32TensorSpec> specs = {{"a", {2, 3}}, {"b", {3}}};
  const auto in_pieces = [&](std::vector<size_t> sizes) {
    return [&all, sizes](const st::F32Writer& write) {
      size_t at = 0;
      for (size_t n : sizes) {
        write(std::span<const float>(all.data() + at, n));
        at += n;
      }
    };
  };
  const std::string path = dir + "/streamed.safetensors";
  st::write_f32(path, specs, in_pieces({4, 0, 3, 2}), {{"format", "pt"}});  // pieces across a and b, one empty
  CHECK(test::read_bytes(path) == test::read_bytes(dir + "/whole.safetensors"));

  const std::string before = test::read_bytes(path);
  CHECK_THROWS_WITH(st::write_f32(path, specs, in_pieces({4, 3})),
                    Catch::Contains(path) && Catch::Contains("28 bytes of values produced for tensors of 36"));
  CHECK_THROWS_WITH(st::write_f32(path, specs, in_pieces({9, 1})),
                    Catch::Contains(path) && Catch::Contains("more values produced than the 36 bytes"));
  const auto throwing = [&](const st::F32Writer& write) {
    write(std::span<const float>(all.data(), 5));
    fail_input("the source is damaged");
  };
  CHECK_THROWS_WITH(st::write_f32(path, specs, throwing), "the source is damaged");
  CHECK(test::read_bytes(path) == before);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST_CASE("safetensors: F16 and BF16 widen to the exact float", "[safetensors]") {
  CHECK(st::half_to_float(0x3c00) == 1.0f);
  CHECK(st::half_to_float(0xc000) == -2.0f);
  CHECK(st::half_to_float(0x7bff) == 65504.0f);               // the largest half
  CHECK(st::half_to_float(0x0400) == std::ldexp(1.0f, -14));  // the smallest normal
  CHECK(st::half_to_float(0x0001) == std::ldexp(1.0f, -24));  // the smallest subnormal
  CHECK(st::half_to_float(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(st::half_to_float(0x3555) == (1.0f + 0x155 / 1024.0f) * 0.25f);  // exponent 13 - 15: 0.333251953125
  CHECK(st::half_to_float(0x0000) == 0.0f);
  CHECK(std::signbit(st::half_to_float(0x8000)));
  CHECK(st::half_to_float(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(st::half_to_float(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(st::half_to_float(0x7e00)));
  CHECK(st::bf16_to_float(0x3f80) == 1.0f);
  CHECK(st::bf16_to_float(0xc0a0) == -5.0f);
  CHECK(st::bf16_to_float(0x0001) == std::ldexp(1.0f, -133));  // a subnormal bf16
  CHECK(std::isnan(st::bf16_to_float(0x7fc0)));

  // Through a file: one F16 and one BF16 tensor.
  const std::string data("\x00\x3c\x00\xc0\x01\x00" "\x80\x3f\xa0\xc0", 10);
  const std::string path = raw_file(
      "half", R"({"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[6,10]}})",
      data);
  const st::File f(path);
  CHECK(f.read_float("h") == std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24)});
  CHECK(f.read_float("b") == std::vector<float>{1.0f, -5.0f});
}

TEST_CASE("safetensors: malformed files are refused, naming the file and the fault", "[safetensors]") {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, '\0');
  CHECK_NOTHROW(st::File(raw_file("ok", "{" + ok_entry + "}", eight)));

  const std::string short_path = test::temp_dir("safetensors_short") + "/short.safetensors";
  std::ofstream(short_path, std::ios::binary) << "abc";
  refused(short_path, "shorter than the 8-byte header length");
  refused(test::temp_dir("safetensors_none") + "/none.safetensors", "cannot open");
  // The header length says more than the file holds (a truncated file).
  {
    const std::string path = test::temp_dir("safetensors_trunc") + "/t.safetensors";
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = 1000;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << "{}";
    out.close();
    refused(path, "its header length is 1000 bytes, the file has 2 after the length");
  }
  refused(raw_file("json", "{\"t\": [1, 2", ""), "header is not a JSON object");
  refused(raw_file("array", "[1, 2, 3]", ""), "header is not a JSON object");
  refused(raw_file("fields", R"({"t":{"dtype":"F32","shape":[2]}})", eight),
          "needs \"dtype\" (a string), \"shape\" (an array) and two \"data_offsets\", got a JSON object without them");
  refused(raw_file("dtype", R"({"t":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", eight),
          "dtype 'F17', which safetensors does not define");
  refused(raw_file("negative", R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight),
          "shape entry (number -2) that is not a size");
  refused(raw_file("shape", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
          "tensor 't' of shape [3] (F32) needs 12 bytes, its offsets give 8");
  refused(raw_file("overflow",
                   R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", eight),
          "has a shape [4294967296, 4294967296, 4] too large to address");
  refused(raw_file("past", R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight),
          "lies at bytes [0, 16) of a data section of 8 bytes");
  refused(raw_file("reversed", R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", eight),
          "lies at bytes [8, 0)");
  refused(raw_file("hole", R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
          "starts at byte 4 of the data, expected 0 (a hole before it)");
  refused(raw_file("overlap",
                   R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                   eight),
          "it overlaps the tensor before it");
  refused(raw_file("trailing", "{" + ok_entry + "}", eight + "junk"), "its tensors cover 8 bytes of a 12-byte data section");
  refused(raw_file("metadata", R"({"__metadata__":{"format":7},)" + ok_entry + "}", eight),
          "__metadata__ value of 'format' is not a string");
  // Nested far deeper than the format (a hostile header): refused, not followed down (no stack
  // overflow in the message or anywhere else).
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  refused(raw_file("deep", R"({"t":{"dtype":"F32","shape":)" + deep + R"(,"data_offsets":[0,8]}})", eight),
          "is not a JSON object (or nests deeper than the format does)");
  refused(raw_file("wrong_types", R"({"t":{"dtype":"F32","shape":[{"a":1}],"data_offsets":[0,8]}})", eight),
          "has a shape entry (object) that is not a size");
  // An empty tensor at the offset where a full one starts tiles the data in either order of names.
  const std::string full = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  const std::string empty = R"("dtype":"F32","shape":[0],"data_offsets":[0,0])";
  for (const std::string& header : {"{\"b\":{" + full + "},\"a\":{" + empty + "}}",
                                    "{\"a\":{" + full + "},\"b\":{" + empty + "}}"}) {
    INFO(header);
    CHECK_NOTHROW(st::File(raw_file("empty_first", header, eight)));
  }

  // A dtype the format defines but gpt2cc does not read as weights.
  const st::File ints(raw_file("ints", R"({"t":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", eight));
  CHECK_THROWS_WITH(ints.read_float("t"), Catch::Contains("tensor 't' is I32; gpt2cc reads F32, F16 and BF16"));
}
