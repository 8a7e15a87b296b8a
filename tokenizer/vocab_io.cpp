// Tokenizer file formats (see vocab_io.hpp). The JSON reader here is a small one for the one
// shape these files have, a flat object of string -> integer, so that every error (including
// a duplicate or out-of-range id) can name its line and column, which a general JSON library
// cannot.
#include "tokenizer/vocab_io.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/tokenizer_files.hpp"
#include "core/utf8.hpp"
#include "tokenizer/pretokenizer.hpp"

namespace gpt2cc::tok {

namespace fs = std::filesystem;

namespace {

// GPT-2's files are 1.0 and 0.5 MB; 2^24 tokens (the most a tokenizer has) of up to ~60 bytes
// escaped stay under this.
constexpr size_t kMaxTokenizerFileBytes = size_t(1) << 30;

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

// Where an entry or an error is in a file: line and column (1-based, in bytes), printed "12:5".
// The column matters in GPT-2's encoder.json, one line of 1 MB.
struct Position {
  int line = 1;
  size_t column = 1;
};
std::ostream& operator<<(std::ostream& os, const Position& p) { return os << p.line << ':' << p.column; }

// Parser for {"token": id, ...} with line tracking.
class FlatJsonReader {
 public:
  FlatJsonReader(std::string path, std::string_view text) : path_(std::move(path)), s_(text) {}

  // Calls f(key, id, position of the key) for each member in file order.
  template <class F>
  void read(F&& f) {
    skip_ws();
    expect('{');
    skip_ws();
    if (peek() == '}') return;
    for (;;) {
      skip_ws();
      const Position at = position();
      std::string key = string();
      skip_ws();
      expect(':');
      skip_ws();
      long long id = integer();
      f(key, id, at);
      skip_ws();
      char c = next();
      if (c == '}') break;
      if (c != ',') fail("expected ',' or '}' after a member, got " + describe(c));
    }
    skip_ws();
    if (i_ < s_.size()) fail("unexpected text after the closing '}'");
  }

 private:
  Position position() const { return {line_, i_ - line_start_ + 1}; }
  [[noreturn]] void fail(const std::string& what) const { fail_at(position(), what); }
  [[noreturn]] void fail_at(Position at, const std::string& what) const {
    fail_input(format("{}:{}: {}", path_, at, what));
  }
  // A character as a message shows it: 'x', or '\xEF' for a byte that is not printable ASCII
  // (a UTF-8 byte-order mark's first byte would print as a replacement character).
  static std::string describe(char c) {
    if (c == 0) return "end of file";
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte >= 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "'\\x%02X'", byte);
      return hex;
    }
    std::string out = "' '";
    out[1] = c;
    return out;
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : 0; }
  char next() {
    if (i_ >= s_.size()) fail("unexpected end of file");
    char c = s_[i_++];
    if (c == '\n') {
      ++line_;
      line_start_ = i_;
    }
    return c;
  }
  void expect(char c) {
    char got = peek();
    if (got != c) fail(format("expected '{}', got {}", c, describe(got)));
    next();
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) next();
  }
  uint32_t hex4() {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = next();
      int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (d < 0) fail("bad \\u escape in a string");
      v = v * 16 + uint32_t(d);
    }
    return v;
  }
  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      char c = next();
      if (c == '"') break;
      if (c == '\n') fail("newline inside a string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      char e = next();
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // a UTF-16 surrogate pair
            if (next() != '\\' || next() != 'u') fail("unpaired UTF-16 surrogate in a \\u escape");
            uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("unpaired UTF-16 surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("unpaired UTF-16 surrogate in a \\u escape");
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape \\" + std::string(1, e) + " in a string");
      }
    }
    return out;
  }
  // A token id: a JSON number that is a whole number. The whole number is read, so that 1e+20 or
  // 2.5 is refused as such, not read as id 1 or 2 followed by stray text.
  long long integer() {
    const auto digits = [&] {
      while (peek() >= '0' && peek() <= '9') next();
    };
    const size_t start = i_;
    const Position start_at = position();
    if (peek() == '-') next();
    digits();
    if (i_ == start || (i_ == start + 1 && s_[start] == '-')) fail("expected an integer token id, got " + describe(peek()));
    const size_t int_end = i_;
    if (peek() == '.') {
      next();
      digits();
    }
    if (peek() == 'e' || peek() == 'E') {
      next();
      if (peek() == '+' || peek() == '-') next();
      digits();
    }
    const std::string text(s_.substr(start, i_ - start));
    if (i_ != int_end) fail_at(start_at, text + " is not a valid token id (a whole number, 0 to 2^24 - 1)");
    if (text.size() > 10) fail_at(start_at, "token id " + text + " is too large");
    return std::stoll(text);
  }

  std::string path_;
  std::string_view s_;
  size_t i_ = 0;
  int line_ = 1;
  size_t line_start_ = 0;  // where line_ begins
};

std::string json_escape(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    auto c = uint8_t(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(ch);
    }
  }
  return out + "\"";
}

// A token or a line of a file, quoted for a message: printable characters as they are (GPT-2's
// byte alphabet is printable), '"' and '\\' escaped, control characters (C0, DEL, C1) as \u00XX
// and bytes that are not UTF-8 as \xNN, so that no escape sequence reaches the terminal; of a long
// one its first 32 bytes (cut before a character's continuation bytes) and its length: a damaged
// file's line may be megabytes long.
std::string quote_token(std::string_view s) {
  constexpr size_t kShown = 32;
  size_t shown = std::min(s.size(), kShown);
  while (shown < s.size() && shown > 0 && (uint8_t(s[shown]) & 0xC0) == 0x80) --shown;
  std::string out = "\"";
  for (size_t i = 0; i < shown;) {
    const auto c = uint8_t(s[i]);
    const size_t length = c < 0x80                ? 1
                          : c >= 0xC2 && c <= 0xDF ? 2
                          : c >= 0xE0 && c <= 0xEF ? 3
                          : c >= 0xF0 && c <= 0xF4 ? 4
                                                   : 0;  // the length a lead byte announces (0: none)
    if (length == 0 || i + length > s.size() || !is_valid_utf8(s.substr(i, length))) {
      out += "\\x" + hex_byte(c);
      ++i;
      continue;
    }
    // The code point of a one- or two-byte character: the controls are below U+00A0.
    const uint32_t cp = length == 1 ? c : length == 2 ? ((c & 0x1Fu) << 6) | (uint8_t(s[i + 1]) & 0x3Fu) : 0xA0;
    if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0)) {
      out += "\\u00" + hex_byte(uint8_t(cp));
    } else {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.append(s.substr(i, length));
    }
    i += length;
  }
  out.push_back('"');
  if (shown < s.size()) out += format("... ({} bytes)", s.size());
  return out;
}

// The text of a tokenizer file, refused where it starts with a UTF-8 byte-order mark: JSON and
// merges.txt have none, and in a message the invisible mark would make the first token look bad.
std::string read_tokenizer_file(const std::string& path) {
  std::string text = read_whole_file(path, "tokenizer file", kMaxTokenizerFileBytes);
  INPUT_CHECK(!text.starts_with("\xEF\xBB\xBF"),
              "{} starts with a UTF-8 byte-order mark (bytes EF BB BF): save it without one", path);
  return text;
}

// vocab.json / encoder.json: token string -> id, the ids dense in [0, V).
struct Vocabulary {
  std::unordered_map<std::string, int> id_of;
  std::vector<std::string> keys;  // by id
  std::vector<Position> key_at;   // where each id's entry is
};

Vocabulary read_vocabulary(const std::string& vocab_path) {
  std::string vocab_text = read_tokenizer_file(vocab_path);
  Vocabulary v;
  struct Entry {
    int id;
    Position at;
    std::string key;
  };
  std::vector<Entry> entries;
  FlatJsonReader(vocab_path, vocab_text).read([&](const std::string& key, long long id, Position at) {
    INPUT_CHECK(id >= 0 && id < (1LL << 24), "{}:{}: token id {} out of range [0, 2^24)", vocab_path, at, id);
    auto [it, fresh] = v.id_of.emplace(key, int(id));
    INPUT_CHECK(fresh, "{}:{}: token {} appears twice", vocab_path, at, quote_token(key));
    entries.push_back({int(id), at, key});
  });
  INPUT_CHECK(!entries.empty(), "{}: the vocabulary is empty", vocab_path);
  // In id order (then file order), so that the tables are sized by the entries the file holds,
  // not by its largest id (one id of 2^24 - 1 in a small file would take ~600 MB first).
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) {
              if (a.id != b.id) return a.id < b.id;
              return a.at.line != b.at.line ? a.at.line < b.at.line : a.at.column < b.at.column;
            });
  const int max_id = entries.back().id;
  for (Entry& e : entries) {
    INPUT_CHECK(v.keys.empty() || e.id != int(v.keys.size()) - 1, "{}:{}: token id {} is also used at {}",
                vocab_path, e.at, e.id, v.key_at.back());
    INPUT_CHECK(e.id == int(v.keys.size()), "{}: token ids must be 0..{} without gaps, but id {} is missing",
                vocab_path, max_id, v.keys.size());
    v.keys.push_back(std::move(e.key));
    v.key_at.push_back(e.at);
  }
  return v;
}

// merges.txt / vocab.bpe: the merges in rank order, as (left id, right id); `merged[id]` is set
// for each token a merge makes.
std::vector<std::pair<int, int>> read_merges(const std::string& merges_path, const std::string& vocab_path,
                                             const Vocabulary& vocab, std::vector<bool>& merged) {
  std::vector<std::pair<int, int>> merges;
  merged.assign(vocab.keys.size(), false);
  std::string merges_text = read_tokenizer_file(merges_path);
  std::istringstream lines(merges_text);
  std::string line;
  int line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    size_t sp = line.find(' ');
    INPUT_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < line.size() && line.find(' ', sp + 1) == std::string::npos,
                "{}:{}: a merge must be two tokens separated by one space, got {}", merges_path, line_no,
                quote_token(line));
    std::string left = line.substr(0, sp), right = line.substr(sp + 1);
    const auto& id_of = vocab.id_of;
    auto l = id_of.find(left), r = id_of.find(right), m = id_of.find(left + right);
    INPUT_CHECK(l != id_of.end(), "{}:{}: merge token {} is not in {}", merges_path, line_no, quote_token(left),
                vocab_path);
    INPUT_CHECK(r != id_of.end(), "{}:{}: merge token {} is not in {}", merges_path, line_no, quote_token(right),
                vocab_path);
    INPUT_CHECK(m != id_of.end(), "{}:{}: merged token {} is not in {}", merges_path, line_no,
                quote_token(left + right), vocab_path);
    merges.emplace_back(l->second, r->second);
    merged[m->second] = true;
  }
  return merges;
}

// Each token's raw bytes: single bytes and merge results are ordinary, the rest special (their
// text taken literally). Checks that all 256 bytes have a token, that no token that could be
// ordinary text is left unmade, and that no merge uses a special token.
void classify_tokens(VocabParts& parts, const Vocabulary& vocab, const std::vector<bool>& merged,
                     const std::string& vocab_path, const std::string& merges_path) {
  const std::vector<std::string>& keys = vocab.keys;
  parts.tokens.resize(keys.size());
  std::vector<bool> have_byte(256, false);
  std::string bytes;
  for (size_t id = 0; id < keys.size(); ++id) {
    bool mapped = unicode_to_bytes(keys[id], bytes);
    if (mapped && bytes.size() == 1 && !have_byte[uint8_t(bytes[0])]) {
      have_byte[uint8_t(bytes[0])] = true;
      parts.tokens[id] = bytes;
    } else if (merged[id]) {
      INPUT_CHECK(mapped, "{}:{}: token {} (id {}) is a merge result but is not written in GPT-2's byte alphabet",
                  vocab_path, vocab.key_at[id], quote_token(keys[id]), id);
      parts.tokens[id] = bytes;
    } else {
      parts.tokens[id] = keys[id];
      parts.special_ids.push_back(int(id));
    }
  }
  for (int b = 0; b < 256; ++b)
    INPUT_CHECK(have_byte[b], "{}: byte 0x{} has no single-byte token (written \"{}\"); a byte-level vocabulary needs all 256",
                vocab_path, hex_byte(uint8_t(b)), byte_to_unicode()[b]);
  // A token no merge makes is special only if it could not be ordinary text: "Ġworld" left
  // without its merge (a merges file cut short, or an empty one) would otherwise turn into a
  // "special" that matches only the literal text "Ġworld", and " world" would encode as bytes.
  size_t unmade = 0;
  int example = -1;
  for (int id : parts.special_ids) {
    if (!could_be_ordinary(keys[id])) continue;
    if (unmade++ == 0) example = id;
  }
  INPUT_CHECK(unmade == 0,
              "{}: {} of the {} tokens of {} {} made by no merge (e.g. {}, id {}); only a special token such as "
              "<|endoftext|> may be. Is {} truncated, or from another vocabulary?",
              merges_path, unmade, keys.size(), vocab_path, unmade == 1 ? "is" : "are",
              quote_token(keys[example]), example, merges_path);
  for (auto [a, b] : parts.merges) {
    INPUT_CHECK(parts.tokens[a].size() > 0 && !std::binary_search(parts.special_ids.begin(), parts.special_ids.end(), a) &&
                    !std::binary_search(parts.special_ids.begin(), parts.special_ids.end(), b),
                "{}: a merge uses special token {} or {}", merges_path, quote_token(keys[a]), quote_token(keys[b]));
  }
}

}  // namespace

VocabParts read_vocab_dir(const std::string& dir) {
  INPUT_CHECK(fs::is_directory(dir), "tokenizer directory {} {}", dir,
              fs::exists(dir) ? "is a file, not a directory (vocab.json + merges.txt, or encoder.json + vocab.bpe)"
                              : "does not exist");
  const TokenizerFilePair* pair = tokenizer_file_pair(dir);
  INPUT_CHECK(pair != nullptr,
              "tokenizer directory {} holds neither encoder.json + vocab.bpe (GPT-2) nor vocab.json + merges.txt "
              "(Hugging Face)",
              dir);
  const std::string vocab_path = (fs::path(dir) / pair->vocab).string();
  const std::string merges_path = (fs::path(dir) / pair->merges).string();
  INPUT_CHECK(fs::exists(vocab_path), "tokenizer file {} is missing (it belongs with {})", vocab_path, merges_path);
  INPUT_CHECK(fs::exists(merges_path), "tokenizer file {} is missing (it belongs with {})", merges_path, vocab_path);

  const Vocabulary vocab = read_vocabulary(vocab_path);
  VocabParts parts;
  std::vector<bool> merged;
  parts.merges = read_merges(merges_path, vocab_path, vocab, merged);
  classify_tokens(parts, vocab, merged, vocab_path, merges_path);
  return parts;
}

bool could_be_ordinary(std::string_view text) {
  const auto one_pretoken = [](std::string_view s) {
    std::vector<Piece> pieces;
    pretokenize(s, pieces);
    return pieces.size() == 1;
  };
  std::string bytes;
  return one_pretoken(text) || (unicode_to_bytes(text, bytes) && one_pretoken(bytes));
}

void write_vocab_dir(const std::string& dir, const VocabParts& parts) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  INPUT_CHECK(fs::is_directory(dir), "cannot create tokenizer directory {}: {}", dir, ec.message());
  std::vector<bool> special(parts.tokens.size(), false);
  for (int id : parts.special_ids) special[id] = true;
  std::unordered_map<std::string, int> seen;
  std::string vocab = "{";
  for (size_t id = 0; id < parts.tokens.size(); ++id) {
    std::string key = special[id] ? parts.tokens[id] : bytes_to_unicode(parts.tokens[id]);
    auto [it, fresh] = seen.emplace(key, int(id));
    INPUT_CHECK(fresh, "cannot save: special token {} (id {}) is written like token id {}; choose another special text",
                quote_token(key), id, it->second);
    INPUT_CHECK(!special[id] || !could_be_ordinary(key),
                "cannot save: special token {} (id {}) could be ordinary text (it is one pre-token), so the files "
                "would not load back; choose a text that spans pre-tokens, such as <|name|>",
                quote_token(key), id);
    vocab += (id ? ",\n" : "\n") + json_escape(key) + ": " + std::to_string(id);
  }
  vocab += "\n}\n";
  std::string merges = "#version: 0.2\n";
  for (auto [a, b] : parts.merges) merges += bytes_to_unicode(parts.tokens[a]) + " " + bytes_to_unicode(parts.tokens[b]) + "\n";
  // transformers' AutoTokenizer reads vocab.json + merges.txt as GPT-2's own, whose only special
  // token is <|endoftext|> (added when missing, one id past the vocabulary); this file names the
  // special tokens these have, and <|endoftext|> as bos/eos/unk only where it is one of them.
  nlohmann::ordered_json config = {{"tokenizer_class", "GPT2Tokenizer"}, {"add_prefix_space", false}};
  nlohmann::ordered_json eot = nullptr, added = nlohmann::ordered_json::object();
  for (int id : parts.special_ids) {
    if (parts.tokens[id] == "<|endoftext|>") eot = parts.tokens[id];
    added[std::to_string(id)] = {{"content", parts.tokens[id]}, {"lstrip", false}, {"normalized", false},
                                 {"rstrip", false}, {"single_word", false}, {"special", true}};
  }
  for (const char* role : {"bos_token", "eos_token", "unk_token"}) config[role] = eot;
  config["added_tokens_decoder"] = added;
  // Together: a failed write leaves the old pair, never a new vocab.json beside an old merges.txt.
  write_files_atomic({{(fs::path(dir) / "vocab.json").string(), vocab},
                      {(fs::path(dir) / "merges.txt").string(), merges},
                      {(fs::path(dir) / "tokenizer_config.json").string(), config.dump(2) + "\n"}});
}

}  // namespace gpt2cc::tok
