// Tokenizer tests: token-for-token equality with tiktoken's gpt2 encoding on the fixture corpus
// (tests/make_tokenizer_fixture.py), round trips, invalid UTF-8, special tokens, both file
// formats, fingerprints, load errors naming file and line, and the parallel / streaming /
// multi-threaded paths giving the same ids as the plain encode.
#include "common/catch.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <tuple>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/utf8.hpp"
#include "tokenizer/pretokenizer.hpp"
#include "core/dataloader.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/vocab_io.hpp"

using gpt2cc::Tokenizer;
namespace fs = std::filesystem;
namespace test = gpt2cc::test;

namespace {

const Tokenizer& gpt2() {
  static const Tokenizer tok = [] {
    std::string data = test::data_dir();
    if (data.empty()) FAIL("shared data directory not found (set GPT2CC_DATA_DIR); the GPT-2 vocabulary is needed");
    return Tokenizer::load(data + "/gpt2");
  }();
  return tok;
}

struct Case {
  std::string name, text;
  std::vector<int> ids, ids_no_special;
};

const std::vector<Case>& fixture() {
  static const std::vector<Case> cases = [] {
    std::ifstream in(test::fixture_path("tokenizer_gpt2.json"));
    REQUIRE(in.good());
    nlohmann::json j = nlohmann::json::parse(in);
    std::vector<Case> out;
    for (const auto& c : j.at("cases")) {
      Case k{c.at("name"), c.at("text"), c.at("ids").get<std::vector<int>>(), {}};
      k.ids_no_special = c.contains("ids_no_special") ? c.at("ids_no_special").get<std::vector<int>>() : k.ids;
      out.push_back(std::move(k));
    }
    return out;
  }();
  return cases;
}

// The first index where two id lists differ, for a readable failure.
std::string first_difference(const std::vector<int>& got, const std::vector<int>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return gpt2cc::format("first difference at index {} (got {} ids, expected {})", i, got.size(), want.size());
}

std::string write_file(const std::string& dir, const std::string& name, const std::string& content) {
  std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

// The start of a vocab.json: "{" and the 256 single-byte tokens (ids 0..255) in GPT-2's byte
// alphabet, each member followed by ",\n", for a test to append its own members and the "}".
std::string byte_vocab_json() {
  std::string vocab = "{";
  for (int b = 0; b < 256; ++b) {
    std::string key = gpt2cc::tok::byte_to_unicode()[b];
    if (key == "\"" || key == "\\") key = "\\" + key;
    vocab += "\"" + key + "\": " + std::to_string(b) + ",\n";
  }
  return vocab;
}

// What loading a tokenizer directory throws (InputError), or "no error".
std::string load_error(const std::string& dir) {
  try {
    Tokenizer::load(dir);
  } catch (const gpt2cc::InputError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("GPT-2 vocabulary loads with the expected shape", "[tokenizer]") {
  const Tokenizer& tok = gpt2();
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.eot_id() == 50256);
  CHECK(tok.special_id("<|endoftext|>") == 50256);
  CHECK_FALSE(tok.special_id("<|startoftext|>").has_value());
  CHECK(tok.special_ids() == std::vector<int>{50256});
  CHECK(tok.merges().size() == 50000);
  CHECK(tok.token_bytes(50256) == "<|endoftext|>");
  CHECK(tok.token_bytes(tok.encode(" the")[0]) == " the");
  CHECK(tok.encode("Hello world") == std::vector<int>{15496, 995});
}

TEST_CASE("encode equals tiktoken gpt2 on every fixture case, decode round-trips", "[tokenizer]") {
  const Tokenizer& tok = gpt2();
  size_t total = 0;
  for (const Case& c : fixture()) {
    INFO("case " << c.name);
    std::vector<int> ids = tok.encode(c.text, true);
    INFO(first_difference(ids, c.ids));
    CHECK(ids == c.ids);
    std::vector<int> plain = tok.encode(c.text, false);
    INFO("allow_special=false: " << first_difference(plain, c.ids_no_special));
    CHECK(plain == c.ids_no_special);
    CHECK(tok.decode(ids) == c.text);
    CHECK(tok.decode(plain) == c.text);
    total += ids.size();
  }
  CHECK(fixture().size() >= 30);
  CHECK(total > 40000);
}

TEST_CASE("special tokens are recognised only when allowed", "[tokenizer]") {
  const Tokenizer& tok = gpt2();
  std::vector<int> with = tok.encode("a<|endoftext|>b", true);
  CHECK(with == std::vector<int>{64, 50256, 65});
  std::vector<int> without = tok.encode("a<|endoftext|>b", false);
  CHECK(std::find(without.begin(), without.end(), 50256) == without.end());
  CHECK(tok.decode(without) == "a<|endoftext|>b");
}

TEST_CASE("invalid UTF-8 is encoded byte by byte and round-trips", "[tokenizer]") {
  const Tokenizer& tok = gpt2();
  const std::string lone_continuation = "abc\x80xyz";
  const std::string truncated = "caf\xc3";           // a 2-byte sequence cut short
  const std::string overlong = "\xc0\xaf slash";     // overlong '/'
  const std::string surrogate = "x\xed\xa0\x80y";    // UTF-16 surrogate encoded in UTF-8
  const std::string beyond = "\xf4\x90\x80\x80 big"; // > U+10FFFF
  const std::string all_ff = std::string(100, '\xff');
  for (const std::string& s : {lone_continuation, truncated, overlong, surrogate, beyond, all_ff}) {
    INFO("input bytes: " << s.size());
    CHECK_FALSE(gpt2cc::is_valid_utf8(s));
    std::vector<int> ids = tok.encode(s);
    CHECK(tok.decode(ids) == s);
  }
  // Each invalid byte is its own single-byte token; valid text around it is split as usual.
  std::vector<int> ids = tok.encode(lone_continuation);
  std::vector<int> expected = tok.encode("abc");
  expected.push_back(tok.encode(std::string(1, '\x80')).at(0));
  for (int id : tok.encode("xyz")) expected.push_back(id);
  CHECK(ids == expected);
  CHECK(tok.token_bytes(ids[1]) == "\x80");
  CHECK(tok.encode(all_ff).size() == 100);
  CHECK(gpt2cc::is_valid_utf8("plain ascii, é, 中, 😀"));
}

TEST_CASE("decode rejects out-of-range ids; every token's bytes concatenate", "[tokenizer]") {
  const Tokenizer& tok = gpt2();
  std::vector<int> bad{1, 50257};
  CHECK_THROWS_AS(tok.decode(bad), gpt2cc::InputError);
  std::vector<int> neg{-1};
  CHECK_THROWS_AS(tok.decode(neg), gpt2cc::InputError);
  // Random id sequences decode to the concatenation of their tokens' bytes.
  std::vector<int> ids = test::random_tokens(2000, 7, tok.vocab_size());
  std::string expected;
  for (int id : ids) expected += tok.token_bytes(id);
  CHECK(tok.decode(ids) == expected);
}

TEST_CASE("round trip on generated text of every kind of byte", "[tokenizer]") {
  const Tokenizer& tok = gpt2();
  std::vector<int> r = test::random_tokens(20000, 11, 256);
  std::string bytes(r.begin(), r.end());
  CHECK(tok.decode(tok.encode(bytes)) == bytes);
  // Random valid UTF-8 from a mix of scripts and whitespace.
  const char* atoms[] = {"a", "Z", " ", "  ", "\n", "\t", "\r\n", "'s", "'LL", "9", "é", "中", "ß", "😀", "👨‍👩‍👧",
                         "\u00a0", "\u3000", "\u0301", "!", "<|endoftext|>", "\u0085", "x"};
  std::vector<int> pick = test::random_tokens(20000, 13, int(std::size(atoms)));
  std::string text;
  for (int p : pick) text += atoms[p];
  CHECK(tok.decode(tok.encode(text)) == text);
  CHECK(tok.decode(tok.encode(text, false)) == text);
}

// Every point find_safe_split gives cuts no pre-token: the pieces of text[0, p) and of text[p, n)
// are the whole text's. Random texts of atoms that meet in every order: ASCII letters, one space
// and several, contractions, digits, punctuation, control bytes, every ASCII white space, a
// non-ASCII letter, a combining mark, a no-break space, an invalid byte; CJK text and punctuation,
// white space beyond ASCII (ideographic space, NEL, line separator), a lone continuation byte and
// cut-short sequences.
TEST_CASE("a safe split point cuts no pre-token, at white space after a non-white character", "[tokenizer]") {
  const char* atoms[] = {"a",      "Zb",     " ",      "  ",       "'s",   "'t",       "\n",     "\t",   "7",
                         "!",      ".",      "\u00e9", "\u0301",   "\u00a0", "\xff",     " x",     "x ",   "\u4e2d",
                         "\u3002", "\u3000", "\u0085", "\u2028",   "\x80", "\xe4\xb8", "\xc3",   "\n\n", "\r\n",
                         "\x0b",   "\x0c",   "\x01",   "\x7f",     " \n",  "\u3002 \n"};
  const auto pieces = [](std::string_view text, size_t offset) {
    std::vector<gpt2cc::tok::Piece> out;
    gpt2cc::tok::pretokenize(text, out);
    std::vector<std::tuple<size_t, size_t, bool>> at;
    for (const gpt2cc::tok::Piece& p : out) at.emplace_back(offset + p.begin, offset + p.end, p.invalid);
    return at;
  };
  int at_space = 0, at_newline = 0, at_other = 0, after_non_ascii = 0, after_control = 0;
  for (int seed = 0; seed < 300; ++seed) {
    std::string text;
    for (int a : test::random_tokens(120, uint64_t(seed), int(std::size(atoms)))) text += atoms[a];
    const auto whole = pieces(text, 0);
    for (size_t before = text.size(), p; (p = gpt2cc::tok::find_safe_split(text, 0, before)) != 0; before = p) {
      INFO("seed " << seed << ", cut at " << p);
      auto parts = pieces(std::string_view(text).substr(0, p), 0);
      const auto tail = pieces(std::string_view(text).substr(p), p);
      parts.insert(parts.end(), tail.begin(), tail.end());
      REQUIRE(parts == whole);
      (text[p] == ' ' ? at_space : text[p] == '\n' ? at_newline : at_other) += 1;
      if (uint8_t(text[p - 1]) >= 0x80) ++after_non_ascii;
      if (uint8_t(text[p - 1]) < 0x20 || text[p - 1] == 0x7f) ++after_control;
    }
  }
  INFO(at_space << " cuts at a space, " << at_newline << " at a newline, " << at_other << " at other white space; "
                << after_non_ascii << " after a character beyond ASCII, " << after_control << " after a control byte");
  CHECK(at_space > 100);  // every form was tried, many times
  CHECK(at_newline > 100);
  CHECK(at_other > 100);
  CHECK(after_non_ascii > 100);
  CHECK(after_control > 100);
}

// The points a long document is cut at (prepare, encode_stream): a CJK text whose lines end in a
// space has one before each " \n"; white space after white space, after a cut-short sequence or at
// the text's start is none.
TEST_CASE("find_safe_split takes white space after a whole non-white character only", "[tokenizer]") {
  using gpt2cc::tok::find_safe_split;
  const std::string cjk = "\u4e2d\u6587\u3002 \n\u4e2d\u6587\u3002 \n\u4e2d";
  CHECK(find_safe_split(cjk, 0, cjk.size()) == cjk.rfind(' '));
  CHECK(find_safe_split(cjk, 0, cjk.rfind(' ')) == cjk.find(' '));
  CHECK(find_safe_split(cjk, 0, cjk.find(' ')) == 0);
  CHECK(find_safe_split("a\x01\t\tb", 0, 5) == 2);
  CHECK(find_safe_split("x\xe4\xb8 y", 0, 5) == 0);  // a character cut short is no whole one
  CHECK(find_safe_split("\u00a0 y", 0, 4) == 0);      // a no-break space is white space to the pattern
  CHECK(find_safe_split("  \n\tabc", 0, 7) == 0);
}

// core/utf8's list of white space (prepare's blank lines) is the pattern's class, for every code
// point: a PCRE2 built with another Unicode version would show here.
TEST_CASE("core's white space is the pre-tokenisation pattern's, code point by code point", "[tokenizer]") {
  int spaces = 0;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;  // surrogates are no characters
    std::string ch;
    if (cp < 0x80) {
      ch = {char(cp)};
    } else if (cp < 0x800) {
      ch = {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
    } else if (cp < 0x10000) {
      ch = {char(0xE0 | (cp >> 12)), char(0x80 | ((cp >> 6) & 0x3F)), char(0x80 | (cp & 0x3F))};
    } else {
      ch = {char(0xF0 | (cp >> 18)), char(0x80 | ((cp >> 12) & 0x3F)), char(0x80 | ((cp >> 6) & 0x3F)),
            char(0x80 | (cp & 0x3F))};
    }
    const bool pattern = gpt2cc::tok::is_pattern_white_space(ch);
    if (pattern != gpt2cc::is_white_space_code_point(cp)) FAIL("code point U+" << std::hex << cp);
    CHECK(gpt2cc::is_white_space(ch) == pattern);
    spaces += pattern;
  }
  CHECK(spaces == 25);  // TAB LF VT FF CR, NEL, and \p{Z}'s 19
  CHECK(gpt2cc::is_white_space(""));
  CHECK(gpt2cc::is_white_space(" \t\u00a0\u3000\u2028"));
  CHECK_FALSE(gpt2cc::is_white_space(" \u00a0x"));
  CHECK_FALSE(gpt2cc::is_white_space(" \xa0"));  // an invalid byte, not U+00A0
}

TEST_CASE("parallel, streaming and concurrent encodes equal the plain encode", "[tokenizer]") {
  const Tokenizer& tok = gpt2();
  std::string text;
  for (int rep = 0; text.size() < (3u << 20); ++rep)
    for (const Case& c : fixture()) text += c.text + (rep % 2 ? "<|endoftext|>" : "\n");
  const std::vector<int> expected = tok.encode(text);
  for (int threads : {1, 2, 3, 8}) {
    INFO("threads " << threads);
    CHECK(tok.encode_parallel(text, true, threads) == expected);
  }
  CHECK(tok.encode_parallel(text, false, 2) == tok.encode(text, false));
  for (size_t block : {size_t(1000), size_t(65536), size_t(1) << 20}) {
    INFO("block " << block);
    std::istringstream in(text);
    std::vector<int> streamed;
    uint64_t n = tok.encode_stream(in, true, 2, [&](std::span<const int> ids) {
      streamed.insert(streamed.end(), ids.begin(), ids.end());
    }, block);
    CHECK(n == text.size());
    CHECK(streamed == expected);
  }
  // Many threads calling encode on the same tokenizer (thread-local caches).
  std::vector<std::vector<int>> results(4);
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      std::vector<int> all;
      for (const Case& c : fixture()) {
        std::vector<int> ids = tok.encode(c.text);
        all.insert(all.end(), ids.begin(), ids.end());
      }
      results[t] = all;
    });
  for (auto& th : pool) th.join();
  std::vector<int> serial;
  for (const Case& c : fixture()) serial.insert(serial.end(), c.ids.begin(), c.ids.end());
  for (const auto& r : results) CHECK(r == serial);
}

TEST_CASE("save writes Hugging Face files that load back identically", "[tokenizer]") {
  const Tokenizer& tok = gpt2();
  std::string dir = test::temp_dir("tokenizer_save");
  tok.save(dir);
  CHECK(fs::exists(dir + "/vocab.json"));
  CHECK(fs::exists(dir + "/merges.txt"));
  Tokenizer back = Tokenizer::load(dir);
  CHECK(back.fingerprint() == tok.fingerprint());
  CHECK(back.vocab_size() == tok.vocab_size());
  CHECK(back.eot_id() == 50256);
  const Case& c = fixture().at(0);
  CHECK(back.encode(c.text) == c.ids);
  Tokenizer copy = back;  // copies encode the same
  CHECK(copy.encode(fixture().back().text) == fixture().back().ids);
  // tokenizer_config.json names the special tokens for transformers' AutoTokenizer (which takes
  // vocab.json + merges.txt alone for GPT-2's, whose only special token is <|endoftext|>).
  const auto config = nlohmann::json::parse(test::read_bytes(dir + "/tokenizer_config.json"));
  CHECK(config["tokenizer_class"] == "GPT2Tokenizer");
  CHECK(config["eos_token"] == "<|endoftext|>");
  CHECK(config["added_tokens_decoder"].size() == 1);
  CHECK(config["added_tokens_decoder"]["50256"]["content"] == "<|endoftext|>");
  CHECK(config["added_tokens_decoder"]["50256"]["special"] == true);
}

// The three files are written together: a write that fails part-way leaves the old ones, never a
// new vocab.json beside an old merges.txt (a pair that would not load as one tokenizer).
TEST_CASE("save replaces its files together or not at all", "[tokenizer]") {
  const Tokenizer& tok = gpt2();
  std::string dir = test::temp_dir("tokenizer_save_together");
  fs::create_directories(dir);
  const char* names[] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
  for (const char* name : names) std::ofstream(dir + "/" + name) << "old";
  fs::create_directories(dir + "/merges.txt.tmp");  // the second file's temporary path: its write fails
  CHECK_THROWS_AS(tok.save(dir), gpt2cc::Error);
  for (const char* name : names) CHECK(test::read_bytes(dir + "/" + name) == "old");
  CHECK_FALSE(fs::exists(dir + "/vocab.json.tmp"));
  fs::remove(dir + "/merges.txt.tmp");
  tok.save(dir);
  CHECK(Tokenizer::load(dir).fingerprint() == tok.fingerprint());
}

TEST_CASE("fingerprint depends on vocab, merges and specials", "[tokenizer]") {
  auto bytes = [] {
    std::vector<std::string> t;
    for (int b = 0; b < 256; ++b) t.push_back(std::string(1, char(b)));
    return t;
  };
  std::vector<std::string> tokens = bytes();
  tokens.push_back("ab");
  tokens.push_back("<|endoftext|>");
  Tokenizer a = Tokenizer::from_parts(tokens, {{'a', 'b'}}, {257});
  Tokenizer a2 = Tokenizer::from_parts(tokens, {{'a', 'b'}}, {257});
  CHECK(a.fingerprint() == a2.fingerprint());
  std::vector<std::string> other = tokens;
  other[256] = "ba";
  Tokenizer b = Tokenizer::from_parts(other, {{'b', 'a'}}, {257});
  CHECK(a.fingerprint() != b.fingerprint());
  std::vector<std::string> renamed = tokens;
  renamed[257] = "<|end|>";
  Tokenizer c = Tokenizer::from_parts(renamed, {{'a', 'b'}}, {257});
  CHECK(a.fingerprint() != c.fingerprint());
  CHECK(a.fingerprint() != gpt2().fingerprint());
  CHECK(a.encode("abab<|endoftext|>") == std::vector<int>{256, 256, 257});
}

TEST_CASE("a token two merges make ranks as the first of them (tiktoken)", "[tokenizer]") {
  // The BPE trainer may list a merge whose result already exists: "abc" is made by rank 1 (a, bc)
  // and again by rank 4 (ab, c). Its rank is 1, so in "abcd", after bc (rank 0), (a, bc) at
  // rank 1 wins over (bc, d) at rank 2: abc + d. Ranked by its last merge (4), it would be a + bcd.
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.emplace_back(1, char(b));
  for (const char* t : {"bc", "abc", "bcd", "ab"}) tokens.emplace_back(t);
  const int bc = 256, abc = 257, bcd = 258, ab = 259;
  const Tokenizer tok = Tokenizer::from_parts(tokens, {{'b', 'c'}, {'a', bc}, {bc, 'd'}, {'a', 'b'}, {ab, 'c'}}, {});
  CHECK(tok.encode("abcd") == std::vector<int>{abc, 'd'});
  CHECK(tok.encode("bcd") == std::vector<int>{bcd});
  CHECK(tok.encode("abx") == std::vector<int>{ab, 'x'});
}

// The merges written out plainly, for any length: tiktoken's loop, which merges the adjacent pair
// of lowest rank (the leftmost of equals) until none is left, a pair's rank that of the first
// merge making its bytes. The tokenizer merges pieces of 48 bytes and more otherwise (a heap over
// a linked list), which the fixture's long pieces, runs of one or two characters, hardly test.
namespace {
class PlainBpe {
 public:
  explicit PlainBpe(const Tokenizer& tok) {
    const std::vector<std::pair<int, int>> merges = tok.merges();
    for (size_t r = 0; r < merges.size(); ++r)  // emplace keeps the first merge of each result
      rank_.emplace(tok.token_bytes(merges[r].first) + tok.token_bytes(merges[r].second), int(r));
    for (int t = 0; t < tok.vocab_size(); ++t) id_.emplace(tok.token_bytes(t), t);
  }
  std::vector<int> operator()(const std::string& piece) const {
    std::vector<std::string> parts;
    for (char c : piece) parts.emplace_back(1, c);
    while (parts.size() > 1) {
      size_t best = parts.size();
      int best_rank = INT_MAX;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        const auto found = rank_.find(parts[i] + parts[i + 1]);
        if (found != rank_.end() && found->second < best_rank) best = i, best_rank = found->second;
      }
      if (best == parts.size()) break;
      parts[best] += parts[best + 1];
      parts.erase(parts.begin() + std::ptrdiff_t(best) + 1);
    }
    std::vector<int> ids;
    for (const std::string& part : parts) ids.push_back(id_.at(part));
    return ids;
  }

 private:
  std::map<std::string, int> rank_, id_;
};
}  // namespace

TEST_CASE("long pieces merge as the plain loop merges them", "[tokenizer]") {
  // Words of letters only (one pre-token each) from 48 to 300 bytes, made of common pieces in
  // random order: many merges of many ranks, unlike the fixture's runs of one character.
  const std::vector<std::string> pieces = {"th", "e", "in", "er", "an", "re", "on", "at", "ing", "tion",
                                           "s", "ou", "ed", "al", "it", "is", "or", "ment", "ly", "q"};
  const PlainBpe plain_bpe(gpt2());
  std::mt19937 rng(20261208);
  for (int word = 0; word < 200; ++word) {
    const size_t length = 48 + rng() % 253;
    std::string text;
    while (text.size() < length) text += pieces[rng() % pieces.size()];
    INFO(text);
    CHECK(gpt2().encode(text) == plain_bpe(text));
  }
}

TEST_CASE("of two special tokens at the same place, the longer wins", "[tokenizer]") {
  // "<|a|>" is a prefix of "<|a|>>": at a "<|a|>>" in the text, the longer one is meant, whichever
  // id it has.
  for (bool longer_first : {false, true}) {
    INFO("longer special first: " << longer_first);
    std::vector<std::string> tokens;
    for (int b = 0; b < 256; ++b) tokens.emplace_back(1, char(b));
    tokens.emplace_back(longer_first ? "<|a|>>" : "<|a|>");
    tokens.emplace_back(longer_first ? "<|a|>" : "<|a|>>");
    const int longer = longer_first ? 256 : 257, shorter = longer_first ? 257 : 256;
    const Tokenizer tok = Tokenizer::from_parts(tokens, {}, {256, 257});
    CHECK(tok.encode("x<|a|>>y") == std::vector<int>{'x', longer, 'y'});
    CHECK(tok.encode("x<|a|>y") == std::vector<int>{'x', shorter, 'y'});
  }
}

TEST_CASE("the GPT-2 tokenizer's fingerprint is the one earlier builds recorded", "[tokenizer]") {
  // Shards and checkpoints record it; a change to the hash or to what it covers would make every
  // shard prepared before refuse to train (value as prepare wrote it in manifest.json).
  CHECK(gpt2cc::fingerprint_hex(gpt2().fingerprint()) == "3856d2da9700cea5");
}

TEST_CASE("malformed tokenizer files give errors naming file and line", "[tokenizer]") {
  const std::string good_vocab = byte_vocab_json();
  std::string vocab_ab = good_vocab + "\"ab\": 256\n}\n";
  {
    std::string dir = test::temp_dir("tok_ok");
    write_file(dir, "vocab.json", vocab_ab);
    write_file(dir, "merges.txt", "#version: 0.2\na b\n");
    Tokenizer t = Tokenizer::load(dir);
    CHECK(t.vocab_size() == 257);
    CHECK(t.encode("abab") == std::vector<int>{256, 256});
  }
  {
    // A byte-order mark is named as one (in a message it is invisible: the first token looked
    // bad), in either file; another byte that is not printable ASCII by its value.
    std::string dir = test::temp_dir("tok_vocab_bom");
    write_file(dir, "vocab.json", "\xEF\xBB\xBF" + vocab_ab);
    write_file(dir, "merges.txt", "#version: 0.2\na b\n");
    CHECK_THAT(load_error(dir), Catch::EndsWith("vocab.json starts with a UTF-8 byte-order mark (bytes EF BB BF): "
                                                "save it without one"));
    write_file(dir, "vocab.json", vocab_ab);
    write_file(dir, "merges.txt", "\xEF\xBB\xBF#version: 0.2\na b\n");
    CHECK_THAT(load_error(dir), Catch::Contains("merges.txt starts with a UTF-8 byte-order mark"));
    write_file(dir, "merges.txt", "#version: 0.2\na b\n");
    write_file(dir, "vocab.json", "\xEF" + vocab_ab);
    CHECK_THAT(load_error(dir), Catch::Contains("vocab.json:1:1") && Catch::Contains("got '\\xEF'"));
  }
  {
    // A damaged merges file's line in a message: escaped (an escape sequence would reach the
    // terminal) and cut to its first 32 bytes, with its length.
    std::string dir = test::temp_dir("tok_merges_long_line");
    write_file(dir, "vocab.json", vocab_ab);
    write_file(dir, "merges.txt", "#version: 0.2\n" + std::string(1'000'000, 'x') + " y\n");
    CHECK_THAT(load_error(dir), Catch::EndsWith("merges.txt:2: merge token \"" + std::string(32, 'x') +
                                                "\"... (1000000 bytes) is not in " + dir + "/vocab.json"));
    write_file(dir, "merges.txt", "#version: 0.2\n\x1b[2Jx y\n");
    CHECK_THAT(load_error(dir), Catch::Contains("merges.txt:2: merge token \"\\u001b[2Jx\" is not in"));
    // C1's CSI (U+009B, bytes C2 9B) and DEL are controls too; a byte that is not UTF-8 is shown
    // by its value.
    write_file(dir, "merges.txt", "#version: 0.2\n\xc2\x9b[2J\x7f\xff\"y y\n");
    CHECK_THAT(load_error(dir), Catch::Contains("merges.txt:2: merge token \"\\u009b[2J\\u007f\\xff\\\"y\" is not in"));
  }
  {
    std::string dir = test::temp_dir("tok_bad_merge");
    write_file(dir, "vocab.json", vocab_ab);
    write_file(dir, "merges.txt", "#version: 0.2\na b\nab\n");
    std::string msg = load_error(dir);
    CHECK_THAT(msg, Catch::Contains("merges.txt:3") && Catch::Contains("two tokens"));
  }
  {
    std::string dir = test::temp_dir("tok_unknown_merge");
    write_file(dir, "vocab.json", vocab_ab);
    write_file(dir, "merges.txt", "#version: 0.2\na b\nab q\n");
    CHECK_THAT(load_error(dir), Catch::Contains("merges.txt:3") && Catch::Contains("abq"));
  }
  {
    std::string dir = test::temp_dir("tok_bad_json");
    write_file(dir, "vocab.json", good_vocab + "\"ab\": x\n}\n");
    write_file(dir, "merges.txt", "a b\n");
    CHECK_THAT(load_error(dir), Catch::Contains("vocab.json:257") && Catch::Contains("integer"));
  }
  {
    std::string dir = test::temp_dir("tok_dup_id");
    write_file(dir, "vocab.json", good_vocab + "\"ab\": 5\n}\n");
    write_file(dir, "merges.txt", "a b\n");
    CHECK_THAT(load_error(dir), Catch::Contains("vocab.json:257:1: token id 5 is also used at 6:1"));
  }
  {
    // The largest id in a small file: a gap, found without tables sized by that id (they took
    // ~600 MB before the error; the peak RSS may grow by far less now).
    std::string dir = test::temp_dir("tok_far_id");
    write_file(dir, "vocab.json", good_vocab + "\"ab\": 16777215\n}\n");
    write_file(dir, "merges.txt", "a b\n");
    const long peak_before = test::peak_rss_kib();
    CHECK_THAT(load_error(dir), Catch::Contains("vocab.json: token ids must be 0..16777215 without gaps, but id 256 "
                                                "is missing"));
    CHECK(test::peak_rss_kib() - peak_before < 64 * 1024);
  }
  {
    // The tokenizer's own checks on the parts name the directory too.
    std::string dir = test::temp_dir("tok_empty_token");
    write_file(dir, "vocab.json", good_vocab + "\"\": 256\n}\n");
    write_file(dir, "merges.txt", "");
    CHECK_THAT(load_error(dir), Catch::StartsWith("tokenizer " + dir + ": ") && Catch::Contains("256"));
  }
  {
    std::string dir = test::temp_dir("tok_truncated");
    write_file(dir, "encoder.json", good_vocab.substr(0, 300));
    write_file(dir, "vocab.bpe", "#version: 0.2\n");
    CHECK_THAT(load_error(dir), Catch::Contains("encoder.json:") && Catch::Contains("end of file"));
  }
  {
    std::string dir = test::temp_dir("tok_missing_merges");
    write_file(dir, "encoder.json", vocab_ab);
    CHECK_THAT(load_error(dir), Catch::Contains("vocab.bpe") && Catch::Contains("missing"));
  }
  {
    std::string dir = test::temp_dir("tok_missing_byte");
    write_file(dir, "vocab.json", "{\"a\": 0}");
    write_file(dir, "merges.txt", "");
    CHECK_THAT(load_error(dir), Catch::Contains("vocab.json") && Catch::Contains("single-byte token"));
  }
  // A JSON number that is not a whole number: refused as such, not read as its leading digits
  // (1e+20 was id 1, "also used on line 2"), at the column where it starts.
  for (const std::string id : {"1e+20", "2.5", "3E2"}) {
    INFO(id);
    std::string dir = test::temp_dir("tok_non_integer_id");
    write_file(dir, "vocab.json", good_vocab + "\"ab\": " + id + "\n}\n");
    write_file(dir, "merges.txt", "a b\n");
    CHECK_THAT(load_error(dir), Catch::Contains("vocab.json:257:7: " + id + " is not a valid token id"));
  }
  {
    // A directory where a file should be: named as one (it opens, then every read fails, so it
    // read as an empty merges file: "... tokens are made by no merge").
    std::string dir = test::temp_dir("tok_merges_dir");
    write_file(dir, "encoder.json", vocab_ab);
    std::filesystem::create_directories(dir + "/vocab.bpe");
    CHECK_THAT(load_error(dir), Catch::Contains(dir + "/vocab.bpe is a directory"));
    // A read that fails once the file is open (EIO: address 0 of /proc/self/mem is not mapped):
    // an I/O error (gpt2cc::Error, exit 1 in a CLI), not bad input.
    std::string io = test::temp_dir("tok_read_error");
    std::filesystem::create_symlink("/proc/self/mem", io + "/encoder.json");
    write_file(io, "vocab.bpe", "a b\n");
    try {
      Tokenizer::load(io);
      FAIL("loading an unreadable encoder.json did not throw");
    } catch (const gpt2cc::InputError& e) {
      FAIL(std::string("a read error was reported as bad input: ") + e.what());
    } catch (const gpt2cc::Error& e) {
      CHECK_THAT(e.what(), Catch::Contains("reading tokenizer file " + io + "/encoder.json failed"));
    }
  }
  CHECK_THAT(load_error(test::temp_dir("tok_empty_dir")), Catch::Contains("neither"));
  CHECK_THAT(load_error("/nonexistent/tokenizer/dir"), Catch::Contains("does not exist"));
}

TEST_CASE("vocab.json as Python writes it: every JSON string escape in special tokens", "[tokenizer]") {
  // json.dump(ensure_ascii=True) escapes non-ASCII as \uXXXX (astral characters as a UTF-16
  // surrogate pair) and control characters by name; a special token may hold any of them.
  std::string vocab = byte_vocab_json();
  const std::string specials[][2] = {
      {R"(<|\u00e9\u4e2d|>)", "<|\xC3\xA9\xE4\xB8\xAD|>"},  // 2- and 3-byte UTF-8
      {R"(<|x\ud83d\ude00|>)", "<|x\xF0\x9F\x98\x80|>"},    // U+1F600 from a surrogate pair
      {R"(<|a\tb\nc\rd\be\ff|>)", "<|a\tb\nc\rd\be\ff|>"},
      {R"(<|\"q\" \\ \/|>)", "<|\"q\" \\ /|>"},
  };
  for (int i = 0; i < 4; ++i)
    vocab += "\"" + specials[i][0] + "\": " + std::to_string(256 + i) + (i < 3 ? ",\n" : "\n}\n");
  std::string dir = test::temp_dir("tok_escapes");
  write_file(dir, "vocab.json", vocab);
  write_file(dir, "merges.txt", "#version: 0.2\n");
  Tokenizer t = Tokenizer::load(dir);
  REQUIRE(t.vocab_size() == 260);
  for (int i = 0; i < 4; ++i) {
    INFO("special " << i);
    CHECK(t.token_bytes(256 + i) == specials[i][1]);
    CHECK(t.special_id(specials[i][1]) == 256 + i);
  }

  // What must not load, in place of the last special: an unpaired surrogate, text after the
  // object, an id of 20 digits.
  const std::pair<std::string, std::string> bad[] = {
      {R"("<|\ud83d|>": 259)", "unpaired"},
      {R"("<|\ude00|>": 259)", "unpaired"},
      {R"("<|x|>": 259} extra)", "after the closing"},
      {R"("<|x|>": 12345678901234567890)", "too large"},
  };
  for (const auto& [member, message] : bad) {
    INFO(member);
    write_file(dir, "vocab.json", vocab.substr(0, vocab.rfind(",\n\"<|")) + ",\n" + member +
                                      (member.find('}') == std::string::npos ? "\n}\n" : "\n"));
    CHECK_THAT(load_error(dir), Catch::Contains("vocab.json") && Catch::Contains(message));
  }
}

// A token that is neither a byte nor made by a merge is special only when ordinary text could not
// be it (tok::could_be_ordinary): else the merges file lacks its merge, and loading fails rather
// than turn "Ġworld" into a "special" and " world" into bytes.
TEST_CASE("a merges file that does not make every token is refused", "[tokenizer]") {
  using gpt2cc::tok::could_be_ordinary;
  CHECK(could_be_ordinary("world"));
  CHECK(could_be_ordinary("\xc4\xa0world"));  // "Ġworld" = " world" in GPT-2's byte alphabet
  CHECK(could_be_ordinary("\xc4\x8a\xc4\x8a"));  // "ĊĊ" = "\n\n"
  CHECK(could_be_ordinary("MASK"));
  for (const char* special : {"<|endoftext|>", "<|pad|>", "<s>", "</s>", "[PAD]", "<|caf\xc3\xa9|>", "<|a b|>"}) {
    INFO(special);
    CHECK_FALSE(could_be_ordinary(special));
  }

  // GPT-2's encoder.json with its vocab.bpe cut short, or empty.
  std::string data = test::data_dir();
  if (data.empty()) FAIL("shared data directory not found (set GPT2CC_DATA_DIR)");
  std::ifstream merges_in(data + "/gpt2/vocab.bpe", std::ios::binary);
  std::string head, line;
  for (int n = 0; n < 25000 && std::getline(merges_in, line); ++n) head += line + "\n";
  for (const std::string& merges : {head, std::string()}) {
    INFO("vocab.bpe of " << merges.size() << " bytes");
    std::string dir = test::temp_dir(merges.empty() ? "tok_gpt2_no_merges" : "tok_gpt2_cut_merges");
    fs::copy_file(data + "/gpt2/encoder.json", dir + "/encoder.json");
    write_file(dir, "vocab.bpe", merges);
    std::string msg = load_error(dir);
    const std::string count = merges.empty() ? "49918 of the 50257 tokens" : "24945 of the 50257 tokens";
    CHECK_THAT(msg, Catch::StartsWith(dir + "/vocab.bpe: " + count) && Catch::Contains("made by no merge") &&
                        Catch::Contains("truncated"));
    CHECK_THAT(msg, Catch::Contains(merges.empty() ? "\"\xc4\xa0t\", id 256" : "\"Atl\", id 25255"));
  }

  // A small vocabulary: specials of several forms load as specials; "ab" needs its merge.
  std::string vocab = byte_vocab_json();
  vocab += "\"ab\": 256,\n\"<|endoftext|>\": 257,\n\"<s>\": 258,\n\"[PAD]\": 259\n}\n";
  std::string dir = test::temp_dir("tok_specials");
  write_file(dir, "vocab.json", vocab);
  write_file(dir, "merges.txt", "#version: 0.2\na b\n");
  Tokenizer tok = Tokenizer::load(dir);
  CHECK(tok.special_ids() == std::vector<int>{257, 258, 259});
  CHECK(tok.encode("ab<s>ab[PAD]") == std::vector<int>{256, 258, 256, 259});
  write_file(dir, "merges.txt", "#version: 0.2\n");
  CHECK_THAT(load_error(dir), Catch::Contains("merges.txt: 1 of the 260 tokens of " + dir + "/vocab.json is made by no "
                                              "merge (e.g. \"ab\", id 256)"));

  // Saving a special that could be ordinary text would write files that do not load back.
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.emplace_back(1, char(b));
  tokens.emplace_back("MASK");
  Tokenizer mask = Tokenizer::from_parts(tokens, {}, {256});
  CHECK_THROWS_WITH(mask.save(test::temp_dir("tok_save_mask")), Catch::Contains("\"MASK\" (id 256) could be ordinary"));
}
