// DataLoader throughput on real shards: batches/s and tokens/s delivered to the caller, for the
// sequential and shuffled orders, with and without the prefetch thread. Each batch copies
// B*(T+1) tokens from the memory map (shuffled: one random window per row). Prints a table and
// one JSON line.
//   bench_loader <shard dir or glob> [B=8] [T=1024] [batches=2000]   (or as flags: --shards,
//   --batch-size, --seq-len, --batches; --help lists them)
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/dataloader.hpp"

using namespace gpt2cc;

namespace {

int run(int argc, char** argv) {
  cxxopts::Options options("bench_loader", "DataLoader throughput on real shards (batches/s and tokens/s)");
  options.positional_help("<shard dir or glob> [batch-size] [seq-len] [batches]");
  options.add_options()
      ("shards", "shard directory or glob (also the first positional argument)", cxxopts::value<std::string>())
      ("batch-size", "rows per batch (B)", cxxopts::value<int>()->default_value("8"))
      ("seq-len", "tokens per row (T)", cxxopts::value<int>()->default_value("1024"))
      ("batches", "timed batches per configuration", cxxopts::value<int>()->default_value("2000"))
      ("h,help", "show this help");
  options.parse_positional({"shards", "batch-size", "seq-len", "batches"});
  options.show_positional_help();
  const cxxopts::ParseResult args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  INPUT_CHECK(args.count("shards") > 0, "no shards given: bench_loader <shard dir or glob> (see --help)");
  INPUT_CHECK(args.count("shards") == 1, "shards given {} times (as --shards or the first argument): give one",
              args.count("shards"));
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
  const auto shards = list_shards(args["shards"].as<std::string>());
  const int B = args["batch-size"].as<int>(), T = args["seq-len"].as<int>(), batches = args["batches"].as<int>();
  for (const auto& [flag, value] : {std::pair{"--batch-size", B}, std::pair{"--seq-len", T},
                                    std::pair{"--batches", batches}})
    INPUT_CHECK(value > 0, "{} must be > 0, got {}", flag, value);
  std::printf("%-10s %-8s %12s %14s\n", "order", "prefetch", "batches/s", "tokens/s");
  std::string json = "{\"B\":" + std::to_string(B) + ",\"T\":" + std::to_string(T) + ",\"results\":[";
  for (auto order : {LoaderOrder::sequential, LoaderOrder::shuffled}) {
    for (bool prefetch : {false, true}) {
      DataLoader loader(shards, B, T, order, 1, 0, prefetch);
      std::vector<int> x, y;
      for (int i = 0; i < 20; ++i) loader.next(x, y);  // warm-up: page in, build the epoch order
      auto start = std::chrono::steady_clock::now();
      long checksum = 0;
      for (int i = 0; i < batches; ++i) {
        loader.next(x, y);
        checksum += y[size_t(i) % y.size()];  // keep the work observable
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const char* name = order == LoaderOrder::sequential ? "sequential" : "shuffled";
      double bps = batches / s, tps = bps * B * T;
      std::printf("%-10s %-8s %12.0f %14.3e   (checksum %ld)\n", name, prefetch ? "yes" : "no", bps, tps, checksum);
      json += std::string(json.back() == '[' ? "" : ",") + "{\"order\":\"" + name + "\",\"prefetch\":" +
              (prefetch ? "true" : "false") + ",\"batches_per_s\":" + std::to_string(bps) +
              ",\"tokens_per_s\":" + std::to_string(tps) + "}";
    }
  }
  std::printf("%s]}\n", json.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_cli("bench_loader", argc, argv, run); }
