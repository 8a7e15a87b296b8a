// core/utf8: the one UTF-8 decoder. Every boundary of RFC 3629 / Unicode Table 3-7 (first and
// last well-formed value of each lead byte's second-byte range, one step past it), U+FFFD per
// maximal subpart (Unicode chapter 3's own example), the streaming cut of an incomplete tail, and
// agreement of the three functions on random bytes, and non-ASCII bytes at every offset of the
// 8-byte ASCII skip.
#include "common/catch.hpp"

#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "core/utf8.hpp"

using namespace gpt2cc;

namespace {
// `pattern` with each '_' as U+FFFD.
std::string with_fffd(std::string_view pattern) {
  std::string out;
  for (char c : pattern) out.append(c == '_' ? "\xEF\xBF\xBD" : std::string(1, c));
  return out;
}
}  // namespace

TEST_CASE("utf8: the boundaries of Table 3-7", "[utf8]") {
  const std::pair<std::string, bool> cases[] = {
      {"\x7F", true},              {"\x80", false},             {"\xC1\xBF", false},  // overlong 2-byte
      {"\xC2\x80", true},          {"\xDF\xBF", true},          {"\xC2\x7F", false},
      {"\xE0\x9F\xBF", false},     {"\xE0\xA0\x80", true},      // E0: second byte A0-BF
      {"\xED\x9F\xBF", true},      {"\xED\xA0\x80", false},     // ED: 80-9F (no surrogates)
      {"\xEE\x80\x80", true},      {"\xEF\xBF\xBF", true},      {"\xEF\xBF\xC0", false},
      {"\xF0\x8F\xBF\xBF", false}, {"\xF0\x90\x80\x80", true},  // F0: 90-BF
      {"\xF4\x8F\xBF\xBF", true},  {"\xF4\x90\x80\x80", false}, // F4: 80-8F (<= U+10FFFF)
      {"\xF5\x80\x80\x80", false}, {"\xFF", false},             {"\xE2\x82", false},  // cut short
  };
  for (const auto& [bytes, valid] : cases) {
    INFO("bytes of length " << bytes.size() << ", first 0x" << std::hex << (static_cast<unsigned>(bytes[0]) & 0xFF));
    CHECK(is_valid_utf8(bytes) == valid);
    CHECK(find_invalid_utf8("ok " + bytes) == (valid ? std::string::npos : 3));
    CHECK((replace_invalid_utf8(bytes) == bytes) == valid);
  }
  CHECK(find_invalid_utf8(std::string(37, 'a') + "\xC3\xA9" + std::string(20, 'b') + "\xC3") == 59);
}

TEST_CASE("utf8: one U+FFFD per maximal subpart", "[utf8]") {
  // The Unicode Standard's example (chapter 3, "U+FFFD Substitution of Maximal Subparts"):
  // 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 -> a, FFFD, FFFD, FFFD, b, FFFD, c, FFFD, FFFD, d
  CHECK(replace_invalid_utf8("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64") == with_fffd("a___b_c__d"));
  CHECK(replace_invalid_utf8("\xC0\xAF") == with_fffd("__"));  // C0 starts nothing
  CHECK(replace_invalid_utf8("a\xE2\x82(") == with_fffd("a_("));
  CHECK(replace_invalid_utf8("\xED\xA0\x80") == with_fffd("___"));  // a surrogate: ED then two strays
}

TEST_CASE("utf8: streaming keeps an incomplete tail for the next call", "[utf8]") {
  std::string out;
  CHECK(append_valid_utf8("x\xE2\x82", false, out) == 1);  // the first two bytes of U+20AC
  CHECK(out == "x");
  CHECK(append_valid_utf8("\xE2\x82\xAC", false, out) == 3);
  CHECK(out == "x\xE2\x82\xAC");
  out.clear();
  CHECK(append_valid_utf8("x\xE2\x82", true, out) == 3);  // final: the tail is a maximal subpart
  CHECK(out == with_fffd("x_"));
  out.clear();
  CHECK(append_valid_utf8("x\xE2(", false, out) == 3);  // not a prefix of anything: replaced now
  CHECK(out == with_fffd("x_("));
}

TEST_CASE("utf8: the functions agree on random bytes", "[utf8]") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes(rng() % 24, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 4 == 0 ? rng() % 0x80 : 0x80 + rng() % 0x80);
    const std::string replaced = replace_invalid_utf8(bytes);
    INFO("trial " << trial);
    CHECK(is_valid_utf8(replaced));
    CHECK((find_invalid_utf8(bytes) == std::string::npos) == (replaced == bytes));
    // Streaming in two pieces at any cut gives the same text as one call.
    const size_t cut = bytes.empty() ? 0 : rng() % bytes.size();
    std::string streamed;
    const size_t used = append_valid_utf8(std::string_view(bytes).substr(0, cut), false, streamed);
    append_valid_utf8(std::string_view(bytes).substr(used), true, streamed);
    CHECK(streamed == replaced);
  }
}

TEST_CASE("utf8: a non-ASCII byte at any offset of long ASCII text is found", "[utf8]") {
  // The ASCII runs are skipped 8 bytes at a time: every position within and across those words.
  for (size_t at = 0; at < 40; ++at) {
    std::string text(40, 'a');
    text[at] = '\xFF';
    INFO("invalid byte at " << at);
    CHECK(find_invalid_utf8(text) == at);
    CHECK(replace_invalid_utf8(text) == std::string(at, 'a') + with_fffd("_") + std::string(39 - at, 'a'));
    text.replace(at, 1, "\xC3\xA9");  // a valid two-byte character in the same place
    CHECK(find_invalid_utf8(text) == std::string::npos);
    CHECK(replace_invalid_utf8(text) == text);
  }
}
