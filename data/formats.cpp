// Readers for the input formats of `prepare` (data/formats.hpp): line reading with normalised
// line endings and UTF-8 checks, and one document splitter per format. TinyStories v1 boundary
// detection is explained at detect_story_boundary and in docs/data.md.
#include "data/formats.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <istream>
#include <nlohmann/json.hpp>
#include <streambuf>
#include <vector>

#include "core/check.hpp"
#include "core/json_number.hpp"
#include "core/utf8.hpp"

namespace gpt2cc::data {

namespace {

constexpr std::string_view kEot = "<|endoftext|>";
constexpr size_t kReadBlock = 1 << 20;

// A whitespace-only line: white space as GPT-2's pre-tokeniser has it, Unicode's too (a line of
// no-break spaces is blank).
bool is_blank(std::string_view line) { return is_white_space(line); }

std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

// Joins lines into one document: lines are separated by '\n'; whitespace-only lines before the
// first and after the last other line are dropped, those in between are kept verbatim.
class DocumentBuilder {
 public:
  DocumentBuilder(DocumentSink& sink, ReadResult& result) : sink_(sink), result_(result) {}
  void line(std::string_view line) {
    if (is_blank(line)) {
      if (started_) {
        pending_.append(line);
        pending_.push_back('\n');
      }
      return;
    }
    if (started_) {
      emit("\n");
      if (!pending_.empty()) emit(pending_);
    }
    pending_.clear();
    emit(line);
    started_ = true;
  }
  void end() {
    if (started_) {
      sink_.end_document();
      ++result_.documents;
    }
    started_ = false;
    pending_.clear();
  }
  bool started() const { return started_; }

 private:
  void emit(std::string_view s) {
    sink_.text(s);
    result_.bytes += s.size();
  }
  DocumentSink& sink_;
  ReadResult& result_;
  bool started_ = false;
  // The whitespace-only lines since the last other line, each followed by '\n': kept if another
  // line follows, dropped at the document's end. One string, a byte per byte of them (a string
  // per line took ~55 bytes for each empty one).
  std::string pending_;
};

// Documents separated by "<|endoftext|>" anywhere in the text (TinyStories v2, and v1 files
// that carry the marker).
void read_eot_separated(LineReader& in, DocumentBuilder& doc) {
  std::string line;
  while (in.next(line)) {
    std::string_view rest = line;
    for (size_t at; (at = rest.find(kEot)) != std::string_view::npos; rest = rest.substr(at + kEot.size())) {
      doc.line(rest.substr(0, at));
      doc.end();
    }
    doc.line(rest);
  }
  doc.end();
}

// TinyStories v1 text, stories delimited without markers. In the released sample files a
// paragraph break inside a story is a blank line; a story starts at a non-blank line that
// directly follows a non-blank line (train: "...ever after.\nOnce upon a time..."), i.e. a
// single newline. `blank`: every blank-line separated block is a story.
void read_story_lines(LineReader& in, DocumentBuilder& doc, StoryBoundary boundary) {
  std::string line;
  bool previous_blank = true;
  while (in.next(line)) {
    bool blank = is_blank(line);
    if (!blank && !previous_blank && boundary == StoryBoundary::line) doc.end();
    if (blank && boundary == StoryBoundary::blank) doc.end();
    doc.line(line);
    previous_blank = blank;
  }
  doc.end();
}

// Looks at the first 4 MiB: any "<|endoftext|>" -> eot. Otherwise count line breaks between two
// non-blank lines (S, single) and runs of blank lines between paragraphs (P). In the v1 train
// sample S/(S+P) is ~0.19 (one single break per story, ~4 paragraphs per story): single breaks
// are story boundaries -> line. When single breaks are rare (< 5%: the v1 validation sample,
// where every break is a blank line and a few stories wrap lines) nothing reliably separates
// stories -> blank, flagged ambiguous so prepare warns. Lines end at LF, CRLF or a lone CR, as
// LineReader reads them.
StoryBoundary detect_story_boundary(const std::string& path, bool* ambiguous) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  INPUT_CHECK(f, "cannot open {}: {}", path, std::strerror(errno));
  constexpr size_t kHead = 4 << 20;
  std::string head(kHead, '\0');
  head.resize(std::fread(head.data(), 1, head.size(), f));
  const bool failed = std::ferror(f);
  const int error = errno;
  std::fclose(f);
  if (failed) throw Error(format("error reading {}: {}", path, std::strerror(error)));
  *ambiguous = false;
  if (head.find(kEot) != std::string::npos) return StoryBoundary::eot;
  uint64_t single = 0, paragraph = 0, blank_run = 0;
  bool seen_text = false;
  size_t begin = 0;
  while (begin < head.size()) {
    size_t end = head.find_first_of("\r\n", begin);
    if (end == std::string::npos) break;  // the last, possibly cut, line is not counted
    // A CR ending the head may be the first half of a CRLF that was cut off: that line is the last.
    if (head[end] == '\r' && end + 1 == head.size() && head.size() == kHead) break;
    std::string_view line(head.data() + begin, end - begin);
    if (is_blank(line)) {
      ++blank_run;
    } else {
      if (seen_text) ++(blank_run == 0 ? single : paragraph);
      seen_text = true;
      blank_run = 0;
    }
    begin = end + 1 + (head.compare(end, 2, "\r\n") == 0 ? 1 : 0);
  }
  if (single + paragraph > 0 && double(single) >= 0.05 * double(single + paragraph)) return StoryBoundary::line;
  *ambiguous = single + paragraph > 0;
  return StoryBoundary::blank;
}

// WikiText: an article starts at a top-level heading line " = Title = " (not " = = Section = = ")
// that stands between blank lines: a wrapped equation line such as " = 1 henry and capacitance C = "
// inside an article has text right above or below it.
bool is_wikitext_title(std::string_view line) {
  std::string_view t = trim(line);
  return t.size() >= 5 && t.substr(0, 2) == "= " && t[2] != '=' && t.substr(t.size() - 2) == " =" &&
         t[t.size() - 3] != '=';
}

void read_wikitext(LineReader& in, DocumentBuilder& doc) {
  std::string line, candidate;
  bool previous_blank = true, holding = false;
  while (in.next(line)) {
    bool blank = is_blank(line);
    if (holding) {  // the line after a title-shaped line decides whether it was a title
      if (blank) doc.end();
      doc.line(candidate);
      holding = false;
      previous_blank = false;
    }
    if (previous_blank && is_wikitext_title(line)) {
      candidate = line;
      holding = true;
      continue;
    }
    doc.line(line);
    previous_blank = blank;
  }
  if (holding) {
    doc.end();
    doc.line(candidate);
  }
  doc.end();
}

// WikiExtractor: <doc id="..." url="..." title="..."> ... </doc>; the body keeps its title line.
void read_wikiextractor(LineReader& in, DocumentBuilder& doc) {
  std::string line;
  bool inside = false;
  uint64_t opened_at = 0;
  while (in.next(line)) {
    std::string_view t = trim(line);
    if (t.starts_with("<doc ") || t == "<doc>") {
      INPUT_CHECK(!inside, "{}:{}: <doc> inside the <doc> opened at line {} (missing </doc>)", in.path(),
                  in.line_number(), opened_at);
      INPUT_CHECK(t.back() == '>', "{}:{}: malformed <doc> line", in.path(), in.line_number());
      inside = true;
      opened_at = in.line_number();
    } else if (t == "</doc>") {
      INPUT_CHECK(inside, "{}:{}: </doc> without an opening <doc>", in.path(), in.line_number());
      doc.end();
      inside = false;
    } else if (inside) {
      doc.line(line);
    } else {
      INPUT_CHECK(is_blank(line), "{}:{}: text outside <doc ...> ... </doc> (is this WikiExtractor output?)",
                  in.path(), in.line_number());
    }
  }
  INPUT_CHECK(!inside, "{}: the <doc> opened at line {} is never closed (truncated file?)", in.path(), opened_at);
}

void read_text(LineReader& in, DocumentBuilder& doc, const std::string& separator) {
  std::string line;
  while (in.next(line)) {
    if (!separator.empty() && line == separator) {
      doc.end();
      continue;
    }
    doc.line(line);
  }
  doc.end();
}

// Feeds a JSON string value as lines (normalising its line endings) to the builder.
void feed_string(const std::string& text, DocumentBuilder& doc, const std::string& where, bool replace) {
  std::string fixed;
  const std::string* s = &text;
  if (find_invalid_utf8(text) != std::string::npos) {
    INPUT_CHECK(replace, "{}: invalid UTF-8 in a string (pass --replace-invalid-utf8 to replace it)", where);
    fixed = replace_invalid_utf8(text);
    s = &fixed;
  }
  size_t begin = 0;
  while (true) {
    size_t end = s->find_first_of("\r\n", begin);
    doc.line(std::string_view(*s).substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1 + (s->compare(end, 2, "\r\n") == 0 ? 1 : 0);
  }
  doc.end();
}

void read_jsonl(LineReader& in, DocumentBuilder& doc, const FormatOptions& options) {
  std::string line;
  while (in.next(line)) {
    if (is_blank(line)) continue;
    std::string where = format("{}:{}", in.path(), in.line_number());
    nlohmann::json value;
    // The parser keeps the last of repeated keys: the text field given twice is refused instead
    // (as tinystories-json refuses a second "story"), not read as one of them.
    int field_keys = 0;
    const auto count_field = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed == options.field) ++field_keys;
      return true;
    };
    try {
      value = nlohmann::json::parse(line, count_field);
    } catch (const nlohmann::json::exception& e) {
      fail_input(format("{}: not a JSON value: {}", where, json_error_text(e)));
    }
    INPUT_CHECK(value.is_object(), "{}: expected a JSON object per line", where);
    INPUT_CHECK(field_keys <= 1, "{}: the field \"{}\" appears {} times in the object", where, options.field,
                field_keys);
    auto it = value.find(options.field);
    INPUT_CHECK(it != value.end(), "{}: no field \"{}\" (choose it with --field)", where, options.field);
    INPUT_CHECK(it->is_string(), "{}: field \"{}\" is not a string", where, options.field);
    feed_string(it->get_ref<const std::string&>(), doc, where, options.replace_invalid_utf8);
  }
}

// The bytes of a file as nlohmann's parser reads them (it takes a stream), made valid UTF-8 block
// by block before the parser sees them: invalid UTF-8 is an InputError naming the file and byte,
// or with replace every maximal invalid subpart becomes U+FFFD, as LineReader does per line (the
// parser itself would refuse the bytes as invalid JSON). A read that fails is an Error naming the
// file; `stop` is checked per block.
class Utf8FileBuffer : public std::streambuf {
 public:
  Utf8FileBuffer(const std::string& path, bool replace, const std::atomic<int>* stop)
      : path_(path), replace_(replace), stop_(stop) {
    file_ = std::fopen(path.c_str(), "rb");
    INPUT_CHECK(file_, "cannot open {}: {}", path, std::strerror(errno));
  }
  ~Utf8FileBuffer() override { std::fclose(file_); }
  Utf8FileBuffer(const Utf8FileBuffer&) = delete;
  Utf8FileBuffer& operator=(const Utf8FileBuffer&) = delete;

 protected:
  int_type underflow() override {
    while (gptr() == egptr()) {
      if (eof_ && raw_.empty()) return traits_type::eof();
      read_block();
      setg(valid_.data(), valid_.data(), valid_.data() + valid_.size());
    }
    return traits_type::to_int_type(*gptr());
  }

 private:
  // Moves the next block of raw_ into valid_; a sequence cut by the block's end waits in raw_.
  void read_block() {
    check_stop(stop_);
    const size_t old = raw_.size();
    raw_.resize(old + kReadBlock);
    const size_t got = std::fread(raw_.data() + old, 1, kReadBlock, file_);
    raw_.resize(old + got);
    if (std::ferror(file_)) throw Error(format("error reading {}: {}", path_, std::strerror(errno)));
    eof_ = got == 0;
    valid_.clear();
    size_t used = raw_.size();
    if (replace_) {
      used = append_valid_utf8(raw_, eof_, valid_);
    } else {
      const size_t bad = find_invalid_utf8(raw_);
      std::string ignored;
      const bool cut = bad != std::string::npos && !eof_ && append_valid_utf8(raw_.substr(bad), false, ignored) == 0;
      INPUT_CHECK(bad == std::string::npos || cut,
                  "{}: invalid UTF-8 at byte {} (pass --replace-invalid-utf8 to replace it with U+FFFD)", path_,
                  offset_ + bad + 1);
      if (cut) used = bad;
      valid_.assign(raw_, 0, used);
    }
    raw_.erase(0, used);
    offset_ += used;
  }

  std::string path_;
  bool replace_;
  const std::atomic<int>* stop_;
  std::FILE* file_ = nullptr;
  std::string raw_;    // read but not yet checked: at most a cut sequence between blocks
  std::string valid_;  // the checked bytes the parser reads
  uint64_t offset_ = 0;  // file offset of raw_'s first byte
  bool eof_ = false;
};

// The full TinyStories JSON release: data00.json ... each an array of objects with a "story"
// string. Parsed with SAX so a 250 MB file never becomes a DOM. Each object of the array is
// checked on its own: exactly one "story" key, holding a string; an element of the array that is
// not an object (a number, a string, null, an array) is an error naming it.
class StorySax : public nlohmann::json_sax<nlohmann::json> {
 public:
  StorySax(DocumentBuilder& doc, const std::string& path, bool replace) : doc_(doc), path_(path), replace_(replace) {}
  bool null() override { return scalar("null"); }
  bool boolean(bool) override { return scalar("boolean"); }
  bool number_integer(number_integer_t) override { return scalar("number"); }
  bool number_unsigned(number_unsigned_t) override { return scalar("number"); }
  bool number_float(number_float_t, const string_t&) override { return scalar("number"); }
  bool binary(binary_t&) override { return scalar("binary value"); }
  bool string(string_t& s) override {
    if (depth_ == 2 && in_story_) {
      has_story_ = true;
      feed_string(s, doc_, format("{}: story {}", path_, objects_), replace_);
    }
    return scalar("string");
  }
  bool start_object(std::size_t) override {
    INPUT_CHECK(depth_ != 0, "{}: expected a JSON array of objects with a \"story\" field, found an object", path_);
    if (++depth_ == 2) {
      ++objects_;
      has_story_ = has_story_key_ = false;
    }
    in_story_ = false;
    return true;
  }
  bool key(string_t& k) override {
    in_story_ = depth_ == 2 && k == "story";
    INPUT_CHECK(!in_story_ || !has_story_key_, "{}: object {} of the array has the key \"story\" twice", path_,
                objects_);
    has_story_key_ = has_story_key_ || in_story_;
    return true;
  }
  bool end_object() override {
    if (depth_-- == 2 && !has_story_) {
      if (without_story_ == 0) first_without_story_ = objects_;
      ++without_story_;
    }
    in_story_ = false;
    return true;
  }
  bool start_array(std::size_t) override {
    INPUT_CHECK(depth_ != 1, "{}: element {} of the array is an array, not an object with a \"story\" string", path_,
                objects_ + 1);
    ++depth_;
    in_story_ = false;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    fail_input(format("{}: invalid JSON at byte {}: {}", path_, position, json_error_text(e)));
  }
  uint64_t objects() const { return objects_; }
  uint64_t objects_without_story() const { return without_story_; }
  uint64_t first_without_story() const { return first_without_story_; }  // from 1

 private:
  bool scalar(const char* kind) {
    INPUT_CHECK(depth_ != 0, "{}: expected a JSON array of objects, found a scalar", path_);
    INPUT_CHECK(depth_ != 1, "{}: element {} of the array is a {}, not an object with a \"story\" string", path_,
                objects_ + 1, kind);
    in_story_ = false;
    return true;
  }
  DocumentBuilder& doc_;
  std::string path_;
  bool replace_;
  int depth_ = 0;
  bool in_story_ = false;                          // the value being parsed is a "story" of an object
  bool has_story_ = false, has_story_key_ = false;  // of the current object of the array
  uint64_t objects_ = 0, without_story_ = 0, first_without_story_ = 0;
};

void read_tinystories_json(const std::string& path, DocumentBuilder& doc, const FormatOptions& options) {
  Utf8FileBuffer buffer(path, options.replace_invalid_utf8, options.stop);
  std::istream in(&buffer);
  StorySax sax(doc, path, options.replace_invalid_utf8);
  nlohmann::json::sax_parse(in, &sax);
  INPUT_CHECK(sax.objects_without_story() == 0, "{}: {} of {} objects have no \"story\" string (the first: object {})",
              path, sax.objects_without_story(), sax.objects(), sax.first_without_story());
}

}  // namespace

void check_stop(const std::atomic<int>* stop) {
  const int signal = stop != nullptr ? stop->load() : 0;
  if (signal == 0) return;
  throw Interrupted(signal == SIGINT    ? std::string("interrupted (SIGINT)")
                    : signal == SIGTERM ? std::string("interrupted (SIGTERM)")
                                        : format("interrupted (signal {})", signal));
}

Format parse_format(const std::string& name) {
  static const std::pair<const char*, Format> names[] = {
      {"tinystories", Format::tinystories},     {"tinystories-v2", Format::tinystories_v2},
      {"tinystories-json", Format::tinystories_json}, {"wikitext", Format::wikitext},
      {"wikiextractor", Format::wikiextractor}, {"text", Format::text},
      {"jsonl", Format::jsonl}};
  for (const auto& [n, f] : names)
    if (name == n) return f;
  fail_input(format("--format must be one of tinystories, tinystories-v2, tinystories-json, wikitext, "
                    "wikiextractor, text, jsonl; got \"{}\"",
                    name));
}

const char* format_name(Format format) {
  switch (format) {
    case Format::tinystories: return "tinystories";
    case Format::tinystories_v2: return "tinystories-v2";
    case Format::tinystories_json: return "tinystories-json";
    case Format::wikitext: return "wikitext";
    case Format::wikiextractor: return "wikiextractor";
    case Format::text: return "text";
    case Format::jsonl: return "jsonl";
  }
  return "?";
}

StoryBoundary parse_story_boundary(const std::string& name) {
  if (name == "auto") return StoryBoundary::automatic;
  if (name == "eot") return StoryBoundary::eot;
  if (name == "line") return StoryBoundary::line;
  if (name == "blank") return StoryBoundary::blank;
  fail_input(format("--story-boundary must be one of auto, eot, line, blank; got \"{}\"", name));
}

const char* story_boundary_name(StoryBoundary boundary) {
  switch (boundary) {
    case StoryBoundary::automatic: return "auto";
    case StoryBoundary::eot: return "eot";
    case StoryBoundary::line: return "line";
    case StoryBoundary::blank: return "blank";
  }
  return "?";
}

ReadResult read_documents(const std::string& path, const FormatOptions& options, DocumentSink& sink) {
  ReadResult result;
  DocumentBuilder doc(sink, result);
  if (options.format == Format::tinystories_json) {
    read_tinystories_json(path, doc, options);
    return result;
  }
  LineReader in(path, options.replace_invalid_utf8, options.stop);
  switch (options.format) {
    case Format::tinystories: {
      StoryBoundary b = options.story_boundary;
      if (b == StoryBoundary::automatic) b = detect_story_boundary(path, &result.ambiguous);
      result.story_boundary = b;
      if (b == StoryBoundary::eot)
        read_eot_separated(in, doc);
      else
        read_story_lines(in, doc, b);
      break;
    }
    case Format::tinystories_v2: read_eot_separated(in, doc); break;
    case Format::wikitext: read_wikitext(in, doc); break;
    case Format::wikiextractor: read_wikiextractor(in, doc); break;
    case Format::text: read_text(in, doc, options.separator); break;
    case Format::jsonl: read_jsonl(in, doc, options); break;
    case Format::tinystories_json: break;
  }
  return result;
}

LineReader::LineReader(const std::string& path, bool replace_invalid_utf8, const std::atomic<int>* stop)
    : path_(path), replace_(replace_invalid_utf8), stop_(stop) {
  file_ = std::fopen(path.c_str(), "rb");
  INPUT_CHECK(file_, "cannot open {}: {}", path, std::strerror(errno));
}

LineReader::~LineReader() {
  if (file_) std::fclose(file_);
}

bool LineReader::fill() {
  if (eof_) return false;
  check_stop(stop_);
  buffer_.erase(0, pos_);
  pos_ = 0;
  size_t old = buffer_.size();
  buffer_.resize(old + kReadBlock);
  size_t got = std::fread(buffer_.data() + old, 1, kReadBlock, file_);
  buffer_.resize(old + got);
  if (std::ferror(file_)) throw Error(format("error reading {}: {}", path_, std::strerror(errno)));
  if (got == 0) eof_ = true;
  return got > 0;
}

bool LineReader::next(std::string& line) {
  size_t scanned = pos_;
  while (true) {
    size_t end = buffer_.find_first_of("\r\n", scanned);
    // A '\r' at the end of the buffer may be the first half of "\r\n": read on before deciding.
    if (end != std::string::npos && !(buffer_[end] == '\r' && end + 1 == buffer_.size() && !eof_)) {
      line.assign(buffer_, pos_, end - pos_);
      pos_ = end + 1 + (buffer_[end] == '\r' && end + 1 < buffer_.size() && buffer_[end + 1] == '\n' ? 1 : 0);
      break;
    }
    scanned = buffer_.size() - pos_;
    if (end != std::string::npos) --scanned;
    if (!fill()) {
      if (pos_ >= buffer_.size()) return false;
      // The last line: without a terminator, or ending in a lone CR (a CR that ended the last
      // block, "a\r" at the end of the file), which is dropped like any other line terminator.
      line.assign(buffer_, pos_, std::string::npos);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      pos_ = buffer_.size();
      break;
    }
  }
  ++line_number_;
  // A UTF-8 byte-order mark (EF BB BF, U+FEFF) opening the file, as Windows editors write it,
  // marks the encoding and is not text: every format drops it (JSON's parser would skip it too).
  if (line_number_ == 1 && line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3);
  size_t bad = find_invalid_utf8(line);
  if (bad != std::string::npos) {
    INPUT_CHECK(replace_, "{}:{}: invalid UTF-8 at byte {} of the line (pass --replace-invalid-utf8 to replace it with U+FFFD)",
                path_, line_number_, bad + 1);
    line = replace_invalid_utf8(line);
  }
  return true;
}

}  // namespace gpt2cc::data
