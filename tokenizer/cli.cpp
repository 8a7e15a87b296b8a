// tokenizer: train a byte-level BPE vocabulary, encode / decode text, count tokens (docs/tokenizer.md).
//   tokenizer train  --out DIR [--vocab-size 32000] [--special "<|endoftext|>"] FILES...
//   tokenizer encode --tokenizer DIR [--input FILE] [--output FILE] [--format text|u16|u32]
//   tokenizer decode --tokenizer DIR [--input FILE] [--output FILE] [--format text|u16|u32]
//   tokenizer stats  --tokenizer DIR [FILES...]
// Input "-" (the default) is stdin, output "-" stdout. Exit codes (core/cli.hpp): 0 ok, 2 bad flags
// or input, 1 an I/O failure (a failed read or write, disk full) or an internal error.
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/dataloader.hpp"
#include "core/run_directory.hpp"
#include "core/signal_cleanup.hpp"
#include "core/stopwatch.hpp"
#include "core/tokenizer_files.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/trainer.hpp"
#include "tokenizer/vocab_io.hpp"

using namespace gpt2cc;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "usage: tokenizer <command> [options]\n"
    "commands:\n"
    "  train   learn a BPE vocabulary from text files, save vocab.json + merges.txt\n"
    "  encode  text -> token ids (as text, or binary uint16 / uint32)\n"
    "  decode  token ids -> text\n"
    "  stats   bytes, tokens and tokens per byte of files\n"
    "`tokenizer <command> --help` lists a command's options.\n";

enum class IdFormat { text, u16, u32 };

IdFormat parse_id_format(const std::string& s) {
  if (s == "text") return IdFormat::text;
  if (s == "u16") return IdFormat::u16;
  if (s == "u32") return IdFormat::u32;
  fail_input(format("--format must be text, u16 or u32, got \"{}\"", s));
}

// An input stream for a path or "-" (stdin). A path that is missing or a directory is bad input
// (exit 2); a read that fails once the file is open (an I/O error) is exit 1, naming the file.
struct Input {
  std::string name;  // the path, or "stdin", for messages
  std::unique_ptr<std::ifstream> file;
  std::istream* in = &std::cin;
  explicit Input(const std::string& path) : name(path == "-" ? "stdin" : path) {
    if (path == "-") return;
    std::error_code ec;
    INPUT_CHECK(!fs::is_directory(path, ec), "input {} is a directory, not a file", path);
    file = std::make_unique<std::ifstream>(path, std::ios::binary);
    INPUT_CHECK(file->good(), "cannot open input file {}: {}", path, std::strerror(errno));
    in = file.get();
  }
  // After reading: a stream that went bad (not merely at its end) lost data.
  void check_read() const {
    if (in->bad()) throw Error(format("reading {} failed (an I/O error)", name));
  }
};

// Tokenizer::encode_stream over an Input, a failed read named with the file (the stream is all
// encode_stream knows).
uint64_t encode_input(const Tokenizer& tok, Input& in, bool allow_special, int threads,
                      const std::function<void(std::span<const int>)>& sink) {
  try {
    return tok.encode_stream(*in.in, allow_special, threads, sink);
  } catch (const Error& e) {
    if (!in.in->bad()) throw;
    throw Error(format("reading {} failed: {}", in.name, e.what()));
  }
}

// An output to a path or "-" (stdout). A path is written to path.tmp, renamed over it by
// commit(); a command that fails before that (bad input, a failed write) removes path.tmp and
// leaves path as it was. A link is followed to its file, and a device or FIFO (/dev/null) is
// written in place (resolve_write_target, core/atomic_file.hpp). A failed write (disk full) is an
// I/O error: exit 1, naming the file. A signal removes path.tmp too (core/signal_cleanup.hpp).
// `input`: the command's input path ("-": stdin), which path.tmp must not be (opening it would
// truncate what is about to be read).
struct Output {
  std::string path, tmp;  // tmp empty: written in place
  WriteTarget target;
  std::optional<TemporaryFile> on_signal;  // tmp, while it exists
  std::unique_ptr<std::ofstream> file;
  std::ostream* out = &std::cout;
  Output(std::string p, const std::string& input) : path(std::move(p)) {
    if (path == "-") return;
    INPUT_CHECK(!path.empty(), "--output is empty: give a file, or - for stdout");
    std::error_code ec;
    INPUT_CHECK(!fs::is_directory(path, ec), "output {} is a directory, not a file", path);
    target = resolve_write_target(path);
    if (target.descriptor >= 0) {  // /dev/stdout, /dev/stderr: the stream itself, as "-"
      out = target.descriptor == 1 ? &std::cout : &std::cerr;
      return;
    }
    // A folder that is not there is the user's path to mend (exit 2), not a failed write; one that
    // cannot be looked at (no permission) is left to the open, which names the cause.
    const fs::path folder = fs::path(target.path).parent_path();
    const fs::file_type type = folder.empty() ? fs::file_type::directory : fs::status(folder, ec).type();
    INPUT_CHECK(type != fs::file_type::not_found, "output {}: its folder {} does not exist", path, folder.string());
    INPUT_CHECK(type == fs::file_type::directory || type == fs::file_type::none || type == fs::file_type::unknown,
                "output {}: its folder {} is not a folder", path, folder.string());
    if (!target.in_place) {
      tmp = target.path + ".tmp";
      INPUT_CHECK(input == "-" || !fs::equivalent(input, tmp, ec),
                  "output {} is written to {} first, which is the input {}: choose another --output", path, tmp,
                  input);
      on_signal.emplace(tmp);
    }
    const std::string& opened = target.in_place ? target.path : tmp;
    file = std::make_unique<std::ofstream>(opened, std::ios::binary | std::ios::trunc);
    if (!file->good()) {
      const std::string why = std::strerror(errno);
      file.reset();
      on_signal.reset();
      throw Error(format("cannot write {}: {}", opened, why));
    }
    out = file.get();
  }
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;
  ~Output() {
    if (!file) return;  // stdout, or committed
    file.reset();
    if (!tmp.empty()) std::remove(tmp.c_str());
    on_signal.reset();
  }
  // Throws once a write has failed; called after each block, so a full disk stops the command.
  void check() const {
    if (out->good()) return;
    if (!file) {
      flush_standard_output();  // throws, naming the cause where it knows it
      throw Error("writing standard output failed");
    }
    if (tmp.empty()) throw Error(format("writing {} failed", path));
    throw Error(format("writing {} failed (disk full?); {} is unchanged", path, path));
  }
  void commit() {
    out->flush();
    check();
    if (!file) return;
    file->close();
    check();  // a close that failed to write the last of it
    if (!tmp.empty() && std::rename(tmp.c_str(), target.path.c_str()) != 0)
      throw Error(format("cannot rename {} to {}: {}", tmp, target.path, std::strerror(errno)));
    file.reset();
    on_signal.reset();
  }
};

cxxopts::ParseResult parse(cxxopts::Options& options, int argc, char** argv) {
  auto args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n";
    std::exit(0);
  }
  return args;
}

// train --out DIR, checked before training, so that a DIR that cannot be written fails at once,
// not after the whole training: DIR, or the first of its parents that exists, must be a
// directory, DIR must be creatable, and a file must be creatable in it (a probe, removed at once).
// What the check created is removed again: a training that then fails leaves no empty DIR.
void check_output_dir(const std::string& dir) {
  INPUT_CHECK(!dir.empty(), "--out is empty: give the directory for vocab.json + merges.txt");
  std::error_code ec;
  fs::path p = dir;  // DIR, or the first of its parents that is there (a link, even dangling, is)
  while (!p.empty() && !fs::exists(fs::symlink_status(p, ec))) p = p.parent_path();
  const bool dir_missing = p != fs::path(dir);
  if (!p.empty() && !fs::is_directory(p, ec)) {
    INPUT_CHECK(p != fs::path(dir), "--out {} {}", dir,
                fs::is_symlink(fs::symlink_status(p, ec)) ? "is a symbolic link to no directory (dangling, or a loop)"
                                                           : "exists and is not a directory");
    fail_input(format("--out {}: {} is not a directory", dir, p.string()));
  }
  std::error_code failure;
  const std::vector<fs::path> made = make_directories(dir, failure);  // core/run_directory.hpp
  if (!failure) {
    std::string probe = (fs::path(dir) / ".tokenizer-write-check-XXXXXX").string();
    const int fd = ::mkstemp(probe.data());
    if (fd < 0) failure = std::error_code(errno, std::generic_category());
    if (fd >= 0) {
      ::close(fd);
      ::unlink(probe.c_str());
    }
  }
  for (const fs::path& created : made) fs::remove(created, ec);
  if (failure) {  // the path's fault exits 2, the machine's 1, as for every output folder
    const std::string what = format("--out {}: cannot {}: {}", dir, dir_missing ? "create it" : "write files in it",
                                    failure.message());
    if (folder_error_is_input(failure)) fail_input(what);
    throw Error(what);
  }
  // The vocab.json + merges.txt written here would sit beside GPT-2's pair, which a reader of the
  // directory takes first (core/tokenizer_files.hpp): the new tokenizer would never be used.
  const TokenizerFilePair& openai = kTokenizerFilePairs[0];
  for (const char* name : {openai.vocab, openai.merges})
    INPUT_CHECK(!fs::exists(fs::path(dir) / name, ec),
                "--out {} holds {}'s {}, which a reader of the directory takes before the vocab.json + "
                "merges.txt written here: choose another --out",
                dir, openai.origin, name);
}

// --threads: 1 to kMaxThreads (core/backend.hpp); more would fail to start, or crash.
int threads_flag(const cxxopts::ParseResult& args) {
  const int threads = args["threads"].as<int>();
  check_thread_count(threads, "--threads", 1);
  return threads;
}

std::string required(const cxxopts::ParseResult& args, const char* name) {
  INPUT_CHECK(args.count(name), "--{} is required (see --help)", name);
  return args[name].as<std::string>();
}

int cmd_train(int argc, char** argv) {
  cxxopts::Options options("tokenizer train", "Learn a byte-level BPE vocabulary from text files");
  // clang-format off
  options.add_options()
    ("out", "output directory for vocab.json + merges.txt", cxxopts::value<std::string>())
    ("vocab-size", "final vocabulary size, specials and 256 bytes included", cxxopts::value<int>()->default_value("32000"))
    ("special", "a special token (repeat the flag; default <|endoftext|>; \"\" for none)",
     cxxopts::value<std::vector<std::string>>())
    ("min-frequency", "stop when the best pair occurs fewer times, >= 1", cxxopts::value<uint64_t>()->default_value("2"))
    ("threads", "threads for counting, 1 to 1024", cxxopts::value<int>()->default_value("2"))
    ("files", "training text files", cxxopts::value<std::vector<std::string>>())
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"files"});
  options.positional_help("FILES...");
  auto args = parse(options, argc, argv);
  TrainerConfig cfg;
  cfg.vocab_size = args["vocab-size"].as<int>();
  cfg.min_frequency = args["min-frequency"].as<uint64_t>();
  cfg.threads = threads_flag(args);
  if (args.count("special")) {
    cfg.special_tokens.clear();
    for (const std::string& s : values_as_typed(args, "special"))
      if (!s.empty()) cfg.special_tokens.push_back(s);
  }
  std::string out = required(args, "out");
  check_output_dir(out);
  INPUT_CHECK(args.count("files"), "no training files given (tokenizer train --out DIR FILES...)");
  BpeTrainer trainer(cfg);
  const Stopwatch clock;
  for (const std::string& f : values_as_typed(args, "files")) trainer.add_file(f);
  TrainStats stats;
  // On a terminal one line redrawn; in a log a line at every tenth of the merges.
  const bool terminal = isatty(STDERR_FILENO);
  int logged_tenths = -1;
  Tokenizer tok = trainer.train(nullptr, &stats, [&](int done, int wanted) {
    if (terminal) {
      std::cerr << "\rtrain: " << done << " / " << wanted << " merges" << std::flush;
    } else if (const int tenths = wanted > 0 ? int(int64_t(done) * 10 / wanted) : 10; tenths > logged_tenths) {
      logged_tenths = tenths;
      std::cerr << "train: " << done << " / " << wanted << " merges\n";
    }
  });
  if (terminal) std::cerr << "\n";
  if (tok.vocab_size() < cfg.vocab_size)
    std::cerr << "train: stopped at vocab size " << tok.vocab_size() << " < --vocab-size " << cfg.vocab_size
              << ": no pair left occurs --min-frequency " << cfg.min_frequency << " times\n";
  // Another tokenizer train saving into DIR at the same time would write its files between this
  // one's (its vocab.json beside this one's merges.txt): refused while this one holds DIR, made
  // here (removed again if the save fails; a signal before it leaves no folder).
  RunDirectoryLock lock(out, DirectoryOwner{"output directory", "--out"});
  tok.save(out);  // write_file_atomic: a signal meanwhile removes its temporaries
  lock.keep();
  std::cerr << std::fixed << std::setprecision(2) << "train: " << stats.bytes << " bytes, " << stats.pretokens
            << " pre-tokens (" << stats.unique_pretokens << " unique); counting " << stats.count_seconds
            << " s, merging " << stats.merge_seconds << " s, total " << clock.seconds() << " s\n"
            << "train: wrote " << out << "/vocab.json + merges.txt + tokenizer_config.json: vocab size "
            << tok.vocab_size() << ", fingerprint " << fingerprint_hex(tok.fingerprint()) << "\n";
  return 0;
}

// A word of the input, quoted for a message: printable ASCII as it is (with \" and \\), any
// other byte as \xNN (a NUL does not cut the message, an escape sequence does not reach the
// terminal), and at most 32 bytes of it: "15496\x00995", "123456789012345678901234567890ab"...
std::string quote_for_message(std::string_view word) {
  constexpr size_t kShown = 32;
  std::string out = "\"";
  for (size_t i = 0; i < word.size() && i < kShown; ++i) {
    const auto c = uint8_t(word[i]);
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c >= 0x20 && c < 0x7F) {
      out.push_back(char(c));
    } else {
      out += "\\x" + hex_byte(c);
    }
  }
  out.push_back('"');
  if (word.size() > kShown) out += format("... ({} bytes)", word.size());
  return out;
}

void write_ids(std::ostream& out, std::span<const int> ids, IdFormat fmt, bool& first) {
  if (fmt == IdFormat::text) {
    std::string s;
    for (int id : ids) {
      if (!first) s.push_back(' ');
      s += std::to_string(id);
      first = false;
    }
    out << s;
  } else if (fmt == IdFormat::u16) {
    std::vector<uint16_t> v(ids.begin(), ids.end());
    out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * 2));
  } else {
    std::vector<uint32_t> v(ids.begin(), ids.end());
    out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * 4));
  }
}

int cmd_encode(int argc, char** argv) {
  cxxopts::Options options("tokenizer encode", "Encode text into token ids");
  // clang-format off
  options.add_options()
    ("tokenizer", "tokenizer directory (encoder.json + vocab.bpe or vocab.json + merges.txt)", cxxopts::value<std::string>())
    ("input", "input text file, - for stdin", cxxopts::value<std::string>()->default_value("-"))
    ("output", "output file, - for stdout", cxxopts::value<std::string>()->default_value("-"))
    ("format", "ids as text (space separated), u16 or u32 (little-endian binary)", cxxopts::value<std::string>()->default_value("text"))
    ("no-special", "treat special-token text such as <|endoftext|> as plain text")
    ("threads", "encoding threads, 1 to 1024", cxxopts::value<int>()->default_value("1"))
    ("h,help", "show this help");
  // clang-format on
  auto args = parse(options, argc, argv);
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument \"{}\"", args.unmatched().front());
  Tokenizer tok = Tokenizer::load(required(args, "tokenizer"));
  IdFormat fmt = parse_id_format(args["format"].as<std::string>());
  INPUT_CHECK(fmt != IdFormat::u16 || tok.vocab_size() <= 65536, "--format u16 needs vocab size <= 65536, this one has {}",
              tok.vocab_size());
  const int threads = threads_flag(args);
  Input in(args["input"].as<std::string>());
  Output out(args["output"].as<std::string>(), args["input"].as<std::string>());
  bool first = true;
  encode_input(tok, in, !switch_on(args, "no-special"), threads, [&](std::span<const int> ids) {
    write_ids(*out.out, ids, fmt, first);
    out.check();
  });
  if (fmt == IdFormat::text) *out.out << "\n";
  out.commit();
  return 0;
}

// decode --format text: ids are words between whitespace, read a character at a time and decoded
// a line, or 1M ids, at a time: one line may hold a whole corpus's (encode --format text writes
// one), and a word that never ends (/dev/zero) is refused at 64 KiB, not held. (istream::get: a
// failed read sets badbit, which check_read reports.)
void decode_text_ids(Input& in, int V, const std::function<void(const std::vector<int>&)>& emit) {
  constexpr size_t kIdsAtOnce = size_t(1) << 20, kLongestWord = size_t(1) << 16;
  std::vector<int> ids;
  std::string word;
  int line_no = 1;
  const auto end_word = [&] {
    if (word.empty()) return;
    INPUT_CHECK(word.find_first_not_of("0123456789") == std::string::npos, "{}:{}: {} is not a token id", in.name,
                line_no, quote_for_message(word));
    // Leading zeros are allowed, however many ("000" is 0); past 9 digits an id is out of range.
    const size_t first_digit = std::min(word.find_first_not_of('0'), word.size() - 1);
    const std::string_view digits = std::string_view(word).substr(first_digit);
    int id = 0;
    if (digits.size() <= 9) std::from_chars(digits.data(), digits.data() + digits.size(), id);
    INPUT_CHECK(digits.size() <= 9 && id < V, "{}:{}: token id {} is out of range [0, {})", in.name, line_no, digits,
                V);
    ids.push_back(id);
    word.clear();
  };
  const auto emit_ids = [&] {
    if (ids.empty()) return;
    emit(ids);
    ids.clear();
  };
  for (int c; (c = in.in->get()) != std::char_traits<char>::eof();) {
    if (!std::isspace(c)) {
      INPUT_CHECK(word.size() < kLongestWord, "{}:{}: a word of more than {} bytes is not a token id: {}", in.name,
                  line_no, kLongestWord, quote_for_message(word));
      word.push_back(char(c));
      continue;
    }
    end_word();
    if (c == '\n') {
      emit_ids();
      ++line_no;
    } else if (ids.size() >= kIdsAtOnce) {
      emit_ids();
    }
  }
  end_word();
  emit_ids();
}

// decode --format u16 / u32: little-endian ids of `width` bytes, a million at a time.
void decode_binary_ids(Input& in, size_t width, int V, const std::function<void(const std::vector<int>&)>& emit) {
  std::vector<char> buf(width << 20);
  uint64_t offset = 0;
  for (;;) {
    in.in->read(buf.data(), std::streamsize(buf.size()));
    size_t got = size_t(in.in->gcount());
    if (got == 0) break;
    INPUT_CHECK(got % width == 0, "{}: {} bytes is not a whole number of {}-byte ids (truncated?)", in.name,
                offset + got, width);
    std::vector<int> ids(got / width);
    for (size_t i = 0; i < ids.size(); ++i) {
      uint32_t v = 0;
      std::memcpy(&v, buf.data() + i * width, width);  // little-endian host
      // Checked as read, unsigned: 0xFFFFFFFF is id 4294967295, not -1.
      INPUT_CHECK(v < uint32_t(V), "{} (id at byte {}): token id {} is out of range [0, {})", in.name,
                  offset + i * width, v, V);
      ids[i] = int(v);
    }
    emit(ids);
    offset += got;
  }
}

int cmd_decode(int argc, char** argv) {
  cxxopts::Options options("tokenizer decode", "Decode token ids into text");
  // clang-format off
  options.add_options()
    ("tokenizer", "tokenizer directory", cxxopts::value<std::string>())
    ("input", "input ids, - for stdin", cxxopts::value<std::string>()->default_value("-"))
    ("output", "output file, - for stdout", cxxopts::value<std::string>()->default_value("-"))
    ("format", "ids as text (whitespace separated), u16 or u32", cxxopts::value<std::string>()->default_value("text"))
    ("h,help", "show this help");
  // clang-format on
  auto args = parse(options, argc, argv);
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument \"{}\"", args.unmatched().front());
  Tokenizer tok = Tokenizer::load(required(args, "tokenizer"));
  IdFormat fmt = parse_id_format(args["format"].as<std::string>());
  Input in(args["input"].as<std::string>());
  Output out(args["output"].as<std::string>(), args["input"].as<std::string>());
  auto emit = [&](const std::vector<int>& ids) {
    *out.out << tok.decode(ids);
    out.check();
  };
  const int V = tok.vocab_size();
  if (fmt == IdFormat::text) {
    decode_text_ids(in, V, emit);
  } else {
    decode_binary_ids(in, fmt == IdFormat::u16 ? 2 : 4, V, emit);
  }
  in.check_read();
  out.commit();
  return 0;
}

int cmd_stats(int argc, char** argv) {
  cxxopts::Options options("tokenizer stats", "Bytes, tokens and tokens per byte of files (or stdin)");
  // clang-format off
  options.add_options()
    ("tokenizer", "tokenizer directory", cxxopts::value<std::string>())
    ("no-special", "treat special-token text as plain text")
    ("threads", "encoding threads, 1 to 1024", cxxopts::value<int>()->default_value("1"))
    ("files", "text files (none: stdin)", cxxopts::value<std::vector<std::string>>())
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"files"});
  options.positional_help("[FILES...]");
  auto args = parse(options, argc, argv);
  Tokenizer tok = Tokenizer::load(required(args, "tokenizer"));
  const int threads = threads_flag(args);
  std::vector<std::string> files{"-"};
  if (args.count("files")) files = values_as_typed(args, "files");
  uint64_t total_bytes = 0, total_tokens = 0;
  const Stopwatch clock;
  std::cout << std::fixed;
  for (const auto& f : files) {
    Input in(f);
    uint64_t tokens = 0;
    uint64_t bytes = encode_input(tok, in, !switch_on(args, "no-special"), threads,
                                  [&](std::span<const int> ids) { tokens += ids.size(); });
    std::cout << in.name << ": " << bytes << " bytes, " << tokens << " tokens, " << std::setprecision(4)
              << (bytes ? double(tokens) / double(bytes) : 0.0) << " tokens/byte\n";
    flush_standard_output();
    total_bytes += bytes, total_tokens += tokens;
  }
  const double secs = clock.seconds();
  std::cout << "total: " << total_bytes << " bytes, " << total_tokens << " tokens, " << std::setprecision(4)
            << (total_bytes ? double(total_tokens) / double(total_bytes) : 0.0) << " tokens/byte, "
            << std::setprecision(2) << secs << " s (" << (secs > 0 ? double(total_bytes) / 1e6 / secs : 0.0)
            << " MB/s)\n";
  flush_standard_output();
  return 0;
}

}  // namespace

// tokenizer COMMAND [options]: dispatches to the command's parser (each with its own --help).
int dispatch(int argc, char** argv) {
  remove_temporaries_on_signal();
  if (argc < 2) {  // a mistake: the usage goes where errors go
    std::cerr << "tokenizer: give a command\n" << kUsage;
    return 2;
  }
  if (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return 0;
  }
  std::string cmd = argv[1];
  if (cmd == "train") return cmd_train(argc - 1, argv + 1);
  if (cmd == "encode") return cmd_encode(argc - 1, argv + 1);
  if (cmd == "decode") return cmd_decode(argc - 1, argv + 1);
  if (cmd == "stats") return cmd_stats(argc - 1, argv + 1);
  std::cerr << "tokenizer: unknown command \"" << cmd << "\"\n" << kUsage;
  return 2;
}

int main(int argc, char** argv) { return gpt2cc::run_cli("tokenizer", argc, argv, dispatch); }
