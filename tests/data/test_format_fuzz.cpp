// Damaged input files of every `prepare` format are read or refused with gpt2cc::Error, and what
// a read hands on is what the tokenizer may take. A seeded random search (tests/common/
// file_damage.hpp) over damage to a valid file of each format (TinyStories v1, v2 and JSON,
// WikiText, WikiExtractor, plain text, JSON lines): bytes flipped, set, cut, inserted, deleted,
// repeated, and, for the JSON formats, values anywhere in a story's or a line's JSON replaced.
// Each damaged file is read twice, with invalid UTF-8 an error and replaced; a read succeeds or
// throws gpt2cc::Error, nothing else, and every text piece it hands the sink is valid UTF-8 (the
// tokenizer's contract), with no CR left (line endings are normalised) and no empty document.
// 7,000 damaged byte strings and 1,000 damaged JSON values, each read twice; ~2 s.
#include "common/catch.hpp"

#include <cstdint>
#include <exception>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/file_damage.hpp"
#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/utf8.hpp"
#include "data/formats.hpp"

using namespace gpt2cc;
using namespace gpt2cc::data;
using namespace gpt2cc::test;

namespace {

// Checks what the reader hands on: valid UTF-8 without CR, each document non-empty.
struct CheckingSink : DocumentSink {
  size_t document_bytes = 0, documents = 0;
  void text(std::string_view bytes) override {
    CHECK(is_valid_utf8(bytes));
    CHECK(bytes.find('\r') == std::string_view::npos);
    document_bytes += bytes.size();
  }
  void end_document() override {
    CHECK(document_bytes > 0);
    document_bytes = 0;
    ++documents;
  }
};

// 1 or 2 changes to the JSON of one line of a JSON-lines file.
FileDamage json_line_of(std::string name) {
  return [name](std::map<std::string, std::string>& files, std::mt19937_64& rng) {
    std::string& b = files[name];
    std::vector<size_t> starts{0};
    for (size_t i = 0; i + 1 < b.size(); ++i)
      if (b[i] == '\n') starts.push_back(i + 1);
    const size_t start = starts[rng() % starts.size()];
    size_t size = std::min(b.find('\n', start), b.size()) - start;
    return name + " line at byte " + std::to_string(start) + ":" + damage_json_at(b, start, size, rng);
  };
}

struct Sample {
  Format format;
  const char* file;
  std::string text;
};

const std::vector<Sample>& samples() {
  static const std::vector<Sample> all = {
      {Format::tinystories, "train.txt",
       "Once upon a time, there was a cat.\nIt liked milk.\n\nThe end.\n<|endoftext|>\n"
       "Tom had a red ball.\r\nHe threw it high.\n<|endoftext|>\n"},
      {Format::tinystories_v2, "v2.txt", "Lily saw a bird.\nIt sang.\n<|endoftext|>\nBen ran fast. Caf\xC3\xA9.\n"},
      {Format::tinystories_json, "data00.json",
       R"([{"story": "One day, a fox met a dog.\nThey played.", "summary": "x"}, {"story": "The sun was warm."}])"},
      {Format::wikitext, "wiki.train.raw",
       " \n = Valkyria Chronicles = \n \n Senj\xC5\x8D no Valkyria is a game . \n \n = = Plot = = \n \n"
       " The story begins . \n = Tower = \n \n A tower is tall . \n"},
      {Format::wikiextractor, "wiki_00",
       "<doc id=\"1\" url=\"u\" title=\"A\">\nA\n\nA is a letter.\n</doc>\n"
       "<doc id=\"2\" url=\"v\" title=\"B\">\nB\n\nB follows A.\n</doc>\n"},
      {Format::text, "notes.txt", "First line.\nSecond line \xE2\x80\x94 with a dash.\n\nLast line.\n"},
      {Format::jsonl, "a.jsonl", "{\"text\": \"one\\r\\ntwo\", \"id\": 1}\n{\"text\": \"three \\u00e9\"}\n"},
  };
  return all;
}

}  // namespace

TEST_CASE("damaged inputs of every prepare format are read or refused, and read only valid UTF-8",
          "[fuzz][data]") {
  const std::string dir = temp_dir("fuzz_formats");
  uint64_t seed = 61;
  for (const Sample& s : samples()) {
    INFO("format " << format_name(s.format));
    write_bytes(dir + "/" + s.file, s.text);
    // Both ways, whichever refuses (its Error thrown after the other read ran).
    const auto read = [&] {
      std::exception_ptr refused;
      for (const bool replace : {false, true}) {
        FormatOptions options;
        options.format = s.format;
        options.replace_invalid_utf8 = replace;
        CheckingSink sink;
        try {
          const ReadResult r = read_documents(dir + "/" + s.file, options, sink);
          CHECK(r.documents == sink.documents);
        } catch (const Error&) {
          if (!refused) refused = std::current_exception();
        }
      }
      if (refused) std::rethrow_exception(refused);
    };
    search(std::string(format_name(s.format)) + " bytes", dir, {s.file}, 1000, seed++, bytes_of({s.file}), read);
    if (s.format == Format::tinystories_json)
      search("tinystories-json values", dir, {s.file}, 500, seed++, json_of(s.file, kWholeFile), read);
    if (s.format == Format::jsonl) search("jsonl values", dir, {s.file}, 500, seed++, json_line_of(s.file), read);
  }
}
