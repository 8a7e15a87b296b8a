// DataLoader and EvalIterator: targets are inputs shifted by one, every window exactly once per
// epoch (sequential and shuffled, across shard boundaries, batches straddling epochs), seeded
// determinism, exact resume from position() with and without prefetch, fingerprint checks, and
// the evaluation iterator scoring every token exactly once for any stride.
#include <algorithm>
#include "common/catch.hpp"
#include <map>
#include <numeric>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/dataloader.hpp"

using namespace gpt2cc;

namespace {
constexpr uint64_t kFingerprint = 0x1234ABCDull;

// Shards holding the stream 0, 1, 2, ... so a token's value is its stream index. Uneven sizes
// make windows cross shard boundaries.
std::vector<std::string> counting_shards(const std::string& name, std::vector<size_t> sizes,
                                         uint64_t fingerprint = kFingerprint, uint32_t vocab = 65536) {
  std::string dir = test::temp_dir(name);
  std::vector<std::string> paths;
  uint32_t next = 0;
  for (size_t s = 0; s < sizes.size(); ++s) {
    std::vector<uint32_t> tokens(sizes[s]);
    for (auto& t : tokens) t = next++;
    paths.push_back(dir + "/shard_" + std::to_string(s) + ".bin");
    write_shard(paths.back(), tokens, fingerprint, vocab);
  }
  return paths;
}

// Windows of one batch, identified by their first token / T; checks the shift-by-one.
std::vector<uint64_t> batch_windows(const std::vector<int>& x, const std::vector<int>& y, int B, int T) {
  REQUIRE(x.size() == size_t(B) * T);
  REQUIRE(y.size() == size_t(B) * T);
  std::vector<uint64_t> out;
  for (int b = 0; b < B; ++b) {
    int first = x[size_t(b) * T];
    REQUIRE(first % T == 0);
    for (int t = 0; t < T; ++t) {
      REQUIRE(x[size_t(b) * T + t] == first + t);
      REQUIRE(y[size_t(b) * T + t] == first + t + 1);
    }
    out.push_back(uint64_t(first / T));
  }
  return out;
}

std::vector<uint64_t> take_windows(DataLoader& loader, int batches, int B, int T) {
  std::vector<uint64_t> seen;
  std::vector<int> x, y;
  for (int i = 0; i < batches; ++i) {
    loader.next(x, y);
    auto w = batch_windows(x, y, B, T);
    seen.insert(seen.end(), w.begin(), w.end());
  }
  return seen;
}
}  // namespace

TEST_CASE("every window exactly once per epoch, in both orders", "[data]") {
  // N = 1000 + 0 + 537 + 264 = 1801 tokens, T = 8: W = 1800 / 8 = 225 windows; B = 7 does not
  // divide W; an empty shard in the middle is skipped over.
  auto shards = counting_shards("loader_coverage", {1000, 0, 537, 264});
  const int B = 7, T = 8;
  for (auto order : {LoaderOrder::sequential, LoaderOrder::shuffled}) {
    for (bool prefetch : {false, true}) {
      DataLoader loader(shards, B, T, order, 1234, kFingerprint, prefetch);
      REQUIRE(loader.windows_per_epoch() == 225);
      REQUIRE(loader.num_tokens() == 1801);
      const uint64_t W = 225;
      auto seen = take_windows(loader, int(3 * W / B) + 1, B, T);
      std::vector<std::vector<uint64_t>> epochs;
      for (int e = 0; e < 3; ++e) {
        std::vector<uint64_t> epoch(seen.begin() + e * W, seen.begin() + (e + 1) * W);
        epochs.push_back(epoch);
        std::sort(epoch.begin(), epoch.end());
        std::vector<uint64_t> all(W);
        std::iota(all.begin(), all.end(), 0);
        CHECK(epoch == all);
      }
      if (order == LoaderOrder::sequential) {
        CHECK(std::is_sorted(epochs[0].begin(), epochs[0].end()));
        CHECK(epochs[0] == epochs[1]);
      } else {
        CHECK(!std::is_sorted(epochs[0].begin(), epochs[0].end()));
        CHECK(epochs[0] != epochs[1]);
        CHECK(epochs[1] != epochs[2]);
      }
      auto pos = loader.position();
      CHECK(pos.epoch * W + pos.cursor == seen.size());
    }
  }
}

TEST_CASE("the shuffled order is a function of the seed", "[data]") {
  auto shards = counting_shards("loader_seed", {3000});
  const int B = 4, T = 16;
  DataLoader a(shards, B, T, LoaderOrder::shuffled, 7), b(shards, B, T, LoaderOrder::shuffled, 7, 0, false),
      c(shards, B, T, LoaderOrder::shuffled, 8);
  auto wa = take_windows(a, 100, B, T), wb = take_windows(b, 100, B, T), wc = take_windows(c, 100, B, T);
  CHECK(wa == wb);  // prefetch does not change what is seen
  CHECK(wa != wc);
}

TEST_CASE("the shuffled order draws every permutation equally often", "[data]") {
  // W = 3 windows (T = 1, 4 tokens), B = 1: each epoch is one of the 3! orders. A shuffle that
  // favours some (Sattolo's r % i instead of r % (i + 1) draws only the two cyclic ones) fails.
  auto shards = counting_shards("loader_uniform", {4});
  DataLoader loader(shards, 1, 1, LoaderOrder::shuffled, 2024, kFingerprint, false);
  REQUIRE(loader.windows_per_epoch() == 3);
  const int epochs = 1200;
  std::map<std::vector<uint64_t>, int> counts;
  for (int e = 0; e < epochs; ++e) ++counts[take_windows(loader, 3, 1, 1)];
  CHECK(counts.size() == 6);
  const double expected = epochs / 6.0;
  double x2 = 0.0;
  for (const auto& [order, n] : counts) x2 += (n - expected) * (n - expected) / expected;
  x2 += (6.0 - static_cast<double>(counts.size())) * expected;  // orders never drawn
  CHECK(x2 < 20.52);  // 5 degrees of freedom: P(chi2 > 20.52) = 0.001
}

TEST_CASE("restore() resumes exactly where position() was taken", "[data]") {
  auto shards = counting_shards("loader_resume", {500, 401}, kFingerprint, 100000);  // 4-byte tokens
  const int B = 4, T = 10;  // W = 90, B does not divide it: batches straddle epochs
  for (auto order : {LoaderOrder::sequential, LoaderOrder::shuffled}) {
    DataLoader reference(shards, B, T, order, 99, kFingerprint, false);
    std::vector<LoaderPosition> positions;
    std::vector<std::vector<uint64_t>> batches;
    for (int i = 0; i < 100; ++i) {
      positions.push_back(reference.position());
      batches.push_back(take_windows(reference, 1, B, T));
    }
    for (bool prefetch : {false, true}) {
      for (int at : {0, 1, 22, 23, 44, 45, 67, 97}) {
        DataLoader resumed(shards, B, T, order, 99, kFingerprint, prefetch);
        take_windows(resumed, 5, B, T);  // a loader already running (prefetch queue full) is moved too
        resumed.restore(positions[at]);
        CHECK(resumed.position() == positions[at]);
        for (int i = at; i < std::min(at + 4, 100); ++i) {
          INFO("order " << int(order) << " prefetch " << prefetch << " batch " << i);
          CHECK(take_windows(resumed, 1, B, T) == batches[i]);
          CHECK(resumed.position() == (i + 1 < 100 ? positions[i + 1] : resumed.position()));
        }
      }
    }
  }
}

TEST_CASE("restore() while the prefetch thread is building a batch never yields the stale one", "[data]") {
  // Right after next() the worker starts on the batch after it; restoring at once lands in the
  // middle of that build (a quarter of a million tokens), whose result is for the old position
  // and must be dropped.
  auto shards = counting_shards("loader_restore_race", {300000}, kFingerprint, 400000);
  const int B = 256, T = 1024;  // W = 292
  DataLoader reference(shards, B, T, LoaderOrder::shuffled, 5, kFingerprint, false);
  std::vector<LoaderPosition> positions;
  std::vector<std::vector<uint64_t>> batches;
  for (int i = 0; i < 40; ++i) {
    positions.push_back(reference.position());
    batches.push_back(take_windows(reference, 1, B, T));
  }
  DataLoader loader(shards, B, T, LoaderOrder::shuffled, 5, kFingerprint, true);
  std::vector<int> x, y;
  for (int round = 0; round < 200; ++round) {
    const int at = (round * 17) % 40;
    loader.restore(positions[at]);
    loader.next(x, y);
    // Only each row's first token (its window), so that the next restore() follows at once.
    std::vector<uint64_t> windows;
    for (int b = 0; b < B; ++b) windows.push_back(uint64_t(x[size_t(b) * T]) / T);
    INFO("round " << round << ", batch " << at);
    REQUIRE(windows == batches[at]);
  }
}

TEST_CASE("position() counts batches returned, not batches prefetched", "[data]") {
  auto shards = counting_shards("loader_position", {2000});
  DataLoader loader(shards, 2, 10, LoaderOrder::sequential, 0);  // W = 199
  CHECK(loader.position() == LoaderPosition{0, 0, 199});
  std::vector<int> x, y;
  loader.next(x, y);
  CHECK(loader.position() == LoaderPosition{0, 2, 199});
  for (int i = 0; i < 99; ++i) loader.next(x, y);
  CHECK(loader.position() == LoaderPosition{1, 1, 199});  // 200 windows = one epoch of 199 and one more
  // A position taken from a split of another size is refused; one that does not say (0) is not.
  CHECK_THROWS_WITH(loader.restore(LoaderPosition{0, 5, 150}),
                    Catch::Contains("the training data is not the run's: it has 199 windows"));
  loader.restore(LoaderPosition{0, 5, 0});
  CHECK(loader.position() == LoaderPosition{0, 5, 199});
}

TEST_CASE("the loader rejects bad arguments and foreign data", "[data]") {
  auto shards = counting_shards("loader_errors", {100});
  CHECK_THROWS_AS(DataLoader(shards, 0, 8, LoaderOrder::sequential, 0), InputError);
  CHECK_THROWS_AS(DataLoader(shards, 1, 0, LoaderOrder::sequential, 0), InputError);
  CHECK_THROWS_AS(DataLoader({}, 1, 8, LoaderOrder::sequential, 0), InputError);
  // 99 / 10 = 9 windows < B = 10.
  CHECK_THROWS_WITH(DataLoader(shards, 10, 10, LoaderOrder::sequential, 0),
                    Catch::Contains(shards[0] + " has 100 tokens: 9 windows") && Catch::Contains("B = 10") &&
                        Catch::Contains("--eval-batches 0"));
  CHECK_THROWS_WITH(DataLoader(shards, 1, 8, LoaderOrder::sequential, 0, 0x999),
                    Catch::Contains(shards[0]) && Catch::Contains("does not match the model's tokenizer"));
  CHECK_THROWS_WITH(EvalIterator(shards, 1, 8, 8, 0x999), Catch::Contains(shards[0]));
  auto other = counting_shards("loader_errors_other", {100}, 0x777);
  CHECK_THROWS_WITH(DataLoader({shards[0], other[0]}, 1, 8, LoaderOrder::sequential, 0),
                    Catch::Contains(other[0]) && Catch::Contains("different tokenizer"));
  DataLoader loader(shards, 1, 8, LoaderOrder::sequential, 0);  // W = 12
  CHECK_THROWS_WITH(loader.restore({0, 12}), Catch::Contains("out of range"));
}

TEST_CASE("mask_scored_targets keeps only the targets no earlier window scored", "[data]") {
  // A window predicting tokens 3..7 after one that scored up to token 5: 3, 4, 5 masked.
  std::vector<int> targets = {30, 40, 50, 60, 70};
  CHECK(mask_scored_targets(targets, 3, 5) == 7);
  CHECK(targets == std::vector<int>{-1, -1, -1, 60, 70});
  // The first window (nothing scored yet): all kept.
  targets = {10, 20};
  CHECK(mask_scored_targets(targets, 1, 0) == 2);
  CHECK(targets == std::vector<int>{10, 20});
  // A window wholly inside the scored part: all masked, scored_until unchanged.
  targets = {10, 20};
  CHECK(mask_scored_targets(targets, 4, 9) == 9);
  CHECK(targets == std::vector<int>{-1, -1});
}

TEST_CASE("EvalIterator scores every token after the first exactly once", "[data]") {
  // N = 203 tokens over two shards: 202 targets.
  auto shards = counting_shards("eval_cover", {150, 53});
  for (int T : {1, 8, 16, 202, 300}) {
    for (int stride : {1, 3, T / 2, T}) {
      if (stride < 1 || stride > T) continue;
      for (int B : {1, 5}) {
        INFO("T " << T << " stride " << stride << " B " << B);
        EvalIterator it(shards, B, T, stride, kFingerprint);
        REQUIRE(it.tokens_to_score() == 202);
        std::vector<int> scored(203, 0);
        std::vector<int> x, y;
        int rows, calls = 0;
        while ((rows = it.next(x, y)) > 0) {
          REQUIRE(++calls < 1000);
          REQUIRE(x.size() == size_t(B) * T);
          for (int b = 0; b < B; ++b) {
            for (int t = 0; t < T; ++t) {
              int target = y[size_t(b) * T + t];
              if (b >= rows) {
                REQUIRE(target == -1);
                continue;
              }
              if (target < 0) continue;
              // The stream is 0, 1, 2...: the target is the token after the input.
              REQUIRE(target == x[size_t(b) * T + t] + 1);
              if (t > 0) REQUIRE(x[size_t(b) * T + t] == x[size_t(b) * T + t - 1] + 1);
              ++scored.at(size_t(target));
            }
          }
        }
        CHECK(scored[0] == 0);
        CHECK(std::count(scored.begin() + 1, scored.end(), 1) == 202);
        CHECK(it.next(x, y) == 0);
      }
    }
  }
  CHECK_THROWS_AS(EvalIterator(shards, 1, 8, 0), InputError);
  CHECK_THROWS_AS(EvalIterator(shards, 1, 8, 9), InputError);
}
