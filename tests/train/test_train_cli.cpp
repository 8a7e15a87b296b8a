// The train binary end to end: --help, rejected flags and combinations (exit code 2 with a
// message naming the problem), a tiny run, --resume, and --eval-only with its stated window,
// stride and token count; on --device cuda (fp32, bf16) a stopped and resumed run against an
// uninterrupted one, and (on the emulated device) a batch beyond device memory. The binary is
// found through GPT2CC_BINARY_DIR (set by ctest).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include "common/catch.hpp"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/test_common.hpp"
#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/checkpoint.hpp"
#include "core/config.hpp"
#include "core/device_peaks.hpp"
#include "core/run_directory.hpp"
#include "core/shard.hpp"
#include "core/utf8.hpp"
#include "tokenizer/tokenizer.hpp"
#include "train_fixtures.hpp"

using namespace gpt2cc;

namespace {

struct Run {
  int code = -1;
  std::string output;  // stdout and stderr together
};

std::string train_binary() {
  const char* dir = std::getenv("GPT2CC_BINARY_DIR");
  REQUIRE(dir != nullptr);  // ctest sets it; run the test through ctest
  std::string path = std::string(dir) + "/train";
  REQUIRE(std::filesystem::exists(path));
  return path;
}

Run launch(const std::string& command_line) {
  Run r;
  std::string command = command_line + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  int status = ::pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

Run train(const std::string& args) { return launch(train_binary() + " " + args); }

// A tiny model on the fixture shards; callers append the run-specific flags.
std::string tiny(const std::string& data, int channels = 16, int heads = 2) {
  return "--layers 2 --heads " + std::to_string(heads) + " --channels " + std::to_string(channels) +
         " --max-seq-len 32 --batch-size 4 --seq-len 16 --threads 1 --train-data " + data + "/train.bin ";
}

// The "memory: ..." line of a run's output (what its model holds), or "" where none.
std::string memory_line(const std::string& output) {
  const size_t at = output.find("memory: ");
  return at == std::string::npos ? std::string() : output.substr(at, output.find('\n', at) - at);
}

// The train_loss and val_loss (NaN where none) of each line of a run's metrics.jsonl.
std::vector<std::pair<double, double>> losses(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<std::pair<double, double>> out;
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line);
    out.emplace_back(record.at("train_loss").get<double>(), record.value("val_loss", std::nan("")));
  }
  return out;
}

// Run got_dir's losses equal run want_dir's bit for bit (validation NaN in both where neither
// evaluated), `steps` of them; returns want_dir's.
std::vector<std::pair<double, double>> check_same_losses(const std::string& want_dir, const std::string& got_dir,
                                                         size_t steps) {
  const auto want = losses(want_dir), got = losses(got_dir);
  REQUIRE(want.size() == steps);
  REQUIRE(got.size() == steps);
  for (size_t i = 0; i < steps; ++i) {
    INFO("step " << i + 1);
    CHECK(got[i].first == want[i].first);
    CHECK((got[i].second == want[i].second || (std::isnan(got[i].second) && std::isnan(want[i].second))));
  }
  return want;
}

// `run` (train's flags, with --steps `steps`) once straight through (dir/straight), and once
// stopped at step `stop` and resumed (dir/split): both exit 0; the resumed run says so and shows
// `setting` (its saved configuration's), holds the memory the uninterrupted one held, and repeats
// its losses bit for bit.
struct StopAndResume {
  Run whole, resumed;
  std::vector<std::pair<double, double>> losses;  // the uninterrupted run's
};
StopAndResume check_stop_and_resume(const std::string& run, const std::string& dir, size_t steps, int stop,
                                    const std::string& setting) {
  StopAndResume r;
  r.whole = train(run + "--run-dir " + dir + "/straight");
  INFO(r.whole.output);
  REQUIRE(r.whole.code == 0);
  REQUIRE(train(run + "--stop-at-step " + std::to_string(stop) + " --run-dir " + dir + "/split").code == 0);
  r.resumed = train("--resume " + dir + "/split");
  INFO(r.resumed.output);
  REQUIRE(r.resumed.code == 0);
  CHECK_THAT(r.resumed.output, Catch::Contains("resuming from") && Catch::Contains(setting));
  CHECK_FALSE(memory_line(r.whole.output).empty());
  CHECK(memory_line(r.resumed.output) == memory_line(r.whole.output));
  r.losses = check_same_losses(dir + "/straight", dir + "/split", steps);
  return r;
}

// Run got_dir's train losses within `epsilon` (relative) of run want_dir's, `steps` of them; with
// `validation`, its validation losses too where want_dir has one. Returns how many of the train
// losses are the same bits (for runs that must differ).
size_t check_close_losses(const std::string& want_dir, const std::string& got_dir, size_t steps, double epsilon,
                          bool validation = false) {
  const auto want = losses(want_dir), got = losses(got_dir);
  REQUIRE(want.size() == steps);
  REQUIRE(got.size() == steps);
  size_t same = 0;
  for (size_t i = 0; i < steps; ++i) {
    INFO("step " << i + 1 << ": " << got[i].first << " against " << want[i].first);
    CHECK(got[i].first == Approx(want[i].first).epsilon(epsilon));
    if (validation && !std::isnan(want[i].second)) CHECK(got[i].second == Approx(want[i].second).epsilon(epsilon));
    same += got[i].first == want[i].first;
  }
  return same;
}

std::string file_contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

size_t count_lines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

// What a finished run said of MFU, checked against its run folder. With `peak` (TFLOP/s of one
// GPU): the summary's line naming it, "| MFU" on the progress lines, and in each metrics record
// "mfu" = tokens_per_s * FLOPs per token / (ranks * peak). Without: none of them. Either way
// config.json records the FLOPs per token of the run's model and T.
void check_mfu_report(const Run& run, const std::string& run_dir, std::optional<double> peak, int ranks = 1) {
  INFO(run.output);
  const auto config = nlohmann::json::parse(file_contents(run_dir + "/config.json"));
  const double flops_per_token =
      training_flops_per_token(config.at("model").get<ModelConfig>(), config.at("train").at("seq_len").get<int>());
  CHECK(config.at("derived").at("flops_per_token").get<double>() == flops_per_token);
  const nlohmann::json& recorded_peak = config.at("derived").at("peak_tflops_per_gpu");
  std::ifstream in(run_dir + "/metrics.jsonl");
  size_t records = 0;
  for (std::string line; std::getline(in, line); ++records) {
    const auto record = nlohmann::json::parse(line);
    INFO(line);
    if (!peak) {
      CHECK_FALSE(record.contains("mfu"));
      continue;
    }
    const double expected = record.at("tokens_per_s").get<double>() * flops_per_token / (ranks * *peak * 1e12);
    CHECK(record.at("mfu").get<double>() == Approx(expected).epsilon(1e-12));
  }
  CHECK(records > 0);
  if (peak) {
    CHECK(recorded_peak.get<double>() == *peak);
    CHECK_THAT(run.output, Catch::Contains(format("MFU: {} MFLOP per token (6N + 6*L*C*T)", flops_per_token / 1e6)) &&
                               Catch::Contains(format("peak, {} TFLOP/s", *peak)) && Catch::Contains(" | MFU "));
    if (ranks > 1) CHECK_THAT(run.output, Catch::Contains(format("TFLOP/s per GPU x {} ranks", ranks)));
  } else {
    CHECK(recorded_peak.is_null());
    CHECK_THAT(run.output, !Catch::Contains(" | MFU "));
  }
}

}  // namespace

TEST_CASE("--help lists every flag with its default, and the environment variables train reads", "[cli]") {
  Run r = train("--help");
  CHECK(r.code == 0);
  for (const char* text :
       {"--seq-len", "(default: 128)", "--total-batch", "--warmup-steps", "--resume", "--eval-only", "--eval-stride",
        "--device", "--keep-checkpoints", "(default: cosine)", "--dtype", "(default: fp32)", "--recompute-gelu",
        "--classifier-rows", "(default: 8192)", "--grad-dtype", "(default: auto)",
        "--cuda-graphs", "--zero-stage", "environment:", "GPT2CC_KERNELS", "GPT2CC_REQUIRE_CUBLASLT",
        "OMP_NUM_THREADS", "each rank's under mpiexec", "unset, the ranks on a machine share its cores",
        "tokens per sample (at most --seq-len - 1)"}) {
    CHECK_THAT(r.output, Catch::Contains(text));
  }
}

TEST_CASE("bad flags exit with code 2 and say what is wrong", "[cli]") {
  std::string dir = test::temp_dir("train_cli_flags");
  test::write_tiny_shards(dir);
  const std::string ok = tiny(dir) + "--run-dir " + dir + "/run ";
  const std::string bare = "--train-data " + dir + "/train.bin --run-dir " + dir + "/run --steps 5 ";
  const std::string eval_only = "--eval-only --val-data " + dir + "/val.bin --init-from " + dir + "/x.ckpt ";
  const std::string export_hf = "--export-hf " + dir + "/hfx --init-from " + dir + "/x.ckpt ";
  struct Case {
    std::string args, message;
  };
  std::vector<Case> cases = {
      {"--no-such-flag", "no-such-flag"},
      {ok + "--steps 5 --lr abc", "--lr: 'abc' is not a valid value"},
      {ok + "--steps=-3", "--steps: '-3' is out of range (a whole number from 0 to 18446744073709551615)"},
      {ok + "--steps 30000000000000000000", "--steps: '30000000000000000000' is out of range (a whole number from 0"},
      {ok + "--steps 5 --lr -1", "--lr must be"},
      {ok + "--steps 5 --batch-size 0", "--batch-size must be >= 1"},
      {ok + "--steps 5 --dropout 1", "--dropout must be in [0, 1)"},
      {ok + "--steps 5 --dropout 0.99999999999", "(a float: 0.99999994 at most), got 1"},
      {ok + "--steps 5 --schedule step", "--schedule: unknown learning-rate schedule 'step'"},
      {ok + "--steps 5 --device tpu", "--device must be cpu or cuda"},
      {ok + "--steps 5 --dtype fp16", "--dtype must be fp32 or bf16, got 'fp16'"},
      {ok + "--steps 5 --zero-stage 2", "--zero-stage must be 0 or 1, got 2"},
      {ok + "--steps 5 --classifier-rows -1", "--classifier-rows must be >= 0 (0: all rows at once), got -1"},
      {ok + "--steps 5 --grad-dtype fp16", "--grad-dtype must be auto, bf16 or fp32, got 'fp16'"},
      {ok + "--steps 5 --grad-dtype bf16", "--grad-dtype bf16 needs --dtype bf16"},
      {ok + "--steps 5 stray", "unexpected argument 'stray'"},
      {ok, "exactly one of --steps, --epochs, --tokens"},
      {ok + "--steps 5 --epochs 1", "exactly one of --steps, --epochs, --tokens (2 given)"},
      {ok + "--steps 5 --total-batch 100", "--total-batch (100 tokens) must be a multiple of"},
      // 2^32 micro-batches of 64 tokens: an int would wrap to 0 (a division by zero followed).
      {ok + "--steps 5 --total-batch 274877906944", "--total-batch 274877906944 tokens is 4294967296 micro-batches "
                                                    "of --batch-size x --seq-len = 64 tokens, more than the "
                                                    "2147483647 a step can count"},
      {ok + "--steps 5 --val-data " + dir + "/val.bin --eval-every 10", "--eval-every 10 is longer than the run (5"},
      // Given, the default's value is checked as any other (not given, it is no error: below).
      {ok + "--steps 5 --val-data " + dir + "/val.bin --eval-every 100", "--eval-every 100 is longer than the run"},
      // A length no run can count (AdamW's step is an int), refused before it wraps into a short run.
      {ok + "--steps 2147483647", "--steps 2147483647 is a run of 2.14748e+09 steps of 64 tokens, more than the "
                                  "2147483646 a run can count"},
      {ok + "--tokens 18446744073709551615", "--tokens 18446744073709551615 is a run of 2.8823e+17 steps"},
      {ok + "--epochs 1e30", "--epochs 1e+30 is a run of"},
      {ok + "--steps 5 --warmup-steps 5", "--warmup-steps (5) must be shorter than the run"},
      {ok + "--steps 5 --eval-stride 4", "--eval-stride 4 sets --eval-only's window stride"},
      {tiny(dir + "/missing") + "--steps 5 --run-dir " + dir + "/run", "missing/train.bin"},
      {ok + "--steps 5 --val-data " + dir + "/nope.bin", "nope.bin"},
      {ok + "--steps 5 --tokenizer " + dir + "/no_tokenizer",
       "--tokenizer " + dir + "/no_tokenizer: no such directory"},
      {ok + "--steps 5 --seq-len 64", "--seq-len 64 is longer than the model's maximum sequence length 32"},
      {"--eval-only --val-data " + dir + "/val.bin",
       "--eval-only needs a checkpoint to evaluate: give it with --init-from (or --resume)"},
      {ok + "--steps 5 --resume " + dir + "/no_run", "no_run does not exist"},
      {"--export-hf " + dir + "/hf", "--export-hf needs the checkpoint to export: give it with --init-from"},
      // Every other range check of TrainConfig, each named by its flag.
      {bare + "--layers -1", "--layers must be >= 0"},
      {bare + "--heads -2", "--heads must be >= 0"},
      {bare + "--channels -8", "--channels must be >= 0"},
      {bare + "--max-seq-len -1", "--max-seq-len must be >= 0"},
      {"--eval-only --val-data " + dir + "/val.bin --init-from a.ckpt --resume b",
       "--init-from and --resume cannot be combined"},
      {bare + "--init-from " + dir + "/a.ckpt --resume " + dir + "/no_run",
       "--init-from and --resume cannot be combined"},
      {bare + "--threads -1", "--threads must be from 0 to 1024 (0: OMP_NUM_THREADS, else all cores), got -1"},
      {bare + "--threads 70000", "--threads must be from 0 to 1024 (0: OMP_NUM_THREADS, else all cores), got 70000"},
      {bare + "--lr 3e-4x", "--lr: '3e-4x' is not a number"},
      {"--export-hf '' --init-from " + dir + "/a.ckpt", "--export-hf is empty"},
      {bare + "--tokenizer ''", "--tokenizer is empty"},
      {bare + "--cuda-device -1", "--cuda-device must be >= 0"},
      {bare + "--seq-len 0", "--seq-len must be >= 1"},
      {bare + "--min-lr-ratio 1.5", "--min-lr-ratio must be in [0, 1], got 1.5"},
      {bare + "--beta1 1", "--beta1 must be in [0, 1), got 1"},
      {bare + "--beta2 -0.5", "--beta2 must be in [0, 1), got -0.5"},
      {bare + "--eps 0", "--eps must be > 0"},
      {bare + "--weight-decay -1", "--weight-decay must be >= 0"},
      // In range as doubles, not as the floats AdamW takes.
      {bare + "--beta1 0.99999999", "--beta1 0.99999999 is 1 as the float AdamW computes with"},
      {bare + "--eps 1e-50", "--eps 1e-50 is 0 as the float AdamW computes with"},
      {bare + "--lr 1e39", "--lr 1e+39 is inf as the float AdamW computes with"},
      {bare + "--grad-clip 0x5", "--grad-clip: '0x5' is not a number"},
      {bare + "--grad-clip -1", "--grad-clip must be >= 0"},
      {"--train-data " + dir + "/train.bin --run-dir " + dir + "/run --epochs -1", "--epochs must be > 0"},
      {"--run-dir " + dir + "/run --steps 5", "--train-data is required"},
      {"--eval-only --init-from " + dir + "/x.ckpt", "--eval-only needs --val-data"},
      {bare + "--eval-batches -1", "--eval-batches must be >= 0"},
      {eval_only + "--seq-len 16 --eval-stride 17", "--eval-stride must be in 1..--seq-len = 16"},
      // The flags only training reads do nothing on --eval-only and --export-hf: refused by name.
      {eval_only + "--eval-batches 3",
       "--eval-batches has no effect on --eval-only, which scores a checkpoint on --val-data: drop it"},
      {eval_only + "--steps 5 --tokenizer t", "has no effect on --eval-only"},
      {eval_only + "--dtype bf16 --grad-dtype fp32", "--grad-dtype has no effect on --eval-only"},
      {export_hf + "--lr 0.1", "--lr has no effect on --export-hf, which writes a checkpoint's weights out: drop it"},
      // Said so, not sent first to a training check asking for another flag they would ignore too.
      {eval_only + "--sample-every 2", "--sample-every has no effect on --eval-only"},
      {export_hf + "--eval-stride 4", "--eval-stride has no effect on --export-hf"},
      {eval_only + "--grad-dtype bf16", "--grad-dtype has no effect on --eval-only"},
      {"--train-data " + dir + "/train.bin --steps 5 --run-dir=", "--run-dir must not be empty"},
      {bare + "--keep-checkpoints 0", "--keep-checkpoints must be >= 1"},
      {bare + "--log-every 0", "--log-every must be >= 1"},
      {bare + "--max-bad-steps 0", "--max-bad-steps must be >= 1"},
      {bare + "--sample-every 2", "--sample-every needs --tokenizer"},
      {bare + "--sample-tokens 0", "--sample-tokens must be >= 1"},
      {ok + "--steps 5 --sample-tokens 16", "--sample-tokens 16 is more than a sample holds: --seq-len - 1 = 15"},
  };
  for (const Case& c : cases) {
    INFO("train " << c.args);
    Run r = train(c.args);
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains(c.message));
  }
  // The default --eval-every (100) in a 5-step run with validation data: no error, the plan says
  // the validation comes at the end only.
  {
    const Run short_run = train(tiny(dir) + "--steps 5 --val-data " + dir + "/val.bin --run-dir " + dir + "/short");
    INFO(short_run.output);
    CHECK(short_run.code == 0);
    CHECK_THAT(short_run.output, Catch::Contains("batches at the end only"));
    // A resumed run's recorded interval is the run's own setting: checked like a given one.
    const std::string recorded = dir + "/recorded";
    REQUIRE(train(tiny(dir) + "--steps 6 --stop-at-step 1 --eval-every 4 --val-data " + dir + "/val.bin --run-dir " +
                  recorded)
                .code == 0);
    const Run shorter = train("--resume " + recorded + " --steps 3");
    CHECK(shorter.code == 2);
    CHECK_THAT(shorter.output, Catch::Contains("--eval-every 4 is longer than the run (3 steps)"));
  }
  // A file where the run's checkpoints/ folder goes: refused before the first step, not at the
  // first save after them.
  std::filesystem::create_directories(dir + "/filed");
  std::ofstream(dir + "/filed/checkpoints") << "x";
  const Run filed = train(tiny(dir) + "--steps 2 --run-dir " + dir + "/filed");
  CHECK(filed.code == 2);
  CHECK_THAT(filed.output, Catch::Contains("run directory " + dir + "/filed: " + dir + "/filed/checkpoints is not a "
                                           "directory, where the run's checkpoints go"));
  CHECK_FALSE(std::filesystem::exists(dir + "/filed/metrics.jsonl"));
  // A folder where the run writes a file (its metrics, config, samples): refused the same way
  // (the first write failed with exit 1 and the bare errno text).
  for (const char* file : {"metrics.jsonl", "config.json", "samples.txt"}) {
    const std::string run_dir = dir + "/foldered_" + file;
    std::filesystem::create_directories(run_dir + "/" + file);
    const Run foldered = train(tiny(dir) + "--steps 2 --run-dir " + run_dir);
    INFO(file << ": " << foldered.output);
    CHECK(foldered.code == 2);
    CHECK_THAT(foldered.output, Catch::Contains("run directory " + run_dir + ": " + run_dir + "/" + file +
                                                " is a directory, where the run writes its " + file));
  }
  // Flags that would do nothing here: refused by name.
  const std::pair<std::string, std::string> unused[] = {
      {ok + "--steps 5 --cuda-device 3", "--cuda-device picks a GPU: with --device cpu it does nothing"},
      {ok + "--steps 5 --eval-every 2", "--eval-every sets how the validation data is evaluated: without --val-data"},
      {ok + "--steps 5 --eval-batches 2", "--eval-batches sets how the validation data is evaluated"},
  };
  for (const auto& [args, message] : unused) {
    INFO("train " << args);
    const Run r = train(args);
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains(message));
  }
  // --threads 0 takes OMP_NUM_THREADS, within the same bound.
  const Run many = launch("OMP_NUM_THREADS=5000 " + train_binary() + " " + ok + "--steps 5 --threads 0");
  CHECK(many.code == 2);
  CHECK_THAT(many.output, Catch::Contains("OMP_NUM_THREADS asks for 5000 threads, more than 1024"));
  CHECK_FALSE(std::filesystem::exists(dir + "/run"));
  // A tokenizer other than the one the data was prepared with (the shards' fingerprint is made up).
  if (const std::string data = test::data_dir(); !data.empty()) {
    Run r = train(ok + "--steps 5 --tokenizer " + data + "/gpt2");
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("/gpt2 (fingerprint") &&
                             Catch::Contains("50257 tokens) is not the tokenizer " + dir + "/train.bin was prepared "
                                             "with (fingerprint 000000001234abcd, 64 tokens)"));
  }
  // Validation data of another vocabulary under the same tokenizer fingerprint (a corrupt header)
  // is refused at setup, not at the first validation.
  std::filesystem::create_directories(dir + "/wide");
  test::write_tiny_shards(dir + "/wide", 4096, test::kTinyFingerprint, 128);
  for (const char* batches : {"20", "0"}) {
    Run r = train(ok + "--steps 5 --eval-batches " + batches + " --val-data " + dir + "/wide/val.bin");
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("the validation data " + dir + "/wide/val.bin was tokenized with a "
                                         "vocabulary of 128 tokens, the training data " + dir + "/train.bin with 64"));
  }
  if (!cuda_backend_built()) {
    Run r = train(ok + "--steps 5 --device cuda");
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("no CUDA backend"));
  }
  CHECK_FALSE(std::filesystem::exists(dir + "/run"));  // no failed run left anything behind
  // Nor the levels of a nested --run-dir it made before the trainer's setup refused the run.
  Run nested = train("--train-data " + dir + "/train.bin --val-data " + dir + "/val.bin --eval-every 10 --steps 5 "
                     "--layers 1 --heads 2 --channels 16 --max-seq-len 32 --batch-size 4 --seq-len 16 --run-dir " +
                     dir + "/nest/a/b/");
  CHECK(nested.code == 2);
  CHECK_THAT(nested.output, Catch::Contains("--eval-every 10 is longer than the run"));
  CHECK_FALSE(std::filesystem::exists(dir + "/nest"));

  // A run directory another train holds (its lock, taken here) is refused before anything is
  // written.
  std::filesystem::create_directories(dir + "/busy");
  const Run busy = [&] {
    const RunDirectoryLock lock(dir + "/busy");
    return train(tiny(dir) + "--steps 2 --run-dir " + dir + "/busy");
  }();
  CHECK(busy.code == 2);
  CHECK_THAT(busy.output, Catch::Contains("run directory " + dir + "/busy is in use by another gpt2cc process"));
  CHECK(std::filesystem::is_empty(dir + "/busy"));
  Run free = train(tiny(dir) + "--steps 2 --run-dir " + dir + "/busy");
  CHECK(free.code == 0);
}

TEST_CASE("a tiny run, its resume, and --eval-only", "[cli]") {
  std::string dir = test::temp_dir("train_cli_run");
  test::write_tiny_shards(dir);
  const std::string run_dir = dir + "/run";
  const std::string base = tiny(dir) + "--val-data " + dir + "/val.bin --eval-every 2 --eval-batches 2 --run-dir " +
                           run_dir + " ";

  Run first = train(base + "--steps 6 --stop-at-step 3");
  INFO(first.output);
  REQUIRE(first.code == 0);
  CHECK_THAT(first.output, Catch::Contains("stopped at step 3 of 6 (--stop-at-step), checkpoint in " + run_dir +
                                               "/checkpoints, metrics in " + run_dir +
                                               "/metrics.jsonl; continue with: train --resume " + run_dir + "\n"));
  CHECK(std::filesystem::exists(run_dir + "/config.json"));
  CHECK(count_lines(run_dir + "/metrics.jsonl") == 3);
  // No MFU on the CPU: the peak table holds GPUs.
  check_mfu_report(first, run_dir, std::nullopt);
  CHECK_THAT(first.output, !Catch::Contains("MFU"));

  SECTION("a save's temporary left by a kill is removed by the run's next save") {
    // A stop's save (step 2 here) cut short by SIGKILL: the continued run never saves step 2 again.
    std::ofstream(run_dir + "/checkpoints/step_00000002.ckpt.tmp") << "half a checkpoint";
    std::ofstream(run_dir + "/checkpoints/notes.tmp") << "not a checkpoint's";
    Run resumed = train("--resume " + run_dir + " --stop-at-step 4");
    INFO(resumed.output);
    REQUIRE(resumed.code == 0);
    CHECK_FALSE(std::filesystem::exists(run_dir + "/checkpoints/step_00000002.ckpt.tmp"));
    CHECK(std::filesystem::exists(run_dir + "/checkpoints/notes.tmp"));
  }
  SECTION("a run killed before its first checkpoint: its resume says to start it again") {
    const std::string early = dir + "/early";
    std::filesystem::create_directories(early);
    std::ofstream(early + "/config.json") << R"({"model": {}, "train": {"steps": 6}})";
    Run resumed = train("--resume " + early);
    CHECK(resumed.code == 2);
    CHECK_THAT(resumed.output, Catch::Contains("no checkpoint (step_*.ckpt) in run directory " + early +
                                               " or its checkpoints/ folder: the run stopped before its first "
                                               "checkpoint; start it again with its flags"));
    // The same while a train holds the directory (its lock, taken here): the run is still starting.
    const Run starting = [&] {
      const RunDirectoryLock lock(early);
      return train("--resume " + early);
    }();
    CHECK(starting.code == 2);
    CHECK_THAT(starting.output, Catch::Contains("a train process is running there and has not written its first "
                                                "checkpoint yet; resume it once it has stopped") &&
                                    !Catch::Contains("start it again"));
    // A config.json of another kind (a Hugging Face model's, its weights missing): no such hint.
    std::ofstream(early + "/config.json") << R"({"model_type": "gpt2"})";
    Run other = train("--resume " + early);
    CHECK(other.code == 2);
    CHECK_THAT(other.output, !Catch::Contains("start it again"));
  }
  SECTION("a new run into the same directory is refused; the checkpoint survives") {
    Run again = train(base + "--steps 6");
    CHECK(again.code == 2);
    CHECK_THAT(again.output, Catch::Contains("already holds checkpoints"));
    CHECK(std::filesystem::exists(run_dir + "/checkpoints/step_00000003.ckpt"));
  }
  SECTION("resume with a different batch is refused; a plain resume finishes the run") {
    Run changed = train("--resume " + run_dir + " --batch-size 2");
    CHECK(changed.code == 2);
    CHECK_THAT(changed.output,
               Catch::Contains("--batch-size 2: --resume continues the run with its own --batch-size "));
    Run unshuffled = train("--resume " + run_dir + " --shuffle=false");
    CHECK(unshuffled.code == 2);
    CHECK_THAT(unshuffled.output, Catch::Contains("--shuffle false: --resume continues the run with its own --shuffle "
                                                  "true (from the checkpoint)"));
    // Every setting a resume must keep (the run's are --seq-len 16, --total-batch 0: B x T,
    // --seed 1337, --dropout 0, --dtype fp32).
    for (const char* flag : {"seq-len 8", "total-batch 128", "seed 5", "dropout 0.2", "dtype bf16"}) {
      const std::string name = std::string(flag).substr(0, std::string(flag).find(' '));
      Run refused = train("--resume " + run_dir + " --" + flag);
      INFO(refused.output);
      CHECK(refused.code == 2);
      CHECK_THAT(refused.output, Catch::Contains("--resume continues the run with its own --" + name + " "));
    }
    Run resumed = train("--resume " + run_dir);
    INFO(resumed.output);
    CHECK(resumed.code == 0);
    CHECK_THAT(resumed.output, Catch::Contains("resuming from") && Catch::Contains("step 6/6") &&
                                   Catch::Contains("validation loss"));
    CHECK(count_lines(run_dir + "/metrics.jsonl") == 6);
  }
  SECTION("a resume refuses training data of another size than the run's") {
    const std::string other = dir + "/other_data";
    std::filesystem::create_directories(other);
    test::write_tiny_shards(other, 3000);
    Run changed = train("--resume " + run_dir + " --train-data " + other + "/train.bin");
    CHECK(changed.code == 2);
    CHECK_THAT(changed.output, Catch::Contains("the training data is not the run's: it has"));
  }
  SECTION("a resume refuses training data of the run's size but other tokens; a copy of the run's resumes") {
    const std::string other = dir + "/reversed_data", copy = dir + "/copied_data";
    std::filesystem::create_directories(other);
    std::filesystem::create_directories(copy);
    MappedShard shard(dir + "/train.bin");
    std::vector<uint32_t> tokens(shard.size());
    shard.copy(0, tokens.size(), tokens.data());
    std::filesystem::copy_file(dir + "/train.bin", copy + "/train.bin");
    std::reverse(tokens.begin(), tokens.end());
    write_shard(other + "/train.bin", tokens, shard.header().tokenizer_fingerprint, shard.header().vocab_size);
    Run changed = train("--resume " + run_dir + " --train-data " + other + "/train.bin");
    CHECK(changed.code == 2);
    CHECK_THAT(changed.output, Catch::Contains("the training data is not the run's: its sampled contents"));
    Run copied = train("--resume " + run_dir + " --train-data " + copy + "/train.bin");
    INFO(copied.output);
    CHECK(copied.code == 0);
  }
  SECTION("a second Ctrl-C while a checkpoint is written removes its .tmp") {
    // step_00000004.ckpt.tmp made a FIFO holds the write in its open: the first SIGINT asks the
    // run to stop after the checkpoint, the second ends it, removing the temporary file. (Started
    // under job control, `set -m`: a background job of a shell without it has SIGINT ignored, and
    // train leaves it so, as a Ctrl-C is not meant for it.)
    const std::string held = run_dir + "/checkpoints/step_00000004.ckpt.tmp";
    REQUIRE(launch("mkfifo " + held).code == 0);
    const Run killed = launch(
        "bash -c 'set -m; " + train_binary() + " --resume " + run_dir + " --stop-at-step 4 & pid=$!; " +
        test::shell_wait_in_fifo_open() + "kill -INT $pid; sleep 0.2; kill -INT $pid; wait $pid; echo status $?'");
    CHECK_THAT(killed.output, Catch::Contains("status 130"));
    CHECK_FALSE(std::filesystem::exists(held));
    CHECK_FALSE(std::filesystem::exists(run_dir + "/checkpoints/step_00000004.ckpt"));
  }
  SECTION("a run length given on --resume replaces the run's, in the unit it is given in") {
    Run by_tokens = train("--resume " + run_dir + " --tokens 320");  // 5 steps of 4 x 16 tokens
    INFO(by_tokens.output);
    CHECK(by_tokens.code == 0);
    CHECK_THAT(by_tokens.output, Catch::Contains("step 5/5"));
  }
  SECTION("a resume writes where its checkpoint is, never into the directory the checkpoint records") {
    namespace fs = std::filesystem;
    const std::string copy = dir + "/copy";
    fs::copy(run_dir, copy, fs::copy_options::recursive);
    Run resumed = train("--resume " + copy + " --steps 4");
    INFO(resumed.output);
    CHECK(resumed.code == 0);
    CHECK_THAT(resumed.output, Catch::Contains("checkpoint in " + copy + "/checkpoints"));
    CHECK(fs::exists(copy + "/checkpoints/step_00000004.ckpt"));
    CHECK_FALSE(fs::exists(run_dir + "/checkpoints/step_00000004.ckpt"));  // the original run is untouched
    CHECK(count_lines(run_dir + "/metrics.jsonl") == 3);
    CHECK(count_lines(copy + "/metrics.jsonl") == 4);
    // A checkpoint file in a run's checkpoints/ folder continues that run.
    Run by_file = train("--resume " + copy + "/checkpoints/step_00000004.ckpt --steps 5");
    CHECK(by_file.code == 0);
    CHECK(fs::exists(copy + "/checkpoints/step_00000005.ckpt"));
    // So does the run's checkpoints/ folder named instead, in the run's directory (not a run nested
    // in checkpoints/, which a later --resume of the run would not see).
    Run by_folder = train("--resume " + copy + "/checkpoints --steps 6");
    CHECK(by_folder.code == 0);
    CHECK(fs::exists(copy + "/checkpoints/step_00000006.ckpt"));
    CHECK_FALSE(fs::exists(copy + "/checkpoints/metrics.jsonl"));
    CHECK(count_lines(copy + "/metrics.jsonl") == 6);
    // A loose checkpoint file has no run directory: the continued run's must be given.
    fs::copy_file(run_dir + "/checkpoints/step_00000003.ckpt", dir + "/loose.ckpt");
    Run loose = train("--resume " + dir + "/loose.ckpt --steps 5");
    CHECK(loose.code == 2);
    CHECK_THAT(loose.output, Catch::Contains("give the continued run's --run-dir"));
    Run placed = train("--resume " + dir + "/loose.ckpt --steps 5 --run-dir " + dir + "/placed");
    CHECK(placed.code == 0);
    CHECK(fs::exists(dir + "/placed/checkpoints/step_00000005.ckpt"));
  }
  SECTION("a resume from another working directory keeps the tokenizer's recorded absolute path") {
    // The run's saved flags hold --tokenizer as typed (relative to its working directory), the
    // checkpoint the absolute path: a resume elsewhere must record the latter.
    namespace fs = std::filesystem;
    const std::string elsewhere = dir + "/elsewhere";
    fs::create_directories(elsewhere);
    Checkpoint ckpt = load_checkpoint(run_dir + "/checkpoints/step_00000003.ckpt");
    ckpt.tokenizer_dir = dir + "/tok";
    ckpt.train_config["tokenizer_dir"] = "tok";
    save_checkpoint(run_dir + "/checkpoints/step_00000003.ckpt", ckpt);
    Run resumed = launch("cd " + elsewhere + " && " + train_binary() + " --resume " + run_dir + " --steps 4");
    INFO(resumed.output);
    REQUIRE(resumed.code == 0);
    CHECK(load_checkpoint(run_dir + "/checkpoints/step_00000004.ckpt").tokenizer_dir == dir + "/tok");
    CHECK_FALSE(fs::exists(elsewhere + "/tok"));
    // The data paths stay as typed: relative ones name nothing from elsewhere, which is said, with
    // the flag to give.
    const std::string relative = "cd " + dir + " && " + train_binary() +
                                 " --layers 2 --heads 2 --channels 16 --max-seq-len 32 --batch-size 4 --seq-len 16 "
                                 "--threads 1 --train-data train.bin --val-data val.bin --eval-every 2 --steps 2 "
                                 "--run-dir rel_run";
    REQUIRE(launch(relative).code == 0);
    const std::string away = "cd " + elsewhere + " && " + train_binary() + " --resume " + dir + "/rel_run --steps 3";
    Run lost = launch(away);
    CHECK(lost.code == 2);
    CHECK_THAT(lost.output, Catch::Contains("no shards found at train.bin") &&
                                Catch::Contains("the resumed run's --train-data, as its checkpoint records it "
                                                "(relative paths are the first run's); give --train-data PATH"));
    Run found = launch(away + " --train-data " + dir + "/train.bin --val-data ''");
    INFO(found.output);
    CHECK(found.code == 0);
  }
  SECTION("a checkpoint named from inside its checkpoints/ folder continues its run") {
    // "step_00000003.ckpt" has no folder in its name: the run is the folder's parent all the same.
    const std::string inside = "cd " + run_dir + "/checkpoints && " + train_binary() + " --resume ";
    for (const char* name : {"step_00000003.ckpt", "./step_00000003.ckpt"}) {
      Run resumed = launch(inside + name + " --stop-at-step 4");
      INFO(resumed.output);
      CHECK(resumed.code == 0);
      CHECK(count_lines(run_dir + "/metrics.jsonl") == 4);
      std::filesystem::remove(run_dir + "/checkpoints/step_00000004.ckpt");
    }
    // So is it with the run directory given, "..": not another run's.
    Run placed = launch(inside + "step_00000003.ckpt --run-dir .. --stop-at-step 4");
    INFO(placed.output);
    CHECK(placed.code == 0);
    CHECK(std::filesystem::exists(run_dir + "/checkpoints/step_00000004.ckpt"));
  }
  SECTION("a damaged newest checkpoint names the run's previous one to continue from") {
    Run more = train("--resume " + run_dir + " --steps 5 --stop-at-step 4 --checkpoint-every 1");
    REQUIRE(more.code == 0);
    const std::string newest = run_dir + "/checkpoints/step_00000004.ckpt";
    {
      std::fstream file(newest, std::ios::in | std::ios::out | std::ios::binary);
      file.seekp(-20, std::ios::end);
      file.put('\x5a');  // a flipped byte in the moments: the checksum no longer matches
    }
    Run resumed = train("--resume " + run_dir);
    CHECK(resumed.code == 2);
    CHECK_THAT(resumed.output, Catch::Contains("checkpoint " + newest + " is corrupt") &&
                                   Catch::Contains("the run's previous checkpoint is " + run_dir +
                                                   "/checkpoints/step_00000003.ckpt: move the damaged one out of"));
    // Found when its arrays stream into the model (above), or, cut short, when it is opened.
    std::filesystem::resize_file(newest, std::filesystem::file_size(newest) - 1);
    Run truncated = train("--resume " + run_dir);
    CHECK(truncated.code == 2);
    CHECK_THAT(truncated.output, Catch::Contains("checkpoint " + newest + " has the wrong size") &&
                                     Catch::Contains("the run's previous checkpoint is " + run_dir +
                                                     "/checkpoints/step_00000003.ckpt: move the damaged one out of"));
    // While the damaged step 4 is there, continuing from step 3 is refused: the next --resume
    // would take step 4 again, and --keep-checkpoints would prune the new ones as older.
    const std::string previous_ckpt = run_dir + "/checkpoints/step_00000003.ckpt";
    Run mixed = train("--resume " + previous_ckpt);
    CHECK(mixed.code == 2);
    CHECK_THAT(mixed.output, Catch::Contains("holds a checkpoint after step 3, the one resumed: " + newest));
    std::filesystem::rename(newest, dir + "/damaged.ckpt");
    Run previous = train("--resume " + previous_ckpt);
    INFO(previous.output);
    CHECK(previous.code == 0);
    // A checkpoint of this run continued in a directory that holds another run's: refused, that
    // run's files untouched.
    Run other = train("--resume " + previous_ckpt + " --run-dir " + dir + "/placed_other --steps 4");
    REQUIRE(other.code == 0);
    Run into_other = train("--resume " + previous_ckpt + " --run-dir " + dir + "/placed_other");
    CHECK(into_other.code == 2);
    CHECK_THAT(into_other.output, Catch::Contains("holds checkpoints of another run"));
  }
  SECTION("--preset cannot change the shape of a checkpoint's model") {
    Run resumed = train("--resume " + run_dir + " --preset d2");
    CHECK(resumed.code == 2);
    CHECK_THAT(resumed.output, Catch::Contains("--preset d2: the model shape comes from the checkpoint"));
    Run tuned = train("--init-from " + run_dir + "/checkpoints/step_00000003.ckpt --train-data " + dir +
                      "/train.bin --steps 2 --batch-size 4 --seq-len 16 --threads 1 --preset d2 --run-dir " + dir +
                      "/tuned");
    CHECK(tuned.code == 2);
    CHECK_THAT(tuned.output,
               Catch::Contains("--preset d2: with --init-from the model shape comes from the checkpoint"));
    // --eval-only and --export-hf of the run's newest checkpoint: --preset may repeat its shape
    // (with the shape flags that made it), not name another.
    const std::string eval = "--eval-only --val-data " + dir + "/val.bin --seq-len 16 --resume " + run_dir;
    const std::string shape = " --layers 2 --heads 2 --channels 16 --max-seq-len 32";
    CHECK(train(eval + " --preset d2" + shape).code == 0);
    for (const std::string& task : {eval, "--export-hf " + dir + "/hf_xl --resume " + run_dir}) {
      Run other = train(task + " --preset gpt2-xl");
      CHECK(other.code == 2);
      CHECK_THAT(other.output, Catch::Contains("the model shape comes from the checkpoint " + run_dir +
                                               "/checkpoints/step_00000003.ckpt (L=2 NH=2 C=16 maxT=32): --preset "
                                               "gpt2-xl is L=48 NH=25 C=1600 maxT=1024; drop --preset"));
    }
    CHECK_FALSE(std::filesystem::exists(dir + "/hf_xl"));
  }
  SECTION("a checkpoint whose training configuration does not parse is named") {
    Checkpoint ckpt = load_checkpoint(run_dir + "/checkpoints/step_00000003.ckpt");
    ckpt.train_config["lr"] = "abc";
    std::filesystem::create_directories(dir + "/odd/checkpoints");
    save_checkpoint(dir + "/odd/checkpoints/step_00000003.ckpt", ckpt);
    Run resumed = train("--resume " + dir + "/odd");
    CHECK(resumed.code == 2);
    CHECK_THAT(resumed.output, Catch::Contains("checkpoint " + dir + "/odd/checkpoints/step_00000003.ckpt holds an "
                                               "unreadable training configuration"));
  }
  SECTION("--eval-only of a diverged model fails instead of reporting a NaN loss") {
    Checkpoint ckpt = load_checkpoint(run_dir + "/checkpoints/step_00000003.ckpt");
    for (float& p : ckpt.params) p = NAN;
    save_checkpoint(dir + "/nan.ckpt", ckpt);
    Run eval = train("--eval-only --init-from " + dir + "/nan.ckpt --val-data " + dir + "/val.bin --seq-len 16");
    CHECK(eval.code == 2);
    CHECK_THAT(eval.output, Catch::Contains("the loss of checkpoint " + dir + "/nan.ckpt on " + dir +
                                            "/val.bin is not finite") &&
                                Catch::Contains("its weights have diverged or are corrupt"));
    Run from_run = train("--eval-only --init-from " + run_dir + " --val-data " + dir + "/val.bin --seq-len 16");
    CHECK(from_run.code == 2);
    CHECK_THAT(from_run.output, Catch::Contains("is a run directory: give one of its checkpoint files"));
  }
  SECTION("--eval-only states window, stride and tokens scored") {
    const std::string ckpt = run_dir + "/checkpoints/step_00000003.ckpt";
    Run plain = train("--eval-only --init-from " + ckpt + " --val-data " + dir + "/val.bin --seq-len 16");
    INFO(plain.output);
    CHECK(plain.code == 0);
    // 4096 tokens in windows of 16: every token after the first is scored once.
    CHECK_THAT(plain.output, Catch::Contains("windows of 16 tokens every 16 tokens (non-overlapping)") &&
                                 Catch::Contains("tokens scored: 4095") && Catch::Contains("perplexity: "));
    // Without --seq-len a window is the default 128 tokens or the model's context, the shorter:
    // 32 here; a given --seq-len longer than the context is refused.
    Run context = train("--eval-only --init-from " + ckpt + " --val-data " + dir + "/val.bin --eval-stride 20");
    INFO(context.output);
    CHECK(context.code == 0);
    CHECK_THAT(context.output, Catch::Contains("windows of 32 tokens every 20 tokens (sliding)"));
    Run long_stride = train("--eval-only --init-from " + ckpt + " --val-data " + dir + "/val.bin --eval-stride 40");
    CHECK(long_stride.code == 2);
    CHECK_THAT(long_stride.output, Catch::Contains("--eval-stride 40 is longer than the window, the model's context "
                                                   "of 32 tokens"));
    Run too_long = train("--eval-only --init-from " + ckpt + " --val-data " + dir + "/val.bin --seq-len 64");
    CHECK(too_long.code == 2);
    CHECK_THAT(too_long.output, Catch::Contains("--seq-len 64 is longer than the model's maximum 32"));
    Run sliding = train("--eval-only --init-from " + ckpt + " --val-data " + dir + "/val.bin --seq-len 16 "
                        "--eval-stride 8");
    CHECK(sliding.code == 0);
    CHECK_THAT(sliding.output, Catch::Contains("every 8 tokens (sliding)") && Catch::Contains("tokens scored: 4095"));
    // --classifier-rows: the 128 rows of a batch scored in chunks of 24, or all at once (0), to the
    // same figures.
    for (const char* rows : {"24", "0"}) {
      Run chunked = train("--eval-only --init-from " + ckpt + " --val-data " + dir + "/val.bin --seq-len 16 "
                          "--classifier-rows " + rows);
      CHECK(chunked.code == 0);
      CHECK(chunked.output == plain.output);
    }
    // Its figures written nowhere (a full disk behind the redirect) is a failure, not exit 0.
    const Run full = launch("sh -c '" + train_binary() + " --eval-only --init-from " + ckpt + " --val-data " + dir +
                            "/val.bin --seq-len 16 > /dev/full'");
    CHECK(full.code == 1);
    CHECK_THAT(full.output, Catch::Contains("train: error: writing standard output failed: "));
    // A closed pipe (train | head) does not end a training run between checkpoints: it trains on,
    // saves, and says its output was lost (SIGPIPE ended it with none, exit 141, before).
    const Run piped = launch("bash -c '" + train_binary() + " " + tiny(dir) + "--steps 150 --log-every 1 --run-dir " +
                             dir + "/piped | true; echo \"exit ${PIPESTATUS[0]}\"'");
    INFO(piped.output);
    CHECK_THAT(piped.output, Catch::EndsWith("exit 1\n") &&
                                 Catch::Contains("train: error: writing standard output failed: ") &&
                                 Catch::Contains("pipe"));
    CHECK(std::filesystem::exists(dir + "/piped/checkpoints/step_00000150.ckpt"));
    // The shape is the checkpoint's here too: flags may repeat it, not change it.
    const std::string eval = "--eval-only --init-from " + ckpt + " --val-data " + dir + "/val.bin --seq-len 16 ";
    CHECK(train(eval + "--layers 2 --channels 16").code == 0);
    const Run reshaped = train(eval + "--layers 3");
    CHECK(reshaped.code == 2);
    CHECK_THAT(reshaped.output, Catch::Contains("--layers 3 differs from its 2"));
    const Run preset = train(eval + "--preset d4");
    CHECK(preset.code == 2);
    CHECK_THAT(preset.output, Catch::Contains("drop --preset"));
  }
  SECTION("--export-hf: Hugging Face weights that evaluate and fine-tune as the checkpoint does") {
    // The run's checkpoint, recording a tokenizer that is not there (moved since, say).
    Checkpoint recorded = load_checkpoint(run_dir + "/checkpoints/step_00000003.ckpt");
    recorded.tokenizer_dir = "/nowhere";
    const std::string ckpt = dir + "/recorded.ckpt", hf = dir + "/hf";
    save_checkpoint(ckpt, recorded);
    Run exported = train("--init-from " + ckpt + " --export-hf " + hf);
    INFO(exported.output);
    REQUIRE(exported.code == 0);
    // Exported again from those weights (streamed in a checkpoint's order): the same file.
    const Run again_from_hf = train("--init-from " + hf + " --export-hf " + dir + "/hf_again");
    CHECK(again_from_hf.code == 0);
    CHECK(test::read_bytes(dir + "/hf_again/model.safetensors") == test::read_bytes(hf + "/model.safetensors"));
    // A checkpoint damaged inside its arrays fails at its checksum, after the parameters streamed
    // into the export: exit 2 naming it, and no model written.
    std::string damaged_bytes = test::read_bytes(ckpt);
    damaged_bytes[damaged_bytes.size() / 2] ^= 0x40;
    std::ofstream(dir + "/damaged.ckpt", std::ios::binary) << damaged_bytes;
    const Run from_damaged = train("--init-from " + dir + "/damaged.ckpt --export-hf " + dir + "/hf_damaged");
    CHECK(from_damaged.code == 2);
    CHECK_THAT(from_damaged.output, Catch::Contains("damaged.ckpt is corrupt: checksum"));
    for (const char* file : {"model.safetensors", "model.safetensors.tmp", "config.json"})
      CHECK_FALSE(std::filesystem::exists(dir + "/hf_damaged/" + file));
    // ... and no folder it made for the export is left behind.
    CHECK_FALSE(std::filesystem::exists(dir + "/hf_damaged"));
    CHECK(train("--init-from " + dir + "/damaged.ckpt --export-hf " + dir + "/hf_deep/er/still").code == 2);
    CHECK_FALSE(std::filesystem::exists(dir + "/hf_deep"));
    // Folders a ".." passes through are made by the system on the way, and removed too.
    CHECK(train("--init-from " + dir + "/damaged.ckpt --export-hf " + dir + "/hf_passed/../hf_after").code == 2);
    CHECK_FALSE(std::filesystem::exists(dir + "/hf_passed"));
    CHECK_FALSE(std::filesystem::exists(dir + "/hf_after"));
    // A folder the system refuses to make (no permission) is the path's, as for every output
    // folder (core/run_directory.hpp, folder_error_is_input): exit 2.
    const Run refused = train("--init-from " + ckpt + " --export-hf /sys/gpt2cc_export_test");
    CHECK(refused.code == 2);
    CHECK_THAT(refused.output, Catch::Contains("--export-hf /sys/gpt2cc_export_test: cannot make a directory there"));
    // Bad input, exit 2: a file where the directory would go, or above it; another shape.
    std::ofstream(dir + "/afile") << "x";
    const Run onto_file = train("--init-from " + ckpt + " --export-hf " + dir + "/afile");
    CHECK(onto_file.code == 2);
    CHECK_THAT(onto_file.output, Catch::Contains("--export-hf " + dir + "/afile: cannot make a directory there"));
    const Run under_file = train("--init-from " + ckpt + " --export-hf " + dir + "/afile/hf");
    CHECK(under_file.code == 2);
    CHECK_THAT(under_file.output, Catch::Contains("--export-hf " + dir + "/afile/hf: cannot make a directory there: "));
    const Run reshaped = train("--init-from " + ckpt + " --export-hf " + dir + "/hf_reshaped --heads 3");
    CHECK(reshaped.code == 2);
    CHECK_THAT(reshaped.output, Catch::Contains("--heads 3 differs from its 2"));
    // A SIGTERM while the weights are written removes their temporary file: model.safetensors.tmp
    // made a FIFO beforehand holds the write in its open until the signal comes.
    const std::string held = dir + "/hf_held";
    std::filesystem::create_directories(held);
    REQUIRE(launch("mkfifo " + held + "/model.safetensors.tmp").code == 0);
    const Run killed = launch(
        "sh -c '" + train_binary() + " --init-from " + ckpt + " --export-hf " + held + " & pid=$!; " +
        test::shell_wait_in_fifo_open() + "kill -TERM $pid; wait $pid; echo status $?'");
    CHECK_THAT(killed.output, Catch::Contains("status 143"));
    CHECK_FALSE(std::filesystem::exists(held + "/model.safetensors.tmp"));
    CHECK_FALSE(std::filesystem::exists(held + "/model.safetensors"));
    // A second export into a folder an export is writing is refused and removes nothing there
    // (both passed the folder's check and removed each other's files, one saying it exported).
    const std::string busy = dir + "/hf_busy";
    std::filesystem::create_directories(busy);
    REQUIRE(launch("mkfifo " + busy + "/model.safetensors.tmp").code == 0);
    const std::string export_busy = train_binary() + " --init-from " + ckpt + " --export-hf " + busy;
    const Run second = launch("sh -c '" + export_busy + " & pid=$!; " + test::shell_wait_in_fifo_open() +
                              "timeout 60 " + export_busy + "; echo second $?; kill -TERM $pid; wait $pid; "
                              "echo first $?'");
    INFO(second.output);
    CHECK_THAT(second.output, Catch::Contains("export directory " + busy + " is in use by another gpt2cc process") &&
                                  Catch::Contains("give another --export-hf") &&
                                  Catch::Contains("second 2") && Catch::Contains("first 143"));
    CHECK(std::filesystem::is_directory(busy));
    CHECK_THAT(exported.output, Catch::Contains("to " + hf + ": model.safetensors, config.json (no tokenizer: the "
                                                "checkpoint's /nowhere is not there"));
    CHECK(std::filesystem::exists(hf + "/model.safetensors"));
    CHECK(std::filesystem::exists(hf + "/config.json"));
    // The same loss over the same windows (printed to 4 decimals).
    const std::string eval = " --val-data " + dir + "/val.bin --seq-len 16";
    Run from_ckpt = train("--eval-only --init-from " + ckpt + eval), from_hf = train("--eval-only --init-from " + hf + eval);
    REQUIRE(from_ckpt.code == 0);
    REQUIRE(from_hf.code == 0);
    const auto loss_line = [](const std::string& out) { return out.substr(out.find("loss: "), 14); };
    CHECK(loss_line(from_hf.output) == loss_line(from_ckpt.output));
    Run tuned = train("--init-from " + hf + " --train-data " + dir + "/train.bin --steps 2 --batch-size 4 "
                      "--seq-len 16 --threads 1 --run-dir " + dir + "/tuned");
    INFO(tuned.output);
    CHECK(tuned.code == 0);
    Run resumed = train("--resume " + hf + " --steps 2");
    CHECK(resumed.code == 2);
    CHECK_THAT(resumed.output, Catch::Contains("holds Hugging Face GPT-2 weights, not a gpt2cc checkpoint"));
    Run into_run = train("--init-from " + ckpt + " --export-hf " + run_dir);
    CHECK(into_run.code == 2);
    CHECK_THAT(into_run.output, Catch::Contains("is a training run's directory; export into a directory of its own"));
    // The same while the run trains there (its lock, taken here): named as a run's directory still.
    const Run into_live_run = [&] {
      const RunDirectoryLock lock(run_dir);
      return train("--init-from " + ckpt + " --export-hf " + run_dir);
    }();
    CHECK(into_live_run.code == 2);
    CHECK_THAT(into_live_run.output, Catch::Contains("is a training run's directory"));
    // A folder holding a tokenizer file the export would not replace: refused, nothing written.
    const auto refuses_folder_with = [&](const std::string& folder, const std::string& file,
                                         const std::string& message) {
      std::filesystem::create_directories(dir + "/" + folder);
      std::ofstream(dir + "/" + folder + "/" + file) << "{}";
      const Run r = train("--init-from " + ckpt + " --export-hf " + dir + "/" + folder);
      CHECK(r.code == 2);
      CHECK_THAT(r.output, Catch::Contains(message));
      CHECK_FALSE(std::filesystem::exists(dir + "/" + folder + "/model.safetensors"));
    };
    refuses_folder_with("stale", "vocab.json",
                        "already holds a tokenizer (vocab.json) that would be taken for this model's: give --tokenizer "
                        "DIR");
    // A tokenizer transformers saved (tokenizer.json), which AutoTokenizer would take over the
    // export's vocab.json + merges.txt, is refused too (with a tokenizer to export or without).
    refuses_folder_with("saved_tokenizer", "tokenizer.json",
                        "already holds a tokenizer's tokenizer.json, which transformers would take for this model's "
                        "tokenizer");
    // A directory that holds a model (an earlier export, downloaded weights) keeps it: refused.
    const auto exported_at = std::filesystem::last_write_time(hf + "/model.safetensors");
    Run again = train("--init-from " + ckpt + " --export-hf " + hf);
    CHECK(again.code == 2);
    CHECK_THAT(again.output, Catch::Contains("--export-hf " + hf + " already holds a model (model.safetensors); "
                                             "export into a new directory, or remove the old model's files first"));
    CHECK(std::filesystem::last_write_time(hf + "/model.safetensors") == exported_at);
    std::filesystem::create_directories(dir + "/configured");
    std::ofstream(dir + "/configured/config.json") << "{}";
    Run configured = train("--init-from " + ckpt + " --export-hf " + dir + "/configured");
    CHECK(configured.code == 2);
    CHECK_THAT(configured.output, Catch::Contains("already holds a model (config.json)"));
    CHECK_FALSE(std::filesystem::exists(dir + "/configured/model.safetensors"));
    Run both = train("--init-from " + ckpt + " --export-hf " + hf + " --eval-only --val-data " + dir + "/val.bin");
    CHECK(both.code == 2);
    CHECK_THAT(both.output, Catch::Contains("--export-hf and --eval-only are separate runs"));
  }
  SECTION("a checkpoint whose tokenizer does not match the data") {
    std::filesystem::create_directories(dir + "/other");
    test::write_tiny_shards(dir + "/other", 4096, 0x5555);
    const std::string ckpt = run_dir + "/checkpoints/step_00000003.ckpt";
    Run tuned = train("--init-from " + ckpt + " --train-data " + dir + "/other/train.bin --steps 2 --batch-size 4 "
                      "--seq-len 16 --run-dir " + dir + "/tuned");
    CHECK(tuned.code == 2);
    CHECK_THAT(tuned.output, Catch::Contains("fingerprint"));
    Run eval = train("--eval-only --init-from " + ckpt + " --val-data " + dir + "/other/val.bin --seq-len 16");
    CHECK(eval.code == 2);
    CHECK_THAT(eval.output, Catch::Contains("fingerprint"));
    // Validation on the whole split (--eval-batches 0) checks its shards before the first step too,
    // not at the first validation, after steps whose work the refusal would then lose.
    Run whole = train(tiny(dir) + "--val-data " + dir + "/other/val.bin --eval-batches 0 --eval-every 2 --steps 4 "
                      "--run-dir " + dir + "/whole");
    CHECK(whole.code == 2);
    CHECK_THAT(whole.output, Catch::Contains("does not match the model's tokenizer"));
    CHECK_FALSE(std::filesystem::exists(dir + "/whole/metrics.jsonl"));
  }
}

TEST_CASE("a fine-tune from Hugging Face weights holds their tokenizer to the data and records it absolute",
          "[cli]") {
  namespace fs = std::filesystem;
  const std::string dir = test::temp_dir("train_cli_hf_tokenizer");
  // A byte tokenizer (257 tokens); shards made with it, and shards of the same size made with
  // another; a run on the first exported with the tokenizer beside the weights.
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.emplace_back(1, static_cast<char>(b));
  tokens.emplace_back("<|endoftext|>");
  const Tokenizer bytes = Tokenizer::from_parts(tokens, {}, {256});
  bytes.save(dir + "/tok");
  fs::create_directories(dir + "/same");
  fs::create_directories(dir + "/other");
  test::write_tiny_shards(dir + "/same", 4096, bytes.fingerprint(), 257);
  test::write_tiny_shards(dir + "/other", 4096, 0x5555, 257);
  REQUIRE(train(tiny(dir + "/same") + "--steps 2 --run-dir " + dir + "/run --tokenizer " + dir + "/tok").code == 0);
  // Samples during training: the default --sample-tokens (64), past the training model's
  // --seq-len - 1 = 15 positions, is cut to them (its KV cache holds --seq-len positions, not the
  // context's 32); a number given past them is refused (above).
  const Run sampled = train(tiny(dir + "/same") + "--steps 2 --run-dir " + dir + "/sampled --tokenizer " + dir +
                            "/tok --sample-every 1");
  INFO(sampled.output);
  CHECK(sampled.code == 0);
  const std::string samples = test::read_bytes(dir + "/sampled/samples.txt");
  CHECK_THAT(samples, Catch::StartsWith("=== step 1 ===\n") && Catch::Contains("\n=== step 2 ===\n"));
  // An untrained model's bytes cut characters apart: U+FFFD in their place (here some, seeded), as
  // generate prints them; the file and the console get valid UTF-8.
  CHECK_THAT(samples, Catch::Contains("\xEF\xBF\xBD"));
  CHECK(is_valid_utf8(samples));
  CHECK(is_valid_utf8(sampled.output));
  const Run exported = train("--resume " + dir + "/run --export-hf " + dir + "/hf");
  INFO(exported.output);
  REQUIRE(exported.code == 0);
  // config.json's <|endoftext|> is the tokenizer's (256 here by chance of construction: checked
  // against the tokenizer, not against GPT-2's default).
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(dir + "/hf/config.json"));
  CHECK(config.at("eos_token_id") == bytes.eot_id());
  // An export with another tokenizer of the same size (two byte tokens swapped) is refused.
  std::swap(tokens[0], tokens[1]);
  Tokenizer::from_parts(tokens, {}, {256}).save(dir + "/swapped");
  const Run mismatched =
      train("--resume " + dir + "/run --export-hf " + dir + "/hf_swapped --tokenizer " + dir + "/swapped");
  CHECK(mismatched.code == 2);
  CHECK_THAT(mismatched.output, Catch::Contains("tokenizer " + dir + "/swapped (fingerprint") &&
                                    Catch::Contains("is not the one checkpoint " + dir + "/run/checkpoints/"));
  CHECK_FALSE(fs::exists(dir + "/hf_swapped/model.safetensors"));
  // Weights of more rows than the tokenizer has tokens (the fixture's 300, the byte tokenizer's
  // 257) export with it, as Hugging Face models do; a tokenizer of more tokens than rows does not.
  const Run wider = train("--init-from " + test::fixture_path("hf_gpt2_tiny") + " --export-hf " + dir +
                          "/hf_wider --tokenizer " + dir + "/tok");
  INFO(wider.output);
  CHECK(wider.code == 0);
  CHECK(nlohmann::json::parse(std::ifstream(dir + "/hf_wider/config.json")).at("vocab_size") == 300);
  CHECK(fs::exists(dir + "/hf_wider/vocab.json"));
  // ... and fine-tune on their tokenizer's data (ids below its 257, rows up to 300), sampling only
  // its tokens; evaluate; resume (each was refused while the vocabularies had to be equal).
  const std::string wider_run = dir + "/tuned_wider";
  const Run tuned_wider = train("--init-from " + dir + "/hf_wider --train-data " + dir + "/same/train.bin " +
                                "--val-data " + dir + "/same/val.bin --batch-size 4 --seq-len 16 --threads 1 " +
                                "--steps 2 --stop-at-step 1 --sample-every 1 --tokenizer " + dir + "/tok --run-dir " +
                                wider_run);
  INFO(tuned_wider.output);
  CHECK(tuned_wider.code == 0);
  CHECK(fs::exists(wider_run + "/samples.txt"));
  CHECK(train("--resume " + wider_run).code == 0);
  CHECK(load_checkpoint(wider_run + "/checkpoints/step_00000002.ckpt").config.vocab_size == 300);
  const Run wider_eval = train("--eval-only --init-from " + dir + "/hf_wider --val-data " + dir +
                               "/same/val.bin --seq-len 16 --threads 1");
  INFO(wider_eval.output);
  CHECK(wider_eval.code == 0);
  if (const std::string data = test::data_dir(); !data.empty()) {
    const Run narrower = train("--init-from " + test::fixture_path("hf_gpt2_tiny") + " --export-hf " + dir +
                               "/hf_narrower --tokenizer " + data + "/gpt2");
    CHECK(narrower.code == 2);
    CHECK_THAT(narrower.output, Catch::Contains("has 50257 tokens, more than the 300 of the model of checkpoint"));
  }
  // The tokenizer's write failing (a directory where vocab.json goes), after the weights and
  // config.json are written: they are removed again, and the export runs once the way is clear.
  fs::create_directories(dir + "/hf_blocked/vocab.json");
  const Run blocked = train("--resume " + dir + "/run --export-hf " + dir + "/hf_blocked");
  CHECK(blocked.code != 0);
  CHECK_THAT(blocked.output, Catch::Contains("vocab.json"));
  for (const char* name : {"model.safetensors", "config.json", "merges.txt"})
    CHECK_FALSE(fs::exists(dir + "/hf_blocked/" + name));
  fs::remove(dir + "/hf_blocked/vocab.json");
  CHECK(train("--resume " + dir + "/run --export-hf " + dir + "/hf_blocked").code == 0);
  // Relative paths, from the directory above: the recorded tokenizer is absolute all the same.
  const std::string shape = " --batch-size 4 --seq-len 16 --threads 1 --steps 1 ";
  const Run other = launch("cd " + dir + " && " + train_binary() + " --init-from hf --train-data other/train.bin" +
                           shape + "--run-dir tuned_other");
  CHECK(other.code == 2);
  CHECK_THAT(other.output, Catch::Contains("the Hugging Face weights hf come with the tokenizer " + dir +
                                           "/hf (fingerprint") &&
                               Catch::Contains("is not the tokenizer other/train.bin was prepared with") &&
                               Catch::Contains("give the data's tokenizer with --tokenizer"));
  CHECK_FALSE(fs::exists(dir + "/tuned_other"));
  const Run same = launch("cd " + dir + " && " + train_binary() + " --init-from hf --train-data same/train.bin" +
                          shape + "--run-dir tuned");
  INFO(same.output);
  REQUIRE(same.code == 0);
  CHECK(load_checkpoint(dir + "/tuned/checkpoints/step_00000001.ckpt").tokenizer_dir == dir + "/hf");
}

// A file-size limit (ulimit -f) is a full disk that kills with SIGXFSZ, without a word and with
// the checkpoint's temporary file left, unless the program ignores the signal (run_cli does):
// then the write fails as on a full disk, exit 1 naming the file, the checkpoint before it kept.
TEST_CASE("a checkpoint write past the file-size limit exits 1 and keeps the checkpoint before", "[cli]") {
  namespace fs = std::filesystem;
  std::string dir = test::temp_dir("train_cli_file_size");
  test::write_tiny_shards(dir);
  const std::string run = dir + "/run";
  const Run first = train(tiny(dir) + "--steps 4 --stop-at-step 2 --run-dir " + run);
  INFO(first.output);
  REQUIRE(first.code == 0);
  const std::string kept = run + "/checkpoints/step_00000002.ckpt";
  const std::string before = test::read_bytes(kept);
  const size_t blocks = before.size() / 2 / 512;  // 512-byte blocks: half a checkpoint
  REQUIRE(blocks >= 4);
  const Run limited = launch("ulimit -f " + std::to_string(blocks) + "; exec " + train_binary() + " --resume " + run);
  INFO(limited.output);
  CHECK(limited.code == 1);
  CHECK_THAT(limited.output, Catch::Contains("step_00000004.ckpt") && Catch::Contains("File too large"));
  CHECK(test::read_bytes(kept) == before);
  CHECK_FALSE(fs::exists(run + "/checkpoints/step_00000004.ckpt.tmp"));
  CHECK_FALSE(fs::exists(run + "/checkpoints/step_00000004.ckpt"));
}

// bf16 on the CPU: its products by AVX512-BF16 or AMX where the CPU has them, else widened to
// fp32 (the same run either way, only the sums' order differs). A stop and resume must repeat the
// whole run bit for bit; the losses must track fp32's. The classifier in chunks of 24 of the 64
// rows (wte's gradient summed over them in fp32), a setting the resumed run keeps.
TEST_CASE("on the cpu, --dtype bf16 trains; a stopped and resumed run repeats an uninterrupted one exactly",
          "[cli]") {
  std::string dir = test::temp_dir("train_cli_cpu_bf16");
  test::write_tiny_shards(dir);
  const std::string run = tiny(dir, 64, 2) + "--seed 5 --val-data " + dir +
                          "/val.bin --eval-every 3 --eval-batches 2 --steps 6 --lr 1e-3 ";
  // The resumed model holds what the uninterrupted one held: 24 rows of logits, the fp32 sum.
  const StopAndResume bf16 =
      check_stop_and_resume(run + "--dtype bf16 --classifier-rows 24 ", dir, 6, 3, "classifier_rows = 24");
  CHECK_THAT(bf16.whole.output, Catch::Contains("cpu bf16 (1 thread)"));
  const auto& expected = bf16.losses;
  // The same run in fp32: bf16's losses within 1% of its (measured: 0.02%; on the GPU, the d6
  // Wikipedia runs' largest gap was 0.9%), and not the same bits (bf16 did run).
  REQUIRE(train(run + "--run-dir " + dir + "/fp32").code == 0);
  CHECK(check_close_losses(dir + "/fp32", dir + "/straight", 6, 0.01) < 6);
  CHECK(expected[5].first < expected[0].first);  // and learned
}

// --grad-dtype fp32 in bf16: the gradients of two micro-batches per step summed in fp32. The
// setting is saved with the run (a resume keeps it, with twice the bf16 gradients' memory), and a
// run stopped and resumed repeats the uninterrupted one bit for bit. Against the bf16 gradients'
// run: the same first loss (nothing updated yet), not the same later ones, which both keep within
// 1% of each other.
TEST_CASE("on the cpu, --dtype bf16 --grad-dtype fp32 trains; stopped and resumed it repeats exactly", "[cli]") {
  std::string dir = test::temp_dir("train_cli_cpu_fp32_grads");
  test::write_tiny_shards(dir);
  const std::string run = tiny(dir, 64, 2) + "--seed 5 --steps 4 --lr 1e-3 --total-batch 128 --dtype bf16 ";
  const StopAndResume fp32 = check_stop_and_resume(run + "--grad-dtype fp32 ", dir, 4, 2, "grad_dtype = \"fp32\"");
  CHECK_THAT(fp32.whole.output, Catch::Contains("2 accumulation step(s)"));
  const auto& fp32_grads = fp32.losses;

  const Run bf16_grads = train(run + "--run-dir " + dir + "/bf16_grads");
  REQUIRE(bf16_grads.code == 0);
  CHECK(memory_line(bf16_grads.output) != memory_line(fp32.whole.output));
  CHECK_THAT(memory_line(fp32.whole.output), Catch::Contains(" (fp32), AdamW"));
  CHECK_THAT(memory_line(bf16_grads.output), Catch::Contains(" (bf16), AdamW"));
  CHECK(check_close_losses(dir + "/straight", dir + "/bf16_grads", 4, 0.01) < 4);
  CHECK(losses(dir + "/bf16_grads").at(0).first == fp32_grads[0].first);
  // A resume keeps the run's gradients: fp32 ones for a run of bf16 ones are refused; bf16, what
  // its auto was, is the same run.
  const Run other = train("--resume " + dir + "/bf16_grads --steps 5 --grad-dtype fp32");
  CHECK(other.code == 2);
  CHECK_THAT(other.output, Catch::Contains("--grad-dtype fp32: --resume continues the run with its own --grad-dtype "
                                           "auto (from the checkpoint)"));
  const Run same = train("--resume " + dir + "/bf16_grads --steps 5 --grad-dtype bf16");
  INFO(same.output);
  CHECK(same.code == 0);
}

// The training state on the device (fp32 or bf16 parameters, fp32 master weights and moments, the
// data position) round-trips through a checkpoint: a run stopped at step 3 and resumed ends with
// the losses of an uninterrupted one, bit for bit; in bf16 also with fp32 gradients summing two
// micro-batches, and with the kernel designs other than the automatic ones (GPT2CC_KERNELS,
// kernels/kernel_designs.cuh; heads of 64, so that the flash designs run too), which must be as
// deterministic. A malformed GPT2CC_KERNELS ends train with exit 2, naming it. Where this build or
// machine has no CUDA device the case says so and checks nothing; the CPU emulator build runs it
// (emu_train_cli, tests/emu/hostcuda).
TEST_CASE("on cuda, a stopped and resumed run repeats an uninterrupted one exactly", "[cli][cuda]") {
  std::string dir = test::temp_dir("train_cli_cuda");
  test::write_tiny_shards(dir);
  const std::string flags = "--seed 5 --device cuda ";
  const Run probe = train(tiny(dir) + flags + "--steps 1 --run-dir " + dir + "/probe");
  if (probe.code != 0 && probe.output.find("--device cuda:") != std::string::npos) {
    WARN("no CUDA device here, nothing checked: " << probe.output);
    return;
  }
  INFO(probe.output);
  REQUIRE(probe.code == 0);
  const Run malformed = launch("GPT2CC_KERNELS=flash-tile=96 " + train_binary() + " " + tiny(dir) + flags +
                               "--steps 1 --run-dir " + dir + "/malformed");
  CHECK(malformed.code == 2);
  CHECK_THAT(malformed.output, Catch::Contains("GPT2CC_KERNELS: flash-tile=96 is not a design"));

  struct Variant {
    const char* name;
    const char* dtype;
    const char* kernels;  // GPT2CC_KERNELS ("": unset)
    int channels, heads;
    const char* flags = "";  // more flags
  };
  const Variant variants[] = {
      {"fp32", "fp32", "", 16, 2},
      {"bf16", "bf16", "", 16, 2},
      // fp32 gradients, two micro-batches per step summed into them.
      {"bf16_fp32_grads", "bf16", "", 16, 2, "--grad-dtype fp32 --total-batch 128 "},
      // Every non-automatic design but gemm-workspace=256 (its workspace alone is four times the
      // emulated device of emu_train_cli; it changes which algorithm cuBLASLt picks, not the kind:
      // test_bf16_matmul repeats it bit for bit).
      {"bf16_designs", "bf16",
       "classifier=streamed,layernorm-backward=two-pass,flash-backward=fused,flash-tile=64,bias-grad=epilogue,"
       "gemm-alignment=16,gemm-split-k=any,gelu=separate",
       64, 1}};
  for (const Variant& v : variants) {
    INFO("--dtype " << v.dtype << ", GPT2CC_KERNELS '" << v.kernels << "'");
    const std::string env = *v.kernels ? std::string("GPT2CC_KERNELS=") + v.kernels + " " : "";
    const auto train = [&](const std::string& args) { return launch(env + train_binary() + " " + args); };
    const std::string run = tiny(dir, v.channels, v.heads) + flags + "--val-data " + dir +
                            "/val.bin --eval-every 3 --eval-batches 2 --dtype " + v.dtype + " --steps 6 " + v.flags;
    const std::string straight = dir + "/straight_" + v.name, split = dir + "/split_" + v.name;
    const Run whole = train(run + "--run-dir " + straight);
    INFO(whole.output);
    REQUIRE(whole.code == 0);
    if (*v.kernels) CHECK_THAT(whole.output, Catch::Contains(std::string("kernel designs ") + v.kernels));
    if (*v.flags)
      CHECK_THAT(whole.output, Catch::Contains("grad_dtype = \"fp32\"") && Catch::Contains("2 accumulation"));
    REQUIRE(train(run + "--stop-at-step 3 --run-dir " + split).code == 0);
    const Run resumed = train("--resume " + split);
    INFO(resumed.output);
    REQUIRE(resumed.code == 0);
    CHECK_THAT(resumed.output, Catch::Contains("resuming from"));
    const auto expected = check_same_losses(straight, split, 6);
    CHECK(std::isfinite(expected[5].first));
    CHECK(!std::isnan(expected[2].second));  // evaluated at step 3
  }
}

// MFU on cuda: against the GPU's peak from the table (core/device_peaks.hpp) for the dtype's
// unit, or "n/a" naming the device where the table has none. The emulated device's own name is in
// no entry; as an emulated H200 (GPT2CC_EMU_GPU=h200: "gpt2cc CPU emulator (NVIDIA H200)") it
// takes the H200 SXM's rates, and both ways run. On a real GPU the run is checked against what
// it said of its device.
TEST_CASE("on cuda, train reports MFU against the GPU's peak for its dtype, or says it has none",
          "[cli][cuda]") {
  std::string dir = test::temp_dir("train_cli_cuda_mfu");
  test::write_tiny_shards(dir);
  const std::string run = tiny(dir) + "--seed 5 --device cuda --steps 2 --log-every 1 ";
  const Run probe = train(run + "--run-dir " + dir + "/probe");
  if (probe.code != 0 && probe.output.find("--device cuda:") != std::string::npos) {
    WARN("no CUDA device here, nothing checked: " << probe.output);
    return;
  }
  INFO(probe.output);
  REQUIRE(probe.code == 0);
  const bool emulated = probe.output.find("gpt2cc CPU emulator") != std::string::npos;
  struct Variant {
    const char* env;
    const char* dtype;
  };
  const std::vector<Variant> variants =
      emulated ? std::vector<Variant>{{"", "fp32"}, {"GPT2CC_EMU_GPU=h200 ", "bf16"}, {"GPT2CC_EMU_GPU=h200 ", "fp32"}}
               : std::vector<Variant>{{"", "bf16"}, {"", "fp32"}};
  for (const Variant& v : variants) {
    INFO(v.env << "--dtype " << v.dtype);
    const std::string run_dir = dir + "/" + v.dtype + (*v.env ? "_h200" : "");
    const Run r = launch(v.env + train_binary() + " " + run + "--dtype " + v.dtype + " --run-dir " + run_dir);
    INFO(r.output);
    REQUIRE(r.code == 0);
    std::optional<double> peak;
    if (emulated) {
      if (*v.env) {
        peak = std::string(v.dtype) == "bf16" ? 989.4 : 67.0;
        CHECK_THAT(r.output, Catch::Contains(std::string("against the H200 SXM ") +
                                             (peak == 67.0 ? "fp32 non-tensor" : "bf16 dense tensor-core") + " peak"));
      } else {
        CHECK_THAT(r.output,
                   Catch::Contains("MFU: n/a (gpt2cc CPU emulator is not in the GPU peak table, "
                                   "benchmarks/gpu/peaks.json)"));
      }
    } else if (r.output.find("MFU: n/a") == std::string::npos) {
      const auto config = nlohmann::json::parse(file_contents(run_dir + "/config.json"));
      peak = config.at("derived").at("peak_tflops_per_gpu").get<double>();
    }
    check_mfu_report(r, run_dir, peak);
  }
}

// Out of device memory is reported, not crashed on: a batch that does not fit ends the run with
// the device's name, the bytes asked for and free, and a hint; exit 1; no checkpoint written and
// the checkpoint it started from unchanged. Reaching it needs a device smaller than the batch,
// which only the emulated device can be made ($GPT2CC_EMU_DEVICE_MIB, set by emu_train_cli);
// elsewhere the case says it is skipped (not "nothing checked": scripts/bench_gpu.sh reads that
// as "no CUDA device" on a GPU).
TEST_CASE("on cuda, a batch beyond device memory fails with a clear message and leaves the disk as it was",
          "[cli][cuda]") {
  if (std::getenv("GPT2CC_EMU_DEVICE_MIB") == nullptr) {
    WARN("skipped: needs a small emulated device (GPT2CC_EMU_DEVICE_MIB, as emu_train_cli sets)");
    return;
  }
  std::string dir = test::temp_dir("train_cli_cuda_oom");
  test::write_tiny_shards(dir, 1 << 16);
  const Run start = train(tiny(dir) + "--seed 5 --steps 1 --run-dir " + dir + "/start");
  INFO(start.output);
  REQUIRE(start.code == 0);
  const std::string ckpt = dir + "/start/checkpoints/step_00000001.ckpt";
  const std::string before = file_contents(ckpt);
  // 2048 x 16 tokens: activations of ~100 MiB on a device of GPT2CC_EMU_DEVICE_MIB (64) MiB.
  const Run big = train("--init-from " + ckpt + " --device cuda --batch-size 2048 --seq-len 16 --threads 1 "
                        "--train-data " + dir + "/train.bin --steps 2 --run-dir " + dir + "/big");
  INFO(big.output);
  CHECK(big.code == 1);
  CHECK_THAT(big.output, Catch::Contains("CUDA out of memory on device 0") && Catch::Contains("bytes free") &&
                             Catch::Contains("try a smaller batch size") &&
                             Catch::Contains("train: less memory: a smaller --batch-size"));
  CHECK_FALSE(std::filesystem::exists(dir + "/big/checkpoints/step_00000002.ckpt"));
  CHECK(file_contents(ckpt) == before);
}

#ifdef GPT2CC_MPIEXEC
// Data parallel through mpiexec (the trainer's equivalence and exact resume are in
// test_data_parallel): the plan names the ranks, the losses are those of one process with the
// same total batch, a two-rank checkpoint continues in one process, and what cannot be shared
// out is refused by every rank with exit code 2 and one message (the ranks agree on it).
TEST_CASE("mpiexec -n 2 train: data parallel on the cpu", "[cli][distributed]") {
  const std::string dir = test::temp_dir("train_cli_data_parallel");
  test::write_tiny_shards(dir);
  const std::string mpiexec = std::string(GPT2CC_MPIEXEC) + " -n 2 " + train_binary() + " ";
  const std::string common = tiny(dir) + "--val-data " + dir + "/val.bin --eval-every 2 --eval-batches 2 --steps 4 ";

  // No --total-batch: one micro-batch per rank, 2 x 4 x 16 tokens per step.
  Run ranked = launch(mpiexec + common + "--run-dir " + dir + "/ranked");
  INFO(ranked.output);
  REQUIRE(ranked.code == 0);
  CHECK_THAT(ranked.output, Catch::Contains("-> 128 tokens per step"));
  CHECK_THAT(ranked.output, Catch::Contains("data parallel: 2 ranks, 1 micro-batch(es) each per step; ZeRO stage 1"));
  CHECK_THAT(ranked.output, Catch::Contains("done: step 4/4"));
  const auto config = nlohmann::json::parse(file_contents(dir + "/ranked/config.json"));
  CHECK(config["train"]["total_batch_tokens"] == 128);
  CHECK(config["derived"]["ranks"] == 2);

  Run alone = train(common + "--total-batch 128 --run-dir " + dir + "/alone");
  REQUIRE(alone.code == 0);
  check_close_losses(dir + "/alone", dir + "/ranked", 4, 1e-6, true);

  // Ranks started with other settings (an MPMD launch) are refused before the first step, naming
  // the difference: another --lr would train a mixed model, another --steps hang at the end.
  for (const auto& [flag, named] : {std::pair{"--lr 0.01", "rank 1 trains with lr = 0.01, rank 0 with 0.0006"},
                                   std::pair{"--steps 6", "rank 1 trains with steps = 6, rank 0 with 4"}}) {
    const std::string one = train_binary() + " " + common + "--run-dir " + dir + "/mixed ";
    Run mixed = launch("timeout -k 5 120 " + std::string(GPT2CC_MPIEXEC) + " -n 1 " + one + " : -n 1 " + one + flag);
    INFO(mixed.output);
    CHECK(mixed.code == 2);
    CHECK_THAT(mixed.output, Catch::Contains(named) && Catch::Contains("start every rank with the same flags"));
    CHECK_FALSE(std::filesystem::exists(dir + "/mixed/checkpoints"));
  }
  // The same flags on data that differs (the same relative path in each rank's working folder,
  // as node-local copies would): refused, naming what the ranks derived; the old check of the
  // flags alone let the ranks run on (another run length: a hang at the end).
  {
    for (const char* folder : {"/rank0", "/rank1"}) std::filesystem::create_directories(dir + folder);
    std::filesystem::copy_file(dir + "/train.bin", dir + "/rank0/train.bin");
    std::filesystem::copy_file(dir + "/val.bin", dir + "/rank1/train.bin");  // fewer tokens, same tokenizer
    const std::string args = train_binary() + " " + common + "--train-data train.bin --run-dir " + dir + "/mixed";
    const Run other_data = launch("timeout -k 5 120 " + std::string(GPT2CC_MPIEXEC) + " -n 1 -wdir " + dir +
                                  "/rank0 " + args + " : -n 1 -wdir " + dir + "/rank1 " + args);
    INFO(other_data.output);
    CHECK(other_data.code == 2);
    CHECK_THAT(other_data.output, Catch::Contains("rank 1 derived train_data = ") &&
                                      Catch::Contains("every rank must read the same --train-data and --val-data"));
    CHECK_FALSE(std::filesystem::exists(dir + "/mixed/checkpoints"));
  }
  // The same flags resuming a run whose copy on rank 1's machine ends a step earlier: refused,
  // naming each rank's checkpoint; before, rank 1 trained step 2 again beside rank 0's step 3,
  // a mixed model, then waited for a collective rank 0 never reached.
  {
    const std::string run0 = dir + "/rank0/resumed", run1 = dir + "/rank1/resumed";
    REQUIRE(launch(mpiexec + common + "--stop-at-step 2 --checkpoint-every 1 --run-dir " + run0).code == 0);
    std::filesystem::copy(run0, run1, std::filesystem::copy_options::recursive);
    REQUIRE(std::filesystem::remove(run1 + "/checkpoints/step_00000002.ckpt"));
    const std::string args = train_binary() + " --resume resumed";
    const Run mixed = launch("timeout -k 5 120 " + std::string(GPT2CC_MPIEXEC) + " -n 1 -wdir " + dir + "/rank0 " +
                             args + " : -n 1 -wdir " + dir + "/rank1 " + args);
    INFO(mixed.output);
    CHECK(mixed.code == 2);
    CHECK_THAT(mixed.output, Catch::Contains("rank 1 starts from checkpoint {\"checksum\":\"") &&
                                 Catch::Contains("step_00000001.ckpt\",\"step\":1}, rank 0 from") &&
                                 Catch::Contains("every rank must resume (or --init-from) the same checkpoint file"));
    CHECK_FALSE(std::filesystem::exists(run0 + "/checkpoints/step_00000003.ckpt"));
    // The same file on both: taken.
    std::filesystem::copy_file(run0 + "/checkpoints/step_00000002.ckpt", run1 + "/checkpoints/step_00000002.ckpt");
    const Run same = launch("timeout -k 5 120 " + std::string(GPT2CC_MPIEXEC) + " -n 1 -wdir " + dir + "/rank0 " +
                            args + " : -n 1 -wdir " + dir + "/rank1 " + args);
    INFO(same.output);
    CHECK(same.code == 0);
  }
  // A divergence (--max-bad-steps) every rank reaches at the same step: said once, exit 1, and
  // no rank aborting the others (each printed it, then MPI_Abort).
  {
    const Run diverged = launch(mpiexec + common + "--lr 1e30 --grad-clip 0 --max-bad-steps 2 --run-dir " + dir +
                                "/diverged");
    INFO(diverged.output);
    CHECK(diverged.code == 1);
    const std::string said = "consecutive steps had a non-finite loss or gradient norm";
    const size_t first = diverged.output.find(said);
    CHECK(first != std::string::npos);
    CHECK(diverged.output.find(said, first + 1) == std::string::npos);
    CHECK_THAT(diverged.output, Catch::Contains("train: error: stopping: 2 consecutive steps") &&
                                    !Catch::Contains("MPI_Abort") && !Catch::Contains("rank 1"));
  }
  // bf16 (the MPI collectives sum bf16 gradients in fp32, rounding each sum once): close to one
  // process accumulating both micro-batches (whose bf16 gradient sums round differently), and a
  // stopped and resumed two-rank run repeats an uninterrupted one bit for bit.
  {
    const Run bf16 = launch(mpiexec + common + "--dtype bf16 --run-dir " + dir + "/bf16");
    INFO(bf16.output);
    REQUIRE(bf16.code == 0);
    CHECK_THAT(bf16.output, Catch::Contains("cpu bf16"));
    REQUIRE(train(common + "--dtype bf16 --total-batch 128 --run-dir " + dir + "/bf16_alone").code == 0);
    check_close_losses(dir + "/bf16_alone", dir + "/bf16", 4, 1e-3);  // measured: 1e-5
    REQUIRE(launch(mpiexec + common + "--dtype bf16 --stop-at-step 2 --run-dir " + dir + "/bf16_split").code == 0);
    const Run rest = launch(std::string(GPT2CC_MPIEXEC) + " -n 2 " + train_binary() + " --resume " + dir +
                            "/bf16_split");
    INFO(rest.output);
    REQUIRE(rest.code == 0);
    check_same_losses(dir + "/bf16", dir + "/bf16_split", 4);
  }
  // Where each rank runs may differ.
  const std::string own = train_binary() + " " + common + "--run-dir " + dir + "/threads";
  Run threads = launch(std::string(GPT2CC_MPIEXEC) + " -n 1 " + own + " : -n 1 " + own + " --threads 2");
  INFO(threads.output);
  CHECK(threads.code == 0);

  // Two ranks stop at step 2; one process continues (2 accumulation steps) as the two would have.
  Run first = launch(mpiexec + common + "--stop-at-step 2 --run-dir " + dir + "/handover");
  REQUIRE(first.code == 0);
  Run rest = train("--resume " + dir + "/handover");
  INFO(rest.output);
  REQUIRE(rest.code == 0);
  CHECK_THAT(rest.output, Catch::Contains("2 accumulation step(s) -> 128 tokens per step"));
  check_close_losses(dir + "/ranked", dir + "/handover", 4, 1e-6);

  // Eight ranks on a model of 796 parameters: blocks of 128, the last one all padding.
  const std::string speck = "--layers 1 --heads 1 --channels 4 --max-seq-len 8 --batch-size 1 --seq-len 8 --threads 1 "
                            "--total-batch 64 --steps 3 --train-data " + dir + "/train.bin ";
  const Run eight = launch(std::string(GPT2CC_MPIEXEC) + " -n 8 " + train_binary() + " " + speck + "--run-dir " + dir +
                           "/eight");
  INFO(eight.output);
  REQUIRE(eight.code == 0);
  CHECK_THAT(eight.output, Catch::Contains("this rank keeps the AdamW moments of 128 of 796 parameters"));
  REQUIRE(train(speck + "--run-dir " + dir + "/speck_alone").code == 0);
  check_close_losses(dir + "/speck_alone", dir + "/eight", 3, 1e-6);

  struct Case {
    std::string args, message;
  };
  const std::vector<Case> refused = {
      {common + "--total-batch 64 --run-dir " + dir + "/bad",
       "which 2 ranks cannot share evenly: give a multiple of 128"},
      {common + "--total-batch 100 --run-dir " + dir + "/bad",
       "--total-batch (100 tokens) must be a multiple of ranks x --batch-size x --seq-len = 2 x 4 x 16 = 128"},
      {"--eval-only --init-from " + dir + "/ranked --val-data " + dir + "/val.bin", "--eval-only runs in one process"},
      {common + "--device cuda --cuda-device 1 --run-dir " + dir + "/bad", "--cuda-device with 2 ranks"},
      {"--resume " + dir + "/odd --steps 4", "continues a run of 3 micro-batch(es) of 4 x 16 tokens per step, which "
                                             "2 ranks cannot share evenly: resume it with a number of ranks that "
                                             "divides 3"},
  };
  REQUIRE(train(tiny(dir) + "--total-batch 192 --steps 2 --stop-at-step 1 --run-dir " + dir + "/odd").code == 0);
  // Another MPI's launcher (its variables, this MPI's job of one) would make lone runs: refused.
  const Run foreign = launch("OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=1 " + train_binary() + " " + common +
                             "--run-dir " + dir + "/bad");
  CHECK(foreign.code == 2);
  CHECK_THAT(foreign.output, Catch::Contains("the launcher started 2 ranks (OMPI_COMM_WORLD_SIZE = 2), but MPI sees a "
                                             "job of 1: the mpiexec used is not the one of the MPI this gpt2cc was "
                                             "built with"));
  // The ranks agree on a setup error: printed once, naming them, and exit code 2 without an abort.
  const auto count = [](const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  for (const Case& bad : refused) {
    INFO("mpiexec -n 2 train " << bad.args);
    Run r = launch(mpiexec + bad.args);
    CHECK(r.code == 2);
    CHECK(count(r.output, bad.message) == 1);
    CHECK_THAT(r.output, Catch::Contains("train (all 2 ranks): "));
  }
  // OMP_NUM_THREADS is each rank's, checked as in one process.
  const Run threads_env = launch("OMP_NUM_THREADS=5000 " + mpiexec + common + "--threads 0 --run-dir " + dir + "/bad");
  CHECK(threads_env.code == 2);
  CHECK(count(threads_env.output, "OMP_NUM_THREADS asks for 5000 threads, more than 1024") == 1);
  const Run unknown = launch(mpiexec + common + "--lr abc --run-dir " + dir + "/bad");
  CHECK(unknown.code == 2);
  CHECK(count(unknown.output, "--lr: 'abc' is not a valid value (see train --help)") == 1);
  // A failure on one rank only (mpiexec's ':' gives the ranks their own arguments): named by its
  // rank, and the other one, whose setup went well, ends with the same code instead of waiting.
  const Run one = launch(std::string(GPT2CC_MPIEXEC) + " -n 1 " + train_binary() + " " + common + "--run-dir " + dir +
                         "/bad : -n 1 " + train_binary() + " " + common + "--train-data " + dir +
                         "/missing.bin --run-dir " + dir + "/bad");
  INFO(one.output);
  CHECK(one.code == 2);
  CHECK(count(one.output, "train (rank 1 of 2): no shards found at " + dir + "/missing.bin") == 1);
  CHECK(count(one.output, "rank 0") == 0);
  const Run help = launch(mpiexec + "--help");
  CHECK(help.code == 0);
  CHECK(count(help.output, "Usage:") == 1);  // the root's
  // --help given to one rank only (MPMD): refused on the others, which would wait for it forever.
  for (const bool root_asks : {true, false}) {
    const std::string ranks[2] = {train_binary() + " " + common + "--run-dir " + dir + "/bad",
                                  train_binary() + " --help"};
    const Run some = launch(std::string(GPT2CC_MPIEXEC) + " -n 1 " + ranks[root_asks ? 1 : 0] + " : -n 1 " +
                            ranks[root_asks ? 0 : 1]);
    INFO(some.output);
    CHECK(some.code == 2);
    CHECK(count(some.output, format("train (rank {} of 2): another rank was started with --help and this one without "
                                    "it", root_asks ? 1 : 0)) == 1);
    CHECK(count(some.output, "Usage:") == 0);
  }
  CHECK_FALSE(std::filesystem::exists(dir + "/bad"));
}

// The same over NCCL on two GPUs (on the emulated ones: ctest's emu_train_cli, two emulated
// devices, NCCL's calls over MPI), fp32 with ZeRO stages 1 and 0, and bf16 (its gradients summed
// in bf16): the losses of one process with the same total batch, and a stopped and resumed run
// that repeats an uninterrupted one exactly.
TEST_CASE("mpiexec -n 2 train --device cuda: data parallel over NCCL", "[cli][cuda][distributed]") {
  const std::string dir = test::temp_dir("train_cli_data_parallel_cuda");
  test::write_tiny_shards(dir);
  const std::string mpiexec = std::string(GPT2CC_MPIEXEC) + " -n 2 " + train_binary() + " ";
  const std::string common = tiny(dir) + "--device cuda --val-data " + dir +
                             "/val.bin --eval-every 2 --eval-batches 2 --steps 4 ";
  const Run probe = launch(mpiexec + common + "--steps 1 --eval-every 1 --run-dir " + dir + "/probe");
  INFO(probe.output);
  // Where the devices must be there (the emulated ones: emu_train_cli), no skipping.
  const bool required = std::getenv("GPT2CC_TEST_REQUIRE_CUDA_DATA_PARALLEL") != nullptr;
  for (const char* unable : {"--device cuda:", "CUDA device(s)", "needs NCCL", "no CUDA backend"}) {
    if (!required && probe.code != 0 && probe.output.find(unable) != std::string::npos) {
      WARN("no two CUDA devices with NCCL here, nothing checked: " << probe.output);
      return;
    }
  }
  REQUIRE(probe.code == 0);

  struct Setting {
    std::string flags;
    double tolerance;  // of a loss against one process's
  };
  for (const Setting& setting : {Setting{"--dtype fp32", 1e-5}, Setting{"--dtype fp32 --zero-stage 0", 1e-5},
                                 Setting{"--dtype bf16", 2e-2}}) {
    INFO(setting.flags);
    const std::string run = common + setting.flags + " ";
    const std::string name = std::to_string(std::hash<std::string>{}(setting.flags));
    const Run ranked = launch(mpiexec + run + "--run-dir " + dir + "/ranked_" + name);
    INFO(ranked.output);
    REQUIRE(ranked.code == 0);
    CHECK_THAT(ranked.output, Catch::Contains("data parallel: 2 ranks"));
    REQUIRE(train(run + "--total-batch 128 --run-dir " + dir + "/alone_" + name).code == 0);
    check_close_losses(dir + "/alone_" + name, dir + "/ranked_" + name, 4, setting.tolerance);

    REQUIRE(launch(mpiexec + run + "--stop-at-step 2 --run-dir " + dir + "/split_" + name).code == 0);
    const Run resumed = launch(mpiexec + std::string("--resume ") + dir + "/split_" + name);
    INFO(resumed.output);
    REQUIRE(resumed.code == 0);
    check_same_losses(dir + "/ranked_" + name, dir + "/split_" + name, 4);
  }

  // MFU over both ranks: each step's tokens of the two GPUs against twice one's peak (on two
  // emulated H200s; a real pair of GPUs reports what the table has for them).
  if (probe.output.find("gpt2cc CPU emulator") != std::string::npos) {
    const Run pair = launch("GPT2CC_EMU_GPU=h200 " + mpiexec + common + "--dtype bf16 --steps 2 --run-dir " + dir +
                            "/mfu_pair");
    REQUIRE(pair.code == 0);
    check_mfu_report(pair, dir + "/mfu_pair", 989.4, 2);
  }

  // Two ranks given one GPU (CUDA_VISIBLE_DEVICES naming the same one to both; on the emulator, a
  // machine of one device): refused before NCCL is set up, naming the GPU.
  const Run shared = launch("CUDA_VISIBLE_DEVICES=0 GPT2CC_EMU_DEVICES=1 " + mpiexec + common + "--run-dir " + dir +
                            "/one_gpu");
  INFO(shared.output);
  CHECK(shared.code == 2);
  CHECK_THAT(shared.output, Catch::Contains("ranks 0 and 1 were given the same GPU (GPU-") &&
                                Catch::Contains("each rank needs a GPU of its own"));
  CHECK_FALSE(std::filesystem::exists(dir + "/one_gpu"));

  // bf16, ZeRO-1 against ZeRO-0, clipping off (the global norm is summed in another order by the
  // two). With two ranks each gradient sum is one addition, the same whichever collective makes
  // it, and AdamW is element-wise: the stages must agree bit for bit, although ZeRO-1 keeps the
  // fp32 master weights sharded and gathers only the bf16 copy after each step. The checkpoint
  // (for which ZeRO-1 gathers the master and the moments on rank 0) must hold the same values.
  const std::string run = common + "--dtype bf16 --grad-clip 0 ";
  for (const char* stage : {"1", "0"}) {
    const Run r = launch(mpiexec + run + "--zero-stage " + stage + " --run-dir " + dir + "/bf16_zero" + stage);
    INFO(r.output);
    REQUIRE(r.code == 0);
  }
  const auto sharded = losses(dir + "/bf16_zero1"), whole = losses(dir + "/bf16_zero0");
  REQUIRE(sharded.size() == 4);
  REQUIRE(whole.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    INFO("step " << i + 1);
    CHECK(sharded[i].first == whole[i].first);
    if (!std::isnan(whole[i].second)) CHECK(sharded[i].second == whole[i].second);
  }
  const Checkpoint z1 = load_checkpoint(dir + "/bf16_zero1/checkpoints/step_00000004.ckpt");
  const Checkpoint z0 = load_checkpoint(dir + "/bf16_zero0/checkpoints/step_00000004.ckpt");
  CHECK(z1.params == z0.params);
  CHECK(z1.m == z0.m);
  CHECK(z1.v == z0.v);
  // They are the fp32 master weights, not the bf16 copy widened (whose values would all have 16
  // low bits of 0).
  size_t off_grid = 0;
  for (float w : z1.params) off_grid += (std::bit_cast<uint32_t>(w) & 0xFFFFu) != 0;
  CHECK(off_grid > 0);
}
#endif
