// DataLoader throughput on real shards: batches/s and tokens/s delivered to the caller, for the
// sequential and shuffled orders, with and without the prefetch thread. Each batch copies
// B*(T+1) tokens from the memory map (shuffled: one random window per row). Prints a table and
// one JSON line.
//   bench_loader <shard dir or glob> [B=8] [T=1024] [batches=2000]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "core/dataloader.hpp"

using namespace gpt2cc;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_loader <shard dir or glob> [B=8] [T=1024] [batches=2000]\n");
    return 2;
  }
  try {
    auto shards = list_shards(argv[1]);
    int B = argc > 2 ? std::atoi(argv[2]) : 8, T = argc > 3 ? std::atoi(argv[3]) : 1024;
    int batches = argc > 4 ? std::atoi(argv[4]) : 2000;
    INPUT_CHECK(B > 0 && T > 0 && batches > 0, "B, T and batches must be > 0");
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
  } catch (const InputError& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    return 2;
  }
  return 0;
}
