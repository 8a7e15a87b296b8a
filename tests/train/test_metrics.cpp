// Metrics log and progress helpers: durations for the ETA, and the log's rewrite on resume
// (records after the checkpoint's step and a torn last line are dropped, the rest kept as is).
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "common/test_common.hpp"
#include "core/metrics.hpp"

using namespace gpt2cc;

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
}
