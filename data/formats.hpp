// Input formats of `prepare`: each reader streams one file and hands its documents, line by
// line, to a DocumentSink, so memory stays bounded by the longest line, never the file.
// Line endings are normalised (CRLF and lone CR become LF); leading and trailing whitespace-only
// lines of a document are dropped; a document with no other line is skipped. How each format
// delimits documents (TinyStories v1 in particular) is described in docs/data.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "core/check.hpp"
#include "core/utf8.hpp"  // find_invalid_utf8, replace_invalid_utf8

namespace gpt2cc::data {

enum class Format { tinystories, tinystories_v2, tinystories_json, wikitext, wikiextractor, text, jsonl };
// How TinyStories v1 text delimits stories: auto picks per file (see docs/data.md).
enum class StoryBoundary { automatic, eot, line, blank };

Format parse_format(const std::string& name);               // InputError listing the valid names
StoryBoundary parse_story_boundary(const std::string& name);
const char* format_name(Format format);
const char* story_boundary_name(StoryBoundary boundary);

struct FormatOptions {
  Format format = Format::text;
  StoryBoundary story_boundary = StoryBoundary::automatic;  // tinystories only
  std::string separator;      // text: a line equal to this ends a document; "" = one per file
  std::string field = "text";  // jsonl: the string field holding the document
  bool replace_invalid_utf8 = false;  // else invalid UTF-8 is an InputError naming file and line
  // When set, readers check it at every block they read and throw Interrupted once it is non-zero
  // (prepare's SIGINT/SIGTERM handler stores the signal number there).
  const std::atomic<int>* stop = nullptr;
};

// A run stopped through FormatOptions::stop: neither the input's fault nor the machine's.
struct Interrupted : Error {
  using Error::Error;
};
// Throws Interrupted when stop is set and non-zero.
void check_stop(const std::atomic<int>* stop);

// Receives documents as text pieces: text() any number of times, then end_document().
class DocumentSink {
 public:
  virtual ~DocumentSink() = default;
  virtual void text(std::string_view bytes) = 0;
  virtual void end_document() = 0;
};

struct ReadResult {
  uint64_t documents = 0;
  uint64_t bytes = 0;  // document bytes handed to the sink (after normalisation)
  StoryBoundary story_boundary = StoryBoundary::automatic;  // what tinystories used for this file
  bool ambiguous = false;  // tinystories: no reliable story boundary was found (docs/data.md)
};

// Streams the documents of one file into sink. InputError naming the file (and line) for a
// missing file or malformed content; Error naming the file for a read that fails (an I/O error).
ReadResult read_documents(const std::string& path, const FormatOptions& options, DocumentSink& sink);

// Reads a file line by line with normalised line endings and UTF-8 checked per line.
class LineReader {
 public:
  LineReader(const std::string& path, bool replace_invalid_utf8, const std::atomic<int>* stop = nullptr);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  // The next line without its terminator (LF, CRLF or CR) and, on line 1, without a UTF-8
  // byte-order mark; false at the end of the file.
  bool next(std::string& line);
  uint64_t line_number() const { return line_number_; }  // of the last line returned, from 1
  const std::string& path() const { return path_; }

 private:
  bool fill();
  std::string path_;
  std::FILE* file_ = nullptr;
  bool replace_;
  const std::atomic<int>* stop_;
  std::string buffer_;
  size_t pos_ = 0;
  bool eof_ = false;
  uint64_t line_number_ = 0;
};

}  // namespace gpt2cc::data
