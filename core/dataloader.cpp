// The training data loader and the evaluation iterator over memory-mapped token shards.
//
// All shards of a split form one token stream of N tokens; window w covers tokens [w*T, w*T+T]
// (W = (N-1)/T windows). Batches take the next B windows of an endless window stream: epoch e
// contributes order_e(0..W-1), where order_e is the identity (sequential) or a Fisher-Yates
// permutation drawn from Philox keyed by (seed, e) (shuffled). A batch may straddle two epochs.
// Batch k is a pure function of the stream index k*B, so position = (epoch, cursor) restores
// exactly without replaying, and a prefetch thread computing ahead cannot change what is seen.
#include "core/dataloader.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "core/check.hpp"
#include "core/rng.hpp"
#include "core/shard.hpp"

namespace gpt2cc {

namespace {

// The shards of one split seen as one stream of tokens.
class TokenStream {
 public:
  TokenStream(const std::vector<std::string>& paths, uint64_t expected_fingerprint) {
    INPUT_CHECK(!paths.empty(), "no shards given to the data loader");
    for (const auto& path : paths) {
      shards_.emplace_back(path);
      const ShardHeader& h = shards_.back().header();
      const ShardHeader& first = shards_.front().header();
      INPUT_CHECK(h.tokenizer_fingerprint == first.tokenizer_fingerprint && h.vocab_size == first.vocab_size,
                  "{} was made with a different tokenizer (fingerprint {}, vocab {}) than {} (fingerprint {}, "
                  "vocab {}); a split must use one tokenizer",
                  path, fingerprint_hex(h.tokenizer_fingerprint), h.vocab_size, shards_.front().path(),
                  fingerprint_hex(first.tokenizer_fingerprint), first.vocab_size);
      if (expected_fingerprint != 0)
        INPUT_CHECK(h.tokenizer_fingerprint == expected_fingerprint,
                    "{}: tokenizer fingerprint {} does not match the model's tokenizer ({}); prepare the data with "
                    "the model's tokenizer",
                    path, fingerprint_hex(h.tokenizer_fingerprint), fingerprint_hex(expected_fingerprint));
      starts_.push_back(total_);
      total_ += h.num_tokens;
    }
  }

  uint64_t size() const { return total_; }
  uint64_t fingerprint() const { return shards_.front().header().tokenizer_fingerprint; }
  uint32_t vocab_size() const { return shards_.front().header().vocab_size; }

  // out[i] = token (begin + i) of the stream, for i < count; InputError for an id >= vocab.
  void read(uint64_t begin, uint64_t count, uint32_t* out) const {
    ENSURE(begin + count <= total_, "read of [{}, {}) past the {} tokens of the split", begin, begin + count, total_);
    size_t s = std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin() - 1;
    while (count > 0) {
      uint64_t local = begin - starts_[s];
      uint64_t n = std::min(count, shards_[s].size() - local);
      shards_[s].copy(local, n, out);
      for (uint64_t i = 0; i < n; ++i)
        INPUT_CHECK(out[i] < vocab_size(), "{}: corrupt shard: token {} is id {}, not below vocab_size {}",
                    shards_[s].path(), local + i, out[i], vocab_size());
      begin += n;
      count -= n;
      out += n;
      ++s;
    }
  }

 private:
  std::vector<MappedShard> shards_;
  std::vector<uint64_t> starts_;  // first stream index of each shard
  uint64_t total_ = 0;
};

// The window order of one epoch: identity, or Fisher-Yates with j = bits(seed, epoch, i) mod (i+1).
// (The modulo bias is < (i+1)/2^64, far below anything a training run could notice.)
std::vector<uint64_t> epoch_order(uint64_t windows, LoaderOrder order, uint64_t seed, uint64_t epoch) {
  std::vector<uint64_t> perm(windows);
  for (uint64_t i = 0; i < windows; ++i) perm[i] = i;
  if (order == LoaderOrder::shuffled) {
    uint64_t key = splitmix64(seed ^ splitmix64(epoch + 1));
    for (uint64_t i = windows - 1; i > 0; --i) {
      uint64_t r = (uint64_t(philox_bits(key, 0, 2 * i)) << 32) | philox_bits(key, 0, 2 * i + 1);
      std::swap(perm[i], perm[r % (i + 1)]);
    }
  }
  return perm;
}

struct Batch {
  uint64_t start = 0;  // stream index of its first window
  std::vector<int> inputs, targets;
};

}  // namespace

struct DataLoader::Impl {
  TokenStream stream;
  int B, T;
  LoaderOrder order;
  uint64_t seed;
  uint64_t W;
  // Shuffled: the window orders of the last two epochs used (a batch can straddle two), 8 bytes a
  // window each. Only the thread that builds batches touches it: the worker with prefetch, the
  // caller without.
  uint64_t cached_epoch[2] = {UINT64_MAX, UINT64_MAX};
  std::vector<uint64_t> cached_order[2];

  uint64_t consumed = 0;  // stream index of the next window the caller gets
  // Prefetch: the worker fills `ready` with the batches starting at consumed, consumed+B, ...
  bool prefetch;
  std::thread worker;
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Batch> ready;
  uint64_t produce_next = 0;
  uint64_t generation = 0;  // bumped by restore(): a batch built for an older one is dropped
  bool stop = false;
  std::exception_ptr failure;
  static constexpr size_t kDepth = 2;

  Impl(const std::vector<std::string>& shards, int B_, int T_, LoaderOrder order_, uint64_t seed_,
       uint64_t expected_fingerprint, bool prefetch_)
      : stream(shards, expected_fingerprint), B(B_), T(T_), order(order_), seed(seed_), prefetch(prefetch_) {
    W = stream.size() > 0 ? (stream.size() - 1) / uint64_t(T) : 0;
    INPUT_CHECK(W >= uint64_t(B),
                "{}{} has {} tokens: {} windows of T+1 = {} tokens, fewer than the batch size B = {}: a smaller "
                "--batch-size or --seq-len, or more data (if this is --val-data: data of any size is scored whole "
                "with --eval-batches 0)",
                shards.front(), shards.size() > 1 ? format(" (with {} more shards)", shards.size() - 1) : "",
                stream.size(), W, T + 1, B);
  }

  const std::vector<uint64_t>& order_of(uint64_t epoch) {
    for (int i = 0; i < 2; ++i)
      if (cached_epoch[i] == epoch) return cached_order[i];
    int slot = cached_epoch[0] == UINT64_MAX || (cached_epoch[1] != UINT64_MAX && cached_epoch[0] < cached_epoch[1]) ? 0 : 1;
    cached_order[slot] = epoch_order(W, order, seed, epoch);
    cached_epoch[slot] = epoch;
    return cached_order[slot];
  }

  // inputs[b][t] = tok[w_b*T + t], targets[b][t] = tok[w_b*T + t + 1], w_b = window (start + b).
  void build(uint64_t start, Batch& batch) {
    batch.start = start;
    batch.inputs.resize(size_t(B) * T);
    batch.targets.resize(size_t(B) * T);
    std::vector<uint32_t> window(size_t(T) + 1);
    for (int b = 0; b < B; ++b) {
      uint64_t g = start + uint64_t(b);
      // Sequential: the window is its place in the epoch (no order is built: 16 bytes a window).
      uint64_t w = order == LoaderOrder::sequential ? g % W : order_of(g / W)[g % W];
      stream.read(w * uint64_t(T), uint64_t(T) + 1, window.data());
      for (int t = 0; t < T; ++t) {
        batch.inputs[size_t(b) * T + t] = int(window[t]);
        batch.targets[size_t(b) * T + t] = int(window[t + 1]);
      }
    }
  }

  void run_worker() {
    std::unique_lock lock(mutex);
    while (true) {
      changed.wait(lock, [&] { return stop || (ready.size() < kDepth && !failure); });
      if (stop) return;
      uint64_t start = produce_next, gen = generation;
      lock.unlock();
      Batch batch;
      std::exception_ptr error;
      try {
        build(start, batch);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (gen != generation) continue;  // restore() moved the stream while we were building
      if (error) {
        failure = error;
      } else {
        ready.push_back(std::move(batch));
        produce_next += uint64_t(B);
      }
      changed.notify_all();
    }
  }

  void start_worker() {
    produce_next = consumed;
    worker = std::thread([this] { run_worker(); });
  }
  void stop_worker() {
    {
      std::lock_guard lock(mutex);
      stop = true;
    }
    changed.notify_all();
    if (worker.joinable()) worker.join();
  }
};

DataLoader::DataLoader(const std::vector<std::string>& shards, int B, int T, LoaderOrder order, uint64_t seed,
                       uint64_t expected_fingerprint, bool prefetch) {
  INPUT_CHECK(B >= 1, "batch size B must be >= 1, got {}", B);
  INPUT_CHECK(T >= 1, "sequence length T must be >= 1, got {}", T);
  impl_ = std::make_unique<Impl>(shards, B, T, order, seed, expected_fingerprint, prefetch);
  if (prefetch) impl_->start_worker();
}

DataLoader::~DataLoader() {
  if (impl_) impl_->stop_worker();
}

void DataLoader::next(std::vector<int>& inputs, std::vector<int>& targets) {
  Impl& m = *impl_;
  Batch batch;
  if (!m.prefetch) {
    m.build(m.consumed, batch);
  } else {
    std::unique_lock lock(m.mutex);
    m.changed.wait(lock, [&] { return !m.ready.empty() || m.failure; });
    if (m.ready.empty()) std::rethrow_exception(m.failure);
    batch = std::move(m.ready.front());
    m.ready.pop_front();
    ENSURE(batch.start == m.consumed, "prefetched batch starts at window {}, expected {}", batch.start, m.consumed);
    m.changed.notify_all();
  }
  m.consumed += uint64_t(m.B);
  inputs = std::move(batch.inputs);
  targets = std::move(batch.targets);
}

// `consumed` is only touched by the caller's thread (next, restore), never by the worker.
LoaderPosition DataLoader::position() const {
  return {impl_->consumed / impl_->W, impl_->consumed % impl_->W, impl_->W};
}

void DataLoader::restore(const LoaderPosition& position) {
  Impl& m = *impl_;
  INPUT_CHECK(position.windows == 0 || position.windows == m.W,
              "the training data is not the run's: it has {} windows of T + 1 = {} tokens, the run's had {} (resuming "
              "exactly needs the same data; start a new run with --init-from to train on other data)",
              m.W, m.T + 1, position.windows);
  INPUT_CHECK(position.cursor < m.W,
              "loader position cursor {} is out of range: this split has {} windows of T = {} (was the checkpoint "
              "made with other data or another T?)",
              position.cursor, m.W, m.T);
  INPUT_CHECK(position.epoch < UINT64_MAX / m.W / 2, "loader position epoch {} is out of range", position.epoch);
  std::lock_guard lock(m.mutex);
  m.consumed = position.epoch * m.W + position.cursor;  // order_e is recomputed from (seed, e): no replay
  m.ready.clear();
  m.failure = nullptr;
  m.produce_next = m.consumed;
  ++m.generation;
  m.changed.notify_all();
}

uint64_t DataLoader::windows_per_epoch() const { return impl_->W; }
uint64_t DataLoader::num_tokens() const { return impl_->stream.size(); }
uint64_t DataLoader::tokenizer_fingerprint() const { return impl_->stream.fingerprint(); }
uint32_t DataLoader::vocab_size() const { return impl_->stream.vocab_size(); }

// Window k starts at s_k = k*stride and predicts stream tokens s_k+1 .. s_k+T, of which
// mask_scored_targets keeps those past the previous window's last one. The last may be short.
struct EvalIterator::Impl {
  TokenStream stream;
  int B, T, stride;
  uint64_t next_start = 0;
  uint64_t scored_until = 0;  // highest target index scored so far (targets start at index 1)

  Impl(const std::vector<std::string>& shards, int B_, int T_, int stride_, uint64_t expected_fingerprint)
      : stream(shards, expected_fingerprint), B(B_), T(T_), stride(stride_) {
    INPUT_CHECK(stream.size() >= 2, "the evaluation split has {} tokens; at least 2 are needed", stream.size());
  }
};

EvalIterator::EvalIterator(const std::vector<std::string>& shards, int B, int T, int stride,
                           uint64_t expected_fingerprint) {
  INPUT_CHECK(B >= 1, "batch size B must be >= 1, got {}", B);
  INPUT_CHECK(T >= 1, "sequence length T must be >= 1, got {}", T);
  INPUT_CHECK(stride >= 1 && stride <= T, "eval stride must be in [1, T = {}], got {}", T, stride);
  impl_ = std::make_unique<Impl>(shards, B, T, stride, expected_fingerprint);
}

EvalIterator::~EvalIterator() = default;

int EvalIterator::next(std::vector<int>& inputs, std::vector<int>& targets) {
  Impl& m = *impl_;
  const uint64_t N = m.stream.size(), T = uint64_t(m.T);
  inputs.assign(size_t(m.B) * T, 0);
  targets.assign(size_t(m.B) * T, -1);
  std::vector<uint32_t> window(T + 1);
  int rows = 0;
  while (rows < m.B && m.scored_until < N - 1) {
    uint64_t s = m.next_start;
    uint64_t len = std::min(T + 1, N - s);  // tokens s .. s+len-1; len-1 targets
    m.stream.read(s, len, window.data());
    int* in = inputs.data() + size_t(rows) * T;
    int* tg = targets.data() + size_t(rows) * T;
    for (uint64_t t = 0; t + 1 < len; ++t) {
      in[t] = int(window[t]);
      tg[t] = int(window[t + 1]);
    }
    m.scored_until = mask_scored_targets({tg, size_t(len - 1)}, s + 1, m.scored_until);
    m.next_start += uint64_t(m.stride);
    ++rows;
  }
  return rows;
}

uint64_t EvalIterator::tokens_to_score() const { return impl_->stream.size() - 1; }

uint64_t mask_scored_targets(std::span<int> targets, uint64_t first, uint64_t scored_until) {
  for (size_t i = 0; i < targets.size() && first + i <= scored_until; ++i) targets[i] = -1;
  return std::max(scored_until, first + targets.size() - 1);
}

}  // namespace gpt2cc
