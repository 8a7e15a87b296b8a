// Metrics log and progress helpers: durations for the ETA, and the log's rewrite on resume
// (records after the checkpoint's step and a torn last line are dropped, the rest kept as is).

#include "common/catch.hpp"
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "common/test_common.hpp"
#include "core/metrics.hpp"

using namespace gpt2cc;

namespace {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizerReservesAddressSpace = true;
#elif defined(__has_feature)
constexpr bool kSanitizerReservesAddressSpace = __has_feature(address_sanitizer) || __has_feature(thread_sanitizer);
#else
constexpr bool kSanitizerReservesAddressSpace = false;
#endif
}  // namespace

TEST_CASE("durations read as h/m/s", "[metrics]") {
  CHECK(format_duration(0) == "0s");
  CHECK(format_duration(12.4) == "12s");
  CHECK(format_duration(185) == "3m05s");
  CHECK(format_duration(3725) == "1h02m");
  CHECK(format_duration(std::nan("")) == "?");
  CHECK(format_duration(-1) == "?");
}

TEST_CASE("the metrics log keeps the records up to the resumed step", "[metrics]") {
  std::string dir = test::temp_dir("metrics_log");
  std::string path = dir + "/metrics.jsonl";
  {
    MetricsLog log(path, -1);
    for (int step = 1; step <= 5; ++step) log.write({{"step", step}, {"train_loss", 10.0 - step}});
  }
  // Lines this log did not write: steps that are not whole numbers >= 0, a record without one, a
  // value that is not a record, and a line torn by a crash. Each is dropped, none stops a resume.
  std::ofstream(path, std::ios::app) << "{\"step\": \"3\"}\n{\"step\": null}\n{\"step\": 2.5}\n{\"step\": -1}\n"
                                        "{\"step\": 1e300}\n{\"loss\": 1}\n[1]\n7\n{\"step\": 6, \"train_l";
  {
    MetricsLog resumed(path, 3);  // the checkpoint was at step 3
    resumed.write({{"step", 4}, {"train_loss", 42.0}});
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  REQUIRE(records.size() == 4);
  CHECK(records[0]["step"] == 1);
  CHECK(records[2]["step"] == 3);
  CHECK(records[2]["train_loss"].get<double>() == 7.0);
  CHECK(records[3]["step"] == 4);
  CHECK(records[3]["train_loss"].get<double>() == 42.0);

  MetricsLog fresh(path, -1);  // a new run starts an empty log
  fresh.write({{"step", 1}});
  std::ifstream again(path);
  size_t lines = 0;
  for (std::string line; std::getline(again, line);) ++lines;
  CHECK(lines == 1);
}

TEST_CASE("samples.txt keeps the sections up to the resumed step; a new run starts without it", "[metrics]") {
  const std::string path = test::temp_dir("samples_log") + "/samples.txt";
  // Sections after step 4, one of them numbered past 64 bits, and a sample line that only looks
  // like a section line.
  const std::string text =
      "=== step 2 ===\nOnce upon\n=== step 4 ===\na time\n=== step 4x ===\n\n=== step 6 ===\nthere was\n"
      "=== step 99999999999999999999999 ===\na king\n";
  std::ofstream(path) << text;
  keep_samples_through_step(path, 4);  // resumed from step 4: step 6 is written again
  std::ifstream in(path);
  const std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(kept == "=== step 2 ===\nOnce upon\n=== step 4 ===\na time\n=== step 4x ===\n\n");
  keep_samples_through_step(path, -1);  // a new run
  CHECK_FALSE(std::filesystem::exists(path));
  keep_samples_through_step(path, 3);  // nothing there: nothing to do
  CHECK_FALSE(std::filesystem::exists(path));
  std::filesystem::create_directory(path);  // a directory in its place: the resume fails naming it
  CHECK_THROWS_WITH(keep_samples_through_step(path, 3), Catch::Contains(path) && Catch::Contains("Is a directory"));
}

TEST_CASE("a resume leaves a metrics log or samples file that is not a regular file unread", "[metrics]") {
  // Links to /dev/zero, which has no end: read line by line to keep the records, it would take
  // memory until none is left (getline then ends quietly, the stream marked bad). In a child with
  // 2 GiB more address space than it starts with and 30 s, so that such a read shows in the
  // child's peak RSS (or a SIGALRM) rather than taking the machine's memory. An address or
  // thread sanitizer reserves terabytes of address space up front: no limit can bound it there.
  if (kSanitizerReservesAddressSpace) {
    WARN("skipped under an address or thread sanitizer: RLIMIT_AS cannot bound the child there");
    return;
  }
  namespace fs = std::filesystem;
  const std::string dir = test::temp_dir("metrics_device");
  const std::string metrics = dir + "/metrics.jsonl", samples = dir + "/samples.txt";
  fs::create_symlink("/dev/zero", metrics);
  fs::create_symlink("/dev/zero", samples);
  const test::ChildOutcome child = test::run_in_child(
      30,
      [&] {
        MetricsLog resumed(metrics, 3);
        resumed.write({{"step", 4}});
        keep_samples_through_step(samples, 3);
      },
      size_t(2) << 30);
  INFO(child.summary());
  CHECK(child.returned);
  CHECK(child.peak_rss_kib < 256 * 1024);  // KiB: a test process's own size, not a read of /dev/zero
  CHECK(fs::is_symlink(metrics));  // not replaced by a regular file
  CHECK(fs::is_symlink(samples));
}
