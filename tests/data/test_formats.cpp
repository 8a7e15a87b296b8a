// The input readers of prepare, on small files written here: document boundaries of every
// format, line-ending normalisation, blank-line trimming, UTF-8 checks, error messages naming
// file and line, read errors naming the file and the stop flag (Ctrl-C). (Where prepare cuts a
// long document: the tokenizer's find_safe_split, tested in test_tokenizer.)
#include <atomic>
#include "common/catch.hpp"
#include <csignal>
#include <fstream>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "data/formats.hpp"

using namespace gpt2cc;
using namespace gpt2cc::data;

namespace {

struct Collect : DocumentSink {
  std::vector<std::string> docs;
  std::string current;
  void text(std::string_view bytes) override { current.append(bytes); }
  void end_document() override {
    docs.push_back(current);
    current.clear();
  }
};

std::string write_file(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::string path = dir + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  return path;
}

std::vector<std::string> read(const std::string& path, FormatOptions options, ReadResult* result = nullptr) {
  Collect sink;
  ReadResult r = read_documents(path, options, sink);
  CHECK(sink.current.empty());
  CHECK(r.documents == sink.docs.size());
  if (result) *result = r;
  return sink.docs;
}

FormatOptions with(Format f) {
  FormatOptions o;
  o.format = f;
  return o;
}

using Docs = std::vector<std::string>;

// f() throws an Error that is not an InputError (exit 1, the machine's fault), naming `path`.
template <class F>
void require_machine_error(F&& f, const std::string& path) {
  try {
    f();
    FAIL("no error");
  } catch (const InputError& e) {
    FAIL("an InputError (exit 2): " << e.what());
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(path));
  }
}
}  // namespace

TEST_CASE("TinyStories v1: a single newline starts a story, a blank line is a paragraph", "[data]") {
  std::string dir = test::temp_dir("formats_ts1");
  // The layout of the v1 train sample: paragraphs split by blank lines, stories by one newline.
  std::string text =
      "Once upon a time A.\r\n\r\nA, second paragraph.\r\nOne day B.\n\nB two.\n\nB three.\nLily C.\n";
  std::string path = write_file(dir, "train.txt", text);
  ReadResult r;
  auto docs = read(path, with(Format::tinystories), &r);
  CHECK(r.story_boundary == StoryBoundary::line);
  CHECK_FALSE(r.ambiguous);
  CHECK(docs == Docs{"Once upon a time A.\n\nA, second paragraph.", "One day B.\n\nB two.\n\nB three.", "Lily C."});
  CHECK(r.bytes == docs[0].size() + docs[1].size() + docs[2].size());

  SECTION("files with <|endoftext|> lines split there only") {
    std::string p2 = write_file(dir, "eot.txt", "Story one.\nLine two.\n\nPara.\n<|endoftext|>\nStory two.\n<|endoftext|>\n");
    ReadResult r2;
    CHECK(read(p2, with(Format::tinystories), &r2) == Docs{"Story one.\nLine two.\n\nPara.", "Story two."});
    CHECK(r2.story_boundary == StoryBoundary::eot);
  }
  SECTION("only blank lines: ambiguous, every block becomes a document") {
    std::string p3 = write_file(dir, "blank.txt", "A one.\n\nA two.\n\n\nB one.\n\nB two.\n");
    ReadResult r3;
    CHECK(read(p3, with(Format::tinystories), &r3) == Docs{"A one.", "A two.", "B one.", "B two."});
    CHECK(r3.story_boundary == StoryBoundary::blank);
    CHECK(r3.ambiguous);
    // The same with Windows line endings: "\r\n\r\n" is a blank line, not a line of text.
    std::string p4 = write_file(dir, "blank_crlf.txt", "A one.\r\n\r\nA two.\r\n\r\n\r\nB one.\r\n\r\nB two.\r\n");
    ReadResult r4;
    CHECK(read(p4, with(Format::tinystories), &r4) == Docs{"A one.", "A two.", "B one.", "B two."});
    CHECK(r4.story_boundary == StoryBoundary::blank);
  }
  SECTION("CR-only line endings are detected as LF ones are") {
    std::string lf = text;
    for (size_t at; (at = lf.find("\r\n")) != std::string::npos;) lf.erase(at, 1);
    std::string cr = lf;
    std::replace(cr.begin(), cr.end(), '\n', '\r');
    ReadResult r5;
    CHECK(read(write_file(dir, "train_cr.txt", cr), with(Format::tinystories), &r5) == docs);
    CHECK(r5.story_boundary == StoryBoundary::line);
    CHECK_FALSE(r5.ambiguous);
  }
  SECTION("pure CRLF files are detected as LF ones are") {
    // "\r\n" is one line ending: counted as two, every line would look followed by a blank line.
    std::string p6 = write_file(dir, "crlf.txt", "A one.\r\n\r\nA two.\r\nB one.\r\n\r\nB two.\r\n");
    ReadResult r6;
    CHECK(read(p6, with(Format::tinystories), &r6) == Docs{"A one.\n\nA two.", "B one.\n\nB two."});
    CHECK(r6.story_boundary == StoryBoundary::line);
    CHECK_FALSE(r6.ambiguous);
  }
  SECTION("single newlines between 5% of the text lines are enough for line") {
    // Exactly at the threshold: 19 paragraph breaks and 1 single newline (1 in 20) still pick line.
    std::string a = "A p0.";
    for (int i = 1; i < 20; ++i) a += format("\n\nA p{}.", i);
    ReadResult r7;
    CHECK(read(write_file(dir, "five.txt", a + "\nB.\n"), with(Format::tinystories), &r7) == Docs{a, "B."});
    CHECK(r7.story_boundary == StoryBoundary::line);
    CHECK_FALSE(r7.ambiguous);
  }
  SECTION("a forced boundary overrides detection") {
    FormatOptions o = with(Format::tinystories);
    o.story_boundary = StoryBoundary::blank;
    CHECK(read(path, o).size() == 4);  // blank-line blocks: single newlines no longer split
  }
}

TEST_CASE("TinyStories v2: stories separated by <|endoftext|>", "[data]") {
  std::string dir = test::temp_dir("formats_ts2");
  std::string path = write_file(dir, "v2.txt",
                                "\nOnce there was A.\nA said hi.\n<|endoftext|>\nB.\n\nB para.\n<|endoftext|>\n"
                                "<|endoftext|>\nC inline<|endoftext|>D after\n");
  CHECK(read(path, with(Format::tinystories_v2)) ==
        Docs{"Once there was A.\nA said hi.", "B.\n\nB para.", "C inline", "D after"});
}

TEST_CASE("TinyStories JSON: an array of objects with a story field", "[data]") {
  std::string dir = test::temp_dir("formats_json");
  std::string path = write_file(dir, "data00.json",
                                R"([{"story": "First\r\nstory.\n", "instruction": {"words": ["a", "b"]}, "source": "GPT-4"},
                                    {"summary": "x", "story": "Second \u00e9 story."}])");
  CHECK(read(path, with(Format::tinystories_json)) == Docs{"First\nstory.", "Second \xC3\xA9 story."});
  std::string bad = write_file(dir, "bad.json", R"([{"story": "ok"}, {"story": "cut)");
  CHECK_THROWS_WITH(read(bad, with(Format::tinystories_json)), Catch::Contains(bad) && Catch::Contains("JSON"));
  std::string missing = write_file(dir, "missing.json", R"([{"story": "ok"}, {"text": "no story"}])");
  CHECK_THROWS_WITH(read(missing, with(Format::tinystories_json)),
                    Catch::Contains(missing) && Catch::Contains("1 of 2 objects"));
  std::string object = write_file(dir, "object.json", R"({"story": "not in an array"})");
  CHECK_THROWS_AS(read(object, with(Format::tinystories_json)), InputError);

  SECTION("every object is checked on its own") {
    std::string twice = write_file(dir, "twice.json", R"([{"story": "a", "story": "b"}])");
    CHECK_THROWS_WITH(read(twice, with(Format::tinystories_json)),
                      Catch::Contains(twice) && Catch::Contains("object 1") && Catch::Contains("\"story\" twice"));
    // A duplicate must not make up for the object without a story.
    std::string mixed = write_file(dir, "mixed.json", R"([{"story": "a"}, {"x": 1}, {"story": "b", "story": "c"}])");
    CHECK_THROWS_WITH(read(mixed, with(Format::tinystories_json)), Catch::Contains("object 3"));
    std::string gap = write_file(dir, "gap.json", R"([{"story": "a"}, {"x": {"story": "nested"}}, {"story": 5}])");
    CHECK_THROWS_WITH(read(gap, with(Format::tinystories_json)),
                      Catch::Contains("2 of 3 objects") && Catch::Contains("the first: object 2"));
    // An element that is not an object is no story: named, not skipped.
    std::string scalar = write_file(dir, "scalar.json", R"([{"story": "a"}, 5, "s", null])");
    CHECK_THROWS_WITH(read(scalar, with(Format::tinystories_json)),
                      Catch::Contains(scalar + ": element 2 of the array is a number, not an object with a "
                                               "\"story\" string"));
    std::string nested = write_file(dir, "nested.json", R"([[{"story": "a"}]])");
    CHECK_THROWS_WITH(read(nested, with(Format::tinystories_json)),
                      Catch::Contains(nested + ": element 1 of the array is an array"));
  }
  SECTION("invalid UTF-8: an error naming the flag, or replaced before the parser reads it") {
    std::string invalid = write_file(dir, "bad_utf8.json", "[{\"story\": \"Once \xFF upon\"}]");
    CHECK_THROWS_WITH(read(invalid, with(Format::tinystories_json)),
                      Catch::Contains(invalid + ": invalid UTF-8 at byte 18") &&
                          Catch::Contains("--replace-invalid-utf8"));
    FormatOptions o = with(Format::tinystories_json);
    o.replace_invalid_utf8 = true;
    CHECK(read(invalid, o) == Docs{"Once \xEF\xBF\xBD upon"});
    // A character cut by the 1 MiB read block is whole again, not invalid; a bad byte after it is
    // replaced.
    std::string filler((1 << 20) - 13, 'x');  // "\xC3" ends the block
    std::string cut = write_file(dir, "cut.json", "[{\"story\": \"" + filler + "\xC3\xA9 \xC3( end\"}]");
    CHECK(read(cut, o) == Docs{filler + "\xC3\xA9 \xEF\xBF\xBD( end"});
    CHECK_THROWS_WITH(read(cut, with(Format::tinystories_json)), Catch::Contains(format("byte {}", (1 << 20) + 3)));
    // A sequence cut by the end of the file is invalid (no more bytes can complete it): an error,
    // not a wait for bytes that never come (a reader that waited would loop: hence the child
    // process and its time limit).
    std::string cut_at_end = write_file(dir, "cut_at_end.json", "[{\"story\": \"a\"}]\xC3");
    const test::ChildOutcome child = test::run_in_child(30, [&] { read(cut_at_end, with(Format::tinystories_json)); });
    INFO(child.summary());
    CHECK(child.threw);
    CHECK_THAT(child.error, Catch::Contains(cut_at_end + ": invalid UTF-8 at byte 17"));
  }
}

TEST_CASE("WikiText: articles start at top-level ' = Title = ' headings", "[data]") {
  std::string dir = test::temp_dir("formats_wikitext");
  std::string path = write_file(dir, "wiki.test.raw",
                                " \n = Robert Boulter = \n \n Robert is an actor . \n \n = = Career = = \n \n"
                                " He acted . \n \n = Du Fu = \n \n Du Fu was a poet with L \n = 1 henry = \n"
                                " and more . \n \n = Last = \n");
  CHECK(read(path, with(Format::wikitext)) ==
        Docs{" = Robert Boulter = \n \n Robert is an actor . \n \n = = Career = = \n \n He acted . ",
             " = Du Fu = \n \n Du Fu was a poet with L \n = 1 henry = \n and more . ", " = Last = "});
  // A title-shaped line with a blank line above but text right below is not a title either.
  std::string wrapped = write_file(dir, "wrapped.raw",
                                   " = Ohm = \n \n The unit is \n \n = 1 volt per ampere = \n and so on . \n");
  CHECK(read(wrapped, with(Format::wikitext)) ==
        Docs{" = Ohm = \n \n The unit is \n \n = 1 volt per ampere = \n and so on . "});
  // Two title-shaped lines in a row: neither stands between blank lines (the first has the second
  // below it, the second the first above it), so neither starts an article.
  std::string stacked = write_file(dir, "stacked.raw", " = A = \n = B = \n \n Text . \n");
  CHECK(read(stacked, with(Format::wikitext)) == Docs{" = A = \n = B = \n \n Text . "});
  // A lopsided heading (" = B = = ") is not a top-level title: it does not start an article.
  std::string lopsided = write_file(dir, "lopsided.raw", " = A = \n \n A text . \n \n = B = = \n \n B text . \n");
  CHECK(read(lopsided, with(Format::wikitext)) == Docs{" = A = \n \n A text . \n \n = B = = \n \n B text . "});
}

TEST_CASE("WikiExtractor: <doc> ... </doc>, with errors naming file and line", "[data]") {
  std::string dir = test::temp_dir("formats_wikiextractor");
  std::string path = write_file(dir, "wiki_00",
                                "<doc id=\"1\" url=\"?curid=1\" title=\"A\">\nA\n\nA is a thing.\nMore.\n\n</doc>\n"
                                "<doc id=\"2\" url=\"?curid=2\" title=\"Empty\">\n\n</doc>\n"
                                "<doc id=\"3\" url=\"?curid=3\" title=\"B\">\nB\n\nB text.\n</doc>\n");
  CHECK(read(path, with(Format::wikiextractor)) == Docs{"A\n\nA is a thing.\nMore.", "B\n\nB text."});
  std::string open = write_file(dir, "wiki_01", "<doc id=\"1\" title=\"A\">\nA\n");
  CHECK_THROWS_WITH(read(open, with(Format::wikiextractor)), Catch::Contains(open) && Catch::Contains("never closed"));
  std::string nested = write_file(dir, "wiki_02", "<doc id=\"1\">\nA\n<doc id=\"2\">\n</doc>\n");
  CHECK_THROWS_WITH(read(nested, with(Format::wikiextractor)), Catch::Contains(nested + ":3"));
  std::string outside = write_file(dir, "wiki_03", "stray text\n");
  CHECK_THROWS_WITH(read(outside, with(Format::wikiextractor)), Catch::Contains(outside + ":1"));
}

TEST_CASE("plain text: one document per file, or split on a separator line", "[data]") {
  std::string dir = test::temp_dir("formats_text");
  std::string path = write_file(dir, "a.txt", "\n\nTitle\n\nBody line.\r\nEnd.\r\n---\nSecond.\rLast line no newline");
  CHECK(read(path, with(Format::text)) ==
        Docs{"Title\n\nBody line.\nEnd.\n---\nSecond.\nLast line no newline"});
  FormatOptions o = with(Format::text);
  o.separator = "---";
  CHECK(read(path, o) == Docs{"Title\n\nBody line.\nEnd.", "Second.\nLast line no newline"});
  std::string empty = write_file(dir, "empty.txt", "\n \n");
  CHECK(read(empty, with(Format::text)).empty());
}

TEST_CASE("a lone CR at the end of the file ends the line like any other", "[data]") {
  std::string dir = test::temp_dir("formats_final_cr");
  CHECK(read(write_file(dir, "a.txt", "a\rb\r"), with(Format::text)) == Docs{"a\nb"});
  CHECK(read(write_file(dir, "cr.txt", "\r"), with(Format::text)).empty());
  CHECK(read(write_file(dir, "crcr.txt", "x\r\r"), with(Format::text)) == Docs{"x"});
  CHECK(read(write_file(dir, "wiki_00", "<doc id=\"1\">\rT\r</doc>\r"), with(Format::wikiextractor)) == Docs{"T"});
  // The same at the end of a full read block (1 MiB), where the reader must look past the block.
  std::string block((1 << 20) - 1, 'y');
  CHECK(read(write_file(dir, "block.txt", block + "\r"), with(Format::text)) == Docs{block});
}

// A UTF-8 byte-order mark opening a file is not text in any format: without it being dropped,
// text kept U+FEFF as three byte tokens and WikiExtractor refused its first <doc> line.
TEST_CASE("a byte-order mark opening a file is dropped in every format", "[data]") {
  std::string dir = test::temp_dir("formats_bom");
  const std::string bom = "\xEF\xBB\xBF";
  CHECK(read(write_file(dir, "a.txt", bom + "Hello world\r\nsecond line\r\n"), with(Format::text)) ==
        Docs{"Hello world\nsecond line"});
  CHECK(read(write_file(dir, "wiki_00", bom + "<doc id=\"1\" url=\"u\" title=\"T\">\nT\nBody text.\n</doc>\n"),
             with(Format::wikiextractor)) == Docs{"T\nBody text."});
  CHECK(read(write_file(dir, "a.jsonl", bom + "{\"text\": \"one\"}\n"), with(Format::jsonl)) == Docs{"one"});
  // Only the file's first bytes: a U+FEFF inside the text (a zero-width no-break space) stays.
  CHECK(read(write_file(dir, "inner.txt", "a\n" + bom + "b\n"), with(Format::text)) == Docs{"a\n" + bom + "b"});
}

TEST_CASE("JSONL: a chosen string field per line", "[data]") {
  std::string dir = test::temp_dir("formats_jsonl");
  std::string path = write_file(dir, "a.jsonl", "{\"text\": \"one\\r\\ntwo\", \"id\": 1}\n\n{\"text\": \"three\"}\n");
  CHECK(read(path, with(Format::jsonl)) == Docs{"one\ntwo", "three"});
  FormatOptions o = with(Format::jsonl);
  o.field = "body";
  CHECK_THROWS_WITH(read(path, o), Catch::Contains(path + ":1") && Catch::Contains("body"));
  std::string bad = write_file(dir, "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \n");
  CHECK_THROWS_WITH(read(bad, with(Format::jsonl)), Catch::Contains(bad + ":2"));
  std::string num = write_file(dir, "num.jsonl", "{\"text\": 5}\n");
  CHECK_THROWS_WITH(read(num, with(Format::jsonl)), Catch::Contains("not a string"));
  // The field given twice in one object is refused; the same key inside a nested object is not it.
  std::string twice = write_file(dir, "twice.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\", \"text\": \"c\"}\n");
  CHECK_THROWS_WITH(read(twice, with(Format::jsonl)),
                    Catch::Contains(twice + ":2: the field \"text\" appears 2 times in the object"));
  std::string nested = write_file(dir, "nested.jsonl", "{\"meta\": {\"text\": \"x\"}, \"text\": \"d\"}\n");
  CHECK(read(nested, with(Format::jsonl)) == Docs{"d"});
}

// Whitespace is Unicode's too (core/utf8's is_white_space, the pre-tokeniser's class): a document
// of no-break and ideographic spaces is none, and lines of them are blank lines.
TEST_CASE("a line or document of Unicode white space is blank", "[data]") {
  std::string dir = test::temp_dir("formats_unicode_space");
  std::string jsonl = write_file(dir, "a.jsonl", "{\"text\": \"\\u00a0\\u3000\"}\n{\"text\": \"one\"}\n");
  CHECK(read(jsonl, with(Format::jsonl)) == Docs{"one"});
  // Text: trailing lines of U+00A0 / U+2028 dropped, an inner one kept verbatim; a NEL line too.
  std::string text = write_file(dir, "a.txt", "\u00a0\nfirst\n\u3000\nsecond\n\u00a0 \n\u2028\n\u0085\n");
  CHECK(read(text, with(Format::text)) == Docs{"first\n\u3000\nsecond"});
  // TinyStories v2: a story of white space only is no story.
  std::string v2 = write_file(dir, "v2.txt", "A story.\n<|endoftext|>\n\u00a0\n<|endoftext|>\nB story.\n");
  CHECK(read(v2, with(Format::tinystories_v2)) == Docs{"A story.", "B story."});
}

TEST_CASE("invalid UTF-8 is an error naming file and line, or replaced on request", "[data]") {
  std::string dir = test::temp_dir("formats_utf8");
  std::string path = write_file(dir, "bad.txt", "fine \xC3\xA9\nbroken \xC3(\n");
  CHECK_THROWS_WITH(read(path, with(Format::text)), Catch::Contains(path + ":2") && Catch::Contains("UTF-8"));
  FormatOptions o = with(Format::text);
  o.replace_invalid_utf8 = true;
  CHECK(read(path, o) == Docs{"fine \xC3\xA9\nbroken \xEF\xBF\xBD("});
  CHECK(find_invalid_utf8("ok \xE2\x82\xAC \xF0\x9F\x98\x80") == std::string::npos);
  CHECK(find_invalid_utf8("\xC0\xAF") == 0);           // overlong '/'
  CHECK(find_invalid_utf8("ab\xED\xA0\x80") == 2);     // surrogate
  CHECK(find_invalid_utf8("\xF4\x90\x80\x80") == 0);   // above U+10FFFF
  CHECK(find_invalid_utf8("x\xE2\x82") == 1);          // cut sequence
  CHECK_THROWS_WITH(read(dir + "/missing.txt", with(Format::text)), Catch::Contains(dir + "/missing.txt"));
}

TEST_CASE("long lines and blocks: the reader is not limited by its buffer", "[data]") {
  std::string dir = test::temp_dir("formats_long");
  std::string long_line(3 << 20, 'x');
  std::string text = long_line + "\r\n" + "second\r";
  text += std::string((1 << 20) - text.size() % (1 << 20) - 1, 'y') + "\r\nlast";  // a CRLF across the read block
  std::string path = write_file(dir, "long.txt", text);
  auto docs = read(path, with(Format::text));
  REQUIRE(docs.size() == 1);
  CHECK(docs[0].find('\r') == std::string::npos);
  CHECK(docs[0].substr(docs[0].size() - 5) == "\nlast");
  CHECK(std::count(docs[0].begin(), docs[0].end(), '\n') == 3);
}

TEST_CASE("a read that fails is an Error naming the file, not bad input", "[data]") {
  // Reading /proc/self/mem at offset 0 (never mapped) fails with EIO.
  for (Format f : {Format::text, Format::tinystories, Format::tinystories_json}) {
    INFO(format_name(f));
    require_machine_error([&] { read("/proc/self/mem", with(f)); }, "/proc/self/mem");
  }
}

TEST_CASE("a set stop flag ends reading with Interrupted", "[data]") {
  std::string dir = test::temp_dir("formats_stop");
  std::string text = write_file(dir, "a.txt", "Some text.\n");
  std::string json = write_file(dir, "a.json", R"([{"story": "A story."}])");
  std::atomic<int> stop{0};
  FormatOptions o = with(Format::text);
  o.stop = &stop;
  CHECK(read(text, o) == Docs{"Some text."});
  stop = SIGINT;
  CHECK_THROWS_AS(read(text, o), Interrupted);
  o.format = Format::tinystories_json;
  CHECK_THROWS_WITH(read(json, o), Catch::Contains("interrupted (SIGINT)"));
}

TEST_CASE("format and boundary names are validated", "[data]") {
  CHECK(parse_format("wikiextractor") == Format::wikiextractor);
  CHECK(parse_format("tinystories-json") == Format::tinystories_json);
  CHECK_THROWS_WITH(parse_format("csv"), Catch::Contains("csv") && Catch::Contains("tinystories-v2"));
  CHECK(parse_story_boundary("line") == StoryBoundary::line);
  CHECK_THROWS_AS(parse_story_boundary("para"), InputError);
}
