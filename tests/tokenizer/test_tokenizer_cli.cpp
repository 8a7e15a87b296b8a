// The `tokenizer` CLI end to end: train -> encode (text and binary) -> decode round trip, stats,
// and the user errors (exit code 2 with a message naming the file and line).
#include "common/catch.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/test_common.hpp"
#include "core/run_directory.hpp"
#include "tokenizer/tokenizer.hpp"

namespace test = gpt2cc::test;

namespace {

struct Result {
  int code;
  std::string out, err;
};

// The exit code of a shell command (-1: it did not exit, e.g. killed by a signal).
int shell(const std::string& command) {
  int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs `tokenizer <args>` through the shell, capturing stdout and stderr into files in dir.
Result cli(const std::string& dir, const std::string& args) {
  int code = shell(std::string("'") + GPT2CC_TOKENIZER_CLI + "' " + args + " > '" + dir + "/out.txt' 2> '" + dir +
                   "/err.txt'");
  return {code, test::read_bytes(dir + "/out.txt"), test::read_bytes(dir + "/err.txt")};
}

}  // namespace

TEST_CASE("tokenizer CLI: train, encode, decode and stats end to end", "[tokenizer][cli]") {
  std::string dir = test::temp_dir("tokenizer_cli");
  std::string corpus;
  for (int i = 0; i < 300; ++i)
    corpus += "Once upon a time, story number " + std::to_string(i) + " began. It's café time!<|endoftext|>\n";
  std::ofstream(dir + "/corpus.txt", std::ios::binary) << corpus;

  Result r = cli(dir, "train --out '" + dir + "/tok' --vocab-size 320 '" + dir + "/corpus.txt'");
  INFO(r.err);
  REQUIRE(r.code == 0);
  // stderr is a file here: progress as whole lines (no carriage returns), the last at all merges.
  CHECK(r.err.find('\r') == std::string::npos);
  CHECK_THAT(r.err, Catch::Contains("train: 63 / 63 merges\n"));
  gpt2cc::Tokenizer tok = gpt2cc::Tokenizer::load(dir + "/tok");
  CHECK(tok.vocab_size() == 320);
  CHECK(tok.eot_id() == 0);

  for (const char* fmt : {"text", "u16", "u32"}) {
    INFO("format " << fmt);
    r = cli(dir, std::string("encode --tokenizer '") + dir + "/tok' --format " + fmt + " --input '" + dir +
                     "/corpus.txt' --output '" + dir + "/ids.bin'");
    REQUIRE(r.code == 0);
    r = cli(dir, std::string("decode --tokenizer '") + dir + "/tok' --format " + fmt + " --input '" + dir + "/ids.bin'");
    REQUIRE(r.code == 0);
    CHECK(r.out == corpus);
  }
  std::string ids_text = test::read_bytes(dir + "/ids.bin");  // u32 from the last round
  CHECK(ids_text.size() == 4 * tok.encode(corpus).size());

  r = cli(dir, "encode --tokenizer '" + dir + "/tok' --input '" + dir + "/corpus.txt'");
  std::vector<int> expected = tok.encode(corpus);
  std::ostringstream want;
  for (size_t i = 0; i < expected.size(); ++i) want << (i ? " " : "") << expected[i];
  CHECK(r.out == want.str() + "\n");

  r = cli(dir, "stats --tokenizer '" + dir + "/tok' '" + dir + "/corpus.txt'");
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains(std::to_string(corpus.size()) + " bytes, " + std::to_string(expected.size()) + " tokens"));

  // A comma belongs to the value it is in: a file named with one, a special token holding one.
  std::filesystem::copy_file(dir + "/corpus.txt", dir + "/a,b.txt");
  r = cli(dir, "stats --tokenizer '" + dir + "/tok' '" + dir + "/a,b.txt'");
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out,
             Catch::Contains(std::to_string(corpus.size()) + " bytes, " + std::to_string(expected.size()) + " tokens"));
  r = cli(dir, "train --out '" + dir + "/tok_comma' --vocab-size 300 --special '<|a,b|>' '" + dir + "/a,b.txt'");
  REQUIRE(r.code == 0);
  const gpt2cc::Tokenizer comma = gpt2cc::Tokenizer::load(dir + "/tok_comma");
  CHECK(comma.special_id("<|a,b|>") == 0);
  CHECK_FALSE(comma.special_id("<|a").has_value());

  // GPT-2's files, from stdin, with and without special-token recognition.
  std::string gpt2 = test::data_dir() + "/gpt2";
  if (test::data_dir().empty()) FAIL("shared data directory not found (set GPT2CC_DATA_DIR)");
  std::ofstream(dir + "/hello.txt") << "Hello world<|endoftext|>";
  r = cli(dir, "encode --tokenizer '" + gpt2 + "' < '" + dir + "/hello.txt'");
  CHECK(r.out == "15496 995 50256\n");
  r = cli(dir, "encode --no-special --tokenizer '" + gpt2 + "' < '" + dir + "/hello.txt'");
  CHECK(r.out.find("50256") == std::string::npos);
}

TEST_CASE("tokenizer CLI: user errors exit 2 naming the problem", "[tokenizer][cli]") {
  std::string dir = test::temp_dir("tokenizer_cli_errors");
  std::string gpt2 = test::data_dir() + "/gpt2";
  Result r = cli(dir, "frobnicate");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown command"));
  r = cli(dir, "encode --input /dev/null");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--tokenizer is required"));
  r = cli(dir, "encode --tokenizer '" + gpt2 + "' --format u8 --input /dev/null");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--format must be"));
  r = cli(dir, "encode --tokenizer '" + gpt2 + "' --format u16 --threads 0 --input /dev/null");
  CHECK(r.code == 2);
  r = cli(dir, "encode --tokenizer '" + gpt2 + "' --input '" + dir + "/missing.txt'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("missing.txt"));
  r = cli(dir, "train --out '" + dir + "/t' --vocab-size 10 /dev/null");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("vocab size"));
  r = cli(dir, "train --vocab-size 300 /dev/null");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--out"));
  // Nothing to train on: an error naming the file, and no vocabulary written.
  r = cli(dir, "train --out '" + dir + "/t' --vocab-size 300 /dev/null");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("no text to train on: /dev/null holds none"));
  CHECK_FALSE(std::filesystem::exists(dir + "/t"));
  // --out a regular file (or below one): refused before any training.
  std::ofstream(dir + "/words.txt") << "hello hello world world\n";
  std::ofstream(dir + "/a_file") << "x";
  for (const std::string& out : {dir + "/a_file", dir + "/a_file/sub"}) {
    r = cli(dir, "train --out '" + out + "' --vocab-size 300 '" + dir + "/words.txt'");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("--out " + out) && Catch::Contains("a_file") &&
                          Catch::Contains("is not a directory"));
    CHECK_THAT(r.err, !Catch::Contains("merges"));  // no training started
  }
  // --out holding GPT-2's encoder.json (or vocab.bpe), which a reader would take before the new
  // vocab.json + merges.txt: refused before any training, nothing written.
  for (const char* name : {"encoder.json", "vocab.bpe"}) {
    const std::string held = dir + "/held_" + name;
    std::filesystem::create_directories(held);
    std::ofstream(held + "/" + name) << "{}";
    r = cli(dir, "train --out '" + held + "' --vocab-size 300 '" + dir + "/words.txt'");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("--out " + held + " holds GPT-2's " + name + ", which a reader of the directory "
                                      "takes before the vocab.json + merges.txt written here: choose another --out"));
    CHECK_FALSE(std::filesystem::exists(held + "/vocab.json"));
  }
  // --out empty, or a directory that cannot be created: refused before any training too.
  for (const auto& [out, says] : {std::pair<std::string, std::string>{"", "--out is empty"},
                                  {"/proc/no_such_dir", "--out /proc/no_such_dir: cannot create it"}}) {
    r = cli(dir, "train --out '" + out + "' --vocab-size 300 '" + dir + "/words.txt'");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains(says) && !Catch::Contains("train: "));  // no training started
  }
  // --out another tokenizer train holds while it saves (its lock, taken here): refused before this
  // one writes anything.
  {
    const std::string busy = dir + "/busy_out";
    std::filesystem::create_directories(busy);
    r = [&] {
      const gpt2cc::RunDirectoryLock lock(busy, gpt2cc::DirectoryOwner{"output directory", "--out"});
      return cli(dir, "train --out '" + busy + "' --vocab-size 300 '" + dir + "/words.txt'");
    }();
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("output directory " + busy + " is in use by another "));
    CHECK(std::filesystem::is_empty(busy));
  }
  // A link as --out to nothing (dangling, or a loop): refused, and left as it was (a check that
  // took it for a level to create removed it again).
  std::filesystem::create_symlink("nothere", dir + "/dangling_out");
  std::filesystem::create_symlink("loop_b", dir + "/loop_a");
  std::filesystem::create_symlink("loop_a", dir + "/loop_b");
  for (const std::string& link : {dir + "/dangling_out", dir + "/loop_a"}) {
    r = cli(dir, "train --out '" + link + "' --vocab-size 300 '" + dir + "/words.txt'");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("--out " + link + " is a symbolic link to no directory"));
    CHECK(std::filesystem::is_symlink(link));
  }
  // --threads above kMaxThreads (core/backend.hpp): refused naming the flag and its range, by every
  // command that takes it (3000 threads failed with "Resource temporarily unavailable").
  for (const std::string& command : {"encode --tokenizer '" + gpt2 + "' --input /dev/null",
                                     "stats --tokenizer '" + gpt2 + "' /dev/null",
                                     "train --out '" + dir + "/t' '" + dir + "/words.txt'"}) {
    INFO(command);
    r = cli(dir, command + " --threads 3000");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("--threads must be from 1 to 1024, got 3000"));
  }

  std::ofstream(dir + "/odd.bin", std::ios::binary) << "abc";
  r = cli(dir, "decode --tokenizer '" + gpt2 + "' --format u16 --input '" + dir + "/odd.bin'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("truncated"));
  std::ofstream(dir + "/ids.txt") << "15496 995\n1 99999\n";
  r = cli(dir, "decode --tokenizer '" + gpt2 + "' --input '" + dir + "/ids.txt'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("ids.txt:2") && Catch::Contains("99999"));
  // A word that is not an id is quoted escaped and cut short: a NUL does not end the message, an
  // escape sequence does not reach the terminal.
  std::ofstream(dir + "/odd_words.txt", std::ios::binary) << std::string("15496\0" "995\n", 10);
  r = cli(dir, "decode --tokenizer '" + gpt2 + "' --input '" + dir + "/odd_words.txt'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("odd_words.txt:1: \"15496\\x00995\" is not a token id"));
  std::ofstream(dir + "/odd_words.txt", std::ios::binary) << "\x1b[31m" << std::string(100, 'x') << "\n";
  r = cli(dir, "decode --tokenizer '" + gpt2 + "' --input '" + dir + "/odd_words.txt'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("\"\\x1b[31m" + std::string(27, 'x') + "\"... (105 bytes) is not a token id"));
  CHECK(r.err.find('\x1b') == std::string::npos);
  // One line of 1.2M ids (encode --format text writes one line) decodes in pieces to the whole
  // text; a word that never ends is refused at 64 KiB, not held.
  {
    std::ofstream many(dir + "/many_ids.txt");
    for (int i = 0; i < 600000; ++i) many << "15496 995 ";  // "Hello world"
  }
  r = cli(dir, "decode --tokenizer '" + gpt2 + "' --input '" + dir + "/many_ids.txt'");
  CHECK(r.code == 0);
  std::string hello;
  for (int i = 0; i < 600000; ++i) hello += "Hello world";
  const bool whole_text = r.out == hello;  // (Catch would print both 6.6 MB strings)
  CHECK(whole_text);
  r = cli(dir, "decode --tokenizer '" + gpt2 + "' --input /dev/zero");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("/dev/zero:1: a word of more than 65536 bytes is not a token id: \"\\x00"));
  // Leading zeros, however many, are the id's; more than 9 digits after them is out of range.
  std::ofstream(dir + "/zeros.txt") << "0000000015496 00995 000\n99999999999";
  r = cli(dir, "decode --tokenizer '" + gpt2 + "' --input '" + dir + "/zeros.txt'");
  CHECK(r.code == 2);
  CHECK(r.out == "Hello world!");  // (the line break is a separator, as a space)
  CHECK_THAT(r.err, Catch::Contains("zeros.txt:2: token id 99999999999 is out of range [0, 50257)"));
  // An unsigned 32-bit id is reported as such: 0xFFFFFFFF is 4294967295, not -1.
  std::ofstream(dir + "/ids.u32", std::ios::binary) << "\xff\xff\xff\xff";
  r = cli(dir, "decode --tokenizer '" + gpt2 + "' --format u32 --input '" + dir + "/ids.u32'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("token id 4294967295 is out of range [0, 50257)"));

  // A malformed merges file: the error names file and line.
  std::string bad = dir + "/badtok";
  r = cli(dir, "train --out '" + bad + "' --vocab-size 300 --special '' '" + dir + "/ids.txt'");
  REQUIRE(r.code == 0);
  std::string merges = test::read_bytes(bad + "/merges.txt");
  std::ofstream(bad + "/merges.txt", std::ios::binary) << merges << "this line is bad\n";
  r = cli(dir, "encode --tokenizer '" + bad + "' --input /dev/null");
  CHECK(r.code == 2);
  size_t lines = size_t(std::count(merges.begin(), merges.end(), '\n'));
  CHECK_THAT(r.err, Catch::Contains("merges.txt:" + std::to_string(lines + 1)));

  // GPT-2's vocabulary with a merges file cut short: refused, not encoded with "special" tokens.
  std::string cut = dir + "/cut";
  std::filesystem::create_directories(cut);
  std::filesystem::copy_file(gpt2 + "/encoder.json", cut + "/encoder.json");
  std::string all_merges = test::read_bytes(gpt2 + "/vocab.bpe");
  size_t at = 0;
  for (int n = 0; n < 25000; ++n) at = all_merges.find('\n', at) + 1;
  std::ofstream(cut + "/vocab.bpe", std::ios::binary) << all_merges.substr(0, at);
  std::ofstream(dir + "/test.txt") << "Hello world, this is a test\n";
  r = cli(dir, "encode --tokenizer '" + cut + "' --input '" + dir + "/test.txt'");
  CHECK(r.code == 2);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Catch::Contains(cut + "/vocab.bpe: 24945 of the 50257 tokens") && Catch::Contains("no merge"));
}

TEST_CASE("tokenizer CLI: directories, failed reads and writes; no FILE.tmp left behind", "[tokenizer][cli]") {
  std::string dir = test::temp_dir("tokenizer_cli_io");
  std::string gpt2 = test::data_dir() + "/gpt2";
  if (test::data_dir().empty()) FAIL("shared data directory not found (set GPT2CC_DATA_DIR)");
  const std::string sub = dir + "/sub";
  std::filesystem::create_directories(sub);

  // A directory given as an input file: bad input, named.
  for (const std::string& command : {"encode --input '" + sub + "'", "decode --input '" + sub + "'",
                                     "stats '" + sub + "'", "encode --output '" + sub + "' --input /dev/null"}) {
    INFO(command);
    Result r = cli(dir, command + " --tokenizer '" + gpt2 + "'");
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains(sub + " is a directory"));
  }
  // An --output in a folder that is not there: the user's path to mend (exit 2, named as given),
  // not a failed write of its temporary file (exit 1, naming the .tmp).
  for (const std::string& output : {dir + "/missing/x.txt", dir + "/result.txt/x.txt"}) {
    INFO(output);
    std::ofstream(dir + "/result.txt") << "a file";
    Result r = cli(dir, "encode --output '" + output + "' --input /dev/null --tokenizer '" + gpt2 + "'");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("output " + output + ": its folder") && !Catch::Contains(".tmp"));
  }
  std::filesystem::remove(dir + "/result.txt");
  // No command: the usage, on stderr (a mistake), exit 2.
  {
    Result r = cli(dir, "");
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains("give a command") && Catch::Contains("usage: tokenizer <command>"));
  }
  // A read that fails once the file is open (EIO: address 0 of /proc/self/mem is not mapped).
  for (const char* command : {"encode --input /proc/self/mem", "decode --input /proc/self/mem",
                              "decode --format u16 --input /proc/self/mem", "stats /proc/self/mem"}) {
    INFO(command);
    Result r = cli(dir, std::string(command) + " --tokenizer '" + gpt2 + "'");
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::Contains("reading /proc/self/mem failed"));
  }
  // The same for train's FILES: a directory is bad input (2), a failed read an I/O error (1).
  {
    Result r = cli(dir, "train --out '" + dir + "/vocab' '" + sub + "'");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("training file " + sub + " is a directory"));
    r = cli(dir, "train --out '" + dir + "/vocab' /proc/self/mem");
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::Contains("reading training file /proc/self/mem failed"));
  }

  // A bad id on line 2 of decode's input: exit 2; the output keeps its old text, no .tmp is left.
  const std::string out = dir + "/result.txt";  // not out.txt, which cli() writes
  std::ofstream(out) << "old";
  std::ofstream(dir + "/ids.txt") << "15496 995\n1 99999\n";
  Result r = cli(dir, "decode --tokenizer '" + gpt2 + "' --input '" + dir + "/ids.txt' --output '" + out + "'");
  CHECK(r.code == 2);
  CHECK(test::read_bytes(out) == "old");
  CHECK_FALSE(std::filesystem::exists(out + ".tmp"));

  // A full disk (a 4 KiB file size limit: the tokenizer ignores SIGXFSZ, run_cli, so that write()
  // fails with EFBIG): an I/O error, exit 1 naming the file; the output is unchanged, no .tmp is left.
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "Line " + std::to_string(i) + " of a text that does not fit in 4 KiB.\n";
  std::ofstream(dir + "/big.txt") << text;
  const std::string encode = std::string("'") + GPT2CC_TOKENIZER_CLI + "' encode --tokenizer '" + gpt2 + "' --input '" +
                             dir + "/big.txt'";
  for (const char* fmt : {"text", "u32"}) {
    INFO("format " << fmt);
    const std::string limited =
        "ulimit -f 8; exec " + encode + " --format " + fmt + " --output '" + out + "'";
    CHECK(shell("sh -c \"" + limited + "\" 2> '" + dir + "/err.txt'") == 1);
    CHECK_THAT(test::read_bytes(dir + "/err.txt"), Catch::Contains("writing " + out + " failed (disk full?)"));
    CHECK(test::read_bytes(out) == "old");
    CHECK_FALSE(std::filesystem::exists(out + ".tmp"));
  }
  // Standard output that cannot be written.
  CHECK(shell(encode + " > /dev/full 2> '" + dir + "/err.txt'") == 1);
  CHECK_THAT(test::read_bytes(dir + "/err.txt"), Catch::Contains("writing standard output failed"));
  const std::string stats = std::string("'") + GPT2CC_TOKENIZER_CLI + "' stats --tokenizer '" + gpt2 + "' '" + dir +
                            "/big.txt'";
  CHECK(shell(stats + " > /dev/full 2> '" + dir + "/err.txt'") == 1);
  CHECK_THAT(test::read_bytes(dir + "/err.txt"), Catch::Contains("writing standard output failed"));

  // --output through a link: the file behind it gets the text, the link stays; into a FIFO: the
  // text goes through it (a reader beside), and it stays a FIFO, as /dev/null would stay a device.
  const std::string file = dir + "/behind.txt", link = dir + "/link.txt", fifo = dir + "/fifo";
  std::ofstream(dir + "/hello.txt") << "Hello world";
  const std::string hello = "encode --tokenizer '" + gpt2 + "' --input '" + dir + "/hello.txt' --output ";
  std::ofstream(file) << "old";
  std::filesystem::create_symlink(file, link);
  CHECK(cli(dir, hello + "'" + link + "'").code == 0);
  CHECK(std::filesystem::is_symlink(link));
  CHECK(test::read_bytes(file) == "15496 995\n");
  REQUIRE(shell("mkfifo '" + fifo + "'") == 0);
  // The reader under `timeout`: a CLI that failed before opening the FIFO would leave it blocked.
  CHECK(shell("timeout 60 cat '" + fifo + "' > '" + dir + "/drained.txt' & '" + GPT2CC_TOKENIZER_CLI + "' " + hello +
              "'" + fifo + "'; status=$?; wait; exit $status") == 0);
  CHECK(std::filesystem::is_fifo(fifo));
  CHECK(test::read_bytes(dir + "/drained.txt") == "15496 995\n");
  CHECK(cli(dir, hello + "''").code == 2);

  // An --output whose temporary (FILE.tmp) is the input, by its name or through a link: refused
  // before it is opened (truncated, it would be read empty and then removed), the input intact.
  std::ofstream(dir + "/ids.tmp") << "Hello world";
  std::filesystem::create_symlink(dir + "/ids.tmp", dir + "/alias.txt");
  for (const std::string& input : {dir + "/ids.tmp", dir + "/alias.txt"}) {
    for (const char* command : {"encode", "decode"}) {
      INFO(command << " " << input);
      Result clobber = cli(dir, std::string(command) + " --tokenizer '" + gpt2 + "' --input '" + input +
                                    "' --output '" + dir + "/ids'");
      CHECK(clobber.code == 2);
      CHECK_THAT(clobber.err, Catch::Contains("output " + dir + "/ids is written to " + dir + "/ids.tmp first, which "
                                              "is the input " + input + ": choose another --output"));
      CHECK(test::read_bytes(dir + "/ids.tmp") == "Hello world");
      CHECK_FALSE(std::filesystem::exists(dir + "/ids"));
    }
  }
}

TEST_CASE("bench_tokenizer refuses --mb out of (0, 1e6], --threads past 1024, a directory and no text",
          "[tokenizer][cli]") {
  std::string dir = test::temp_dir("bench_tokenizer_flags");
  std::string gpt2 = test::data_dir() + "/gpt2";
  if (test::data_dir().empty()) FAIL("shared data directory not found (set GPT2CC_DATA_DIR)");
  std::ofstream(dir + "/text.txt") << "Hello world, this is a test.\n";
  std::ofstream(dir + "/empty.txt");
  const std::string bench = std::string("'") + GPT2CC_BENCH_TOKENIZER + "' --tokenizer '" + gpt2 + "' --reps 1 ";
  const auto run = [&](const std::string& args) {
    return Result{shell(bench + args + " > '" + dir + "/out.txt' 2> '" + dir + "/err.txt'"),
                  test::read_bytes(dir + "/out.txt"), test::read_bytes(dir + "/err.txt")};
  };
  for (const char* mb : {"0", "-1", "-0.5", "1e7"}) {
    INFO("--mb " << mb);
    Result r = run(std::string("--mb ") + mb + " '" + dir + "/text.txt'");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("--mb must be in (0, 1e6]"));
  }
  Result r = run("'" + dir + "'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains(dir + " is a directory"));
  r = run("'" + dir + "/empty.txt'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("no text"));
  r = run("--threads 20000 '" + dir + "/text.txt'");  // every program's bound on --threads
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--threads must be from 1 to 1024, got 20000"));
  r = run("--mb 0.001 '" + dir + "/text.txt'");
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("\"bytes\": 29,"));
}

// --output naming the process's own standard output: written into the stream the shell set up,
// after what came before and before what follows (following /dev/stdout's link to the file and
// renaming over it lost "earlier" and "after").
TEST_CASE("tokenizer CLI: --output /dev/stdout writes into the shell's redirection", "[tokenizer][cli]") {
  const std::string dir = test::temp_dir("tokenizer_cli_stdout");
  const std::string gpt2 = test::data_dir() + "/gpt2";
  std::ofstream(dir + "/in.txt") << "hello world\n";
  for (const char* name : {"/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"}) {
    INFO(name);
    const std::string log = dir + "/log.txt";
    REQUIRE(shell("{ echo earlier; '" + std::string(GPT2CC_TOKENIZER_CLI) + "' encode --tokenizer '" + gpt2 +
                  "' --input '" + dir + "/in.txt' --output " + name + "; echo after; } > '" + log + "'") == 0);
    CHECK(test::read_bytes(log) == "earlier\n31373 995 198\nafter\n");
  }
}

TEST_CASE("tokenizer CLI: SIGINT and SIGTERM remove FILE.tmp", "[tokenizer][cli]") {
  std::string dir = test::temp_dir("tokenizer_cli_signal");
  std::string gpt2 = test::data_dir() + "/gpt2";
  if (test::data_dir().empty()) FAIL("shared data directory not found (set GPT2CC_DATA_DIR)");
  const std::string cli_path = std::string("'") + GPT2CC_TOKENIZER_CLI + "'";
  const std::string out = dir + "/ids.txt";
  // encode reading a stdin that stays open (`sleep |`): the signal comes once out.tmp exists.
  const std::string encode = cli_path + " encode --tokenizer '" + gpt2 + "' --output '" + out + "'";
  const std::string killed = "kill -TERM $pid; { wait $pid; } 2> /dev/null; [ $? = 143 ]";  // 128 + 15: by SIGTERM
  const std::string wait_for_tmp = "for i in $(seq 200); do [ -e '" + out + ".tmp' ] && break; sleep 0.05; done; ";
  CHECK(shell("sleep 3 | " + encode + " & pid=$!; " + wait_for_tmp + "[ -e '" + out + ".tmp' ] || exit 3; " +
              killed) == 0);
  CHECK_FALSE(std::filesystem::exists(out + ".tmp"));
  // SIGINT (Ctrl-C) from timeout: a background job (&) would ignore it. 2 s leaves time to load.
  CHECK(shell("sleep 4 | timeout -s INT 2 " + encode) == 124);
  CHECK_FALSE(std::filesystem::exists(out + ".tmp"));
  CHECK_FALSE(std::filesystem::exists(out));

  // train: vocab.json.tmp made a FIFO, so that saving blocks opening it; a signal then removes it.
  std::ofstream(dir + "/words.txt") << "hello hello world world\n";
  const std::string vocab = dir + "/vocab";
  std::filesystem::create_directories(vocab);
  REQUIRE(shell("mkfifo '" + vocab + "/vocab.json.tmp'") == 0);
  const std::string train =
      cli_path + " train --out '" + vocab + "' --vocab-size 300 '" + dir + "/words.txt' 2> '" + dir + "/err.txt'";
  // Saving has begun when the process waits in the FIFO's open.
  CHECK(shell(train + " & pid=$!; " + test::shell_wait_in_fifo_open() + killed) == 0);
  CHECK_FALSE(std::filesystem::exists(vocab + "/vocab.json.tmp"));
  CHECK_FALSE(std::filesystem::exists(vocab + "/vocab.json"));
}
