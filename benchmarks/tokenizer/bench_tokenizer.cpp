// Tokenizer throughput: pre-tokenisation alone, encode on 1 and N threads, decode, in MB/s of
// input text (MB = 1e6 bytes), wall clock, median of --reps runs after one warm-up run (so the
// pre-token cache is warm, as in a long data-preparation job; the first, cold run is shown too),
// and the 1-thread encode also per CPU-second of the encoding thread.
// Validates before timing: the threaded encode equals the 1-thread one, decode(encode(x)) == x.
//   bench_tokenizer --tokenizer ../shared/data/gpt2 --mb 8 --threads 2 FILES...
// Prints a table and one JSON line (benchmarks/tokenizer/compare.py reads it).
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "benchmarks/bench_cli.hpp"
#include "core/backend.hpp"  // check_thread_count
#include "core/check.hpp"
#include "core/cli.hpp"
#include "tokenizer/pretokenizer.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace gpt2cc;

namespace {

// CPU time of the calling thread: on a shared, oversubscribed machine the single-thread figure
// per CPU-second is steadier than wall time.
double thread_cpu() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <class F>
double median_seconds(int reps, F&& f) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    double t0 = now();
    f();
    t.push_back(now() - t0);
  }
  return bench::median(t);
}

int run(int argc, char** argv) {
  cxxopts::Options options("bench_tokenizer", "Tokenizer encode/decode throughput");
  // clang-format off
  options.add_options()
    ("tokenizer", "tokenizer directory", cxxopts::value<std::string>())
    ("mb", "MB of text to take from the files (in order, whole files then a cut at a line end), in (0, 1e6]",
     cxxopts::value<double>()->default_value("8"))
    ("threads", "thread count for the threaded encode, 1 to 1024", cxxopts::value<int>()->default_value("2"))
    ("reps", "timed repetitions (median reported)", cxxopts::value<int>()->default_value("3"))
    ("files", "text files", cxxopts::value<std::vector<std::string>>())
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"files"});
  options.positional_help("FILES...");
  auto args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n";
    return 0;
  }
  INPUT_CHECK(args.count("tokenizer") && args.count("files"), "--tokenizer and FILES are required (see --help)");
  // Checked as a double: size_t of a negative or huge one is undefined (--mb -1 was taken).
  const double mb_wanted = args["mb"].as<double>();
  INPUT_CHECK(mb_wanted > 0 && mb_wanted <= 1e6, "--mb must be in (0, 1e6], got {}", mb_wanted);
  const size_t want = size_t(mb_wanted * 1e6);
  const int threads = args["threads"].as<int>(), reps = args["reps"].as<int>();
  check_thread_count(threads, "--threads", 1);
  INPUT_CHECK(reps >= 1, "--reps must be >= 1, got {}", reps);
  // Every file is checked before any is read: one past the --mb that the text already holds would
  // otherwise never be opened, and a misspelt name pass unsaid.
  const std::vector<std::string> files = args["files"].as<std::vector<std::string>>();
  for (const std::string& f : files) {
    INPUT_CHECK(!std::filesystem::is_directory(f), "{} is a directory, not a text file", f);
    INPUT_CHECK(std::ifstream(f, std::ios::binary).good(), "cannot open {}", f);
  }
  std::string text;
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    INPUT_CHECK(in.good(), "cannot open {}", f);
    std::ostringstream ss;
    ss << in.rdbuf();
    text += ss.str();
    if (text.size() >= want) break;
  }
  if (text.size() > want) text.resize(text.find('\n', want) == std::string::npos ? text.size() : text.find('\n', want) + 1);
  INPUT_CHECK(!text.empty(), "the files hold no text to time");
  const double mb = double(text.size()) / 1e6;

  double t0 = now();
  Tokenizer tok = Tokenizer::load(args["tokenizer"].as<std::string>());
  const double load_s = now() - t0;

  t0 = now();
  std::vector<int> ids = tok.encode(text);
  const double cold_s = now() - t0;
  ENSURE(tok.encode_parallel(text, true, threads) == ids, "threaded encode differs from 1-thread encode");
  ENSURE(tok.decode(ids) == text, "decode(encode(text)) differs from text");

  std::vector<tok::Piece> pieces;
  const double pre_s = median_seconds(reps, [&] {
    pieces.clear();
    tok::pretokenize(text, pieces);
  });
  const double enc1_s = median_seconds(reps, [&] { ids = tok.encode(text); });
  double c0 = thread_cpu();
  ids = tok.encode(text);
  const double enc1_cpu_s = thread_cpu() - c0;
  const double encn_s = median_seconds(reps, [&] { ids = tok.encode_parallel(text, true, threads); });
  std::string back;
  const double dec_s = median_seconds(reps, [&] { back = tok.decode(ids); });

  std::cout << std::fixed << std::setprecision(1);
  std::cout << "text: " << mb << " MB, " << ids.size() << " tokens; tokenizer load " << load_s << " s\n"
            << "pre-tokenise only      " << mb / pre_s << " MB/s\n"
            << "encode 1 thread (cold) " << mb / cold_s << " MB/s\n"
            << "encode 1 thread        " << mb / enc1_s << " MB/s (" << mb / enc1_cpu_s << " MB per CPU-second)\n"
            << "encode " << threads << " threads       " << mb / encn_s << " MB/s\n"
            << "decode                 " << mb / dec_s << " MB/s\n";
  std::cout << std::setprecision(3) << "{\"bytes\": " << text.size() << ", \"tokens\": " << ids.size()
            << ", \"load_s\": " << load_s << ", \"pretokenize_mbs\": " << mb / pre_s
            << ", \"encode_cold_mbs\": " << mb / cold_s << ", \"encode_1t_mbs\": " << mb / enc1_s << ", \"encode_1t_cpu_mbs\": " << mb / enc1_cpu_s
            << ", \"encode_threads\": " << threads << ", \"encode_nt_mbs\": " << mb / encn_s
            << ", \"decode_mbs\": " << mb / dec_s << "}\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return gpt2cc::run_cli("bench_tokenizer", argc, argv, run); }
